//! [`Config`] and [`Member`].

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A member of the cluster, as listed by [`Node::members`](crate::Node::members).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The raft id: non-zero, unique in the cluster.
    pub id: u64,
    /// A human-readable name.
    pub name: String,
    /// URLs other members reach this one at (the gRPC peer transport).
    pub peer_urls: Vec<String>,
    /// URLs clients reach this member at.
    pub client_urls: Vec<String>,
    /// Learners receive the log but do not vote.
    pub is_learner: bool,
}

impl Member {
    /// A voting member with no URLs.
    pub fn new(id: u64, name: impl Into<String>) -> Self {
        Member {
            id,
            name: name.into(),
            peer_urls: Vec::new(),
            client_urls: Vec::new(),
            is_learner: false,
        }
    }
}

/// How to open a [`Node`](crate::Node).
#[derive(Debug, Clone)]
pub struct Config {
    /// This member's raft id (non-zero).
    pub id: u64,
    /// The data directory (created if missing).
    pub data_dir: PathBuf,
    /// The members of a new cluster. Used only when the data directory is fresh: every
    /// initial member must be given the same list, which must include `id`. Empty for a
    /// member that joins an existing cluster (after being added with
    /// [`Node::add_member`](crate::Node::add_member)).
    pub initial_members: Vec<Member>,
    /// When bootstrapping a new cluster, start from the state already in the machine given
    /// to [`Node::open`](crate::Node::open) (a restored backup, say) rather than from an
    /// empty one. The bootstrap is then written as a snapshot holding that state instead of
    /// as log entries, so members added later receive the state with the snapshot. Every
    /// initial member must be opened with the same state (as with etcd's snapshot restore).
    pub bootstrap_from_machine: bool,
    /// Raft's logical clock.
    pub tick_interval: Duration,
    /// Ticks without a heartbeat before a follower campaigns (randomized up to twice this).
    pub election_ticks: usize,
    /// Ticks between the leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// Applied entries between two snapshots (the log is compacted behind each).
    pub snapshot_entries: u64,
    /// Entries kept behind a snapshot so slightly lagging followers catch up from the log.
    pub catchup_entries: u64,
    /// How long a write, read or membership change may take before it fails with
    /// [`Error::Timeout`].
    pub request_timeout: Duration,
    /// Most requests taken from the queue per loop turn (they share one fsync).
    pub max_batch: usize,
}

impl Config {
    /// A configuration with the defaults: 100 ms ticks, a 1 s election timeout, a snapshot
    /// every 10,000 entries.
    pub fn new(id: u64, data_dir: impl Into<PathBuf>) -> Self {
        Config {
            id,
            data_dir: data_dir.into(),
            initial_members: Vec::new(),
            bootstrap_from_machine: false,
            tick_interval: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 1,
            snapshot_entries: 10_000,
            catchup_entries: 1_000,
            request_timeout: Duration::from_secs(5),
            max_batch: 4096,
        }
    }

    /// Checks the configuration for mistakes that would only show later.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the bad setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.id == 0 {
            return bad("id must be non-zero".into());
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return bad(format!(
                "election_ticks ({}) must exceed heartbeat_ticks ({}), which must be at least 1",
                self.election_ticks, self.heartbeat_ticks
            ));
        }
        if self.tick_interval.is_zero() {
            return bad("tick_interval must be positive".into());
        }
        if self.snapshot_entries == 0 || self.max_batch == 0 {
            return bad("snapshot_entries and max_batch must be positive".into());
        }
        if !self.initial_members.is_empty() {
            let mut ids: Vec<u64> = self.initial_members.iter().map(|m| m.id).collect();
            ids.sort_unstable();
            if ids.contains(&0) || ids.windows(2).any(|w| w[0] == w[1]) {
                return bad(format!(
                    "initial member ids must be unique and non-zero: {ids:?}"
                ));
            }
            if !ids.contains(&self.id) {
                return bad(format!(
                    "initial_members {ids:?} does not include this id {}",
                    self.id
                ));
            }
        }
        Ok(())
    }
}
