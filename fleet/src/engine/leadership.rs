//! Leader election through the lease (fleet.md §6.3), as pure decisions plus the
//! `engine/version` read-and-upgrade.
//!
//! What an engine does with the lease it reads ([`lease_action`]): absent → acquire it;
//! its own (same machine, same version: the engine lost track of it during a store
//! hiccup) → renew it (compare-and-swap on its index), so a hiccup does not change the
//! leader; a lower version's → steal it and wait out its remaining time before acting;
//! anything else → follow. Before acquiring, stealing or re-adopting it checks
//! `engine/version` ([`version_action`]): a lower or missing version is upgraded to its
//! own (create or compare-and-swap), a higher one makes it sit out.

use kv_core::Op;

use crate::registry::{LeaseRecord, Registry};
use crate::store::{KvStore, StoreError};

/// What to do about `engine/version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VersionAction {
    /// No version is stored: create ours.
    Create,
    /// A lower version is stored: upgrade it to ours.
    Upgrade,
    /// Ours is stored.
    Current,
    /// A higher version is stored: this engine takes no part.
    SitOut,
}

/// fleet's engine-version check: `stored` (none when the key is missing) against ours.
pub(crate) fn version_action(stored: Option<u32>, ours: u32) -> VersionAction {
    match stored {
        None => VersionAction::Create,
        Some(v) if v < ours => VersionAction::Upgrade,
        Some(v) if v == ours => VersionAction::Current,
        Some(_) => VersionAction::SitOut,
    }
}

/// What to do about the lease when this engine does not hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseAction {
    /// Nobody holds it: create it.
    Acquire,
    /// It is this engine's own (lost track of during a store hiccup): renew it.
    Readopt,
    /// A lower engine version holds it: take it over.
    Steal,
    /// Someone else leads.
    Follow,
}

/// fleet's leadership decision for an engine that does not hold the lease.
pub(crate) fn lease_action(current: Option<&LeaseRecord>, ours: &LeaseRecord) -> LeaseAction {
    match current {
        None => LeaseAction::Acquire,
        Some(l) if l == ours => LeaseAction::Readopt,
        Some(l) if l.version < ours.version => LeaseAction::Steal,
        Some(_) => LeaseAction::Follow,
    }
}

/// Reads `engine/version` and upgrades it to `ours` when it is missing or lower. `true`
/// when this engine may lead; `false` when a higher version is stored, or another engine
/// wrote the key meanwhile (the next look decides).
///
/// A value that is not a number reads as version 0, as fleet's `strconv.Atoi` failure
/// leaves it.
pub(crate) async fn ensure_version<S: KvStore>(
    registry: &Registry<S>,
    ours: u32,
) -> Result<bool, StoreError> {
    let key = registry.keys().engine_version();
    let store = registry.store();
    let (stored, index) = match store.get(&key, false, true).await {
        Ok(e) => (
            Some(
                e.node
                    .value
                    .as_deref()
                    .unwrap_or_default()
                    .trim()
                    .parse::<u32>()
                    .unwrap_or(0),
            ),
            Some(e.node.modified_index),
        ),
        Err(e) if e.is_not_found() => (None, None),
        Err(e) => return Err(e),
    };
    let op = match version_action(stored, ours) {
        VersionAction::Current => return Ok(true),
        VersionAction::SitOut => return Ok(false),
        VersionAction::Create => Op::Create {
            key,
            value: ours.to_string(),
            dir: false,
            ttl: None,
            unique: false,
        },
        VersionAction::Upgrade => Op::CompareAndSwap {
            key,
            value: ours.to_string(),
            prev_value: None,
            prev_index: index,
            ttl: None,
            refresh: false,
        },
    };
    match store.apply(op).await {
        Ok(_) => {
            tracing::info!(from = ?stored, to = ours, "upgraded the cluster's engine version");
            Ok(true)
        }
        Err(e) if e.is_exists() || e.is_compare_failed() => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, version: u32) -> LeaseRecord {
        LeaseRecord {
            machine_id: id.into(),
            version,
        }
    }

    /// fleet's engine-version tests: 0 → 1 upgrades, 1 → 1 is fine, 2 against 1 sits out.
    #[test]
    fn engine_version_upgrade() {
        assert_eq!(version_action(None, 1), VersionAction::Create);
        assert_eq!(version_action(Some(0), 1), VersionAction::Upgrade);
        assert_eq!(version_action(Some(1), 1), VersionAction::Current);
        assert_eq!(version_action(Some(2), 1), VersionAction::SitOut);
    }

    /// fleet's `TestAcquireLeadership`, plus re-adopting one's own lease.
    #[test]
    fn acquire_leadership() {
        let cases = [
            (
                "no lease: acquire",
                None,
                rec("XXX", 1),
                LeaseAction::Acquire,
            ),
            (
                "v0 lease of another vs local v1: steal",
                Some(rec("YYY", 0)),
                rec("XXX", 1),
                LeaseAction::Steal,
            ),
            (
                "v10 lease vs local v2: not leader",
                Some(rec("YYY", 10)),
                rec("XXX", 2),
                LeaseAction::Follow,
            ),
            (
                "v2 lease vs local v2: not leader",
                Some(rec("YYY", 2)),
                rec("XXX", 2),
                LeaseAction::Follow,
            ),
            (
                "own lease after a hiccup: renew it",
                Some(rec("XXX", 1)),
                rec("XXX", 1),
                LeaseAction::Readopt,
            ),
            (
                "own machine, lower version (an older fleetd here): steal",
                Some(rec("XXX", 0)),
                rec("XXX", 1),
                LeaseAction::Steal,
            ),
        ];
        for (name, current, ours, want) in cases {
            assert_eq!(lease_action(current.as_ref(), &ours), want, "{name}");
        }
    }
}
