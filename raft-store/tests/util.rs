//! Test harness: [`MapMachine`], a minimal key/value state machine, and [`Cluster`], members
//! on one [`MemNetwork`] with their data directories, restartable.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raft_store::{Config, MemNetwork, Member, Node, ReadConsistency, Role, StateMachine};
use serde::{Deserialize, Serialize};

/// A command of the test machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Cmd {
    /// Sets `key` to `value`.
    Set(String, String),
    /// Sets `key` to `value` if it currently holds `expect` (None: absent).
    Cas(String, Option<String>, String),
    /// Deletes `key`.
    Delete(String),
}

/// What a command did: the machine's event index, and the previous value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Out {
    pub(crate) index: u64,
    pub(crate) key: String,
    pub(crate) ok: bool,
    pub(crate) prev: Option<String>,
}

const HISTORY: usize = 1000;

/// A map with an event history, standing in for kv-core.
#[derive(Debug, Default)]
pub(crate) struct MapMachine {
    pub(crate) map: BTreeMap<String, String>,
    pub(crate) index: u64,
    pub(crate) history: VecDeque<Out>,
    /// How long [`StateMachine::snapshot`] takes, in milliseconds: a stand-in for the
    /// encoding of a large state machine (set through [`Node::read`]).
    pub(crate) snapshot_delay_ms: AtomicU64,
    /// Set while [`StateMachine::snapshot`] runs.
    pub(crate) in_snapshot: AtomicBool,
}

impl StateMachine for MapMachine {
    type Command = Cmd;
    type Output = Out;

    fn apply(&mut self, _raft_index: u64, cmd: Cmd) -> Out {
        let (key, ok, prev) = match cmd {
            Cmd::Set(k, v) => {
                let prev = self.map.insert(k.clone(), v);
                (k, true, prev)
            }
            Cmd::Cas(k, expect, v) => {
                let prev = self.map.get(&k).cloned();
                if prev == expect {
                    self.map.insert(k.clone(), v);
                    (k, true, prev)
                } else {
                    (k, false, prev)
                }
            }
            Cmd::Delete(k) => {
                let prev = self.map.remove(&k);
                (k, prev.is_some(), prev)
            }
        };
        if ok {
            self.index += 1;
        }
        let out = Out {
            index: self.index,
            key,
            ok,
            prev,
        };
        if ok {
            self.history.push_back(out.clone());
            if self.history.len() > HISTORY {
                self.history.pop_front();
            }
        }
        out
    }

    fn snapshot(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        let delay = self.snapshot_delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            self.in_snapshot.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(delay));
            self.in_snapshot.store(false, Ordering::SeqCst);
        }
        serde_json::to_writer(w, &(&self.map, self.index, &self.history))
            .map_err(std::io::Error::other)
    }

    fn restore(&mut self, r: &mut dyn std::io::Read) -> Result<(), String> {
        let (map, index, history) = serde_json::from_reader(r).map_err(|e| e.to_string())?;
        self.map = map;
        self.index = index;
        self.history = history;
        Ok(())
    }

    fn history(&self, from: u64) -> Option<Vec<Out>> {
        let oldest = self.history.front().map_or(self.index + 1, |o| o.index);
        if from < oldest && from <= self.index {
            return None;
        }
        Some(
            self.history
                .iter()
                .filter(|o| o.index >= from)
                .cloned()
                .collect(),
        )
    }
}

/// Polls `cond` until it holds or `within` passes; panics with `what` on timeout.
pub(crate) async fn eventually<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) type KvNode = Node<MapMachine>;

/// In-process members sharing one simulated network, each with its own data directory.
pub(crate) struct Cluster {
    pub(crate) net: MemNetwork,
    pub(crate) nodes: BTreeMap<u64, KvNode>,
    pub(crate) dirs: BTreeMap<u64, tempfile::TempDir>,
    pub(crate) initial: Vec<Member>,
    pub(crate) snapshot_entries: u64,
}

/// Generous for a loaded 2-core CI machine running a debug build.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

impl Cluster {
    pub(crate) async fn new(n: u64) -> Cluster {
        Self::with_snapshots(n, 10_000).await
    }

    pub(crate) async fn with_snapshots(n: u64, snapshot_entries: u64) -> Cluster {
        Self::with_ids(&(1..=n).collect::<Vec<_>>(), snapshot_entries).await
    }

    /// Members with the given ids (failpoint tests pick ids no other test uses, as
    /// failpoints are global to the process).
    pub(crate) async fn with_ids(ids: &[u64], snapshot_entries: u64) -> Cluster {
        let initial: Vec<Member> = ids
            .iter()
            .map(|&i| Member::new(i, format!("m{i}")))
            .collect();
        let mut c = Cluster {
            net: MemNetwork::new(),
            nodes: BTreeMap::new(),
            dirs: BTreeMap::new(),
            initial,
            snapshot_entries,
        };
        for &id in ids {
            c.dirs.insert(id, tempfile::tempdir().unwrap());
            c.start(id, true).await;
        }
        c
    }

    pub(crate) fn config(&self, id: u64, bootstrap: bool) -> Config {
        let mut cfg = Config::new(id, self.dirs[&id].path());
        if bootstrap {
            cfg.initial_members = self.initial.clone();
        }
        cfg.tick_interval = Duration::from_millis(30);
        cfg.election_ticks = 10;
        cfg.snapshot_entries = self.snapshot_entries;
        cfg.catchup_entries = self.snapshot_entries / 4;
        cfg.request_timeout = Duration::from_secs(3);
        cfg
    }

    /// Starts (or restarts) member `id` from its data directory.
    pub(crate) async fn start(&mut self, id: u64, bootstrap: bool) {
        self.dirs
            .entry(id)
            .or_insert_with(|| tempfile::tempdir().unwrap());
        let node = Node::open(
            self.config(id, bootstrap),
            MapMachine::default(),
            self.net.transport(),
        )
        .await
        .unwrap_or_else(|e| panic!("open member {id}: {e}"));
        self.nodes.insert(id, node);
    }

    pub(crate) async fn crash(&mut self, id: u64) {
        let n = self.nodes.remove(&id).expect("running member");
        n.crash().await;
    }

    pub(crate) async fn restart(&mut self, id: u64) {
        self.crash(id).await;
        self.start(id, true).await;
    }

    pub(crate) fn node(&self, id: u64) -> &KvNode {
        &self.nodes[&id]
    }

    /// Waits until some running member in `among` leads and all of `among` agree on it.
    pub(crate) async fn leader_among(&self, among: &[u64]) -> u64 {
        let mut found = 0;
        eventually(WAIT, "a leader everyone agrees on", || {
            let mut ok = false;
            let leaders: Vec<Option<u64>> = among
                .iter()
                .map(|i| self.nodes[i].status().leader)
                .collect();
            if let Some(Some(l)) = leaders.first()
                && leaders.iter().all(|x| *x == Some(*l))
                && among.contains(l)
                && self.nodes[l].status().role == Role::Leader
            {
                found = *l;
                ok = true;
            }
            async move { ok }
        })
        .await;
        found
    }

    pub(crate) async fn leader(&self) -> u64 {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        self.leader_among(&ids).await
    }

    /// Writes through member `via`, retrying while there is no leader yet.
    pub(crate) async fn write(&self, via: u64, cmd: Cmd) -> Out {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.nodes[&via].write(&cmd).await {
                Ok((_, out)) => return (*out).clone(),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("write {cmd:?} via {via}: {e}"),
            }
        }
    }

    pub(crate) async fn set(&self, via: u64, k: &str, v: &str) -> Out {
        self.write(via, Cmd::Set(k.into(), v.into())).await
    }

    /// A linearizable read of `key` through `via`.
    pub(crate) async fn get(&self, via: u64, key: &str) -> Option<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let k = key.to_string();
            match self.nodes[&via]
                .read(ReadConsistency::Linearizable, move |m| {
                    m.map.get(&k).cloned()
                })
                .await
            {
                Ok(v) => return v,
                Err(e) => {
                    assert!(Instant::now() < deadline, "read {key} via {via}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// The map of member `id` (serializable).
    pub(crate) async fn map(&self, id: u64) -> BTreeMap<String, String> {
        self.nodes[&id]
            .read(ReadConsistency::Serializable, |m| m.map.clone())
            .await
            .unwrap()
    }

    /// Waits until every running member has applied the same state as `reference`.
    pub(crate) async fn converged(&self) {
        eventually(WAIT, "all members apply the same state", || async {
            let mut maps = Vec::new();
            let mut applied = Vec::new();
            for (id, n) in &self.nodes {
                maps.push(self.map(*id).await);
                applied.push(n.status().applied);
            }
            maps.windows(2).all(|w| w[0] == w[1]) && applied.windows(2).all(|w| w[0] == w[1])
        })
        .await;
    }

    pub(crate) async fn shutdown(self) {
        for n in self.nodes.values() {
            n.shutdown().await;
        }
    }
}

/// Members on loopback gRPC, each serving its transport on a port of its own until the
/// returned sender is sent `true`. `scheme` is the peer URLs' (`http` or `https`);
/// `transport` builds each member's transport, `config` its configuration from its id, data
/// directory and the initial members.
pub(crate) async fn grpc_members(
    ids: std::ops::RangeInclusive<u64>,
    scheme: &str,
    dirs: &std::path::Path,
    transport: impl Fn() -> raft_store::GrpcTransport,
    config: impl Fn(u64, &std::path::Path, &[Member]) -> Config,
) -> (Vec<KvNode>, Vec<Member>, tokio::sync::watch::Sender<bool>) {
    let mut members = Vec::new();
    let mut listeners = Vec::new();
    for id in ids.clone() {
        let (l, url) = raft_store::grpc::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut m = Member::new(id, format!("m{id}"));
        m.peer_urls
            .push(url.replace("http://", &format!("{scheme}://")));
        members.push(m);
        listeners.push(l);
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut nodes = Vec::new();
    for (id, listener) in ids.zip(listeners) {
        let transport = transport();
        let dir = dirs.join(format!("m{id}"));
        let node = Node::open(
            config(id, &dir, &members),
            MapMachine::default(),
            transport.clone(),
        )
        .await
        .unwrap();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            transport
                .serve(listener, async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
        });
        nodes.push(node);
    }
    (nodes, members, stop)
}
