//! fleet's key layout under its prefix (`/_coreos.com/fleet/` by default).
//!
//! | key | value |
//! |---|---|
//! | `job/<unit>/object` | [`JobObject`](super::model::JobObject) |
//! | `job/<unit>/target-state` | `inactive`, `loaded` or `launched` |
//! | `job/<unit>/target` | the machine the engine scheduled the unit on |
//! | `job/<unit>/job-state` | the machine that launched it (heartbeat, TTL) |
//! | `unit/<sha1 hex>` | [`UnitBlob`](super::model::UnitBlob), content-addressed |
//! | `machines/<id>/object` | [`MachineRecord`](super::model::MachineRecord) (TTL) |
//! | `machines/<id>/metadata/<key>` | dynamic metadata (`""` deletes a key) |
//! | `machines/<id>/capacity` | [`CapacityRecord`](super::model::CapacityRecord) (Flotilla's own) |
//! | `states/<unit>/<machine>` | [`UnitStateRecord`](super::model::UnitStateRecord) (TTL) |
//! | `state/<unit>` | the same record, fleet's legacy namespace |
//! | `lease/engine-leader` | [`LeaseRecord`](super::model::LeaseRecord) (TTL) |
//! | `engine/version` | the cluster's engine version |

/// fleet's default key prefix.
pub const DEFAULT_PREFIX: &str = "/_coreos.com/fleet/";

/// Builds the keys of one registry (one prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// The prefix without its trailing slash (`/_coreos.com/fleet`).
    root: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new(DEFAULT_PREFIX)
    }
}

impl Keys {
    /// The keys under `prefix` (a leading slash is added and a trailing one dropped).
    pub fn new(prefix: &str) -> Keys {
        let trimmed = prefix.trim_matches('/');
        Keys {
            root: format!("/{trimmed}"),
        }
    }

    /// The prefix itself (`/_coreos.com/fleet`), the root of every watch.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// `job/`: one directory per unit.
    pub fn jobs(&self) -> String {
        format!("{}/job", self.root)
    }

    /// `job/<unit>`: everything about one unit but its contents.
    pub fn job(&self, unit: &str) -> String {
        format!("{}/job/{unit}", self.root)
    }

    /// `job/<unit>/object`.
    pub fn job_object(&self, unit: &str) -> String {
        format!("{}/job/{unit}/object", self.root)
    }

    /// `job/<unit>/target-state`: the desired state.
    pub fn target_state(&self, unit: &str) -> String {
        format!("{}/job/{unit}/target-state", self.root)
    }

    /// `job/<unit>/target`: the scheduled machine.
    pub fn target(&self, unit: &str) -> String {
        format!("{}/job/{unit}/target", self.root)
    }

    /// `job/<unit>/job-state`: the launch heartbeat.
    pub fn job_state(&self, unit: &str) -> String {
        format!("{}/job/{unit}/job-state", self.root)
    }

    /// `unit/`: the content-addressed unit files.
    pub fn blobs(&self) -> String {
        format!("{}/unit", self.root)
    }

    /// `unit/<sha1 hex>`.
    pub fn blob(&self, hash_hex: &str) -> String {
        format!("{}/unit/{hash_hex}", self.root)
    }

    /// `machines/`.
    pub fn machines(&self) -> String {
        format!("{}/machines", self.root)
    }

    /// `machines/<id>/object`: presence.
    pub fn machine_object(&self, id: &str) -> String {
        format!("{}/machines/{id}/object", self.root)
    }

    /// `machines/<id>/metadata`: a machine's dynamic metadata.
    pub fn machine_metadata_dir(&self, id: &str) -> String {
        format!("{}/machines/{id}/metadata", self.root)
    }

    /// `machines/<id>/capacity`: what the machine offers the scheduler (Flotilla's key).
    pub fn machine_capacity(&self, id: &str) -> String {
        format!("{}/machines/{id}/capacity", self.root)
    }

    /// `machines/<id>/metadata/<key>`: dynamic metadata.
    pub fn machine_metadata(&self, id: &str, key: &str) -> String {
        format!("{}/machines/{id}/metadata/{key}", self.root)
    }

    /// `states/`.
    pub fn states(&self) -> String {
        format!("{}/states", self.root)
    }

    /// `states/<unit>`: the unit's state on every machine that reported one.
    pub fn unit_states(&self, unit: &str) -> String {
        format!("{}/states/{unit}", self.root)
    }

    /// `states/<unit>/<machine>`.
    pub fn unit_state(&self, unit: &str, machine: &str) -> String {
        format!("{}/states/{unit}/{machine}", self.root)
    }

    /// `state/<unit>`: fleet's legacy state key, still written and deleted for old readers.
    pub fn legacy_state(&self, unit: &str) -> String {
        format!("{}/state/{unit}", self.root)
    }

    /// `lease/engine-leader`.
    pub fn engine_lease(&self) -> String {
        format!("{}/lease/engine-leader", self.root)
    }

    /// `engine/version`.
    pub fn engine_version(&self) -> String {
        format!("{}/engine/version", self.root)
    }

    /// What a key under the prefix is about, for routing watch events.
    pub fn classify<'k>(&self, key: &'k str) -> KeyKind<'k> {
        let Some(rest) = key
            .strip_prefix(self.root.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return KeyKind::Other;
        };
        let mut parts = rest.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("job"), Some(unit), field, None) => KeyKind::Job { unit, field },
            (Some("machines"), Some(id), field, _) => KeyKind::Machine { id, field },
            (Some("states"), Some(unit), machine, None) => KeyKind::State { unit, machine },
            (Some("lease"), Some("engine-leader"), None, None) => KeyKind::Lease,
            _ => KeyKind::Other,
        }
    }
}

/// The part of the registry a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind<'k> {
    /// `job/<unit>` or one of its fields (`object`, `target`, ...).
    Job {
        /// The unit.
        unit: &'k str,
        /// The field, `None` for the unit's directory itself.
        field: Option<&'k str>,
    },
    /// `machines/<id>` or below.
    Machine {
        /// The machine.
        id: &'k str,
        /// `object` or `metadata`, `None` for the directory itself.
        field: Option<&'k str>,
    },
    /// `states/<unit>` or `states/<unit>/<machine>`.
    State {
        /// The unit.
        unit: &'k str,
        /// The machine, `None` for the unit's directory.
        machine: Option<&'k str>,
    },
    /// The engine's lease.
    Lease,
    /// Anything else (unit blobs, the legacy namespace, keys of other tools).
    Other,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_fleet() {
        let k = Keys::default();
        assert_eq!(
            k.job_object("web@1.service"),
            "/_coreos.com/fleet/job/web@1.service/object"
        );
        assert_eq!(
            k.unit_state("a.service", "m1"),
            "/_coreos.com/fleet/states/a.service/m1"
        );
        assert_eq!(k.engine_lease(), "/_coreos.com/fleet/lease/engine-leader");
        assert_eq!(Keys::new("x").root(), "/x");
        assert_eq!(Keys::new("/x/y/").jobs(), "/x/y/job");
    }

    #[test]
    fn classify_routes_watch_events() {
        let k = Keys::default();
        assert_eq!(
            k.classify("/_coreos.com/fleet/job/a.service/target"),
            KeyKind::Job {
                unit: "a.service",
                field: Some("target")
            }
        );
        assert_eq!(
            k.classify("/_coreos.com/fleet/job/a.service"),
            KeyKind::Job {
                unit: "a.service",
                field: None
            }
        );
        assert_eq!(
            k.classify("/_coreos.com/fleet/machines/m1/metadata/zone"),
            KeyKind::Machine {
                id: "m1",
                field: Some("metadata")
            }
        );
        assert_eq!(
            k.classify("/_coreos.com/fleet/states/a.service/m1"),
            KeyKind::State {
                unit: "a.service",
                machine: Some("m1")
            }
        );
        assert_eq!(
            k.classify("/_coreos.com/fleet/lease/engine-leader"),
            KeyKind::Lease
        );
        assert_eq!(k.classify("/_coreos.com/fleet/unit/abc"), KeyKind::Other);
        assert_eq!(k.classify("/_coreos.com/fleetx/job/a"), KeyKind::Other);
        assert_eq!(k.classify("/other"), KeyKind::Other);
    }
}
