//! Raft log storage: the [`LogStore`] trait, its RocksDB implementation [`RocksLogStore`] and
//! an in-memory one, [`MemLogStore`].
//!
//! Both implement raft's [`Storage`] (the read side raft needs) plus the writes the node does
//! when it handles a `Ready`. The log keeps a *truncated state* (index and term of the last
//! entry removed by compaction or replaced by a snapshot), so `term(first_index - 1)` is always
//! answerable, as raft requires, even when compaction keeps some entries behind the snapshot for
//! slow followers.
//!
//! On disk every record carries a CRC32 of its bytes, so a flipped bit is reported as
//! [`StorageError::Corrupt`] naming the record rather than decoded into garbage.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage};

use crate::error::StorageError;

/// Name of the file that marks and versions a data directory.
pub const VERSION_FILE: &str = "flotilla-raft-store.version";
/// Name of the lock file held while a process has the directory open.
pub const LOCK_FILE: &str = "flotilla-raft-store.lock";
/// The on-disk format this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
const MAGIC: &str = "flotilla-raft-store";

/// The write side of raft storage, shared by [`RocksLogStore`] and [`MemLogStore`].
///
/// Handles are cheap clones of one shared store: the node gives one to `RawNode` and keeps
/// one to persist `Ready`s. Every method is atomic: either all of its effect is stored or none.
pub trait LogStore: Storage + Clone + Send + Sync + 'static {
    /// Appends `entries` (replacing any conflicting suffix of the log) and, if given, stores
    /// `hard_state`, in one atomic write. With `sync`, returns only once the write is durable.
    ///
    /// # Errors
    ///
    /// [`StorageError::BadAppend`] if the entries would leave a gap or rewrite compacted
    /// entries; I/O errors from the backend.
    fn append(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        sync: bool,
    ) -> Result<(), StorageError>;

    /// Replaces the log with `snapshot`: entries are dropped, the truncated state, conf state
    /// and commit index come from the snapshot's metadata, and its data is kept so it can be
    /// sent to other members. Durable on return.
    ///
    /// # Errors
    ///
    /// [`StorageError::SnapshotOutOfDate`] if the snapshot is older than the log's start.
    fn apply_snapshot(&self, snapshot: &Snapshot) -> Result<(), StorageError>;

    /// Records a snapshot of the local state machine taken at `meta.index` (which must be
    /// applied, so present or compacted in the log). The log is not changed. Durable on return.
    ///
    /// # Errors
    ///
    /// [`StorageError::Unavailable`] if `meta.index` is past the last index; I/O errors.
    fn save_snapshot(&self, meta: &SnapshotMetadata, data: Bytes) -> Result<(), StorageError>;

    /// Removes entries before `index` (keeping `index` itself). A no-op if `index` is at or
    /// below the first index.
    ///
    /// # Errors
    ///
    /// [`StorageError::Unavailable`] if `index` is past `last_index + 1`.
    fn compact(&self, index: u64) -> Result<(), StorageError>;

    /// The stored hard state.
    fn hard_state(&self) -> HardState;

    /// The newest snapshot recorded with [`LogStore::save_snapshot`] or
    /// [`LogStore::apply_snapshot`], if any.
    fn latest_snapshot(&self) -> Option<Snapshot>;

    /// Index and term of the last entry removed from the front of the log (0, 0 if none).
    fn truncated(&self) -> (u64, u64);

    /// Whether raft asked for a snapshot the store could not serve since the last call
    /// (none yet, or none that includes the member it is for); clears the request.
    fn take_snapshot_request(&self) -> bool;
}

// ---------------------------------------------------------------------------------------------
// Shared bookkeeping.

/// The parts of storage state both implementations keep in memory.
#[derive(Debug, Clone, Default)]
struct Meta {
    hard_state: HardState,
    conf_state: ConfState,
    truncated_index: u64,
    truncated_term: u64,
    last_index: u64,
    snapshot: Option<Snapshot>,
    /// Raft asked for a snapshot for a member the newest one does not know (it was added
    /// after that snapshot); the node takes a fresh one and raft asks again.
    snapshot_wanted: bool,
}

impl Meta {
    fn first_index(&self) -> u64 {
        self.truncated_index + 1
    }

    fn check_append(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let contiguous = entries.windows(2).all(|w| w[1].index == w[0].index + 1);
        if first.index <= self.truncated_index || first.index > self.last_index + 1 || !contiguous {
            return Err(StorageError::BadAppend {
                first_new: first.index,
                first: self.first_index(),
                last: self.last_index,
            });
        }
        Ok(())
    }

    fn raft_state(&self) -> RaftState {
        RaftState::new(self.hard_state.clone(), self.conf_state.clone())
    }
}

fn check_range(meta: &Meta, low: u64, high: u64) -> Result<(), StorageError> {
    if low < meta.first_index() {
        return Err(StorageError::Compacted {
            index: low,
            first: meta.first_index(),
        });
    }
    if high > meta.last_index + 1 {
        return Err(StorageError::Unavailable {
            index: high - 1,
            last: meta.last_index,
        });
    }
    Ok(())
}

fn limit(entries: &mut Vec<Entry>, max_size: Option<u64>) {
    raft::util::limit_size(entries, max_size);
}

/// The newest entries of a RocksDB log, kept in memory: raft reads back the entries it just
/// persisted to apply them, and a read through RocksDB would seek every SST file of the
/// log (a range seek has no bloom filter), reading and checksumming blocks that hold none
/// of them. Holds a contiguous run of the log's last entries, bounded in count and bytes.
///
/// It is also where raft reads entries that are staged but not yet written
/// ([`RocksLogStore::stage`]): those are pinned until [`RocksLogStore::persist`] has written
/// them, so the bounds may be exceeded while writes are in flight.
#[derive(Debug, Default)]
struct EntryCache {
    entries: std::collections::VecDeque<Entry>,
    bytes: u64,
    /// Staged writes not yet persisted, oldest first: their sequence number and the first
    /// index they write (None for a write of the hard state alone). No entry at or after
    /// the lowest such index may leave the cache, as RocksDB does not hold it yet.
    unwritten: std::collections::VecDeque<(u64, Option<u64>)>,
    next_seq: u64,
}

/// Bounds of [`EntryCache`]: enough for the entries between persisting and applying
/// under load, and for followers a little behind.
const CACHE_MAX_ENTRIES: usize = 16 * 1024;
const CACHE_MAX_BYTES: u64 = 32 << 20;

impl EntryCache {
    fn first(&self) -> Option<u64> {
        self.entries.front().map(|e| e.index)
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Records `entries`, just appended to the log (replacing any suffix from their first).
    fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first().map(|e| e.index) else {
            return;
        };
        match (self.first(), self.entries.back().map(|e| e.index)) {
            (Some(f), Some(l)) if first > f && first <= l + 1 => {
                while self.entries.back().is_some_and(|e| e.index >= first) {
                    if let Some(e) = self.entries.pop_back() {
                        self.bytes -= u64::from(e.compute_size());
                    }
                }
            }
            _ => self.clear(),
        }
        for e in entries {
            self.bytes += u64::from(e.compute_size());
            self.entries.push_back(e.clone());
        }
        self.trim();
    }

    /// Records `entries` as staged and not yet written; returns the write's sequence number.
    fn stage(&mut self, entries: &[Entry]) -> u64 {
        self.next_seq += 1;
        self.unwritten
            .push_back((self.next_seq, entries.first().map(|e| e.index)));
        self.append(entries);
        self.next_seq
    }

    /// The staged writes up to sequence number `seq` are durable.
    fn written(&mut self, seq: u64) {
        while self.unwritten.front().is_some_and(|&(s, _)| s <= seq) {
            self.unwritten.pop_front();
        }
        self.trim();
    }

    /// Drops the oldest entries beyond the bounds, keeping every entry not yet written.
    fn trim(&mut self) {
        let keep_from = self.unwritten.iter().filter_map(|&(_, f)| f).min();
        while self.entries.len() > CACHE_MAX_ENTRIES || self.bytes > CACHE_MAX_BYTES {
            if self
                .first()
                .is_none_or(|f| keep_from.is_some_and(|k| f >= k))
            {
                break;
            }
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= u64::from(e.compute_size());
            }
        }
    }

    /// Forgets entries before `index` (compacted away).
    fn compact(&mut self, index: u64) {
        while self.first().is_some_and(|f| f < index) {
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= u64::from(e.compute_size());
            }
        }
    }

    /// Entries `low..high`, if the cache holds all of them.
    fn get(&self, low: u64, high: u64) -> Option<impl Iterator<Item = &Entry>> {
        let first = self.first()?;
        let last = self.entries.back()?.index;
        if low < first || high > last + 1 {
            return None;
        }
        let from = (low - first) as usize;
        Some(self.entries.range(from..from + (high - low) as usize))
    }
}

// ---------------------------------------------------------------------------------------------
// In memory.

/// An in-memory [`LogStore`]: the reference the conformance suite holds [`RocksLogStore`] to,
/// and a fast store for tests that do not restart members.
#[derive(Clone, Default)]
pub struct MemLogStore {
    inner: Arc<Mutex<MemInner>>,
}

#[derive(Default)]
struct MemInner {
    meta: Meta,
    entries: Vec<Entry>,
}

impl MemLogStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for MemLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.inner.lock();
        f.debug_struct("MemLogStore")
            .field("first_index", &g.meta.first_index())
            .field("last_index", &g.meta.last_index)
            .finish()
    }
}

impl Storage for MemLogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(self.inner.lock().meta.raft_state())
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let g = self.inner.lock();
        check_range(&g.meta, low, high)?;
        let off = g.meta.first_index();
        let mut v = g.entries[(low - off) as usize..(high - off) as usize].to_vec();
        limit(&mut v, max_size.into());
        Ok(v)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let g = self.inner.lock();
        if idx == g.meta.truncated_index {
            return Ok(g.meta.truncated_term);
        }
        check_range(&g.meta, idx, idx + 1)?;
        Ok(g.entries[(idx - g.meta.first_index()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.inner.lock().meta.first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.inner.lock().meta.last_index)
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        snapshot_for(&mut self.inner.lock().meta, request_index, to)
    }
}

fn snapshot_for(meta: &mut Meta, request_index: u64, to: u64) -> raft::Result<Snapshot> {
    match &meta.snapshot {
        // A member refuses a snapshot whose configuration does not include it; one added
        // after the newest snapshot needs a newer one.
        // `to == 0` (raft's invalid id) asks for the snapshot regardless of its reader.
        Some(s)
            if s.get_metadata().index >= request_index
                && (to == 0 || in_conf(s.get_metadata(), to)) =>
        {
            Ok(s.clone())
        }
        Some(_) => {
            meta.snapshot_wanted = true;
            Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ))
        }
        // The node takes snapshots by threshold; until then, raft retries later.
        None => {
            meta.snapshot_wanted = true;
            Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ))
        }
    }
}

fn in_conf(md: &SnapshotMetadata, id: u64) -> bool {
    let cs = md.get_conf_state();
    cs.voters.contains(&id)
        || cs.learners.contains(&id)
        || cs.voters_outgoing.contains(&id)
        || cs.learners_next.contains(&id)
}

impl LogStore for MemLogStore {
    fn append(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        _sync: bool,
    ) -> Result<(), StorageError> {
        let mut g = self.inner.lock();
        g.meta.check_append(entries)?;
        if let Some(first) = entries.first() {
            let keep = (first.index - g.meta.first_index()) as usize;
            g.entries.truncate(keep);
            g.entries.extend_from_slice(entries);
            g.meta.last_index = first.index + entries.len() as u64 - 1;
        }
        if let Some(hs) = hard_state {
            g.meta.hard_state = hs.clone();
        }
        Ok(())
    }

    fn apply_snapshot(&self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let mut g = self.inner.lock();
        let md = snapshot.get_metadata();
        if md.index < g.meta.truncated_index {
            return Err(StorageError::SnapshotOutOfDate {
                index: md.index,
                first: g.meta.first_index(),
            });
        }
        g.entries.clear();
        g.meta.truncated_index = md.index;
        g.meta.truncated_term = md.term;
        g.meta.last_index = md.index;
        g.meta.conf_state = md.get_conf_state().clone();
        g.meta.hard_state.commit = md.index;
        g.meta.hard_state.term = g.meta.hard_state.term.max(md.term);
        g.meta.snapshot = Some(snapshot.clone());
        Ok(())
    }

    fn save_snapshot(&self, meta: &SnapshotMetadata, data: Bytes) -> Result<(), StorageError> {
        let mut g = self.inner.lock();
        if meta.index > g.meta.last_index {
            return Err(StorageError::Unavailable {
                index: meta.index,
                last: g.meta.last_index,
            });
        }
        let mut s = Snapshot::default();
        s.set_metadata(meta.clone());
        s.data = data;
        g.meta.conf_state = meta.get_conf_state().clone();
        g.meta.snapshot = Some(s);
        Ok(())
    }

    fn compact(&self, index: u64) -> Result<(), StorageError> {
        let mut g = self.inner.lock();
        if index <= g.meta.first_index() {
            return Ok(());
        }
        if index > g.meta.last_index + 1 {
            return Err(StorageError::Unavailable {
                index,
                last: g.meta.last_index,
            });
        }
        let n = (index - g.meta.first_index()) as usize;
        let term = g.entries[n - 1].term;
        g.entries.drain(..n);
        g.meta.truncated_index = index - 1;
        g.meta.truncated_term = term;
        Ok(())
    }

    fn hard_state(&self) -> HardState {
        self.inner.lock().meta.hard_state.clone()
    }

    fn latest_snapshot(&self) -> Option<Snapshot> {
        self.inner.lock().meta.snapshot.clone()
    }

    fn truncated(&self) -> (u64, u64) {
        let g = self.inner.lock();
        (g.meta.truncated_index, g.meta.truncated_term)
    }

    fn take_snapshot_request(&self) -> bool {
        std::mem::take(&mut self.inner.lock().meta.snapshot_wanted)
    }
}

// ---------------------------------------------------------------------------------------------
// Data directory.

/// An open, locked, version-checked data directory.
///
/// Layout: a version file naming the format, a lock file held (with an OS file lock) while the
/// directory is open, and `db/`, the RocksDB database holding the raft log and state.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    // Holding the open file holds the lock; it is released when the handle is dropped.
    _lock: File,
    fresh: bool,
}

impl DataDir {
    /// Opens (creating if needed) the data directory at `path`, takes its lock and checks
    /// its format version.
    ///
    /// # Errors
    ///
    /// [`StorageError::Locked`] if another handle holds it, [`StorageError::Foreign`] if it
    /// holds other files, [`StorageError::NewerVersion`] / [`StorageError::Corrupt`] for a bad
    /// version file, and I/O errors.
    pub fn open(path: &Path) -> Result<DataDir, StorageError> {
        let io = |op, p: &Path| {
            let p = p.to_path_buf();
            move |source| StorageError::Io {
                op,
                path: p,
                source,
            }
        };
        std::fs::create_dir_all(path).map_err(io("create directory", path))?;
        let lock_path = path.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StorageError::Locked {
                    path: path.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", &lock_path)(e)),
        }
        let version_path = path.join(VERSION_FILE);
        let fresh = match std::fs::read(&version_path) {
            Ok(bytes) => {
                check_version(path, &bytes)?;
                false
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let others: Vec<String> = std::fs::read_dir(path)
                    .map_err(io("read directory", path))?
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != LOCK_FILE)
                    .collect();
                if !others.is_empty() {
                    return Err(StorageError::Foreign {
                        path: path.to_path_buf(),
                        detail: format!(
                            "no {VERSION_FILE}, but it holds {} other entries (e.g. {:?})",
                            others.len(),
                            others[0]
                        ),
                    });
                }
                let tmp = path.join(format!("{VERSION_FILE}.tmp"));
                let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
                f.write_all(format!("{MAGIC}\nformat {FORMAT_VERSION}\n").as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(io("write", &tmp))?;
                std::fs::rename(&tmp, &version_path).map_err(io("rename", &tmp))?;
                File::open(path)
                    .and_then(|d| d.sync_all())
                    .map_err(io("sync directory", path))?;
                true
            }
            Err(e) => return Err(io("read", &version_path)(e)),
        };
        Ok(DataDir {
            path: path.to_path_buf(),
            _lock: lock,
            fresh,
        })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this open created the directory's format (nothing was stored before).
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }
}

fn check_version(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let corrupt = |detail: String| StorageError::Corrupt {
        what: path.join(VERSION_FILE).display().to_string(),
        detail,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| corrupt(format!("not UTF-8: {e}")))?;
    let mut lines = text.lines();
    if lines.next() != Some(MAGIC) {
        return Err(StorageError::Foreign {
            path: path.to_path_buf(),
            detail: format!("{VERSION_FILE} does not start with {MAGIC:?}"),
        });
    }
    let line = lines.next().unwrap_or_default();
    let found: u32 = line
        .strip_prefix("format ")
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| corrupt(format!("expected \"format N\", found {line:?}")))?;
    if found == 0 {
        return Err(corrupt("format version 0".into()));
    }
    if found > FORMAT_VERSION {
        return Err(StorageError::NewerVersion {
            path: path.to_path_buf(),
            found,
            supported: FORMAT_VERSION,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// RocksDB.

/// Memtable size (RocksDB's default), and so about the size of each WAL file. Smaller
/// memtables let recycling start sooner but flush more often: 16 MB gave 0.95-1.09x the
/// writes of 64 MB with 1.5-2.7x the p99 (docs/perf-log/2026-12-07-recycled-wal-ab.md).
const WRITE_BUFFER_BYTES: usize = 64 << 20;
/// Obsolete WAL files kept for reuse (RocksDB's `recycle_log_file_num`).
const WAL_FILES_RECYCLED: usize = 2;
const KEY_HARD_STATE: &[u8] = b"m/hard_state";
const KEY_CONF_STATE: &[u8] = b"m/conf_state";
const KEY_TRUNCATED: &[u8] = b"m/truncated";
const KEY_SNAPSHOT: &[u8] = b"m/snapshot";
const ENTRY_PREFIX: u8 = b'e';

/// The entry stored under [`entry_key`]`(index)`, checked to be that entry.
fn decode_entry(index: u64, v: &[u8]) -> Result<Entry, StorageError> {
    let what = || format!("log entry {index}");
    let e: Entry = decode(&what, v)?;
    if e.index != index {
        return Err(StorageError::Corrupt {
            what: what(),
            detail: format!("holds index {}", e.index),
        });
    }
    Ok(e)
}

fn entry_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ENTRY_PREFIX;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

/// Frames `payload` with its CRC32 (little endian, first 4 bytes).
fn seal(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 4);
    v.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    v.extend_from_slice(payload);
    v
}

/// Checks the CRC framing of a stored value and returns its payload.
fn unseal<'a>(what: &dyn Fn() -> String, v: &'a [u8]) -> Result<&'a [u8], StorageError> {
    if v.len() < 4 {
        return Err(StorageError::Corrupt {
            what: what(),
            detail: format!("{} bytes", v.len()),
        });
    }
    let (crc, payload) = v.split_at(4);
    let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32fast::hash(payload) != want {
        return Err(StorageError::Corrupt {
            what: what(),
            detail: "checksum mismatch".into(),
        });
    }
    Ok(payload)
}

fn decode<M: protobuf::Message>(what: &dyn Fn() -> String, v: &[u8]) -> Result<M, StorageError> {
    let payload = unseal(what, v)?;
    M::parse_from_bytes(payload).map_err(|e| StorageError::Corrupt {
        what: what(),
        detail: e.to_string(),
    })
}

fn encode<M: protobuf::Message>(m: &M) -> Vec<u8> {
    // Encoding into a Vec cannot fail for raft's messages (no required fields, no I/O).
    seal(&m.write_to_bytes().unwrap_or_default())
}

/// A write accepted by [`RocksLogStore::stage`], visible to raft and not yet durable.
#[derive(Debug)]
pub struct Staged {
    seq: u64,
    entries: Vec<Entry>,
    /// Entries `from..to` replaced by this write (a new leader rewrote the log's tail).
    truncate: Option<(u64, u64)>,
    hard_state: Option<HardState>,
}

/// The RocksDB-backed [`LogStore`].
#[derive(Clone)]
pub struct RocksLogStore {
    db: Arc<rocksdb::DB>,
    meta: Arc<Mutex<Meta>>,
    /// Locked after `meta` when both are needed.
    cache: Arc<Mutex<EntryCache>>,
}

impl std::fmt::Debug for RocksLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.meta.lock();
        f.debug_struct("RocksLogStore")
            .field("path", &self.db.path())
            .field("first_index", &g.first_index())
            .field("last_index", &g.last_index)
            .finish()
    }
}

impl RocksLogStore {
    /// Opens the log in `dir` (the `db/` subdirectory), creating it if the directory is fresh,
    /// and loads and verifies its state records.
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] for a record failing its checksum or decoding, or a missing
    /// database in a directory that should have one; RocksDB errors.
    pub fn open(dir: &DataDir) -> Result<RocksLogStore, StorageError> {
        Self::open_with(dir, WRITE_BUFFER_BYTES)
    }

    /// [`RocksLogStore::open`] with a given memtable size, which is also the size of a WAL
    /// file: tests make the WAL rotate (and be recycled) after a few hundred kilobytes.
    pub(crate) fn open_with(
        dir: &DataDir,
        write_buffer_bytes: usize,
    ) -> Result<RocksLogStore, StorageError> {
        let db_path = dir.path().join("db");
        let mut opts = rocksdb::Options::default();
        // Only a directory whose format this open created may get a new database: recreating
        // a lost one would make a member forget its votes and log.
        opts.create_if_missing(dir.is_fresh());
        opts.set_paranoid_checks(true);
        // Every acknowledged write waits for an fdatasync of the WAL. Appending to a fresh
        // WAL file grows it, so each fdatasync also commits the inode's new size through
        // ext4's journal; a recycled file is overwritten in place and the fdatasync flushes
        // data only (measured: 0.20-0.21 against 0.30-0.34 ms per fdatasync, 1.15-1.26x the
        // writes of one member; docs/perf-log/2026-12-07-recycled-wal-ab.md). A process's first WAL file is still fresh:
        // RocksDB recycles only files obsolete in this process, so recycling starts once
        // the first memtable is flushed. Two files, so that one is free even while the
        // previous memtable's flush is still running.
        opts.set_recycle_log_file_num(WAL_FILES_RECYCLED);
        opts.set_write_buffer_size(write_buffer_bytes);
        if !dir.is_fresh() && !db_path.join("CURRENT").exists() {
            return Err(StorageError::Corrupt {
                what: db_path.display().to_string(),
                detail: "the RocksDB database is missing".into(),
            });
        }
        let db = rocksdb::DB::open(&opts, &db_path)?;
        let mut meta = Meta::default();
        let what = |k: &'static [u8]| move || String::from_utf8_lossy(k).into_owned();
        if let Some(v) = db.get(KEY_HARD_STATE)? {
            meta.hard_state = decode(&what(KEY_HARD_STATE), &v)?;
        }
        if let Some(v) = db.get(KEY_CONF_STATE)? {
            meta.conf_state = decode(&what(KEY_CONF_STATE), &v)?;
        }
        if let Some(v) = db.get(KEY_TRUNCATED)? {
            let p = unseal(&what(KEY_TRUNCATED), &v)?;
            if p.len() != 16 {
                return Err(StorageError::Corrupt {
                    what: what(KEY_TRUNCATED)(),
                    detail: format!("{} bytes, expected 16", p.len()),
                });
            }
            meta.truncated_index = u64::from_be_bytes(p[..8].try_into().unwrap_or_default());
            meta.truncated_term = u64::from_be_bytes(p[8..].try_into().unwrap_or_default());
        }
        if let Some(v) = db.get(KEY_SNAPSHOT)? {
            meta.snapshot = Some(decode(&what(KEY_SNAPSHOT), &v)?);
        }
        // The last entry's key gives the last index. The entry itself goes into the entry
        // cache: raft reads its term for every vote it is asked for (`is_up_to_date`), and
        // a read through RocksDB of a key an SST file does not hold can read that file's
        // block of the snapshot (the snapshot is 291 MB at a million keys; the log has no
        // bloom filter): a restarted 1M-key cluster spent minutes without a leader on such
        // reads.
        let mut last_entry = None;
        {
            let mut it = db.raw_iterator();
            it.seek_for_prev(entry_key(u64::MAX));
            meta.last_index = match (it.key(), it.value()) {
                (Some(k), Some(v)) if k.len() == 9 && k[0] == ENTRY_PREFIX => {
                    let index = u64::from_be_bytes(k[1..].try_into().unwrap_or_default());
                    last_entry = Some(decode_entry(index, v)?);
                    index
                }
                _ => meta.truncated_index,
            };
            it.status()?;
        }
        if meta.last_index < meta.truncated_index {
            return Err(StorageError::Corrupt {
                what: "log".into(),
                detail: format!(
                    "last entry {} is before the truncated index {}",
                    meta.last_index, meta.truncated_index
                ),
            });
        }
        let mut cache = EntryCache::default();
        if let Some(e) = last_entry.filter(|e| e.index > meta.truncated_index) {
            cache.append(&[e]);
        }
        Ok(RocksLogStore {
            db: Arc::new(db),
            meta: Arc::new(Mutex::new(meta)),
            cache: Arc::new(Mutex::new(cache)),
        })
    }

    /// The first half of [`LogStore::append`]: checks `entries`, makes them (and
    /// `hard_state`) visible to raft's reads at once, and returns the write to hand to
    /// [`RocksLogStore::persist`]. Raft's asynchronous ready needs this split: entries must be
    /// readable before they are durable, so the next `Ready` can be built while the fsync of
    /// the last one runs.
    ///
    /// Staged writes must be persisted in the order they were staged. Until a staged write
    /// is persisted, its entries stay in memory; if persisting fails, the store must not be
    /// used further (the member stops, and reopening reads what is on disk).
    ///
    /// # Errors
    ///
    /// [`StorageError::BadAppend`] if the entries would leave a gap or rewrite compacted
    /// entries; nothing is staged then.
    pub fn stage(
        &self,
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
    ) -> Result<Staged, StorageError> {
        let mut m = self.meta.lock();
        m.check_append(&entries)?;
        let mut truncate = None;
        if let Some(first) = entries.first() {
            let new_last = first.index + entries.len() as u64 - 1;
            if new_last < m.last_index {
                truncate = Some((new_last + 1, m.last_index + 1));
            }
            m.last_index = new_last;
        }
        if let Some(hs) = &hard_state {
            m.hard_state = hs.clone();
        }
        let seq = self.cache.lock().stage(&entries);
        Ok(Staged {
            seq,
            entries,
            truncate,
            hard_state,
        })
    }

    /// Writes staged writes, oldest first, in one atomic RocksDB write; with `sync`, returns
    /// only once it is durable.
    ///
    /// # Errors
    ///
    /// RocksDB errors; then the store must not be used further.
    pub fn persist<'a>(
        &self,
        staged: impl IntoIterator<Item = &'a Staged>,
        sync: bool,
    ) -> Result<(), StorageError> {
        let mut batch = rocksdb::WriteBatch::default();
        let mut last = None;
        for s in staged {
            last = Some(s.seq);
            for e in &s.entries {
                batch.put(entry_key(e.index), encode(e));
            }
            if let Some((from, to)) = s.truncate {
                batch.delete_range(entry_key(from), entry_key(to));
            }
            if let Some(hs) = &s.hard_state {
                batch.put(KEY_HARD_STATE, encode(hs));
            }
        }
        // A ready with only messages to hold back stages an empty write: nothing to store.
        if !batch.is_empty() {
            self.write(batch, sync)?;
        }
        if let Some(seq) = last {
            self.cache.lock().written(seq);
        }
        Ok(())
    }

    fn read_entry(&self, index: u64) -> Result<Entry, StorageError> {
        let v = self
            .db
            .get(entry_key(index))?
            .ok_or_else(|| StorageError::Corrupt {
                what: format!("log entry {index}"),
                detail: "missing".into(),
            })?;
        decode_entry(index, &v)
    }

    fn write(&self, batch: rocksdb::WriteBatch, sync: bool) -> Result<(), StorageError> {
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }
}

fn truncated_value(index: u64, term: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(16);
    p.extend_from_slice(&index.to_be_bytes());
    p.extend_from_slice(&term.to_be_bytes());
    seal(&p)
}

impl Storage for RocksLogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(self.meta.lock().raft_state())
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into();
        check_range(&self.meta.lock(), low, high)?;
        let mut out = Vec::with_capacity((high - low).min(1024) as usize);
        let mut size = 0u64;
        // Whether `e` still fits under `max_size` (the first entry always does, as raft
        // requires); adds its size.
        let mut fits = |e: &Entry, taken: usize| {
            size += u64::from(e.compute_size());
            taken == 0 || max_size.is_none_or(|max| size <= max)
        };
        if let Some(cached) = self.cache.lock().get(low, high) {
            for e in cached {
                if !fits(e, out.len()) {
                    break;
                }
                out.push(e.clone());
            }
            return Ok(out);
        }
        let mut it = self.db.raw_iterator();
        it.seek(entry_key(low));
        let mut want = low;
        while want < high {
            let what = || format!("log entry {want}");
            let e: Entry = match (it.key(), it.value()) {
                (Some(k), Some(v)) if k == entry_key(want) => decode(&what, v)?,
                _ => {
                    it.status().map_err(StorageError::from)?;
                    return Err(StorageError::Corrupt {
                        what: what(),
                        detail: "missing".into(),
                    }
                    .into());
                }
            };
            if !fits(&e, out.len()) {
                break;
            }
            out.push(e);
            want += 1;
            it.next();
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        {
            let m = self.meta.lock();
            if idx == m.truncated_index {
                return Ok(m.truncated_term);
            }
            check_range(&m, idx, idx + 1)?;
        }
        if let Some(term) = self
            .cache
            .lock()
            .get(idx, idx + 1)
            .and_then(|mut e| e.next().map(|e| e.term))
        {
            return Ok(term);
        }
        Ok(self.read_entry(idx)?.term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.meta.lock().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.meta.lock().last_index)
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        snapshot_for(&mut self.meta.lock(), request_index, to)
    }
}

impl LogStore for RocksLogStore {
    fn append(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        sync: bool,
    ) -> Result<(), StorageError> {
        let staged = self.stage(entries.to_vec(), hard_state.cloned())?;
        self.persist([&staged], sync)
    }

    fn apply_snapshot(&self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let mut m = self.meta.lock();
        let md = snapshot.get_metadata();
        if md.index < m.truncated_index {
            return Err(StorageError::SnapshotOutOfDate {
                index: md.index,
                first: m.first_index(),
            });
        }
        let mut hs = m.hard_state.clone();
        hs.commit = md.index;
        hs.term = hs.term.max(md.term);
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_range(entry_key(0), entry_key(u64::MAX));
        batch.delete(entry_key(u64::MAX));
        batch.put(KEY_TRUNCATED, truncated_value(md.index, md.term));
        batch.put(KEY_CONF_STATE, encode(md.get_conf_state()));
        batch.put(KEY_HARD_STATE, encode(&hs));
        batch.put(KEY_SNAPSHOT, encode(snapshot));
        self.write(batch, true)?;
        self.cache.lock().clear();
        m.truncated_index = md.index;
        m.truncated_term = md.term;
        m.last_index = md.index;
        m.conf_state = md.get_conf_state().clone();
        m.hard_state = hs;
        m.snapshot = Some(snapshot.clone());
        Ok(())
    }

    fn save_snapshot(&self, meta: &SnapshotMetadata, data: Bytes) -> Result<(), StorageError> {
        let mut m = self.meta.lock();
        if meta.index > m.last_index {
            return Err(StorageError::Unavailable {
                index: meta.index,
                last: m.last_index,
            });
        }
        let mut s = Snapshot::default();
        s.set_metadata(meta.clone());
        s.data = data;
        let mut batch = rocksdb::WriteBatch::default();
        batch.put(KEY_SNAPSHOT, encode(&s));
        batch.put(KEY_CONF_STATE, encode(meta.get_conf_state()));
        self.write(batch, true)?;
        m.conf_state = meta.get_conf_state().clone();
        m.snapshot = Some(s);
        Ok(())
    }

    fn compact(&self, index: u64) -> Result<(), StorageError> {
        let mut m = self.meta.lock();
        if index <= m.first_index() {
            return Ok(());
        }
        if index > m.last_index + 1 {
            return Err(StorageError::Unavailable {
                index,
                last: m.last_index,
            });
        }
        let term = {
            let what = || format!("log entry {}", index - 1);
            let v = self
                .db
                .get(entry_key(index - 1))?
                .ok_or_else(|| StorageError::Corrupt {
                    what: what(),
                    detail: "missing".into(),
                })?;
            decode::<Entry>(&what, &v)?.term
        };
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_range(entry_key(0), entry_key(index));
        batch.put(KEY_TRUNCATED, truncated_value(index - 1, term));
        self.write(batch, true)?;
        self.cache.lock().compact(index);
        m.truncated_index = index - 1;
        m.truncated_term = term;
        Ok(())
    }

    fn hard_state(&self) -> HardState {
        self.meta.lock().hard_state.clone()
    }

    fn latest_snapshot(&self) -> Option<Snapshot> {
        self.meta.lock().snapshot.clone()
    }

    fn truncated(&self) -> (u64, u64) {
        let m = self.meta.lock();
        (m.truncated_index, m.truncated_term)
    }

    fn take_snapshot_request(&self) -> bool {
        std::mem::take(&mut self.meta.lock().snapshot_wanted)
    }
}

#[cfg(test)]
mod tests;
