//! The columns of fleetctl's list commands (`--fields`, fleet.md §2.5) and the machine
//! legend.

use crate::api::types::{Machine, Unit, UnitState};

/// The machine legend of `machine`/`target` columns and of "Unit X launched on ...": the
/// first 8 characters of the ID and `...`, then `/<ip>` when the IP is known; with `full`
/// the whole ID.
pub fn machine_legend(id: &str, ip: Option<&str>, full: bool) -> String {
    let mut s = if full {
        id.to_owned()
    } else {
        let short: String = id.chars().take(8).collect();
        format!("{short}...")
    };
    if let Some(ip) = ip.filter(|ip| !ip.is_empty()) {
        s.push('/');
        s.push_str(ip);
    }
    s
}

/// A unit's hash as a column: 7 hex digits, 40 with `--full`.
fn hash_cell(hash: &str, full: bool) -> String {
    if hash.is_empty() {
        return "-".into();
    }
    if full {
        hash.to_owned()
    } else {
        hash.chars().take(7).collect()
    }
}

/// Why `--fields` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldsError {
    /// An empty list.
    #[error("Must define output format")]
    Empty,
    /// A field the command does not have.
    #[error("Invalid key in output format: {0:?}")]
    Unknown(String),
}

/// The fields of `list-units`.
pub const UNIT_STATE_FIELDS: [&str; 6] = ["unit", "machine", "active", "sub", "load", "hash"];
/// `list-units`'s default `--fields`.
pub const UNIT_STATE_DEFAULT: &str = "unit,machine,active,sub";

/// The fields of `list-unit-files`.
pub const UNIT_FILE_FIELDS: [&str; 8] = [
    "unit", "hash", "dstate", "state", "target", "tmachine", "global", "desc",
];
/// `list-unit-files`'s default `--fields`.
pub const UNIT_FILE_DEFAULT: &str = "unit,hash,dstate,state,target";

/// The fields of `list-machines`.
pub const MACHINE_FIELDS: [&str; 3] = ["machine", "ip", "metadata"];
/// `list-machines`' default `--fields`.
pub const MACHINE_DEFAULT: &str = "machine,ip,metadata";

/// The IP of a machine, if it is present.
fn ip_of<'m>(machines: &'m [Machine], id: &str) -> Option<&'m str> {
    machines
        .iter()
        .find(|m| m.id == id)
        .map(|m| m.primary_ip.as_str())
}

/// One `list-units` cell.
pub fn unit_state_cell(s: &UnitState, field: &str, machines: &[Machine], full: bool) -> String {
    match field {
        "unit" => s.name.clone(),
        "machine" if s.machine_id.is_empty() => "-".into(),
        "machine" => machine_legend(&s.machine_id, ip_of(machines, &s.machine_id), full),
        // systemd's words as reported, even none.
        "active" => s.systemd_active_state.clone(),
        "sub" => s.systemd_sub_state.clone(),
        "load" => s.systemd_load_state.clone(),
        "hash" => hash_cell(&s.hash, full),
        _ => "-".into(),
    }
}

/// One `list-unit-files` cell. `hash` is the unit's (computed from its options).
pub fn unit_file_cell(
    u: &Unit,
    hash: &str,
    global: bool,
    field: &str,
    machines: &[Machine],
    full: bool,
) -> String {
    match field {
        "unit" => u.name.clone(),
        "hash" => hash_cell(hash, full),
        "dstate" => u
            .desired_state
            .map_or_else(|| "-".into(), |s| s.as_str().to_owned()),
        "state" if global => "-".into(),
        "state" => u
            .current_state
            .map_or_else(|| "-".into(), |s| s.as_str().to_owned()),
        "target" | "tmachine" if global => "global".into(),
        "target" | "tmachine" => match &u.machine_id {
            Some(id) => machine_legend(id, ip_of(machines, id), full),
            None => "-".into(),
        },
        "global" => global.to_string(),
        "desc" => u
            .options
            .iter()
            .find(|o| o.section == "Unit" && o.name == "Description")
            .map_or_else(|| "-".into(), |o| o.value.clone()),
        _ => "-".into(),
    }
}

/// One `list-machines` cell.
pub fn machine_cell(m: &Machine, field: &str, full: bool) -> String {
    match field {
        "machine" => machine_legend(&m.id, None, full),
        "ip" if m.primary_ip.is_empty() => "-".into(),
        "ip" => m.primary_ip.clone(),
        "metadata" if m.metadata.is_empty() => "-".into(),
        "metadata" => m
            .metadata
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legends_are_fleets() {
        let id = "595989bb4e7b4f2b8ae83b8bfe5d8a4f";
        assert_eq!(
            machine_legend(id, Some("5.6.7.8"), false),
            "595989bb.../5.6.7.8"
        );
        assert_eq!(machine_legend(id, None, false), "595989bb...");
        assert_eq!(machine_legend(id, Some(""), true), id);
        assert_eq!(
            machine_legend(id, Some("5.6.7.8"), true),
            format!("{id}/5.6.7.8")
        );
    }
}
