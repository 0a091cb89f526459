//! The JSON shapes of fleet's `/fleet/v1` API (`schema/v1.json` in fleet), shared by the
//! server and the client.
//!
//! Every field is omitted when empty, and fields are declared in alphabetical order,
//! which is the order fleet's encoder writes them in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::registry::JobState;

/// One `Key=Value` line of a unit file, with its section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UnitOption {
    /// The option's name (`ExecStart`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// The section (`Service`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub section: String,
    /// The value.
    #[serde(default, deserialize_with = "null_as_default")]
    pub value: String,
}

impl UnitOption {
    /// An option from its section, name and value.
    pub fn new(section: &str, name: &str, value: &str) -> UnitOption {
        UnitOption {
            name: name.to_owned(),
            section: section.to_owned(),
            value: value.to_owned(),
        }
    }

    /// The options of a unit's contents, in file order.
    pub fn of(contents: &crate::registry::UnitContents) -> Vec<UnitOption> {
        contents
            .options()
            .iter()
            .map(|o| UnitOption {
                name: o.name.clone(),
                section: String::from_utf8_lossy(&o.section).into_owned(),
                value: String::from_utf8_lossy(&o.value).into_owned(),
            })
            .collect()
    }

    /// As unit-parser's option (what fleet hashes).
    pub fn to_go(&self) -> unit_parser::hash::GoOption {
        unit_parser::hash::GoOption::new(&self.section, &self.name, &self.value)
    }
}

/// A unit (`Unit` in fleet's schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Unit {
    /// fleet's derived current state; absent for global units.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "job_state_opt"
    )]
    pub current_state: Option<JobState>,
    /// The desired state.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "job_state_opt"
    )]
    pub desired_state: Option<JobState>,
    /// The machine the unit is scheduled on.
    #[serde(default, rename = "machineID", skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    /// The unit's name.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub name: String,
    /// The unit file's options, in file order.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub options: Vec<UnitOption>,
}

impl Unit {
    /// The API's form of a registry unit. `reported` says whether the unit's target machine
    /// published a state for it (`states/<unit>/<target>` exists), which fleet's current
    /// state derivation needs.
    pub fn of(u: &crate::registry::Unit, reported: bool) -> Unit {
        Unit {
            current_state: u.current_state(reported),
            desired_state: Some(u.desired),
            machine_id: u.target.clone(),
            name: u.name.clone(),
            options: UnitOption::of(&u.contents),
        }
    }
}

/// A page of units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct UnitPage {
    /// The token of the next page, when this one is full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
    /// The units, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<Unit>,
}

/// A unit's state on one machine (`UnitState`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UnitState {
    /// The hash of the unit file the machine loaded (40 hex digits).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
    /// The machine.
    #[serde(
        default,
        rename = "machineID",
        skip_serializing_if = "String::is_empty"
    )]
    pub machine_id: String,
    /// The unit.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// systemd's `ActiveState`.
    #[serde(
        default,
        rename = "systemdActiveState",
        skip_serializing_if = "String::is_empty"
    )]
    pub systemd_active_state: String,
    /// systemd's `LoadState`.
    #[serde(
        default,
        rename = "systemdLoadState",
        skip_serializing_if = "String::is_empty"
    )]
    pub systemd_load_state: String,
    /// systemd's `SubState`.
    #[serde(
        default,
        rename = "systemdSubState",
        skip_serializing_if = "String::is_empty"
    )]
    pub systemd_sub_state: String,
}

impl UnitState {
    /// The API's form of a published state.
    pub fn of(s: &crate::registry::PublishedState) -> UnitState {
        UnitState {
            hash: s.record.unit_hash.clone(),
            machine_id: s.machine_id.clone(),
            name: s.unit.clone(),
            systemd_active_state: s.record.active_state.clone(),
            systemd_load_state: s.record.load_state.clone(),
            systemd_sub_state: s.record.sub_state.clone(),
        }
    }
}

/// A page of unit states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct UnitStatePage {
    /// The token of the next page, when this one is full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
    /// The states, by unit then machine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<UnitState>,
}

/// A present machine (`Machine`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    /// The machine ID.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Configured and dynamic metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// The machine's public IP.
    #[serde(
        default,
        rename = "primaryIP",
        skip_serializing_if = "String::is_empty"
    )]
    pub primary_ip: String,
}

impl Machine {
    /// The API's form of a registry machine.
    pub fn of(m: &crate::registry::Machine) -> Machine {
        Machine {
            id: m.id.clone(),
            metadata: m.metadata.clone(),
            primary_ip: m.public_ip.clone(),
        }
    }
}

/// A page of machines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct MachinePage {
    /// The machines, by ID.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machines: Vec<Machine>,
    /// The token of the next page, when this one is full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// One operation of `PATCH /machines` (fleet.md §5.6): set or remove a dynamic metadata
/// key of a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MachineMetadataOp {
    /// `add`, `replace` or `remove`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub op: String,
    /// `/<machineID>/metadata/<key>`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub path: String,
    /// The value for `add` and `replace`.
    #[serde(default, alias = "Value")]
    pub value: MetadataValue,
}

impl MachineMetadataOp {
    /// The operation setting `key` of `machine` to `value`.
    pub fn set(machine: &str, key: &str, value: &str) -> MachineMetadataOp {
        MachineMetadataOp {
            op: "replace".into(),
            path: format!("/{machine}/metadata/{key}"),
            value: MetadataValue {
                value: value.to_owned(),
            },
        }
    }

    /// The operation removing `key` of `machine`.
    pub fn remove(machine: &str, key: &str) -> MachineMetadataOp {
        MachineMetadataOp {
            op: "remove".into(),
            path: format!("/{machine}/metadata/{key}"),
            value: MetadataValue::default(),
        }
    }
}

/// The value of a [`MachineMetadataOp`]. fleet's server reads `{"value": "x"}` while its
/// documentation shows a plain `"x"`: both are read, and it is written as fleet's server
/// reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct MetadataValue {
    /// The metadata value (empty for `remove`).
    pub value: String,
}

impl<'de> Deserialize<'de> for MetadataValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MetadataValue, D::Error> {
        #[derive(Deserialize)]
        struct Nested {
            #[serde(default, alias = "Value", deserialize_with = "null_as_default")]
            value: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Plain(String),
            Nested(Nested),
            Null(()),
        }
        let either = Either::deserialize(d).map_err(|_| {
            <D::Error as serde::de::Error>::custom(
                "metadata value must be a string or an object {\"value\": string}",
            )
        })?;
        match either {
            Either::Plain(value) | Either::Nested(Nested { value }) => Ok(MetadataValue { value }),
            Either::Null(()) => Ok(MetadataValue::default()),
        }
    }
}

/// Reads `null` as the type's default, as Go's decoder leaves a field untouched on `null`.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// fleet's error body: `{"error":{"code":400,"message":"..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// The HTTP status.
    pub code: u16,
    /// What went wrong (may be empty).
    #[serde(default)]
    pub message: String,
}

/// A desired or current state as fleet's JSON spells it.
mod job_state_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::registry::JobState;

    pub(super) fn serialize<S: Serializer>(v: &Option<JobState>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(j) => s.serialize_str(j.as_str()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<JobState>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_json_is_fleets() {
        let u = Unit {
            current_state: Some(JobState::Inactive),
            desired_state: Some(JobState::Loaded),
            machine_id: None,
            name: "hello.service".into(),
            options: vec![UnitOption::new("Unit", "Description", "Changed")],
        };
        let json = serde_json::to_string(&u).unwrap();
        assert_eq!(
            json,
            r#"{"currentState":"inactive","desiredState":"loaded","name":"hello.service","options":[{"name":"Description","section":"Unit","value":"Changed"}]}"#
        );
        assert_eq!(serde_json::from_str::<Unit>(&json).unwrap(), u);
        assert_eq!(serde_json::to_string(&UnitPage::default()).unwrap(), "{}");
        let err = serde_json::from_str::<Unit>(r#"{"desiredState":"running"}"#).unwrap_err();
        assert!(err.to_string().contains("running"), "{err}");
    }

    #[test]
    fn error_and_machine_json_are_fleets() {
        let e = ErrorBody {
            error: ErrorDetail {
                code: 400,
                message: "sentinel".into(),
            },
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"error":{"code":400,"message":"sentinel"}}"#
        );
        let m = Machine {
            id: "m1".into(),
            metadata: [("zone".to_string(), "a".to_string())].into(),
            primary_ip: "10.0.0.1".into(),
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"id":"m1","metadata":{"zone":"a"},"primaryIP":"10.0.0.1"}"#
        );
    }
}
