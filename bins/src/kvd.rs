//! The kvd server: etcd 3.4-compatible configuration (flags and `ETCD_*` variables) and
//! [`run`], which serves the v2 HTTP API until a shutdown future completes.
//!
//! Backends (`--backend`):
//! * `raft` (the default): [`RaftBackend`], kv-core replicated by raft-store, with its raft
//!   log in RocksDB under `<data-dir>/member/raft` and gRPC between members on the peer URLs. A
//!   write is acknowledged once it is fsynced on a quorum. `--initial-cluster` bootstraps a
//!   cluster of any size; `--initial-cluster-state existing` joins one after `member add`.
//! * `memory`: the single-member [`MemoryBackend`], one `kv_core::Store` owned by one task,
//!   saved to `<data-dir>/member/snap/db` on graceful shutdown only: **not durable** against
//!   a crash and **not replicated**. Useful as a fast scratch store in tests.
//!
//! TLS follows etcd's flags: `https://` client URLs are served with `--cert-file` and
//! `--key-file` (or a self-signed pair that `--auto-tls` writes under
//! `<data-dir>/fixtures/client`), and `--trusted-ca-file` (with or without
//! `--client-cert-auth`) makes clients present a certificate one of those CAs issued.
//! `https://` peer URLs do the same between members with the `--peer-*` flags; members
//! verify each other against `--peer-trusted-ca-file`, or not at all with `--peer-auto-tls`
//! (self-signed certificates under `<data-dir>/fixtures/peer`), as etcd does.
//!
//! Renewed certificates need no restart, as in etcd 3.4: when the files of `--cert-file`/
//! `--key-file` or `--peer-cert-file`/`--peer-key-file` are replaced (or rewritten), new
//! connections get the new pair within about a second, on the client port, on the peer
//! port, and as the certificate this member presents to its peers; connections already open
//! keep theirs. `--client-crl-file` and `--peer-crl-file` are re-read the same way (etcd
//! reads them on every connection). A replacement that cannot be read, is not PEM, or whose
//! key does not belong to its certificate is logged as a warning naming the file and the
//! previous pair (or CRL) stays in use until the files change again; etcd would instead fail
//! the handshakes. `--trusted-ca-file` and `--peer-trusted-ca-file` are read at start-up
//! only, as etcd reads them: a new CA needs a restart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Args;

use crate::http::{self, Limits};
use crate::store::KvBackend;
use crate::store::memory::{MemoryBackend, MemoryConfig};
use crate::store::raft::{RaftBackend, RaftIdentity, fnv64, member_id};
use crate::tls::{self, CertKey, ServerVerification};

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
pub fn parse_urls(flag: &str, list: &str) -> anyhow::Result<Vec<String>> {
    let urls: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if urls.is_empty() {
        bail!("--{flag}: no URL given");
    }
    for u in &urls {
        if u.starts_with("unix://") || u.starts_with("unixs://") {
            bail!("--{flag}: {u}: unix sockets are not supported by this kvd build");
        }
        let rest = u
            .strip_prefix("http://")
            .or_else(|| u.strip_prefix("https://"))
            .with_context(|| format!("--{flag}: {u}: expected a URL like http://127.0.0.1:2379"))?;
        let hostport = rest.trim_end_matches('/');
        if !hostport.contains(':') {
            bail!("--{flag}: {u}: the URL needs an explicit port");
        }
    }
    Ok(urls)
}

/// Parses `--initial-cluster` (`name=url,name=url`).
///
/// # Errors
/// An entry without `=`.
pub fn parse_initial_cluster(s: &str) -> anyhow::Result<Vec<InitialMember>> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, url) = e
                .split_once('=')
                .with_context(|| format!("--initial-cluster: {e:?} is not name=peerURL"))?;
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
    pub fn validate(&self) -> anyhow::Result<(MemoryConfig, Vec<SocketAddr>)> {
        match self.initial_cluster_state.as_str() {
            "new" | "existing" => {}
            s => bail!("--initial-cluster-state: {s:?} is neither \"new\" nor \"existing\""),
        }
        if self.election_timeout < 5 * self.heartbeat_interval {
            bail!(
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
            bail!(
                "--initial-cluster has no member named {:?} (--name)",
                self.name
            );
        }
        let addrs = listen
            .iter()
            .map(|u| socket_addr("listen-client-urls", u))
            .collect::<anyhow::Result<Vec<_>>>()?;
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

/// Runs kvd until `shutdown` completes: binds the client URLs, starts the backend, serves
/// the v2 API, then saves the store and stops.
///
/// # Errors
/// Invalid configuration, a port that cannot be bound, a data directory that cannot be read
/// or written.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    match config.backend.as_str() {
        "raft" => run_raft(config, shutdown).await,
        "memory" => run_memory(config, shutdown).await,
        other => bail!("--backend: {other:?} is neither \"raft\" nor \"memory\""),
    }
}

/// A bound client URL and, for an `https://` one, the TLS it serves.
#[derive(Debug)]
pub struct ClientListener {
    /// The bound socket.
    pub listener: tokio::net::TcpListener,
    /// The TLS configuration of an `https://` URL; `None` serves cleartext.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Builds the client TLS (before binding, so a bad certificate fails before any port is
/// taken) and binds every `--listen-client-urls` URL.
async fn bind_all(config: &Config, addrs: &[SocketAddr]) -> anyhow::Result<Vec<ClientListener>> {
    let tls = config.client_tls()?;
    let urls = parse_urls("listen-client-urls", &config.listen_client_urls)?;
    let mut listeners = Vec::new();
    for (a, u) in addrs.iter().zip(&urls) {
        let listener = tokio::net::TcpListener::bind(a)
            .await
            .with_context(|| format!("binding client URL {u}"))?;
        let tls = if u.starts_with("https://") {
            tls.clone()
        } else {
            None
        };
        listeners.push(ClientListener { listener, tls });
    }
    Ok(listeners)
}

/// The hosts of `urls`, for the names of an auto-TLS certificate.
fn hosts(urls: &[String]) -> Vec<String> {
    urls.iter().filter_map(|u| tls::url_host(u)).collect()
}

/// The identity of `--cert-file`/`--key-file` (or their `--peer-` forms), or the auto-TLS
/// pair generated in `auto_dir` (then the flag is `true`: peers cannot verify it); `None`
/// when neither is given.
fn identity(
    prefix: &str,
    cert: Option<&PathBuf>,
    key: Option<&PathBuf>,
    auto: bool,
    auto_dir: &std::path::Path,
    hosts: &[String],
) -> anyhow::Result<Option<(CertKey, bool)>> {
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
        (Some(_), None) => bail!("{cert_flag} is given without {key_flag}"),
        (None, Some(_)) => bail!("{key_flag} is given without {cert_flag}"),
        (None, None) if auto => Some((tls::auto_tls(&auto_flag, auto_dir, hosts)?, true)),
        (None, None) => None,
    })
}

async fn run_memory(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (mem, addrs) = config.validate()?;
    let others = config
        .initial_members(&mem.peer_urls)?
        .into_iter()
        .filter(|m| m.name != config.name)
        .count();
    if others > 0 {
        bail!(
            "--initial-cluster names {others} other member(s): the memory backend runs one member; use --backend raft"
        );
    }
    let listeners = bind_all(&config, &addrs).await?;
    let backend = Arc::new(MemoryBackend::open(mem).await?);
    let limits = config.limits();
    let shutdown_backend = {
        let b = Arc::clone(&backend);
        async move { b.shutdown().await.context("saving the store") }
    };
    serve_backend(backend, listeners, limits, shutdown, shutdown_backend).await
}

/// The address a `http(s)://host:port` URL names (`localhost` is 127.0.0.1).
fn socket_addr(flag: &str, url: &str) -> anyhow::Result<SocketAddr> {
    let hp = url
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let hp = match hp.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => hp.to_owned(),
    };
    hp.parse()
        .with_context(|| format!("--{flag}: {url}: expected an IP address and port"))
}

/// What `<data-dir>/member/identity.json` records.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedIdentity {
    id: u64,
    cluster_id: u64,
}

/// Member ids, the cluster id and the initial member list from the flags.
fn raft_members(config: &Config) -> anyhow::Result<(u64, u64, Vec<raft_store::Member>)> {
    let peers = parse_urls(
        "initial-advertise-peer-urls",
        &config.initial_advertise_peer_urls,
    )?;
    let token = &config.initial_cluster_token;
    let cluster = config.initial_members(&peers)?;
    let mut members: Vec<raft_store::Member> = Vec::new();
    for m in &cluster {
        if members.iter().any(|x| x.name == m.name) {
            continue;
        }
        let urls: Vec<String> = cluster
            .iter()
            .filter(|o| o.name == m.name)
            .map(|o| o.peer_url.clone())
            .collect();
        parse_urls("initial-cluster", &urls.join(","))?;
        let id = member_id(&urls, token);
        if members.iter().any(|x| x.id == id) {
            bail!(
                "--initial-cluster: member {:?} has the same peer URLs as another member",
                m.name
            );
        }
        // Client URLs are published through the log once each member runs; the bootstrap
        // entries must be identical on every member, so they carry none.
        let mut rm = raft_store::Member::new(id, m.name.clone());
        rm.peer_urls = urls;
        members.push(rm);
    }
    let my_id = member_id(&peers, token);
    match members.iter().find(|m| m.name == config.name) {
        Some(m) if m.id == my_id => {}
        Some(m) => bail!(
            "--initial-cluster: the peer URLs given for {:?} ({}) differ from --initial-advertise-peer-urls ({})",
            config.name,
            m.peer_urls.join(","),
            peers.join(",")
        ),
        None => bail!(
            "--initial-cluster has no member named {:?} (--name)",
            config.name
        ),
    }
    // The cluster id comes from the token alone: a member joining with
    // `--initial-cluster-state existing` lists today's members, not the bootstrap set, yet
    // must compute the same id (peers refuse messages carrying another cluster's id). As
    // with etcd, give every cluster its own token.
    let cluster_id = fnv64(&["cluster", token]);
    Ok((my_id, cluster_id, members))
}

async fn run_raft(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (_, addrs) = config.validate()?;
    let new_cluster = config.initial_cluster_state == "new";
    let advertise = parse_urls("advertise-client-urls", &config.advertise_client_urls)?;
    let listen_peer = parse_urls("listen-peer-urls", &config.listen_peer_urls)?;
    if listen_peer.len() > 1 {
        bail!("--listen-peer-urls: this kvd build listens on one peer URL");
    }
    let (mut my_id, mut cluster_id, members) = raft_members(&config)?;
    // A member keeps the identity it was created with, whatever the flags say now (etcd reads
    // it back from its WAL): restarting with other peer URLs must not make it a stranger to
    // its own log.
    let identity_file = config.data_dir().join("member").join("identity.json");
    match std::fs::read(&identity_file) {
        Ok(bytes) => {
            let saved: SavedIdentity = serde_json::from_slice(&bytes).with_context(|| {
                format!("{}: not a kvd member identity", identity_file.display())
            })?;
            if saved.id != my_id {
                tracing::warn!(
                    saved = %format!("{:x}", saved.id),
                    flags = %format!("{my_id:x}"),
                    "the data directory belongs to another member id than the flags give; keeping the stored one"
                );
            }
            my_id = saved.id;
            cluster_id = saved.cluster_id;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", identity_file.display())),
    }

    let peer_tls = config.peer_tls(&listen_peer[0], &members)?;
    let listeners = bind_all(&config, &addrs).await?;
    let peer_addr = socket_addr("listen-peer-urls", &listen_peer[0])?;
    let (peer_listener, _) = raft_store::grpc::bind(peer_addr)
        .await
        .with_context(|| format!("binding peer URL {}", listen_peer[0]))?;

    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let transport = match peer_tls {
        Some(tls) => raft_store::GrpcTransport::with_tls(cluster_id, tls),
        None => raft_store::GrpcTransport::new(cluster_id),
    };
    // A member joining an existing cluster knows nobody until it has applied the membership
    // entries the leader sends it, yet it must answer the leader to receive them: seed the
    // transport with the peers named in --initial-cluster (the log's entries update them).
    for m in members.iter().filter(|m| m.id != my_id) {
        raft_store::Transport::set_peer(&transport, m.id, &m.peer_urls);
    }
    // `member/raft` holds raft-store's directory; `member/snap/db` is where a restored (or
    // memory-backend) store waits to seed a new cluster.
    let raft_dir = data_dir.join("member").join("raft");
    let mut rc = raft_store::Config::new(my_id, &raft_dir);
    let initialised = raft_dir.join(raft_store::storage::VERSION_FILE).exists();
    if new_cluster && !initialised {
        rc.initial_members = members;
    }
    // A store left by `kvctl snapshot restore` (or by the memory backend) in a data
    // directory raft-store has not initialised yet becomes the new cluster's initial state.
    let seed = data_dir.join("member").join("snap").join("db");
    let (mut machine, handle) = RaftBackend::machine();
    let seeded = new_cluster && !initialised && seed.exists();
    if seeded {
        let f = std::fs::File::open(&seed)
            .with_context(|| format!("reading the restored store {}", seed.display()))?;
        machine = RaftBackend::machine_from(&mut std::io::BufReader::new(f), &handle)
            .with_context(|| format!("loading the restored store {}", seed.display()))?;
        rc.bootstrap_from_machine = true;
        tracing::info!(path = %seed.display(), "starting the new cluster from a restored store");
    }
    rc.tick_interval = std::time::Duration::from_millis(config.heartbeat_interval.max(1));
    rc.heartbeat_ticks = 1;
    rc.election_ticks = usize::try_from(config.election_timeout / config.heartbeat_interval.max(1))
        .unwrap_or(usize::MAX);
    rc.snapshot_entries = config.snapshot_count.max(1);
    rc.validate().context("raft configuration")?;
    let node = raft_store::Node::open(rc, machine, transport.clone())
        .await
        .with_context(|| format!("opening the data directory {}", data_dir.display()))?;
    if !identity_file.exists() {
        let saved = SavedIdentity {
            id: my_id,
            cluster_id,
        };
        let tmp = identity_file.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&saved)?)
            .and_then(|()| std::fs::rename(&tmp, &identity_file))
            .with_context(|| format!("writing {}", identity_file.display()))?;
    }
    if seeded {
        // The bootstrap snapshot now holds the restored state; the file must not seed again.
        let done = seed.with_extension("restored");
        std::fs::rename(&seed, &done)
            .with_context(|| format!("renaming {} to {}", seed.display(), done.display()))?;
    }
    let (stop_peer, peer_stopped) = tokio::sync::watch::channel(false);
    let peer_server = tokio::spawn(async move {
        let mut rx = peer_stopped;
        transport
            .serve(peer_listener, async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await
    });
    let identity = RaftIdentity {
        cluster_id,
        token: config.initial_cluster_token.clone(),
        name: config.name.clone(),
        client_urls: advertise,
    };
    tracing::info!(id = %format!("{my_id:x}"), cluster = %format!("{cluster_id:x}"), "raft member started");
    let backend = Arc::new(RaftBackend::new(node, handle, identity));
    let stop = {
        let b = Arc::clone(&backend);
        async move {
            b.shutdown().await;
            Ok(())
        }
    };
    let res = serve_backend(backend, listeners, config.limits(), shutdown, stop).await;
    let _ = stop_peer.send(true);
    // A graceful stop waits for peers' streams to close; a peer that keeps its stream open
    // must not keep this process from exiting.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), peer_server).await;
    res
}

impl Config {
    /// `--initial-cluster`, or this member alone on `peers` when it is not given.
    ///
    /// # Errors
    /// An entry without `=`.
    fn initial_members(&self, peers: &[String]) -> anyhow::Result<Vec<InitialMember>> {
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
    pub fn client_tls(&self) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
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
            bail!(
                "--listen-client-urls {https}: https needs --cert-file and --key-file, or --auto-tls"
            );
        };
        let cas = match (&self.trusted_ca_file, self.client_cert_auth) {
            (Some(ca), _) => Some(("--trusted-ca-file", ca.as_path())),
            (None, true) => bail!(
                "--client-cert-auth needs --trusted-ca-file (the CAs whose client certificates are accepted)"
            ),
            (None, false) => None,
        };
        let policy = tls::Policy {
            cipher_suites: self.cipher_suites.clone(),
            crl: self
                .client_crl_file
                .clone()
                .map(|p| ("--client-crl-file".to_owned(), p)),
            ..tls::Policy::default()
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
    ) -> anyhow::Result<Option<raft_store::TransportTls>> {
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
            bail!(
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
            bail!(
                "peer URL {https}: https needs --peer-cert-file and --peer-key-file, or --peer-auto-tls"
            );
        };
        let ca = self.peer_trusted_ca_file.as_deref();
        let cas = match (ca, self.peer_client_cert_auth) {
            (Some(ca), _) => Some(("--peer-trusted-ca-file", ca)),
            (None, true) => bail!(
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
            None => bail!(
                "--peer-cert-file: peers' certificates are verified against --peer-trusted-ca-file, which is not given"
            ),
        };
        let policy = tls::Policy {
            cipher_suites: self.cipher_suites.clone(),
            crl: self
                .peer_crl_file
                .clone()
                .map(|p| ("--peer-crl-file".to_owned(), p)),
            allowed_cn: self.peer_cert_allowed_cn.clone(),
            allowed_hostname: self.peer_cert_allowed_hostname.clone(),
        };
        if policy.allowed_cn.is_some() && policy.allowed_hostname.is_some() {
            bail!("--peer-cert-allowed-cn and --peer-cert-allowed-hostname cannot both be set");
        }
        let server = tls::server_config_with(&identity, cas, &policy, &[b"h2"])?;
        let client = tls::client_config_with(&verify, Some(&identity), &policy, &[b"h2"])?;
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

/// Serves the v2 API over `backend` on every listener until `shutdown` completes, then runs
/// `stop_backend` (which must end open watches) and waits for the servers to finish.
///
/// # Errors
/// A listener failed, or stopping the backend failed.
pub async fn serve_backend<B: KvBackend>(
    backend: Arc<B>,
    listeners: Vec<ClientListener>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    stop_backend: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let router = http::router(backend, limits);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    for ClientListener { listener, tls } in listeners {
        tracing::info!(addr = %listener.local_addr()?, tls = tls.is_some(), "serving client requests");
        let mut rx = stop_rx.clone();
        let r = router.clone();
        let stop = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        match tls {
            Some(config) => servers.spawn(http::serve_tls(listener, config, r, stop)),
            None => servers.spawn(http::serve(listener, r, stop)),
        };
    }
    shutdown.await;
    tracing::info!("shutting down");
    // Ending the backend first closes every watch stream, so graceful HTTP shutdown does not
    // wait for long polls that would never end.
    stop_backend.await?;
    let _ = stop_tx.send(true);
    while let Some(r) = servers.join_next().await {
        r.context("server task")?.context("serving")?;
    }
    Ok(())
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
