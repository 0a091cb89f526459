//! ProcessDriver figures: start and stop throughput for many trivial units, supervisor
//! memory per running unit, and state-change-to-subscriber latency, each next to a
//! baseline measured in the same run.
//!
//! `cargo bench -p systemd-driver --bench process_driver` runs 1,000 units (override with
//! `FLOTILLA_BENCH_UNITS`; `FLOTILLA_BENCH_NO_CGROUPS=1` for process groups only); with
//! `-- --test` (what CI runs) it uses 20 units. The state directory is a temporary directory
//! (`TMPDIR` moves it): a unit's files (PID record, log file) are created when it is
//! loaded, not when it starts, and their cost depends on the file system (see
//! docs/benchmarks.md).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use systemd_driver::{ActiveState, ProcessDriver, ProcessDriverConfig, UnitDriver};

/// CPU time (user + system, all threads) this process has used: /proc/self/stat fields
/// 14 and 15, in USER_HZ ticks, which procfs always reports at 100 per second.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rfind(')').map_or("", |i| &stat[i + 2..]);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    Duration::from_millis(f.iter().sum::<u64>() * 10)
}

fn per_unit_us(cpu: Duration, n: usize) -> f64 {
    cpu.as_secs_f64() * 1e6 / n as f64
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .map(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            })
        })
        .flatten()
        .unwrap_or(0)
}

/// Waits until every unit in `names` reported `active` (or `inactive`/`failed` when `up` is false).
async fn wait_all(sub: &mut systemd_driver::Subscription, names: &HashSet<String>, up: bool) {
    let mut done: HashSet<String> = HashSet::new();
    while done.len() < names.len() {
        let c = tokio::time::timeout(Duration::from_secs(60), sub.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "units did not settle within a minute: {} of {} done",
                    done.len(),
                    names.len()
                )
            })
            .expect("subscription");
        let Some(st) = c.state else { continue };
        let reached = if up {
            st.active == ActiveState::Active
        } else {
            matches!(st.active, ActiveState::Inactive | ActiveState::Failed)
        };
        if reached && names.contains(&c.name) {
            done.insert(c.name);
        }
    }
}

/// The floor under the driver's latency, on this machine at this moment: SIGKILL of a
/// sleeping child until a thread blocked in waitid() on its pidfd wakes (the dying process
/// and the waiting thread both have to be scheduled; nothing else is in the way).
fn raw_kill_latency(samples: usize) -> Vec<Duration> {
    use rustix::process::{Pid, PidfdFlags, Signal, WaitId, WaitIdOptions};
    use std::os::fd::AsFd;
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("1000")
            .spawn()
            .expect("spawn");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid")).expect("pid");
        let fd = rustix::process::pidfd_open(pid, PidfdFlags::empty()).expect("pidfd_open");
        let t = Instant::now();
        rustix::process::kill_process(pid, Signal::KILL).expect("kill");
        // NOWAIT: only wait for the exit; the child is reaped below.
        rustix::process::waitid(
            WaitId::PidFd(fd.as_fd()),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        )
        .expect("waitid");
        out.push(t.elapsed());
        child.wait().expect("wait");
    }
    out.sort();
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--test");
    let n: usize = std::env::var("FLOTILLA_BENCH_UNITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 20 } else { 1000 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // On a worker, as an agent's subscriber would be: block_on's own thread is one more
    // thread to wake (and, on a busy machine, to wait for) per event.
    rt.block_on(async move { tokio::spawn(run(n)).await })
        .expect("bench task");
}

async fn run(n: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    println!(
        "state directory: {}   load average: {}",
        dir.path().display(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim_end()
    );
    let mut cfg = ProcessDriverConfig::new(dir.path());
    // FLOTILLA_BENCH_NO_CGROUPS=1 measures the process-group-only mode.
    cfg.cgroups = std::env::var_os("FLOTILLA_BENCH_NO_CGROUPS").is_none();
    let driver = ProcessDriver::open(cfg).await.expect("open");
    let cg = driver.cgroup_support();
    println!(
        "process driver bench: {n} units, cgroups: {}",
        cg.root.as_ref().map_or_else(
            || format!("no ({})", cg.unavailable.clone().unwrap_or_default()),
            |r| format!("yes ({})", r.display())
        )
    );

    // Baseline: the same processes spawned and killed directly, no supervision.
    let c = cpu_time();
    let t = Instant::now();
    let mut children: Vec<std::process::Child> = (0..n)
        .map(|_| {
            std::process::Command::new("/bin/sleep")
                .arg("1000")
                .spawn()
                .expect("spawn")
        })
        .collect();
    let raw_spawn = n as f64 / t.elapsed().as_secs_f64();
    let raw_spawn_cpu = cpu_time() - c;
    let c = cpu_time();
    let t = Instant::now();
    for c in &mut children {
        c.kill().expect("kill");
    }
    for c in &mut children {
        c.wait().expect("wait");
    }
    let raw_kill = n as f64 / t.elapsed().as_secs_f64();
    let raw_kill_cpu = cpu_time() - c;
    let samples = (n / 5).clamp(1, 200);
    let raw_lat = raw_kill_latency(samples);

    let names: HashSet<String> = (0..n).map(|i| format!("bench-{i}.service")).collect();
    let t = Instant::now();
    for name in &names {
        driver
            .load(name, "[Service]\nExecStart=/bin/sleep 1000\n")
            .await
            .expect("load");
    }
    let load_rate = n as f64 / t.elapsed().as_secs_f64();

    let rss_before = rss_kib();
    let mut sub = driver.subscribe().await.expect("subscribe");
    let c = cpu_time();
    let t = Instant::now();
    for name in &names {
        driver.start(name).await.expect("start");
    }
    wait_all(&mut sub, &names, true).await;
    let start_rate = n as f64 / t.elapsed().as_secs_f64();
    let start_cpu = cpu_time() - c;
    let rss_after = rss_kib();
    let per_unit_kib = rss_after.saturating_sub(rss_before) as f64 / n as f64;

    // Latency: an external SIGKILL of a unit's main process, until the subscriber hears.
    // Sampled on a fifth of the units (at most 200, so that p99 is not just the maximum);
    // the others are stopped below.
    let killed: HashSet<String> = names.iter().take(samples).cloned().collect();
    let mut lat = Vec::with_capacity(samples);
    let mut fanout = Vec::with_capacity(samples);
    for name in &killed {
        let pid = driver
            .status(name)
            .await
            .expect("status")
            .main_pid
            .expect("main pid");
        let t = Instant::now();
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(i32::try_from(pid).expect("pid")).expect("pid"),
            rustix::process::Signal::KILL,
        )
        .expect("kill");
        loop {
            let c = sub.recv().await.expect("subscription");
            if &c.name == name
                && c.state
                    .as_ref()
                    .is_some_and(|s| s.active != ActiveState::Active)
            {
                lat.push(t.elapsed());
                fanout.push(c.at.elapsed());
                break;
            }
        }
    }
    lat.sort();
    fanout.sort();

    let running: HashSet<String> = names.difference(&killed).cloned().collect();
    let c = cpu_time();
    let t = Instant::now();
    for name in &running {
        driver.stop(name).await.expect("stop");
    }
    wait_all(&mut sub, &running, false).await;
    let stop_rate = running.len() as f64 / t.elapsed().as_secs_f64();
    let stop_cpu = cpu_time() - c;
    driver.stop_all().await;

    println!("load:  {load_rate:>9.0} units/s");
    println!(
        "start: {start_rate:>9.0} units/s (to active/running)   raw spawn of the same process: {raw_spawn:.0}/s   ratio {:.2}",
        start_rate / raw_spawn
    );
    println!(
        "stop:  {stop_rate:>9.0} units/s (to inactive/dead)      raw kill+reap:                {raw_kill:.0}/s   ratio {:.2}",
        stop_rate / raw_kill
    );
    println!(
        "CPU of this process per unit (10 ms ticks): start {:.0} us (raw spawn {:.0} us), stop {:.0} us (raw kill+reap {:.0} us)",
        per_unit_us(start_cpu, n),
        per_unit_us(raw_spawn_cpu, n),
        per_unit_us(stop_cpu, running.len()),
        per_unit_us(raw_kill_cpu, n)
    );
    println!(
        "  => on one core of supervisor CPU: start {:.0} units/s, stop {:.0} units/s",
        1e6 / per_unit_us(start_cpu, n).max(1.0),
        1e6 / per_unit_us(stop_cpu, running.len()).max(1.0)
    );
    println!(
        "memory: {per_unit_kib:.1} KiB supervisor RSS per running unit ({rss_before} -> {rss_after} KiB)"
    );
    println!(
        "latency (SIGKILL of main -> subscriber sees the change), {samples} samples: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        lat[lat.len() - 1]
    );
    println!(
        "   baseline, SIGKILL -> a thread in waitid() on the process's pidfd wakes: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        percentile(&raw_lat, 0.5),
        percentile(&raw_lat, 0.9),
        percentile(&raw_lat, 0.99),
        raw_lat[raw_lat.len() - 1]
    );
    println!(
        "   of which driver -> subscriber fan-out: p50 {:?}  p99 {:?}",
        percentile(&fanout, 0.5),
        percentile(&fanout, 0.99)
    );
}
