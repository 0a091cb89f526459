//! fleetctl's commands over the registry driver (`--driver=etcd`): lazy creation, the
//! state changes and their messages, the tables.

use std::time::Duration;

use fleet::ctl::{self, Io};
use fleet::registry::{
    JobState, LeaseRecord, MachineRecord, Registry, UnitContents, UnitStateRecord,
};
use fleet::store::etcd::EtcdStore;

use crate::util::etcd_store;

/// Runs fleetctl with `args` against `store`; returns (stdout, stderr, exit code).
async fn fleetctl(store: &EtcdStore, args: &[&str]) -> (String, String, i32) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut argv = vec!["fleetctl".to_string(), "--driver=etcd".into()];
    argv.push(format!("--endpoint={}", store_url(store)));
    argv.extend(args.iter().map(|s| s.to_string()));
    let code = ctl::run(
        argv,
        &mut Io {
            out: &mut out,
            err: &mut err,
        },
    )
    .await;
    (
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
        code,
    )
}

fn store_url(store: &EtcdStore) -> String {
    use fleet::store::KvStore;
    store.endpoint().to_owned()
}

const HELLO: &str = "[Unit]\nDescription=Hello\n\n[Service]\nExecStart=/bin/sleep 100\n";

#[tokio::test]
async fn submit_cat_list_destroy() {
    let store = etcd_store().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hello.service");
    std::fs::write(&file, format!("# a comment\n{HELLO}")).unwrap();
    let f = file.to_str().unwrap();

    let (out, err, code) = fleetctl(&store, &["submit", f]).await;
    assert_eq!(
        (out.as_str(), err.as_str(), code),
        ("Unit hello.service inactive\n", "", 0)
    );
    // Submitting the same file again is a no-op.
    let (out, _, code) = fleetctl(&store, &["submit", f]).await;
    assert_eq!((out.as_str(), code), ("", 0));

    let (out, _, code) = fleetctl(&store, &["cat", "hello"]).await;
    assert_eq!((out.as_str(), code), (HELLO, 0));

    let (out, _, code) = fleetctl(&store, &["list-unit-files"]).await;
    assert_eq!(code, 0);
    let hash = UnitContents::from_text(HELLO).unwrap().hash().short();
    assert_eq!(
        out,
        format!(
            "UNIT\t\tHASH\tDSTATE\t\tSTATE\t\tTARGET\nhello.service\t{hash}\tinactive\tinactive\t-\n"
        )
    );
    let (out, _, _) = fleetctl(
        &store,
        &[
            "list-unit-files",
            "--no-legend",
            "--fields=unit,desc,global",
        ],
    )
    .await;
    assert_eq!(out, "hello.service\tHello\tfalse\n");
    let (_, err, code) = fleetctl(&store, &["list-unit-files", "--fields=unit,bogus"]).await;
    assert_eq!(
        (err.as_str(), code),
        ("Invalid key in output format: \"bogus\"\n", 1)
    );

    // A changed local file is not used without --replace.
    std::fs::write(&file, HELLO.replace("100", "200")).unwrap();
    let (_, err, code) = fleetctl(&store, &["submit", f]).await;
    assert!(
        err.starts_with("WARNING: Unit hello.service in registry differs from local unit file"),
        "{err}"
    );
    assert_eq!(code, 0);
    let (out, _, _) = fleetctl(&store, &["submit", "--replace", f]).await;
    assert_eq!(out, "Unit hello.service inactive\n");
    let (out, _, _) = fleetctl(&store, &["cat", "hello.service"]).await;
    assert!(out.contains("sleep 200"), "{out}");

    let (out, _, code) = fleetctl(&store, &["destroy", "hello.service"]).await;
    assert_eq!((out.as_str(), code), ("Destroyed hello.service\n", 0));
    let (_, err, code) = fleetctl(&store, &["destroy", "hello.service"]).await;
    assert_eq!((err.as_str(), code), ("Units not found in registry\n", 0));
    let (_, err, code) = fleetctl(&store, &["cat", "hello.service"]).await;
    assert_eq!((err.as_str(), code), ("Unit hello.service not found\n", 1));
}

#[tokio::test]
async fn lazy_creation_errors_and_templates() {
    let store = etcd_store().await;
    let (_, err, code) = fleetctl(&store, &["submit", "nowhere.service"]).await;
    assert_eq!(
        (err.as_str(), code),
        (
            "Error creating units: unable to find Unit(nowhere.service) in Registry or on filesystem\n",
            1
        )
    );
    let (_, err, code) = fleetctl(&store, &["submit", "web@1.service"]).await;
    assert_eq!(
        (err.as_str(), code),
        (
            "Error creating units: failed getting Unit(web@1.service) from template: unable to find template Unit(web@.service) in Registry or on filesystem\n",
            1
        )
    );
    let (_, err, code) = fleetctl(&store, &["submit"]).await;
    assert_eq!((err.as_str(), code), ("No units given\n", 0));

    // Instances from a local template, then from the registered one.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("web@.service"),
        "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nConflicts=web@*.service\n",
    )
    .unwrap();
    let inst = dir.path().join("web@1.service");
    let (out, err, code) = fleetctl(&store, &["submit", inst.to_str().unwrap()]).await;
    assert_eq!(
        (out.as_str(), err.as_str(), code),
        ("Unit web@1.service inactive\n", "", 0)
    );
    let reg = Registry::new(store.clone());
    reg.put_unit(
        "web@.service",
        UnitContents::from_text(
            "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nConflicts=web@*.service\n",
        )
        .unwrap(),
        JobState::Inactive,
    )
    .await
    .unwrap();
    let (out, _, code) = fleetctl(&store, &["submit", "web@2", "web@3.service"]).await;
    assert_eq!(
        (out.as_str(), code),
        (
            "Unit web@2.service inactive\nUnit web@3.service inactive\n",
            0
        )
    );

    // Invalid options are refused with fleet's message, and nothing is stored.
    let bad = dir.path().join("bad.service");
    std::fs::write(&bad, "[X-Fleet]\nMachineID=abc\nGlobal=true\n").unwrap();
    let (_, err, code) = fleetctl(&store, &["submit", bad.to_str().unwrap()]).await;
    assert_eq!(
        (err.as_str(), code),
        (
            "Error creating units: MachineID cannot be used with Global\n",
            1
        )
    );
    assert!(reg.unit("bad.service").await.unwrap().is_none());
}

#[tokio::test]
async fn load_stop_unload_wait_for_states() {
    let store = etcd_store().await;
    let reg = Registry::new(store.clone());
    reg.put_unit(
        "a.service",
        UnitContents::from_text(HELLO).unwrap(),
        JobState::Inactive,
    )
    .await
    .unwrap();
    reg.register_machine(
        &MachineRecord {
            id: "0123456789abcdef".into(),
            public_ip: "10.0.0.1".into(),
            ..MachineRecord::default()
        },
        30,
    )
    .await
    .unwrap();

    // Nothing schedules it: the wait times out after one 2 s attempt.
    let (_, err, code) = fleetctl(&store, &["load", "--block-attempts=1", "a.service"]).await;
    assert_eq!(
        (err.as_str(), code),
        (
            "Error waiting for units: timed out waiting for unit a.service to report state loaded\n\
             Error waiting for unit states, exit status: timed out waiting for unit a.service to report state loaded\n",
            1
        )
    );
    assert_eq!(
        reg.unit("a.service").await.unwrap().unwrap().desired,
        JobState::Loaded
    );

    // Play engine and agent: schedule it and publish its state.
    let lease = reg
        .acquire_lease(
            &LeaseRecord {
                machine_id: "x".into(),
                version: 1,
            },
            30,
        )
        .await
        .unwrap()
        .unwrap();
    reg.schedule("a.service", "0123456789abcdef", &lease.fence(reg.keys()))
        .await
        .unwrap();
    let state = UnitStateRecord {
        load_state: "loaded".into(),
        active_state: "inactive".into(),
        sub_state: "dead".into(),
        machine_state: Some(MachineRecord {
            id: "0123456789abcdef".into(),
            ..MachineRecord::default()
        }),
        unit_hash: UnitContents::from_text(HELLO).unwrap().hash().to_string(),
    };
    reg.save_state("a.service", "0123456789abcdef", &state, 30)
        .await
        .unwrap();
    // Already desired loaded: nothing to change, nothing to wait for (as fleet).
    let (out, _, code) = fleetctl(&store, &["load", "a.service"]).await;
    assert_eq!((out.as_str(), code), ("", 0));

    let (out, _, _) = fleetctl(&store, &["list-units"]).await;
    assert_eq!(
        out,
        "UNIT\t\tMACHINE\t\t\tACTIVE\t\tSUB\na.service\t01234567.../10.0.0.1\tinactive\tdead\n"
    );
    let (out, _, _) = fleetctl(&store, &["list-machines", "-l"]).await;
    assert_eq!(
        out,
        "MACHINE\t\t\tIP\t\tMETADATA\n0123456789abcdef\t10.0.0.1\t-\n"
    );

    // stop of a loaded unit is skipped (fleet lists the units it stopped); unload does not
    // wait with --no-block.
    let (_, err, code) = fleetctl(&store, &["stop", "a.service"]).await;
    assert_eq!(
        (err.as_str(), code),
        ("Successfully stopped units [].\n", 0)
    );
    let (out, err, code) = fleetctl(&store, &["unload", "--no-block", "a.service"]).await;
    assert_eq!(
        (out.as_str(), err.as_str(), code),
        (
            "Triggered unit a.service unload\n",
            "Successfully unloaded units [a.service].\n",
            0
        )
    );
    reg.unschedule("a.service", "0123456789abcdef", &lease.fence(reg.keys()))
        .await
        .unwrap();
    let (_, err, code) = fleetctl(&store, &["stop", "a.service"]).await;
    assert_eq!(
        (err.as_str(), code),
        ("Unable to stop unit a.service in state inactive\n", 1)
    );
    let _ = Duration::ZERO;
}

#[tokio::test]
async fn usage_errors_exit_nonzero() {
    let store = etcd_store().await;
    let (_, err, code) = fleetctl(&store, &["bogus-command"]).await;
    assert_eq!(code, 2, "{err}");
    let (out, _, code) = fleetctl(&store, &["version"]).await;
    assert_eq!((out.starts_with("fleetctl version "), code), (true, 0));
}
