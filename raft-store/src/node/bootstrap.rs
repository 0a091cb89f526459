//! A new cluster's first state, written once into a fresh data directory.

use std::collections::BTreeMap;

use protobuf::Message as _;
use raft::eraftpb::{ConfChangeType, ConfState, Entry, EntryType, Snapshot, SnapshotMetadata};

use super::snapshot_format::encode_snapshot;
use super::{conf_change, single};
use crate::config::Member;
use crate::error::Result;
use crate::state_machine::StateMachine;
use crate::storage::{LogStore, RocksLogStore};

/// Writes the bootstrap log of a new cluster: one committed conf change per initial member,
/// identical on every initial member (as etcd does), so members that join later learn the
/// initial configuration from the log like any other change.
pub(super) fn bootstrap(store: &RocksLogStore, members: &[Member]) -> Result<()> {
    let mut sorted = members.to_vec();
    sorted.sort_by_key(|m| m.id);
    let mut entries = Vec::new();
    for (i, m) in sorted.iter().enumerate() {
        let ty = if m.is_learner {
            ConfChangeType::AddLearnerNode
        } else {
            ConfChangeType::AddNode
        };
        let cc = conf_change(single(m.id, ty), Some(m))?;
        let mut e = Entry::default();
        e.set_entry_type(EntryType::EntryConfChangeV2);
        e.term = 1;
        e.index = i as u64 + 1;
        e.data = cc.write_to_bytes().map_err(raft::Error::from)?.into();
        entries.push(e);
    }
    let hs = raft::eraftpb::HardState {
        term: 1,
        commit: entries.len() as u64,
        ..Default::default()
    };
    store.append(&entries, Some(&hs), true)?;
    Ok(())
}

/// Writes the bootstrap of a new cluster that starts from `machine`'s current state: a
/// snapshot at the index the bootstrap log would end at, holding the initial members and the
/// machine's bytes, with the log empty behind it (what etcd's snapshot restore writes).
pub(super) fn bootstrap_from_machine<S: StateMachine>(
    store: &RocksLogStore,
    members: &[Member],
    machine: &S,
) -> Result<()> {
    let map: BTreeMap<u64, Member> = members.iter().map(|m| (m.id, m.clone())).collect();
    let data = encode_snapshot(&map, machine)?;
    let mut cs = ConfState::default();
    for m in map.values() {
        if m.is_learner {
            cs.learners.push(m.id);
        } else {
            cs.voters.push(m.id);
        }
    }
    let mut md = SnapshotMetadata {
        index: map.len() as u64,
        term: 1,
        ..Default::default()
    };
    md.set_conf_state(cs);
    let mut snap = Snapshot::default();
    snap.set_metadata(md);
    snap.data = data.into();
    store.apply_snapshot(&snap)?;
    Ok(())
}
