//! The agent over a real etcd v2 server: presence, convergence through a fake (and once a
//! real) unit driver, published states, global units, graceful shutdown and self-fencing.

use std::sync::Arc;
use std::time::Duration;

use fleet::agent::{Agent, AgentConfig, AgentCounters, AgentError, Presence};
use fleet::registry::{
    JobState, LeaseRecord, MachineRecord, Registry, UnitContents, UnitStateRecord,
};
use fleet::store::etcd::EtcdStore;
use fleet::store::{KvStore, StoreError, Watch};
use kv_core::{Event, Op};
use systemd_driver::{FakeDriver, UnitDriver};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::util::{etcd_store, eventually};

const WAIT: Duration = Duration::from_secs(10);
const SLEEP: &str = "[Service]\nExecStart=/bin/sleep 1000\n";
const SLEEP2: &str = "[Service]\nExecStart=/bin/sleep 2000\n";

/// Short timers: presence TTL 2 s (refreshed every second, fenced after 1.6 s without a
/// refresh), quick retries.
fn config(id: &str) -> AgentConfig {
    AgentConfig {
        agent_ttl: Duration::from_secs(2),
        retry_backoff: Duration::from_millis(100),
        max_retry_backoff: Duration::from_millis(500),
        version: "1.0.0".into(),
        ..AgentConfig::new(id)
    }
}

/// An agent running in its own task.
struct Running {
    counters: Arc<AgentCounters>,
    presence: watch::Receiver<Presence>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), AgentError>>,
}

impl Running {
    fn spawn<S: KvStore, D: UnitDriver>(
        registry: Arc<Registry<S>>,
        driver: Arc<D>,
        config: AgentConfig,
    ) -> Running {
        let agent = Agent::new(config, registry, driver).unwrap();
        let (stop, rx) = oneshot::channel::<()>();
        Running {
            counters: agent.counters(),
            presence: agent.presence(),
            stop,
            task: tokio::spawn(agent.run(async {
                let _ = rx.await;
            })),
        }
    }

    async fn shutdown(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

fn count(c: &std::sync::atomic::AtomicU64) -> u64 {
    AgentCounters::get(c)
}

/// Schedules `unit` on `machine` as the engine would: under the engine's lease.
async fn schedule<S: KvStore>(reg: &Registry<S>, unit: &str, machine: &str) {
    let lease = match reg.lease().await.unwrap() {
        Some(l) => l,
        None => reg
            .acquire_lease(
                &LeaseRecord {
                    machine_id: "test-engine".into(),
                    version: 1,
                },
                600,
            )
            .await
            .unwrap()
            .unwrap(),
    };
    reg.schedule(unit, machine, &lease.fence(reg.keys()))
        .await
        .unwrap();
}

async fn unschedule<S: KvStore>(reg: &Registry<S>, unit: &str, machine: &str) {
    let lease = reg.lease().await.unwrap().unwrap();
    reg.unschedule(unit, machine, &lease.fence(reg.keys()))
        .await
        .unwrap();
}

/// The state `machine` published for `unit`.
async fn published<S: KvStore>(
    reg: &Registry<S>,
    unit: &str,
    machine: &str,
) -> Option<UnitStateRecord> {
    let (states, _) = reg.states().await.unwrap();
    states
        .into_iter()
        .find(|s| s.unit == unit && s.machine_id == machine)
        .map(|s| s.record)
}

/// fleet's derived current state of `unit`.
async fn current<S: KvStore>(reg: &Registry<S>, unit: &str) -> Option<JobState> {
    let u = reg.unit(unit).await.unwrap()?;
    let on_target = match &u.target {
        Some(t) => published(reg, unit, t).await.is_some(),
        None => false,
    };
    u.current_state(on_target)
}

async fn driver_state<D: UnitDriver>(driver: &D, unit: &str) -> String {
    driver.status(unit).await.unwrap().state.to_string()
}

async fn present<S: KvStore>(reg: &Registry<S>, machine: &str) -> bool {
    reg.machines()
        .await
        .unwrap()
        .0
        .iter()
        .any(|m| m.id == machine)
}

async fn wait_driver<D: UnitDriver>(driver: &D, unit: &str, want: &str) {
    eventually(WAIT, &format!("{unit} to be {want}"), || async {
        (driver_state(driver, unit).await == want).then_some(())
    })
    .await;
}

async fn wait_current<S: KvStore>(reg: &Registry<S>, unit: &str, want: JobState) {
    eventually(WAIT, &format!("{unit}'s current state {want}"), || async {
        (current(reg, unit).await == Some(want)).then_some(())
    })
    .await;
}

/// fleet's load/start/stop/unload through a fake systemd (`agent` tests) and the states
/// it publishes (`unit_state` tests): launched → loaded → unscheduled.
#[tokio::test]
async fn a_scheduled_unit_is_started_stopped_and_unloaded() {
    let reg = Arc::new(Registry::new(etcd_store().await));
    let driver = FakeDriver::new();
    let agent = Running::spawn(reg.clone(), Arc::new(driver.clone()), config("m1"));
    eventually(WAIT, "m1's presence", || async {
        present(&reg, "m1").await.then_some(())
    })
    .await;
    let m = reg.machines().await.unwrap().0;
    assert_eq!(m[0].version, "1.0.0");

    let c = reg
        .put_unit(
            "hello.service",
            UnitContents::from_text(SLEEP).unwrap(),
            JobState::Launched,
        )
        .await
        .unwrap();
    schedule(&reg, "hello.service", "m1").await;
    wait_driver(&driver, "hello.service", "loaded/active/running").await;
    assert_eq!(driver.contents("hello.service").as_deref(), Some(c.raw()));
    wait_current(&reg, "hello.service", JobState::Launched).await;
    let record = published(&reg, "hello.service", "m1").await.unwrap();
    assert_eq!(
        (
            record.load_state.as_str(),
            record.active_state.as_str(),
            record.sub_state.as_str()
        ),
        ("loaded", "active", "running")
    );
    assert_eq!(record.machine_id(), "m1");
    assert_eq!(record.unit_hash, c.hash().to_string());

    // Desired loaded: stopped, the heartbeat goes, the state stays.
    reg.set_desired("hello.service", JobState::Loaded)
        .await
        .unwrap();
    wait_driver(&driver, "hello.service", "loaded/inactive/dead").await;
    wait_current(&reg, "hello.service", JobState::Loaded).await;

    // Unscheduled: unloaded, and its state deleted.
    unschedule(&reg, "hello.service", "m1").await;
    wait_driver(&driver, "hello.service", "not-found/inactive/dead").await;
    eventually(WAIT, "the state to be deleted", || async {
        published(&reg, "hello.service", "m1")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(
        current(&reg, "hello.service").await,
        Some(JobState::Inactive)
    );
    assert_eq!(count(&agent.counters.tasks_failed), 0);
    assert!(count(&agent.counters.tasks_run) >= 4);
    // Only the start-up read was a full read: everything else came by watch.
    assert_eq!(count(&agent.counters.full_reads), 1);
    agent.shutdown().await;
}

/// States are renewed before their TTL runs out, and the launch heartbeat with them.
#[tokio::test]
async fn states_and_heartbeats_outlive_their_ttl() {
    let reg = Arc::new(Registry::new(etcd_store().await));
    let driver = FakeDriver::new();
    let agent = Running::spawn(reg.clone(), Arc::new(driver.clone()), config("m1"));
    reg.put_unit(
        "a.service",
        UnitContents::from_text(SLEEP).unwrap(),
        JobState::Launched,
    )
    .await
    .unwrap();
    schedule(&reg, "a.service", "m1").await;
    wait_current(&reg, "a.service", JobState::Launched).await;
    let published_before = count(&agent.counters.states_published);
    // Three TTLs later (TTL 2 s) the unit is still launched, by renewals.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(current(&reg, "a.service").await, Some(JobState::Launched));
    assert!(count(&agent.counters.states_published) >= published_before + 3);
    agent.shutdown().await;
}

/// A replaced unit (new contents, so a new hash) is unloaded and loaded again.
#[tokio::test]
async fn replaced_contents_are_reloaded() {
    let reg = Arc::new(Registry::new(etcd_store().await));
    let driver = FakeDriver::new();
    let agent = Running::spawn(reg.clone(), Arc::new(driver.clone()), config("m1"));
    reg.put_unit(
        "web.service",
        UnitContents::from_text(SLEEP).unwrap(),
        JobState::Launched,
    )
    .await
    .unwrap();
    schedule(&reg, "web.service", "m1").await;
    wait_driver(&driver, "web.service", "loaded/active/running").await;

    let c2 = reg
        .put_unit(
            "web.service",
            UnitContents::from_text(SLEEP2).unwrap(),
            JobState::Launched,
        )
        .await
        .unwrap();
    eventually(WAIT, "the new contents to be loaded", || async {
        (driver.contents("web.service").as_deref() == Some(c2.raw())).then_some(())
    })
    .await;
    wait_driver(&driver, "web.service", "loaded/active/running").await;
    eventually(WAIT, "the new hash to be published", || async {
        published(&reg, "web.service", "m1")
            .await
            .filter(|r| r.unit_hash == c2.hash().to_string())
            .map(|_| ())
    })
    .await;
    use systemd_driver::fake::Call;
    let calls = driver.calls();
    let unload = calls
        .iter()
        .position(|c| *c == Call::Unload("web.service".into()))
        .expect("unloaded");
    assert!(matches!(&calls[unload + 1], Call::Load(n, _) if n == "web.service"));
    assert_eq!(calls.last(), Some(&Call::Start("web.service".into())));
    agent.shutdown().await;
}

const GLOBAL_EU: &str =
    "[Service]\nExecStart=/bin/sleep 1000\n[X-Fleet]\nGlobal=true\nMachineMetadata=region=eu\n";
const GLOBAL_SSD: &str =
    "[Service]\nExecStart=/bin/sleep 1000\n[X-Fleet]\nGlobal=true\nMachineMetadata=disk=ssd\n";

/// Global units run where the metadata (configured, then dynamic) matches, and stop when
/// it no longer does (fleet's `TestScheduleGlobalUnits`, §4.4 dynamic metadata).
#[tokio::test]
async fn global_units_follow_the_machines_metadata() {
    let reg = Arc::new(Registry::new(etcd_store().await));
    let driver = FakeDriver::new();
    let mut cfg = config("m1");
    cfg.metadata.insert("region".into(), "eu".into());
    let agent = Running::spawn(reg.clone(), Arc::new(driver.clone()), cfg);
    reg.put_unit(
        "eu.service",
        UnitContents::from_text(GLOBAL_EU).unwrap(),
        JobState::Launched,
    )
    .await
    .unwrap();
    reg.put_unit(
        "ssd.service",
        UnitContents::from_text(GLOBAL_SSD).unwrap(),
        JobState::Launched,
    )
    .await
    .unwrap();
    wait_driver(&driver, "eu.service", "loaded/active/running").await;
    eventually(WAIT, "eu.service's state", || async {
        published(&reg, "eu.service", "m1").await.map(|_| ())
    })
    .await;
    assert_eq!(
        driver_state(&driver, "ssd.service").await,
        "not-found/inactive/dead"
    );

    // Dynamic metadata adds a key: the second global unit starts.
    reg.set_metadata("m1", "disk", "ssd").await.unwrap();
    wait_driver(&driver, "ssd.service", "loaded/active/running").await;
    // Dynamic metadata masks a configured key: the first stops and goes.
    reg.set_metadata("m1", "region", "").await.unwrap();
    wait_driver(&driver, "eu.service", "not-found/inactive/dead").await;
    eventually(WAIT, "eu.service's state to go", || async {
        published(&reg, "eu.service", "m1")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    // Desired inactive (fleetctl unload of a global unit): unloaded too.
    reg.set_desired("ssd.service", JobState::Inactive)
        .await
        .unwrap();
    wait_driver(&driver, "ssd.service", "not-found/inactive/dead").await;
    // Only the start-up read was a full read.
    assert_eq!(count(&agent.counters.full_reads), 1);
    agent.shutdown().await;
}

/// Graceful shutdown is fleet's `Server.Purge`: units stopped and unloaded, their states
/// and heartbeats deleted, the presence removed (fleet's functional `TestNodeShutdown`).
#[tokio::test]
async fn graceful_shutdown_purges_everything() {
    let reg = Arc::new(Registry::new(etcd_store().await));
    let driver = FakeDriver::new();
    let agent = Running::spawn(reg.clone(), Arc::new(driver.clone()), config("m1"));
    for name in ["a.service", "b.service"] {
        reg.put_unit(
            name,
            UnitContents::from_text(SLEEP).unwrap(),
            JobState::Launched,
        )
        .await
        .unwrap();
        schedule(&reg, name, "m1").await;
    }
    wait_current(&reg, "a.service", JobState::Launched).await;
    wait_current(&reg, "b.service", JobState::Launched).await;
    agent.shutdown().await;

    assert!(driver.list().await.unwrap().is_empty(), "units unloaded");
    assert!(!present(&reg, "m1").await, "presence removed");
    assert!(reg.states().await.unwrap().0.is_empty(), "states deleted");
    for name in ["a.service", "b.service"] {
        let u = reg.unit(name).await.unwrap().unwrap();
        assert_eq!(u.launched_on, None, "heartbeat of {name} cleared");
        assert_eq!(
            u.target.as_deref(),
            Some("m1"),
            "the schedule is the engine's"
        );
    }
}

/// A second live machine with the same ID is refused, and the agent keeps trying without
/// touching its units; once the ID is free it registers and runs them.
#[tokio::test]
async fn a_duplicate_machine_id_keeps_failing_until_it_is_free() {
    let reg = Arc::new(Registry::new(etcd_store().await));
    let other = MachineRecord {
        id: "m1".into(),
        public_ip: "10.0.0.99".into(),
        ..MachineRecord::default()
    };
    reg.register_machine(&other, 600).await.unwrap();
    reg.put_unit(
        "a.service",
        UnitContents::from_text(SLEEP).unwrap(),
        JobState::Launched,
    )
    .await
    .unwrap();
    schedule(&reg, "a.service", "m1").await;

    let driver = FakeDriver::new();
    let agent = Running::spawn(reg.clone(), Arc::new(driver.clone()), config("m1"));
    eventually(WAIT, "several refused registrations", || async {
        (count(&agent.counters.presence_failures) >= 3).then_some(())
    })
    .await;
    assert_eq!(*agent.presence.borrow(), Presence::Unregistered);
    assert!(
        driver.calls().is_empty(),
        "nothing run under a duplicate ID"
    );
    assert_eq!(reg.machines().await.unwrap().0[0].public_ip, "10.0.0.99");

    reg.remove_machine("m1").await.unwrap();
    wait_driver(&driver, "a.service", "loaded/active/running").await;
    assert_eq!(*agent.presence.borrow(), Presence::Alive);
    agent.shutdown().await;
}

/// Units left loaded by an earlier run are taken over without a restart when still
/// scheduled here, and unloaded when not.
#[tokio::test]
async fn units_left_by_an_earlier_run_are_taken_over() {
    let reg = Arc::new(Registry::new(etcd_store().await));
    let driver = FakeDriver::new();
    driver.load("kept.service", SLEEP).await.unwrap();
    driver.start("kept.service").await.unwrap();
    driver.load("stale.service", SLEEP).await.unwrap();
    reg.put_unit(
        "kept.service",
        UnitContents::from_text(SLEEP).unwrap(),
        JobState::Launched,
    )
    .await
    .unwrap();
    schedule(&reg, "kept.service", "m1").await;
    let before = driver.calls().len();

    let agent = Running::spawn(reg.clone(), Arc::new(driver.clone()), config("m1"));
    wait_driver(&driver, "stale.service", "not-found/inactive/dead").await;
    wait_current(&reg, "kept.service", JobState::Launched).await;
    use systemd_driver::fake::Call;
    let calls: Vec<Call> = driver.calls()[before..].to_vec();
    assert!(
        !calls.contains(&Call::Stop("kept.service".into()))
            && !calls.contains(&Call::Unload("kept.service".into())),
        "kept.service was not stopped: {calls:?}"
    );
    agent.shutdown().await;
}

/// A failing task is retried with backoff, and the other units go on meanwhile.
#[tokio::test]
async fn a_failing_task_is_retried_and_does_not_block_others() {
    let reg = Arc::new(Registry::new(etcd_store().await));
    let driver = FakeDriver::new();
    driver.fail("start", "bad.service", "no such binary");
    let agent = Running::spawn(reg.clone(), Arc::new(driver.clone()), config("m1"));
    for name in ["bad.service", "good.service"] {
        reg.put_unit(
            name,
            UnitContents::from_text(SLEEP).unwrap(),
            JobState::Launched,
        )
        .await
        .unwrap();
        schedule(&reg, name, "m1").await;
    }
    wait_driver(&driver, "good.service", "loaded/active/running").await;
    eventually(WAIT, "several attempts to start bad.service", || async {
        (count(&agent.counters.tasks_failed) >= 3).then_some(())
    })
    .await;
    // Loaded but never launched: fleet's current state says so.
    assert_eq!(current(&reg, "bad.service").await, Some(JobState::Loaded));
    agent.shutdown().await;
}

/// A store whose connection the test can cut: every request fails while it is cut, and
/// watches end with an error.
#[derive(Debug, Clone)]
struct Cuttable {
    inner: EtcdStore,
    down: Arc<watch::Sender<bool>>,
}

impl Cuttable {
    fn new(inner: EtcdStore) -> Cuttable {
        Cuttable {
            inner,
            down: Arc::new(watch::Sender::new(false)),
        }
    }

    fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }

    fn unavailable() -> StoreError {
        StoreError::Unavailable {
            endpoint: "cut".into(),
            detail: "connection cut by the test".into(),
        }
    }

    fn check(&self) -> Result<(), StoreError> {
        if *self.down.borrow() {
            Err(Cuttable::unavailable())
        } else {
            Ok(())
        }
    }
}

impl KvStore for Cuttable {
    async fn apply(&self, op: Op) -> Result<Event, StoreError> {
        self.check()?;
        self.inner.apply(op).await
    }

    async fn get(&self, key: &str, recursive: bool, quorum: bool) -> Result<Event, StoreError> {
        self.check()?;
        self.inner.get(key, recursive, quorum).await
    }

    async fn watch(&self, prefix: &str, since: u64) -> Result<Watch, StoreError> {
        self.check()?;
        let mut inner = self.inner.watch(prefix, since).await?;
        let (tx, rx) = mpsc::channel(256);
        let mut down = self.down.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = async { let _ = down.wait_for(|d| *d).await; } => {
                        let _ = tx.send(Err(Cuttable::unavailable())).await;
                        return;
                    }
                    ev = inner.events.recv() => match ev {
                        Some(e) => if tx.send(e).await.is_err() { return },
                        None => return,
                    },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Watch { events: rx })
    }

    fn supports_txn(&self) -> bool {
        self.inner.supports_txn()
    }

    fn endpoint(&self) -> &str {
        self.inner.endpoint()
    }
}

/// Self-fencing: cut off from the store, the agent stops its units while its presence
/// still exists (so before the engine could move them), keeps them loaded, and starts them
/// again once it is back (issue 22: no unit active on two machines at once).
#[tokio::test]
async fn a_cut_off_agent_stops_its_units_before_its_presence_expires() {
    let inner = etcd_store().await;
    let reg = Registry::new(inner.clone());
    let cut = Cuttable::new(inner);
    let driver = FakeDriver::new();
    // TTL 3 s: refreshed every 1.5 s, fenced 2.4 s after the last refresh sent.
    let cfg = AgentConfig {
        agent_ttl: Duration::from_secs(3),
        ..config("m1")
    };
    assert_eq!(cfg.fence_margin(), Duration::from_millis(600));
    let agent = Running::spawn(
        Arc::new(Registry::new(cut.clone())),
        Arc::new(driver.clone()),
        cfg,
    );
    reg.put_unit(
        "a.service",
        UnitContents::from_text(SLEEP).unwrap(),
        JobState::Launched,
    )
    .await
    .unwrap();
    schedule(&reg, "a.service", "m1").await;
    wait_current(&reg, "a.service", JobState::Launched).await;

    let mut changes = driver.subscribe().await.unwrap();
    let cut_at = tokio::time::Instant::now();
    cut.set_down(true);
    // Waiting on the driver's changes (not polling) reads the presence right after the stop.
    let stopped = tokio::time::timeout(WAIT, async {
        loop {
            let c = changes.recv().await.unwrap();
            let state = c.state.as_ref().map(|s| s.to_string());
            if c.name == "a.service" && state.as_deref() == Some("loaded/inactive/dead") {
                break c;
            }
        }
    })
    .await
    .expect("the unit to be stopped after the cut");
    // The presence, written at the latest just before the cut, still exists: the unit was
    // stopped before the engine could have seen the machine go.
    assert!(
        present(&reg, "m1").await,
        "stopped while the presence still exists"
    );
    let after = tokio::time::Instant::from_std(stopped.at) - cut_at;
    // The last refresh was sent at most 1.5 s before the cut, so the fence falls 0.9 s to
    // 2.4 s after it: not at the first failed refresh, and before the 3 s TTL.
    assert!(
        after > Duration::from_millis(850) && after < Duration::from_secs(3),
        "stopped {after:?} after the cut"
    );
    assert_eq!(count(&agent.counters.fencing_events), 1);
    assert_eq!(*agent.presence.borrow(), Presence::Fenced);
    // Stopped, not unloaded.
    assert_eq!(
        driver_state(&driver, "a.service").await,
        "loaded/inactive/dead"
    );
    // The presence does expire (the engine would now move the unit).
    eventually(WAIT, "the presence to expire", || async {
        (!present(&reg, "m1").await).then_some(())
    })
    .await;

    cut.set_down(false);
    wait_driver(&driver, "a.service", "loaded/active/running").await;
    eventually(WAIT, "the presence to be back", || async {
        present(&reg, "m1").await.then_some(())
    })
    .await;
    wait_current(&reg, "a.service", JobState::Launched).await;
    assert_eq!(*agent.presence.borrow(), Presence::Alive);
    assert_eq!(count(&agent.counters.fencing_events), 1);
    agent.shutdown().await;
}

/// A cut-off agent whose unit moved away while it was fenced does not start it again when
/// its presence comes back, even though its last view of the registry (from before the cut)
/// still schedules the unit here and its follower is waiting out a long retry backoff: it
/// starts nothing until it has read the registry anew (found by the whole-system test
/// `fleet_cluster::machine_cut_off_from_the_store_stops_its_units_first`).
#[tokio::test]
async fn a_fenced_agent_starts_nothing_before_it_has_read_the_registry_again() {
    let inner = etcd_store().await;
    let reg = Registry::new(inner.clone());
    let cut = Cuttable::new(inner);
    let driver = FakeDriver::new();
    // The follower's retries space out to 8 s while the heart retries every 1.5 s at most.
    let cfg = AgentConfig {
        agent_ttl: Duration::from_secs(3),
        retry_backoff: Duration::from_secs(1),
        max_retry_backoff: Duration::from_secs(8),
        ..config("m1")
    };
    let agent = Running::spawn(
        Arc::new(Registry::new(cut.clone())),
        Arc::new(driver.clone()),
        cfg,
    );
    reg.put_unit(
        "a.service",
        UnitContents::from_text(SLEEP).unwrap(),
        JobState::Launched,
    )
    .await
    .unwrap();
    schedule(&reg, "a.service", "m1").await;
    wait_current(&reg, "a.service", JobState::Launched).await;

    cut.set_down(true);
    wait_driver(&driver, "a.service", "loaded/inactive/dead").await;
    eventually(WAIT, "the presence to expire", || async {
        (!present(&reg, "m1").await).then_some(())
    })
    .await;
    // The engine moves the unit away, and the cut lasts until the follower's next retry
    // is several seconds away.
    unschedule(&reg, "a.service", "m1").await;
    schedule(&reg, "a.service", "m2").await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    cut.set_down(false);
    eventually(WAIT, "the presence to be back", || async {
        present(&reg, "m1").await.then_some(())
    })
    .await;
    // The unit is unloaded here without having been started again.
    wait_driver(&driver, "a.service", "not-found/inactive/dead").await;
    let starts = driver
        .calls()
        .into_iter()
        .filter(|c| *c == systemd_driver::fake::Call::Start("a.service".into()))
        .count();
    assert_eq!(
        starts,
        1,
        "started again where it moved away from: {:?}",
        driver.calls()
    );
    agent.shutdown().await;
}

/// A short store outage (shorter than the TTL minus the margin, like a store leader
/// election) and a change of the engine's leader restart no unit (issue 22).
#[tokio::test]
async fn a_short_store_outage_and_a_new_engine_leader_restart_nothing() {
    let inner = etcd_store().await;
    let reg = Registry::new(inner.clone());
    let cut = Cuttable::new(inner);
    let driver = FakeDriver::new();
    let cfg = AgentConfig {
        agent_ttl: Duration::from_secs(3),
        ..config("m1")
    };
    let agent = Running::spawn(
        Arc::new(Registry::new(cut.clone())),
        Arc::new(driver.clone()),
        cfg,
    );
    reg.put_unit(
        "a.service",
        UnitContents::from_text(SLEEP).unwrap(),
        JobState::Launched,
    )
    .await
    .unwrap();
    schedule(&reg, "a.service", "m1").await;
    wait_current(&reg, "a.service", JobState::Launched).await;
    let before = driver.calls().len();
    let reads = count(&agent.counters.full_reads);

    cut.set_down(true);
    tokio::time::sleep(Duration::from_millis(700)).await;
    cut.set_down(false);
    // The engine's leader changes too: its lease goes to another machine.
    let lease = reg.lease().await.unwrap().unwrap();
    reg.release_lease(&lease).await.unwrap();
    let other = LeaseRecord {
        machine_id: "m2".into(),
        version: 1,
    };
    reg.acquire_lease(&other, 600).await.unwrap().unwrap();
    // The watch broke, so the agent reads everything again, and changes nothing.
    eventually(WAIT, "a full read after the outage", || async {
        (count(&agent.counters.full_reads) > reads).then_some(())
    })
    .await;
    reg.set_desired("a.service", JobState::Launched)
        .await
        .unwrap();
    wait_current(&reg, "a.service", JobState::Launched).await;
    assert_eq!(
        driver.calls().len(),
        before,
        "no driver call: {:?}",
        driver.calls()
    );
    assert_eq!(count(&agent.counters.fencing_events), 0);
    agent.shutdown().await;
}

/// End to end with the native supervisor: a real `/bin/sh` service, published as
/// `loaded/active/running`, stopped and unloaded at shutdown.
#[tokio::test]
async fn the_process_driver_runs_a_real_service() {
    use systemd_driver::{ProcessDriver, ProcessDriverConfig};
    let reg = Arc::new(Registry::new(etcd_store().await));
    let dir = tempfile::tempdir().unwrap();
    let driver = Arc::new(
        ProcessDriver::open(ProcessDriverConfig::new(dir.path()))
            .await
            .unwrap(),
    );
    let agent = Running::spawn(reg.clone(), driver.clone(), config("m1"));
    reg.put_unit(
        "sleeper.service",
        UnitContents::from_text("[Service]\nExecStart=/bin/sh -c 'sleep 1000'\n").unwrap(),
        JobState::Launched,
    )
    .await
    .unwrap();
    schedule(&reg, "sleeper.service", "m1").await;
    eventually(WAIT, "sleeper.service running", || async {
        published(&reg, "sleeper.service", "m1")
            .await
            .filter(|r| r.active_state == "active" && r.sub_state == "running")
            .map(|r| r.load_state)
    })
    .await;
    let pid = driver
        .status("sleeper.service")
        .await
        .unwrap()
        .main_pid
        .expect("a main process");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    wait_current(&reg, "sleeper.service", JobState::Launched).await;

    agent.shutdown().await;
    assert!(driver.list().await.unwrap().is_empty());
    eventually(WAIT, "the service's process to exit", || async {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie not yet reaped.
        (stat.is_empty() || stat.contains(") Z ")).then_some(())
    })
    .await;
}
