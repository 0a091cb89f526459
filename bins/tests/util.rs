//! Shared helpers: servers as child processes (killed by PID on drop), free ports, polling.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1, never one handed out before in this process
/// ([`bins::bench::free_port`]); the servers bind it right after.
pub(crate) fn free_port() -> u16 {
    bins::bench::free_port().expect("bind 127.0.0.1:0")
}

fn try_wait_healthy(url: &str, child: &mut Child, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .expect("http client");
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited during start-up with {status}"));
        }
        let ok = http
            .get(format!("{url}/health"))
            .send()
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{what} at {url} not healthy within 20 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server process with its data directory; killed (by PID) and reaped on drop.
pub(crate) struct Server {
    child: Child,
    /// Client URL, `http://127.0.0.1:<port>`.
    pub(crate) url: String,
    /// Peer URL.
    pub(crate) peer_url: String,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The process id.
    #[allow(dead_code)]
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (with a deadline) for a clean exit; returns the exit status.
    #[allow(dead_code)]
    pub(crate) fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -TERM {pid}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit within 10 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn start(
    program: &str,
    args: Vec<String>,
    url: String,
    peer_url: String,
    dir: tempfile::TempDir,
    what: &str,
) -> Server {
    let mut server = spawn(program, args, url, peer_url, dir);
    server.wait_healthy(what);
    server
}

/// Starts a server process without waiting for it to become healthy (members of a cluster
/// are healthy only once a quorum runs).
fn spawn(
    program: &str,
    args: Vec<String>,
    url: String,
    peer_url: String,
    dir: tempfile::TempDir,
) -> Server {
    let child = Command::new(program)
        .args(&args)
        .env_remove("ETCD_NAME")
        .env_remove("ETCD_DATA_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("server.log")).expect("log file"),
        ))
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{program} is not installed: the compatibility tests need it (Debian package etcd-server for etcd, etcd-client for etcdctl; see scripts/install-deps)"
        ),
        Err(e) => panic!("cannot start {program}: {e}"),
    };
    Server {
        child,
        url,
        peer_url,
        dir,
    }
}

impl Server {
    /// Polls `/health` until it answers 200 (see [`wait_healthy`]); panics with the server's
    /// log when it does not.
    pub(crate) fn wait_healthy(&mut self, what: &str) {
        let url = self.url.clone();
        if let Err(e) = try_wait_healthy(&url, &mut self.child, what) {
            panic!("{e}; its log:\n{}", self.log());
        }
    }

    /// The server's log so far (its stderr).
    #[allow(dead_code)]
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

/// Starts a real `etcd --enable-v2` on free loopback ports.
pub(crate) fn etcd() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cp, pp) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{cp}");
    let peer = format!("http://127.0.0.1:{pp}");
    let args = vec![
        "--enable-v2".into(),
        "--name".into(),
        "node1".into(),
        "--data-dir".into(),
        dir.path().join("data").display().to_string(),
        "--listen-client-urls".into(),
        url.clone(),
        "--advertise-client-urls".into(),
        url.clone(),
        "--listen-peer-urls".into(),
        peer.clone(),
        "--initial-advertise-peer-urls".into(),
        peer.clone(),
        "--initial-cluster".into(),
        format!("node1={peer}"),
    ];
    start("etcd", args, url, peer, dir, "etcd")
}

/// Starts the kvd binary on free loopback ports.
pub(crate) fn kvd() -> Server {
    kvd_with_flags(&[])
}

/// Starts the kvd binary on free loopback ports with `extra` flags after the usual ones.
#[allow(dead_code)]
pub(crate) fn kvd_with_flags(extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    kvd_with(dir, data, extra)
}

/// Starts the kvd binary with its data in `data` (which outlives the server).
#[allow(dead_code)]
pub(crate) fn kvd_at(data: &std::path::Path) -> Server {
    kvd_with(
        tempfile::tempdir().expect("tempdir"),
        data.to_path_buf(),
        &[],
    )
}

fn kvd_with(dir: tempfile::TempDir, data: PathBuf, extra: &[&str]) -> Server {
    let (cp, pp) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{cp}");
    let peer = format!("http://127.0.0.1:{pp}");
    let mut args: Vec<String> = vec![
        "--name".into(),
        "node1".into(),
        "--data-dir".into(),
        data.display().to_string(),
        "--listen-client-urls".into(),
        url.clone(),
        "--advertise-client-urls".into(),
        url.clone(),
        "--listen-peer-urls".into(),
        peer.clone(),
        "--initial-advertise-peer-urls".into(),
        peer.clone(),
        "--initial-cluster".into(),
        format!("node1={peer}"),
        "--enable-v2".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    start(env!("CARGO_BIN_EXE_kvd"), args, url, peer, dir, "kvd")
}

/// kvd arguments for cluster member `name` on `client`/`peer` URLs, its data in
/// `data/<name>`, in the cluster `initial_cluster` (`name=peer,...`), with the short
/// heartbeat (50 ms) and election timeout (500 ms) the cluster tests use.
#[allow(dead_code)]
pub(crate) fn member_args(
    name: &str,
    data: &std::path::Path,
    client: &str,
    peer: &str,
    initial_cluster: &str,
) -> Vec<String> {
    [
        "--name",
        name,
        "--data-dir",
        &data.join(name).display().to_string(),
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster",
        initial_cluster,
        "--heartbeat-interval",
        "50",
        "--election-timeout",
        "500",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

/// Starts the kvd binary with these arguments (the caller picks the ports) and waits until
/// it is healthy.
#[allow(dead_code)]
pub(crate) fn kvd_process(args: Vec<String>, url: String, peer_url: String) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    start(env!("CARGO_BIN_EXE_kvd"), args, url, peer_url, dir, "kvd")
}

/// Starts the kvd binary with these arguments without waiting for it to become healthy.
#[allow(dead_code)]
pub(crate) fn kvd_spawn(args: Vec<String>, url: String, peer_url: String) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    spawn(env!("CARGO_BIN_EXE_kvd"), args, url, peer_url, dir)
}

/// The kvd binary.
#[allow(dead_code)]
pub(crate) fn kvd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kvd"))
}

/// The kvctl binary.
#[allow(dead_code)]
pub(crate) fn kvctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kvctl"))
}

/// The store index (`X-Etcd-Index` of a root GET).
pub(crate) fn etcd_index(url: &str) -> u64 {
    let r = reqwest::blocking::get(format!("{url}/v2/keys/")).expect("GET root");
    r.headers()["X-Etcd-Index"]
        .to_str()
        .expect("header")
        .parse()
        .expect("index")
}
