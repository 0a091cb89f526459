//! kvctl: etcdctl v2's commands, output formats, messages and exit codes, over the v2 HTTP
//! API (so it works against kvd and against a real etcd alike).
//!
//! [`Cli`] is the command line; [`run`] executes it and returns the process exit code
//! (etcdctl's: 0 success, 1 bad arguments, 2 no connection, 4 server error, 5 cluster not
//! healthy).

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::http::json::push_str;

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

/// The v2 HTTP client: tries the endpoints in order until one answers.
struct Client {
    endpoints: Vec<String>,
    http: reqwest::blocking::Client,
    watch_http: reqwest::blocking::Client,
    /// The TLS of `--ca-file`/`--cert-file`/`--key-file`/`--insecure-skip-tls-verify`.
    tls: Option<rustls::ClientConfig>,
    debug: bool,
}

/// The TLS client configuration the flags ask for; `None` when no TLS flag is given and no
/// endpoint is `https://`. Without `--ca-file`, servers are verified against the system's
/// CA bundle, as etcdctl does.
fn tls_config(cli: &Cli, endpoints: &[String]) -> Result<Option<rustls::ClientConfig>, Fail> {
    use crate::tls::{CertKey, ServerVerification};
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
    crate::tls::client_config(&verify, identity.as_ref(), &[b"http/1.1"])
        .map(Some)
        .map_err(|e| error(exit::BAD_ARGS, e))
}

/// An HTTP client builder with the TLS of the flags, if any.
fn http_builder(tls: Option<&rustls::ClientConfig>) -> reqwest::blocking::ClientBuilder {
    let b = reqwest::blocking::Client::builder();
    match tls {
        Some(t) => b.use_preconfigured_tls(t.clone()),
        None => b,
    }
}

impl Client {
    /// An HTTP client builder with the TLS of the flags.
    fn builder(&self) -> reqwest::blocking::ClientBuilder {
        http_builder(self.tls.as_ref())
    }
}

enum Body<'a> {
    None,
    Form(Vec<(&'a str, String)>),
    Json(String),
}

impl Client {
    fn new(cli: &Cli) -> Result<Client, Fail> {
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
        let total = parse_duration(&cli.total_timeout).ok_or_else(|| {
            error(
                exit::BAD_ARGS,
                format!("invalid --total-timeout {:?}", cli.total_timeout),
            )
        })?;
        let tls = tls_config(cli, &endpoints)?;
        let build = |t: Option<Duration>| {
            http_builder(tls.as_ref())
                .connect_timeout(timeout)
                .timeout(t)
                .build()
                .map_err(|e| error(exit::BAD_CONNECTION, e))
        };
        Ok(Client {
            endpoints,
            http: build(Some(total))?,
            watch_http: build(None)?,
            tls,
            debug: cli.debug,
        })
    }

    /// Sends a request to the first endpoint that accepts the connection.
    fn send(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Body<'_>,
        watch: bool,
    ) -> Result<reqwest::blocking::Response, Fail> {
        let mut errors = Vec::new();
        for ep in &self.endpoints {
            let url = format!("{ep}{path_and_query}");
            if self.debug {
                eprintln!("cURL Command: curl -X {method} {url}");
            }
            let http = if watch { &self.watch_http } else { &self.http };
            let mut req = http.request(method.clone(), &url);
            match &body {
                Body::None => {}
                Body::Form(f) => req = req.form(f),
                Body::Json(j) => {
                    req = req
                        .header("Content-Type", "application/json")
                        .body(j.clone());
                }
            }
            match req.send() {
                Ok(r) => return Ok(r),
                Err(e) if e.is_connect() => errors.push(format!("{url}: {}", root_cause(&e))),
                Err(e) => {
                    return Err(error(
                        exit::SERVER_ERROR,
                        format!("client: endpoint {ep}: {}", root_cause(&e)),
                    ));
                }
            }
        }
        let mut msg = String::from("client: etcd cluster is unavailable or misconfigured");
        for (i, e) in errors.iter().enumerate() {
            msg.push_str(&format!("; error #{i}: {e}"));
        }
        Err(error(exit::BAD_CONNECTION, msg))
    }

    /// A keys request; decodes the event or the etcd error.
    fn keys(
        &self,
        method: reqwest::Method,
        key: &str,
        query: &[(&str, String)],
        form: Vec<(&str, String)>,
        watch: bool,
    ) -> Result<CResponse, Fail> {
        let path = keys_path(key, query);
        let body = if form.is_empty() {
            Body::None
        } else {
            Body::Form(form)
        };
        let resp = self.send(method, &path, body, watch)?;
        decode_keys(resp)
    }

    fn members(&self) -> Result<Vec<CMember>, Fail> {
        #[derive(Deserialize)]
        struct List {
            members: Vec<CMember>,
        }
        let r = self.send(reqwest::Method::GET, "/v2/members", Body::None, false)?;
        let text = r.text().map_err(|e| fail(exit::BAD_ARGS, e.to_string()))?;
        let l: List =
            serde_json::from_str(&text).map_err(|e| fail(exit::BAD_ARGS, e.to_string()))?;
        Ok(l.members)
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Percent-encodes a key path for the URL (keeping `/`).
fn keys_path(key: &str, query: &[(&str, String)]) -> String {
    let mut p = String::from("/v2/keys");
    if !key.starts_with('/') {
        p.push('/');
    }
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            p.push(b as char);
        } else {
            p.push_str(&format!("%{b:02X}"));
        }
    }
    let mut first = true;
    for (k, v) in query {
        p.push(if first { '?' } else { '&' });
        first = false;
        p.push_str(k);
        p.push('=');
        for b in v.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                p.push(b as char);
            } else {
                p.push_str(&format!("%{b:02X}"));
            }
        }
    }
    p
}

fn decode_keys(resp: reqwest::blocking::Response) -> Result<CResponse, Fail> {
    let index = resp
        .headers()
        .get("X-Etcd-Index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let text = resp.text().map_err(|e| error(exit::SERVER_ERROR, e))?;
    decode_keys_body(&text, index)
}

fn decode_keys_body(text: &str, index: u64) -> Result<CResponse, Fail> {
    if let Ok(e) = serde_json::from_str::<CError>(text) {
        return Err(error(exit::SERVER_ERROR, e));
    }
    let mut r: CResponse = serde_json::from_str(text).map_err(|e| {
        error(
            exit::SERVER_ERROR,
            format!("unexpected response {text:?}: {e}"),
        )
    })?;
    r.index = index;
    Ok(r)
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

fn ttl_form(form: &mut Vec<(&str, String)>, ttl: u64) {
    if ttl > 0 {
        form.push(("ttl", ttl.to_string()));
    }
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

/// Runs everything but the long-running commands' streaming output; returns what to print.
fn execute(cli: &Cli) -> Result<String, Fail> {
    use reqwest::Method;
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
    let c = Client::new(cli)?;
    match &cli.command {
        Command::Get { sort, quorum, key } => {
            let key = need_key(key.clone())?;
            let mut q = Vec::new();
            if *sort {
                q.push(("sorted", "true".to_string()));
            }
            if *quorum {
                q.push(("quorum", "true".to_string()));
            }
            let r = c.keys(Method::GET, &key, &q, vec![], false)?;
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
            let value = arg_or_stdin(value.clone())
                .ok_or_else(|| error(exit::BAD_ARGS, "value required"))?;
            let mut f = vec![("value", value)];
            ttl_form(&mut f, ttl.ttl);
            if let Some(pv) = swap_with_value.as_ref().filter(|v| !v.is_empty()) {
                f.push(("prevValue", pv.clone()));
            }
            if *swap_with_index > 0 {
                f.push(("prevIndex", swap_with_index.to_string()));
            }
            let r = c.keys(Method::PUT, &key, &[], f, false)?;
            Ok(print_response(&r, out))
        }
        Command::Mk {
            ttl,
            in_order,
            key,
            value,
        } => {
            let key = need_key(key.clone())?;
            let value = arg_or_stdin(value.clone())
                .ok_or_else(|| error(exit::BAD_ARGS, "value required"))?;
            let mut f = vec![("value", value)];
            ttl_form(&mut f, ttl.ttl);
            let r = if *in_order {
                c.keys(Method::POST, &key, &[], f, false)?
            } else {
                c.keys(
                    Method::PUT,
                    &key,
                    &[("prevExist", "false".into())],
                    f,
                    false,
                )?
            };
            Ok(print_response(&r, out))
        }
        Command::Mkdir { ttl, key }
        | Command::Setdir { ttl, key }
        | Command::Updatedir { ttl, key } => {
            let key = need_key(key.clone())?;
            let mut q = vec![("dir", "true".to_string())];
            match &cli.command {
                Command::Mkdir { .. } => q.push(("prevExist", "false".into())),
                Command::Updatedir { .. } => q.push(("prevExist", "true".into())),
                _ => {}
            }
            let mut f = Vec::new();
            ttl_form(&mut f, ttl.ttl);
            let r = c.keys(Method::PUT, &key, &q, f, false)?;
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
            let key = need_key(key.clone())?;
            let mut q = Vec::new();
            if let Some(v) = with_value.as_ref().filter(|v| !v.is_empty()) {
                q.push(("prevValue", v.clone()));
            }
            if *with_index > 0 {
                q.push(("prevIndex", with_index.to_string()));
            }
            if *dir {
                q.push(("dir", "true".into()));
            }
            if *recursive {
                q.push(("recursive", "true".into()));
            }
            let r = c.keys(Method::DELETE, &key, &q, vec![], false)?;
            let is_dir = r.node.as_ref().is_some_and(|n| n.dir);
            Ok(if !is_dir || out != "simple" {
                print_response(&r, out)
            } else {
                String::new()
            })
        }
        Command::Rmdir { key } => {
            let key = need_key(key.clone())?;
            let r = c.keys(
                Method::DELETE,
                &key,
                &[("dir", "true".into())],
                vec![],
                false,
            )?;
            let is_dir = r.node.as_ref().is_some_and(|n| n.dir);
            Ok(if !is_dir || out != "simple" {
                print_response(&r, out)
            } else {
                String::new()
            })
        }
        Command::Ls {
            sort,
            recursive,
            p,
            quorum,
            key,
        } => {
            let key = key.clone().unwrap_or_else(|| "/".into());
            let mut q = Vec::new();
            if *recursive {
                q.push(("recursive", "true".to_string()));
            }
            if *sort {
                q.push(("sorted", "true".to_string()));
            }
            if *quorum {
                q.push(("quorum", "true".to_string()));
            }
            let r = c.keys(Method::GET, &key, &q, vec![], false)?;
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
            let value = arg_or_stdin(value.clone())
                .ok_or_else(|| error(exit::BAD_ARGS, "value required"))?;
            let mut f = vec![("value", value)];
            ttl_form(&mut f, ttl.ttl);
            let r = c.keys(Method::PUT, &key, &[("prevExist", "true".into())], f, false)?;
            Ok(print_response(&r, out))
        }
        Command::Watch {
            forever,
            after_index,
            recursive,
            key,
        } => {
            let key = need_key(key.clone())?;
            watch(&c, &key, *after_index, *recursive, true, |r| {
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
            watch(&c, &key, after, *recursive, false, |r| {
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
        Command::Member { command } => member(&c, command),
        Command::ClusterHealth { forever } => cluster_health(&c, *forever),
        Command::Snapshot {
            command: SnapshotCommand::Save { file },
        } => {
            let r = c.send(Method::GET, "/kvd/v1/snapshot", Body::None, true)?;
            if !r.status().is_success() {
                let status = r.status();
                let text = r.text().unwrap_or_default();
                return Err(error(
                    exit::SERVER_ERROR,
                    format!("snapshot failed ({status}): {}", text.trim()),
                ));
            }
            let bytes = r.bytes().map_err(|e| error(exit::SERVER_ERROR, e))?;
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

/// etcd's client `Watcher.Next` loop: long polls from `after_index + 1`, then from each
/// event's `modifiedIndex + 1`. `on_event` returns whether to keep watching; directory
/// events are skipped by `watch` and passed to `exec-watch`.
fn watch(
    c: &Client,
    key: &str,
    after_index: u64,
    recursive: bool,
    skip_dirs: bool,
    mut on_event: impl FnMut(&CResponse) -> bool,
) -> Result<(), Fail> {
    let mut wait_index = (after_index > 0).then_some(after_index + 1);
    loop {
        let mut q = vec![("wait", "true".to_string())];
        if let Some(i) = wait_index {
            q.push(("waitIndex", i.to_string()));
        }
        if recursive {
            q.push(("recursive", "true".into()));
        }
        let resp = c.send(reqwest::Method::GET, &keys_path(key, &q), Body::None, true)?;
        let index = resp
            .headers()
            .get("X-Etcd-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut reader = BufReader::new(resp);
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| error(exit::SERVER_ERROR, e))?;
        if line.trim().is_empty() {
            // An empty body ends a long poll without an event (server shutdown): retry.
            continue;
        }
        let r = decode_keys_body(&line, index)?;
        wait_index = Some(r.node.as_ref().map_or(0, |n| n.modified_index) + 1);
        if skip_dirs && r.node.as_ref().is_some_and(|n| n.dir) {
            continue;
        }
        if !on_event(&r) {
            return Ok(());
        }
    }
}

fn member(c: &Client, cmd: &MemberCommand) -> Result<String, Fail> {
    use reqwest::Method;
    match cmd {
        MemberCommand::List { args } => {
            if !args.is_empty() {
                return Err(fail(exit::BAD_ARGS, "No arguments accepted"));
            }
            let members = c.members()?;
            let r = c.send(Method::GET, "/v2/members/leader", Body::None, false)?;
            let leader: Option<CMember> = r.json().ok();
            let leader_id = leader.map(|l| l.id).unwrap_or_default();
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
            let body = serde_json::json!({ "peerURLs": [args[1]] }).to_string();
            let r = c.send(Method::POST, "/v2/members", Body::Json(body), false)?;
            let status = r.status();
            let text = r.text().unwrap_or_default();
            if status.as_u16() != 201 {
                return Err(fail(exit::BAD_ARGS, members_error(status.as_u16(), &text)));
            }
            let m: CMember =
                serde_json::from_str(&text).map_err(|e| fail(exit::BAD_ARGS, e.to_string()))?;
            let mut s = format!(
                "Added member named {} with ID {} to cluster\n",
                args[0], m.id
            );
            let members = c.members()?;
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
            let members = c.members().map_err(|f| {
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
            let r = c.send(
                Method::DELETE,
                &format!("/v2/members/{id}"),
                Body::None,
                false,
            )?;
            let status = r.status().as_u16();
            if status != 204 {
                let text = r.text().unwrap_or_default();
                let msg = members_error(status, &text);
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
            let body = serde_json::json!({ "peerURLs": urls }).to_string();
            let r = c.send(
                Method::PUT,
                &format!("/v2/members/{}", args[0]),
                Body::Json(body),
                false,
            )?;
            let status = r.status().as_u16();
            if status != 204 {
                let text = r.text().unwrap_or_default();
                return Err(fail(exit::BAD_ARGS, members_error(status, &text)));
            }
            Ok(format!("Updated member with ID {} in cluster\n", args[0]))
        }
    }
}

/// The message of a members API error body (`{"message": ...}`).
fn members_error(status: u16, body: &str) -> String {
    #[derive(Deserialize)]
    struct M {
        message: String,
    }
    match serde_json::from_str::<M>(body) {
        Ok(m) => m.message,
        Err(_) => format!("unexpected status {status}: {}", body.trim()),
    }
}

fn cluster_health(c: &Client, forever: bool) -> Result<String, Fail> {
    let members = c
        .members()
        .inspect_err(|_| println!("cluster may be unhealthy: failed to list members"))?;
    let http = c
        .builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| error(exit::SERVER_ERROR, e))?;
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
                let body = http
                    .get(format!("{url}/health"))
                    .send()
                    .and_then(|r| r.text());
                let body = match body {
                    Ok(b) => b,
                    Err(e) => {
                        s.push_str(&format!(
                            "failed to check the health of member {} on {url}: {}\n",
                            m.id,
                            root_cause(&e)
                        ));
                        continue;
                    }
                };
                let v: Result<serde_json::Value, _> = serde_json::from_str(&body);
                let Ok(v) = v else {
                    s.push_str(&format!(
                        "failed to check the health of member {} on {url}: invalid JSON\n",
                        m.id
                    ));
                    continue;
                };
                checked = true;
                let h = v.get("health");
                if h == Some(&serde_json::Value::from("true"))
                    || h == Some(&serde_json::Value::Bool(true))
                {
                    healthy = true;
                    s.push_str(&format!(
                        "member {} is healthy: got healthy result from {url}\n",
                        m.id
                    ));
                } else {
                    s.push_str(&format!(
                        "member {} is unhealthy: got unhealthy result from {url}\n",
                        m.id
                    ));
                }
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
