//! [`KvdStore`] against real kvd servers in this process (kv-server's memory backend,
//! serving `kv.v1` on 127.0.0.1:0): every kind of operation, recursive reads, watches,
//! failing over between members, and the registry's fenced schedules with transactions.

use std::time::Duration;

use fleet::registry::{JobState, LeaseRecord, MachineRecord, Registry, UnitContents};
use fleet::store::kvd::KvdStore;
use fleet::store::{KvStore, StoreError, Watch};
use kv_core::{Action, Compare, CompareTarget, Event, Op, Txn};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::util::eventually;

const HELLO: &str = "[Unit]\nDescription=Hello\n\n[Service]\nExecStart=/bin/sleep 100\n";

/// One kvd member (memory backend) serving on an ephemeral port until stopped or dropped
/// with the runtime.
struct Kvd {
    url: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<kv_server::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Kvd {
    async fn start() -> Kvd {
        Kvd::start_with("http", false).await
    }

    /// A member on `scheme` (`https` with `auto_tls`: a self-signed certificate).
    async fn start_with(scheme: &str, auto_tls: bool) -> Kvd {
        let dir = tempfile::tempdir().unwrap();
        let client = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("{scheme}://{}", client.local_addr().unwrap());
        let config = kv_server::Config {
            backend: "memory".into(),
            data_dir: Some(dir.path().join("kvd")),
            listen_client_urls: url.clone(),
            advertise_client_urls: url.clone(),
            auto_tls,
            ..kv_server::Config::default()
        };
        let (stop, mut stopped) = watch::channel(false);
        let listeners = kv_server::Listeners {
            client: vec![client],
            peer: None,
        };
        let task = tokio::spawn(kv_server::run_with(config, listeners, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        Kvd {
            url,
            stop,
            task,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("kvd stops")
            .unwrap()
            .unwrap();
    }
}

/// A URL nothing listens on.
async fn dead_url() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

/// A TCP proxy to `target` on an ephemeral port; aborting its task drops every connection
/// through it and the port.
async fn proxy(target: &str) -> (String, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let target = target.trim_start_matches("http://").to_owned();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            conns.spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (url, task)
}

fn set(key: &str, value: &str) -> Op {
    Op::Set {
        key: key.into(),
        value: value.into(),
        dir: false,
        ttl: None,
        refresh: false,
    }
}

fn code(r: Result<Event, StoreError>) -> u32 {
    r.unwrap_err().code().expect("an etcd refusal")
}

/// The next event of a watch, waiting at most five seconds.
async fn next(w: &mut Watch) -> Option<Result<Event, StoreError>> {
    tokio::time::timeout(Duration::from_secs(5), w.events.recv())
        .await
        .expect("a watch event in time")
}

#[tokio::test]
async fn every_kind_of_operation() {
    let kvd = Kvd::start().await;
    let s = KvdStore::new(std::slice::from_ref(&kvd.url)).unwrap();
    assert!(s.supports_txn());

    // Set, create (plain and in-order), update.
    let e = s.apply(set("/a", "1")).await.unwrap();
    assert_eq!(
        (e.action, e.node.value.as_deref()),
        (Action::Set, Some("1"))
    );
    assert_eq!(e.index, e.node.modified_index);
    let create = |key: &str, ttl, unique| Op::Create {
        key: key.into(),
        value: "c".into(),
        dir: false,
        ttl,
        unique,
    };
    assert_eq!(code(s.apply(create("/a", None, false)).await), 105);
    let e = s.apply(create("/b", Some(30), false)).await.unwrap();
    assert_eq!((e.action, e.node.ttl), (Action::Create, Some(30)));
    let e = s.apply(create("/q", None, true)).await.unwrap();
    assert_eq!(e.node.key, format!("/q/{:020}", e.index));
    let update = |key: &str, value: &str| Op::Update {
        key: key.into(),
        value: value.into(),
        ttl: None,
        refresh: false,
    };
    assert_eq!(code(s.apply(update("/missing", "x")).await), 100);
    let e = s.apply(update("/a", "2")).await.unwrap();
    assert_eq!(e.action, Action::Update);
    assert_eq!(e.prev_node.unwrap().value.as_deref(), Some("1"));
    // A refresh keeps the value and resets the TTL.
    let e = s
        .apply(Op::Set {
            key: "/b".into(),
            value: String::new(),
            dir: false,
            ttl: Some(60),
            refresh: true,
        })
        .await
        .unwrap();
    assert_eq!((e.node.value.as_deref(), e.node.ttl), (Some("c"), Some(60)));

    // Compare-and-swap on the value, then on the index.
    let cas = |prev_value: Option<&str>, prev_index, value: &str| Op::CompareAndSwap {
        key: "/a".into(),
        value: value.into(),
        prev_value: prev_value.map(Into::into),
        prev_index,
        ttl: None,
        refresh: false,
    };
    assert_eq!(code(s.apply(cas(Some("nope"), None, "3")).await), 101);
    let e = s.apply(cas(Some("2"), None, "3")).await.unwrap();
    assert_eq!(
        (e.action, e.node.value.as_deref()),
        (Action::CompareAndSwap, Some("3"))
    );
    assert_eq!(code(s.apply(cas(None, Some(e.index - 1), "4")).await), 101);
    let e = s.apply(cas(None, Some(e.index), "4")).await.unwrap();

    // Compare-and-delete, delete of a directory.
    let cad = |prev_index| Op::CompareAndDelete {
        key: "/a".into(),
        prev_value: None,
        prev_index: Some(prev_index),
    };
    assert_eq!(code(s.apply(cad(e.index + 100)).await), 101);
    let e = s.apply(cad(e.index)).await.unwrap();
    assert_eq!(e.action, Action::CompareAndDelete);
    s.apply(set("/d/x", "1")).await.unwrap();
    let delete = |key: &str, dir, recursive| Op::Delete {
        key: key.into(),
        dir,
        recursive,
    };
    assert_eq!(code(s.apply(delete("/d", true, false)).await), 108);
    let e = s.apply(delete("/d", true, true)).await.unwrap();
    assert_eq!((e.action, e.node.key.as_str()), (Action::Delete, "/d"));
    assert_eq!(code(s.get("/d/x", false, true).await), 100);

    // What kv.v1 cannot carry is refused before anything is sent.
    let e = s.apply(Op::Expire).await.unwrap_err();
    assert!(matches!(e, StoreError::Unsupported { .. }), "{e}");
    let zero_ttl = Op::Set {
        key: "/z".into(),
        value: "v".into(),
        dir: false,
        ttl: Some(0),
        refresh: false,
    };
    let e = s.apply(zero_ttl).await.unwrap_err();
    assert!(matches!(e, StoreError::Unsupported { .. }), "{e}");

    // A transaction whose comparison holds runs `success` at one index...
    let txn = Txn {
        compare: vec![Compare {
            key: "/t".into(),
            target: CompareTarget::Exists(false),
        }],
        success: vec![set("/t/1", "a"), set("/t/2", "b")],
        failure: vec![set("/failed", "yes")],
    };
    let e = s.apply(Op::Txn(txn.clone())).await.unwrap();
    assert_eq!(e.action, Action::Txn);
    let batch = e.batch.unwrap();
    assert!(batch.succeeded);
    let keys: Vec<_> = batch.events.iter().map(|e| e.node.key.as_str()).collect();
    assert_eq!(keys, ["/t/1", "/t/2"]);
    assert!(batch.events.iter().all(|ev| ev.index == e.index));
    // ... and, once it fails, `failure`.
    let e = s.apply(Op::Txn(txn)).await.unwrap();
    let batch = e.batch.unwrap();
    assert!(!batch.succeeded);
    assert_eq!(batch.events.len(), 1);
    assert_eq!(
        s.get("/failed", false, true)
            .await
            .unwrap()
            .node
            .value
            .as_deref(),
        Some("yes")
    );
    // An operation that fails undoes the branch: its error, and nothing changed.
    let failing = Txn {
        success: vec![set("/t/3", "c"), create("/t/1", None, false)],
        ..Txn::default()
    };
    assert_eq!(code(s.apply(Op::Txn(failing)).await), 105);
    assert_eq!(code(s.get("/t/3", false, true).await), 100);
    kvd.stop().await;
}

#[tokio::test]
async fn recursive_reads_are_sorted() {
    let kvd = Kvd::start().await;
    let s = KvdStore::new(&[format!("kvd://{}", &kvd.url["http://".len()..])]).unwrap();
    let mut last = 0;
    for key in ["/r/b", "/r/c/y", "/r/a", "/r/c/x"] {
        last = s.apply(set(key, key)).await.unwrap().index;
    }
    let e = s.get("/r", true, true).await.unwrap();
    assert_eq!(e.action, Action::Get);
    assert!(e.index >= last, "the read's index {} < {last}", e.index);
    let keys: Vec<_> = e.node.nodes.iter().map(|n| n.key.as_str()).collect();
    assert_eq!(keys, ["/r/a", "/r/b", "/r/c"]);
    let below: Vec<_> = e.node.nodes[2]
        .nodes
        .iter()
        .map(|n| (n.key.as_str(), n.value.as_deref()))
        .collect();
    assert_eq!(
        below,
        [("/r/c/x", Some("/r/c/x")), ("/r/c/y", Some("/r/c/y"))]
    );
    // Without `recursive`, the children only; without `quorum`, the member's own state.
    let e = s.get("/r", false, false).await.unwrap();
    assert_eq!(e.node.nodes.len(), 3);
    assert!(e.node.nodes[2].dir && e.node.nodes[2].nodes.is_empty());
    assert_eq!(code(s.get("/nothing", true, true).await), 100);
    kvd.stop().await;
}

#[tokio::test]
async fn a_watch_from_an_index_sees_later_events_in_order_and_a_transactions() {
    let kvd = Kvd::start().await;
    let s = KvdStore::new(std::slice::from_ref(&kvd.url)).unwrap();
    let first = s.apply(set("/w/0", "0")).await.unwrap().index;
    s.apply(set("/other", "x")).await.unwrap();
    // From an index in the past: the history first.
    let mut w = s.watch("/w", first).await.unwrap();
    let e = next(&mut w).await.unwrap().unwrap();
    assert_eq!((e.node.key.as_str(), e.index), ("/w/0", first));

    s.apply(set("/w/a", "1")).await.unwrap();
    let t = s
        .apply(Op::Txn(Txn {
            success: vec![
                set("/w/b", "2"),
                Op::Delete {
                    key: "/w/0".into(),
                    dir: false,
                    recursive: false,
                },
                set("/elsewhere", "3"),
            ],
            ..Txn::default()
        }))
        .await
        .unwrap();
    s.apply(set("/other", "y")).await.unwrap();
    s.apply(set("/w/c", "4")).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = next(&mut w).await.unwrap().unwrap();
        seen.push((e.action, e.node.key, e.index));
    }
    assert_eq!(
        seen.iter()
            .map(|(a, k, _)| (*a, k.as_str()))
            .collect::<Vec<_>>(),
        [
            (Action::Set, "/w/a"),
            (Action::Set, "/w/b"),
            (Action::Delete, "/w/0"),
            (Action::Set, "/w/c"),
        ]
    );
    assert_eq!((seen[1].2, seen[2].2), (t.index, t.index));
    assert!(seen.windows(2).all(|p| p[0].2 <= p[1].2), "{seen:?}");
    kvd.stop().await;
}

#[tokio::test]
async fn a_dead_member_falls_over_to_a_live_one() {
    let (a, b) = (Kvd::start().await, Kvd::start().await);
    let dead = dead_url().await;

    // Nothing answers: unavailable, naming a member.
    let none = KvdStore::new(std::slice::from_ref(&dead)).unwrap();
    let e = none.get("/", false, true).await.unwrap_err();
    assert!(e.is_transient() && e.to_string().contains(&dead), "{e}");

    // The first member is dead: the second answers.
    let s = KvdStore::new(&[dead.clone(), a.url.clone(), b.url.clone()]).unwrap();
    let written = s.apply(set("/x", "1")).await.unwrap();
    let direct = kv_client::KvClient::connect(&a.url).await.unwrap();
    assert_eq!(direct.get("/x").await.unwrap().index, written.index);

    // The member a watch runs on stops: the watch ends with the error, and calls move on
    // to the next member.
    let mut w = s.watch("/", written.index + 1).await.unwrap();
    a.stop().await;
    let err = next(&mut w).await.unwrap().unwrap_err();
    assert!(err.is_transient() || err.code() == Some(400), "{err}");
    assert!(next(&mut w).await.is_none(), "the watch ended");
    s.apply(set("/y", "2")).await.unwrap();
    let direct = kv_client::KvClient::connect(&b.url).await.unwrap();
    assert_eq!(
        direct.get("/y").await.unwrap().node.value.as_deref(),
        Some("2")
    );
    assert_eq!(code(s.get("/x", false, true).await), 100, "b never had /x");
    b.stop().await;
}

#[tokio::test]
async fn https_members_are_dialled_with_the_given_tls() {
    use kv_client::tls::{ServerVerification, client_config};
    let kvd = Kvd::start_with("https", true).await;
    // kvd's self-signed certificate: encrypted, not verified.
    let tls = client_config(&ServerVerification::None, None, &[b"h2"]).unwrap();
    let s = KvdStore::with_tls(
        std::slice::from_ref(&kvd.url),
        Some(std::sync::Arc::new(tls)),
        Duration::from_secs(3),
    )
    .unwrap();
    s.apply(set("/tls", "yes")).await.unwrap();
    let e = s.get("/tls", false, true).await.unwrap();
    assert_eq!(e.node.value.as_deref(), Some("yes"));
    // Verified against the system's CAs, the self-signed certificate is refused.
    let untrusted = KvdStore::new(std::slice::from_ref(&kvd.url)).unwrap();
    let e = untrusted.get("/tls", false, true).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    kvd.stop().await;
}

#[tokio::test]
async fn a_silent_member_is_left_after_the_timeout() {
    let live = Kvd::start().await;
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let timeout = Duration::from_millis(300);
    let s = KvdStore::with_tls(&[silent.clone(), live.url.clone()], None, timeout).unwrap();
    let started = std::time::Instant::now();
    s.apply(set("/x", "1")).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Alone, it is unavailable, in about the timeout.
    let alone = KvdStore::with_tls(std::slice::from_ref(&silent), None, timeout).unwrap();
    let e = alone.get("/x", false, true).await.unwrap_err();
    assert!(e.is_transient() && e.to_string().contains(&silent), "{e}");
    live.stop().await;
}

#[tokio::test]
async fn a_dropped_connection_ends_the_watch_and_calls_move_on() {
    let (a, b) = (Kvd::start().await, Kvd::start().await);
    let (through, cut) = proxy(&a.url).await;
    let s = KvdStore::new(&[through.clone(), b.url.clone()]).unwrap();
    let written = s.apply(set("/x", "1")).await.unwrap();
    let mut w = s.watch("/", written.index + 1).await.unwrap();
    cut.abort();
    let err = next(&mut w).await.unwrap().unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable { endpoint, .. } if *endpoint == through),
        "{err:?}"
    );
    assert!(next(&mut w).await.is_none(), "the watch ended");
    s.apply(set("/y", "2")).await.unwrap();
    let direct = kv_client::KvClient::connect(&b.url).await.unwrap();
    assert_eq!(
        direct.get("/y").await.unwrap().node.value.as_deref(),
        Some("2")
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn registry_schedules_are_fenced_in_one_transaction() {
    let kvd = Kvd::start().await;
    let store = KvdStore::new(std::slice::from_ref(&kvd.url)).unwrap();
    let reg = Registry::new(store.clone());
    reg.put_unit(
        "a.service",
        UnitContents::from_text(HELLO).unwrap(),
        JobState::Launched,
    )
    .await
    .unwrap();
    // The object and its desired state were written at one index.
    let object = store
        .get("/_coreos.com/fleet/job/a.service/object", false, true)
        .await
        .unwrap();
    let desired = store
        .get("/_coreos.com/fleet/job/a.service/target-state", false, true)
        .await
        .unwrap();
    assert_eq!(object.node.modified_index, desired.node.modified_index);

    let me = LeaseRecord {
        machine_id: "m1".into(),
        version: 1,
    };
    let lease = reg.acquire_lease(&me, 10).await.unwrap().expect("free");
    let fence = lease.fence(reg.keys());
    reg.schedule("a.service", "m1", &fence).await.unwrap();
    // Already scheduled: the unit's own comparison fails, the lease's holds.
    let err = reg.schedule("a.service", "m2", &fence).await.unwrap_err();
    assert!(err.to_string().contains("Compare failed"), "{err}");
    assert!(reg.unschedule("a.service", "m2", &fence).await.is_err());

    // A newer engine steals the lease (same key, same creation index, its own value): the
    // stale fence no longer writes, the new one does.
    let other = LeaseRecord {
        machine_id: "m2".into(),
        version: 2,
    };
    let theirs = reg
        .steal_lease(&lease, &other, 10)
        .await
        .unwrap()
        .expect("stolen");
    assert_eq!(theirs.created_index, lease.created_index);
    let err = reg.unschedule("a.service", "m1", &fence).await.unwrap_err();
    assert!(err.to_string().contains("engine lease lost"), "{err}");
    let unit = reg.unit("a.service").await.unwrap().unwrap();
    assert_eq!(unit.target.as_deref(), Some("m1"));
    reg.unschedule("a.service", "m1", &theirs.fence(reg.keys()))
        .await
        .unwrap();
    assert_eq!(reg.unit("a.service").await.unwrap().unwrap().target, None);

    // Released and expired leases fence too.
    reg.release_lease(&theirs).await.unwrap();
    let err = reg
        .schedule("a.service", "m2", &theirs.fence(reg.keys()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("engine lease lost"), "{err}");
    kvd.stop().await;
}

#[tokio::test]
async fn registry_presence_expires_and_watches_see_it() {
    let kvd = Kvd::start().await;
    let reg = Registry::new(KvdStore::new(std::slice::from_ref(&kvd.url)).unwrap());
    let (_, index) = reg.machines().await.unwrap();
    let mut watch = reg.watch(index + 1).await.unwrap();
    let rec = MachineRecord {
        id: "m1".into(),
        public_ip: "10.0.0.1".into(),
        ..MachineRecord::default()
    };
    reg.register_machine(&rec, 1).await.unwrap();
    let (machines, _) = reg.machines().await.unwrap();
    assert_eq!(machines[0].public_ip, "10.0.0.1");
    let first = watch.events.recv().await.unwrap().unwrap();
    assert_eq!(first.node.key, "/_coreos.com/fleet/machines/m1/object");
    let expired = eventually(Duration::from_secs(10), "the presence to expire", || {
        let ev = watch.events.try_recv().ok();
        async move { ev }
    })
    .await
    .unwrap();
    assert_eq!(expired.action, Action::Expire);
    assert!(reg.machines().await.unwrap().0.is_empty());
    kvd.stop().await;
}
