//! Issue 20's two figures for fleet as a whole, on a cluster of fleetd processes on
//! loopback (the whole-system tests' harness, `tests/fleet_util.rs`):
//!
//! * **start → active**: from `fleetctl start --no-block` of K units (in process, against
//!   the first machine's API: a create and a desired-state write per unit) until the API
//!   reports every one of them `loaded/active/running` (a global unit on every machine);
//! * **kill → active elsewhere**: from SIGKILL of a machine (its unit processes die with
//!   it) until each unit it ran is reported `loaded/active/running` on another machine;
//!   rounds alternate between a machine that does not hold the engine lease and the one
//!   that does, as fleet 1.0's recording (`/work/oracle/recordings/05-timing`) did. The
//!   presence's disappearance and the unit's new target are timed too.
//!
//! The API is polled every 50 ms (fleet's recording polled the store as often). Every
//! figure is printed as median, min and max over the rounds, with the configuration.
//!
//! ```sh
//! cargo test -p bins --bench fleet_cluster            # R rounds of each (see below)
//! cargo test -p bins --bench fleet_cluster -- --test  # one tiny round (what CI runs)
//! ```
//!
//! Environment: `FLOTILLA_BENCH_MACHINES` (5: three store members, the rest agent-only),
//! `FLOTILLA_BENCH_TTL` (agent TTL in seconds, 5 as in fleet's recording),
//! `FLOTILLA_BENCH_RECONCILE` (engine reconcile interval in seconds, fleet's default 2),
//! `FLOTILLA_BENCH_ROUNDS` (10), `FLOTILLA_BENCH_START` (the units started: `examples`,
//! fleetd dev's example units, the default; `plain:K`, K unconstrained units as fleet's
//! recording's t1..t4; `conflicts:K`, K instances of a template with `Conflicts`). The
//! failover rounds start one unconstrained unit per machine, so each machine, the engine
//! leader too, runs exactly one.

#[path = "../tests/fleet_util.rs"]
mod fleet_util;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fleet::client::StateFilter;
use fleet_util::{Cluster, Options, fleetctl_at, is_running};

/// How often the API is polled.
const POLL: Duration = Duration::from_millis(50);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What is started in the start → active rounds.
#[derive(Debug, Clone)]
enum Start {
    Examples,
    Plain(usize),
    Conflicts(usize),
}

impl Start {
    fn parse(s: &str) -> Start {
        match s.split_once(':') {
            Some(("plain", k)) => Start::Plain(k.parse().expect("plain:K")),
            Some(("conflicts", k)) => Start::Conflicts(k.parse().expect("conflicts:K")),
            _ if s == "examples" => Start::Examples,
            _ => panic!("FLOTILLA_BENCH_START: examples, plain:K or conflicts:K"),
        }
    }

    fn describe(&self) -> String {
        match self {
            Start::Examples => format!(
                "fleetd dev's example units ({}: web@1..3 with Conflicts, their MachineOf sidekicks, a global monitor, db pinned by metadata)",
                fleet::dev::EXAMPLE_UNITS.len()
            ),
            Start::Plain(k) => format!("{k} unconstrained units"),
            Start::Conflicts(k) => format!("{k} instances of a template with Conflicts"),
        }
    }

    /// Writes the unit files; returns the fleetctl arguments and the unit names (global
    /// ones flagged).
    fn files(&self, c: &Cluster) -> (Vec<String>, Vec<(String, bool)>) {
        let mut args = Vec::new();
        let mut names = Vec::new();
        match self {
            Start::Examples => {
                let mut dir = None;
                for (name, text) in fleet::dev::EXAMPLE_FILES {
                    let p = c.unit_file(name, text);
                    dir = std::path::Path::new(&p).parent().map(|d| d.to_path_buf());
                }
                let dir = dir.expect("example files");
                for u in fleet::dev::EXAMPLE_UNITS {
                    args.push(dir.join(u).display().to_string());
                    names.push((u.to_owned(), u == "monitor.service"));
                }
            }
            Start::Plain(k) => {
                for i in 1..=*k {
                    let name = format!("t{i}.service");
                    args.push(c.unit_file(&name, &plain_unit(&format!("Timing unit {i}"), "")));
                    names.push((name, false));
                }
            }
            Start::Conflicts(k) => {
                let t = c.unit_file(
                    "c@.service",
                    &plain_unit("Conflicting unit %i", "Conflicts=c@*.service"),
                );
                let dir = std::path::Path::new(&t).parent().expect("a directory");
                for i in 1..=*k {
                    let name = format!("c@{i}.service");
                    args.push(dir.join(&name).display().to_string());
                    names.push((name, false));
                }
            }
        }
        (args, names)
    }
}

/// fleet's recording's timing unit (`while true; do sleep 1; done`), with `[X-Fleet]` lines.
fn plain_unit(description: &str, xfleet: &str) -> String {
    let mut s = format!(
        "[Unit]\nDescription={description}\n\n[Service]\nExecStart=/bin/sh -c \"while true; do sleep 1; done\"\n"
    );
    if !xfleet.is_empty() {
        s.push_str(&format!("\n[X-Fleet]\n{xfleet}\n"));
    }
    s
}

/// Median, min, max of seconds.
fn summary(v: &[f64]) -> String {
    summary_in(v, "s")
}

/// Median, min, max, in `unit`.
fn summary_in(v: &[f64], unit: &str) -> String {
    if v.is_empty() {
        return "no samples".into();
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    format!(
        "median {median:.3} {unit}, min {:.3} {unit}, max {:.3} {unit} (n={n})",
        s[0],
        s[n - 1]
    )
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// fleetctl in process, against the first running machine; panics on failure.
async fn fleetctl(c: &Cluster, args: &[&str]) -> String {
    let (code, out, err) =
        tokio::time::timeout(Duration::from_secs(120), fleetctl_at(&c.endpoint(), args))
            .await
            .unwrap_or_else(|_| panic!("fleetctl {args:?} did not return within 120 s"));
    assert_eq!(code, 0, "fleetctl {args:?}: {out}{err}");
    out
}

/// Whether every named unit is reported running: a global one on `machines` machines.
async fn all_running(c: &Cluster, names: &[(String, bool)], machines: usize) -> bool {
    let Ok(states) = c.client().states(&StateFilter::default()).await else {
        return false;
    };
    names.iter().all(|(name, global)| {
        let n = states
            .iter()
            .filter(|s| &s.name == name && is_running(s))
            .count();
        if *global { n == machines } else { n >= 1 }
    })
}

/// Destroys the units and waits until no state is left.
async fn destroy_all(c: &Cluster, names: &[(String, bool)]) {
    let mut argv = vec!["destroy"];
    argv.extend(names.iter().map(|(n, _)| n.as_str()));
    fleetctl(c, &argv).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let states = c.states().await;
        if states.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "states left 60 s after destroy: {states:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// One start → active round; returns (fleetctl returned, all active).
async fn start_round(c: &Cluster, start: &Start, machines: usize) -> (Duration, Duration) {
    let (args, names) = start.files(c);
    let mut argv = vec!["start", "--no-block"];
    argv.extend(args.iter().map(String::as_str));
    let t0 = Instant::now();
    fleetctl(c, &argv).await;
    let returned = t0.elapsed();
    let deadline = t0 + Duration::from_secs(120);
    loop {
        if all_running(c, &names, machines).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "units not all active within 120 s: {:?}",
            c.states().await
        );
        tokio::time::sleep(POLL).await;
    }
    let active = t0.elapsed();
    destroy_all(c, &names).await;
    (returned, active)
}

/// One failover round's times from the kill.
#[derive(Debug, Default)]
struct Failover {
    victim: usize,
    leader: bool,
    units: Vec<String>,
    presence_gone: Option<Duration>,
    rescheduled: Option<Duration>,
    active_elsewhere: Option<Duration>,
}

/// One failover round: one unconstrained unit per machine, SIGKILL of the engine leader
/// (`kill_leader`) or of another machine, times until its unit runs elsewhere; then the
/// victim is started again and the units destroyed.
async fn failover_round(c: &mut Cluster, kill_leader: bool, machines: usize) -> Failover {
    let names: Vec<(String, bool)> = (1..=machines)
        .map(|i| (format!("f{i}.service"), false))
        .collect();
    let args: Vec<String> = names
        .iter()
        .map(|(n, _)| c.unit_file(n, &plain_unit("Failover unit", "")))
        .collect();
    let mut argv = vec!["start"];
    argv.extend(args.iter().map(String::as_str));
    fleetctl(c, &argv).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !all_running(c, &names, machines).await {
        assert!(Instant::now() < deadline, "failover units not active");
        tokio::time::sleep(POLL).await;
    }
    let leader = loop {
        if let Some(l) = c.engine_leader().await {
            break l;
        }
        tokio::time::sleep(POLL).await;
    };
    let victim = if kill_leader {
        leader
    } else {
        // The last machine that is not the leader (an agent-only machine when there is one).
        (1..=machines)
            .rev()
            .find(|m| *m != leader)
            .expect("a machine")
    };
    let victim_id = c.machine(victim).id.clone();
    let units: Vec<String> = c
        .units()
        .await
        .into_iter()
        .filter(|u| u.machine_id.as_deref() == Some(victim_id.as_str()))
        .map(|u| u.name)
        .collect();
    assert!(!units.is_empty(), "m{victim} runs no unit");

    let mut f = Failover {
        victim,
        leader: victim == leader,
        units: units.clone(),
        ..Failover::default()
    };
    let t0 = Instant::now();
    c.machine_mut(victim).kill();
    let deadline = t0 + Duration::from_secs(120);
    while f.active_elsewhere.is_none() {
        let api = c.client();
        if f.presence_gone.is_none()
            && let Ok(ms) = api.machines().await
            && ms.iter().all(|m| m.id != victim_id)
        {
            f.presence_gone = Some(t0.elapsed());
        }
        if f.rescheduled.is_none()
            && let Ok(us) = api.units().await
        {
            let moved = us.iter().filter(|u| units.contains(&u.name)).all(|u| {
                u.machine_id
                    .as_deref()
                    .is_some_and(|m| m != victim_id.as_str())
            });
            if moved {
                f.rescheduled = Some(t0.elapsed());
            }
        }
        if let Ok(states) = api.states(&StateFilter::default()).await {
            let elsewhere = units.iter().all(|u| {
                states
                    .iter()
                    .any(|s| &s.name == u && s.machine_id != victim_id && is_running(s))
            });
            if elsewhere {
                f.active_elsewhere = Some(t0.elapsed());
            }
        }
        assert!(
            Instant::now() < deadline,
            "m{victim}'s units not active elsewhere within 120 s"
        );
        tokio::time::sleep(POLL).await;
    }
    c.restart(victim).await;
    destroy_all(c, &names).await;
    f
}

fn main() {
    let quick = std::env::args().any(|a| a == "--test");
    let machines: usize = env_or("FLOTILLA_BENCH_MACHINES", if quick { 3 } else { 5 });
    let ttl: u64 = env_or("FLOTILLA_BENCH_TTL", if quick { 2 } else { 5 });
    let reconcile: u64 = env_or("FLOTILLA_BENCH_RECONCILE", if quick { 1 } else { 2 });
    let rounds: usize = env_or("FLOTILLA_BENCH_ROUNDS", if quick { 1 } else { 10 });
    let start = Start::parse(
        &std::env::var("FLOTILLA_BENCH_START")
            .unwrap_or_else(|_| if quick { "plain:2" } else { "examples" }.into()),
    );
    assert!(machines >= 2, "FLOTILLA_BENCH_MACHINES: at least 2");
    let members = machines.min(3);
    let opts = Options {
        members,
        agents: machines - members,
        ttl: Duration::from_secs(ttl),
        reconcile: Duration::from_secs(reconcile),
        // fleetd dev's metadata: machine 1 is the database host.
        metadata: (1..=machines)
            .map(|i| (i, if i == 1 { "role=db" } else { "role=web" }.to_owned()))
            .collect::<BTreeMap<_, _>>(),
        // The store's own defaults (kvd's, etcd's).
        election_ms: 1000,
        heartbeat_ms: 100,
    };
    println!(
        "fleet cluster bench{}: {machines} fleetd processes ({members} store members, {} agent-only) on loopback, agent_ttl {ttl} s, engine_reconcile_interval {reconcile} s, {rounds} round(s); native supervisor; fleetd {}; load average {}",
        if quick {
            " (--test: one tiny round)"
        } else {
            ""
        },
        machines - members,
        fleet_util::FLEETD,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim_end()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        let mut c = Cluster::start(opts).await;

        println!("start -> active: {}", start.describe());
        let (mut returned, mut active) = (Vec::new(), Vec::new());
        for r in 1..=rounds {
            let (ret, act) = start_round(&c, &start, machines).await;
            println!(
                "  round {r}: fleetctl returned after {:.3} s, all active after {:.3} s",
                secs(ret),
                secs(act)
            );
            returned.push(secs(ret));
            active.push(secs(act));
        }

        println!("kill -> active elsewhere: one unconstrained unit per machine, SIGKILL of a machine");
        let mut by_kind: BTreeMap<bool, Vec<Failover>> = BTreeMap::new();
        for r in 1..=rounds {
            // fleet's recording: odd rounds a machine without the lease, even rounds its holder.
            let kill_leader = !quick && r % 2 == 0;
            let f = failover_round(&mut c, kill_leader, machines).await;
            let s = |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.3} s", secs(d)));
            println!(
                "  round {r}: killed m{} ({}), units {:?}: presence gone {}, rescheduled {}, active elsewhere {}",
                f.victim,
                if f.leader { "engine leader" } else { "not the leader" },
                f.units,
                s(f.presence_gone),
                s(f.rescheduled),
                s(f.active_elsewhere),
            );
            by_kind.entry(f.leader).or_default().push(f);
        }

        println!("\nconfiguration: {machines} machines ({members} store members), agent_ttl {ttl} s, engine_reconcile_interval {reconcile} s, {rounds} round(s)");
        println!("start -> active ({}):", start.describe());
        println!("  fleetctl start --no-block returned: {}", summary(&returned));
        println!("  all loaded/active/running:          {}", summary(&active));
        for (leader, fs) in &by_kind {
            let field = |g: fn(&Failover) -> Option<Duration>| -> Vec<f64> {
                fs.iter().filter_map(|f| g(f).map(secs)).collect()
            };
            let act = field(|f| f.active_elsewhere);
            let rel: Vec<f64> = act.iter().map(|a| a / ttl as f64).collect();
            println!(
                "kill -> active elsewhere, victim {}:",
                if *leader { "the engine leader" } else { "not the engine leader" }
            );
            println!("  presence gone:     {}", summary(&field(|f| f.presence_gone)));
            println!("  rescheduled:       {}", summary(&field(|f| f.rescheduled)));
            println!("  active elsewhere:  {}", summary(&act));
            println!("  in TTLs:           {}", summary_in(&rel, "TTL"));
        }
    });
}
