//! A fleet cluster of separate `fleetd` processes on loopback, for the whole-system tests
//! (`fleet_cluster.rs`) and the benchmark (`benches/fleet_cluster.rs` includes this file).
//!
//! Each machine is one fleetd with its own machine ID, metadata (`name=m<N>` and more),
//! data directory and API port: the first ones are members of the embedded store, the
//! others agent-only machines over the members' client URLs (or any URL, such as a
//! [`Proxy`] a test can cut). Machines are killed by PID on drop, with their unit
//! processes, as `fleetd dev` does for a machine that dies.
//!
//! Units run [`Cluster::probe_unit`]'s script, which appends `start <pid> <ppid> <ns>` to
//! `probe/<unit>.log` when it starts and `stop <pid> <ns>` when it is stopped: the parent
//! PID is the fleetd that runs it (the native supervisor spawns units itself), so a test
//! knows where a unit runs, whether it restarted, and when each run began and ended.
//!
//! A failing test keeps its cluster's directory (machine logs in `m<N>/fleetd.log`) and
//! says where; `FLEET_CLUSTER_KEEP=1` keeps it always.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fleet::api::types::{Unit, UnitState};
use fleet::client::{Client, StateFilter};
use fleet::registry::{Keys, Registry};
use fleet::store::etcd::EtcdStore;

/// The fleetd binary.
pub(crate) const FLEETD: &str = env!("CARGO_BIN_EXE_fleetd");
/// The fleetctl binary.
pub(crate) const FLEETCTL: &str = env!("CARGO_BIN_EXE_fleetctl");

/// One cluster at a time in this process: the machine has two cores, and a cluster's
/// timing (TTLs of a few seconds) must not depend on another cluster's load.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A free port on 127.0.0.1.
fn free_port() -> u16 {
    bins::bench::free_port().expect("bind 127.0.0.1:0")
}

/// Nanoseconds since the epoch (the probe's `date +%s%N` clock).
pub(crate) fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

/// How a cluster is made.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Store members (1 to 3).
    pub(crate) members: usize,
    /// Agent-only machines.
    pub(crate) agents: usize,
    /// `agent_ttl`.
    pub(crate) ttl: Duration,
    /// `engine_reconcile_interval` (whole seconds).
    pub(crate) reconcile: Duration,
    /// Metadata of machine `i` (1-based) besides `name=m<i>`, e.g. `role=db`.
    pub(crate) metadata: BTreeMap<usize, String>,
    /// The store members' raft election timeout (ms) and heartbeat (ms).
    pub(crate) election_ms: u64,
    /// See `election_ms`.
    pub(crate) heartbeat_ms: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            members: 3,
            agents: 0,
            ttl: Duration::from_secs(3),
            reconcile: Duration::from_secs(1),
            metadata: BTreeMap::new(),
            election_ms: 500,
            heartbeat_ms: 50,
        }
    }
}

/// The machine ID of machine `i`: `11111111aaaa...`, `22222222aaaa...`, ... (distinct short
/// IDs, in the order of `i`, which is fleet's tie-break between equally loaded machines).
pub(crate) fn machine_id(i: usize) -> String {
    let digit = char::from_digit(u32::try_from(i % 16).expect("small"), 16).expect("hex");
    format!("{}{}", digit.to_string().repeat(8), "a".repeat(24))
}

/// One fleetd.
#[derive(Debug)]
pub(crate) struct Machine {
    /// 1-based.
    pub(crate) index: usize,
    /// `m<index>`.
    pub(crate) name: String,
    /// The machine ID.
    pub(crate) id: String,
    /// Its data directory.
    pub(crate) dir: PathBuf,
    /// Its API, `http://127.0.0.1:<port>`.
    pub(crate) api: String,
    /// Its metadata flag.
    pub(crate) metadata: String,
    /// The arguments it was started with (for a restart).
    args: Vec<String>,
    child: Option<Child>,
    /// Every PID its fleetd had: a unit process started by an earlier one (killed, not yet
    /// gone) is still this machine's.
    pids: Vec<u32>,
}

impl Machine {
    /// The fleetd's PID, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process runs (it was neither killed nor stopped).
    pub(crate) fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Its API client.
    pub(crate) fn client(&self) -> Client {
        Client::new(&self.api).expect("an API client")
    }

    /// The tail of its log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("fleetd.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn spawn(&mut self) {
        let log_path = self.dir.join("fleetd.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("a log file");
        let child = Command::new(FLEETD)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .env_remove("FLEET_STORE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log file"))
            .stderr(log)
            .spawn()
            .expect("start fleetd");
        self.pids.push(child.id());
        self.child = Some(child);
    }

    /// SIGKILL, then its units' processes (they would die with a real machine).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = systemd_driver::kill_orphaned_units(&self.dir.join("units"));
    }

    /// SIGTERM and wait for the exit (fleetd stops its units and leaves the cluster);
    /// after `within`, SIGKILL. Returns whether it exited by itself, successfully.
    pub(crate) async fn stop(&mut self, within: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        signal(child.id(), rustix::process::Signal::TERM);
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let _ = systemd_driver::kill_orphaned_units(&self.dir.join("units"));
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(i32::try_from(pid).expect("a pid")) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// Where an agent-only machine finds the store.
#[derive(Debug, Clone)]
pub(crate) enum StoreAt {
    /// The members' client URLs.
    Members,
    /// This URL (a proxy).
    Url(String),
}

/// A cluster of fleetd processes; everything is killed on drop.
pub(crate) struct Cluster {
    /// The options it was made with.
    pub(crate) opts: Options,
    /// The machines, by index - 1.
    pub(crate) machines: Vec<Machine>,
    /// The store members' client URLs.
    pub(crate) store_urls: Vec<String>,
    /// The probe script's directory (`probe/<unit>.log`).
    pub(crate) probe_dir: PathBuf,
    dir: Option<tempfile::TempDir>,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.machines {
            m.kill();
        }
        let keep = std::thread::panicking() || std::env::var_os("FLEET_CLUSTER_KEEP").is_some();
        if keep && let Some(dir) = self.dir.take() {
            let kept = dir.keep();
            eprintln!("fleet cluster: kept {} for inspection", kept.display());
        }
    }
}

/// One start of a probed unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    /// The unit's main process.
    pub(crate) pid: u32,
    /// The fleetd that started it.
    pub(crate) ppid: u32,
    /// When it started (ns since the epoch).
    pub(crate) started: u128,
    /// When it was stopped by a signal it could handle (ns since the epoch).
    pub(crate) stopped: Option<u128>,
}

impl Run {
    /// Whether the process still exists.
    pub(crate) fn alive(&self) -> bool {
        self.stopped.is_none()
            && std::fs::read(format!("/proc/{}/cmdline", self.pid))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("probe.sh"))
    }
}

impl Cluster {
    /// Starts the machines and waits until every one is registered.
    pub(crate) async fn start(opts: Options) -> Cluster {
        let turn = ONE_AT_A_TIME.lock().await;
        assert!((1..=3).contains(&opts.members), "1 to 3 store members");
        let dir = tempfile::Builder::new()
            .prefix("fleet-cluster-")
            .tempdir()
            .expect("a temporary directory");
        let probe_dir = dir.path().join("probe");
        std::fs::create_dir_all(&probe_dir).expect("probe directory");
        std::fs::write(probe_dir.join("probe.sh"), PROBE).expect("probe script");
        let mut client_urls = Vec::new();
        let mut peer_urls = Vec::new();
        for _ in 0..opts.members {
            client_urls.push(format!("http://127.0.0.1:{}", free_port()));
            peer_urls.push(format!("http://127.0.0.1:{}", free_port()));
        }
        let initial = (0..opts.members)
            .map(|i| format!("m{}={}", i + 1, peer_urls[i]))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            opts: opts.clone(),
            machines: Vec::new(),
            store_urls: client_urls.clone(),
            probe_dir,
            dir: Some(dir),
            _turn: turn,
        };
        for i in 0..opts.members {
            let (c, p) = (&client_urls[i], &peer_urls[i]);
            let member = vec![
                "--name".to_owned(),
                format!("m{}", i + 1),
                "--listen-client-urls".into(),
                c.clone(),
                "--advertise-client-urls".into(),
                c.clone(),
                "--listen-peer-urls".into(),
                p.clone(),
                "--initial-advertise-peer-urls".into(),
                p.clone(),
                "--initial-cluster".into(),
                initial.clone(),
                "--heartbeat-interval".into(),
                opts.heartbeat_ms.to_string(),
                "--election-timeout".into(),
                opts.election_ms.to_string(),
            ];
            cluster.spawn_machine(member, None);
        }
        for _ in 0..opts.agents {
            cluster.spawn_machine(cluster.agent_args(&StoreAt::Members), None);
        }
        let n = cluster.machines.len();
        cluster.wait_registered(n).await;
        cluster
    }

    fn agent_args(&self, store: &StoreAt) -> Vec<String> {
        let url = match store {
            StoreAt::Members => self.store_urls.join(","),
            StoreAt::Url(u) => u.clone(),
        };
        vec![format!("--store={url}")]
    }

    /// Starts machine `machines.len() + 1` with `extra` arguments (store flags); `id`
    /// overrides its machine ID.
    fn spawn_machine(&mut self, extra: Vec<String>, id: Option<String>) -> usize {
        let index = self.machines.len() + 1;
        let dir = self
            .dir
            .as_ref()
            .expect("the cluster's directory")
            .path()
            .join(format!("m{index}"));
        std::fs::create_dir_all(&dir).expect("a machine directory");
        let id = id.unwrap_or_else(|| machine_id(index));
        let mut metadata = format!("name=m{index}");
        if let Some(more) = self.opts.metadata.get(&index) {
            metadata.push(',');
            metadata.push_str(more);
        }
        let api = format!("127.0.0.1:{}", free_port());
        let mut args = vec![
            format!("--machine_id={id}"),
            format!("--metadata={metadata}"),
            format!("--public_ip=127.0.0.{index}"),
            format!("--agent_ttl={}s", self.opts.ttl.as_secs().max(1)),
            format!(
                "--engine_reconcile_interval={}",
                self.opts.reconcile.as_secs().max(1)
            ),
            format!("--api_listen={api}"),
            "--api_socket=".into(),
            "--data-dir".into(),
            dir.display().to_string(),
        ];
        args.extend(extra);
        let mut m = Machine {
            index,
            name: format!("m{index}"),
            id,
            dir,
            api: format!("http://{api}"),
            metadata,
            args,
            child: None,
            pids: Vec::new(),
        };
        m.spawn();
        self.machines.push(m);
        index
    }

    /// Adds an agent-only machine (its metadata from [`Options::metadata`] at its index,
    /// its ID `id` or [`machine_id`]) and waits until it is registered. Returns its index.
    pub(crate) async fn add_agent(&mut self, store: StoreAt, id: Option<String>) -> usize {
        let args = self.agent_args(&store);
        let i = self.spawn_machine(args, id);
        let n = self.machines.iter().filter(|m| m.is_running()).count();
        self.wait_registered(n).await;
        i
    }

    /// Starts machine `i` again, with its data directory and arguments, and waits until
    /// `n` machines are registered.
    pub(crate) async fn restart(&mut self, i: usize) {
        let m = &mut self.machines[i - 1];
        assert!(!m.is_running(), "machine {i} still runs");
        m.spawn();
        let n = self.machines.iter().filter(|m| m.is_running()).count();
        self.wait_registered(n).await;
    }

    /// Machine `i` (1-based).
    pub(crate) fn machine(&self, i: usize) -> &Machine {
        &self.machines[i - 1]
    }

    /// Machine `i` (1-based), mutably.
    pub(crate) fn machine_mut(&mut self, i: usize) -> &mut Machine {
        &mut self.machines[i - 1]
    }

    /// The index of the machine with this ID.
    pub(crate) fn index_of(&self, id: &str) -> Option<usize> {
        self.machines.iter().find(|m| m.id == id).map(|m| m.index)
    }

    /// The index of the machine whose fleetd has or had this PID.
    pub(crate) fn index_of_pid(&self, pid: u32) -> Option<usize> {
        self.machines
            .iter()
            .find(|m| m.pids.contains(&pid))
            .map(|m| m.index)
    }

    /// The API of the first running machine.
    pub(crate) fn client(&self) -> Client {
        self.machines
            .iter()
            .find(|m| m.is_running())
            .expect("a running machine")
            .client()
    }

    /// The API endpoint of the first running machine.
    pub(crate) fn endpoint(&self) -> String {
        self.machines
            .iter()
            .find(|m| m.is_running())
            .expect("a running machine")
            .api
            .clone()
    }

    /// The registry, straight from the store.
    pub(crate) fn registry(&self) -> Registry<EtcdStore> {
        Registry::with_keys(
            EtcdStore::new(&self.store_urls).expect("a store client"),
            Keys::default(),
        )
    }

    /// The machine holding the engine lease, if any.
    pub(crate) async fn engine_leader(&self) -> Option<usize> {
        let lease = self.registry().lease().await.ok().flatten()?;
        self.index_of(&lease.record.machine_id)
    }

    /// Waits until `n` machines are present (through the API of the first running one).
    pub(crate) async fn wait_registered(&mut self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for m in &mut self.machines {
                if let Some(child) = &mut m.child
                    && let Ok(Some(status)) = child.try_wait()
                {
                    panic!(
                        "machine {} exited while starting ({status}); its log:\n{}",
                        m.name,
                        m.log_tail(40)
                    );
                }
            }
            if let Ok(present) = self.client().machines().await
                && present.len() == n
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{n} machines not registered within 60 s; first machine's log:\n{}",
                self.machines[0].log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text of a unit running the probe, with these `[X-Fleet]` lines.
    pub(crate) fn probe_unit(&self, xfleet: &[&str]) -> String {
        let mut s = format!(
            "[Unit]\nDescription=probe %n\n\n[Service]\nExecStart=/bin/sh {} %n\n",
            self.probe_dir.join("probe.sh").display()
        );
        if !xfleet.is_empty() {
            s.push_str("\n[X-Fleet]\n");
            for l in xfleet {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    /// Writes a unit file into the cluster's directory (for fleetctl); returns its path.
    pub(crate) fn unit_file(&self, name: &str, text: &str) -> String {
        let units = self
            .dir
            .as_ref()
            .expect("the cluster's directory")
            .path()
            .join("unit-files");
        std::fs::create_dir_all(&units).expect("a units directory");
        let path = units.join(name);
        std::fs::write(&path, text).expect("a unit file");
        path.display().to_string()
    }

    /// Every run of a probed unit so far, in start order.
    pub(crate) fn runs(&self, unit: &str) -> Vec<Run> {
        let log =
            std::fs::read_to_string(self.probe_dir.join(format!("{unit}.log"))).unwrap_or_default();
        let mut runs: Vec<Run> = Vec::new();
        for line in log.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                ["start", pid, ppid, at] => runs.push(Run {
                    pid: pid.parse().expect("a pid"),
                    ppid: ppid.parse().expect("a pid"),
                    started: at.parse().expect("a time"),
                    stopped: None,
                }),
                ["stop", pid, at] => {
                    let pid: u32 = pid.parse().expect("a pid");
                    if let Some(r) = runs.iter_mut().rev().find(|r| r.pid == pid) {
                        r.stopped = Some(at.parse().expect("a time"));
                    }
                }
                _ => {}
            }
        }
        runs
    }

    /// The machines a probed unit's live processes run on (by fleetd PID), with their PIDs.
    pub(crate) fn running(&self, unit: &str) -> Vec<(usize, u32)> {
        self.runs(unit)
            .into_iter()
            .filter(Run::alive)
            .map(|r| (self.index_of_pid(r.ppid).unwrap_or(0), r.pid))
            .collect()
    }

    /// Runs fleetctl in this process against the first running machine's API; returns
    /// the exit code, stdout and stderr.
    pub(crate) async fn fleetctl(&self, args: &[&str]) -> (i32, String, String) {
        fleetctl_at(&self.endpoint(), args).await
    }

    /// Units from the API.
    pub(crate) async fn units(&self) -> Vec<Unit> {
        self.client().units().await.expect("list units")
    }

    /// Unit states from the API.
    pub(crate) async fn states(&self) -> Vec<UnitState> {
        self.client()
            .states(&StateFilter::default())
            .await
            .expect("list unit states")
    }

    /// The machines a unit is reported `loaded/active/running` on.
    pub(crate) async fn active_on(&self, unit: &str) -> Vec<usize> {
        let states = self
            .client()
            .states(&StateFilter {
                unit_name: Some(unit.to_owned()),
                machine_id: None,
            })
            .await
            .unwrap_or_default();
        states
            .iter()
            .filter(|s| is_running(s))
            .filter_map(|s| self.index_of(&s.machine_id))
            .collect()
    }

    /// The logs of every machine, for a failure message.
    pub(crate) fn logs(&self, lines: usize) -> String {
        self.machines
            .iter()
            .map(|m| format!("--- {} ({}):\n{}", m.name, m.id, m.log_tail(lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Whether a state is systemd's `loaded/active/running`.
pub(crate) fn is_running(s: &UnitState) -> bool {
    s.systemd_load_state == "loaded"
        && s.systemd_active_state == "active"
        && s.systemd_sub_state == "running"
}

/// Runs fleetctl in this process against `endpoint`.
pub(crate) async fn fleetctl_at(endpoint: &str, args: &[&str]) -> (i32, String, String) {
    let mut argv = vec![
        "fleetctl".to_owned(),
        "--endpoint".to_owned(),
        endpoint.to_owned(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = fleet::ctl::run(
        argv,
        &mut fleet::ctl::Io {
            out: &mut out,
            err: &mut err,
        },
    )
    .await;
    (
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `within`; panics naming
/// `what` (and what `f` last saw, through `last`) when it does not.
pub(crate) async fn eventually<T, F, Fut>(what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) => {
                assert!(
                    Instant::now() < deadline,
                    "{what}: not within {within:?}; last seen: {last}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The probe: records its start and its stop, then sleeps until stopped.
const PROBE: &str = r#"#!/bin/sh
# A unit's process in the fleet cluster tests: appends its start (PID, parent PID = the
# fleetd running it, time in ns) and its stop to <this directory>/<unit>.log.
log="$(dirname "$0")/$1.log"
trap 'echo "stop $$ $(date +%s%N)" >> "$log"; exit 0' TERM INT
echo "start $$ $PPID $(date +%s%N)" >> "$log"
sleep 100000 &
wait
"#;

/// A TCP proxy to one upstream address that a test can cut (connections in flight are
/// dropped, new ones are accepted and never answered, as behind a partition) and heal.
pub(crate) struct Proxy {
    /// `http://127.0.0.1:<port>`.
    pub(crate) url: String,
    cut: Arc<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// A proxy to `upstream` (`http://host:port`).
    pub(crate) async fn start(upstream: &str) -> Proxy {
        let target = upstream
            .strip_prefix("http://")
            .expect("an http URL")
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a proxy");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let cut = Arc::new(tokio::sync::watch::Sender::new(false));
        let cut2 = cut.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    continue;
                };
                let mut rx = cut2.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    // Cut: hold the connection unanswered until healed, then drop it.
                    if *rx.borrow_and_update() {
                        let _ = rx.wait_for(|c| !*c).await;
                        return;
                    }
                    let Ok(mut up) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = rx.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Proxy { url, cut, task }
    }

    /// Cuts (`true`) or heals (`false`) the link.
    pub(crate) fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}
