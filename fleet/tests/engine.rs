//! The engine over a real etcd v2 server: leadership, fencing, placement by constraints,
//! rescheduling when machines go, and no churn when the store fails.
//!
//! Machines here are only presence records (no agents). Timings are printed with
//! `--nocapture`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fleet::engine::{Engine, EngineConfig, EngineHandle};
use fleet::registry::{
    JobState, LeaseRecord, MachineRecord, Registry, RegistryError, UnitContents,
};
use fleet::store::etcd::EtcdStore;
use fleet::store::{KvStore, StoreError, Watch};
use kv_core::{Action, Event, Op};
use kv_server::backend::KvBackend;
use kv_server::backend::memory::MemoryBackend;
use tokio::sync::{mpsc, oneshot};

use crate::util::eventually;

const WEB: &str = "[Service]\nExecStart=/bin/sleep 1000\n\n[X-Fleet]\nConflicts=web@*.service\n";
const PLAIN: &str = "[Service]\nExecStart=/bin/sleep 1000\n";

/// Long enough for a loaded machine running several test binaries at once.
const WAIT: Duration = Duration::from_secs(15);

// ---- a store whose reads or writes can be made to fail, optionally with transactions ----

/// An etcd v2 server in this process, reached over HTTP; with `txn`, writes go straight to
/// its backend, which runs kv-core transactions (so fences are compared in the store).
/// Reads and writes can be made to fail as an unreachable store's do.
#[derive(Clone)]
struct TestStore {
    http: EtcdStore,
    backend: Option<Arc<MemoryBackend>>,
    reads_fail: Arc<AtomicBool>,
    writes_fail: Arc<AtomicBool>,
    /// Tells watches to end (as a dead long poll does) when reads start failing.
    outage: Arc<tokio::sync::watch::Sender<bool>>,
}

impl TestStore {
    async fn new(txn: bool) -> TestStore {
        let (http, backend) = crate::util::etcd_store_with_backend().await;
        TestStore {
            http,
            backend: txn.then_some(backend),
            reads_fail: Arc::new(AtomicBool::new(false)),
            writes_fail: Arc::new(AtomicBool::new(false)),
            outage: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// Reads (and watches) fail from now on, or work again.
    fn fail_reads(&self, fail: bool) {
        self.reads_fail.store(fail, Ordering::SeqCst);
        self.outage.send_replace(fail);
    }

    /// Writes fail from now on, or work again.
    fn fail_writes(&self, fail: bool) {
        self.writes_fail.store(fail, Ordering::SeqCst);
    }

    fn down(&self) -> StoreError {
        StoreError::Unavailable {
            endpoint: self.http.endpoint().to_owned(),
            detail: "the test cut the store off".into(),
        }
    }
}

impl KvStore for TestStore {
    async fn apply(&self, op: Op) -> Result<Event, StoreError> {
        if self.writes_fail.load(Ordering::SeqCst) {
            return Err(self.down());
        }
        let Some(backend) = &self.backend else {
            return self.http.apply(op).await;
        };
        Ok(backend.apply(op).await?.event)
    }

    async fn get(&self, key: &str, recursive: bool, quorum: bool) -> Result<Event, StoreError> {
        if self.reads_fail.load(Ordering::SeqCst) {
            return Err(self.down());
        }
        self.http.get(key, recursive, quorum).await
    }

    async fn watch(&self, prefix: &str, since: u64) -> Result<Watch, StoreError> {
        if self.reads_fail.load(Ordering::SeqCst) {
            return Err(self.down());
        }
        let mut inner = self.http.watch(prefix, since).await?;
        let mut outage = self.outage.subscribe();
        let down = self.down();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    ev = inner.events.recv() => ev,
                    _ = outage.changed() => {
                        if *outage.borrow() {
                            Some(Err(down.clone()))
                        } else {
                            continue;
                        }
                    }
                };
                let Some(ev) = ev else { return };
                let last = ev.is_err();
                if tx.send(ev).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Watch { events: rx })
    }

    fn supports_txn(&self) -> bool {
        self.backend.is_some()
    }

    fn endpoint(&self) -> &str {
        self.http.endpoint()
    }
}

// ---- machines, units, engines ----

type Reg = Registry<TestStore>;

fn record(id: &str, meta: &[(&str, &str)]) -> MachineRecord {
    MachineRecord {
        id: id.into(),
        metadata: (!meta.is_empty()).then(|| {
            meta.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }),
        ..MachineRecord::default()
    }
}

/// A machine's presence, refreshed every 200 ms with a 1 s TTL until stopped or dropped
/// (then the store expires it).
struct Presence {
    task: tokio::task::JoinHandle<()>,
}

impl Presence {
    async fn start(reg: &Arc<Reg>, rec: MachineRecord) -> Presence {
        reg.register_machine(&rec, 1).await.unwrap();
        let reg = reg.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if reg.refresh_machine(&rec, 1).await.is_err() {
                    let _ = reg.register_machine(&rec, 1).await;
                }
            }
        });
        Presence { task }
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Presence records with a long TTL, for tests that remove them by hand.
async fn static_machines(reg: &Reg, ids: &[&str]) {
    for id in ids {
        reg.register_machine(&record(id, &[]), 60).await.unwrap();
    }
}

async fn put(reg: &Reg, name: &str, text: &str) {
    reg.put_unit(
        name,
        UnitContents::from_text(text).unwrap(),
        JobState::Launched,
    )
    .await
    .unwrap();
}

async fn targets(reg: &Reg) -> BTreeMap<String, Option<String>> {
    let (units, _) = reg.units().await.unwrap();
    units.into_iter().map(|u| (u.name, u.target)).collect()
}

/// Polls until `unit`'s target satisfies `ok`; returns it.
async fn target_where(
    reg: &Reg,
    unit: &str,
    what: &str,
    ok: impl Fn(Option<&str>) -> bool,
) -> Option<String> {
    eventually(WAIT, what, || async {
        let t = reg.unit(unit).await.unwrap()?.target;
        ok(t.as_deref()).then_some(t)
    })
    .await
}

fn config(id: &str) -> EngineConfig {
    let mut c = EngineConfig::new(id).with_reconcile_interval(Duration::from_millis(200));
    c.presence_grace = Duration::from_secs(2);
    c
}

/// A running engine and the way to stop it.
struct Running {
    handle: EngineHandle,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(store: &TestStore, config: EngineConfig) -> Running {
        let reg = Arc::new(Registry::new(store.clone()));
        let engine = Engine::new(reg, config).unwrap();
        let handle = engine.handle();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(engine.run(async {
            let _ = stopped.await;
        }));
        Running {
            handle,
            stop: Some(stop),
            task,
        }
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    eventually(WAIT, what, || {
        let v = ok().then_some(());
        async move { v }
    })
    .await
}

/// Checks `ok` every 20 ms for `d` (for things that must *not* happen).
async fn throughout(d: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        assert!(ok(), "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn with_timeout<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

// ---- leadership ----

#[tokio::test]
async fn two_engines_elect_one_leader_and_a_shutdown_hands_over_at_once() {
    let store = TestStore::new(false).await;
    let reg = Registry::new(store.clone());
    // A long lease: a handover faster than it proves the release.
    let long = |id: &str| {
        let mut c = config(id);
        c.lease_ttl = Duration::from_secs(20);
        c
    };
    let a = Running::start(&store, long("m1"));
    let b = Running::start(&store, long("m2"));
    until("a leader", || a.handle.is_leader() || b.handle.is_leader()).await;
    throughout(Duration::from_secs(1), "exactly one leader", || {
        a.handle.is_leader() != b.handle.is_leader()
    })
    .await;
    let (leader, follower, leader_id) = if a.handle.is_leader() {
        (a, b, "m1")
    } else {
        (b, a, "m2")
    };
    let lease = reg.lease().await.unwrap().unwrap();
    assert_eq!(lease.record.machine_id, leader_id);
    assert_eq!(lease.record.version, 1);
    let version = store
        .get("/_coreos.com/fleet/engine/version", false, true)
        .await
        .unwrap();
    assert_eq!(version.node.value.as_deref(), Some("1"));
    until("the follower to know the leader", || {
        follower.handle.leader().as_deref() == Some(leader_id)
    })
    .await;

    let t = Instant::now();
    leader.shutdown().await;
    until("the follower to take over", || follower.handle.is_leader()).await;
    let took = t.elapsed();
    println!("handover after a graceful shutdown: {took:?} (lease TTL 20 s)");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let m = follower.handle.metrics();
    assert_eq!((m.leader_acquired, m.leader_lost), (1, 0));
}

#[tokio::test]
async fn a_leader_whose_lease_is_taken_stops_writing() {
    let store = TestStore::new(false).await;
    let reg = Arc::new(Registry::new(store.clone()));
    let _m1 = Presence::start(&reg, record("m1", &[])).await;
    let e = Running::start(&store, config("m1"));
    put(&reg, "a.service", PLAIN).await;
    target_where(&reg, "a.service", "a scheduled", |t| t == Some("m1")).await;

    // Someone takes the lease over by compare-and-swap (the creation index stays).
    let lease = reg.lease().await.unwrap().unwrap();
    let intruder = LeaseRecord {
        machine_id: "intruder".into(),
        version: 1,
    };
    let theirs = reg
        .steal_lease(&lease, &intruder, 30)
        .await
        .unwrap()
        .expect("the lease did not change meanwhile");
    until("the engine to notice", || !e.handle.is_leader()).await;
    assert!(e.handle.last_pass().is_none());

    // It writes nothing any more: a new unit stays unscheduled.
    put(&reg, "b.service", PLAIN).await;
    let regc = reg.clone();
    let mut unscheduled = true;
    let end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < end {
        unscheduled &= regc
            .unit("b.service")
            .await
            .unwrap()
            .unwrap()
            .target
            .is_none();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(unscheduled, "an engine without the lease scheduled a unit");
    assert!(!e.handle.is_leader());
    // The holder writes.
    reg.schedule("b.service", "m1", &theirs.fence(reg.keys()))
        .await
        .unwrap();
}

/// An engine paused past its lease wakes up holding the old fence: the store refuses its
/// writes, whether the lease expired and was acquired again or was taken over.
async fn paused_leaders_fence_cannot_write(txn: bool) {
    let store = TestStore::new(txn).await;
    assert_eq!(store.supports_txn(), txn);
    let reg = Arc::new(Registry::new(store.clone()));
    static_machines(&reg, &["m1", "m2"]).await;
    put(&reg, "a.service", PLAIN).await;
    let e = Running::start(&store, config("m1"));
    target_where(&reg, "a.service", "a scheduled", |t| t.is_some()).await;
    let paused = reg.lease().await.unwrap().unwrap().fence(reg.keys());
    e.shutdown().await; // releases the lease: as if it had expired

    let other = LeaseRecord {
        machine_id: "m2".into(),
        version: 1,
    };
    let theirs = reg.acquire_lease(&other, 30).await.unwrap().unwrap();
    let target = reg
        .unit("a.service")
        .await
        .unwrap()
        .unwrap()
        .target
        .unwrap();
    let err = reg
        .unschedule("a.service", &target, &paused)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Fenced(_)), "{err}");
    put(&reg, "b.service", PLAIN).await;
    let err = reg.schedule("b.service", "m1", &paused).await.unwrap_err();
    assert!(matches!(err, RegistryError::Fenced(_)), "{err}");

    // Taken over in place (same creation index, another holder): still refused.
    let newer = LeaseRecord {
        machine_id: "m3".into(),
        version: 2,
    };
    let stolen = reg.steal_lease(&theirs, &newer, 30).await.unwrap().unwrap();
    assert_eq!(stolen.created_index, theirs.created_index);
    let err = reg
        .schedule("b.service", "m1", &theirs.fence(reg.keys()))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Fenced(_)), "{err}");
    assert_eq!(reg.unit("b.service").await.unwrap().unwrap().target, None);
    reg.schedule("b.service", "m1", &stolen.fence(reg.keys()))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_paused_leaders_fence_cannot_write_with_transactions() {
    paused_leaders_fence_cannot_write(true).await;
}

#[tokio::test]
async fn a_paused_leaders_fence_cannot_write_on_plain_etcd() {
    paused_leaders_fence_cannot_write(false).await;
}

#[tokio::test]
async fn an_older_engines_lease_is_taken_after_its_remaining_time() {
    let store = TestStore::new(true).await;
    let reg = Arc::new(Registry::new(store.clone()));
    static_machines(&reg, &["m1"]).await;
    put(&reg, "a.service", PLAIN).await;
    // fleet before 0.10 wrote the bare machine ID (version 0) and no engine/version.
    store
        .apply(Op::Set {
            key: "/_coreos.com/fleet/lease/engine-leader".into(),
            value: "old".into(),
            dir: false,
            ttl: Some(2),
            refresh: false,
        })
        .await
        .unwrap();
    let t = Instant::now();
    let e = Running::start(&store, config("m1"));
    until("the steal", || e.handle.is_leader()).await;
    let stole = t.elapsed();
    let lease = reg.lease().await.unwrap().unwrap();
    assert_eq!(lease.record.machine_id, "m1");
    target_where(&reg, "a.service", "a scheduled", |t| t.is_some()).await;
    let acted = t.elapsed();
    println!("stole the v0 lease after {stole:?}, first schedule after {acted:?}");
    assert!(
        acted >= stole + Duration::from_millis(1500),
        "acted {acted:?} before the old lease's time ran out (stolen at {stole:?})"
    );
    let version = store
        .get("/_coreos.com/fleet/engine/version", false, true)
        .await
        .unwrap();
    assert_eq!(
        version.node.value.as_deref(),
        Some("1"),
        "upgraded from none"
    );
}

#[tokio::test]
async fn a_newer_engine_version_or_a_disabled_engine_never_leads() {
    let store = TestStore::new(false).await;
    store
        .apply(Op::Set {
            key: "/_coreos.com/fleet/engine/version".into(),
            value: "2".into(),
            dir: false,
            ttl: None,
            refresh: false,
        })
        .await
        .unwrap();
    let old = Running::start(&store, config("m1"));
    let mut off = config("m2");
    off.disabled = true;
    let off = Running::start(&store, off);
    throughout(Duration::from_secs(1), "no leader", || {
        !old.handle.is_leader() && !off.handle.is_leader()
    })
    .await;
    let reg = Registry::new(store.clone());
    assert!(reg.lease().await.unwrap().is_none());
    // Back to version 1 (as if the newer fleetds were gone): the engine of version 1 leads,
    // the disabled one still not.
    store
        .apply(Op::Set {
            key: "/_coreos.com/fleet/engine/version".into(),
            value: "1".into(),
            dir: false,
            ttl: None,
            refresh: false,
        })
        .await
        .unwrap();
    until("the version-1 engine to lead", || old.handle.is_leader()).await;
    assert!(!off.handle.is_leader());
}

// ---- placement ----

#[tokio::test]
async fn units_are_placed_by_their_constraints() {
    let store = TestStore::new(true).await;
    let reg = Arc::new(Registry::new(store.clone()));
    let _m = [
        Presence::start(&reg, record("m1", &[("role", "db")])).await,
        Presence::start(&reg, record("m2", &[])).await,
        Presence::start(&reg, record("m3", &[])).await,
    ];
    let e = Running::start(&store, config("m1"));
    for i in 1..=3 {
        put(&reg, &format!("web@{i}.service"), WEB).await;
    }
    put(
        &reg,
        "db.service",
        "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nMachineMetadata=role=db\n",
    )
    .await;
    put(
        &reg,
        "sidecar.service",
        "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nMachineOf=db.service\n",
    )
    .await;
    put(
        &reg,
        "logs.service",
        "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nGlobal=true\n",
    )
    .await;
    put(
        &reg,
        "cache.service",
        "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nMachineMetadata=role=cache\n",
    )
    .await;

    let placed = eventually(WAIT, "every unit placed", || async {
        let t = targets(&reg).await;
        let all = ["web@1", "web@2", "web@3", "db", "sidecar"]
            .iter()
            .all(|u| t[&format!("{u}.service")].is_some());
        all.then_some(t)
    })
    .await;
    let webs: std::collections::BTreeSet<_> = (1..=3)
        .map(|i| placed[&format!("web@{i}.service")].clone().unwrap())
        .collect();
    assert_eq!(webs.len(), 3, "Conflicts spread them: {placed:?}");
    assert_eq!(
        placed["db.service"].as_deref(),
        Some("m1"),
        "MachineMetadata"
    );
    assert_eq!(
        placed["sidecar.service"].as_deref(),
        Some("m1"),
        "MachineOf"
    );
    assert_eq!(placed["logs.service"], None, "global units get no target");
    assert_eq!(placed["cache.service"], None, "no machine has role=cache");
    let why = eventually(WAIT, "a reason for cache", || {
        let r = e.handle.reason("cache.service");
        async move { r }
    })
    .await;
    assert_eq!(
        why.to_string(),
        "0 of 3 machines fit: 3 failed MachineMetadata role=cache"
    );
    assert!(e.handle.reason("db.service").is_none());

    // A fourth instance has nowhere to go, and says why.
    put(&reg, "web@4.service", WEB).await;
    let why = eventually(WAIT, "a reason for web@4", || {
        let r = e.handle.reason("web@4.service");
        async move { r }
    })
    .await;
    assert!(why.to_string().contains("Conflicts"), "{why}");
    assert_eq!(targets(&reg).await["web@4.service"], None);
}

#[tokio::test]
async fn desired_inactive_is_unscheduled_and_launched_again_scheduled() {
    let store = TestStore::new(false).await;
    let reg = Arc::new(Registry::new(store.clone()));
    let _m = Presence::start(&reg, record("m1", &[])).await;
    let e = Running::start(&store, config("m1"));
    put(&reg, "a.service", PLAIN).await;
    target_where(&reg, "a.service", "scheduled", |t| t == Some("m1")).await;
    reg.set_desired("a.service", JobState::Inactive)
        .await
        .unwrap();
    target_where(&reg, "a.service", "unscheduled", |t| t.is_none()).await;
    reg.set_desired("a.service", JobState::Loaded)
        .await
        .unwrap();
    target_where(&reg, "a.service", "scheduled again", |t| t == Some("m1")).await;
    let m = e.handle.metrics();
    assert_eq!((m.schedules, m.unschedules), (2, 1));
    assert_eq!(m.fenced_refusals, 0);
}

// ---- machines going away ----

/// Watches the registry for the expiry (or removal) of a machine's presence.
async fn presence_gone(reg: &Reg, id: &str) -> tokio::task::JoinHandle<(Instant, Action)> {
    let (_, index) = reg.machines().await.unwrap();
    let mut w = reg.watch(index + 1).await.unwrap();
    let key = reg.keys().machine_object(id);
    tokio::spawn(async move {
        while let Some(ev) = w.events.recv().await {
            let ev = ev.unwrap();
            if ev.node.key == key && matches!(ev.action, Action::Expire | Action::Delete) {
                return (Instant::now(), ev.action);
            }
        }
        panic!("watch ended");
    })
}

#[tokio::test]
async fn a_dead_machines_units_move_as_soon_as_its_presence_expires() {
    let store = TestStore::new(true).await;
    let reg = Arc::new(Registry::new(store.clone()));
    let mut machines = BTreeMap::new();
    for id in ["m1", "m2", "m3", "m4"] {
        machines.insert(id, Presence::start(&reg, record(id, &[])).await);
    }
    let e = Running::start(&store, config("m4"));
    for i in 1..=3 {
        put(&reg, &format!("web@{i}.service"), WEB).await;
    }
    let before = eventually(WAIT, "three webs placed", || async {
        let t = targets(&reg).await;
        t.values().all(Option::is_some).then_some(t)
    })
    .await;
    // Least loaded, ties by ID: m1, m2, m3; m4 stays free.
    let victim = before["web@1.service"].clone().unwrap();
    assert_eq!(victim, "m1", "{before:?}");

    let gone = presence_gone(&reg, &victim).await;
    let stopped = Instant::now();
    drop(machines.remove(victim.as_str()));
    let moved_to = target_where(&reg, "web@1.service", "web@1 moved", |t| {
        t.is_some_and(|t| t != victim)
    })
    .await;
    let moved = Instant::now();
    let (expired, action) = with_timeout("the expiry event", gone).await.unwrap();
    assert_eq!(action, Action::Expire);
    println!(
        "presence TTL 1 s: expired {:?} after the last refresh could have run, unit moved {:?} after the expiry event",
        expired - stopped,
        moved - expired
    );
    assert_eq!(moved_to.as_deref(), Some("m4"));
    assert!(
        moved - expired < Duration::from_secs(1),
        "{:?}",
        moved - expired
    );
    let after = targets(&reg).await;
    assert_eq!(
        after["web@2.service"], before["web@2.service"],
        "others stay"
    );
    assert_eq!(
        after["web@3.service"], before["web@3.service"],
        "others stay"
    );

    // A machine removed (graceful shutdown) moves its units at once too, here nowhere.
    let target2 = after["web@2.service"].clone().unwrap();
    let gone = presence_gone(&reg, &target2).await;
    drop(machines.remove(target2.as_str()));
    reg.remove_machine(&target2).await.unwrap();
    target_where(&reg, "web@2.service", "web@2 unscheduled", |t| t.is_none()).await;
    let unscheduled = Instant::now();
    let (removed, action) = with_timeout("the delete event", gone).await.unwrap();
    assert_eq!(action, Action::Delete);
    println!(
        "removed presence: unit unscheduled {:?} after the delete event",
        unscheduled - removed
    );
    let why = e.handle.reason("web@2.service").expect("a reason");
    assert!(why.to_string().contains("Conflicts"), "{why}");
    assert_eq!(e.handle.metrics().fenced_refusals, 0);
}

#[tokio::test]
async fn a_dead_leaders_units_move_within_the_ttl() {
    let store = TestStore::new(true).await;
    let reg = Arc::new(Registry::new(store.clone()));
    let mut machines = BTreeMap::new();
    for id in ["m1", "m2", "m3"] {
        machines.insert(id, Presence::start(&reg, record(id, &[])).await);
    }
    // Lease and presence both last 1 s.
    let first = Running::start(&store, config("m1"));
    until("m1 to lead", || first.handle.is_leader()).await;
    let second = Running::start(&store, config("m2"));
    for i in 1..=2 {
        put(&reg, &format!("web@{i}.service"), WEB).await;
    }
    target_where(&reg, "web@1.service", "web@1 on m1", |t| t == Some("m1")).await;
    target_where(&reg, "web@2.service", "web@2 on m2", |t| t == Some("m2")).await;

    // m1 dies: its engine stops without releasing the lease, its presence stops.
    let died = Instant::now();
    drop(first);
    drop(machines.remove("m1"));
    until("m2 to lead", || second.handle.is_leader()).await;
    let led = died.elapsed();
    target_where(&reg, "web@1.service", "web@1 moved", |t| t == Some("m3")).await;
    let moved = died.elapsed();
    println!(
        "the leader's machine died: m2 led after {led:?}, web@1 moved after {moved:?} (lease and presence TTL 1 s, expiry sweep 0.5 s)"
    );
    assert!(moved < Duration::from_millis(2500), "{moved:?}");
}

#[tokio::test]
async fn a_new_leader_keeps_the_schedule() {
    let store = TestStore::new(true).await;
    let reg = Arc::new(Registry::new(store.clone()));
    static_machines(&reg, &["m1", "m2", "m3", "m4"]).await;
    for i in 1..=3 {
        put(&reg, &format!("web@{i}.service"), WEB).await;
    }
    put(&reg, "a.service", PLAIN).await;
    let first = Running::start(&store, config("m1"));
    let second = Running::start(&store, config("m2"));
    until("a leader", || first.handle.is_leader()).await;
    let before = eventually(WAIT, "all placed", || async {
        let t = targets(&reg).await;
        t.values().all(Option::is_some).then_some(t)
    })
    .await;
    first.shutdown().await;
    until("the second engine to lead and reconcile twice", || {
        second.handle.metrics().reconcile_passes >= 2
    })
    .await;
    let m = second.handle.metrics();
    assert_eq!((m.schedules, m.unschedules), (0, 0), "{m:?}");
    assert_eq!(targets(&reg).await, before);
}

// ---- the store failing ----

#[tokio::test]
async fn a_store_read_error_unschedules_nothing() {
    let store = TestStore::new(true).await;
    let reg = Arc::new(Registry::new(store.clone()));
    static_machines(&reg, &["m1", "m2", "m3"]).await;
    for i in 1..=2 {
        put(&reg, &format!("web@{i}.service"), WEB).await;
    }
    let e = Running::start(&store, config("m3"));
    let before = eventually(WAIT, "both placed", || async {
        let t = targets(&reg).await;
        t.values().all(Option::is_some).then_some(t)
    })
    .await;
    assert_eq!(before["web@1.service"].as_deref(), Some("m1"));

    // Reads fail; meanwhile m1's presence goes (as it may expire during an outage).
    store.fail_reads(true);
    let failures = e.handle.metrics().reconcile_failures;
    until("failed passes", || {
        e.handle.metrics().reconcile_failures >= failures + 3
    })
    .await;
    let direct = Registry::new(store.http.clone());
    direct.remove_machine("m1").await.unwrap();
    let failures = e.handle.metrics().reconcile_failures;
    until("more failed passes", || {
        e.handle.metrics().reconcile_failures >= failures + 3
    })
    .await;
    let m = e.handle.metrics();
    assert!(m.is_leader, "writes still work, so the lease is renewed");
    assert_eq!(m.unschedules, 0);

    // The store answers again: m1 was not seen since, so web@1 is held, not moved...
    store.fail_reads(false);
    let report = eventually(WAIT, "a pass holding web@1", || {
        let r = e
            .handle
            .last_pass()
            .filter(|r| r.plan.held.contains_key("web@1.service"));
        async move { r }
    })
    .await;
    assert_eq!(report.plan.held["web@1.service"], "m1");
    assert!(report.plan.tasks.is_empty(), "{:?}", report.plan.tasks);
    // ... and m1 coming back within the grace period keeps it where it is.
    static_machines(&reg, &["m1"]).await;
    let passes = e.handle.metrics().reconcile_passes;
    until("two more passes", || {
        e.handle.metrics().reconcile_passes >= passes + 2
    })
    .await;
    assert_eq!(targets(&reg).await, before);
    assert_eq!(e.handle.metrics().unschedules, 0);

    // Seen since the store came back, m1 leaving now is a machine dying: web@1 moves.
    let t = Instant::now();
    reg.remove_machine("m1").await.unwrap();
    target_where(&reg, "web@1.service", "web@1 moved", |t| t == Some("m3")).await;
    println!(
        "a machine seen after the outage: its unit moved {:?} after it left",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[tokio::test]
async fn an_outage_keeps_the_leader_and_holds_missing_machines_for_the_grace_period() {
    let store = TestStore::new(true).await;
    let reg = Arc::new(Registry::new(store.clone()));
    static_machines(&reg, &["m1", "m2", "m3"]).await;
    for i in 1..=2 {
        put(&reg, &format!("web@{i}.service"), WEB).await;
    }
    let e = Running::start(&store, config("m3"));
    let before = eventually(WAIT, "both placed", || async {
        let t = targets(&reg).await;
        t.values().all(Option::is_some).then_some(t)
    })
    .await;
    let lease = reg.lease().await.unwrap().unwrap();

    // The whole store is unreachable for a while; m1's presence expires meanwhile.
    store.fail_reads(true);
    store.fail_writes(true);
    until("the engine to stop leading", || !e.handle.is_leader()).await;
    let direct = Registry::new(store.http.clone());
    direct.remove_machine("m1").await.unwrap();
    store.fail_writes(false);
    store.fail_reads(false);
    let back = Instant::now();

    // The engine re-adopts its own lease (same acquisition) rather than waiting it out.
    until("the engine to lead again", || e.handle.is_leader()).await;
    let again = reg.lease().await.unwrap().unwrap();
    assert_eq!(again.created_index, lease.created_index);
    let m = e.handle.metrics();
    assert_eq!((m.leader_acquired, m.leader_lost), (2, 1));

    // m1 stays missing: web@1 keeps its target for the grace period (2 s), then moves.
    let moved_to = target_where(&reg, "web@1.service", "web@1 moved", |t| {
        t.is_some_and(|t| t != "m1")
    })
    .await;
    let waited = back.elapsed();
    println!(
        "missing after the outage: unit moved {waited:?} after the store came back (grace 2 s)"
    );
    assert_eq!(moved_to.as_deref(), Some("m3"));
    assert!(waited >= Duration::from_millis(1800), "{waited:?}");
    assert_eq!(
        targets(&reg).await["web@2.service"],
        before["web@2.service"]
    );
    assert_eq!(e.handle.metrics().unschedules, 1);
}
