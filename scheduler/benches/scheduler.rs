//! Criterion benches: losing one machine (about 100 units rescheduled) and a full
//! placement of the synthetic mix.
//!
//! The machine-loss bench reports the thread's CPU time (see `thread_cpu`); the full
//! placement reports wall time. Sizes: `SCHEDULER_BENCH_MACHINES` machines (default 1000) with 100 units each for the
//! machine-loss bench; `SCHEDULER_BENCH_UNITS` (default 20000) units over a tenth as many
//! machines for the full placement. `cargo bench -p scheduler -- --test` runs each once.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_main};
use scheduler::{ClusterState, Machine, Scheduler, Strategy, Unit, synth};

/// CPU time of this thread: these machines are shared, and wall time would measure the
/// neighbours' builds.
#[allow(unsafe_code)]
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cluster(units: usize, machines: usize) -> ClusterState {
    ClusterState {
        machines: synth::machines(machines, 7),
        units: synth::units(units, 7)
            .into_iter()
            .map(|spec| Unit {
                spec,
                machine: None,
            })
            .collect(),
        strategy: Strategy::LeastLoaded,
    }
}

fn machine_loss(c: &mut Criterion) {
    let machines = env_usize("SCHEDULER_BENCH_MACHINES", 1000);
    let snapshot = cluster(machines * 100, machines);
    let mut s = Scheduler::from_cluster(&snapshot).expect("synthetic cluster is valid");
    let ids: Vec<Machine> = snapshot.machines.clone();
    let mut next = 0usize;
    c.bench_function(
        &format!("machine_loss_100_units/{machines}_machines"),
        |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    // Round-robin victims; the machine rejoins (untimed) so the cluster keeps its size.
                    let victim = &ids[next % ids.len()];
                    next += 1;
                    let start = thread_cpu();
                    let changes = s.remove_machine(&victim.id).expect("victim is present");
                    spent += thread_cpu().saturating_sub(start);
                    black_box(changes);
                    s.add_machine(victim.clone()).expect("victim rejoins");
                }
                spent
            })
        },
    );
}

fn full_placement(c: &mut Criterion) {
    let units = env_usize("SCHEDULER_BENCH_UNITS", 20_000);
    let snapshot = cluster(units, (units / 100).max(1));
    let mut g = c.benchmark_group("full_placement");
    g.sample_size(10);
    g.bench_function(format!("{units}_units"), |b| {
        b.iter(|| Scheduler::from_cluster(black_box(&snapshot)).expect("valid"))
    });
    g.finish();
}

// The macro generates an undocumented pub fn; keep it in a module that allows that.
mod group {
    #![allow(missing_docs)]
    use super::{full_placement, machine_loss};
    criterion::criterion_group!(benches, machine_loss, full_placement);
}
criterion_main!(group::benches);
