//! [`RaftBackend`]: kv-core replicated by raft-store (raft log and snapshots in RocksDB,
//! gRPC between members). This is kvd's production backend.
//!
//! * Writes go through [`raft_store::Node::write`] as kv-core commands stamped with the
//!   receiving member's clock (as etcd v2 stamps requests); followers forward them to the
//!   leader, and the event comes back once this member applied the command, i.e. once it was
//!   fsynced on a quorum.
//! * Plain reads are served from the local applied state; `quorum=true` reads go through
//!   raft's ReadIndex (linearizable).
//! * Watches use kv-core's own watcher hub inside the state machine, so their matching is
//!   exactly the in-memory store's (and etcd's). Watchers are local to a member and are not
//!   part of the replicated state; installing a snapshot ends them, as etcd's recovery does.
//! * Expiry: every 500 ms the leader proposes an `Expire` command when a TTL has run out, as
//!   etcd's leader proposes `SYNC`.
//! * Members publish their name and client URLs through the log once they start (etcd's
//!   `publish`), so `/v2/members` and `cluster-health` see every member's client URLs.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kv_core::{Command, Op, Store};
use parking_lot::{Mutex, RwLock};
use raft_store::{Node as RaftNode, ReadConsistency, StateMachine};
use serde::{Deserialize, Serialize};

use super::memory::{Watchers, error_from, event_from, write_to_op};
use super::{
    Applied, AppliedOp, KeysError, KvBackend, Member, MemberError, RaftPosition, ReadRequest,
    Status, Watch, WatchRequest, WriteOp, now_ms,
};

/// How often the leader looks for expired keys (etcd's leader SYNC interval).
const EXPIRY_TICK: Duration = Duration::from_millis(500);
/// Magic and version at the start of the state machine's snapshot.
const SNAPSHOT_MAGIC: &[u8; 8] = b"KVDSM\x00\x00\x01";
/// Largest member-attributes block a snapshot may claim (a guard against corrupt lengths).
const MAX_ATTRIBUTES_BYTES: u32 = 64 << 20;

/// A member's published attributes (etcd's `Attributes`: name and client URLs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    /// Member id.
    pub id: u64,
    /// Member name.
    pub name: String,
    /// Advertised client URLs.
    pub client_urls: Vec<String>,
}

/// A command in kvd's raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KvCommand {
    /// A kv-core command (every keys-API write and expiry sweep).
    Kv(Command),
    /// A member announcing its name and client URLs.
    Publish(Attributes),
}

/// What applying a [`KvCommand`] produced.
#[derive(Debug)]
#[non_exhaustive]
pub enum KvOutput {
    /// The kv-core event, or the etcd error (identical on every member).
    Kv(Result<kv_core::Event, kv_core::Error>),
    /// Attributes were recorded.
    Published,
}

/// Replicated state shared with request handlers for answers that need no round trip.
#[derive(Debug)]
struct Shared {
    etcd_index: AtomicU64,
    watchers: AtomicU64,
    expire_count: AtomicU64,
    /// When the next TTL runs out (ms since the epoch; `u64::MAX`: no TTL), so the expiry
    /// loop need not lock the store, which a snapshot holds for seconds in a large store.
    next_expiry: AtomicU64,
    attributes: RwLock<BTreeMap<u64, Attributes>>,
}

#[derive(Debug, Default)]
struct Inner {
    store: Store,
    watchers: Watchers,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            etcd_index: AtomicU64::new(0),
            watchers: AtomicU64::new(0),
            expire_count: AtomicU64::new(0),
            next_expiry: AtomicU64::new(u64::MAX),
            attributes: RwLock::default(),
        }
    }
}

impl Inner {
    /// Mirrors the store index, the watcher count and the next expiry for answers without
    /// a round trip or a lock.
    fn publish_counters(&self, shared: &Shared) {
        shared
            .etcd_index
            .store(self.store.index(), Ordering::Relaxed);
        shared
            .watchers
            .store(self.watchers.open() as u64, Ordering::Relaxed);
        shared.next_expiry.store(
            self.store.next_expiry().unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

/// kv-core's store plus the member attributes, as a raft-store state machine.
///
/// The store sits behind a mutex only so that watchers can be registered through
/// [`raft_store::Node::read`] (which lends the machine immutably); `apply` reaches it without
/// locking.
#[derive(Debug, Default)]
pub struct KvMachine {
    inner: Mutex<Inner>,
    shared: Arc<Shared>,
}

fn read_exact(r: &mut dyn Read, buf: &mut [u8], what: &str) -> Result<(), String> {
    r.read_exact(buf)
        .map_err(|e| format!("kvd snapshot: reading the {what}: {e}"))
}

impl StateMachine for KvMachine {
    type Command = KvCommand;
    type Output = KvOutput;

    fn apply(&mut self, _index: u64, command: KvCommand) -> KvOutput {
        match command {
            KvCommand::Kv(cmd) => {
                let inner = self.inner.get_mut();
                let res = inner.store.apply(&cmd);
                if let (Op::Expire, Ok(ev)) = (&cmd.op, &res) {
                    let n = ev.batch.as_ref().map_or(0, |b| b.events.len() as u64);
                    self.shared.expire_count.fetch_add(n, Ordering::Relaxed);
                }
                inner.watchers.deliver(&mut inner.store);
                inner.publish_counters(&self.shared);
                KvOutput::Kv(res)
            }
            KvCommand::Publish(a) => {
                self.shared.attributes.write().insert(a.id, a);
                KvOutput::Published
            }
        }
    }

    fn snapshot(&self, w: &mut dyn Write) -> std::io::Result<()> {
        let attributes = serde_json::to_vec(&*self.shared.attributes.read())?;
        w.write_all(SNAPSHOT_MAGIC)?;
        w.write_all(&(attributes.len() as u32).to_le_bytes())?;
        w.write_all(&attributes)?;
        let mut w = w;
        self.inner
            .lock()
            .store
            .snapshot(&mut w)
            .map(|_| ())
            .map_err(std::io::Error::other)
    }

    fn restore(&mut self, mut r: &mut dyn Read) -> Result<(), String> {
        let mut magic = [0u8; 8];
        read_exact(r, &mut magic, "header")?;
        if &magic[..5] != b"KVDSM" {
            return Err("kvd snapshot: not a kvd state-machine snapshot (bad magic)".into());
        }
        if magic != *SNAPSHOT_MAGIC {
            return Err(format!(
                "kvd snapshot: format version {} is not supported (this kvd reads version 1)",
                u32::from(magic[7]) | (u32::from(magic[6]) << 8) | (u32::from(magic[5]) << 16)
            ));
        }
        let mut len = [0u8; 4];
        read_exact(r, &mut len, "member attributes length")?;
        let len = u32::from_le_bytes(len);
        if len > MAX_ATTRIBUTES_BYTES {
            return Err(format!(
                "kvd snapshot: member attributes claim {len} bytes (corrupt)"
            ));
        }
        let mut buf = vec![0u8; len as usize];
        read_exact(r, &mut buf, "member attributes")?;
        let attributes: BTreeMap<u64, Attributes> = serde_json::from_slice(&buf)
            .map_err(|e| format!("kvd snapshot: member attributes: {e}"))?;
        let store = Store::restore(&mut r).map_err(|e| format!("kvd snapshot: {e}"))?;
        let inner = self.inner.get_mut();
        inner.store = store;
        // Dropping the senders ends every watch, as etcd's recovery does.
        inner.watchers.clear();
        inner.publish_counters(&self.shared);
        *self.shared.attributes.write() = attributes;
        Ok(())
    }
}

/// The id of a member with these peer URLs in a cluster with this token. Every member, and a
/// `member add` on any of them, computes the same id, as etcd derives ids from the same
/// inputs.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    fnv64(&[&urls.join(","), token])
}

/// FNV-1a over the parts, each followed by a zero byte.
pub fn fnv64(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn internal(e: raft_store::Error) -> KeysError {
    match e {
        raft_store::Error::Timeout(_) => {
            KeysError::Internal("etcdserver: request timed out".into())
        }
        // etcd's ErrTimeoutDueToLeaderFail.
        raft_store::Error::LeaderChanged { .. } => KeysError::Internal(
            "etcdserver: request timed out, possibly due to previous leader failure".into(),
        ),
        raft_store::Error::NoLeader => KeysError::Internal("etcdserver: no leader".into()),
        raft_store::Error::Stopped => KeysError::Internal("etcdserver: server stopped".into()),
        // A request within kvd's limits can still encode past raft-store's command limit (a
        // control character takes 6 bytes in the command's JSON): the same answer as a
        // request over the limits.
        raft_store::Error::CommandTooLarge { .. } => {
            KeysError::Internal(crate::backend::CAUSE_TOO_LARGE.into())
        }
        other => KeysError::Internal(other.to_string()),
    }
}

/// Who this member is, for ids and the members API.
#[derive(Debug, Clone)]
pub struct RaftIdentity {
    /// The cluster id (`X-Etcd-Cluster-Id`).
    pub cluster_id: u64,
    /// The cluster token, part of new members' ids.
    pub token: String,
    /// This member's name.
    pub name: String,
    /// This member's advertised client URLs.
    pub client_urls: Vec<String>,
}

/// The replicated backend (see the module docs).
#[derive(Debug)]
pub struct RaftBackend {
    node: RaftNode<KvMachine>,
    shared: Arc<Shared>,
    identity: RaftIdentity,
    start_ms: u64,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RaftBackend {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl RaftBackend {
    /// A fresh state machine for [`raft_store::Node::open`]; pass the node back to
    /// [`RaftBackend::new`] with the machine's handle.
    pub fn machine() -> (KvMachine, MachineHandle) {
        let m = KvMachine::default();
        let h = MachineHandle(Arc::clone(&m.shared));
        (m, h)
    }

    /// A state machine holding the kv-core store read from `r` (kv-core's snapshot format,
    /// as `kvctl snapshot save` writes it), to bootstrap a new cluster from a backup.
    ///
    /// # Errors
    /// The bytes are not a valid kv-core snapshot.
    pub fn machine_from(
        r: &mut dyn Read,
        handle: &MachineHandle,
    ) -> Result<KvMachine, kv_core::SnapshotError> {
        let mut r = r;
        let inner = Inner {
            store: Store::restore(&mut r)?,
            watchers: Watchers::default(),
        };
        inner.publish_counters(&handle.0);
        Ok(KvMachine {
            inner: Mutex::new(inner),
            shared: Arc::clone(&handle.0),
        })
    }

    /// Wraps an opened node: starts the expiry ticker and publishes this member's
    /// attributes through the log.
    pub fn new(node: RaftNode<KvMachine>, handle: MachineHandle, identity: RaftIdentity) -> Self {
        let expiry = tokio::spawn(expiry_loop(node.clone(), Arc::clone(&handle.0)));
        let me = Attributes {
            id: node.id(),
            name: identity.name.clone(),
            client_urls: identity.client_urls.clone(),
        };
        let publish = tokio::spawn(publish_loop(node.clone(), Arc::clone(&handle.0), me));
        RaftBackend {
            node,
            shared: handle.0,
            identity,
            start_ms: now_ms(),
            tasks: vec![expiry, publish],
        }
    }

    /// The raft node underneath.
    pub fn node(&self) -> &RaftNode<KvMachine> {
        &self.node
    }

    /// Stops the member: ends every watch and closes the data directory (the log is
    /// durable; nothing else needs saving).
    pub async fn shutdown(&self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = self
            .node
            .read(ReadConsistency::Serializable, |m| {
                let inner = &mut *m.inner.lock();
                inner.watchers.unwatch_all(&mut inner.store);
            })
            .await;
        self.node.shutdown().await;
    }

    fn position(&self) -> RaftPosition {
        let s = self.node.status();
        RaftPosition {
            index: s.commit,
            term: s.term,
        }
    }
}

/// The part of a [`KvMachine`] that stays reachable after the machine moved into its node.
#[derive(Debug, Clone)]
pub struct MachineHandle(Arc<Shared>);

async fn expiry_loop(node: RaftNode<KvMachine>, shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(EXPIRY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let st = node.status();
        if st.stopped {
            return;
        }
        if st.leader != Some(st.id) {
            continue;
        }
        let now = now_ms();
        if shared.next_expiry.load(Ordering::Relaxed) <= now {
            // A failure (lost leadership, timeout) is retried on the next tick.
            let _ = node
                .write(&KvCommand::Kv(Command::new(now, Op::Expire)))
                .await;
        }
    }
}

/// Publishes this member's attributes until the log holds them (etcd's `publish`, retried
/// while there is no leader).
async fn publish_loop(node: RaftNode<KvMachine>, shared: Arc<Shared>, me: Attributes) {
    let mut delay = Duration::from_millis(50);
    loop {
        if shared.attributes.read().get(&me.id) == Some(&me) {
            return;
        }
        if node.status().stopped {
            return;
        }
        match node.write(&KvCommand::Publish(me.clone())).await {
            Ok(_) => return,
            Err(raft_store::Error::Stopped) => return,
            Err(e) => {
                tracing::debug!(error = %e, "publishing member attributes; will retry");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

impl KvBackend for RaftBackend {
    async fn write(&self, op: WriteOp) -> Result<Applied, KeysError> {
        let a = self.apply(write_to_op(op)).await?;
        Ok(Applied {
            event: event_from(a.event),
            raft: a.raft,
        })
    }

    async fn apply(&self, op: Op) -> Result<AppliedOp, KeysError> {
        let cmd = KvCommand::Kv(Command::new(now_ms(), op));
        let (index, out) = self.node.write(&cmd).await.map_err(internal)?;
        match &*out {
            KvOutput::Kv(Ok(ev)) => Ok(AppliedOp {
                event: ev.clone(),
                raft: RaftPosition {
                    index,
                    term: self.node.status().term,
                },
            }),
            KvOutput::Kv(Err(e)) => Err(KeysError::Store(error_from(e))),
            KvOutput::Published => Err(KeysError::Internal(
                "unexpected output for a keys command".into(),
            )),
        }
    }

    async fn read(&self, req: ReadRequest) -> Result<Applied, KeysError> {
        let consistency = if req.quorum {
            ReadConsistency::Linearizable
        } else {
            ReadConsistency::Serializable
        };
        let now = now_ms();
        let res = self
            .node
            .read(consistency, |m| {
                m.inner
                    .lock()
                    .store
                    .get(&req.key, req.recursive, req.sorted, now)
            })
            .await
            .map_err(internal)?;
        match res {
            Ok(ev) => Ok(Applied {
                event: event_from(ev),
                raft: self.position(),
            }),
            Err(e) => Err(KeysError::Store(error_from(&e))),
        }
    }

    async fn watch(&self, req: WatchRequest) -> Result<Watch, KeysError> {
        let (start_index, events) = self
            .node
            .read(ReadConsistency::Serializable, |m| {
                let inner = &mut *m.inner.lock();
                inner.watchers.prune(&mut inner.store);
                let current = inner.store.index();
                let events = inner.watchers.register(&mut inner.store, &req)?;
                inner.publish_counters(&m.shared);
                Ok::<_, KeysError>((current, events))
            })
            .await
            .map_err(internal)??;
        Ok(Watch {
            start_index,
            raft: self.position(),
            events,
        })
    }

    fn members(&self) -> Vec<Member> {
        let attributes = self.shared.attributes.read();
        let me = self.node.id();
        self.node
            .members()
            .into_iter()
            .map(|m| match attributes.get(&m.id) {
                Some(a) => Member {
                    id: m.id,
                    name: a.name.clone(),
                    peer_urls: m.peer_urls,
                    client_urls: a.client_urls.clone(),
                },
                // This member knows its own attributes before their publication commits.
                None if m.id == me => Member {
                    id: m.id,
                    name: self.identity.name.clone(),
                    peer_urls: m.peer_urls,
                    client_urls: self.identity.client_urls.clone(),
                },
                None => Member {
                    id: m.id,
                    name: m.name,
                    peer_urls: m.peer_urls,
                    client_urls: Vec::new(),
                },
            })
            .collect()
    }

    async fn add_member(&self, peer_urls: Vec<String>) -> Result<Member, MemberError> {
        let id = member_id(&peer_urls, &self.identity.token);
        let members = self.node.members();
        if members
            .iter()
            .any(|m| m.id == id || m.peer_urls.iter().any(|u| peer_urls.contains(u)))
        {
            return Err(MemberError::Conflict(format!(
                "ID exists or peerURL exists: {id:x}"
            )));
        }
        let mut m = raft_store::Member::new(id, "");
        m.peer_urls = peer_urls.clone();
        self.node
            .add_member(m)
            .await
            .map_err(|e| MemberError::Internal(e.to_string()))?;
        Ok(Member {
            id,
            name: String::new(),
            peer_urls,
            client_urls: Vec::new(),
        })
    }

    async fn remove_member(&self, id: u64) -> Result<(), MemberError> {
        if !self.node.members().iter().any(|m| m.id == id) {
            return Err(MemberError::NotFound(id));
        }
        self.node
            .remove_member(id)
            .await
            .map(|_| ())
            .map_err(|e| MemberError::Internal(e.to_string()))
    }

    async fn update_member(&self, id: u64, peer_urls: Vec<String>) -> Result<(), MemberError> {
        let members = self.node.members();
        match members.iter().find(|m| m.id == id) {
            None => return Err(MemberError::NotFound(id)),
            Some(m) if m.peer_urls == peer_urls => return Ok(()),
            Some(_) => {}
        }
        // etcd refuses URLs another member already uses.
        if members
            .iter()
            .any(|m| m.id != id && m.peer_urls.iter().any(|u| peer_urls.contains(u)))
        {
            return Err(MemberError::Conflict("PeerURLs exists".into()));
        }
        self.node
            .update_member(id, peer_urls)
            .await
            .map(|_| ())
            .map_err(|e| MemberError::Internal(e.to_string()))
    }

    fn status(&self) -> Status {
        let s = self.node.status();
        Status {
            id: s.id,
            name: self.identity.name.clone(),
            cluster_id: self.identity.cluster_id,
            leader: s.leader,
            raft: RaftPosition {
                index: s.commit,
                term: s.term,
            },
            etcd_index: self.shared.etcd_index.load(Ordering::Relaxed),
            start_time_ms: self.start_ms,
            leader_since_ms: s
                .leader_since
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(self.start_ms, |d| d.as_millis() as u64),
            watchers: self.shared.watchers.load(Ordering::Relaxed),
            expire_count: self.shared.expire_count.load(Ordering::Relaxed),
        }
    }

    async fn snapshot(&self) -> Result<Vec<u8>, KeysError> {
        let res = self
            .node
            .read(ReadConsistency::Linearizable, |m| {
                let mut buf = Vec::new();
                m.inner
                    .lock()
                    .store
                    .snapshot(&mut buf)
                    .map(|_| buf)
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(internal)?;
        res.map_err(KeysError::Internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, value: &str) -> KvCommand {
        KvCommand::Kv(Command::new(
            1_700_000_000_000,
            Op::Set {
                key: key.into(),
                value: value.into(),
                dir: false,
                ttl: None,
                refresh: false,
            },
        ))
    }

    #[test]
    fn snapshot_round_trips_store_and_attributes() {
        let mut m = KvMachine::default();
        m.apply(1, set("/a", "1"));
        m.apply(
            2,
            KvCommand::Publish(Attributes {
                id: 7,
                name: "n7".into(),
                client_urls: vec!["http://127.0.0.1:1".into()],
            }),
        );
        let mut buf = Vec::new();
        m.snapshot(&mut buf).unwrap();
        let mut r = KvMachine::default();
        r.restore(&mut buf.as_slice()).unwrap();
        assert_eq!(r.inner.get_mut().store.index(), 1);
        assert_eq!(r.shared.attributes.read()[&7].name, "n7");
        assert_eq!(r.shared.etcd_index.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn damaged_snapshots_are_refused_and_leave_the_state() {
        let mut m = KvMachine::default();
        m.apply(1, set("/a", "1"));
        let mut buf = Vec::new();
        m.snapshot(&mut buf).unwrap();
        let mut foreign = buf.clone();
        foreign[0] = b'X';
        assert!(
            m.restore(&mut foreign.as_slice())
                .unwrap_err()
                .contains("bad magic")
        );
        let mut newer = buf.clone();
        newer[7] = 2;
        assert!(
            m.restore(&mut newer.as_slice())
                .unwrap_err()
                .contains("version 2")
        );
        let mut huge = buf.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            m.restore(&mut huge.as_slice())
                .unwrap_err()
                .contains("corrupt")
        );
        assert!(m.restore(&mut &buf[..buf.len() - 3]).is_err());
        assert_eq!(m.inner.get_mut().store.index(), 1);
    }

    #[test]
    fn watchers_registered_through_the_lock_see_applied_events() {
        let mut m = KvMachine::default();
        let mut rx = {
            let inner = &mut *m.inner.lock();
            let req = WatchRequest {
                key: "/a".into(),
                recursive: false,
                stream: false,
                since: None,
                all_history: false,
            };
            inner.watchers.register(&mut inner.store, &req).unwrap()
        };
        m.apply(1, set("/b", "x"));
        assert!(rx.try_recv().is_err());
        m.apply(2, set("/a", "y"));
        let ev = rx.try_recv().unwrap();
        assert_eq!(ev.node.value.as_deref(), Some("y"));
        assert_eq!(m.shared.watchers.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn ids_depend_on_sorted_urls_and_token() {
        let a = member_id(&["http://b:2".into(), "http://a:1".into()], "t");
        let b = member_id(&["http://a:1".into(), "http://b:2".into()], "t");
        assert_eq!(a, b);
        assert_ne!(
            a,
            member_id(&["http://a:1".into(), "http://b:2".into()], "u")
        );
    }
}
