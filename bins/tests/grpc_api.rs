//! kvd's gRPC API (`kv.v1`) through kv-client's `KvClient`, against real kvd processes
//! (raft backend): every RPC, its errors and limits, both branches of a transaction, watches
//! from a past index and live, and members and status on a 3-member cluster; and kvbench's
//! gRPC mode against kvd and a real etcd (v3 API).

use std::future::Future;
use std::time::{Duration, Instant};

use kv_client::{ClientError, KvClient, wire};
use kv_core::Action;
use tonic::Code;

use crate::util::{self, Server};

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// A single-member kvd on free ports with extra flags.
fn kvd(extra: &[&str]) -> Server {
    util::kvd_with_flags(extra)
}

fn etcd_code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (Option<u32>, Option<Code>) {
    let e = r.expect_err("the call should fail");
    (e.etcd_code(), e.grpc_code())
}

async fn next_event(w: &mut kv_client::Watch) -> kv_core::Event {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream is open")
        .expect("an event, not an error")
}

#[test]
fn grpc_single_key_operations_and_errors() {
    let server = kvd(&[]);
    let url = server.url.clone();
    block_on(async move {
        let kv = KvClient::connect(&url).await.expect("connect");

        let set = kv.put("/a", "1").await.expect("put");
        assert_eq!(set.action, Action::Set);
        assert_eq!(set.node.value.as_deref(), Some("1"));
        assert!(set.prev_node.is_none());
        let got = kv.get("/a").await.expect("get");
        assert_eq!(
            (got.action, got.node.modified_index),
            (Action::Get, set.index)
        );

        // The HTTP API on the same port sees the same store.
        let body = reqwest::get(format!("{url}/v2/keys/a"))
            .await
            .expect("http get")
            .text()
            .await
            .expect("body");
        assert!(body.contains(r#""value":"1""#), "{body}");

        // Directories, recursive and serializable reads, in-order keys, TTLs.
        kv.put_with(wire::PutRequest {
            key: "/d".into(),
            dir: true,
            ..Default::default()
        })
        .await
        .expect("mkdir");
        let q = kv
            .put_with(wire::PutRequest {
                key: "/d".into(),
                value: "job".into(),
                in_order: true,
                ..Default::default()
            })
            .await
            .expect("in-order put");
        assert_eq!(q.action, Action::Create);
        assert!(q.node.key.starts_with("/d/0000"), "{}", q.node.key);
        let t = kv
            .put_with(wire::PutRequest {
                key: "/d/ttl".into(),
                value: "x".into(),
                ttl: 100,
                ..Default::default()
            })
            .await
            .expect("put with ttl");
        assert_eq!(t.node.ttl, Some(100));
        assert!(t.node.expiration.is_some());
        let listing = kv
            .get_with(wire::GetRequest {
                key: "/d".into(),
                recursive: true,
                sorted: true,
                consistency: wire::Consistency::Serializable as i32,
            })
            .await
            .expect("recursive get");
        assert!(listing.node.dir);
        assert_eq!(listing.node.nodes.len(), 2);

        // Compare-and-swap, both ways.
        let cas = kv.compare_and_swap("/a", "1", "2").await.expect("cas");
        assert_eq!(cas.action, Action::CompareAndSwap);
        assert_eq!(cas.prev_node.and_then(|p| p.value).as_deref(), Some("1"));
        let (code, grpc) = etcd_code(kv.compare_and_swap("/a", "1", "3").await);
        assert_eq!((code, grpc), (Some(101), Some(Code::FailedPrecondition)));
        let by_index = kv
            .compare_and_swap_with(wire::CompareAndSwapRequest {
                key: "/a".into(),
                value: "4".into(),
                prev_index: Some(cas.node.modified_index),
                ..Default::default()
            })
            .await
            .expect("cas on index");
        assert_eq!(by_index.node.value.as_deref(), Some("4"));

        // Errors with their etcd codes and gRPC codes.
        assert_eq!(
            etcd_code(kv.get("/missing").await),
            (Some(100), Some(Code::NotFound))
        );
        let err = kv.get("/missing").await.unwrap_err();
        match err {
            ClientError::Etcd { error, .. } => {
                assert_eq!(error.cause(), "/missing");
                assert!(error.index() >= by_index.index);
            }
            other => panic!("expected an etcd error, got {other:?}"),
        }
        let create = wire::PutRequest {
            key: "/a".into(),
            value: "x".into(),
            prev_exist: Some(false),
            ..Default::default()
        };
        assert_eq!(
            etcd_code(kv.put_with(create).await),
            (Some(105), Some(Code::FailedPrecondition))
        );
        assert_eq!(
            etcd_code(kv.put("/d", "file over a dir").await),
            (Some(102), Some(Code::FailedPrecondition))
        );
        assert_eq!(
            etcd_code(
                kv.compare_and_swap_with(wire::CompareAndSwapRequest {
                    key: "/a".into(),
                    value: "x".into(),
                    ..Default::default()
                })
                .await
            ),
            (Some(207), Some(Code::InvalidArgument))
        );
        assert_eq!(
            etcd_code(
                kv.put_with(wire::PutRequest {
                    key: "/a".into(),
                    value: "x".into(),
                    refresh: true,
                    ttl: 5,
                    ..Default::default()
                })
                .await
            ),
            (Some(211), Some(Code::InvalidArgument))
        );

        // Deletes: a directory needs `dir`/`recursive`; compare-and-delete checks.
        assert_eq!(etcd_code(kv.delete("/d").await).0, Some(102));
        let (code, _) = etcd_code(
            kv.delete_with(wire::DeleteRequest {
                key: "/a".into(),
                prev_value: Some("nope".into()),
                ..Default::default()
            })
            .await,
        );
        assert_eq!(code, Some(101));
        let cad = kv
            .delete_with(wire::DeleteRequest {
                key: "/a".into(),
                prev_value: Some("4".into()),
                ..Default::default()
            })
            .await
            .expect("compare-and-delete");
        assert_eq!(cad.action, Action::CompareAndDelete);
        let rm = kv
            .delete_with(wire::DeleteRequest {
                key: "/d".into(),
                recursive: true,
                ..Default::default()
            })
            .await
            .expect("recursive delete");
        assert_eq!(rm.action, Action::Delete);
        assert_eq!(etcd_code(kv.get("/d/ttl").await).0, Some(100));
    });
}

#[test]
fn grpc_limits_give_resource_exhausted() {
    let server = kvd(&[
        "--max-request-bytes",
        "4096",
        "--max-watchers-per-conn",
        "2",
    ]);
    let url = server.url.clone();
    block_on(async move {
        let kv = KvClient::connect(&url).await.expect("connect");
        let big = "x".repeat(8192);
        let e = kv.put("/big", &big).await.unwrap_err();
        assert_eq!(e.grpc_code(), Some(Code::ResourceExhausted), "{e}");
        assert_eq!(e.etcd_code(), None);
        // A key beyond the key limit (64 KiB) would exceed the request limit here too, so
        // both limits answer the same way; the server is still fine afterwards.
        kv.put("/small", "ok")
            .await
            .expect("a small put still works");

        // Watches per connection: clones of one client share its connection.
        let w1 = kv.watch("/w", false, 0).await.expect("watch 1");
        let _w2 = kv.watch("/w", false, 0).await.expect("watch 2");
        let e = kv.watch("/w", false, 0).await.unwrap_err();
        assert_eq!(e.grpc_code(), Some(Code::ResourceExhausted), "{e}");
        // Closing one frees its slot once the server sees the stream reset.
        drop(w1);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match kv.watch("/w", false, 0).await {
                Ok(_) => break,
                Err(e) if e.grpc_code() == Some(Code::ResourceExhausted) => {
                    assert!(Instant::now() < deadline, "the watch slot was never freed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    });
}

#[test]
fn grpc_transactions_take_either_branch_and_batches_apply_at_once() {
    let server = kvd(&[]);
    let url = server.url.clone();
    block_on(async move {
        let kv = KvClient::connect(&url).await.expect("connect");
        let a = kv.put("/t/a", "1").await.expect("put");
        let put = |k: &str, v: &str| wire::Op {
            op: Some(wire::op::Op::Put(wire::PutRequest {
                key: k.into(),
                value: v.into(),
                ..Default::default()
            })),
        };
        let req = |value: &str| wire::TxnRequest {
            compare: vec![
                wire::Compare {
                    key: "/t/a".into(),
                    target: Some(wire::compare::Target::Value(value.into())),
                },
                wire::Compare {
                    key: "/t/b".into(),
                    target: Some(wire::compare::Target::Exists(false)),
                },
            ],
            success: vec![put("/t/b", "from success"), put("/t/a", "2")],
            failure: vec![put("/t/c", "from failure")],
        };

        let ok = kv.txn(req("1")).await.expect("txn");
        assert!(ok.succeeded);
        assert_eq!(ok.events.len(), 2);
        assert!(ok.events.iter().all(|e| e.index == ok.index));
        assert_eq!(ok.index, a.index + 1);
        assert_eq!(
            kv.get("/t/b").await.unwrap().node.value.as_deref(),
            Some("from success")
        );

        let failed = kv.txn(req("1")).await.expect("txn");
        assert!(!failed.succeeded);
        assert_eq!(failed.events.len(), 1);
        assert_eq!(
            kv.get("/t/c").await.unwrap().node.value.as_deref(),
            Some("from failure")
        );
        assert_eq!(
            kv.get("/t/a").await.unwrap().node.value.as_deref(),
            Some("2")
        );

        // A failing operation in the branch that runs rolls the branch back.
        let before = kv.get("/t/a").await.unwrap();
        let bad = wire::TxnRequest {
            success: vec![
                put("/t/a", "3"),
                wire::Op {
                    op: Some(wire::op::Op::Delete(wire::DeleteRequest {
                        key: "/t/none".into(),
                        ..Default::default()
                    })),
                },
            ],
            ..Default::default()
        };
        assert_eq!(etcd_code(kv.txn(bad).await).0, Some(100));
        let after = kv.get("/t/a").await.unwrap();
        assert_eq!(after.node, before.node);
        // Malformed requests are refused, not crashes.
        let empty_op = wire::TxnRequest {
            success: vec![wire::Op { op: None }],
            ..Default::default()
        };
        assert_eq!(
            etcd_code(kv.txn(empty_op).await),
            (Some(209), Some(Code::InvalidArgument))
        );

        let batch = kv
            .batch_put((0..50).map(|i| (format!("/batch/{i:02}"), format!("v{i}"))))
            .await
            .expect("batch put");
        assert!(batch.succeeded);
        assert_eq!(batch.events.len(), 50);
        let listing = kv
            .get_with(wire::GetRequest {
                key: "/batch".into(),
                sorted: true,
                ..Default::default()
            })
            .await
            .expect("list");
        assert_eq!(listing.node.nodes.len(), 50);
        assert!(
            listing
                .node
                .nodes
                .iter()
                .all(|n| n.modified_index == batch.index)
        );
    });
}

#[test]
fn grpc_watch_from_a_past_index_live_and_cleared() {
    let server = kvd(&[]);
    let url = server.url.clone();
    block_on(async move {
        let kv = KvClient::connect(&url).await.expect("connect");
        let first = kv.put("/w/a", "1").await.expect("put");
        kv.put("/other", "x").await.expect("put");
        let b = kv.put("/w/b", "2").await.expect("put");

        // From a past index: the history first, in order, then live events. The response
        // carries the store index at registration (the HTTP API's `X-Etcd-Index`).
        let mut w = kv.watch("/w", true, first.index).await.expect("watch");
        assert_eq!(w.etcd_index(), Some(b.index));
        let e = next_event(&mut w).await;
        assert_eq!((e.node.key.as_str(), e.index), ("/w/a", first.index));
        let e = next_event(&mut w).await;
        assert_eq!(e.node.key, "/w/b");
        let live = kv.put("/w/c", "3").await.expect("put");
        let e = next_event(&mut w).await;
        assert_eq!((e.node.key.as_str(), e.index), ("/w/c", live.index));
        let del = kv.delete("/w/a").await.expect("delete");
        let e = next_event(&mut w).await;
        assert_eq!((e.action, e.index), (Action::Delete, del.index));

        // From the next event only (start index 0), non-recursive.
        let mut only_c = kv.watch("/w/c", false, 0).await.expect("watch");
        kv.put("/w/b", "ignored").await.expect("put");
        let cas = kv.compare_and_swap("/w/c", "3", "4").await.expect("cas");
        let e = next_event(&mut only_c).await;
        assert_eq!((e.action, e.index), (Action::CompareAndSwap, cas.index));

        // The client going away ends the watch on the server: once an event for the key
        // finds the stream gone, the watcher is unregistered.
        let watchers = kv.status().await.expect("status").watchers;
        assert!(watchers >= 2, "{watchers} watchers");
        drop(w);
        drop(only_c);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            kv.put("/w/c", "poke").await.expect("put");
            if kv.status().await.expect("status").watchers == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "watchers were never unregistered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // An index older than the kept history (1000 events) is etcd's 401.
        kv.batch_put((0..1100).map(|i| (format!("/fill/{i}"), "v")))
            .await
            .expect("batch");
        let e = kv.watch("/w", true, first.index).await;
        // The error may come with the response or as the stream's first message.
        let err = match e {
            Err(e) => e,
            Ok(mut w) => match w.next().await {
                Some(Err(e)) => e,
                other => panic!("expected 401, got {other:?}"),
            },
        };
        assert_eq!(
            (err.etcd_code(), err.grpc_code()),
            (Some(401), Some(Code::OutOfRange))
        );
    });
}

/// A member of a 3-member cluster: name, client URL, peer URL.
/// Three kvd members on loopback (data in `dir`), started and healthy, in order m1..m3.
/// A client on each of `urls`, in order.
async fn connect_all(urls: &[String]) -> Vec<KvClient> {
    let mut clients = Vec::new();
    for u in urls {
        clients.push(KvClient::connect(u).await.expect("connect"));
    }
    clients
}

fn three_members(dir: &std::path::Path) -> Vec<Server> {
    let specs: Vec<(String, String, String)> = (1..=3)
        .map(|i| {
            (
                format!("m{i}"),
                format!("http://127.0.0.1:{}", util::free_port()),
                format!("http://127.0.0.1:{}", util::free_port()),
            )
        })
        .collect();
    let cluster = specs
        .iter()
        .map(|(name, _, peer)| format!("{name}={peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut servers: Vec<Server> = specs
        .iter()
        .map(|(name, client, peer)| {
            let args = util::member_args(name, dir, client, peer, &cluster);
            util::kvd_spawn(args, client.clone(), peer.clone())
        })
        .collect();
    for s in &mut servers {
        s.wait_healthy("kvd cluster member");
    }
    servers
}

/// A value whose command grows past raft-store's command limit once encoded (a control
/// character takes 6 bytes in the log's JSON) is refused with etcd's "request is too large"
/// while the request itself is within kvd's limits, and the cluster goes on: such an entry
/// would otherwise stay in the leader's log, larger than what the followers decode, and no
/// later write would commit. A value of etcd's default request limit still replicates.
#[test]
fn grpc_put_whose_command_outgrows_the_raft_limit_is_refused_and_the_cluster_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let servers = three_members(dir.path());
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    block_on(async move {
        let clients = connect_all(&urls).await;
        // 3 MiB on the wire (under the 4 MiB request limit), 18 MiB as a command: more than
        // a peer decodes in one message.
        let value = "\u{1}".repeat(3 << 20);
        for (i, kv) in clients.iter().enumerate() {
            let e = kv.put("/escaped", &value).await.unwrap_err();
            assert_eq!(e.etcd_code(), Some(300), "member {i}: {e}");
            assert!(
                e.to_string().contains("request is too large"),
                "member {i}: {e}"
            );
        }
        for (i, kv) in clients.iter().enumerate() {
            let key = format!("/after/{i}");
            kv.put(&key, "ok")
                .await
                .unwrap_or_else(|e| panic!("put via member {i}: {e}"));
            for (j, other) in clients.iter().enumerate() {
                let ev = other
                    .get(&key)
                    .await
                    .unwrap_or_else(|e| panic!("get {key} via member {j}: {e}"));
                assert_eq!(ev.node.value.as_deref(), Some("ok"));
            }
        }
        let e = clients[0].get("/escaped").await.unwrap_err();
        assert_eq!(e.etcd_code(), Some(100), "{e}");
        // What etcd accepts by default (a 1.5 MiB request) fits, even as control characters:
        // 9 MiB as a command.
        let etcd_sized = "\u{1}".repeat(3 << 19);
        clients[1]
            .put("/etcd-sized", &etcd_sized)
            .await
            .expect("a put of etcd's default request size");
        for (j, kv) in clients.iter().enumerate() {
            let ev = kv
                .get("/etcd-sized")
                .await
                .unwrap_or_else(|e| panic!("get via member {j}: {e}"));
            assert_eq!(
                ev.node.value.as_deref(),
                Some(etcd_sized.as_str()),
                "member {j}"
            );
        }
    });
    drop(servers);
}

#[test]
fn grpc_members_and_status_on_three_members() {
    let dir = tempfile::tempdir().expect("tempdir");
    let servers = three_members(dir.path());
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    block_on(async move {
        let clients = connect_all(&urls).await;
        // Every member agrees on the leader and lists all three, with client URLs once
        // they are published.
        let deadline = Instant::now() + Duration::from_secs(15);
        let leader = loop {
            let mut leaders = Vec::new();
            let mut complete = true;
            for c in &clients {
                let st = c.status().await.expect("status");
                leaders.push(st.leader);
                let ms = c.members().await.expect("members");
                complete &= ms.len() == 3
                    && ms.iter().all(|m| !m.client_urls.is_empty())
                    && ms.iter().filter(|m| m.is_leader).count() == 1;
            }
            if complete && leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0]) {
                break leaders[0];
            }
            assert!(Instant::now() < deadline, "no agreed leader: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let statuses = [
            clients[0].status().await.unwrap(),
            clients[1].status().await.unwrap(),
        ];
        let header = statuses[0].header.expect("header");
        assert_eq!(header.cluster_id, statuses[1].header.unwrap().cluster_id);
        assert_ne!(header.member_id, statuses[1].header.unwrap().member_id);
        assert!(header.raft_term >= 1);
        assert_eq!(statuses[0].name, "m1");

        // A write on a follower is visible to a linearizable read on another member.
        let ms = clients[0].members().await.unwrap();
        let follower = ms.iter().position(|m| m.id != leader).expect("a follower");
        let follower_url = &ms[follower].client_urls[0];
        let fc = clients
            .iter()
            .zip(&urls)
            .find(|(_, u)| *u == follower_url)
            .map(|(c, _)| c.clone())
            .expect("the follower's client");
        let put = fc
            .put("/from-follower", "v")
            .await
            .expect("put on a follower");
        for c in &clients {
            let got = c.get("/from-follower").await.expect("linearizable get");
            assert_eq!(got.node.modified_index, put.index);
        }

        // Member add, then remove (the added member never starts: a quorum of 3 of 4 runs).
        let new_peer = format!("http://127.0.0.1:{}", util::free_port());
        let added = clients[0]
            .add_member(vec![new_peer.clone()])
            .await
            .expect("member add");
        assert_ne!(added.id, 0);
        assert_eq!(added.peer_urls, vec![new_peer.clone()]);
        // Every member sees it (the duplicate check below reads the member's own view).
        let deadline = Instant::now() + Duration::from_secs(15);
        for c in &clients {
            while !c.members().await.unwrap().iter().any(|m| m.id == added.id) {
                assert!(
                    Instant::now() < deadline,
                    "the added member never showed up"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let e = clients[1].add_member(vec![new_peer]).await.unwrap_err();
        assert_eq!(e.grpc_code(), Some(Code::AlreadyExists), "{e}");
        clients[0]
            .remove_member(added.id)
            .await
            .expect("member remove");
        let e = clients[0].remove_member(0xdead).await.unwrap_err();
        assert_eq!(e.grpc_code(), Some(Code::NotFound), "{e}");
        let e = clients[0].add_member(Vec::new()).await.unwrap_err();
        assert_eq!(e.grpc_code(), Some(Code::InvalidArgument), "{e}");
        let me = &clients[0].members().await.unwrap()[0];
        clients[0]
            .update_member(me.id, me.peer_urls.clone())
            .await
            .expect("update to the same URLs");
    });
}

#[test]
fn grpc_kvbench_mode_drives_kvd_and_etcd_natively() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args(["--api", "grpc", "--duration", "0.3", "--rounds", "1"])
        .args(["--conns", "2", "--keys", "50", "--ops", "put,get,qget"])
        .args(["--kvd-bin", env!("CARGO_BIN_EXE_kvd")])
        .output()
        .expect("run kvbench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kvbench failed: {stderr}");
    let report = String::from_utf8_lossy(&out.stdout);
    for op in ["put", "get", "qget"] {
        assert!(
            report.contains(&format!("| {op} | 2 |")),
            "no {op} row in:\n{report}"
        );
    }
    // Every measurement line reports its failed requests: there must be none.
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(" errors ")).collect();
    assert_eq!(lines.len(), 6, "{stderr}");
    assert!(lines.iter().all(|l| l.ends_with(" errors 0")), "{stderr}");
}

#[test]
fn grpc_watch_ends_with_code_400_when_kvd_stops_and_kvd_exits_cleanly() {
    let mut server = kvd(&[]);
    let url = server.url.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (kv, mut w) = rt.block_on(async {
        let kv = KvClient::connect(&url).await.expect("connect");
        let w = kv.watch("/x", true, 0).await.expect("watch");
        // An event through the stream shows it is live before kvd is stopped.
        kv.put("/x/1", "a").await.expect("put");
        (kv, w)
    });
    let first = rt.block_on(next_event(&mut w));
    assert_eq!(first.node.key, "/x/1");
    let status = server.terminate();
    assert!(status.success(), "kvd exited with {status}");
    let end = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("the stream ends within 10 s")
    });
    match end {
        // The server ended the watch before the connection closed...
        Some(Err(e)) if e.etcd_code() == Some(400) => {}
        // ...or the connection closed first (then the client sees a transport error).
        Some(Err(e)) => assert_eq!(e.etcd_code(), None, "{e}"),
        other => panic!("expected the watch to end with an error, got {other:?}"),
    }
    drop(kv);
}

/// Sends and receives raw bytes, to put malformed messages on the wire.
struct RawCodec;

struct RawEncoder;

struct RawDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf as _;
        let mut v = vec![0; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

#[test]
fn grpc_malformed_requests_are_refused_not_crashes() {
    let server = kvd(&[]);
    let url = server.url.clone();
    block_on(async move {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let call = |path: &'static str, body: Vec<u8>| {
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            async move {
                grpc.ready().await.expect("ready");
                grpc.unary(
                    tonic::Request::new(body),
                    tonic::codegen::http::uri::PathAndQuery::from_static(path),
                    RawCodec,
                )
                .await
            }
        };
        // Not protobuf at all.
        let e = call("/kv.v1.KV/Put", vec![0xff; 16]).await.unwrap_err();
        assert_eq!(e.code(), Code::Internal, "{e:?}");
        // Field 1 (the key) holding invalid UTF-8.
        let e = call("/kv.v1.KV/Get", vec![0x0a, 0x02, 0xff, 0xfe])
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Internal, "{e:?}");
        // A length running past the end of the message.
        let e = call("/kv.v1.KV/Txn", vec![0x12, 0x7f, 0x0a])
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Internal, "{e:?}");
        // No such method.
        let e = call("/kv.v1.KV/Nope", Vec::new()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
        // An empty Get is the root; an empty Put is a set of the root, which etcd refuses.
        assert!(call("/kv.v1.KV/Get", Vec::new()).await.is_ok());
        let kv = KvClient::connect(&url).await.expect("connect");
        assert_eq!(etcd_code(kv.put("", "x").await).0, Some(107));
        // The server is still serving.
        kv.put("/still", "here").await.expect("put after bad input");
    });
}

#[test]
fn kvctl_over_grpc_fails_over_between_endpoints_and_exits_2_when_none_answers() {
    crate::http_api::kvctl_fails_over(&["--api", "grpc"]);
}

#[test]
fn kvctl_over_grpc_saves_the_snapshot_http_saves_and_watches_forever() {
    let kvd = kvd(&[]);
    block_on(async {
        let kv = KvClient::connect(&kvd.url).await.expect("connect");
        kv.put("/snap/kept", "yes").await.expect("put");
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let kvctl = |api: &str| {
        let mut c = std::process::Command::new(util::kvctl_bin());
        c.args(["--endpoints", &kvd.url, "--api", api]);
        c
    };
    let save = |api: &str| {
        let file = dir.path().join(format!("{api}.db"));
        let out = kvctl(api)
            .args(["snapshot", "save"])
            .arg(&file)
            .output()
            .expect("kvctl");
        assert!(
            out.status.success(),
            "{api}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("Snapshot saved at {}\n", file.display())
        );
        std::fs::read(&file).expect("snapshot file")
    };
    let over_grpc = save("grpc");
    assert_eq!(
        over_grpc,
        save("http"),
        "the two APIs saved different bytes"
    );
    let store = kv_core::Store::restore(&mut over_grpc.as_slice()).expect("a kv-core snapshot");
    let got = store.get("/snap/kept", false, false, 0).expect("kept key");
    assert_eq!(got.node.value.as_deref(), Some("yes"));

    // `watch --forever` prints every event, in order, as over HTTP.
    let mut watchers: Vec<_> = ["http", "grpc"]
        .into_iter()
        .map(|api| {
            kvctl(api)
                .args(["watch", "--forever", "--recursive", "/w"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("kvctl watch")
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    block_on(async {
        let kv = KvClient::connect(&kvd.url).await.expect("connect");
        while kv.status().await.expect("status").watchers < 2 {
            assert!(Instant::now() < deadline, "the watchers did not register");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        kv.put("/w/a", "1").await.expect("put");
        kv.put("/w/b", "2").await.expect("put");
        kv.delete("/w/a").await.expect("delete");
        // Both have seen the delete once they wait again.
        tokio::time::sleep(Duration::from_millis(500)).await;
    });
    let outputs: Vec<String> = watchers
        .iter_mut()
        .map(|w| {
            let _ = w.kill();
            let mut s = String::new();
            std::io::Read::read_to_string(w.stdout.as_mut().expect("stdout"), &mut s)
                .expect("read");
            let _ = w.wait();
            s
        })
        .collect();
    let expected = "[set] /w/a\n1\n[set] /w/b\n2\n[delete] /w/a\nPrevNode.Value: 1\n";
    assert_eq!(outputs[0], expected, "over HTTP");
    assert_eq!(outputs[1], expected, "over gRPC");
}

/// Runs kvctl with `args`: (exit code, stdout, stderr).
fn kvctl(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(util::kvctl_bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("kvctl");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn kvctl_over_grpc_prints_kvd_limits_as_over_http() {
    let server = kvd(&[
        "--max-request-bytes",
        "4096",
        "--max-watchers-per-conn",
        "0",
    ]);
    let big = "x".repeat(8192);
    // (A key over the key limit cannot be sent over HTTP: it is longer than a URL may be.)
    for (what, args) in [
        (
            "a value over the request limit",
            vec!["set", "/big", big.as_str()],
        ),
        ("a watch over the watcher limit", vec!["watch", "/w"]),
    ] {
        let run = |api: &str| {
            let mut a = vec!["--endpoints", server.url.as_str(), "--api", api];
            a.extend(&args);
            kvctl(&a)
        };
        let (http, grpc) = (run("http"), run("grpc"));
        assert_eq!(grpc, http, "{what}: gRPC and HTTP differ");
        assert_eq!(http.0, Some(4), "{what}: {http:?}");
        assert!(
            http.2
                .starts_with("Error:  300: Raft Internal Error (etcdserver: "),
            "{what}: {http:?}"
        );
    }
}

/// A `kv.v1` server whose indexes differ the way they can under concurrent writes: its
/// watches were registered at index 7 (the `kv-etcd-index` of the response), the store is
/// at 9 when `Status` is asked, and the watch's event is at 12.
struct SkewedIndexes;

type Stream<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl wire::kv_server::Kv for SkewedIndexes {
    async fn get(
        &self,
        _: tonic::Request<wire::GetRequest>,
    ) -> Result<tonic::Response<wire::EventResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("get"))
    }

    async fn put(
        &self,
        _: tonic::Request<wire::PutRequest>,
    ) -> Result<tonic::Response<wire::EventResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("put"))
    }

    async fn delete(
        &self,
        _: tonic::Request<wire::DeleteRequest>,
    ) -> Result<tonic::Response<wire::EventResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("delete"))
    }

    async fn compare_and_swap(
        &self,
        _: tonic::Request<wire::CompareAndSwapRequest>,
    ) -> Result<tonic::Response<wire::EventResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("compare_and_swap"))
    }

    async fn txn(
        &self,
        _: tonic::Request<wire::TxnRequest>,
    ) -> Result<tonic::Response<wire::TxnResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("txn"))
    }

    async fn batch_put(
        &self,
        _: tonic::Request<wire::BatchPutRequest>,
    ) -> Result<tonic::Response<wire::TxnResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("batch_put"))
    }

    type WatchStream = Stream<wire::Event>;

    async fn watch(
        &self,
        _: tonic::Request<wire::WatchRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        let event = wire::Event {
            action: wire::Action::Set as i32,
            node: Some(wire::Node {
                key: "/k".into(),
                value: Some("v".into()),
                created_index: 12,
                modified_index: 12,
                ..Default::default()
            }),
            prev_node: None,
            index: 12,
        };
        let events = futures::StreamExt::chain(
            futures::stream::iter([Ok::<_, tonic::Status>(event)]),
            futures::stream::pending(),
        );
        let mut response = tonic::Response::new(Box::pin(events) as Self::WatchStream);
        response.metadata_mut().insert(
            proto::convert::kv::ETCD_INDEX_KEY,
            tonic::metadata::MetadataValue::from(7u64),
        );
        Ok(response)
    }

    async fn member_list(
        &self,
        _: tonic::Request<wire::MemberListRequest>,
    ) -> Result<tonic::Response<wire::MemberListResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("member_list"))
    }

    async fn member_add(
        &self,
        _: tonic::Request<wire::MemberAddRequest>,
    ) -> Result<tonic::Response<wire::Member>, tonic::Status> {
        Err(tonic::Status::unimplemented("member_add"))
    }

    async fn member_remove(
        &self,
        _: tonic::Request<wire::MemberRemoveRequest>,
    ) -> Result<tonic::Response<wire::MemberRemoveResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("member_remove"))
    }

    async fn member_update(
        &self,
        _: tonic::Request<wire::MemberUpdateRequest>,
    ) -> Result<tonic::Response<wire::MemberUpdateResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("member_update"))
    }

    async fn status(
        &self,
        _: tonic::Request<wire::StatusRequest>,
    ) -> Result<tonic::Response<wire::StatusResponse>, tonic::Status> {
        Ok(tonic::Response::new(wire::StatusResponse {
            etcd_index: 9,
            ..Default::default()
        }))
    }

    type SnapshotStream = Stream<wire::SnapshotChunk>;

    async fn snapshot(
        &self,
        _: tonic::Request<wire::SnapshotRequest>,
    ) -> Result<tonic::Response<Self::SnapshotStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("snapshot"))
    }
}

#[test]
fn kvctl_over_grpc_prints_the_index_of_the_watch_response_itself() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(wire::kv_server::KvServer::new(SkewedIndexes))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    // Over HTTP, `Index:` is the `X-Etcd-Index` of the long poll's own answer (the index
    // when the watch was registered), never a later one asked for separately.
    let (code, out, err) = kvctl(&[
        "--endpoints",
        &url,
        "--api",
        "grpc",
        "-o",
        "extended",
        "watch",
        "/k",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        "Key: /k\nCreated-Index: 12\nModified-Index: 12\nTTL: 0\nIndex: 7\n\nv\n"
    );
}

/// Reads `child`'s stdout lines into a channel (so a test can wait for one with a deadline).
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn kvctl_fails_over_to_the_next_endpoint_when_its_member_dies_mid_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut servers = three_members(dir.path());
    let endpoints = servers
        .iter()
        .map(|s| s.url.clone())
        .collect::<Vec<_>>()
        .join(",");
    let others: Vec<String> = servers[1..].iter().map(|s| s.url.clone()).collect();
    let mut watchers: Vec<(&str, std::process::Child)> = ["http", "grpc"]
        .into_iter()
        .map(|api| {
            let child = std::process::Command::new(util::kvctl_bin())
                .args(["--endpoints", &endpoints, "--api", api])
                .args(["watch", "--forever", "/fo"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(
                    std::fs::File::create(dir.path().join(format!("kvctl-{api}.stderr")))
                        .expect("stderr file"),
                )
                .spawn()
                .expect("kvctl watch");
            (api, child)
        })
        .collect();
    let lines: Vec<_> = watchers.iter_mut().map(|(_, c)| lines_of(c)).collect();
    // A put through a surviving member, retried while an election runs.
    let put = |value: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        block_on(async {
            loop {
                for url in &others {
                    if let Ok(kv) = KvClient::connect(url).await
                        && kv.put("/fo", value).await.is_ok()
                    {
                        return;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "no member took the put of {value}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    };
    let expect_line = |i: usize, want: &str| {
        let got = lines[i].recv_timeout(Duration::from_secs(20));
        let api = ["http", "grpc"][i];
        let stderr = || {
            std::fs::read_to_string(dir.path().join(format!("kvctl-{api}.stderr")))
                .unwrap_or_default()
        };
        assert_eq!(
            got.as_deref(),
            Ok(want),
            "kvctl --api {api} watch --forever; its stderr:\n{}",
            stderr()
        );
    };
    // Both watch through the first endpoint, m1.
    let deadline = Instant::now() + Duration::from_secs(10);
    block_on(async {
        let kv = KvClient::connect(&servers[0].url).await.expect("connect");
        while kv.status().await.expect("status").watchers < 2 {
            assert!(
                Instant::now() < deadline,
                "the watchers did not register on m1"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    put("one");
    expect_line(0, "one");
    expect_line(1, "one");
    // m1 dies (SIGKILL): both carry on through the next endpoint, from the next index.
    drop(servers.remove(0));
    put("two");
    expect_line(0, "two");
    expect_line(1, "two");
    put("three");
    expect_line(0, "three");
    expect_line(1, "three");
    for (api, child) in &mut watchers {
        if let Ok(Some(status)) = child.try_wait() {
            let err = std::fs::read_to_string(dir.path().join(format!("kvctl-{api}.stderr")));
            panic!("kvctl --api {api} watch exited with {status}: {err:?}");
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    // Commands of several calls with the dead endpoint first: the same answers as over HTTP.
    let dead_first = endpoints.clone();
    let list = |api: &str| kvctl(&["--endpoints", &dead_first, "--api", api, "member", "list"]);
    // The leader may change between the two runs, so compare without `isLeader`.
    let members = |out: &str| {
        let mut v: Vec<String> = out
            .lines()
            .map(|l| l.split(" isLeader=").next().unwrap_or(l).to_owned())
            .collect();
        v.sort();
        v
    };
    // A member's client URLs appear once its publication commits, which may happen
    // between the two runs (a CI run saw m3's in the second only): poll until they agree.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (http, grpc) = loop {
        let (http, grpc) = (list("http"), list("grpc"));
        if members(&grpc.1) == members(&http.1) || Instant::now() >= deadline {
            break (http, grpc);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(http.0, Some(0), "{http:?}");
    assert_eq!(members(&grpc.1), members(&http.1), "{grpc:?}");
    assert_eq!(members(&http.1).len(), 3, "{http:?}");
}
