//! raft-store's write-ahead log: the raft entries and hard state, in append-only segment
//! files of CRC-framed records.
//!
//! Why not RocksDB, which keeps the snapshot and conf state: RocksDB has one WAL and syncs it
//! one flush at a time (a second sync waits for the first, a write group has one syncing
//! leader). The disks of the VMs this runs on serve several overlapping `fdatasync`s far
//! faster than one after another (docs/benchmarks.md), and an fsync covers every write to its
//! file that finished before it started. So the log is a plain file the persistence thread
//! appends to, and several threads flush it at once, each making durable what was written
//! before its flush began.
//!
//! Layout: `wal/<id>.wal`, ids counting up from 1 in hexadecimal. A segment starts with a
//! header (magic, its id, the valid length of the segment before it, a CRC) and a
//! checkpoint (the hard state and the truncated state), then records:
//! `len: u32 | crc32(kind, payload): u32 | kind: u8 | payload`, little endian. Kinds: an
//! entry (index, term, then the entry's protobuf), a hard state, a compaction (entries up to
//! an index are gone) and a reset (the log is empty after a snapshot's index).
//!
//! Each open starts a new segment, so a torn write at the end of the last one is never
//! appended to: the new header records where the valid records of the one before it end,
//! and everything after that point is ignored from then on. A damaged record before that
//! point, in any segment, is corruption and refuses the open. Segments whose entries are all
//! compacted are deleted, oldest first, once the record that compacted them is durable.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState};

use crate::error::StorageError;

/// The log's directory inside the data directory.
pub(crate) const WAL_DIR: &str = "wal";
const MAGIC: &[u8; 8] = b"FLTWAL01";
const HEADER_LEN: usize = 8 + 8 + 8 + 4;
/// Bytes before a record's payload: length, CRC, kind.
const RECORD_HEAD: usize = 9;
/// A new segment is started once the current one holds this many bytes.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Larger lengths are damage, not records (raft entries are far smaller).
const MAX_RECORD: usize = 1 << 30;

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_COMPACT: u8 = 3;
const KIND_RESET: u8 = 4;

#[derive(Debug)]
struct Segment {
    file: Arc<File>,
    path: PathBuf,
    /// The largest entry index written to it (0 if none).
    max_index: u64,
}

/// Where an entry's record is, and its term (so `term()` needs no read).
#[derive(Debug, Clone, Copy)]
struct Loc {
    seg: u64,
    off: u64,
    len: u32,
    term: u64,
}

/// The open log. Not synchronised: the store wraps it in a mutex.
#[derive(Debug)]
pub(crate) struct Wal {
    dir: PathBuf,
    segments: BTreeMap<u64, Segment>,
    current: u64,
    /// Where the next record of the current segment goes.
    offset: u64,
    /// Entries `first_loc..first_loc + locs.len()`.
    locs: VecDeque<Loc>,
    first_loc: u64,
    hard_state: HardState,
    truncated: (u64, u64),
    buf: Vec<u8>,
    segment_bytes: u64,
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.to_path_buf();
    move |source| StorageError::Io { op, path, source }
}

fn corrupt(path: &Path, detail: String) -> StorageError {
    StorageError::Corrupt {
        what: path.display().to_string(),
        detail,
    }
}

fn segment_name(id: u64) -> String {
    format!("{id:016x}.wal")
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync directory", dir))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Appends a record to `buf`: `payload` writes the payload's bytes.
fn record(buf: &mut Vec<u8>, kind: u8, payload: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; RECORD_HEAD]);
    buf[start + 8] = kind;
    payload(buf);
    let len = (buf.len() - start - RECORD_HEAD) as u32;
    let crc = crc32fast::hash(&buf[start + 8..]);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn pair(buf: &mut Vec<u8>, a: u64, b: u64) {
    buf.extend_from_slice(&a.to_le_bytes());
    buf.extend_from_slice(&b.to_le_bytes());
}

fn proto(buf: &mut Vec<u8>, m: &impl protobuf::Message) {
    // Encoding raft's messages into a Vec cannot fail (no required fields, no I/O).
    let _ = m.write_to_vec(buf);
}

/// One record read back: its kind, payload and where it started.
struct Parsed<'a> {
    kind: u8,
    payload: &'a [u8],
    at: usize,
}

/// The records of `bytes[from..limit]`, stopping at the first one that is cut short or
/// fails its CRC; returns them and where the valid ones end.
fn parse(bytes: &[u8], from: usize, limit: usize) -> (Vec<Parsed<'_>>, usize) {
    let mut out = Vec::new();
    let mut p = from;
    while p + RECORD_HEAD <= limit {
        let len = u32_at(bytes, p) as usize;
        if len > MAX_RECORD || p + RECORD_HEAD + len > limit {
            break;
        }
        let body = &bytes[p + 8..p + RECORD_HEAD + len];
        if crc32fast::hash(body) != u32_at(bytes, p + 4) {
            break;
        }
        out.push(Parsed {
            kind: body[0],
            payload: &body[1..],
            at: p,
        });
        p += RECORD_HEAD + len;
    }
    (out, p)
}

/// The state replayed from the records, as they are applied in order.
#[derive(Default)]
struct Replay {
    locs: VecDeque<Loc>,
    first_loc: u64,
    hard_state: HardState,
    truncated: (u64, u64),
}

impl Replay {
    fn last(&self) -> u64 {
        if self.locs.is_empty() {
            self.truncated.0
        } else {
            self.first_loc + self.locs.len() as u64 - 1
        }
    }

    /// Drops entries up to `index`.
    fn compact(&mut self, index: u64, term: u64) {
        while !self.locs.is_empty() && self.first_loc <= index {
            self.locs.pop_front();
            self.first_loc += 1;
        }
        if self.locs.is_empty() {
            self.first_loc = index.max(self.truncated.0) + 1;
        }
        if index > self.truncated.0 {
            self.truncated = (index, term);
        }
    }

    fn reset(&mut self, index: u64, term: u64) {
        self.locs.clear();
        self.first_loc = index + 1;
        self.truncated = (index, term);
    }

    /// An entry `index` was written at `loc`, replacing any entries from `index` on.
    /// Err: the detail of why it cannot be (a gap, or an entry the log had compacted).
    fn entry(&mut self, index: u64, loc: Loc) -> Result<(), String> {
        if index <= self.truncated.0 {
            return Err(format!(
                "entry {index} is at or below the truncated index {}",
                self.truncated.0
            ));
        }
        if self.locs.is_empty() {
            // After the oldest segments were deleted the first entries seen may start
            // past the checkpoint's truncated index; a later compaction record covers the
            // gap, which `check` verifies at the end.
            self.first_loc = index;
        } else if index > self.last() + 1 {
            return Err(format!("entry {index} follows entry {}", self.last()));
        } else if index < self.first_loc {
            self.locs.clear();
            self.first_loc = index;
        } else {
            self.locs.truncate((index - self.first_loc) as usize);
        }
        self.locs.push_back(loc);
        Ok(())
    }

    fn check(&self) -> Result<(), String> {
        if !self.locs.is_empty() && self.first_loc != self.truncated.0 + 1 {
            return Err(format!(
                "entries {}..{} are missing",
                self.truncated.0 + 1,
                self.first_loc
            ));
        }
        Ok(())
    }
}

impl Wal {
    /// Creates an empty log in `data_dir` (whose `wal/` must not exist yet).
    pub(crate) fn create(data_dir: &Path) -> Result<Wal, StorageError> {
        Self::create_with(data_dir, HardState::default(), (0, 0))
    }

    /// Creates a log in `data_dir` that starts with `hard_state` and the truncated state.
    pub(crate) fn create_with(
        data_dir: &Path,
        hard_state: HardState,
        truncated: (u64, u64),
    ) -> Result<Wal, StorageError> {
        let dir = data_dir.join(WAL_DIR);
        std::fs::create_dir(&dir).map_err(io("create directory", &dir))?;
        sync_dir(data_dir)?;
        let mut wal = Wal {
            dir,
            segments: BTreeMap::new(),
            current: 0,
            offset: 0,
            locs: VecDeque::new(),
            first_loc: truncated.0 + 1,
            hard_state,
            truncated,
            buf: Vec::new(),
            segment_bytes: SEGMENT_BYTES,
        };
        wal.start_segment(1, 0)?;
        Ok(wal)
    }

    /// Opens the log in `data_dir`: replays every segment and starts a new one.
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] for a missing log or segment, a damaged header, or a
    /// damaged record before the end its successor's header gives; I/O errors.
    pub(crate) fn open(data_dir: &Path) -> Result<Wal, StorageError> {
        let dir = data_dir.join(WAL_DIR);
        let mut ids = Vec::new();
        let listing = std::fs::read_dir(&dir).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                corrupt(&dir, "the write-ahead log is missing".into())
            } else {
                io("read directory", &dir)(e)
            }
        })?;
        for e in listing {
            let e = e.map_err(io("read directory", &dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name
                .strip_suffix(".wal")
                .filter(|h| h.len() == 16)
                .and_then(|h| u64::from_str_radix(h, 16).ok());
            match id {
                Some(id) => ids.push(id),
                None => {
                    return Err(corrupt(
                        &dir.join(&name),
                        "not a segment of this log".into(),
                    ));
                }
            }
        }
        ids.sort_unstable();
        let Some(&last_id) = ids.last() else {
            return Err(corrupt(&dir, "the write-ahead log has no segments".into()));
        };
        if let Some(w) = ids.windows(2).find(|w| w[1] != w[0] + 1) {
            return Err(corrupt(
                &dir.join(segment_name(w[0] + 1)),
                "segment missing".into(),
            ));
        }
        let path_of = |id: u64| dir.join(segment_name(id));
        // The first bytes of a segment, for its header.
        let head = |id: u64| -> Result<Vec<u8>, StorageError> {
            let path = path_of(id);
            let mut buf = Vec::with_capacity(HEADER_LEN);
            File::open(&path)
                .and_then(|f| {
                    std::io::Read::read_to_end(
                        &mut std::io::Read::take(f, HEADER_LEN as u64),
                        &mut buf,
                    )
                })
                .map_err(io("read", &path))?;
            Ok(buf)
        };
        // A crash while a segment was being created can leave a last segment without a
        // whole header (cut short, or the file's length but not its bytes on disk); nothing
        // in it was acknowledged, since the header is flushed before any record is written.
        // A full header that fails its checksum is damage, refused below.
        if ids.len() > 1 {
            let bytes = head(last_id)?;
            if bytes.len() < HEADER_LEN || bytes.iter().all(|&b| b == 0) {
                let path = path_of(last_id);
                std::fs::remove_file(&path).map_err(io("remove", &path))?;
                sync_dir(&dir)?;
                ids.pop();
            }
        }
        let mut replay = Replay::default();
        let mut segments = BTreeMap::new();
        let mut valid_len = 0u64;
        // One segment in memory at a time.
        for k in 0..ids.len() {
            let (id, path) = (&ids[k], path_of(ids[k]));
            let path = &path;
            let bytes = &std::fs::read(path).map_err(io("read", path))?;
            header(bytes, *id).map_err(|d| corrupt(path, d))?;
            let limit = match ids.get(k + 1) {
                Some(&next_id) => {
                    let prev_len = header(&head(next_id)?, next_id)
                        .map_err(|d| corrupt(&path_of(next_id), d))?;
                    if prev_len as usize > bytes.len() || (prev_len as usize) < HEADER_LEN {
                        return Err(corrupt(
                            path,
                            format!(
                                "{} bytes, but the next segment's header says {prev_len} are valid",
                                bytes.len()
                            ),
                        ));
                    }
                    Some(prev_len as usize)
                }
                None => None,
            };
            let (records, end) = parse(bytes, HEADER_LEN, limit.unwrap_or(bytes.len()));
            if let Some(limit) = limit
                && end != limit
            {
                return Err(corrupt(
                    path,
                    format!("damaged record at byte {end} (valid records end at {limit})"),
                ));
            }
            let mut max_index = 0;
            for r in records {
                let bad = |d: String| corrupt(path, format!("record at byte {}: {d}", r.at));
                match r.kind {
                    KIND_ENTRY => {
                        if r.payload.len() < 16 {
                            return Err(bad("entry record too short".into()));
                        }
                        let (index, term) = (u64_at(r.payload, 0), u64_at(r.payload, 8));
                        let loc = Loc {
                            seg: *id,
                            off: r.at as u64,
                            len: (RECORD_HEAD + r.payload.len()) as u32,
                            term,
                        };
                        replay.entry(index, loc).map_err(bad)?;
                        max_index = max_index.max(index);
                    }
                    KIND_HARD_STATE => {
                        replay.hard_state = HardState::parse_from_bytes(r.payload)
                            .map_err(|e| bad(e.to_string()))?;
                    }
                    KIND_COMPACT | KIND_RESET if r.payload.len() == 16 => {
                        let (index, term) = (u64_at(r.payload, 0), u64_at(r.payload, 8));
                        if r.kind == KIND_COMPACT {
                            replay.compact(index, term);
                        } else {
                            replay.reset(index, term);
                        }
                    }
                    k => return Err(bad(format!("unknown kind {k} or bad length"))),
                }
            }
            valid_len = end as u64;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(io("open", path))?;
            segments.insert(
                *id,
                Segment {
                    file: Arc::new(file),
                    path: path.to_path_buf(),
                    max_index,
                },
            );
        }
        replay.check().map_err(|d| corrupt(&dir, d))?;
        let last = ids.last().copied().unwrap_or(last_id);
        // Records a crashed process wrote may sit in the page cache unflushed: flush them
        // before anything is built on them.
        if let Some(s) = segments.get(&last) {
            s.file.sync_data().map_err(io("sync", &s.path))?;
        }
        let mut wal = Wal {
            dir,
            segments,
            current: last,
            offset: valid_len,
            locs: replay.locs,
            first_loc: replay.first_loc,
            hard_state: replay.hard_state,
            truncated: replay.truncated,
            buf: Vec::new(),
            segment_bytes: SEGMENT_BYTES,
        };
        if wal.locs.is_empty() {
            wal.first_loc = wal.truncated.0 + 1;
        }
        wal.start_segment(last + 1, valid_len)?;
        Ok(wal)
    }

    /// Starts segment `id`, durable (file and directory entry) on return. The current
    /// segment, if any, must be durable already.
    fn start_segment(&mut self, id: u64, prev_len: u64) -> Result<(), StorageError> {
        let path = self.dir.join(segment_name(id));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io("create", &path))?;
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&id.to_le_bytes());
        buf.extend_from_slice(&prev_len.to_le_bytes());
        let crc = crc32fast::hash(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        // The checkpoint: what older segments held, for when they are deleted.
        record(&mut buf, KIND_HARD_STATE, |b| proto(b, &self.hard_state));
        record(&mut buf, KIND_COMPACT, |b| {
            pair(b, self.truncated.0, self.truncated.1)
        });
        file.write_all_at(&buf, 0).map_err(io("write", &path))?;
        file.sync_data().map_err(io("sync", &path))?;
        sync_dir(&self.dir)?;
        self.segments.insert(
            id,
            Segment {
                file: Arc::new(file),
                path,
                max_index: 0,
            },
        );
        self.current = id;
        self.offset = buf.len() as u64;
        Ok(())
    }

    /// The index of the last entry written (the truncated index if there is none).
    pub(crate) fn last_index(&self) -> u64 {
        if self.locs.is_empty() {
            self.truncated.0
        } else {
            self.first_loc + self.locs.len() as u64 - 1
        }
    }

    /// The newest hard state written.
    pub(crate) fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// Index and term of the last entry compacted or replaced by a snapshot.
    pub(crate) fn truncated(&self) -> (u64, u64) {
        self.truncated
    }

    /// The term of entry `index`, if the log holds it (or it is the truncated index).
    pub(crate) fn term(&self, index: u64) -> Option<u64> {
        if index == self.truncated.0 {
            return Some(self.truncated.1);
        }
        self.loc(index).map(|l| l.term)
    }

    fn loc(&self, index: u64) -> Option<&Loc> {
        index
            .checked_sub(self.first_loc)
            .and_then(|i| self.locs.get(i as usize))
    }

    /// Reads entry `index` back from its segment.
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] if the log does not hold it or its record is damaged.
    pub(crate) fn read(&self, index: u64) -> Result<Entry, StorageError> {
        let what = || format!("log entry {index}");
        let bad = |detail: String| StorageError::Corrupt {
            what: what(),
            detail,
        };
        let loc = *self.loc(index).ok_or_else(|| bad("missing".into()))?;
        let seg = self
            .segments
            .get(&loc.seg)
            .ok_or_else(|| bad(format!("segment {} is gone", loc.seg)))?;
        let mut bytes = vec![0u8; loc.len as usize];
        seg.file
            .read_exact_at(&mut bytes, loc.off)
            .map_err(io("read", &seg.path))?;
        let (records, _) = parse(&bytes, 0, bytes.len());
        let r = records
            .into_iter()
            .next()
            .filter(|r| r.kind == KIND_ENTRY && r.payload.len() >= 16)
            .ok_or_else(|| bad(format!("damaged record in {}", seg.path.display())))?;
        let e = Entry::parse_from_bytes(&r.payload[16..]).map_err(|e| bad(e.to_string()))?;
        if e.index != index {
            return Err(bad(format!("holds index {}", e.index)));
        }
        Ok(e)
    }

    /// Appends `entries` (replacing any entries from the first one's index on) and
    /// `hard_state`. Not durable until the file returned by [`Wal::sync_handle`] is synced;
    /// readable at once.
    ///
    /// The caller has checked the entries are contiguous and follow the log.
    pub(crate) fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), StorageError> {
        if self.offset >= self.segment_bytes {
            self.roll()?;
        }
        self.buf.clear();
        let mut locs = Vec::with_capacity(entries.len());
        for e in entries {
            let at = self.buf.len();
            record(&mut self.buf, KIND_ENTRY, |b| {
                pair(b, e.index, e.term);
                proto(b, e);
            });
            locs.push(Loc {
                seg: self.current,
                off: self.offset + at as u64,
                len: (self.buf.len() - at) as u32,
                term: e.term,
            });
        }
        if let Some(hs) = hard_state {
            record(&mut self.buf, KIND_HARD_STATE, |b| proto(b, hs));
        }
        self.write_buf()?;
        if let Some(first) = entries.first() {
            let seg = self.segments.get_mut(&self.current);
            if let Some(seg) = seg {
                seg.max_index = seg.max_index.max(first.index + entries.len() as u64 - 1);
            }
            if self.locs.is_empty() || first.index < self.first_loc {
                self.locs.clear();
                self.first_loc = first.index;
            } else {
                self.locs.truncate((first.index - self.first_loc) as usize);
            }
            self.locs.extend(locs);
        }
        if let Some(hs) = hard_state {
            self.hard_state = hs.clone();
        }
        Ok(())
    }

    /// Records that entries up to `index` (whose term is `term`) are gone. Segments holding
    /// only such entries are deleted by [`Wal::remove_obsolete`] once this is durable.
    pub(crate) fn compact(&mut self, index: u64, term: u64) -> Result<(), StorageError> {
        self.buf.clear();
        record(&mut self.buf, KIND_COMPACT, |b| pair(b, index, term));
        self.write_buf()?;
        while !self.locs.is_empty() && self.first_loc <= index {
            self.locs.pop_front();
            self.first_loc += 1;
        }
        if self.locs.is_empty() {
            self.first_loc = index + 1;
        }
        self.truncated = (index, term);
        Ok(())
    }

    /// Empties the log: it continues after `index` (a snapshot's), with `hard_state`.
    pub(crate) fn reset(
        &mut self,
        index: u64,
        term: u64,
        hard_state: &HardState,
    ) -> Result<(), StorageError> {
        self.buf.clear();
        record(&mut self.buf, KIND_RESET, |b| pair(b, index, term));
        record(&mut self.buf, KIND_HARD_STATE, |b| proto(b, hard_state));
        self.write_buf()?;
        self.locs.clear();
        self.first_loc = index + 1;
        self.truncated = (index, term);
        self.hard_state = hard_state.clone();
        Ok(())
    }

    fn write_buf(&mut self) -> Result<(), StorageError> {
        let seg = &self.segments[&self.current];
        seg.file
            .write_all_at(&self.buf, self.offset)
            .map_err(io("write", &seg.path))?;
        self.offset += self.buf.len() as u64;
        Ok(())
    }

    /// Flushes the current segment and starts the next one.
    fn roll(&mut self) -> Result<(), StorageError> {
        self.sync()?;
        self.start_segment(self.current + 1, self.offset)
    }

    /// The file whose `fdatasync` makes everything written so far durable: older segments
    /// were flushed when the next one was started.
    pub(crate) fn sync_handle(&self) -> Arc<File> {
        self.segments[&self.current].file.clone()
    }

    /// Makes everything written so far durable.
    pub(crate) fn sync(&self) -> Result<(), StorageError> {
        let seg = &self.segments[&self.current];
        seg.file.sync_data().map_err(io("sync", &seg.path))
    }

    /// Deletes the oldest segments whose entries are all compacted. Call only once the
    /// compaction or reset that covers them is durable.
    pub(crate) fn remove_obsolete(&mut self) -> Result<(), StorageError> {
        let mut removed = false;
        while let Some((&id, seg)) = self.segments.first_key_value() {
            if id == self.current || seg.max_index > self.truncated.0 {
                break;
            }
            std::fs::remove_file(&seg.path).map_err(io("remove", &seg.path))?;
            self.segments.remove(&id);
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// How many segment files the log has.
    #[cfg(test)]
    pub(crate) fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Makes the next appends start new segments after `bytes` (tests).
    #[cfg(test)]
    pub(crate) fn set_segment_bytes(&mut self, bytes: u64) {
        self.segment_bytes = bytes;
    }
}

/// Checks a segment's header; returns the valid length of the segment before it.
fn header(bytes: &[u8], id: u64) -> Result<u64, String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "{} bytes: the segment header is cut short",
            bytes.len()
        ));
    }
    if &bytes[..8] != MAGIC {
        return Err("not a raft-store log segment (bad magic)".into());
    }
    if crc32fast::hash(&bytes[..24]) != u32_at(bytes, 24) {
        return Err("segment header checksum mismatch".into());
    }
    let found = u64_at(bytes, 8);
    if found != id {
        return Err(format!("the header says segment {found}"));
    }
    Ok(u64_at(bytes, 16))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: format!("data {index}").into_bytes().into(),
            ..Default::default()
        }
    }

    fn ents(r: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
        r.map(|i| entry(i, term)).collect()
    }

    fn hs(term: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote: 1,
            commit,
            ..Default::default()
        }
    }

    fn all(w: &Wal) -> Vec<Entry> {
        (w.truncated().0 + 1..=w.last_index())
            .map(|i| w.read(i).unwrap())
            .collect()
    }

    #[test]
    fn replays_entries_overwrites_hard_state_and_compaction() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let mut w = Wal::create(tmp.path()).unwrap();
            w.append(&ents(1..=10, 1), Some(&hs(1, 2))).unwrap();
            w.append(&ents(6..=8, 2), Some(&hs(2, 5))).unwrap();
            w.compact(3, 1).unwrap();
            w.sync().unwrap();
        }
        let w = Wal::open(tmp.path()).unwrap();
        assert_eq!(w.truncated(), (3, 1));
        assert_eq!(w.last_index(), 8);
        assert_eq!(w.hard_state(), &hs(2, 5));
        let mut want = ents(4..=5, 1);
        want.extend(ents(6..=8, 2));
        assert_eq!(all(&w), want);
        assert_eq!(w.term(3), Some(1));
        assert_eq!(w.term(7), Some(2));
        assert_eq!(w.term(9), None);
    }

    #[test]
    fn segments_roll_and_compacted_ones_are_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let mut w = Wal::create(tmp.path()).unwrap();
            w.set_segment_bytes(1024);
            for i in 1..=200 {
                w.append(&[entry(i, 1)], Some(&hs(1, i))).unwrap();
            }
            assert!(w.segment_count() > 5, "{}", w.segment_count());
            w.compact(150, 1).unwrap();
            w.sync().unwrap();
            w.remove_obsolete().unwrap();
            assert!(w.segment_count() < 5, "{}", w.segment_count());
            assert_eq!(all(&w), ents(151..=200, 1));
        }
        // Reopened over the remaining segments, whose first checkpoint predates the
        // compaction that deleted the segments before it.
        let mut w = Wal::open(tmp.path()).unwrap();
        assert_eq!(w.truncated(), (150, 1));
        assert_eq!(w.hard_state(), &hs(1, 200));
        assert_eq!(all(&w), ents(151..=200, 1));
        w.reset(300, 4, &hs(4, 300)).unwrap();
        w.sync().unwrap();
        w.remove_obsolete().unwrap();
        assert_eq!(w.segment_count(), 1);
        drop(w);
        let w = Wal::open(tmp.path()).unwrap();
        assert_eq!((w.truncated(), w.last_index()), ((300, 4), 300));
        assert_eq!(w.hard_state(), &hs(4, 300));
    }

    #[test]
    fn a_torn_tail_is_dropped_and_frozen_by_the_next_segment() {
        let tmp = tempfile::tempdir().unwrap();
        let path;
        {
            let mut w = Wal::create(tmp.path()).unwrap();
            w.append(&ents(1..=5, 1), None).unwrap();
            w.sync().unwrap();
            path = w.segments[&w.current].path.clone();
        }
        // Cut the last record in half, as a crash mid-write would.
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 7).unwrap();
        drop(f);
        {
            let mut w = Wal::open(tmp.path()).unwrap();
            assert_eq!(all(&w), ents(1..=4, 1));
            w.append(&ents(5..=6, 2), None).unwrap();
            w.sync().unwrap();
        }
        // Bytes appended to the torn segment later (garbage) are past the recorded end.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, b"junk after the end").unwrap();
        drop(f);
        let w = Wal::open(tmp.path()).unwrap();
        let mut want = ents(1..=4, 1);
        want.extend(ents(5..=6, 2));
        assert_eq!(all(&w), want);
    }

    #[test]
    fn damage_before_the_recorded_end_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path;
        {
            let mut w = Wal::create(tmp.path()).unwrap();
            w.append(&ents(1..=5, 1), None).unwrap();
            w.sync().unwrap();
            path = w.segments[&w.current].path.clone();
        }
        drop(Wal::open(tmp.path()).unwrap());
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 20] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let err = Wal::open(tmp.path()).unwrap_err();
        assert!(
            matches!(err, StorageError::Corrupt { ref what, ref detail }
                if what.ends_with("0000000000000001.wal") && detail.contains("damaged record")),
            "{err}"
        );
        // And a bad header, or a missing segment in the middle.
        bytes[n - 20] ^= 0x10;
        bytes[3] = b'x';
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            Wal::open(tmp.path()),
            Err(StorageError::Corrupt { .. })
        ));
        bytes[3] = MAGIC[3];
        std::fs::write(&path, &bytes).unwrap();
        drop(Wal::open(tmp.path()).unwrap());
        std::fs::remove_file(tmp.path().join(WAL_DIR).join(segment_name(2))).unwrap();
        let err = Wal::open(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("segment missing"), "{err}");
    }

    #[test]
    fn a_half_created_last_segment_is_discarded() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let mut w = Wal::create(tmp.path()).unwrap();
            w.append(&ents(1..=3, 1), Some(&hs(1, 3))).unwrap();
            w.sync().unwrap();
        }
        std::fs::write(tmp.path().join(WAL_DIR).join(segment_name(2)), b"FLT").unwrap();
        let w = Wal::open(tmp.path()).unwrap();
        assert_eq!(all(&w), ents(1..=3, 1));
        assert_eq!(w.hard_state(), &hs(1, 3));
    }

    #[test]
    fn random_bytes_never_panic() {
        use proptest::prelude::*;
        let tmp = tempfile::tempdir().unwrap();
        {
            let mut w = Wal::create(tmp.path()).unwrap();
            w.append(&ents(1..=20, 1), Some(&hs(1, 9))).unwrap();
            w.compact(4, 1).unwrap();
            w.sync().unwrap();
        }
        let path = tmp.path().join(WAL_DIR).join(segment_name(1));
        let good = std::fs::read(&path).unwrap();
        let mut runner = proptest::test_runner::TestRunner::default();
        runner
            .run(
                &(0..good.len(), any::<u8>(), 0..good.len() + 8),
                |(at, x, cut)| {
                    let mut bad = good.clone();
                    bad[at] ^= x | 1;
                    bad.truncate(cut);
                    std::fs::write(&path, &bad).unwrap();
                    // Either refused or a prefix of what was written.
                    for k in 2..=3 {
                        let _ =
                            std::fs::remove_file(tmp.path().join(WAL_DIR).join(segment_name(k)));
                    }
                    if let Ok(w) = Wal::open(tmp.path()) {
                        for i in w.truncated().0 + 1..=w.last_index() {
                            if let Ok(e) = w.read(i) {
                                prop_assert_eq!(e, entry(i, 1));
                            }
                        }
                    }
                    Ok(())
                },
            )
            .unwrap();
    }
}
