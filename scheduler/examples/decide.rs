//! Decides placements for a cluster described in JSON.
//!
//! `cargo run -p scheduler --example decide -- FILE` (`-` reads standard input). Input:
//!
//! ```json
//! {"machines": [{"id": "m1", "metadata": {"region": "eu"},
//!                "capacity": {"memory": "16G", "cpu": 400, "cpu_weight": 1000, "max_units": 100}}],
//!  "units": [{"name": "a.service", "contents": "<unit file text>", "desired": "launched",
//!             "machine": null, "strategy": "bin-pack"}],
//!  "strategy": "least-loaded"}
//! ```
//!
//! `capacity`, `desired`, `machine` and both `strategy` fields are optional. Unit contents
//! are parsed with unit-parser: the `[X-Fleet]` section (specifiers resolved for the unit's
//! name) and the `[Service]` resource settings. Output:
//! `{"placements": {"a.service": "m1", "b.service": null, "g.service": ["m1", "m2"]},
//! "unplaced": {"b.service": "<reason>"}}`.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use scheduler::{Capacity, ClusterState, Machine, Placement, Unit, UnitSpec};
use serde_json::{Map, Value, json};

/// A field that is present and not null.
fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn string(v: &Value, what: &str) -> Result<String> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{what}: expected a string, got {v}"))
}

fn number(v: &Value, what: &str) -> Result<u64> {
    if let Some(n) = v.as_u64() {
        return Ok(n);
    }
    // Sizes may be written as systemd does ("512M", "16G").
    if let Some(s) = v.as_str() {
        return match unit_parser::value::parse_memory_limit(s) {
            Ok(unit_parser::value::MemoryLimit::Bytes(b)) => Ok(b),
            _ => bail!("{what}: {s:?} is not a size"),
        };
    }
    bail!("{what}: expected a non-negative number, got {v}")
}

fn machine(v: &Value, i: usize) -> Result<Machine> {
    let what = format!("machines[{i}]");
    let obj = v
        .as_object()
        .ok_or_else(|| anyhow!("{what}: expected an object"))?;
    let id = string(
        field(obj, "id").ok_or_else(|| anyhow!("{what}: missing \"id\""))?,
        &what,
    )?;
    let mut m = Machine::new(id);
    if let Some(meta) = field(obj, "metadata") {
        let meta = meta
            .as_object()
            .ok_or_else(|| anyhow!("{what}.metadata: expected an object"))?;
        for (k, v) in meta {
            m.metadata
                .insert(k.clone(), string(v, &format!("{what}.metadata.{k}"))?);
        }
    }
    if let Some(cap) = field(obj, "capacity") {
        let cap = cap
            .as_object()
            .ok_or_else(|| anyhow!("{what}.capacity: expected an object"))?;
        let get = |k: &str| -> Result<Option<u64>> {
            field(cap, k)
                .map(|v| number(v, &format!("{what}.capacity.{k}")))
                .transpose()
        };
        m.capacity = Capacity {
            memory_bytes: get("memory")?,
            cpu_percent: get("cpu")?,
            cpu_weight: get("cpu_weight")?,
            max_units: get("max_units")?.map(|n| n.min(u64::from(u32::MAX)) as u32),
        };
    }
    Ok(m)
}

fn unit(v: &Value, i: usize) -> Result<Unit> {
    let what = format!("units[{i}]");
    let obj = v
        .as_object()
        .ok_or_else(|| anyhow!("{what}: expected an object"))?;
    let name = string(
        field(obj, "name").ok_or_else(|| anyhow!("{what}: missing \"name\""))?,
        &what,
    )?;
    let what = format!("unit {name}");
    let contents = match field(obj, "contents") {
        Some(c) => string(c, &what)?,
        None => String::new(),
    };
    let file = unit_parser::parse(&contents).with_context(|| format!("{what}: contents"))?;
    let mut spec = UnitSpec::from_unit_file(&name, &file);
    if let Some(d) = field(obj, "desired") {
        spec.desired = string(d, &what)?
            .parse()
            .with_context(|| format!("{what}: desired"))?;
    }
    if let Some(s) = field(obj, "strategy") {
        spec.strategy = Some(
            string(s, &what)?
                .parse()
                .with_context(|| format!("{what}: strategy"))?,
        );
    }
    let machine = field(obj, "machine")
        .map(|m| string(m, &format!("{what}: machine")))
        .transpose()?;
    Ok(Unit { spec, machine })
}

fn cluster(text: &str) -> Result<ClusterState> {
    let root: Value = serde_json::from_str(text).context("input is not JSON")?;
    let obj = root
        .as_object()
        .ok_or_else(|| anyhow!("input: expected an object"))?;
    let list = |k: &str| -> Result<&[Value]> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(_) => bail!("{k}: expected an array"),
        }
    };
    let mut c = ClusterState::default();
    for (i, m) in list("machines")?.iter().enumerate() {
        c.machines.push(machine(m, i)?);
    }
    for (i, u) in list("units")?.iter().enumerate() {
        c.units.push(unit(u, i)?);
    }
    if let Some(s) = field(obj, "strategy") {
        c.strategy = string(s, "strategy")?.parse()?;
    }
    Ok(c)
}

fn run() -> Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow!("usage: decide FILE (or - for standard input)"))?;
    let text = if path == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        s
    } else {
        std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?
    };
    let c = cluster(&text).with_context(|| format!("in {path}"))?;
    let d = scheduler::decide(&c)?;
    let placements: BTreeMap<&str, Value> = d
        .placements
        .iter()
        .map(|(name, p)| {
            let v = match p {
                Placement::Machine(m) => json!(m),
                Placement::Global(ms) => json!(ms),
                Placement::Unplaced => Value::Null,
            };
            (name.as_str(), v)
        })
        .collect();
    let unplaced: BTreeMap<&str, String> = d
        .unplaced
        .iter()
        .map(|(n, r)| (n.as_str(), r.to_string()))
        .collect();
    let out = json!({ "placements": placements, "unplaced": unplaced });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("decide: {e:#}");
            ExitCode::FAILURE
        }
    }
}
