//! [`MemoryBackend`]: a single-member kv-core store owned by one task.
//!
//! This is the stand-in backend until raft-store (replicated, durable) is wired in:
//! * one `kv_core::Store`, owned by one tokio task; every request reaches it through a
//!   bounded channel, so the store needs no lock and commands apply in arrival order;
//! * expiry is driven by a 500 ms timer that issues `Expire` commands stamped with this
//!   member's clock, as etcd's leader does with its `SYNC` proposals;
//! * the store is **in memory**: it is saved to `<data-dir>/member/snap/db` on graceful
//!   shutdown and loaded on start, but a crash loses what was written since the last start;
//! * there is one member, always the leader, with term 1; the "raft index" counts the
//!   commands applied (writes, quorum reads, expiry sweeps), as etcd's does.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kv_core::{Command, Op, Store};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::watchers::Watchers;
use super::{
    Applied, KvBackend, Member, MemberError, RaftPosition, ReadRequest, Status, Watch,
    WatchRequest, internal, now_ms,
};

/// How often expired keys are swept (etcd's leader SYNC interval).
const EXPIRY_TICK: Duration = Duration::from_millis(500);

/// Identity and storage location of the single member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Member id.
    pub id: u64,
    /// Cluster id.
    pub cluster_id: u64,
    /// Member name.
    pub name: String,
    /// Advertised peer URLs.
    pub peer_urls: Vec<String>,
    /// Advertised client URLs.
    pub client_urls: Vec<String>,
    /// Where the store is saved on shutdown and loaded from on start.
    pub data_dir: PathBuf,
}

/// Errors opening or saving the in-memory store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryError {
    /// The data directory or snapshot file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The saved snapshot is not a valid kv-core snapshot.
    #[error("{path}: {detail}")]
    Snapshot {
        /// The snapshot file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The store task is gone.
    #[error("the store task stopped")]
    Stopped,
}

enum Cmd {
    Write(Op, oneshot::Sender<Result<Applied, kv_core::Error>>),
    Read(
        ReadRequest,
        oneshot::Sender<Result<Applied, kv_core::Error>>,
    ),
    Watch(WatchRequest, oneshot::Sender<Result<Watch, kv_core::Error>>),
    Snapshot(oneshot::Sender<Result<Vec<u8>, String>>),
    Shutdown(oneshot::Sender<Result<(), MemoryError>>),
}

/// Counters the task publishes for [`KvBackend::status`] without a round trip.
#[derive(Debug, Default)]
struct Shared {
    etcd_index: AtomicU64,
    raft_index: AtomicU64,
    watchers: AtomicU64,
    expire_count: AtomicU64,
}

/// The single-member in-memory backend (see the module docs).
#[derive(Debug)]
pub struct MemoryBackend {
    tx: mpsc::Sender<Cmd>,
    shared: Arc<Shared>,
    config: MemoryConfig,
    start_ms: u64,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn snap_path(dir: &std::path::Path) -> PathBuf {
    dir.join("member").join("snap").join("db")
}

impl MemoryBackend {
    /// Creates the data directory if needed, loads a saved store from it if there is one,
    /// and starts the store task.
    ///
    /// # Errors
    /// The directory cannot be created, or the saved store cannot be read.
    pub async fn open(config: MemoryConfig) -> Result<Self, MemoryError> {
        let path = snap_path(&config.data_dir);
        let dir = path.parent().map(PathBuf::from).unwrap_or_default();
        std::fs::create_dir_all(&dir).map_err(|source| MemoryError::Io { path: dir, source })?;
        let store = match std::fs::File::open(&path) {
            Ok(f) => {
                let mut r = std::io::BufReader::new(f);
                Store::restore(&mut r).map_err(|e| MemoryError::Snapshot {
                    path: path.clone(),
                    detail: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Store::new(),
            Err(source) => return Err(MemoryError::Io { path, source }),
        };
        Ok(Self::with_store(config, store))
    }

    /// Starts a backend on an empty store that is never saved (tests, benchmarks).
    pub fn ephemeral(config: MemoryConfig) -> Self {
        let mut config = config;
        config.data_dir = PathBuf::new();
        Self::with_store(config, Store::new())
    }

    fn with_store(config: MemoryConfig, store: Store) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        let shared = Arc::new(Shared::default());
        shared.etcd_index.store(store.index(), Ordering::Relaxed);
        let task = StoreTask {
            store,
            shared: Arc::clone(&shared),
            watchers: Watchers::default(),
            raft_index: 0,
            data_dir: config.data_dir.clone(),
        };
        let handle = tokio::spawn(task.run(rx));
        MemoryBackend {
            tx,
            shared,
            config,
            start_ms: now_ms(),
            task: Mutex::new(Some(handle)),
        }
    }

    /// A consistent snapshot of the store in kv-core's snapshot format.
    ///
    /// # Errors
    /// The store task is gone or the snapshot failed.
    pub async fn snapshot(&self) -> Result<Vec<u8>, MemoryError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Snapshot(tx))
            .await
            .map_err(|_| MemoryError::Stopped)?;
        rx.await
            .map_err(|_| MemoryError::Stopped)?
            .map_err(|detail| MemoryError::Snapshot {
                path: PathBuf::from("<memory>"),
                detail,
            })
    }

    /// Stops the store task, saving the store to the data directory (unless ephemeral) and
    /// ending every watch.
    ///
    /// # Errors
    /// Saving failed.
    pub async fn shutdown(&self) -> Result<(), MemoryError> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Shutdown(tx)).await.is_err() {
            return Ok(());
        }
        let res = rx.await.unwrap_or(Ok(()));
        let handle = self.task.lock().take();
        if let Some(h) = handle {
            let _ = h.await;
        }
        res
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, kv_core::Error>>) -> Cmd,
    ) -> Result<T, kv_core::Error> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| internal("etcdserver: server stopped"))?;
        rx.await
            .map_err(|_| internal("etcdserver: server stopped"))?
    }

    fn member(&self) -> Member {
        Member {
            id: self.config.id,
            name: self.config.name.clone(),
            peer_urls: self.config.peer_urls.clone(),
            client_urls: self.config.client_urls.clone(),
        }
    }
}

struct StoreTask {
    store: Store,
    shared: Arc<Shared>,
    watchers: Watchers,
    raft_index: u64,
    data_dir: PathBuf,
}

impl StoreTask {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut tick = tokio::time::interval(EXPIRY_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(256);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut batch, 256) => {
                    if n == 0 {
                        return;
                    }
                    for cmd in batch.drain(..) {
                        if let Some(done) = self.handle(cmd) {
                            let res = self.save();
                            // Dropping the senders ends every open watch.
                            self.watchers.clear();
                            let _ = done.send(res);
                            return;
                        }
                    }
                    self.deliver();
                }
                _ = tick.tick() => {
                    self.expire();
                    self.prune_watchers();
                }
            }
        }
    }

    fn position(&self) -> RaftPosition {
        RaftPosition {
            index: self.raft_index,
            term: 1,
        }
    }

    fn publish(&self) {
        self.shared
            .etcd_index
            .store(self.store.index(), Ordering::Relaxed);
        self.shared
            .raft_index
            .store(self.raft_index, Ordering::Relaxed);
        self.shared
            .watchers
            .store(self.watchers.open() as u64, Ordering::Relaxed);
    }

    /// Handles one command; returns the reply channel when it is a shutdown.
    fn handle(&mut self, cmd: Cmd) -> Option<oneshot::Sender<Result<(), MemoryError>>> {
        match cmd {
            Cmd::Write(op, reply) => {
                self.raft_index += 1;
                let res = self
                    .store
                    .apply(&Command::new(now_ms(), op))
                    .map(|event| Applied {
                        event,
                        raft: self.position(),
                    });
                self.publish();
                let _ = reply.send(res);
            }
            Cmd::Read(req, reply) => {
                if req.quorum {
                    // A quorum read is a log entry in etcd: it takes a raft index.
                    self.raft_index += 1;
                    self.publish();
                }
                let res = self
                    .store
                    .get(&req.key, req.recursive, req.sorted, now_ms())
                    .map(|event| Applied {
                        event,
                        raft: self.position(),
                    });
                let _ = reply.send(res);
            }
            Cmd::Watch(req, reply) => {
                let _ = reply.send(self.watch(req));
                self.publish();
            }
            Cmd::Snapshot(reply) => {
                let mut buf = Vec::new();
                let res = self
                    .store
                    .snapshot(&mut buf)
                    .map(|_| buf)
                    .map_err(|e| e.to_string());
                let _ = reply.send(res);
            }
            Cmd::Shutdown(reply) => return Some(reply),
        }
        None
    }

    fn watch(&mut self, req: WatchRequest) -> Result<Watch, kv_core::Error> {
        let start_index = self.store.index();
        let events = self.watchers.register(&mut self.store, &req)?;
        Ok(Watch {
            start_index,
            raft: self.position(),
            events,
        })
    }

    fn deliver(&mut self) {
        if self.watchers.deliver(&mut self.store) {
            self.publish();
        }
    }

    fn prune_watchers(&mut self) {
        self.watchers.prune(&mut self.store);
        self.publish();
    }

    fn expire(&mut self) {
        let now = now_ms();
        if self.store.next_expiry().is_none_or(|t| t > now) {
            return;
        }
        self.raft_index += 1;
        if let Ok(ev) = self.store.apply(&Command::new(now, Op::Expire)) {
            let n = ev.batch.map_or(0, |b| b.events.len() as u64);
            self.shared.expire_count.fetch_add(n, Ordering::Relaxed);
        }
        self.publish();
        self.deliver();
    }

    fn save(&self) -> Result<(), MemoryError> {
        if self.data_dir.as_os_str().is_empty() {
            return Ok(());
        }
        let path = snap_path(&self.data_dir);
        let tmp = path.with_extension("tmp");
        let io = |source| MemoryError::Io {
            path: tmp.clone(),
            source,
        };
        let f = std::fs::File::create(&tmp).map_err(io)?;
        let mut w = std::io::BufWriter::new(f);
        self.store
            .snapshot(&mut w)
            .map_err(|e| MemoryError::Snapshot {
                path: tmp.clone(),
                detail: e.to_string(),
            })?;
        let f = w.into_inner().map_err(|e| io(e.into_error()))?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(|source| MemoryError::Io { path, source })
    }
}

impl KvBackend for MemoryBackend {
    async fn apply(&self, op: Op) -> Result<Applied, kv_core::Error> {
        self.call(|tx| Cmd::Write(op, tx)).await
    }

    async fn read(&self, req: ReadRequest) -> Result<Applied, kv_core::Error> {
        self.call(|tx| Cmd::Read(req, tx)).await
    }

    async fn watch(&self, req: WatchRequest) -> Result<Watch, kv_core::Error> {
        self.call(|tx| Cmd::Watch(req, tx)).await
    }

    fn members(&self) -> Vec<Member> {
        vec![self.member()]
    }

    async fn add_member(&self, _peer_urls: Vec<String>) -> Result<Member, MemberError> {
        Err(MemberError::Unsupported(
            "membership changes need the raft-store backend (this kvd runs a single in-memory member)".into(),
        ))
    }

    async fn remove_member(&self, id: u64) -> Result<(), MemberError> {
        if id == self.config.id {
            return Err(MemberError::Unsupported(
                "cannot remove the only member of a single-member store".into(),
            ));
        }
        Err(MemberError::NotFound(id))
    }

    async fn update_member(&self, id: u64, peer_urls: Vec<String>) -> Result<(), MemberError> {
        if id != self.config.id {
            return Err(MemberError::NotFound(id));
        }
        if peer_urls == self.config.peer_urls {
            return Ok(());
        }
        Err(MemberError::Unsupported(
            "peer URL changes need the raft-store backend".into(),
        ))
    }

    async fn snapshot(&self) -> Result<Vec<u8>, kv_core::Error> {
        MemoryBackend::snapshot(self)
            .await
            .map_err(|e| internal(e.to_string()))
    }

    fn status(&self) -> Status {
        Status {
            id: self.config.id,
            name: self.config.name.clone(),
            cluster_id: self.config.cluster_id,
            leader: Some(self.config.id),
            raft: RaftPosition {
                index: self.shared.raft_index.load(Ordering::Relaxed),
                term: 1,
            },
            etcd_index: self.shared.etcd_index.load(Ordering::Relaxed),
            start_time_ms: self.start_ms,
            leader_since_ms: self.start_ms,
            watchers: self.shared.watchers.load(Ordering::Relaxed),
            expire_count: self.shared.expire_count.load(Ordering::Relaxed),
        }
    }
}
