//! Conformance suite: every scenario runs against [`MemLogStore`] and [`RocksLogStore`], and a
//! property test replays random operation sequences on both (and on raft's `MemStorage` for the
//! read side) and compares every observable answer.

use super::*;
use proptest::prelude::*;
use raft::storage::MemStorage;

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: Bytes::from(format!("data-{index}-{term}")),
        ..Default::default()
    }
}

fn ents(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|i| entry(i, term)).collect()
}

fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

fn snapshot(index: u64, term: u64, voters: Vec<u64>) -> Snapshot {
    let mut s = Snapshot::default();
    s.mut_metadata().index = index;
    s.mut_metadata().term = term;
    s.mut_metadata().mut_conf_state().voters = voters;
    s.data = Bytes::from_static(b"state machine bytes");
    s
}

struct Rocks {
    _tmp: tempfile::TempDir,
    _dir: DataDir,
    store: RocksLogStore,
}

fn rocks() -> Rocks {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::open(tmp.path()).unwrap();
    let store = RocksLogStore::open(&dir).unwrap();
    Rocks {
        _tmp: tmp,
        _dir: dir,
        store,
    }
}

/// Runs `scenario` against both implementations.
fn both(scenario: impl Fn(&dyn Fn() -> Box<dyn Check>)) {
    scenario(&|| Box::new(MemLogStore::new()));
    scenario(&|| Box::new(rocks()));
}

/// Object-safe view of a log store for the scenarios.
trait Check {
    fn s(&self) -> &dyn DynStore;
}

trait DynStore {
    fn append(&self, e: &[Entry], hs: Option<&HardState>) -> Result<(), StorageError>;
    fn apply_snapshot(&self, s: &Snapshot) -> Result<(), StorageError>;
    fn save_snapshot(&self, m: &SnapshotMetadata, d: Bytes) -> Result<(), StorageError>;
    fn compact(&self, i: u64) -> Result<(), StorageError>;
    fn first(&self) -> u64;
    fn last(&self) -> u64;
    fn term_of(&self, i: u64) -> raft::Result<u64>;
    fn range(&self, lo: u64, hi: u64, max: Option<u64>) -> raft::Result<Vec<Entry>>;
    fn state(&self) -> RaftState;
    fn snap(&self, req: u64) -> raft::Result<Snapshot>;
    fn snap_for(&self, req: u64, to: u64) -> raft::Result<Snapshot>;
    fn wanted(&self) -> bool;
    fn trunc(&self) -> (u64, u64);
}

impl<T: LogStore> DynStore for T {
    fn append(&self, e: &[Entry], hs: Option<&HardState>) -> Result<(), StorageError> {
        LogStore::append(self, e, hs, true)
    }
    fn apply_snapshot(&self, s: &Snapshot) -> Result<(), StorageError> {
        LogStore::apply_snapshot(self, s)
    }
    fn save_snapshot(&self, m: &SnapshotMetadata, d: Bytes) -> Result<(), StorageError> {
        LogStore::save_snapshot(self, m, d)
    }
    fn compact(&self, i: u64) -> Result<(), StorageError> {
        LogStore::compact(self, i)
    }
    fn first(&self) -> u64 {
        Storage::first_index(self).unwrap()
    }
    fn last(&self) -> u64 {
        Storage::last_index(self).unwrap()
    }
    fn term_of(&self, i: u64) -> raft::Result<u64> {
        Storage::term(self, i)
    }
    fn range(&self, lo: u64, hi: u64, max: Option<u64>) -> raft::Result<Vec<Entry>> {
        Storage::entries(self, lo, hi, max, ctx())
    }
    fn state(&self) -> RaftState {
        Storage::initial_state(self).unwrap()
    }
    fn snap(&self, req: u64) -> raft::Result<Snapshot> {
        Storage::snapshot(self, req, 0)
    }
    fn snap_for(&self, req: u64, to: u64) -> raft::Result<Snapshot> {
        Storage::snapshot(self, req, to)
    }
    fn wanted(&self) -> bool {
        LogStore::take_snapshot_request(self)
    }
    fn trunc(&self) -> (u64, u64) {
        LogStore::truncated(self)
    }
}

impl Check for MemLogStore {
    fn s(&self) -> &dyn DynStore {
        self
    }
}

impl Check for Rocks {
    fn s(&self) -> &dyn DynStore {
        &self.store
    }
}

#[test]
fn empty_store_is_truncated_at_zero() {
    both(|make| {
        let c = make();
        let s = c.s();
        assert_eq!((s.first(), s.last()), (1, 0));
        assert_eq!(s.term_of(0).unwrap(), 0);
        assert!(s.term_of(1).is_err());
        assert!(!s.state().initialized());
        assert!(
            s.snap(0).is_err(),
            "no snapshot yet: temporarily unavailable"
        );
    });
}

#[test]
fn append_read_and_overwrite_suffix() {
    both(|make| {
        let c = make();
        let s = c.s();
        s.append(&ents(1..=5, 1), None).unwrap();
        assert_eq!((s.first(), s.last()), (1, 5));
        assert_eq!(s.range(2, 5, None).unwrap(), ents(2..=4, 1));
        // A conflicting append from a new leader replaces the suffix, and shortens the log.
        s.append(&ents(3..=3, 2), None).unwrap();
        assert_eq!(s.last(), 3);
        assert_eq!(s.term_of(3).unwrap(), 2);
        assert!(matches!(
            s.term_of(4),
            Err(raft::Error::Store(raft::StorageError::Unavailable))
        ));
        // Gaps are refused.
        assert!(matches!(
            s.append(&ents(5..=6, 2), None),
            Err(StorageError::BadAppend { .. })
        ));
        let hs = HardState {
            term: 2,
            vote: 3,
            commit: 2,
            ..Default::default()
        };
        s.append(&[], Some(&hs)).unwrap();
        assert_eq!(s.state().hard_state, hs);
    });
}

#[test]
fn entries_respect_max_size_but_return_at_least_one() {
    both(|make| {
        let c = make();
        let s = c.s();
        s.append(&ents(1..=10, 1), None).unwrap();
        let one = u64::from(entry(1, 1).compute_size());
        assert_eq!(s.range(1, 11, Some(0)).unwrap().len(), 1);
        assert_eq!(s.range(1, 11, Some(one * 3)).unwrap().len(), 3);
        assert_eq!(s.range(1, 11, None).unwrap().len(), 10);
    });
}

#[test]
fn compaction_keeps_the_boundary_term() {
    both(|make| {
        let c = make();
        let s = c.s();
        s.append(&ents(1..=3, 1), None).unwrap();
        s.append(&ents(4..=6, 2), None).unwrap();
        s.compact(5).unwrap();
        assert_eq!((s.first(), s.last()), (5, 6));
        assert_eq!(
            s.term_of(4).unwrap(),
            2,
            "term of first_index - 1 stays answerable"
        );
        assert_eq!(s.trunc(), (4, 2));
        assert!(matches!(
            s.term_of(3),
            Err(raft::Error::Store(raft::StorageError::Compacted))
        ));
        assert!(matches!(
            s.range(3, 6, None),
            Err(raft::Error::Store(raft::StorageError::Compacted))
        ));
        s.compact(2).unwrap(); // Below the first index: nothing to do.
        assert_eq!(s.first(), 5);
        assert!(s.compact(8).is_err());
        // Appending after compaction continues the log.
        s.append(&ents(7..=7, 2), None).unwrap();
        assert_eq!(s.range(5, 8, None).unwrap().len(), 3);
        assert!(matches!(
            s.append(&ents(3..=3, 3), None),
            Err(StorageError::BadAppend { .. })
        ));
    });
}

#[test]
fn applying_a_snapshot_replaces_the_log() {
    both(|make| {
        let c = make();
        let s = c.s();
        s.append(&ents(1..=5, 1), None).unwrap();
        s.apply_snapshot(&snapshot(10, 3, vec![1, 2, 3])).unwrap();
        assert_eq!((s.first(), s.last()), (11, 10));
        assert_eq!(s.term_of(10).unwrap(), 3);
        let st = s.state();
        assert_eq!(st.conf_state.voters, vec![1, 2, 3]);
        assert_eq!((st.hard_state.commit, st.hard_state.term), (10, 3));
        assert_eq!(s.snap(0).unwrap().get_metadata().index, 10);
        assert!(s.snap(11).is_err(), "a newer snapshot is not available yet");
        s.append(&ents(11..=12, 3), None).unwrap();
        assert_eq!(s.last(), 12);
        // Older than the log's start.
        assert!(matches!(
            s.apply_snapshot(&snapshot(5, 1, vec![1])),
            Err(StorageError::SnapshotOutOfDate { .. })
        ));
    });
}

#[test]
fn saved_snapshot_is_served_and_log_untouched() {
    both(|make| {
        let c = make();
        let s = c.s();
        s.append(&ents(1..=5, 1), None).unwrap();
        let mut md = SnapshotMetadata {
            index: 4,
            term: 1,
            ..Default::default()
        };
        md.mut_conf_state().voters = vec![1];
        s.save_snapshot(&md, Bytes::from_static(b"sm")).unwrap();
        assert_eq!((s.first(), s.last()), (1, 5));
        let snap = s.snap(3).unwrap();
        assert_eq!(snap.get_metadata().index, 4);
        assert_eq!(&snap.data[..], b"sm");
        md.index = 9;
        assert!(s.save_snapshot(&md, Bytes::new()).is_err());
    });
}

#[test]
fn rocks_state_survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let hs = HardState {
        term: 4,
        vote: 2,
        commit: 6,
        ..Default::default()
    };
    {
        let dir = DataDir::open(tmp.path()).unwrap();
        let s = RocksLogStore::open(&dir).unwrap();
        LogStore::append(&s, &ents(1..=8, 4), Some(&hs), true).unwrap();
        let mut md = SnapshotMetadata {
            index: 5,
            term: 4,
            ..Default::default()
        };
        md.mut_conf_state().voters = vec![1, 2];
        LogStore::save_snapshot(&s, &md, Bytes::from_static(b"x")).unwrap();
        LogStore::compact(&s, 4).unwrap();
    }
    let dir = DataDir::open(tmp.path()).unwrap();
    assert!(!dir.is_fresh());
    let s = RocksLogStore::open(&dir).unwrap();
    let st = Storage::initial_state(&s).unwrap();
    assert_eq!(st.hard_state, hs);
    assert_eq!(st.conf_state.voters, vec![1, 2]);
    assert_eq!(
        (
            Storage::first_index(&s).unwrap(),
            Storage::last_index(&s).unwrap()
        ),
        (4, 8)
    );
    // The last entry is in memory from the start: raft reads its term for every vote, and
    // reading it through RocksDB can cost a read of a whole snapshot.
    let cached = s
        .cache
        .lock()
        .get(8, 9)
        .and_then(|mut e| e.next().map(|e| (e.index, e.term)));
    assert_eq!(cached, Some((8, 4)));
    assert_eq!(Storage::term(&s, 3).unwrap(), 4);
    assert_eq!(
        Storage::entries(&s, 4, 9, None, ctx()).unwrap(),
        ents(4..=8, 4)
    );
    assert_eq!(Storage::snapshot(&s, 0, 0).unwrap().get_metadata().index, 5);
    // The cache goes on from there: the next append extends it.
    LogStore::append(&s, &ents(9..=9, 5), None, true).unwrap();
    assert_eq!(s.cache.lock().get(8, 10).map(|e| e.count()), Some(2));
}

#[test]
fn directory_is_locked_while_open() {
    let tmp = tempfile::tempdir().unwrap();
    let first = DataDir::open(tmp.path()).unwrap();
    let err = DataDir::open(tmp.path()).unwrap_err();
    assert!(matches!(err, StorageError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("locked"));
    drop(first);
    DataDir::open(tmp.path()).unwrap();
}

#[test]
fn foreign_newer_and_corrupt_directories_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("member"), b"etcd was here").unwrap();
    let err = DataDir::open(tmp.path()).unwrap_err();
    assert!(matches!(err, StorageError::Foreign { .. }), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join(VERSION_FILE), "something-else\nformat 1\n").unwrap();
    assert!(matches!(
        DataDir::open(tmp.path()),
        Err(StorageError::Foreign { .. })
    ));

    std::fs::write(
        tmp.path().join(VERSION_FILE),
        "flotilla-raft-store\nformat 99\n",
    )
    .unwrap();
    let err = DataDir::open(tmp.path()).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::NewerVersion {
                found: 99,
                supported: 1,
                ..
            }
        ),
        "{err}"
    );

    for bad in [
        "flotilla-raft-store\nformat x\n",
        "flotilla-raft-store\n",
        "flotilla-raft-store\nformat 0\n",
    ] {
        std::fs::write(tmp.path().join(VERSION_FILE), bad).unwrap();
        assert!(
            matches!(DataDir::open(tmp.path()), Err(StorageError::Corrupt { .. })),
            "{bad:?}"
        );
    }
    std::fs::write(tmp.path().join(VERSION_FILE), [0xff, 0xfe]).unwrap();
    assert!(matches!(
        DataDir::open(tmp.path()),
        Err(StorageError::Corrupt { .. })
    ));

    // A version file but no database: the log was lost, which must not pass silently.
    std::fs::write(
        tmp.path().join(VERSION_FILE),
        "flotilla-raft-store\nformat 1\n",
    )
    .unwrap();
    let dir = DataDir::open(tmp.path()).unwrap();
    assert!(matches!(
        RocksLogStore::open(&dir),
        Err(StorageError::Corrupt { .. })
    ));
}

#[test]
fn corrupt_records_are_reported_not_panicked_on() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let dir = DataDir::open(tmp.path()).unwrap();
        let s = RocksLogStore::open(&dir).unwrap();
        LogStore::append(&s, &ents(1..=3, 1), Some(&HardState::default()), true).unwrap();
        // Damage records behind the store's back.
        s.db.put(entry_key(2), b"\x00\x01\x02\x03garbage").unwrap();
        s.db.put(entry_key(3), seal(b"\xff\xff\xff not protobuf"))
            .unwrap();
        // The damage is on disk: reads that go there (after a restart, as here) see it.
        s.cache.lock().clear();
        let err = Storage::entries(&s, 1, 4, None, ctx()).unwrap_err();
        assert!(err.to_string().contains("log entry 2"), "{err}");
        assert!(
            Storage::term(&s, 3)
                .unwrap_err()
                .to_string()
                .contains("log entry 3")
        );
        s.db.put(KEY_HARD_STATE, b"xy").unwrap();
    }
    let dir = DataDir::open(tmp.path()).unwrap();
    let err = RocksLogStore::open(&dir).unwrap_err();
    assert!(
        matches!(err, StorageError::Corrupt { ref what, .. } if what.contains("hard_state")),
        "{err}"
    );
}

/// An operation of the differential property test.
#[derive(Debug, Clone)]
enum Op {
    /// Append `n` entries of `term` starting `back` entries before the end (overwrite).
    Append { back: u64, n: u64, term: u64 },
    /// Compact up to `frac` percent of the way into the log.
    Compact { frac: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..4, 1u64..6, 0u64..3).prop_map(|(back, n, term)| Op::Append { back, n, term }),
        1 => (0u64..=100).prop_map(|frac| Op::Compact { frac }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random appends and compactions leave MemLogStore, RocksLogStore and raft's own
    /// MemStorage answering every read the same way.
    #[test]
    fn implementations_agree(ops in proptest::collection::vec(op(), 1..24)) {
        let mem = MemLogStore::new();
        let r = rocks();
        let reference = MemStorage::new();
        let mut term = 1;
        for op in ops {
            let (first, last) = (mem.first(), mem.last());
            match op {
                Op::Append { back, n, term: bump } => {
                    let start = (last + 1).saturating_sub(back).max(first);
                    term += bump;
                    let new: Vec<Entry> = (start..start + n).map(|i| entry(i, term)).collect();
                    LogStore::append(&mem, &new, None, false).unwrap();
                    LogStore::append(&r.store, &new, None, false).unwrap();
                    reference.wl().append(&new).unwrap();
                }
                Op::Compact { frac } => {
                    // Keep at least one entry: raft's MemStorage forgets its first index once empty.
                    let to = first + last.saturating_sub(first) * frac / 100;
                    LogStore::compact(&mem, to).unwrap();
                    LogStore::compact(&r.store, to).unwrap();
                    reference.wl().compact(to).unwrap();
                }
            }
            prop_assert_eq!(mem.first(), r.store.first());
            prop_assert_eq!(mem.last(), r.store.last());
            prop_assert_eq!(mem.first(), Storage::first_index(&reference).unwrap());
            prop_assert_eq!(mem.last(), Storage::last_index(&reference).unwrap());
            prop_assert_eq!(LogStore::truncated(&mem), LogStore::truncated(&r.store));
            let (first, last) = (mem.first(), mem.last());
            for lo in first..=last {
                prop_assert_eq!(mem.term_of(lo).unwrap(), r.store.term_of(lo).unwrap());
                prop_assert_eq!(mem.term_of(lo).unwrap(), Storage::term(&reference, lo).unwrap());
                let a = mem.range(lo, last + 1, Some(60)).unwrap();
                prop_assert_eq!(&a, &r.store.range(lo, last + 1, Some(60)).unwrap());
                prop_assert_eq!(&a, &Storage::entries(&reference, lo, last + 1, Some(60), ctx()).unwrap());
            }
        }
    }
}

#[test]
fn a_snapshot_is_served_only_to_members_of_its_configuration() {
    both(|make| {
        let c = make();
        let s = c.s();
        s.append(&ents(1..=5, 1), None).unwrap();
        assert!(s.snap_for(0, 2).is_err(), "no snapshot yet");
        assert!(s.wanted(), "the miss is reported");
        assert!(!s.wanted(), "and cleared once taken");
        let mut md = SnapshotMetadata {
            index: 4,
            term: 1,
            ..Default::default()
        };
        md.mut_conf_state().voters = vec![1, 2];
        md.mut_conf_state().learners = vec![3];
        s.save_snapshot(&md, Bytes::from_static(b"sm")).unwrap();
        assert_eq!(s.snap_for(0, 2).unwrap().get_metadata().index, 4);
        assert_eq!(s.snap_for(0, 3).unwrap().get_metadata().index, 4);
        assert!(!s.wanted());
        // Member 4 joined after the snapshot: raft would drop it, so a newer one is asked for.
        assert!(s.snap_for(0, 4).is_err());
        assert!(s.wanted());
    });
}

/// The entry cache answers exactly as RocksDB does: across overwritten suffixes, compaction,
/// entries pushed out of the cache, and a reopen that starts with it empty.
#[test]
fn entry_cache_agrees_with_the_database() {
    let tmp = tempfile::tempdir().unwrap();
    let expect = |store: &RocksLogStore, lo: u64, hi: u64, terms: &dyn Fn(u64) -> u64| {
        let got = store.entries(lo, hi, None, ctx()).unwrap();
        let want: Vec<Entry> = (lo..hi).map(|i| entry(i, terms(i))).collect();
        assert_eq!(got, want, "entries {lo}..{hi}");
        for i in lo..hi {
            assert_eq!(store.term(i).unwrap(), terms(i), "term of {i}");
        }
    };
    let big = super::CACHE_MAX_ENTRIES as u64 + 100;
    let terms = move |i: u64| if (40..=60).contains(&i) { 3 } else { 2 };
    {
        let dir = DataDir::open(tmp.path()).unwrap();
        let store = RocksLogStore::open(&dir).unwrap();
        LogStore::append(&store, &ents(1..=100, 2), None, true).unwrap();
        // A new leader's entries replace the suffix from 40 ...
        LogStore::append(&store, &ents(40..=60, 3), None, true).unwrap();
        expect(&store, 1, 61, &terms);
        assert!(
            store.entries(1, 62, None, ctx()).is_err(),
            "61.. was dropped"
        );
        // ... the log grows past what the cache holds, and its front is compacted.
        LogStore::append(&store, &ents(61..=big, 2), None, true).unwrap();
        expect(&store, 1, big + 1, &terms);
        expect(&store, big - 10, big + 1, &terms);
        LogStore::compact(&store, 30).unwrap();
        expect(&store, 30, 70, &terms);
        // A size limit cuts a cached read as it cuts a database read.
        let one = store.entries(30, 40, Some(1), ctx()).unwrap();
        assert_eq!(one.len(), 1);
    }
    let dir = DataDir::open(tmp.path()).unwrap();
    let store = RocksLogStore::open(&dir).unwrap();
    expect(&store, 30, big + 1, &terms);
}

#[test]
fn staged_entries_are_readable_at_once_and_durable_only_once_persisted() {
    let tmp = tempfile::tempdir().unwrap();
    let hs = |commit| HardState {
        term: 2,
        vote: 1,
        commit,
        ..Default::default()
    };
    {
        let dir = DataDir::open(tmp.path()).unwrap();
        let s = RocksLogStore::open(&dir).unwrap();
        let a = s.stage(ents(1..=10, 1), Some(hs(3))).unwrap();
        // A new leader rewrites the tail from 6 before the first write is on disk.
        let b = s.stage(ents(6..=7, 2), Some(hs(5))).unwrap();
        assert_eq!(Storage::last_index(&s).unwrap(), 7);
        let mut want = ents(1..=5, 1);
        want.extend(ents(6..=7, 2));
        assert_eq!(Storage::entries(&s, 1, 8, None, ctx()).unwrap(), want);
        assert_eq!(Storage::term(&s, 7).unwrap(), 2);
        s.persist([&a, &b], true).unwrap();
        // Staged and never persisted: lost with the process, as raft expects of a crash.
        let _c = s.stage(ents(8..=9, 2), Some(hs(7))).unwrap();
        assert_eq!(Storage::last_index(&s).unwrap(), 9);
    }
    let dir = DataDir::open(tmp.path()).unwrap();
    let s = RocksLogStore::open(&dir).unwrap();
    assert_eq!(Storage::last_index(&s).unwrap(), 7);
    assert_eq!(Storage::initial_state(&s).unwrap().hard_state, hs(5));
    let mut want = ents(1..=5, 1);
    want.extend(ents(6..=7, 2));
    assert_eq!(Storage::entries(&s, 1, 8, None, ctx()).unwrap(), want);
}

#[test]
fn unwritten_entries_stay_in_memory_beyond_the_cache_bounds() {
    let r = rocks();
    let s = &r.store;
    let n = CACHE_MAX_ENTRIES as u64 + 100;
    let staged: Vec<Staged> = (1..=n)
        .map(|i| s.stage(vec![entry(i, 1)], None).unwrap())
        .collect();
    // None of it is in RocksDB yet: every entry must come from memory.
    assert_eq!(
        Storage::entries(&r.store, 1, n + 1, None, ctx())
            .unwrap()
            .len() as u64,
        n
    );
    assert_eq!(Storage::term(s, 1).unwrap(), 1);
    s.persist(&staged[..50], true).unwrap();
    assert_eq!(Storage::term(s, 1).unwrap(), 1);
    s.persist(&staged[50..], true).unwrap();
    // Now trimmed back to the bounds, the oldest read back from RocksDB.
    assert!(r.store.cache.lock().entries.len() <= CACHE_MAX_ENTRIES);
    assert_eq!(
        Storage::entries(s, 1, n + 1, None, ctx()).unwrap(),
        ents(1..=n, 1)
    );
}

/// The WAL files RocksDB recycles are overwritten in place; recovery must stop at the end
/// of the new records, never read the old ones left behind them. A small memtable makes
/// the WAL rotate (and be recycled) every few hundred kilobytes.
#[test]
fn log_survives_reopen_after_wal_files_are_recycled() {
    let tmp = tempfile::tempdir().unwrap();
    let big = |index: u64, term: u64| Entry {
        index,
        term,
        data: Bytes::from(format!("{index}-{term}-").repeat(400)),
        ..Default::default()
    };
    let recycled = |path: &Path| {
        std::fs::read_to_string(path.join("db/LOG"))
            .unwrap_or_default()
            .contains("from recycle list")
    };
    let mut last = 0;
    {
        let dir = DataDir::open(tmp.path()).unwrap();
        let s = RocksLogStore::open_with(&dir, 256 << 10).unwrap();
        // Until a recycled file is in use, then as much again, so records of its earlier
        // use lie behind the new ones.
        let mut until = None;
        while until.is_none_or(|u| last < u) {
            assert!(last < 40_000, "RocksDB never reused a WAL file");
            let batch: Vec<Entry> = (last + 1..=last + 16).map(|i| big(i, 1)).collect();
            LogStore::append(&s, &batch, None, true).unwrap();
            last += 16;
            if until.is_none() && recycled(tmp.path()) {
                until = Some(last * 2);
            }
        }
        // A conflicting tail: raft truncates it and writes the new term's entries.
        let tail: Vec<Entry> = (last - 9..=last + 5).map(|i| big(i, 2)).collect();
        LogStore::append(&s, &tail, None, true).unwrap();
    }
    let dir = DataDir::open(tmp.path()).unwrap();
    let s = RocksLogStore::open(&dir).unwrap();
    assert_eq!(Storage::last_index(&s).unwrap(), last + 5);
    let got = Storage::entries(&s, 1, last + 6, None, ctx()).unwrap();
    let want: Vec<Entry> = (1..=last + 5)
        .map(|i| big(i, if i >= last - 9 { 2 } else { 1 }))
        .collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "entry {} after reopen", w.index);
    }
}
