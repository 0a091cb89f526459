//! Test helpers: a compact text form for machines and units, and a cluster model that
//! mirrors the scheduler's inputs so a full `decide` can be compared with incremental steps.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use scheduler::{Decision, Machine, Placement, Scheduler, Strategy, UnitSpec};

/// Parses a size such as `512M`, `2G` or `100` (bytes).
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'M') => (&s[..s.len() - 1], 1 << 20),
        Some(b'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .map(|n| n * mult)
        .map_err(|e| format!("bad size {s:?}: {e}"))
}

/// `machine ID [k=v ...] [mem=SIZE] [cpu=PCT] [weight=N] [max=N]` (after the keyword).
pub(crate) fn parse_machine(words: &[&str]) -> Result<Machine, String> {
    let (id, rest) = words.split_first().ok_or("machine needs an ID")?;
    let mut m = Machine::new(*id);
    for w in rest {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| format!("expected key=value, got {w:?}"))?;
        let num = || v.parse::<u64>().map_err(|e| format!("{w}: {e}"));
        match k {
            "mem" => m.capacity.memory_bytes = Some(parse_bytes(v)?),
            "cpu" => m.capacity.cpu_percent = Some(num()?),
            "weight" => m.capacity.cpu_weight = Some(num()?),
            "max" => m.capacity.max_units = Some(num()? as u32),
            _ => {
                m.metadata.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    Ok(m)
}

/// `unit NAME [Option=value ...] [at=MACHINE]`, options as in `[X-Fleet]` plus
/// `Memory=`, `CPUQuota=`, `CPUWeight=`, `Strategy=`, `Desired=`. Returns the spec and the
/// current machine.
pub(crate) fn parse_unit(words: &[&str]) -> Result<(UnitSpec, Option<String>), String> {
    let (name, rest) = words.split_first().ok_or("unit needs a name")?;
    let mut u = UnitSpec::new(*name);
    let mut at = None;
    for w in rest {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| format!("expected Option=value, got {w:?}"))?;
        match k {
            "MachineID" => u.machine_id = Some(v.to_owned()),
            "MachineOf" => u.machine_of.push(v.to_owned()),
            "MachineMetadata" => {
                let (mk, mv) = v
                    .split_once('=')
                    .ok_or_else(|| format!("bad metadata {v:?}"))?;
                u.machine_metadata.push((mk.to_owned(), mv.to_owned()));
            }
            "Conflicts" => u.conflicts.push(v.to_owned()),
            "Replaces" => u.replaces.push(v.to_owned()),
            "Global" => u.global = v == "true",
            "Memory" => u.demand.memory_bytes = parse_bytes(v)?,
            "CPUQuota" => {
                u.demand.cpu_percent = v
                    .trim_end_matches('%')
                    .parse()
                    .map_err(|e| format!("{w}: {e}"))?
            }
            "CPUWeight" => u.demand.cpu_weight = v.parse().map_err(|e| format!("{w}: {e}"))?,
            "Strategy" => u.strategy = Some(v.parse().map_err(|e| format!("{e}"))?),
            "Desired" => u.desired = v.parse().map_err(|e| format!("{e}"))?,
            "at" => at = Some(v.to_owned()),
            _ => return Err(format!("unknown unit option {k:?}")),
        }
    }
    Ok((u, at))
}

/// Renders a decision one unit per line.
pub(crate) fn render(d: &Decision) -> String {
    let mut out = String::new();
    for (name, p) in &d.placements {
        match p {
            Placement::Machine(m) => writeln!(out, "{name}: {m}"),
            Placement::Global(ms) if ms.is_empty() => {
                writeln!(
                    out,
                    "{name}: global [] ({})",
                    d.unplaced
                        .get(name)
                        .map(|r| r.to_string())
                        .unwrap_or_default()
                )
            }
            Placement::Global(ms) => writeln!(out, "{name}: global [{}]", ms.join(" ")),
            Placement::Unplaced => match d.unplaced.get(name) {
                Some(r) => writeln!(out, "{name}: - ({r})"),
                None => writeln!(out, "{name}: - (inactive)"),
            },
        }
        .unwrap_or(());
    }
    out
}

/// A mirror of the scheduler's inputs, to rebuild a snapshot at any point.
#[derive(Debug, Clone, Default)]
pub(crate) struct Model {
    /// Machines by ID.
    pub(crate) machines: BTreeMap<String, Machine>,
    /// Units by name.
    pub(crate) units: BTreeMap<String, UnitSpec>,
    /// The cluster strategy.
    pub(crate) strategy: Strategy,
}

impl Model {
    /// The snapshot with the scheduler's current placements.
    pub(crate) fn snapshot(&self, s: &Scheduler) -> scheduler::ClusterState {
        scheduler::ClusterState {
            machines: self.machines.values().cloned().collect(),
            units: self
                .units
                .values()
                .map(|spec| scheduler::Unit {
                    spec: spec.clone(),
                    machine: s.machine_of(&spec.name).map(str::to_owned),
                })
                .collect(),
            strategy: self.strategy.clone(),
        }
    }
}
