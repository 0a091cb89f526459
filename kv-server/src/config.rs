//! kvd's configuration: etcd 3.4's flags and `ETCD_*` variables as a clap [`Config`] (kvd's
//! main flattens it; an embedder fills one in from [`Config::default`]), checked by
//! [`Config::validate`], and the TLS set-ups they describe ([`Config::client_tls`],
//! [`Config::peer_tls`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use kv_client::tls::{CertKey, Policy, ServerVerification};

use crate::backend::memory::MemoryConfig;
use crate::backend::raft::{fnv64, member_id};
use crate::error::{Error, Result, bail_config};
use crate::http::Limits;
use crate::tls;

/// kvd's command line; every flag also reads etcd's `ETCD_*` environment variable.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,
    /// Path to the data directory (default: `<name>.kvd`).
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Path to the dedicated WAL directory (accepted; the store keeps its log in the data dir).
    #[arg(long, env = "ETCD_WAL_DIR")]
    pub wal_dir: Option<PathBuf>,
    /// List of URLs to listen on for client traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_CLIENT_URLS",
        default_value = "http://127.0.0.1:2379"
    )]
    pub listen_client_urls: String,
    /// List of this member's client URLs to advertise to the public.
    #[arg(
        long,
        env = "ETCD_ADVERTISE_CLIENT_URLS",
        default_value = "http://127.0.0.1:2379"
    )]
    pub advertise_client_urls: String,
    /// List of URLs to listen on for peer traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_PEER_URLS",
        default_value = "http://127.0.0.1:2380"
    )]
    pub listen_peer_urls: String,
    /// List of this member's peer URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://127.0.0.1:2380"
    )]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping (`name=peerURL,...`).
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Initial cluster state (`new` or `existing`).
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new")]
    pub initial_cluster_state: String,
    /// Initial cluster token for the cluster during bootstrap.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,
    /// Accept v2 requests (always on; accepted for etcd compatibility).
    #[arg(long, env = "ETCD_ENABLE_V2", default_value = "true", num_args = 0..=1, default_missing_value = "true")]
    pub enable_v2: String,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,
    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub snapshot_count: u64,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_request_bytes: usize,
    /// Maximum concurrent watches per client connection.
    #[arg(long, env = "KVD_MAX_WATCHERS_PER_CONN", default_value_t = 1024)]
    pub max_watchers_per_conn: usize,
    /// Path to the client server TLS cert file.
    #[arg(long, env = "ETCD_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// Path to the client server TLS key file.
    #[arg(long, env = "ETCD_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Enable client cert authentication.
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH")]
    pub client_cert_auth: bool,
    /// Path to the client server TLS trusted CA cert file.
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Client TLS using generated certificates.
    #[arg(long, env = "ETCD_AUTO_TLS")]
    pub auto_tls: bool,
    /// Path to the client certificate revocation list file (PEM).
    #[arg(long, env = "ETCD_CLIENT_CRL_FILE")]
    pub client_crl_file: Option<PathBuf>,
    /// Path to the peer server TLS cert file.
    #[arg(long, env = "ETCD_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// Path to the peer server TLS key file.
    #[arg(long, env = "ETCD_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// Enable peer client cert authentication.
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH")]
    pub peer_client_cert_auth: bool,
    /// Path to the peer server TLS trusted CA file.
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Peer TLS using generated certificates.
    #[arg(long, env = "ETCD_PEER_AUTO_TLS")]
    pub peer_auto_tls: bool,
    /// Path to the peer certificate revocation list file (PEM).
    #[arg(long, env = "ETCD_PEER_CRL_FILE")]
    pub peer_crl_file: Option<PathBuf>,
    /// Allowed CN for inter peer authentication.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_CN")]
    pub peer_cert_allowed_cn: Option<String>,
    /// Allowed TLS hostname for inter peer authentication.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_HOSTNAME")]
    pub peer_cert_allowed_hostname: Option<String>,
    /// Comma-separated list of supported TLS 1.2 cipher suites between client/server and
    /// peers (empty: rustls' defaults). TLS 1.3's suites are not configurable, as in etcd.
    #[arg(long, env = "ETCD_CIPHER_SUITES", value_delimiter = ',')]
    pub cipher_suites: Vec<String>,
    /// Logger (accepted for etcd compatibility; kvd logs with `tracing`, see `RUST_LOG`).
    #[arg(long, env = "ETCD_LOGGER")]
    pub logger: Option<String>,
    /// Log level (`debug`, `info`, `warn`, `error`).
    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Storage backend: `raft` (replicated, durable) or `memory` (one member, saved only on
    /// graceful shutdown).
    #[arg(long, env = "KVD_BACKEND", default_value = "raft")]
    pub backend: String,
}

impl Default for Config {
    /// kvd's defaults, as with no flags; unlike kvd, no `ETCD_*` variable is read (an
    /// embedder's environment is not its configuration).
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            config: Config,
        }
        let command =
            <Defaults as clap::CommandFactory>::command().mut_args(|a| a.env(None::<&'static str>));
        let matches = command.get_matches_from(["kvd"]);
        <Defaults as clap::FromArgMatches>::from_arg_matches(&matches)
            .map(|d| d.config)
            .expect("every flag has a default")
    }
}

/// A parsed `--initial-cluster` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    /// Member name.
    pub name: String,
    /// Its peer URL.
    pub peer_url: String,
}

/// Splits a comma-separated URL list, checking each is an `http://host:port` or
/// `https://host:port` URL.
///
/// # Errors
/// An empty list or a URL that is not `http(s)://host:port`.
pub fn parse_urls(flag: &str, list: &str) -> Result<Vec<String>> {
    let urls: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if urls.is_empty() {
        bail_config!("--{flag}: no URL given");
    }
    for u in &urls {
        if u.starts_with("unix://") || u.starts_with("unixs://") {
            bail_config!("--{flag}: {u}: unix sockets are not supported by this kvd build");
        }
        let rest = u
            .strip_prefix("http://")
            .or_else(|| u.strip_prefix("https://"))
            .ok_or_else(|| {
                Error::Config(format!(
                    "--{flag}: {u}: expected a URL like http://127.0.0.1:2379"
                ))
            })?;
        let hostport = rest.trim_end_matches('/');
        if !hostport.contains(':') {
            bail_config!("--{flag}: {u}: the URL needs an explicit port");
        }
    }
    Ok(urls)
}

/// Parses `--initial-cluster` (`name=url,name=url`).
///
/// # Errors
/// An entry without `=`.
pub fn parse_initial_cluster(s: &str) -> Result<Vec<InitialMember>> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, url) = e.split_once('=').ok_or_else(|| {
                Error::Config(format!("--initial-cluster: {e:?} is not name=peerURL"))
            })?;
            Ok(InitialMember {
                name: name.to_owned(),
                peer_url: url.to_owned(),
            })
        })
        .collect()
}

impl Config {
    /// The data directory, defaulting to `<name>.kvd`.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.kvd", self.name)))
    }

    /// Validates the configuration and derives the member set-up.
    ///
    /// # Errors
    /// Bad URLs, an `--initial-cluster` that does not name this member, or more than one
    /// member (needs the raft-store backend). TLS files are checked when the server
    /// starts ([`Config::client_tls`], [`Config::peer_tls`]).
    pub fn validate(&self) -> Result<(MemoryConfig, Vec<SocketAddr>)> {
        match self.initial_cluster_state.as_str() {
            "new" | "existing" => {}
            s => bail_config!("--initial-cluster-state: {s:?} is neither \"new\" nor \"existing\""),
        }
        if self.election_timeout < 5 * self.heartbeat_interval {
            bail_config!(
                "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
                self.election_timeout,
                self.heartbeat_interval
            );
        }
        let listen = parse_urls("listen-client-urls", &self.listen_client_urls)?;
        let advertise = parse_urls("advertise-client-urls", &self.advertise_client_urls)?;
        parse_urls("listen-peer-urls", &self.listen_peer_urls)?;
        let peers = parse_urls(
            "initial-advertise-peer-urls",
            &self.initial_advertise_peer_urls,
        )?;
        let cluster = self.initial_members(&peers)?;
        if !cluster.iter().any(|m| m.name == self.name) {
            bail_config!(
                "--initial-cluster has no member named {:?} (--name)",
                self.name
            );
        }
        let addrs = listen
            .iter()
            .map(|u| socket_addr("listen-client-urls", u))
            .collect::<Result<Vec<_>>>()?;
        let id = member_id(&peers, &self.initial_cluster_token);
        let cluster_id = fnv64(&[&format!("{id:x}"), &self.initial_cluster_token]);
        let mem = MemoryConfig {
            id,
            cluster_id,
            name: self.name.clone(),
            peer_urls: peers,
            client_urls: advertise,
            data_dir: self.data_dir(),
        };
        Ok((mem, addrs))
    }
}

/// The hosts of `urls`, for the names of an auto-TLS certificate.
pub(crate) fn hosts(urls: &[String]) -> Vec<String> {
    urls.iter().filter_map(|u| tls::url_host(u)).collect()
}

/// The identity of `--cert-file`/`--key-file` (or their `--peer-` forms), or the auto-TLS
/// pair generated in `auto_dir` (then the flag is `true`: peers cannot verify it); `None`
/// when neither is given.
pub(crate) fn identity(
    prefix: &str,
    cert: Option<&PathBuf>,
    key: Option<&PathBuf>,
    auto: bool,
    auto_dir: &std::path::Path,
    hosts: &[String],
) -> Result<Option<(CertKey, bool)>> {
    let (cert_flag, key_flag, auto_flag) = (
        format!("--{prefix}cert-file"),
        format!("--{prefix}key-file"),
        format!("--{prefix}auto-tls"),
    );
    Ok(match (cert, key) {
        (Some(c), Some(k)) => {
            if auto {
                tracing::warn!("ignoring {auto_flag}: {cert_flag} and {key_flag} are given");
            }
            Some((CertKey::new(&cert_flag, c, &key_flag, k), false))
        }
        (Some(_), None) => bail_config!("{cert_flag} is given without {key_flag}"),
        (None, Some(_)) => bail_config!("{key_flag} is given without {cert_flag}"),
        (None, None) if auto => Some((tls::auto_tls(&auto_flag, auto_dir, hosts)?, true)),
        (None, None) => None,
    })
}

/// The address a `http(s)://host:port` URL names (`localhost` is 127.0.0.1).
pub(crate) fn socket_addr(flag: &str, url: &str) -> Result<SocketAddr> {
    let hp = url
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let hp = match hp.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => hp.to_owned(),
    };
    hp.parse().map_err(|e| {
        Error::Config(format!(
            "--{flag}: {url}: expected an IP address and port: {e}"
        ))
    })
}

impl Config {
    /// `--initial-cluster`, or this member alone on `peers` when it is not given.
    ///
    /// # Errors
    /// An entry without `=`.
    pub(crate) fn initial_members(&self, peers: &[String]) -> Result<Vec<InitialMember>> {
        match &self.initial_cluster {
            Some(c) => parse_initial_cluster(c),
            None => Ok(peers
                .iter()
                .map(|u| InitialMember {
                    name: self.name.clone(),
                    peer_url: u.clone(),
                })
                .collect()),
        }
    }

    /// The TLS of the `https://` client URLs: `--cert-file`/`--key-file` or `--auto-tls`,
    /// and with `--trusted-ca-file` (or `--client-cert-auth`, which needs it) client
    /// certificates required and verified. `None` when no client URL is `https://`.
    ///
    /// # Errors
    /// An `https://` URL without a certificate, half a pair, `--client-cert-auth` without
    /// `--trusted-ca-file`, or a file that cannot be read, parsed or paired.
    pub fn client_tls(&self) -> Result<Option<Arc<rustls::ServerConfig>>> {
        let listen = parse_urls("listen-client-urls", &self.listen_client_urls)?;
        let advertise = parse_urls("advertise-client-urls", &self.advertise_client_urls)?;
        let Some(https) = listen.iter().find(|u| u.starts_with("https://")) else {
            if self.cert_file.is_some() || self.key_file.is_some() || self.auto_tls {
                tracing::warn!(
                    "client TLS flags are given but no --listen-client-urls URL is https://: serving cleartext"
                );
            }
            return Ok(None);
        };
        let auto_dir = self.data_dir().join("fixtures").join("client");
        let names = hosts(&[listen.clone(), advertise].concat());
        let Some((identity, _)) = identity(
            "",
            self.cert_file.as_ref(),
            self.key_file.as_ref(),
            self.auto_tls,
            &auto_dir,
            &names,
        )?
        else {
            bail_config!(
                "--listen-client-urls {https}: https needs --cert-file and --key-file, or --auto-tls"
            );
        };
        let cas = match (&self.trusted_ca_file, self.client_cert_auth) {
            (Some(ca), _) => Some(("--trusted-ca-file", ca.as_path())),
            (None, true) => bail_config!(
                "--client-cert-auth needs --trusted-ca-file (the CAs whose client certificates are accepted)"
            ),
            (None, false) => None,
        };
        let policy = Policy {
            cipher_suites: self.cipher_suites.clone(),
            crl: self
                .client_crl_file
                .clone()
                .map(|p| ("--client-crl-file".to_owned(), p)),
            ..Policy::default()
        };
        let config = tls::server_config_with(&identity, cas, &policy, &[b"h2", b"http/1.1"])?;
        Ok(Some(Arc::new(config)))
    }

    /// The peer transport's TLS when the peer URLs are `https://`: `--peer-cert-file`/
    /// `--peer-key-file` (presented both as server and as client), peers verified against
    /// `--peer-trusted-ca-file` (which also makes the listener require client
    /// certificates); with `--peer-auto-tls`, a self-signed pair and peers not verified.
    ///
    /// # Errors
    /// `https://` peer URLs without a certificate, `http://` and `https://` mixed, no way
    /// to verify peers, or a file that cannot be read, parsed or paired.
    pub fn peer_tls(
        &self,
        listen_peer: &str,
        members: &[raft_store::Member],
    ) -> Result<Option<raft_store::TransportTls>> {
        let advertise = parse_urls(
            "initial-advertise-peer-urls",
            &self.initial_advertise_peer_urls,
        )?;
        let mut all: Vec<String> = vec![listen_peer.to_owned()];
        all.extend(advertise.iter().cloned());
        all.extend(members.iter().flat_map(|m| m.peer_urls.iter().cloned()));
        let Some(https) = all.iter().find(|u| u.starts_with("https://")) else {
            if self.peer_cert_file.is_some() || self.peer_key_file.is_some() || self.peer_auto_tls {
                tracing::warn!(
                    "peer TLS flags are given but no peer URL is https://: peers talk in cleartext"
                );
            }
            return Ok(None);
        };
        if !listen_peer.starts_with("https://") {
            bail_config!(
                "--listen-peer-urls {listen_peer} is http:// but peer URL {https} is https://: with peer TLS, listen on https://"
            );
        }
        let auto_dir = self.data_dir().join("fixtures").join("peer");
        let names = hosts(&[vec![listen_peer.to_owned()], advertise].concat());
        let Some((identity, auto)) = identity(
            "peer-",
            self.peer_cert_file.as_ref(),
            self.peer_key_file.as_ref(),
            self.peer_auto_tls,
            &auto_dir,
            &names,
        )?
        else {
            bail_config!(
                "peer URL {https}: https needs --peer-cert-file and --peer-key-file, or --peer-auto-tls"
            );
        };
        let ca = self.peer_trusted_ca_file.as_deref();
        let cas = match (ca, self.peer_client_cert_auth) {
            (Some(ca), _) => Some(("--peer-trusted-ca-file", ca)),
            (None, true) => bail_config!(
                "--peer-client-cert-auth needs --peer-trusted-ca-file (the CAs whose peer certificates are accepted)"
            ),
            (None, false) => None,
        };
        let verify = match ca {
            Some(ca) => ServerVerification::Ca {
                flag: "--peer-trusted-ca-file".into(),
                path: ca.to_owned(),
            },
            None if auto => ServerVerification::None,
            None => bail_config!(
                "--peer-cert-file: peers' certificates are verified against --peer-trusted-ca-file, which is not given"
            ),
        };
        let policy = Policy {
            cipher_suites: self.cipher_suites.clone(),
            crl: self
                .peer_crl_file
                .clone()
                .map(|p| ("--peer-crl-file".to_owned(), p)),
            allowed_cn: self.peer_cert_allowed_cn.clone(),
            allowed_hostname: self.peer_cert_allowed_hostname.clone(),
        };
        if policy.allowed_cn.is_some() && policy.allowed_hostname.is_some() {
            bail_config!(
                "--peer-cert-allowed-cn and --peer-cert-allowed-hostname cannot both be set"
            );
        }
        let server = tls::server_config_with(&identity, cas, &policy, &[b"h2"])?;
        let client =
            kv_client::tls::client_config_with(&verify, Some(&identity), &policy, &[b"h2"])?;
        Ok(Some(raft_store::TransportTls::new(server, client)))
    }

    /// The HTTP limits from the flags.
    pub fn limits(&self) -> Limits {
        Limits {
            max_request_bytes: self.max_request_bytes,
            max_watchers_per_conn: self.max_watchers_per_conn,
            ..Limits::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn defaults_make_a_single_member() {
        let c = Cli::parse_from(["kvd"]).config;
        assert_eq!(c.data_dir(), PathBuf::from("default.kvd"));
        let (m, addrs) = c.validate().unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:2379".parse::<SocketAddr>().unwrap()]);
        assert_eq!(m.client_urls, vec!["http://127.0.0.1:2379".to_string()]);
    }

    #[test]
    fn bad_flags_are_refused_with_the_flag_named() {
        let c = Cli::parse_from(["kvd", "--listen-client-urls", "127.0.0.1:1"]).config;
        assert!(format!("{:#}", c.validate().unwrap_err()).contains("--listen-client-urls"));
        let c = Cli::parse_from(["kvd", "--initial-cluster", "x=http://127.0.0.1:2380"]).config;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("no member named")
        );
        let c = Cli::parse_from(["kvd", "--initial-cluster-state", "old"]).config;
        assert!(c.validate().is_err());
        assert!(Cli::try_parse_from(["kvd", "--enable-v2"]).is_ok());
    }

    #[test]
    fn tls_flags_are_checked_with_the_flag_named() {
        let https = ["--listen-client-urls", "https://127.0.0.1:2379"];
        let err = |args: &[&str]| {
            let c = Cli::parse_from(["kvd"].iter().chain(args)).config;
            format!("{:#}", c.client_tls().unwrap_err())
        };
        assert!(err(&https).contains("--auto-tls"));
        let half = [&https[..], &["--cert-file", "/nonexistent.pem"]].concat();
        assert!(err(&half).contains("without --key-file"));
        let missing = [&half[..], &["--key-file", "/nonexistent-key.pem"]].concat();
        assert!(err(&missing).contains("--cert-file /nonexistent.pem"));
        // TLS flags with cleartext URLs are accepted (and ignored, with a warning).
        let c = Cli::parse_from(["kvd", "--cert-file", "/nonexistent.pem"]).config;
        assert!(c.client_tls().unwrap().is_none());
        let c = Cli::parse_from([
            "kvd",
            "--listen-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "https://127.0.0.1:2380",
            "--peer-auto-tls",
        ])
        .config;
        let e = c.peer_tls("http://127.0.0.1:2380", &[]).unwrap_err();
        assert!(e.to_string().contains("--listen-peer-urls"));
    }
}
