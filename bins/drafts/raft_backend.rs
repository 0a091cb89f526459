// DRAFT, NOT COMPILED (no module declares this file). Written against raft-store's
// uncommitted API on 2026-11-25 (~14:40 UTC), never type-checked: raft-store did not build
// then. See bins/drafts/README.md for where it goes once raft-store is committed.

//! [`RaftBackend`]: kv-core replicated by raft-store (raft log and snapshots in RocksDB,
//! gRPC between members).
//!
//! * Writes go through [`raft_store::Node::write`] as `kv_core::Command`s stamped with this
//!   member's clock (followers forward them to the leader); the event comes back once this
//!   member applied the command.
//! * Plain reads are served from the local applied state; `quorum=true` reads use raft's
//!   ReadIndex (linearizable).
//! * Watches follow the stream of applied outputs ([`raft_store::Node::watch`]), starting in
//!   kv-core's 1000-event history for `waitIndex`, and match events with etcd's rules.
//! * Expiry: every 500 ms the leader proposes an `Expire` command when a TTL has run out, as
//!   etcd's leader proposes `SYNC`.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kv_core::{Command, Op, Store};
use raft_store::{Node, ReadConsistency, StateMachine};
use tokio::sync::mpsc;

use super::memory::{error_from, event_from};
use super::{
    Applied, Event, KeysError, KvBackend, Member, MemberError, RaftPosition, ReadRequest, Status,
    Watch, WatchRequest, WriteOp, now_ms,
};

/// What one applied command produced: the kv-core result, and whether it was a TTL refresh
/// (refreshes do not wake watchers in etcd).
#[derive(Debug)]
pub struct KvOutput {
    /// The event, or the etcd error.
    pub result: Result<kv_core::Event, kv_core::Error>,
    /// The command was a refresh.
    pub refresh: bool,
}

/// kv-core's store as a raft-store state machine.
#[derive(Debug, Default)]
pub struct KvMachine {
    store: Store,
}

fn is_refresh(op: &Op) -> bool {
    matches!(
        op,
        Op::Set { refresh: true, .. }
            | Op::Update { refresh: true, .. }
            | Op::CompareAndSwap { refresh: true, .. }
    )
}

impl StateMachine for KvMachine {
    type Command = Command;
    type Output = KvOutput;

    fn apply(&mut self, _index: u64, command: Command) -> KvOutput {
        let refresh = is_refresh(&command.op);
        KvOutput { result: self.store.apply(&command), refresh }
    }

    fn snapshot(&self, mut w: &mut dyn Write) -> std::io::Result<()> {
        self.store.snapshot(&mut w).map(|_| ()).map_err(std::io::Error::other)
    }

    fn restore(&mut self, mut r: &mut dyn Read) -> Result<(), String> {
        self.store = Store::restore(&mut r).map_err(|e| e.to_string())?;
        Ok(())
    }

    fn history(&self, from: u64) -> Option<Vec<KvOutput>> {
        let h = self.store.history();
        if !h.is_empty() && from < h.start_index() {
            return None;
        }
        Some(
            h.events()
                .filter(|e| e.index >= from)
                .map(|e| KvOutput { result: Ok(e.clone()), refresh: false })
                .collect(),
        )
    }
}

/// Whether `key` is `dir` or below it.
fn under(key: &str, dir: &str) -> bool {
    dir == "/" || key == dir || (key.starts_with(dir) && key.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// Whether a path component of `key` below `dir` is hidden (starts with `_`).
fn hidden_below(key: &str, dir: &str) -> bool {
    let rest = if dir == "/" { key } else { &key[dir.len().min(key.len())..] };
    rest.split('/').any(|c| c.starts_with('_'))
}

/// etcd's watch matching for one event.
fn matches(e: &kv_core::Event, key: &str, recursive: bool) -> bool {
    let k = e.node.key.as_str();
    if k == key {
        return true;
    }
    if recursive && under(k, key) && !hidden_below(k, key) {
        return true;
    }
    let removes_dir = matches!(e.action, kv_core::Action::Delete | kv_core::Action::Expire)
        && e.prev_node.as_ref().is_some_and(|p| p.dir);
    removes_dir && under(key, k)
}

/// Identity of this member for ids in the members API.
#[derive(Debug, Clone)]
pub struct RaftIdentity {
    /// The cluster id (`X-Etcd-Cluster-Id`).
    pub cluster_id: u64,
    /// The cluster token, part of new members' ids.
    pub token: String,
}

/// The replicated backend (see the module docs).
#[derive(Debug)]
pub struct RaftBackend {
    node: Node<KvMachine>,
    identity: RaftIdentity,
    start_ms: u64,
    expire_count: Arc<AtomicU64>,
    watchers: Arc<AtomicU64>,
    ticker: tokio::task::JoinHandle<()>,
}

impl Drop for RaftBackend {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}

/// The id a member with these peer URLs gets (stable: every member computes the same).
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in [urls.join(","), token.to_owned()] {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn internal(e: raft_store::Error) -> KeysError {
    match e {
        raft_store::Error::Timeout(_) => KeysError::Internal("etcdserver: request timed out".into()),
        raft_store::Error::NoLeader => KeysError::Internal("etcdserver: no leader".into()),
        other => KeysError::Internal(other.to_string()),
    }
}

impl RaftBackend {
    /// Wraps an opened node and starts the expiry ticker.
    pub fn new(node: Node<KvMachine>, identity: RaftIdentity) -> Self {
        let expire_count = Arc::new(AtomicU64::new(0));
        let ticker = tokio::spawn(expiry_loop(node.clone(), Arc::clone(&expire_count)));
        RaftBackend {
            node,
            identity,
            start_ms: now_ms(),
            expire_count,
            watchers: Arc::new(AtomicU64::new(0)),
            ticker,
        }
    }

    /// Stops the member (its log is durable; nothing else to save).
    pub async fn shutdown(&self) {
        self.ticker.abort();
        self.node.shutdown().await;
    }

    fn position(&self) -> RaftPosition {
        let s = self.node.status();
        RaftPosition { index: s.commit, term: s.term }
    }
}

async fn expiry_loop(node: Node<KvMachine>, count: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
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
        let due = node
            .read(ReadConsistency::Serializable, |m| m.store.next_expiry().is_some_and(|t| t <= now))
            .await
            .unwrap_or(false);
        if !due {
            continue;
        }
        if let Ok((_, out)) = node.write(&Command::new(now, Op::Expire)).await {
            if let Ok(ev) = &out.result {
                let n = ev.batch.as_ref().map_or(0, |b| b.events.len() as u64);
                count.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
}

fn to_member(m: raft_store::Member) -> Member {
    Member { id: m.id, name: m.name, peer_urls: m.peer_urls, client_urls: m.client_urls }
}

impl KvBackend for RaftBackend {
    async fn write(&self, op: WriteOp) -> Result<Applied, KeysError> {
        let cmd = Command::new(now_ms(), super::memory::write_to_op(op));
        let (index, out) = self.node.write(&cmd).await.map_err(internal)?;
        match &out.result {
            Ok(ev) => Ok(Applied {
                event: event_from(ev.clone()),
                raft: RaftPosition { index, term: self.node.status().term },
            }),
            Err(e) => Err(KeysError::Store(error_from(e))),
        }
    }

    async fn read(&self, req: ReadRequest) -> Result<Applied, KeysError> {
        let consistency =
            if req.quorum { ReadConsistency::Linearizable } else { ReadConsistency::Serializable };
        let now = now_ms();
        let res = self
            .node
            .read(consistency, |m| m.store.get(&req.key, req.recursive, req.sorted, now))
            .await
            .map_err(internal)?;
        match res {
            Ok(ev) => Ok(Applied { event: event_from(ev), raft: self.position() }),
            Err(e) => Err(KeysError::Store(error_from(&e))),
        }
    }

    async fn watch(&self, req: WatchRequest) -> Result<Watch, KeysError> {
        let key = kv_core::path::clean(&req.key).into_owned();
        // Subscribe before reading the index, so no event falls between the two; events up to
        // that index are then filtered out, as the client's X-Etcd-Index already covers them.
        let watched = self.node.watch(req.since);
        let current = self
            .node
            .read(ReadConsistency::Serializable, |m| m.store.index())
            .await
            .map_err(internal)?;
        let mut stream = match watched {
            Ok(s) => s,
            Err(raft_store::Error::HistoryCleared { .. }) => {
                let oldest = self
                    .node
                    .read(ReadConsistency::Serializable, |m| m.store.history().start_index())
                    .await
                    .map_err(internal)?;
                let since = req.since.unwrap_or(0);
                return Err(KeysError::Store(super::StoreError::new(
                    401,
                    format!("the requested history has been cleared [{oldest}/{since}]"),
                    current,
                )));
            }
            Err(e) => return Err(internal(e)),
        };
        let (tx, rx) = mpsc::channel::<Event>(100);
        let since = req.since.unwrap_or(current + 1);
        let watchers = Arc::clone(&self.watchers);
        watchers.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            'outer: loop {
                let out = tokio::select! {
                    o = stream.next() => o,
                    () = tx.closed() => break,
                };
                let Some(Ok(out)) = out else { break };
                let Ok(ev) = &out.result else { continue };
                if out.refresh {
                    continue;
                }
                let singles: Vec<&kv_core::Event> = match &ev.batch {
                    Some(b) => b.events.iter().collect(),
                    None => vec![ev],
                };
                for e in singles {
                    if e.index < since || !matches(e, &key, req.recursive) {
                        continue;
                    }
                    if tx.try_send(event_from(e.clone())).is_err() || !req.stream {
                        break 'outer;
                    }
                }
            }
            watchers.fetch_sub(1, Ordering::Relaxed);
        });
        Ok(Watch { start_index: current, raft: self.position(), events: rx })
    }

    fn members(&self) -> Vec<Member> {
        self.node.members().into_iter().map(to_member).collect()
    }

    async fn add_member(&self, peer_urls: Vec<String>) -> Result<Member, MemberError> {
        let id = member_id(&peer_urls, &self.identity.token);
        if self.node.members().iter().any(|m| m.id == id || m.peer_urls.iter().any(|u| peer_urls.contains(u))) {
            return Err(MemberError::Conflict(format!("ID exists or peerURL exists: {id:x}")));
        }
        let mut m = raft_store::Member::new(id, "");
        m.peer_urls = peer_urls;
        self.node.add_member(m.clone()).await.map_err(|e| MemberError::Internal(e.to_string()))?;
        Ok(to_member(m))
    }

    async fn remove_member(&self, id: u64) -> Result<(), MemberError> {
        if !self.node.members().iter().any(|m| m.id == id) {
            return Err(MemberError::NotFound(id));
        }
        self.node.remove_member(id).await.map(|_| ()).map_err(|e| MemberError::Internal(e.to_string()))
    }

    async fn update_member(&self, id: u64, peer_urls: Vec<String>) -> Result<(), MemberError> {
        match self.node.members().into_iter().find(|m| m.id == id) {
            None => Err(MemberError::NotFound(id)),
            Some(m) if m.peer_urls == peer_urls => Ok(()),
            Some(_) => Err(MemberError::Unsupported("changing peer URLs is not supported yet".into())),
        }
    }

    fn status(&self) -> Status {
        let s = self.node.status();
        let etcd_index = self.node.status().applied;
        Status {
            id: s.id,
            name: self
                .node
                .members()
                .into_iter()
                .find(|m| m.id == s.id)
                .map(|m| m.name)
                .unwrap_or_default(),
            cluster_id: self.identity.cluster_id,
            leader: s.leader,
            raft: RaftPosition { index: s.commit, term: s.term },
            etcd_index,
            start_time_ms: self.start_ms,
            leader_since_ms: self.start_ms,
            watchers: self.watchers.load(Ordering::Relaxed),
            expire_count: self.expire_count.load(Ordering::Relaxed),
        }
    }

    async fn snapshot(&self) -> Result<Vec<u8>, KeysError> {
        let res = self
            .node
            .read(ReadConsistency::Linearizable, |m| {
                let mut buf = Vec::new();
                m.store.snapshot(&mut buf).map(|_| buf).map_err(|e| e.to_string())
            })
            .await
            .map_err(internal)?;
        res.map_err(KeysError::Internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_hidden_components() {
        assert!(under("/a/b", "/a") && under("/a", "/a") && under("/x", "/"));
        assert!(!under("/ab", "/a"));
        assert!(hidden_below("/a/_h/x", "/a") && !hidden_below("/_a/b", "/_a"));
    }
}
