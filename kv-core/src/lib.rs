//! The etcd v2 store as a pure, deterministic state machine.
//!
//! A [`Store`] is a tree of directories and files with etcd v2's exact semantics: the
//! store index and each node's `createdIndex`/`modifiedIndex`, TTLs, compare-and-swap and
//! compare-and-delete, in-order keys, hidden keys, the 1000-event [`EventHistory`] and
//! watch matching ([`WatcherHub`]), and every error code, message and cause ([`Error`]).
//! Beyond etcd v2 it offers a multi-key transaction ([`Txn`]).
//!
//! Mutations are [`Command`]s: an [`Op`] plus the proposing leader's clock (`now`, in
//! milliseconds since the Unix epoch). Nothing in this crate reads a clock or does I/O;
//! expiry is itself a command ([`Op::Expire`]), so replicas applying the same commands
//! reach the same state. [`Store::apply`] returns an [`Event`] (`action`, `node`,
//! `prevNode` as [`NodeView`]s); [`Store::get`] reads, and [`Store::get_ref`] reads
//! without copying ([`NodeRef`]). [`Store::snapshot`] and
//! [`Store::restore`] stream the whole state in a versioned, checksummed format.
//!
//! The serde forms of [`NodeView`] and [`Error`] are etcd's v2 JSON; [`json`] writes events
//! and errors byte for byte as etcd's Go encoder does (what kvd's HTTP front end sends).
//!
//! # Design decisions
//!
//! * **Layout for speed and memory.** A directory keeps its children in a hash table (a
//!   fixed FxHash-style hash; open addressing with one cache line per slot, so a lookup
//!   touches the slot and then the entry's block) keyed by the last path component, and a
//!   key is checked and walked in one pass; nodes do not store their
//!   path, and a file's name and value share one heap block, the key of its parent's map,
//!   so a read touches one block after the hash-table slot. Listings are always sorted by key (etcd's
//!   `sorted=true` order, also a valid order for unsorted listings), and snapshots write
//!   children in name order, so equal stores give equal bytes. TTLs live in an ordered set of
//!   `(expiry, key)`, so the expiry sweep pops due nodes in O(log n) and ties expire in
//!   key order, deterministically.
//! * **Indexes as etcd.** Every successful mutation takes the next index (each expired
//!   node its own); failures and reads take none. [`Store::with_index`] starts elsewhere,
//!   e.g. at a real etcd's index in the differential test.
//! * **Watchers are local, not replicated.** [`Store::watch`] scans the history or
//!   registers a watcher; matched events queue up as [`Notification`]s that the server
//!   drains with [`Store::take_notifications`] after applying. Unlike etcd, a stream watch
//!   served from the history stays registered for later events; flow control (etcd drops
//!   a stream more than 100 events behind) is the server's job.
//! * **Transactions** ([`Txn`]) are atomic: each operation records how to undo itself,
//!   and a failing operation rolls the earlier ones back before its error is returned.
//! * **Deliberate differences from etcd.** The history scan's "directory contains key"
//!   test is component-wise (etcd's string-prefix test lets a delete of `/w` match a watch
//!   on `/wx`); a stream watcher gets each event once even when etcd would send a
//!   directory's delete twice; expiry times have millisecond, not nanosecond, precision.
//!
//! ```
//! use kv_core::{Action, Command, Op, Store};
//!
//! let mut store = Store::new();
//! let now = 1_700_000_000_000; // the leader's clock, ms since the epoch
//! let set = Op::Set { key: "/dir/a".into(), value: "1".into(), dir: false, ttl: Some(10), refresh: false };
//! let e = store.apply(&Command::new(now, set))?;
//! assert_eq!((e.action, e.node.created_index, e.node.ttl), (Action::Set, 1, Some(10)));
//!
//! let cas = Op::CompareAndSwap {
//!     key: "/dir/a".into(), value: "2".into(), prev_value: Some("0".into()),
//!     prev_index: None, ttl: None, refresh: false,
//! };
//! let err = store.apply(&Command::new(now, cas)).unwrap_err();
//! assert_eq!((err.code(), err.cause()), (101, "[0 != 1]"));
//!
//! // Ten seconds later the key expires when the leader proposes an expiry sweep.
//! let sweep = store.apply(&Command::new(now + 10_000, Op::Expire))?;
//! assert_eq!(sweep.batch.unwrap().events[0].action, Action::Expire);
//! assert_eq!(store.get("/dir/a", false, false, now).unwrap_err().code(), 100);
//!
//! // Snapshots round-trip the whole state.
//! let mut bytes = Vec::new();
//! store.snapshot(&mut bytes)?;
//! let copy = Store::restore(&mut bytes.as_slice())?;
//! assert_eq!(copy.index(), store.index());
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod command;
mod error;
mod event;
pub mod json;
mod node;
pub mod path;
mod snapshot;
mod store;
pub mod time;
mod watch;

pub use command::{Command, Compare, CompareTarget, Op, Txn};
pub use error::{Error, Result};
pub use event::{Action, Batch, Event};
pub use node::{NodeRef, NodeView};
pub use snapshot::{SNAPSHOT_VERSION, SnapshotError};
pub use store::Store;
pub use watch::{EventHistory, HISTORY_CAPACITY, Notification, WatchStart, WatcherHub, WatcherId};
