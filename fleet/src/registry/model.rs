//! The values fleet 1.0 stores under its keys, byte for byte as its Go structs encode them
//! (field names, field order, `null` for absent maps), so a registry written by either
//! implementation is read by the other.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use unit_parser::hash::UnitHash;

/// `job/<unit>/object`: the unit's name and the hash of its contents. fleet encodes the
/// SHA-1 as a JSON array of its 20 byte values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobObject {
    /// The unit's name.
    #[serde(rename = "Name")]
    pub name: String,
    /// The SHA-1 of the normalised unit file, as 20 numbers.
    #[serde(rename = "UnitHash")]
    pub unit_hash: [u8; 20],
}

impl JobObject {
    /// The hash as unit-parser's type.
    pub fn hash(&self) -> UnitHash {
        UnitHash(self.unit_hash)
    }
}

/// `unit/<sha1 hex>`: a normalised unit file, shared by every unit with the same contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitBlob {
    /// The normalised text (what `fleetctl cat` prints).
    #[serde(rename = "Raw")]
    pub raw: String,
}

/// `machines/<id>/object`: a machine's presence, with the metadata from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineRecord {
    /// The machine ID (`/etc/machine-id`).
    #[serde(rename = "ID")]
    pub id: String,
    /// The IP others reach it at; empty when unknown.
    #[serde(rename = "PublicIP", default)]
    pub public_ip: String,
    /// Configured metadata (`null` in fleet's JSON when there is none).
    #[serde(rename = "Metadata", default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// fleet's capability flags (`DISABLE_ENGINE`, `GRPC`).
    #[serde(rename = "Capabilities", default)]
    pub capabilities: Option<BTreeMap<String, bool>>,
    /// The fleet version the machine runs.
    #[serde(rename = "Version", default)]
    pub version: String,
}

/// `states/<unit>/<machine>` (and the legacy `state/<unit>`): what systemd says about a
/// unit on one machine, published by that machine's agent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UnitStateRecord {
    /// systemd's `LoadState` (`loaded`, `not-found`, ...).
    #[serde(rename = "loadState", default)]
    pub load_state: String,
    /// systemd's `ActiveState` (`active`, `failed`, ...).
    #[serde(rename = "activeState", default)]
    pub active_state: String,
    /// systemd's `SubState` (`running`, `dead`, ...).
    #[serde(rename = "subState", default)]
    pub sub_state: String,
    /// The reporting machine; fleet fills only its `ID`.
    #[serde(rename = "machineState", default)]
    pub machine_state: Option<MachineRecord>,
    /// The hash (40 hex digits) of the unit file the agent loaded.
    #[serde(rename = "unitHash", default)]
    pub unit_hash: String,
}

impl UnitStateRecord {
    /// The reporting machine's ID, empty when the record names none.
    pub fn machine_id(&self) -> &str {
        self.machine_state.as_ref().map_or("", |m| m.id.as_str())
    }
}

/// `machines/<id>/capacity`: what a machine offers the scheduler (Flotilla's key; fleet
/// had no resource model and ignores it). Absent fields are unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapacityRecord {
    /// Memory units may reserve (`MemoryMax=`/`MemoryHigh=`), in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// CPU units may reserve (`CPUQuota=`), in percent of one CPU (200 = two CPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<u64>,
    /// How many units the machine takes at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_units: Option<u32>,
}

impl CapacityRecord {
    /// The scheduler's view.
    pub fn capacity(&self) -> scheduler::Capacity {
        scheduler::Capacity {
            memory_bytes: self.memory_bytes,
            cpu_percent: self.cpu_percent,
            cpu_weight: None,
            max_units: self.max_units,
        }
    }
}

/// `lease/engine-leader`: who runs the engine, and the engine version it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The leader's machine ID.
    #[serde(rename = "MachineID")]
    pub machine_id: String,
    /// The leader's engine version.
    #[serde(rename = "Version")]
    pub version: u32,
}

impl LeaseRecord {
    /// Reads a lease value; fleet reads a value that is not JSON as a bare machine ID of
    /// version 0 (what fleet before 0.10 wrote).
    pub fn parse(value: &str) -> LeaseRecord {
        serde_json::from_str(value).unwrap_or_else(|_| LeaseRecord {
            machine_id: value.to_owned(),
            version: 0,
        })
    }

    /// The JSON fleet writes.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a lease serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_object_hash_is_a_byte_array() {
        let h =
            unit_parser::hash::fleet_hash_bytes(b"[Service]\nExecStart=/bin/sleep 100\n").unwrap();
        let o = JobObject {
            name: "a.service".into(),
            unit_hash: h.0,
        };
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(
            json,
            r#"{"Name":"a.service","UnitHash":[28,111,182,243,104,75,175,176,193,115,216,184,185,87,206,255,3,17,128,193]}"#
        );
        assert_eq!(serde_json::from_str::<JobObject>(&json).unwrap(), o);
        assert_eq!(o.hash().short(), "1c6fb6f");
    }

    #[test]
    fn machine_record_encodes_like_go() {
        let m = MachineRecord {
            id: "m1".into(),
            ..MachineRecord::default()
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"ID":"m1","PublicIP":"","Metadata":null,"Capabilities":null,"Version":""}"#
        );
        let full: MachineRecord = serde_json::from_str(
            r#"{"ID":"m2","PublicIP":"10.0.0.2","Metadata":{"zone":"a"},"Capabilities":{"DISABLE_ENGINE":false,"GRPC":false},"Version":"1.0.0"}"#,
        )
        .unwrap();
        assert_eq!(full.metadata.unwrap()["zone"], "a");
        assert_eq!(full.version, "1.0.0");
    }

    #[test]
    fn capacity_json() {
        let c = CapacityRecord {
            memory_bytes: Some(1 << 30),
            cpu_percent: Some(200),
            max_units: None,
        };
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"{"memoryBytes":1073741824,"cpuPercent":200}"#);
        assert_eq!(serde_json::from_str::<CapacityRecord>(&json).unwrap(), c);
        assert_eq!(c.capacity().cpu_percent, Some(200));
        assert_eq!(c.capacity().max_units, None);
    }

    #[test]
    fn lease_reads_json_and_bare_ids() {
        let l = LeaseRecord {
            machine_id: "m1".into(),
            version: 1,
        };
        assert_eq!(l.to_json(), r#"{"MachineID":"m1","Version":1}"#);
        assert_eq!(LeaseRecord::parse(&l.to_json()), l);
        assert_eq!(
            LeaseRecord::parse("abc"),
            LeaseRecord {
                machine_id: "abc".into(),
                version: 0
            }
        );
    }

    #[test]
    fn state_record_round_trips_and_tolerates_missing_fields() {
        let r: UnitStateRecord = serde_json::from_str(
            r#"{"loadState":"loaded","activeState":"active","subState":"running","machineState":{"ID":"m1","PublicIP":"","Metadata":null,"Capabilities":null,"Version":""},"unitHash":"1c6fb6f3684bafb0c173d8b8b957ceff031180c1"}"#,
        )
        .unwrap();
        assert_eq!(r.machine_id(), "m1");
        let back: UnitStateRecord =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        let sparse: UnitStateRecord = serde_json::from_str(r#"{"loadState":"loaded"}"#).unwrap();
        assert_eq!(sparse.machine_id(), "");
    }
}
