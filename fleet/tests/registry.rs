//! The registry over a real etcd v2 server: fleet's values at fleet's keys, fenced
//! schedules, presence, states and the lease.

use std::time::Duration;

use fleet::registry::{
    JobState, LeaseRecord, MachineRecord, Registry, UnitContents, UnitStateRecord,
};
use fleet::store::KvStore;

use crate::util::{etcd_store, eventually};

const HELLO: &str = "[Unit]\nDescription=Hello\n\n[Service]\nExecStart=/bin/sleep 100\n";

#[tokio::test]
async fn units_are_stored_in_fleets_layout() {
    let store = etcd_store().await;
    let reg = Registry::new(store.clone());
    let c = UnitContents::from_text(HELLO).unwrap();
    let hash = c.hash();
    reg.put_unit("hello.service", c, JobState::Loaded)
        .await
        .unwrap();

    let raw = |key: String| {
        let store = store.clone();
        async move {
            store
                .get(&key, false, true)
                .await
                .unwrap()
                .node
                .value
                .unwrap()
        }
    };
    assert_eq!(
        raw("/_coreos.com/fleet/job/hello.service/target-state".into()).await,
        "loaded"
    );
    let object = raw("/_coreos.com/fleet/job/hello.service/object".into()).await;
    assert!(
        object.starts_with(r#"{"Name":"hello.service","UnitHash":["#),
        "{object}"
    );
    assert_eq!(
        raw(format!("/_coreos.com/fleet/unit/{hash}")).await,
        r#"{"Raw":"[Unit]\nDescription=Hello\n\n[Service]\nExecStart=/bin/sleep 100\n"}"#
    );

    // A second unit with the same contents shares the blob; a fresh registry reads both.
    let c = UnitContents::from_text(HELLO).unwrap();
    reg.put_unit("hello2.service", c, JobState::Inactive)
        .await
        .unwrap();
    let fresh = Registry::new(store.clone());
    let (units, index) = fresh.units().await.unwrap();
    assert!(index > 0);
    let names: Vec<_> = units.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["hello.service", "hello2.service"]);
    assert!(std::sync::Arc::ptr_eq(
        &units[0].contents,
        &units[1].contents
    ));
    assert_eq!(units[0].contents.description(), Some("Hello"));
    assert_eq!(units[0].current_state(false), Some(JobState::Inactive));

    reg.set_desired("hello2.service", JobState::Launched)
        .await
        .unwrap();
    assert_eq!(
        reg.unit("hello2.service").await.unwrap().unwrap().desired,
        JobState::Launched
    );
    assert!(reg.destroy_unit("hello2.service").await.unwrap());
    assert!(!reg.destroy_unit("hello2.service").await.unwrap());
    assert!(reg.unit("hello2.service").await.unwrap().is_none());
}

#[tokio::test]
async fn a_bad_value_names_its_key() {
    let store = etcd_store().await;
    store
        .apply(kv_core::Op::Set {
            key: "/_coreos.com/fleet/job/x.service/object".into(),
            value: "not json".into(),
            dir: false,
            ttl: None,
            refresh: false,
        })
        .await
        .unwrap();
    let reg = Registry::new(store);
    reg.put_unit(
        "ok.service",
        UnitContents::from_text(HELLO).unwrap(),
        JobState::Inactive,
    )
    .await
    .unwrap();
    // The listing goes on without the bad unit; reading it names the key.
    let (units, _) = reg.units().await.unwrap();
    let names: Vec<_> = units.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["ok.service"]);
    let err = reg.unit("x.service").await.unwrap_err().to_string();
    assert!(
        err.contains("/_coreos.com/fleet/job/x.service/object") && err.contains("not a job object"),
        "{err}"
    );
}

#[tokio::test]
async fn schedules_are_fenced_by_the_lease() {
    let store = etcd_store().await;
    let reg = Registry::new(store.clone());
    reg.put_unit(
        "a.service",
        UnitContents::from_text(HELLO).unwrap(),
        JobState::Launched,
    )
    .await
    .unwrap();
    let me = LeaseRecord {
        machine_id: "m1".into(),
        version: 1,
    };
    let lease = reg
        .acquire_lease(&me, 10)
        .await
        .unwrap()
        .expect("free lease");
    assert!(reg.acquire_lease(&me, 10).await.unwrap().is_none(), "held");
    let fence = lease.fence(reg.keys());
    reg.schedule("a.service", "m1", &fence).await.unwrap();
    // Already scheduled: refused, schedule unchanged.
    assert!(reg.schedule("a.service", "m2", &fence).await.is_err());
    assert_eq!(
        reg.unit("a.service")
            .await
            .unwrap()
            .unwrap()
            .target
            .as_deref(),
        Some("m1")
    );
    // Unscheduling from the wrong machine is refused.
    assert!(reg.unschedule("a.service", "m2", &fence).await.is_err());

    // The lease is released and taken by another engine: the old fence no longer writes.
    let renewed = reg
        .renew_lease(&lease, 10)
        .await
        .unwrap()
        .expect("still held");
    reg.release_lease(&renewed).await.unwrap();
    let other = LeaseRecord {
        machine_id: "m2".into(),
        version: 1,
    };
    let theirs = reg.acquire_lease(&other, 10).await.unwrap().unwrap();
    let err = reg.unschedule("a.service", "m1", &fence).await.unwrap_err();
    assert!(err.to_string().contains("engine lease lost"), "{err}");
    assert_eq!(
        reg.unit("a.service")
            .await
            .unwrap()
            .unwrap()
            .target
            .as_deref(),
        Some("m1")
    );
    reg.unschedule("a.service", "m1", &theirs.fence(reg.keys()))
        .await
        .unwrap();
    assert_eq!(reg.unit("a.service").await.unwrap().unwrap().target, None);
    // A renewal of a lost lease says so.
    assert!(reg.renew_lease(&renewed, 10).await.unwrap().is_none());
}

#[tokio::test]
async fn presence_metadata_and_states() {
    let store = etcd_store().await;
    let reg = Registry::new(store.clone());
    let mut rec = MachineRecord {
        id: "m1".into(),
        public_ip: "10.0.0.1".into(),
        metadata: Some(
            [
                ("zone".to_string(), "a".to_string()),
                ("disk".to_string(), "ssd".to_string()),
            ]
            .into(),
        ),
        ..MachineRecord::default()
    };
    reg.register_machine(&rec, 10).await.unwrap();
    let dup = reg.register_machine(&rec, 10).await.unwrap_err();
    assert!(dup.to_string().contains("Key already exists"), "{dup}");
    reg.set_metadata("m1", "zone", "b").await.unwrap();
    reg.set_metadata("m1", "disk", "").await.unwrap();
    reg.set_metadata("absent", "zone", "c").await.unwrap();
    let (machines, _) = reg.machines().await.unwrap();
    assert_eq!(
        machines.len(),
        1,
        "a machine without presence is not listed"
    );
    assert_eq!(machines[0].public_ip, "10.0.0.1");
    assert_eq!(
        machines[0].metadata,
        [("zone".to_string(), "b".to_string())].into()
    );
    rec.public_ip = "10.0.0.9".into();
    reg.refresh_machine(&rec, 10).await.unwrap();
    assert_eq!(reg.machines().await.unwrap().0[0].public_ip, "10.0.0.9");

    let state = UnitStateRecord {
        load_state: "loaded".into(),
        active_state: "active".into(),
        sub_state: "running".into(),
        machine_state: Some(MachineRecord {
            id: "m1".into(),
            ..MachineRecord::default()
        }),
        unit_hash: "1c6fb6f3684bafb0c173d8b8b957ceff031180c1".into(),
    };
    reg.save_state("a.service", "m1", &state, 10).await.unwrap();
    reg.save_state("a.service", "m2", &state, 10).await.unwrap();
    let (states, _) = reg.states().await.unwrap();
    let who: Vec<_> = states
        .iter()
        .map(|s| (s.unit.as_str(), s.machine_id.as_str()))
        .collect();
    assert_eq!(who, [("a.service", "m1"), ("a.service", "m2")]);
    reg.remove_state("a.service", "m1").await.unwrap();
    let (states, _) = reg.states().await.unwrap();
    assert_eq!(states.len(), 1, "only m1's record goes");

    reg.heartbeat("a.service", "m1", 10).await.unwrap();
    reg.clear_heartbeat("a.service", "m2").await.unwrap();
    reg.remove_machine("m1").await.unwrap();
    reg.remove_machine("m1").await.unwrap();
    assert!(reg.machines().await.unwrap().0.is_empty());
}

#[tokio::test]
async fn presence_expires_and_watches_see_it() {
    let store = etcd_store().await;
    let reg = Registry::new(store.clone());
    let (_, index) = reg.machines().await.unwrap();
    let mut watch = reg.watch(index + 1).await.unwrap();
    let rec = MachineRecord {
        id: "m1".into(),
        ..MachineRecord::default()
    };
    reg.register_machine(&rec, 1).await.unwrap();
    let first = watch.events.recv().await.unwrap().unwrap();
    assert_eq!(first.node.key, "/_coreos.com/fleet/machines/m1/object");
    let expired = eventually(Duration::from_secs(10), "the presence to expire", || {
        let ev = watch.events.try_recv().ok();
        async move { ev }
    })
    .await
    .unwrap();
    assert_eq!(expired.action, kv_core::Action::Expire);
    assert!(reg.machines().await.unwrap().0.is_empty());
}

#[tokio::test]
async fn capacity_is_published_beside_the_presence() {
    let store = etcd_store().await;
    let reg = Registry::new(store.clone());
    let rec = MachineRecord {
        id: "m1".into(),
        ..MachineRecord::default()
    };
    reg.register_machine(&rec, 10).await.unwrap();
    assert_eq!(
        reg.machines().await.unwrap().0[0].capacity,
        Default::default()
    );
    let cap = fleet::registry::CapacityRecord {
        memory_bytes: Some(1 << 30),
        cpu_percent: Some(200),
        max_units: Some(10),
    };
    reg.set_capacity("m1", &cap).await.unwrap();
    let (machines, _) = reg.machines().await.unwrap();
    assert_eq!(machines[0].capacity, cap.capacity());
    // Garbage there counts as no capacity, not as a broken machine.
    use fleet::store::KvStore;
    store
        .apply(kv_core::Op::Set {
            key: "/_coreos.com/fleet/machines/m1/capacity".into(),
            value: "{".into(),
            dir: false,
            ttl: None,
            refresh: false,
        })
        .await
        .unwrap();
    let (machines, _) = reg.machines().await.unwrap();
    assert_eq!(machines.len(), 1);
    assert_eq!(machines[0].capacity, Default::default());
}
