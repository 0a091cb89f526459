//! [`StoreMachine`]: kv-core's store as raft-store's state machine, with what kvd keeps
//! beside the store: its watchers, the expiry counters, and the members' published
//! attributes (name and client URLs, etcd's `publish`).
//!
//! This is the one implementation of [`StateMachine`] over kv-core's store: raft-store
//! stays generic (it knows nothing of kv-core), and the watchers (tokio channels) and
//! etcd's member attributes are kvd's, not the store's.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kv_core::{Command, Op, Store};
use parking_lot::{Mutex, RwLock};
use raft_store::StateMachine;
use serde::{Deserialize, Serialize};

use super::watchers::Watchers;

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
pub(super) struct Shared {
    pub(super) etcd_index: AtomicU64,
    pub(super) watchers: AtomicU64,
    pub(super) expire_count: AtomicU64,
    /// When the next TTL runs out (ms since the epoch; `u64::MAX`: no TTL), so the expiry
    /// loop need not lock the store, which a snapshot holds for seconds in a large store.
    pub(super) next_expiry: AtomicU64,
    pub(super) attributes: RwLock<BTreeMap<u64, Attributes>>,
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

/// The store and the channels of its watchers.
#[derive(Debug, Default)]
pub(super) struct Inner {
    pub(super) store: Store,
    pub(super) watchers: Watchers,
}

impl Inner {
    /// Mirrors the store index, the watcher count and the next expiry for answers without
    /// a round trip or a lock.
    pub(super) fn publish_counters(&self, shared: &Shared) {
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
pub struct StoreMachine {
    pub(super) inner: Mutex<Inner>,
    pub(super) shared: Arc<Shared>,
}

/// The part of a [`StoreMachine`] that stays reachable after the machine moved into its
/// node; [`super::raft::RaftBackend::new`] takes it.
#[derive(Debug, Clone)]
pub struct MachineHandle(pub(super) Arc<Shared>);

impl StoreMachine {
    /// An empty store for [`raft_store::Node::open`], and its handle.
    pub fn new() -> (StoreMachine, MachineHandle) {
        let m = StoreMachine::default();
        let h = MachineHandle(Arc::clone(&m.shared));
        (m, h)
    }

    /// A machine holding the kv-core store read from `r` (kv-core's snapshot format, as
    /// `kvctl snapshot save` writes it), to bootstrap a new cluster from a backup, and its
    /// handle.
    ///
    /// # Errors
    /// The bytes are not a valid kv-core snapshot.
    pub fn from_snapshot(
        r: &mut dyn Read,
    ) -> Result<(StoreMachine, MachineHandle), kv_core::SnapshotError> {
        let mut r = r;
        let inner = Inner {
            store: Store::restore(&mut r)?,
            watchers: Watchers::default(),
        };
        let shared = Arc::new(Shared::default());
        inner.publish_counters(&shared);
        let handle = MachineHandle(Arc::clone(&shared));
        Ok((
            StoreMachine {
                inner: Mutex::new(inner),
                shared,
            },
            handle,
        ))
    }
}

fn read_exact(r: &mut dyn Read, buf: &mut [u8], what: &str) -> Result<(), String> {
    r.read_exact(buf)
        .map_err(|e| format!("kvd snapshot: reading the {what}: {e}"))
}

impl StateMachine for StoreMachine {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::WatchRequest;

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
        let mut m = StoreMachine::default();
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
        let mut r = StoreMachine::default();
        r.restore(&mut buf.as_slice()).unwrap();
        assert_eq!(r.inner.get_mut().store.index(), 1);
        assert_eq!(r.shared.attributes.read()[&7].name, "n7");
        assert_eq!(r.shared.etcd_index.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn damaged_snapshots_are_refused_and_leave_the_state() {
        let mut m = StoreMachine::default();
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
        let mut m = StoreMachine::default();
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
}
