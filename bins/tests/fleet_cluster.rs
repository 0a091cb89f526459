//! fleet as a whole: clusters of separate fleetd processes on loopback (three store
//! members, sometimes agent-only machines), driven through fleetctl and the `/fleet/v1` API,
//! with every unit a probe process that records where and when it ran (`fleet_util.rs`).
//!
//! The scenarios are issue 20's, after fleet's functional tests (fleet.md §9.8): every
//! state transition of fleet.md §3.3 with the real process checked; templates, Conflicts,
//! MachineOf, MachineMetadata (static, dynamic and by specifier), Replaces and global units,
//! including on a machine that joins later (§4.6, §7); the engine's leader killed without
//! any unit restarting; a killed machine's units running elsewhere within a bound; a machine
//! cut off from the store stopping its units before they run elsewhere (so never on two
//! machines at once); invalid units refused with fleet's messages (§4.5).
//!
//! The clusters use a 3 s agent TTL and a 1 s engine reconcile interval; one cluster runs
//! at a time (the harness serialises them).

use std::time::Duration;

use fleet::api::types::{Unit, UnitOption};
use fleet::registry::JobState;

use crate::fleet_util::{Cluster, Options, Proxy, StoreAt, eventually, now_ns};

/// How long a unit may take to reach a state the cluster is converging to.
const SETTLE: Duration = Duration::from_secs(20);

/// fleetctl with a deadline (a blocking command must not hang the suite).
async fn ctl(c: &Cluster, args: &[&str]) -> (i32, String, String) {
    tokio::time::timeout(Duration::from_secs(60), c.fleetctl(args))
        .await
        .unwrap_or_else(|_| panic!("fleetctl {args:?} did not return within 60 s"))
}

/// fleetctl that must succeed; returns its stdout.
async fn ctl_ok(c: &Cluster, args: &[&str]) -> String {
    let (code, out, err) = ctl(c, args).await;
    assert_eq!(
        code,
        0,
        "fleetctl {args:?} failed:\n{out}{err}\n{}",
        c.logs(15)
    );
    out
}

async fn unit(c: &Cluster, name: &str) -> Option<Unit> {
    c.client().unit(name).await.expect("GET a unit")
}

/// Waits until `unit` has exactly one live process, on a machine for which `ok` holds;
/// returns (machine index, pid).
async fn runs_once(c: &Cluster, unit: &str, ok: impl Fn(usize) -> bool) -> (usize, u32) {
    eventually(&format!("{unit} runs once"), SETTLE, || async {
        match c.running(unit).as_slice() {
            [(m, pid)] if ok(*m) => Ok((*m, *pid)),
            other => Err(format!("running: {other:?}")),
        }
    })
    .await
}

/// Waits until `unit` has no live process.
async fn runs_nowhere(c: &Cluster, unit: &str) {
    eventually(&format!("{unit} runs nowhere"), SETTLE, || async {
        match c.running(unit).as_slice() {
            [] => Ok(()),
            other => Err(format!("running: {other:?}")),
        }
    })
    .await
}

/// Waits until the API reports `unit` with these desired and current states.
async fn states_are(c: &Cluster, name: &str, desired: JobState, current: JobState) -> Unit {
    eventually(
        &format!("{name} desired {desired}, current {current}"),
        SETTLE,
        || async {
            match unit(c, name).await {
                Some(u) if u.desired_state == Some(desired) && u.current_state == Some(current) => {
                    Ok(u)
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

/// Waits until the API reports `unit` `loaded/active/running` on exactly machine `m`.
async fn reported_active_on(c: &Cluster, unit: &str, m: usize) {
    eventually(
        &format!("{unit} reported active on m{m}"),
        SETTLE,
        || async {
            let on = c.active_on(unit).await;
            if on == [m] {
                Ok(())
            } else {
                Err(format!("active on {on:?}"))
            }
        },
    )
    .await;
}

/// The systemd states the API reports for `unit`, as `load/active/sub` per machine.
async fn reported(c: &Cluster, unit: &str) -> Vec<(usize, String)> {
    c.states()
        .await
        .into_iter()
        .filter(|s| s.name == unit)
        .map(|s| {
            (
                c.index_of(&s.machine_id).unwrap_or(0),
                format!(
                    "{}/{}/{}",
                    s.systemd_load_state, s.systemd_active_state, s.systemd_sub_state
                ),
            )
        })
        .collect()
}

fn index_of_target(c: &Cluster, u: &Unit) -> usize {
    let id = u.machine_id.as_deref().expect("a scheduled unit");
    c.index_of(id).expect("a machine of the cluster")
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

/// fleet.md §3.3 through fleetctl, one command at a time, with the desired and current
/// states, systemd's reported state and the real process checked after each (fleet's
/// functional `unit_action_test.go`).
#[test]
fn every_state_transition_through_fleetctl() {
    block_on(async {
        let c = Cluster::start(Options::default()).await;
        let path = c.unit_file("t.service", &c.probe_unit(&[]));

        // submit: known to fleet, nowhere.
        let out = ctl_ok(&c, &["submit", &path]).await;
        assert!(out.contains("Unit t.service inactive"), "{out}");
        let u = states_are(&c, "t.service", JobState::Inactive, JobState::Inactive).await;
        assert_eq!(u.machine_id, None);
        assert!(c.runs("t.service").is_empty());

        // load: scheduled and loaded, not started.
        let out = ctl_ok(&c, &["load", "t.service"]).await;
        assert!(out.contains("Unit t.service loaded on "), "{out}");
        let u = states_are(&c, "t.service", JobState::Loaded, JobState::Loaded).await;
        let m = index_of_target(&c, &u);
        eventually("t.service reported loaded", SETTLE, || async {
            let r = reported(&c, "t.service").await;
            if r == [(m, "loaded/inactive/dead".to_owned())] {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        })
        .await;
        assert!(c.runs("t.service").is_empty(), "loaded, not started");

        // start: running on its target.
        let out = ctl_ok(&c, &["start", "t.service"]).await;
        assert!(out.contains("Unit t.service launched on "), "{out}");
        states_are(&c, "t.service", JobState::Launched, JobState::Launched).await;
        let (on, first) = runs_once(&c, "t.service", |_| true).await;
        assert_eq!(on, m, "the process runs on the unit's target");
        reported_active_on(&c, "t.service", m).await;

        // stop: loaded again, the process stopped (it saw its SIGTERM).
        ctl_ok(&c, &["stop", "t.service"]).await;
        states_are(&c, "t.service", JobState::Loaded, JobState::Loaded).await;
        runs_nowhere(&c, "t.service").await;
        assert!(
            c.runs("t.service")[0].stopped.is_some(),
            "stopped by a signal"
        );

        // start again: a new process, same machine.
        ctl_ok(&c, &["start", "t.service"]).await;
        let (on, second) = runs_once(&c, "t.service", |_| true).await;
        assert_eq!(on, m);
        assert_ne!(second, first, "a new process");
        assert_eq!(c.runs("t.service").len(), 2);

        // unload from launched (stop + unload): inactive, no process, no state.
        ctl_ok(&c, &["unload", "t.service"]).await;
        let u = states_are(&c, "t.service", JobState::Inactive, JobState::Inactive).await;
        assert_eq!(u.machine_id, None, "unscheduled");
        runs_nowhere(&c, "t.service").await;
        eventually("t.service's state removed", SETTLE, || async {
            let r = reported(&c, "t.service").await;
            if r.is_empty() {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        })
        .await;

        // load from inactive, then destroy: gone.
        ctl_ok(&c, &["load", "t.service"]).await;
        states_are(&c, "t.service", JobState::Loaded, JobState::Loaded).await;
        let out = ctl_ok(&c, &["destroy", "t.service"]).await;
        assert!(out.contains("Destroyed t.service"), "{out}");
        assert_eq!(unit(&c, "t.service").await, None);
        assert_eq!(c.runs("t.service").len(), 2, "never started again");

        // start from nothing (submit + load + start), destroy from launched.
        let path = c.unit_file("u.service", &c.probe_unit(&[]));
        ctl_ok(&c, &["start", &path]).await;
        states_are(&c, "u.service", JobState::Launched, JobState::Launched).await;
        runs_once(&c, "u.service", |_| true).await;
        ctl_ok(&c, &["destroy", "u.service"]).await;
        runs_nowhere(&c, "u.service").await;
        assert_eq!(unit(&c, "u.service").await, None);
        eventually("u.service's state removed", SETTLE, || async {
            let r = reported(&c, "u.service").await;
            if r.is_empty() {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        })
        .await;

        // submit, destroy, submit again (as fleet's `unit_action_test.go`), this time
        // through the fleetctl binary.
        let bin = |args: &[&str]| {
            std::process::Command::new(crate::fleet_util::FLEETCTL)
                .args(["--endpoint", &c.endpoint()])
                .args(args)
                .output()
                .expect("run fleetctl")
        };
        let path = c.unit_file("v.service", &c.probe_unit(&[]));
        for _ in 0..2 {
            let o = bin(&["submit", &path]);
            assert!(o.status.success(), "{o:?}");
            let o = bin(&[
                "list-unit-files",
                "--no-legend",
                "--fields=unit,dstate,state",
            ]);
            let listed = String::from_utf8_lossy(&o.stdout).into_owned();
            assert_eq!(listed, "v.service\tinactive\tinactive\n");
            let o = bin(&["destroy", "v.service"]);
            assert!(o.status.success(), "{o:?}");
        }
        let o = bin(&["list-unit-files", "--no-legend"]);
        assert_eq!(String::from_utf8_lossy(&o.stdout), "");
    });
}

/// Templates with `Conflicts` spread one per machine and their `MachineOf` sidekicks follow
/// them; a killed machine's pair runs together elsewhere within TTL + 2 reconcile intervals,
/// nothing else restarts; more conflicting units than machines wait unscheduled until a
/// machine comes back (fleet's `TestScheduleConflicts`, `TestScheduleMachineOf`,
/// `cluster_test.go`).
#[test]
fn conflicts_sidekicks_and_a_killed_machine() {
    block_on(async {
        let mut c = Cluster::start(Options {
            agents: 1,
            ..Options::default()
        })
        .await;
        let web = c.unit_file("web@.service", &c.probe_unit(&["Conflicts=web@*.service"]));
        c.unit_file(
            "side@.service",
            &c.probe_unit(&["MachineOf=web@%i.service"]),
        );
        let dir = std::path::Path::new(&web).parent().expect("a directory");
        let arg = |n: &str| dir.join(n).display().to_string();
        let names: Vec<String> = (1..=3)
            .flat_map(|i| [format!("web@{i}.service"), format!("side@{i}.service")])
            .collect();
        let args: Vec<String> = names.iter().map(|n| arg(n)).collect();
        let mut argv = vec!["start"];
        argv.extend(args.iter().map(String::as_str));
        ctl_ok(&c, &argv).await;

        let mut web_on = Vec::new();
        for i in 1..=3 {
            let (m, pid) = runs_once(&c, &format!("web@{i}.service"), |_| true).await;
            let (s, _) = runs_once(&c, &format!("side@{i}.service"), |_| true).await;
            assert_eq!(s, m, "side@{i} runs with web@{i}");
            web_on.push((m, pid));
        }
        let mut machines: Vec<usize> = web_on.iter().map(|(m, _)| *m).collect();
        machines.sort_unstable();
        machines.dedup();
        assert_eq!(machines.len(), 3, "one web per machine: {web_on:?}");
        // Instances are copies of the template: same contents, same hash.
        let listed = ctl_ok(
            &c,
            &["list-unit-files", "--no-legend", "--fields=unit,hash"],
        )
        .await;
        let hashes: Vec<&str> = listed
            .lines()
            .filter(|l| l.starts_with("web@"))
            .map(|l| l.split('\t').nth(1).unwrap_or_default())
            .collect();
        assert_eq!(hashes.len(), 3);
        assert!(hashes.iter().all(|h| *h == hashes[0]), "{listed}");

        // Kill a machine running a web instance that does not hold the engine lease.
        let leader = c.engine_leader().await;
        let (k, (victim, _)) = web_on
            .iter()
            .copied()
            .enumerate()
            .find(|(_, (m, _))| Some(*m) != leader)
            .expect("a web instance off the engine leader");
        let k = k + 1;
        let free = (1..=4)
            .find(|m| !machines.contains(m))
            .expect("a free machine");
        let killed_at = now_ns();
        c.machine_mut(victim).kill();
        let (m, _) = eventually(
            &format!("web@{k} moves off killed m{victim}"),
            Duration::from_secs(30),
            || async {
                match c.running(&format!("web@{k}.service")).as_slice() {
                    [(m, pid)] if *m != victim => Ok((*m, *pid)),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
        assert_eq!(
            m, free,
            "web@{k} goes to the machine without a web instance"
        );
        let (s, _) = runs_once(&c, &format!("side@{k}.service"), |m| m == free).await;
        assert_eq!(s, free, "its sidekick follows it");
        let runs = c.runs(&format!("web@{k}.service"));
        let moved = runs.last().expect("a run").started - killed_at;
        let ttl = c.opts.ttl.as_nanos();
        let bound = ttl + 2 * c.opts.reconcile.as_nanos();
        eprintln!(
            "killed m{victim}: web@{k} started on m{free} after {:.2} s (TTL {:?}, bound {:.1} s)",
            moved as f64 / 1e9,
            c.opts.ttl,
            bound as f64 / 1e9
        );
        assert!(
            moved <= bound,
            "web@{k} ran elsewhere {:.2} s after the kill, over TTL + 2 reconcile intervals",
            moved as f64 / 1e9
        );
        reported_active_on(&c, &format!("web@{k}.service"), free).await;
        // The other instances did not move or restart.
        for (i, (m, pid)) in web_on.iter().enumerate() {
            if i + 1 != k {
                let name = format!("web@{}.service", i + 1);
                assert_eq!(c.running(&name), [(*m, *pid)], "{name} untouched");
                assert_eq!(c.runs(&name).len(), 1, "{name} started once");
            }
        }

        // A fourth conflicting instance has nowhere to go: launched, not scheduled.
        ctl_ok(&c, &["start", "--no-block", &arg("web@4.service")]).await;
        let u = states_are(&c, "web@4.service", JobState::Launched, JobState::Inactive).await;
        assert_eq!(u.machine_id, None);
        assert!(c.runs("web@4.service").is_empty());
        // The killed machine comes back: web@4 runs there.
        c.restart(victim).await;
        runs_once(&c, "web@4.service", |m| m == victim).await;
        reported_active_on(&c, "web@4.service", victim).await;
    });
}

/// Global units on every machine, including one that joins later; MachineMetadata
/// (configured, dynamic through the API, and by a template's `%i`); Replaces pushing the
/// replaced unit to another machine (fleet's `TestScheduleGlobalUnits`,
/// `TestTemplatesWithSpecifiersInMetadata`, `TestScheduleReplace`, machines API PATCH).
#[test]
fn global_units_metadata_and_replaces() {
    block_on(async {
        let mut c = Cluster::start(Options {
            metadata: [(1, "role=db".to_owned())].into(),
            ..Options::default()
        })
        .await;
        let file = |name: &str, x: &[&str]| c.unit_file(name, &c.probe_unit(x));
        let mon = file("mon.service", &["Global=true"]);
        let db = file("db.service", &["MachineMetadata=role=db"]);
        let cache = file("cache.service", &["MachineMetadata=role=cache"]);
        let pin = file("pin@.service", &["MachineMetadata=name=%i"]);
        let pin2 = std::path::Path::new(&pin)
            .with_file_name("pin@m2.service")
            .display()
            .to_string();
        ctl_ok(&c, &["start", &mon, &db, &pin2]).await;
        ctl_ok(&c, &["start", "--no-block", &cache]).await;

        // The global unit: once on every machine, no target, no current state.
        eventually("mon.service on m1..m3", SETTLE, || async {
            let mut on: Vec<usize> = c.running("mon.service").iter().map(|r| r.0).collect();
            on.sort_unstable();
            if on == [1, 2, 3] {
                Ok(())
            } else {
                Err(format!("{on:?}"))
            }
        })
        .await;
        let u = unit(&c, "mon.service").await.expect("mon.service");
        assert_eq!((u.machine_id, u.current_state), (None, None));
        runs_once(&c, "db.service", |m| m == 1).await;
        runs_once(&c, "pin@m2.service", |m| m == 2).await;

        // No machine has role=cache: launched, unscheduled; then m3 gets it.
        let u = states_are(&c, "cache.service", JobState::Launched, JobState::Inactive).await;
        assert_eq!(u.machine_id, None);
        let m3 = c.machine(3).id.clone();
        c.client()
            .set_metadata(&m3, "role", "cache")
            .await
            .expect("PATCH metadata");
        runs_once(&c, "cache.service", |m| m == 3).await;

        // Replaces: new.service is pinned where old.service runs and pushes it away.
        let old = file("old.service", &[]);
        ctl_ok(&c, &["start", &old]).await;
        let (old_on, _) = runs_once(&c, "old.service", |_| true).await;
        let name = c.machine(old_on).name.clone();
        let new = file(
            "new.service",
            &[
                "Replaces=old.service",
                &format!("MachineMetadata=name={name}"),
            ],
        );
        ctl_ok(&c, &["start", &new]).await;
        runs_once(&c, "new.service", |m| m == old_on).await;
        let (moved_to, _) = runs_once(&c, "old.service", |m| m != old_on).await;
        assert_eq!(c.runs("old.service").len(), 2, "old.service restarted once");
        reported_active_on(&c, "old.service", moved_to).await;

        // A machine joining later runs the global unit too.
        let m4 = c.add_agent(StoreAt::Members, None).await;
        eventually("mon.service on m4", SETTLE, || async {
            let mut on: Vec<usize> = c.running("mon.service").iter().map(|r| r.0).collect();
            on.sort_unstable();
            if on == [1, 2, 3, m4] {
                Ok(())
            } else {
                Err(format!("{on:?}"))
            }
        })
        .await;
        eventually("mon.service reported on 4 machines", SETTLE, || async {
            let mut on = c.active_on("mon.service").await;
            on.sort_unstable();
            if on == [1, 2, 3, 4] {
                Ok(())
            } else {
                Err(format!("{on:?}"))
            }
        })
        .await;
        assert_eq!(
            c.runs("mon.service").len(),
            4,
            "no global instance restarted"
        );

        // The joined machine leaves gracefully (SIGTERM): it stops its units, removes its
        // states and leaves the machine list at once, not after its TTL (fleet's
        // `TestNodeShutdown`).
        let left_id = c.machine(m4).id.clone();
        let leaving = std::time::Instant::now();
        assert!(
            c.machine_mut(m4).stop(Duration::from_secs(20)).await,
            "fleetd exits cleanly on SIGTERM"
        );
        let took = leaving.elapsed();
        let mon4 = c
            .runs("mon.service")
            .into_iter()
            .find(|r| c.index_of_pid(r.ppid) == Some(m4))
            .expect("m4's instance");
        assert!(
            mon4.stopped.is_some(),
            "m4's instance was stopped: {mon4:?}"
        );
        let ms = c.client().machines().await.expect("machines");
        assert!(
            ms.iter().all(|m| m.id != left_id),
            "m4 left the machine list {took:?} after SIGTERM"
        );
        let states = c.states().await;
        assert!(
            states.iter().all(|s| s.machine_id != left_id),
            "m4's states are purged: {states:?}"
        );
        assert!(took < c.opts.ttl, "left in {took:?}, within the TTL");
    });
}

/// The engine's leader killed: another engine takes the lease and schedules, and no unit
/// on the surviving machines restarts (PIDs unchanged, one start each). With an agent-only
/// machine the lease is anywhere (in practice the agent-only machine's).
#[test]
fn engine_leader_killed_no_unit_restarts() {
    block_on(leader_killed(Options {
        agents: 1,
        ..Options::default()
    }));
}

/// As [`engine_leader_killed_no_unit_restarts`] with store members only: the dead leader
/// was also a member of the store (perhaps its raft leader), and the store's election does
/// not make any machine fence or restart a unit.
#[test]
fn engine_leader_and_store_member_killed_no_unit_restarts() {
    block_on(leader_killed(Options::default()));
}

async fn leader_killed(opts: Options) {
    let n = opts.members + opts.agents;
    let mut c = Cluster::start(opts).await;
    let leader = eventually("an engine leader", SETTLE, || async {
        c.engine_leader().await.ok_or_else(|| "no lease".to_owned())
    })
    .await;
    let others: Vec<usize> = (1..=n).filter(|m| *m != leader).collect();
    let mut paths = vec![c.unit_file("glob.service", &c.probe_unit(&["Global=true"]))];
    for m in &others {
        let name = c.machine(*m).name.clone();
        paths.push(c.unit_file(
            &format!("keep-{name}.service"),
            &c.probe_unit(&[&format!("MachineMetadata=name={name}")]),
        ));
    }
    let mut argv = vec!["start"];
    argv.extend(paths.iter().map(String::as_str));
    ctl_ok(&c, &argv).await;
    let mut before = Vec::new();
    for m in &others {
        let name = format!("keep-{}.service", c.machine(*m).name);
        before.push((name.clone(), runs_once(&c, &name, |on| on == *m).await));
    }
    let glob_before = eventually("glob.service everywhere", SETTLE, || async {
        let r = c.running("glob.service");
        if r.len() == n {
            Ok(r)
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;

    c.machine_mut(leader).kill();
    let new_leader = eventually("another engine leader", Duration::from_secs(30), || async {
        match c.engine_leader().await {
            Some(l) if l != leader => Ok(l),
            other => Err(format!("lease held by {other:?}")),
        }
    })
    .await;
    eprintln!("engine leader m{leader} killed; m{new_leader} took over");
    // The new leader schedules: a new unit runs, and the dead machine is gone.
    let after = c.unit_file("after.service", &c.probe_unit(&[]));
    ctl_ok(&c, &["start", &after]).await;
    runs_once(&c, "after.service", |m| m != leader).await;
    let dead = c.machine(leader).id.clone();
    eventually("the dead leader's presence expires", SETTLE, || async {
        let ms = c.client().machines().await.map_err(|e| e.to_string())?;
        if ms.iter().any(|m| m.id == dead) {
            Err(format!("{} machines", ms.len()))
        } else {
            Ok(())
        }
    })
    .await;
    // Two reconcile intervals more after the takeover and the expiry: nothing moved.
    tokio::time::sleep(c.opts.reconcile * 2).await;
    for (name, (m, pid)) in &before {
        assert_eq!(c.running(name), [(*m, *pid)], "{name} kept its process");
        assert_eq!(c.runs(name).len(), 1, "{name} started once");
    }
    let survivors: Vec<(usize, u32)> = glob_before
        .into_iter()
        .filter(|(m, _)| *m != leader)
        .collect();
    let mut now = c.running("glob.service");
    now.sort_unstable();
    let mut want = survivors.clone();
    want.sort_unstable();
    assert_eq!(
        now, want,
        "glob.service kept its processes on the survivors"
    );
    assert_eq!(
        c.runs("glob.service").len(),
        n,
        "no global instance restarted"
    );
}

/// A machine cut off from the store stops its units before its presence can expire, so
/// its unit runs elsewhere only after it stopped here, and never on two machines at once;
/// when the link heals, the machine registers again and does not start the unit that
/// moved away.
#[test]
fn machine_cut_off_from_the_store_stops_its_units_first() {
    block_on(async {
        let mut c = Cluster::start(Options::default()).await;
        let proxy = Proxy::start(&c.store_urls[0]).await;
        // The lowest machine ID: the first choice among equally loaded machines.
        let first = format!("{}{}", "0".repeat(8), "a".repeat(24));
        let x = c
            .add_agent(StoreAt::Url(proxy.url.clone()), Some(first))
            .await;
        let solo = c.unit_file("solo.service", &c.probe_unit(&[]));
        ctl_ok(&c, &["start", &solo]).await;
        let (on, old_pid) = runs_once(&c, "solo.service", |_| true).await;
        assert_eq!(
            on, x,
            "solo.service starts on the machine about to be cut off"
        );

        let cut_at = now_ns();
        proxy.set_cut(true);
        // Never two live processes; the old one stops, then a new one starts elsewhere.
        let (moved_to, new_pid) = eventually(
            "solo.service runs elsewhere",
            Duration::from_secs(30),
            || async {
                let r = c.running("solo.service");
                assert!(r.len() <= 1, "solo.service runs twice: {r:?}");
                match r.as_slice() {
                    [(m, pid)] if *m != x => Ok((*m, *pid)),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
        let runs = c.runs("solo.service");
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert_eq!(runs[0].pid, old_pid);
        let stopped = runs[0]
            .stopped
            .expect("the cut-off machine stopped its unit");
        let ttl = c.opts.ttl.as_nanos();
        eprintln!(
            "cut off m{x}: its unit stopped {:.2} s after the cut, started on m{moved_to} {:.2} s after it (TTL {:?})",
            (stopped - cut_at) as f64 / 1e9,
            (runs[1].started - cut_at) as f64 / 1e9,
            c.opts.ttl
        );
        assert!(
            stopped < runs[1].started,
            "stopped on m{x} at {stopped}, started on m{moved_to} at {}",
            runs[1].started
        );
        assert!(
            stopped - cut_at < ttl,
            "the unit must stop within the TTL of the cut"
        );
        reported_active_on(&c, "solo.service", moved_to).await;

        // A partition lasts: the cut-off machine's retries space out. Then heal: the
        // machine comes back, and the unit stays where it is.
        let until = std::time::Instant::now() + c.opts.ttl * 2;
        while std::time::Instant::now() < until {
            let r = c.running("solo.service");
            assert_eq!(r, [(moved_to, new_pid)], "while cut off");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        proxy.set_cut(false);
        let xid = c.machine(x).id.clone();
        eventually("the cut-off machine registers again", SETTLE, || async {
            let ms = c.client().machines().await.map_err(|e| e.to_string())?;
            if ms.iter().any(|m| m.id == xid) {
                Ok(())
            } else {
                Err(format!("{} machines", ms.len()))
            }
        })
        .await;
        // Watch for a while: the returning machine must not start the unit again.
        let until = std::time::Instant::now() + c.opts.ttl + c.opts.reconcile * 2;
        while std::time::Instant::now() < until {
            let r = c.running("solo.service");
            assert_eq!(r, [(moved_to, new_pid)], "after the heal");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(c.runs("solo.service").len(), 2);
        drop(proxy);
    });
}

/// Invalid units (fleet.md §4.5, §4.6) are refused through the API and fleetctl with
/// fleet's messages, and what was stored before is untouched.
#[test]
fn invalid_units_are_refused_and_nothing_is_lost() {
    block_on(async {
        let c = Cluster::start(Options {
            members: 1,
            ..Options::default()
        })
        .await;
        let good = c.unit_file("good.service", &c.probe_unit(&[]));
        ctl_ok(&c, &["start", &good]).await;
        let (m, pid) = runs_once(&c, "good.service", |_| true).await;

        let api = c.client();
        let refused = |name: &str, options: &[(&str, &str, &str)]| Unit {
            name: name.to_owned(),
            desired_state: Some(JobState::Launched),
            options: options
                .iter()
                .map(|(s, n, v)| UnitOption::new(s, n, v))
                .collect(),
            ..Unit::default()
        };
        let exec = ("Service", "ExecStart", "/bin/sleep 1000");
        for (name, options, message) in [
            (
                "peer.service",
                vec![
                    exec,
                    ("X-Fleet", "Conflicts", "foo.service"),
                    ("X-Fleet", "MachineOf", "foo.service"),
                ],
                r#"unresolvable requirements: peer "foo.service" matches conflict "foo.service""#,
            ),
            (
                "glob.service",
                vec![
                    exec,
                    ("X-Fleet", "Global", "true"),
                    ("X-Fleet", "MachineID", "abc"),
                ],
                "MachineID cannot be used with Global",
            ),
            (
                "rep.service",
                vec![
                    exec,
                    ("X-Fleet", "Replaces", "a.service"),
                    ("X-Fleet", "Conflicts", "b.service"),
                ],
                "Conflicts cannot be used with Replaces",
            ),
        ] {
            let e = api
                .create_unit(&refused(name, &options))
                .await
                .expect_err("an invalid unit is refused");
            assert_eq!(e.status(), Some(400), "{e}");
            assert_eq!(e.message(), Some(message), "{e}");
        }
        // A template cannot be launched.
        let tmpl = Unit {
            desired_state: Some(JobState::Inactive),
            ..refused("tmpl@.service", &[exec])
        };
        api.create_unit(&tmpl).await.expect("a template is stored");
        let e = api
            .set_desired("tmpl@.service", JobState::Launched)
            .await
            .expect_err("a template cannot be launched");
        assert_eq!(e.status(), Some(400));
        assert_eq!(
            e.message(),
            Some(r#"cannot activate template "tmpl@.service""#)
        );

        // fleetctl refuses the same before sending anything, and bad names.
        let bad = c.unit_file(
            "bad.service",
            &c.probe_unit(&["Conflicts=good.service", "MachineOf=good.service"]),
        );
        let (code, _, err) = ctl(&c, &["start", &bad]).await;
        assert_eq!(code, 1);
        assert!(
            err.contains(
                r#"unresolvable requirements: peer "good.service" matches conflict "good.service""#
            ),
            "{err}"
        );
        let (code, _, err) = ctl(&c, &["start", "foo@{1..3}.service"]).await;
        assert_eq!(code, 1);
        assert!(err.contains("Error creating units"), "{err}");
        let (code, _, err) = ctl(&c, &["start", "tmpl@.service"]).await;
        assert_eq!(code, 1, "{err}");

        // Nothing refused was stored; the good unit runs on, untouched.
        let names: Vec<String> = c.units().await.into_iter().map(|u| u.name).collect();
        assert_eq!(names, ["good.service", "tmpl@.service"]);
        let u = unit(&c, "good.service").await.expect("good.service");
        assert_eq!(u.desired_state, Some(JobState::Launched));
        assert_eq!(u.current_state, Some(JobState::Launched));
        assert_eq!(c.running("good.service"), [(m, pid)]);
        assert_eq!(c.runs("good.service").len(), 1);
    });
}
