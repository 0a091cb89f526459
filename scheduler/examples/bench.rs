//! Places the synthetic "realistic mix" (see `scheduler::synth`) and reports throughput,
//! the memory the scheduler's own structures hold, and the cost of losing a machine.
//!
//! `cargo run --release -p scheduler --example bench -- --units 1000000 --machines 10000`
//!
//! The last line is `placed N units on M machines in S s (R units/s), peak RSS X MiB`,
//! where `S` is the CPU time of the placing thread (`CLOCK_THREAD_CPUTIME_ID`): the
//! machines this runs on are shared, so wall time (printed too) measures the neighbours.
//! Also printed: the scheduler's own heap per machine and per unit (counted by a global
//! allocator), 100 machine losses, and fleet's algorithm on a prefix of the same units.
// A counting allocator is the only way to measure the scheduler's own heap exactly; its
// one unsafe impl forwards to the system allocator unchanged.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use scheduler::{ClusterState, Machine, Scheduler, Strategy, Unit, synth};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to `System` with the caller's layout and pointer, so the
// GlobalAlloc contract is exactly System's; the counter has no effect on the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same layout the caller gave us.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn arg(args: &[String], name: &str, default: usize) -> Result<usize, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.replace('_', "").parse().ok())
            .ok_or_else(|| format!("{name} needs a number")),
    }
}

/// CPU time of this thread: the machine is shared, so wall time overstates our cost.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Fleet's own algorithm, for comparison: for every unit, build each machine's load,
/// sort all machines by (load, ID) and take the first that passes the constraint checks
/// (metadata, and conflicts by scanning the machine's units with globs). Returns the
/// CPU seconds spent placing the first `n` units of `cluster`.
fn fleet_style(cluster: &ClusterState, n: usize) -> f64 {
    use scheduler::glob::Glob;
    use std::collections::BTreeMap;
    let start = thread_cpu();
    let mut on: BTreeMap<&str, Vec<&scheduler::UnitSpec>> = BTreeMap::new();
    let mut units: Vec<&scheduler::UnitSpec> = cluster
        .units
        .iter()
        .map(|u| &u.spec)
        .filter(|u| !u.global)
        .take(n)
        .collect();
    units.sort_by(|a, b| a.name.cmp(&b.name));
    for u in units {
        let mut agents: Vec<(usize, &str, &Machine)> = cluster
            .machines
            .iter()
            .map(|m| (on.get(m.id.as_str()).map_or(0, Vec::len), m.id.as_str(), m))
            .collect();
        agents.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let able = agents.into_iter().find(|(_, _, m)| {
            let meta_ok = u.machine_metadata.iter().all(|(k, _)| {
                u.machine_metadata
                    .iter()
                    .any(|(k2, v)| k2 == k && m.metadata.get(k) == Some(v))
            });
            let conflict = on.get(m.id.as_str()).is_some_and(|xs| {
                xs.iter().any(|x| {
                    u.conflicts.iter().any(|p| Glob::new(p).matches(&x.name))
                        || x.conflicts.iter().any(|p| Glob::new(p).matches(&u.name))
                })
            });
            meta_ok && !conflict
        });
        if let Some((_, id, _)) = able {
            on.entry(id).or_default().push(u);
        }
    }
    thread_cpu() - start
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = (|| -> Result<(usize, usize, usize), String> {
        Ok((
            arg(&args, "--units", 100_000)?,
            arg(&args, "--machines", 1_000)?,
            arg(&args, "--seed", 1)?,
        ))
    })();
    let (n_units, n_machines, seed) = match parsed {
        Ok(v) => v,
        Err(e) => {
            eprintln!("bench: {e}\nusage: bench [--units N] [--machines M] [--seed S]");
            return ExitCode::from(2);
        }
    };
    let cluster = ClusterState {
        machines: synth::machines(n_machines, seed as u64),
        units: synth::units(n_units, seed as u64)
            .into_iter()
            .map(|spec| Unit {
                spec,
                machine: None,
            })
            .collect(),
        strategy: Strategy::LeastLoaded,
    };
    // Machines alone first, to split the scheduler's memory into per-machine and per-unit.
    let machines_only = ClusterState {
        machines: cluster.machines.clone(),
        ..ClusterState::default()
    };
    let before = LIVE.load(Ordering::Relaxed);
    let held_machines = match Scheduler::from_cluster(&machines_only) {
        Ok(s) => {
            let n = LIVE.load(Ordering::Relaxed).saturating_sub(before);
            drop(s);
            n
        }
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    drop(machines_only);
    let before = LIVE.load(Ordering::Relaxed);
    let (start, cpu_start) = (Instant::now(), thread_cpu());
    let mut s = match Scheduler::from_cluster(&cluster) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (wall, secs) = (start.elapsed().as_secs_f64(), thread_cpu() - cpu_start);
    let held = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    let snapshot_machines = cluster.machines.clone();
    // Fleet's per-decision sort over all machines, on a prefix of the same units.
    let sample = (n_units / 100).clamp(1, 5_000);
    let fleet_secs = fleet_style(&cluster, sample);
    drop(cluster);

    let d = s.decision();
    let placed = d.placements.len() - d.unplaced.len();
    let per_unit = held.saturating_sub(held_machines) as f64 / n_units.max(1) as f64;
    println!(
        "units {n_units}, machines {n_machines}, unplaced {}",
        d.unplaced.len()
    );
    println!("full placement: {secs:.3} s CPU on one thread, {wall:.3} s wall");
    for (name, why) in d.unplaced.iter().take(3) {
        println!("  unplaced {name}: {why}");
    }
    println!(
        "scheduler structures: {:.1} MiB: {:.0} bytes per machine (machines alone), {per_unit:.0} bytes per unit (the rest)",
        held as f64 / (1 << 20) as f64,
        held_machines as f64 / n_machines.max(1) as f64
    );
    drop(d);

    // Machine loss: 100 different machines leave one at a time (each rejoins, untimed).
    let victims: Vec<Machine> = snapshot_machines
        .iter()
        .step_by((n_machines / 100).max(1))
        .take(100)
        .cloned()
        .collect();
    let mut cpu = Vec::new();
    let mut moved = 0usize;
    for v in &victims {
        let c = thread_cpu();
        match s.remove_machine(&v.id) {
            Ok(changes) => moved += changes.iter().filter(|c| !c.global).count(),
            Err(e) => eprintln!("bench: {e}"),
        }
        cpu.push(thread_cpu() - c);
        if let Err(e) = s.add_machine(v.clone()) {
            eprintln!("bench: {e}");
        }
    }
    cpu.sort_by(f64::total_cmp);
    if !cpu.is_empty() {
        println!(
            "machine loss: {:.0} units rescheduled per loss, CPU median {:.3} ms, max {:.3} ms ({} losses)",
            moved as f64 / cpu.len() as f64,
            cpu[cpu.len() / 2] * 1e3,
            cpu[cpu.len() - 1] * 1e3,
            cpu.len()
        );
    }
    // Incremental unit add with a pattern never seen before (scans unit names once), and
    // a dry run of a machine loss (clones the whole scheduler).
    let mut spec = scheduler::UnitSpec::new("brand-new@1.service");
    spec.conflicts = vec!["brand-new@*.service".into()];
    let c = thread_cpu();
    let added = s.add_unit(spec).map(|ch| ch.len());
    let add_ms = (thread_cpu() - c) * 1e3;
    let c = thread_cpu();
    let preview = s.preview_remove_machine(&victims[0].id).map(|ch| ch.len());
    let preview_ms = (thread_cpu() - c) * 1e3;
    match (added, preview) {
        (Ok(_), Ok(n)) => println!(
            "add one unit with a new Conflicts pattern: {add_ms:.3} ms CPU; dry run of a machine loss ({n} changes): {preview_ms:.1} ms CPU"
        ),
        (Err(e), _) | (_, Err(e)) => eprintln!("bench: {e}"),
    }
    let fleet_rate = sample as f64 / fleet_secs;
    println!(
        "fleet's algorithm (sort all machines per unit), first {sample} units: {fleet_rate:.0} units/s CPU; this scheduler is {:.0}x faster",
        (n_units as f64 / secs) / fleet_rate
    );
    println!(
        "placed {placed} units on {n_machines} machines in {secs:.3} s ({:.0} units/s), peak RSS {:.0} MiB",
        n_units as f64 / secs,
        peak_rss_mib()
    );
    ExitCode::SUCCESS
}
