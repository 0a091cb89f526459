//! [`RaftBackend`]: kv-core replicated by raft-store (raft log and snapshots in RocksDB,
//! gRPC between members), its state machine [`StoreMachine`]. This is kvd's production
//! backend.
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

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kv_core::{Command, Op};
use raft_store::{Node as RaftNode, ReadConsistency};

use super::machine::{Attributes, KvCommand, KvOutput, MachineHandle, Shared, StoreMachine};
use super::{
    Applied, CAUSE_TOO_LARGE, KvBackend, Member, MemberError, RaftPosition, ReadRequest, Status,
    Watch, WatchRequest, internal, now_ms,
};

/// How often the leader looks for expired keys (etcd's leader SYNC interval).
const EXPIRY_TICK: Duration = Duration::from_millis(500);

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

/// etcd's 300 for a request raft-store could not complete, with etcd's causes.
fn not_committed(e: raft_store::Error) -> kv_core::Error {
    match e {
        raft_store::Error::Timeout(_) => internal("etcdserver: request timed out"),
        // etcd's ErrTimeoutDueToLeaderFail.
        raft_store::Error::LeaderChanged { .. } => {
            internal("etcdserver: request timed out, possibly due to previous leader failure")
        }
        raft_store::Error::NoLeader => internal("etcdserver: no leader"),
        raft_store::Error::Stopped => internal("etcdserver: server stopped"),
        // A request within kvd's limits can still encode past raft-store's command limit (a
        // control character takes 6 bytes in the command's JSON): the same answer as a
        // request over the limits.
        raft_store::Error::CommandTooLarge { .. } => internal(CAUSE_TOO_LARGE),
        other => internal(other.to_string()),
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
    node: RaftNode<StoreMachine>,
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
    /// Wraps an opened node: starts the expiry ticker and publishes this member's
    /// attributes through the log.
    pub fn new(
        node: RaftNode<StoreMachine>,
        handle: MachineHandle,
        identity: RaftIdentity,
    ) -> Self {
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
    pub fn node(&self) -> &RaftNode<StoreMachine> {
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

async fn expiry_loop(node: RaftNode<StoreMachine>, shared: Arc<Shared>) {
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
async fn publish_loop(node: RaftNode<StoreMachine>, shared: Arc<Shared>, me: Attributes) {
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
    async fn apply(&self, op: Op) -> Result<Applied, kv_core::Error> {
        let cmd = KvCommand::Kv(Command::new(now_ms(), op));
        let (index, out) = self.node.write(&cmd).await.map_err(not_committed)?;
        match &*out {
            KvOutput::Kv(Ok(ev)) => Ok(Applied {
                event: ev.clone(),
                raft: RaftPosition {
                    index,
                    term: self.node.status().term,
                },
            }),
            KvOutput::Kv(Err(e)) => Err(e.clone()),
            KvOutput::Published => Err(internal("unexpected output for a keys command")),
        }
    }

    async fn read(&self, req: ReadRequest) -> Result<Applied, kv_core::Error> {
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
            .map_err(not_committed)??;
        Ok(Applied {
            event: res,
            raft: self.position(),
        })
    }

    async fn watch(&self, req: WatchRequest) -> Result<Watch, kv_core::Error> {
        let (start_index, events) = self
            .node
            .read(ReadConsistency::Serializable, |m| {
                let inner = &mut *m.inner.lock();
                inner.watchers.prune(&mut inner.store);
                let current = inner.store.index();
                let events = inner.watchers.register(&mut inner.store, &req)?;
                inner.publish_counters(&m.shared);
                Ok::<_, kv_core::Error>((current, events))
            })
            .await
            .map_err(not_committed)??;
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

    async fn snapshot(&self) -> Result<Vec<u8>, kv_core::Error> {
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
            .map_err(not_committed)?;
        res.map_err(internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
