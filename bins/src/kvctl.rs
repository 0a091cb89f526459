//! kvctl: etcdctl v2's commands, output formats, messages and exit codes, over the v2 HTTP
//! API (the default, so it works against kvd and against a real etcd alike) or over kvd's
//! gRPC API `kv.v1` (`--api grpc`, kvd only).
//!
//! [`Cli`] is the command line; [`run`] executes it and returns the process exit code
//! (etcdctl's: 0 success, 1 bad arguments, 2 no connection, 4 server error, 5 cluster not
//! healthy). The commands and their printing are written once, over a small `Api`
//! trait with an HTTP implementation (reqwest) and a gRPC one ([`kv_client::KvClient`]
//! on a current-thread tokio runtime); both give the same output, messages and exit codes.

use std::io::{BufReader, Read as _, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use kv_core::json::push_str;

mod grpc;
mod http;

/// etcdctl's exit codes.
pub mod exit {
    /// Success.
    pub const SUCCESS: u8 = 0;
    /// Bad arguments.
    pub const BAD_ARGS: u8 = 1;
    /// No endpoint reachable.
    pub const BAD_CONNECTION: u8 = 2;
    /// The server answered with an error.
    pub const SERVER_ERROR: u8 = 4;
    /// `cluster-health` found no healthy member.
    pub const CLUSTER_NOT_HEALTHY: u8 = 5;
}

/// kvctl's command line (etcdctl v2's global options and commands).
#[derive(Debug, Parser)]
#[command(
    name = "kvctl",
    version,
    about = "A simple command line client for kvd and etcd (v2 API)."
)]
pub struct Cli {
    /// The API to speak: `http` (etcd's v2 HTTP API; kvd and etcd) or `grpc` (kvd's
    /// `kv.v1`, served on the same client URLs).
    #[arg(long, env = "KVCTL_API", value_enum, default_value_t = ApiKind::Http, global = true)]
    pub api: ApiKind,
    /// A comma-delimited list of machine addresses in the cluster.
    #[arg(
        long,
        env = "ETCDCTL_ENDPOINTS",
        default_value = "http://127.0.0.1:2379,http://127.0.0.1:4001",
        global = true
    )]
    pub endpoints: String,
    /// DEPRECATED - "--endpoints" should be used instead.
    #[arg(long, short = 'C', global = true)]
    pub peers: Option<String>,
    /// DEPRECATED - "--endpoints" should be used instead.
    #[arg(long, global = true)]
    pub endpoint: Option<String>,
    /// Output response in the given format (`simple`, `extended` or `json`).
    #[arg(long, short = 'o', default_value = "simple", global = true)]
    pub output: String,
    /// Don't synchronize cluster information before sending request (accepted).
    #[arg(long, global = true)]
    pub no_sync: bool,
    /// Output cURL commands which can be used to reproduce the request.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Connection timeout per request, in seconds (`2s` and `2` are accepted).
    #[arg(long, default_value = "2s", global = true)]
    pub timeout: String,
    /// Timeout for the command execution (except watch).
    #[arg(long, default_value = "5s", global = true)]
    pub total_timeout: String,
    /// Identify HTTPS client using this SSL certificate file.
    #[arg(long, env = "ETCDCTL_CERT_FILE", global = true)]
    pub cert_file: Option<std::path::PathBuf>,
    /// Identify HTTPS client using this SSL key file.
    #[arg(long, env = "ETCDCTL_KEY_FILE", global = true)]
    pub key_file: Option<std::path::PathBuf>,
    /// Verify certificates of HTTPS-enabled servers using this CA bundle (default: the
    /// system's).
    #[arg(long, env = "ETCDCTL_CA_FILE", global = true)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Accept any certificate the server presents (insecure: for self-signed
    /// `--auto-tls` servers).
    #[arg(long, global = true)]
    pub insecure_skip_tls_verify: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The API kvctl speaks (`--api`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApiKind {
    /// etcd's v2 HTTP API (`/v2/keys`, `/v2/members`, `/health`): kvd and etcd.
    Http,
    /// kvd's gRPC API `kv.v1` (on the same client URLs as HTTP; kvd only).
    Grpc,
}

/// TTL option shared by the writing commands.
#[derive(Debug, Args)]
pub struct TtlArg {
    /// Key time-to-live in seconds.
    #[arg(long, default_value_t = 0)]
    pub ttl: u64,
}

/// kvctl's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Retrieve the value of a key.
    Get {
        /// Returns result in sorted order.
        #[arg(long)]
        sort: bool,
        /// Require quorum for get request.
        #[arg(long)]
        quorum: bool,
        /// The key.
        key: Option<String>,
    },
    /// Set the value of a key.
    Set {
        /// Time-to-live.
        #[command(flatten)]
        ttl: TtlArg,
        /// Previous value.
        #[arg(long)]
        swap_with_value: Option<String>,
        /// Previous index.
        #[arg(long, default_value_t = 0)]
        swap_with_index: u64,
        /// The key.
        key: Option<String>,
        /// The value (read from stdin when absent).
        value: Option<String>,
    },
    /// Make a new key with a given value.
    Mk {
        /// Time-to-live.
        #[command(flatten)]
        ttl: TtlArg,
        /// Create in-order key under directory DIR.
        #[arg(long)]
        in_order: bool,
        /// The key.
        key: Option<String>,
        /// The value (read from stdin when absent).
        value: Option<String>,
    },
    /// Make a new directory.
    Mkdir {
        /// Time-to-live.
        #[command(flatten)]
        ttl: TtlArg,
        /// The key.
        key: Option<String>,
    },
    /// Create a new directory or update an existing directory TTL.
    Setdir {
        /// Time-to-live.
        #[command(flatten)]
        ttl: TtlArg,
        /// The key.
        key: Option<String>,
    },
    /// Remove a key or a directory.
    Rm {
        /// Removes the key if it is an empty directory or a key-value pair.
        #[arg(long)]
        dir: bool,
        /// Removes the key and all child keys (if it is a directory).
        #[arg(long)]
        recursive: bool,
        /// Previous value.
        #[arg(long)]
        with_value: Option<String>,
        /// Previous index.
        #[arg(long, default_value_t = 0)]
        with_index: u64,
        /// The key.
        key: Option<String>,
    },
    /// Removes the key if it is an empty directory or a key-value pair.
    Rmdir {
        /// The key.
        key: Option<String>,
    },
    /// Retrieve a directory.
    Ls {
        /// Returns result in sorted order.
        #[arg(long)]
        sort: bool,
        /// Returns all key names recursively for the given path.
        #[arg(long)]
        recursive: bool,
        /// Append slash (/) to directories.
        #[arg(short = 'p')]
        p: bool,
        /// Require quorum for get request.
        #[arg(long)]
        quorum: bool,
        /// The directory (default `/`).
        key: Option<String>,
    },
    /// Update an existing key with a given value.
    Update {
        /// Time-to-live.
        #[command(flatten)]
        ttl: TtlArg,
        /// The key.
        key: Option<String>,
        /// The value (read from stdin when absent).
        value: Option<String>,
    },
    /// Update an existing directory.
    Updatedir {
        /// Time-to-live.
        #[command(flatten)]
        ttl: TtlArg,
        /// The key.
        key: Option<String>,
    },
    /// Watch a key for changes.
    Watch {
        /// Forever watch a key until CTRL+C.
        #[arg(long, short = 'f')]
        forever: bool,
        /// Watch after the given index.
        #[arg(long, default_value_t = 0)]
        after_index: u64,
        /// Returns all values for key and child keys.
        #[arg(long)]
        recursive: bool,
        /// The key.
        key: Option<String>,
    },
    /// Watch a key for changes and exec an executable.
    ExecWatch {
        /// Watch after the given index.
        #[arg(long, default_value_t = 0)]
        after_index: u64,
        /// Watch all values for key and child keys.
        #[arg(long)]
        recursive: bool,
        /// The key.
        key: Option<String>,
        /// The command to run, after `--`.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Member add, remove and list subcommands.
    Member {
        /// The member subcommand.
        #[command(subcommand)]
        command: MemberCommand,
    },
    /// Check the health of the cluster.
    ClusterHealth {
        /// Forever check the health every 10 second until CTRL+C.
        #[arg(long, short = 'f')]
        forever: bool,
    },
    /// Save or restore a snapshot of a kvd store.
    Snapshot {
        /// The snapshot subcommand.
        #[command(subcommand)]
        command: SnapshotCommand,
    },
}

/// `member` subcommands.
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Enumerate existing cluster members.
    List {
        /// Nothing is accepted.
        args: Vec<String>,
    },
    /// Add a new member to the cluster.
    Add {
        /// `<name> <peerURL>`.
        args: Vec<String>,
    },
    /// Remove an existing member from the cluster.
    Remove {
        /// `<memberID>`.
        args: Vec<String>,
    },
    /// Update an existing member in the cluster.
    Update {
        /// `<memberID> <peerURLs>`.
        args: Vec<String>,
    },
}

/// `snapshot` subcommands.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Stream a consistent snapshot of the store from a kvd member into FILE.
    Save {
        /// Destination file.
        file: PathBuf,
    },
    /// Restore a snapshot file into a new data directory, for kvd `--data-dir`.
    Restore {
        /// The snapshot file.
        file: PathBuf,
        /// The data directory to create (default `default.kvd`).
        #[arg(long, default_value = "default.kvd")]
        data_dir: PathBuf,
    },
}

/// A failure with its exit code and the text etcdctl prints.
#[derive(Debug)]
struct Fail {
    code: u8,
    message: String,
}

fn fail(code: u8, message: impl Into<String>) -> Fail {
    Fail {
        code,
        message: message.into(),
    }
}

/// An error in etcdctl's `Error:  <err>` form.
fn error(code: u8, err: impl std::fmt::Display) -> Fail {
    fail(code, format!("Error:  {err}"))
}

/// A node as etcd's Go client decodes it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CNode {
    #[serde(default)]
    key: String,
    #[serde(default)]
    dir: bool,
    #[serde(default)]
    value: String,
    #[serde(default)]
    nodes: Option<Vec<CNode>>,
    #[serde(default)]
    created_index: u64,
    #[serde(default)]
    modified_index: u64,
    #[serde(default)]
    expiration: Option<String>,
    #[serde(default)]
    ttl: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CResponse {
    action: String,
    #[serde(default)]
    node: Option<CNode>,
    #[serde(default)]
    prev_node: Option<CNode>,
    #[serde(skip)]
    index: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CError {
    error_code: u32,
    message: String,
    #[serde(default)]
    cause: String,
    #[serde(default)]
    index: u64,
}

impl std::fmt::Display for CError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} ({}) [{}]",
            self.error_code, self.message, self.cause, self.index
        )
    }
}

/// Go's `json.Marshal` of the client's `Node`: `key, dir, value, nodes, createdIndex,
/// modifiedIndex, expiration, ttl`.
fn push_cnode(out: &mut String, n: &CNode) {
    out.push_str("{\"key\":");
    push_str(out, &n.key);
    if n.dir {
        out.push_str(",\"dir\":true");
    }
    out.push_str(",\"value\":");
    push_str(out, &n.value);
    out.push_str(",\"nodes\":");
    match &n.nodes {
        None => out.push_str("null"),
        Some(children) => {
            out.push('[');
            for (i, c) in children.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_cnode(out, c);
            }
            out.push(']');
        }
    }
    out.push_str(&format!(
        ",\"createdIndex\":{},\"modifiedIndex\":{}",
        n.created_index, n.modified_index
    ));
    if let Some(e) = &n.expiration {
        out.push_str(",\"expiration\":");
        push_str(out, e);
    }
    if n.ttl != 0 {
        out.push_str(&format!(",\"ttl\":{}", n.ttl));
    }
    out.push('}');
}

fn response_json(r: &CResponse) -> String {
    let mut s = String::from("{\"action\":");
    push_str(&mut s, &r.action);
    s.push_str(",\"node\":");
    match &r.node {
        Some(n) => push_cnode(&mut s, n),
        None => s.push_str("null"),
    }
    s.push_str(",\"prevNode\":");
    match &r.prev_node {
        Some(n) => push_cnode(&mut s, n),
        None => s.push_str("null"),
    }
    s.push('}');
    s
}

/// etcdctl's `printResponseKey`.
fn print_response(r: &CResponse, format: &str) -> String {
    let empty = CNode::default();
    let node = r.node.as_ref().unwrap_or(&empty);
    let mut s = String::new();
    match format {
        "simple" => {
            if r.action != "delete" {
                s.push_str(&format!("{}\n", node.value));
            } else {
                let pv = r.prev_node.as_ref().map_or("", |p| p.value.as_str());
                s.push_str(&format!("PrevNode.Value: {pv}\n"));
            }
        }
        "extended" => {
            s.push_str(&format!("Key: {}\n", node.key));
            s.push_str(&format!("Created-Index: {}\n", node.created_index));
            s.push_str(&format!("Modified-Index: {}\n", node.modified_index));
            if let Some(p) = &r.prev_node {
                s.push_str(&format!("PrevNode.Value: {}\n", p.value));
            }
            s.push_str(&format!("TTL: {}\n", node.ttl));
            s.push_str(&format!("Index: {}\n", r.index));
            if r.action != "delete" {
                s.push_str(&format!("\n{}\n", node.value));
            }
        }
        "json" => {
            s.push_str(&response_json(r));
            s.push('\n');
        }
        _ => {}
    }
    s
}

/// Parses `2s`, `500ms`, `1m` or a bare number of seconds.
fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// The connection settings of the global flags, whichever API carries the requests.
struct Settings {
    /// `--endpoints` (or the deprecated `--peers`/`--endpoint`), in order of preference.
    endpoints: Vec<String>,
    /// `--timeout`: per connection attempt.
    timeout: Duration,
    /// `--total-timeout`: per request (not for watches and snapshots).
    total_timeout: Duration,
    /// `--debug`: print each request on stderr.
    debug: bool,
}

impl Settings {
    fn new(cli: &Cli) -> Result<Settings, Fail> {
        let list = cli
            .peers
            .as_deref()
            .or(cli.endpoint.as_deref())
            .unwrap_or(&cli.endpoints);
        let endpoints: Vec<String> = list
            .split(',')
            .map(|s| s.trim().trim_end_matches('/').to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(error(exit::BAD_ARGS, "no endpoints given"));
        }
        let timeout = parse_duration(&cli.timeout).ok_or_else(|| {
            error(
                exit::BAD_ARGS,
                format!("invalid --timeout {:?}", cli.timeout),
            )
        })?;
        let total_timeout = parse_duration(&cli.total_timeout).ok_or_else(|| {
            error(
                exit::BAD_ARGS,
                format!("invalid --total-timeout {:?}", cli.total_timeout),
            )
        })?;
        Ok(Settings {
            endpoints,
            timeout,
            total_timeout,
            debug: cli.debug,
        })
    }
}

/// The TLS client configuration the flags ask for, offering `alpn`; `None` when no TLS
/// flag is given and no endpoint is `https://`. Without `--ca-file`, servers are verified
/// against the system's CA bundle, as etcdctl does.
fn tls_config(
    cli: &Cli,
    endpoints: &[String],
    alpn: &[&[u8]],
) -> Result<Option<rustls::ClientConfig>, Fail> {
    use kv_client::tls::{CertKey, ServerVerification};
    let identity = match (&cli.cert_file, &cli.key_file) {
        (Some(c), Some(k)) => Some(CertKey::new("--cert-file", c, "--key-file", k)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(error(
                exit::BAD_ARGS,
                "--cert-file is given without --key-file",
            ));
        }
        (None, Some(_)) => {
            return Err(error(
                exit::BAD_ARGS,
                "--key-file is given without --cert-file",
            ));
        }
    };
    let verify = match (&cli.ca_file, cli.insecure_skip_tls_verify) {
        (_, true) => ServerVerification::None,
        (Some(ca), false) => ServerVerification::Ca {
            flag: "--ca-file".into(),
            path: ca.clone(),
        },
        (None, false)
            if identity.is_none() && !endpoints.iter().any(|e| e.starts_with("https://")) =>
        {
            return Ok(None);
        }
        (None, false) => ServerVerification::System,
    };
    kv_client::tls::client_config(&verify, identity.as_ref(), alpn)
        .map(Some)
        .map_err(|e| error(exit::BAD_ARGS, e))
}

/// A write of a key (etcd's PUT, or POST for `in_order`), with every option the commands
/// use.
#[derive(Debug, Default)]
struct Put {
    key: String,
    /// The value; `None` for directories.
    value: Option<String>,
    dir: bool,
    /// Seconds; 0 is none.
    ttl: u64,
    /// `Some(false)` create only, `Some(true)` update only.
    prev_exist: Option<bool>,
    /// Compare-and-swap on the value (never empty).
    prev_value: Option<String>,
    /// Compare-and-swap on the modified index (0 is none).
    prev_index: u64,
    /// Create an in-order key under `key`.
    in_order: bool,
}

/// A request of the keys API, as the commands build it; each [`Api`] encodes it.
#[derive(Debug)]
enum KeysRequest {
    /// Read a key (a directory lists its children).
    Get {
        key: String,
        recursive: bool,
        sorted: bool,
        /// Linearizable rather than this member's state.
        quorum: bool,
    },
    /// Write a key.
    Put(Put),
    /// Delete a key; with `prev_value` or `prev_index` a compare-and-delete.
    Delete {
        key: String,
        dir: bool,
        recursive: bool,
        prev_value: Option<String>,
        prev_index: u64,
    },
}

/// What the commands need from the store, over the v2 HTTP API ([`http::HttpApi`]) or
/// kvd's gRPC `kv.v1` ([`grpc::GrpcApi`]). Both try the endpoints in order and
/// fail with [`unavailable`] (exit 2) when none accepts a connection; store errors come
/// back as etcdctl prints them, so the commands and their output are shared.
trait Api {
    /// A keys request: the event (with the store index of `X-Etcd-Index`) or etcd's error.
    fn keys(&self, req: &KeysRequest) -> Result<CResponse, Fail>;

    /// One long poll: the first event under `key` from `wait_index` (from the next one when
    /// `None`), its index the store's when the wait began; `Ok(None)` when the server ended
    /// the wait without an event (poll again).
    fn wait(
        &self,
        key: &str,
        wait_index: Option<u64>,
        recursive: bool,
    ) -> Result<Option<CResponse>, Fail>;

    /// The cluster members (ids in hex, as etcd's members API writes them).
    fn members(&self) -> Result<Vec<CMember>, Fail>;

    /// The leader's id, `None` during an election.
    fn leader(&self) -> Result<Option<String>, Fail>;

    /// Adds a member: the new member, or (inner `Err`) the server's refusal message.
    fn add_member(&self, peer_url: &str) -> Result<Result<CMember, String>, Fail>;

    /// Removes a member by its hex id; the inner `Err` is the server's refusal message.
    fn remove_member(&self, id: &str) -> Result<Result<(), String>, Fail>;

    /// Changes a member's peer URLs; the inner `Err` is the server's refusal message.
    fn update_member(&self, id: &str, peer_urls: &[&str]) -> Result<Result<(), String>, Fail>;

    /// Whether the member at `client_url` reports itself healthy (it has a leader); `Err`
    /// with the reason when it cannot be asked.
    fn health(&self, client_url: &str) -> Result<bool, String>;

    /// A snapshot of the store, in kv-core's format (kvd only).
    fn snapshot(&self) -> Result<Vec<u8>, Fail>;
}

/// etcdctl's error when no endpoint accepted a connection; `errors` are `<url>: <cause>`.
fn unavailable(errors: &[String]) -> Fail {
    let mut msg = String::from("client: etcd cluster is unavailable or misconfigured");
    for (i, e) in errors.iter().enumerate() {
        msg.push_str(&format!("; error #{i}: {e}"));
    }
    error(exit::BAD_CONNECTION, msg)
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CMember {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(rename = "peerURLs", default)]
    peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    client_urls: Vec<String>,
}

/// etcdctl's `argOrStdin`: the argument, else all of stdin (an error when empty).
fn arg_or_stdin(arg: Option<String>) -> Option<String> {
    if arg.is_some() {
        return arg;
    }
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).ok()?;
    (!s.is_empty()).then_some(s)
}

fn need_key(key: Option<String>) -> Result<String, Fail> {
    key.ok_or_else(|| error(exit::BAD_ARGS, "key required"))
}

/// The value of `set`, `mk` and `update`: the argument or stdin.
fn need_value(value: Option<String>) -> Result<String, Fail> {
    arg_or_stdin(value).ok_or_else(|| error(exit::BAD_ARGS, "value required"))
}

/// Runs the command line; output goes to stdout and stderr. Returns the exit code.
pub fn run(cli: Cli) -> u8 {
    match execute(&cli) {
        Ok(out) => {
            print!("{out}");
            let _ = std::io::stdout().flush();
            exit::SUCCESS
        }
        Err(f) => {
            let _ = std::io::stdout().flush();
            if !f.message.is_empty() {
                eprintln!("{}", f.message);
            }
            f.code
        }
    }
}

/// The API `--api` chooses, on the endpoints and with the TLS of the flags.
fn connect_api(cli: &Cli) -> Result<Box<dyn Api>, Fail> {
    let settings = Settings::new(cli)?;
    Ok(match cli.api {
        ApiKind::Http => {
            let tls = tls_config(cli, &settings.endpoints, &[b"http/1.1"])?;
            Box::new(http::HttpApi::new(&settings, tls)?)
        }
        ApiKind::Grpc => {
            let tls = tls_config(cli, &settings.endpoints, &[b"h2"])?;
            Box::new(grpc::GrpcApi::new(&settings, tls)?)
        }
    })
}

/// Runs everything but the long-running commands' streaming output; returns what to print.
fn execute(cli: &Cli) -> Result<String, Fail> {
    let out = cli.output.as_str();
    if !matches!(out, "simple" | "extended" | "json") {
        return Err(error(
            exit::BAD_ARGS,
            format!("unknown output format {out:?}"),
        ));
    }
    if let Command::Snapshot {
        command: SnapshotCommand::Restore { file, data_dir },
    } = &cli.command
    {
        return snapshot_restore(file, data_dir);
    }
    let t = connect_api(cli)?;
    let t = t.as_ref();
    match &cli.command {
        Command::Get { sort, quorum, key } => {
            let r = t.keys(&KeysRequest::Get {
                key: need_key(key.clone())?,
                recursive: false,
                sorted: *sort,
                quorum: *quorum,
            })?;
            let node = r.node.as_ref();
            if node.is_some_and(|n| n.dir) {
                return Err(fail(
                    exit::BAD_ARGS,
                    format!("{}: is a directory", node.map_or("", |n| n.key.as_str())),
                ));
            }
            Ok(print_response(&r, out))
        }
        Command::Set {
            ttl,
            swap_with_value,
            swap_with_index,
            key,
            value,
        } => {
            let key = need_key(key.clone())?;
            let r = t.keys(&KeysRequest::Put(Put {
                key,
                value: Some(need_value(value.clone())?),
                ttl: ttl.ttl,
                prev_value: swap_with_value.clone().filter(|v| !v.is_empty()),
                prev_index: *swap_with_index,
                ..Put::default()
            }))?;
            Ok(print_response(&r, out))
        }
        Command::Mk {
            ttl,
            in_order,
            key,
            value,
        } => {
            let key = need_key(key.clone())?;
            let r = t.keys(&KeysRequest::Put(Put {
                key,
                value: Some(need_value(value.clone())?),
                ttl: ttl.ttl,
                prev_exist: (!*in_order).then_some(false),
                in_order: *in_order,
                ..Put::default()
            }))?;
            Ok(print_response(&r, out))
        }
        Command::Mkdir { ttl, key }
        | Command::Setdir { ttl, key }
        | Command::Updatedir { ttl, key } => {
            let prev_exist = match &cli.command {
                Command::Mkdir { .. } => Some(false),
                Command::Updatedir { .. } => Some(true),
                _ => None,
            };
            let r = t.keys(&KeysRequest::Put(Put {
                key: need_key(key.clone())?,
                dir: true,
                ttl: ttl.ttl,
                prev_exist,
                ..Put::default()
            }))?;
            Ok(if out != "simple" {
                print_response(&r, out)
            } else {
                String::new()
            })
        }
        Command::Rm {
            dir,
            recursive,
            with_value,
            with_index,
            key,
        } => {
            let r = t.keys(&KeysRequest::Delete {
                key: need_key(key.clone())?,
                dir: *dir,
                recursive: *recursive,
                prev_value: with_value.clone().filter(|v| !v.is_empty()),
                prev_index: *with_index,
            })?;
            Ok(print_removed(&r, out))
        }
        Command::Rmdir { key } => {
            let r = t.keys(&KeysRequest::Delete {
                key: need_key(key.clone())?,
                dir: true,
                recursive: false,
                prev_value: None,
                prev_index: 0,
            })?;
            Ok(print_removed(&r, out))
        }
        Command::Ls {
            sort,
            recursive,
            p,
            quorum,
            key,
        } => {
            let r = t.keys(&KeysRequest::Get {
                key: key.clone().unwrap_or_else(|| "/".into()),
                recursive: *recursive,
                sorted: *sort,
                quorum: *quorum,
            })?;
            if out != "simple" {
                return Ok(print_response(&r, out));
            }
            let mut s = String::new();
            if let Some(n) = &r.node {
                if !n.dir {
                    s.push_str(&format!("{}\n", n.key));
                }
                for child in n.nodes.iter().flatten() {
                    print_ls(&mut s, child, *p);
                }
            }
            Ok(s)
        }
        Command::Update { ttl, key, value } => {
            let key = need_key(key.clone())?;
            let r = t.keys(&KeysRequest::Put(Put {
                key,
                value: Some(need_value(value.clone())?),
                ttl: ttl.ttl,
                prev_exist: Some(true),
                ..Put::default()
            }))?;
            Ok(print_response(&r, out))
        }
        Command::Watch {
            forever,
            after_index,
            recursive,
            key,
        } => {
            let key = need_key(key.clone())?;
            watch(t, &key, *after_index, *recursive, true, |r| {
                if *recursive {
                    println!(
                        "[{}] {}",
                        r.action,
                        r.node.as_ref().map_or("", |n| n.key.as_str())
                    );
                }
                print!("{}", print_response(r, out));
                let _ = std::io::stdout().flush();
                *forever
            })?;
            Ok(String::new())
        }
        Command::ExecWatch {
            after_index,
            recursive,
            key,
            command: cmd,
        } => {
            let Some(key) = key.clone().filter(|_| !cmd.is_empty()) else {
                return Err(error(exit::BAD_ARGS, "key and command to exec required"));
            };
            // etcdctl adds one to --after-index here and its client adds one again.
            let after = if *after_index > 0 { after_index + 1 } else { 0 };
            watch(t, &key, after, *recursive, false, |r| {
                let node = r.node.as_ref();
                if node.is_some_and(|n| n.dir) {
                    eprintln!("Ignored dir {} change", node.map_or("", |n| n.key.as_str()));
                    return true;
                }
                let n = node.map(|n| (n.key.clone(), n.value.clone(), n.modified_index));
                let (k, v, mi) = n.unwrap_or_default();
                let spawned = std::process::Command::new(&cmd[0])
                    .args(&cmd[1..])
                    .env("ETCD_WATCH_ACTION", &r.action)
                    .env("ETCD_WATCH_MODIFIED_INDEX", mi.to_string())
                    .env("ETCD_WATCH_KEY", k)
                    .env("ETCD_WATCH_VALUE", v)
                    .spawn();
                match spawned {
                    Ok(mut child) => {
                        let _ = child.wait();
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        std::process::exit(1);
                    }
                }
                true
            })?;
            Ok(String::new())
        }
        Command::Member { command } => member(t, command),
        Command::ClusterHealth { forever } => cluster_health(t, *forever),
        Command::Snapshot {
            command: SnapshotCommand::Save { file },
        } => {
            let bytes = t.snapshot()?;
            let tmp = file.with_extension("part");
            std::fs::write(&tmp, &bytes)
                .and_then(|()| std::fs::rename(&tmp, file))
                .map_err(|e| error(exit::BAD_ARGS, format!("{}: {e}", file.display())))?;
            Ok(format!("Snapshot saved at {}\n", file.display()))
        }
        Command::Snapshot {
            command: SnapshotCommand::Restore { .. },
        } => Ok(String::new()),
    }
}

/// What `rm` and `rmdir` print: nothing for a directory in the simple format.
fn print_removed(r: &CResponse, out: &str) -> String {
    let is_dir = r.node.as_ref().is_some_and(|n| n.dir);
    if !is_dir || out != "simple" {
        print_response(r, out)
    } else {
        String::new()
    }
}

fn print_ls(s: &mut String, n: &CNode, p: bool) {
    if n.dir && p {
        s.push_str(&format!("{}/\n", n.key));
    } else {
        s.push_str(&format!("{}\n", n.key));
    }
    for c in n.nodes.iter().flatten() {
        print_ls(s, c, p);
    }
}

/// A long poll that ends without an event sooner than this counts as a quick end.
const WATCH_QUICK_END: Duration = Duration::from_secs(1);
/// The wait before the second retry in a row after quick ends; it doubles from there.
const WATCH_RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between retries after quick ends.
const WATCH_RETRY_MAX: Duration = Duration::from_secs(2);

/// etcd's client `Watcher.Next` loop: long polls from `after_index + 1`, then from each
/// event's `modifiedIndex + 1`. `on_event` returns whether to keep watching; directory
/// events are skipped by `watch` and passed to `exec-watch`.
fn watch(
    t: &dyn Api,
    key: &str,
    after_index: u64,
    recursive: bool,
    skip_dirs: bool,
    mut on_event: impl FnMut(&CResponse) -> bool,
) -> Result<(), Fail> {
    let mut wait_index = (after_index > 0).then_some(after_index + 1);
    let mut retry: Option<Duration> = None;
    loop {
        let started = std::time::Instant::now();
        let Some(r) = t.wait(key, wait_index, recursive)? else {
            // A member shutting down ends every long poll at once with an empty body: back
            // off instead of hammering it. The first retry goes at once, as it usually
            // reaches the next endpoint; a poll that lasted ended normally.
            if started.elapsed() >= WATCH_QUICK_END {
                retry = None;
            } else {
                if let Some(d) = retry {
                    std::thread::sleep(d);
                }
                retry = Some(retry.map_or(WATCH_RETRY_FIRST, |d| (d * 2).min(WATCH_RETRY_MAX)));
            }
            continue;
        };
        retry = None;
        wait_index = Some(r.node.as_ref().map_or(0, |n| n.modified_index) + 1);
        if skip_dirs && r.node.as_ref().is_some_and(|n| n.dir) {
            continue;
        }
        if !on_event(&r) {
            return Ok(());
        }
    }
}

fn member(t: &dyn Api, cmd: &MemberCommand) -> Result<String, Fail> {
    match cmd {
        MemberCommand::List { args } => {
            if !args.is_empty() {
                return Err(fail(exit::BAD_ARGS, "No arguments accepted"));
            }
            let members = t.members()?;
            let leader_id = t.leader()?.unwrap_or_default();
            let mut s = String::new();
            for m in &members {
                if m.name.is_empty() {
                    s.push_str(&format!(
                        "{}[unstarted]: peerURLs={}\n",
                        m.id,
                        m.peer_urls.join(",")
                    ));
                } else {
                    s.push_str(&format!(
                        "{}: name={} peerURLs={} clientURLs={} isLeader={}\n",
                        m.id,
                        m.name,
                        m.peer_urls.join(","),
                        m.client_urls.join(","),
                        m.id == leader_id
                    ));
                }
            }
            Ok(s)
        }
        MemberCommand::Add { args } => {
            if args.len() != 2 {
                return Err(fail(
                    exit::BAD_ARGS,
                    "Provide a name and a single member peerURL",
                ));
            }
            let m = t
                .add_member(&args[1])?
                .map_err(|e| fail(exit::BAD_ARGS, e))?;
            let mut s = format!(
                "Added member named {} with ID {} to cluster\n",
                args[0], m.id
            );
            let members = t.members()?;
            let mut conf = Vec::new();
            for mm in &members {
                for u in &mm.peer_urls {
                    let n = if mm.id == m.id { &args[0] } else { &mm.name };
                    conf.push(format!("{n}={u}"));
                }
            }
            s.push_str(&format!(
                "\nETCD_NAME={:?}\nETCD_INITIAL_CLUSTER={:?}\nETCD_INITIAL_CLUSTER_STATE=\"existing\"\n",
                args[0],
                conf.join(",")
            ));
            Ok(s)
        }
        MemberCommand::Remove { args } => {
            if args.len() != 1 {
                return Err(fail(exit::BAD_ARGS, "Provide a single member ID"));
            }
            let id = &args[0];
            let members = t.members().map_err(|f| {
                fail(
                    exit::BAD_ARGS,
                    format!(
                        "Error while verifying ID against known members: {}",
                        f.message
                    ),
                )
            })?;
            let mut found = false;
            let mut notes = String::new();
            for m in &members {
                if &m.id == id {
                    found = true;
                }
                if &m.name == id {
                    notes.push_str(&format!("Found a member named {}; if this is correct, please use its ID, eg:\n\tetcdctl member remove {}\nFor more details, read the documentation at https://github.com/etcd-io/etcd/blob/master/Documentation/runtime-configuration.md#remove-a-member\n\n", m.name, m.id));
                }
            }
            if !found {
                eprint!("{notes}");
                return Err(fail(
                    exit::BAD_ARGS,
                    format!("Couldn't find a member in the cluster with an ID of {id}."),
                ));
            }
            if let Err(msg) = t.remove_member(id)? {
                eprint!("Received an error trying to remove member {id}: {msg}");
                return Err(fail(exit::BAD_ARGS, ""));
            }
            Ok(format!("Removed member {id} from cluster\n"))
        }
        MemberCommand::Update { args } => {
            if args.len() != 2 {
                return Err(fail(
                    exit::BAD_ARGS,
                    "Provide an ID and a list of comma separated peerURL (0xabcd http://example.com,http://example1.com)",
                ));
            }
            let urls: Vec<&str> = args[1].split(',').collect();
            t.update_member(&args[0], &urls)?
                .map_err(|e| fail(exit::BAD_ARGS, e))?;
            Ok(format!("Updated member with ID {} in cluster\n", args[0]))
        }
    }
}

fn cluster_health(t: &dyn Api, forever: bool) -> Result<String, Fail> {
    let members = t
        .members()
        .inspect_err(|_| println!("cluster may be unhealthy: failed to list members"))?;
    loop {
        let mut healthy = false;
        let mut s = String::new();
        for m in &members {
            if m.client_urls.is_empty() {
                s.push_str(&format!(
                    "member {} is unreachable: no available published client urls\n",
                    m.id
                ));
                continue;
            }
            let mut checked = false;
            for url in &m.client_urls {
                match t.health(url) {
                    Err(reason) => {
                        s.push_str(&format!(
                            "failed to check the health of member {} on {url}: {reason}\n",
                            m.id
                        ));
                        continue;
                    }
                    Ok(true) => {
                        healthy = true;
                        s.push_str(&format!(
                            "member {} is healthy: got healthy result from {url}\n",
                            m.id
                        ));
                    }
                    Ok(false) => {
                        s.push_str(&format!(
                            "member {} is unhealthy: got unhealthy result from {url}\n",
                            m.id
                        ));
                    }
                }
                checked = true;
                break;
            }
            if !checked {
                s.push_str(&format!(
                    "member {} is unreachable: [{}] are all unreachable\n",
                    m.id,
                    m.client_urls.join(" ")
                ));
            }
        }
        s.push_str(if healthy {
            "cluster is healthy\n"
        } else {
            "cluster is unhealthy\n"
        });
        if !forever {
            if healthy {
                return Ok(s);
            }
            print!("{s}");
            return Err(fail(exit::CLUSTER_NOT_HEALTHY, ""));
        }
        print!("{s}\nnext check after 10 second...\n\n");
        let _ = std::io::stdout().flush();
        std::thread::sleep(Duration::from_secs(10));
    }
}

fn snapshot_restore(file: &std::path::Path, data_dir: &std::path::Path) -> Result<String, Fail> {
    let f = std::fs::File::open(file)
        .map_err(|e| error(exit::BAD_ARGS, format!("{}: {e}", file.display())))?;
    let store = kv_core::Store::restore(&mut BufReader::new(f)).map_err(|e| {
        error(
            exit::BAD_ARGS,
            format!("{}: not a valid snapshot: {e}", file.display()),
        )
    })?;
    if data_dir.exists() {
        return Err(error(
            exit::BAD_ARGS,
            format!("data-dir {:?} exists", data_dir.display().to_string()),
        ));
    }
    let dest = data_dir.join("member").join("snap");
    std::fs::create_dir_all(&dest)
        .map_err(|e| error(exit::BAD_ARGS, format!("{}: {e}", dest.display())))?;
    let out = dest.join("db");
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(&out)
            .map_err(|e| error(exit::BAD_ARGS, format!("{}: {e}", out.display())))?,
    );
    store
        .snapshot(&mut w)
        .map_err(|e| error(exit::BAD_ARGS, format!("{}: {e}", out.display())))?;
    w.flush()
        .map_err(|e| error(exit::BAD_ARGS, format!("{}: {e}", out.display())))?;
    Ok(format!(
        "restored snapshot {} (index {}) into {}\n",
        file.display(),
        store.index(),
        data_dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::http::{decode_keys_body, keys_path};
    use super::*;

    #[test]
    fn output_formats_match_etcdctl() {
        let r = decode_keys_body(
            r#"{"action":"set","node":{"key":"/a","value":"2","modifiedIndex":5,"createdIndex":5},"prevNode":{"key":"/a","value":"1","modifiedIndex":4,"createdIndex":4}}"#,
            5,
        )
        .unwrap();
        assert_eq!(print_response(&r, "simple"), "2\n");
        assert_eq!(
            print_response(&r, "extended"),
            "Key: /a\nCreated-Index: 5\nModified-Index: 5\nPrevNode.Value: 1\nTTL: 0\nIndex: 5\n\n2\n"
        );
        let r = decode_keys_body(r#"{"action":"get","node":{"dir":true,"nodes":[{"key":"/d","dir":true,"modifiedIndex":8,"createdIndex":8}]}}"#, 8).unwrap();
        assert_eq!(
            print_response(&r, "json"),
            "{\"action\":\"get\",\"node\":{\"key\":\"\",\"dir\":true,\"value\":\"\",\"nodes\":[{\"key\":\"/d\",\"dir\":true,\"value\":\"\",\"nodes\":null,\"createdIndex\":8,\"modifiedIndex\":8}],\"createdIndex\":0,\"modifiedIndex\":0},\"prevNode\":null}\n"
        );
        let e = decode_keys_body(
            r#"{"errorCode":105,"message":"Key already exists","cause":"/a","index":6}"#,
            6,
        )
        .unwrap_err();
        assert_eq!(e.message, "Error:  105: Key already exists (/a) [6]");
        assert_eq!(e.code, exit::SERVER_ERROR);
    }

    #[test]
    fn keys_are_escaped_in_urls() {
        assert_eq!(
            keys_path("/a b", &[("prevValue", "x&y".into())]),
            "/v2/keys/a%20b?prevValue=x%26y"
        );
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
    }
}
