//! kvd's gRPC API (`kv.v1`) served in-process on 127.0.0.1:0 over the memory backend,
//! through kv-client's `KvClient`. (Against kvd processes, over the raft backend: bins'
//! tests.)

use std::future::Future;
use std::sync::Arc;

use kv_client::{KvClient, wire};
use kv_server::backend::memory::{MemoryBackend, MemoryConfig};
use kv_server::http::{Limits, router, serve};
use tonic::Code;

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

async fn next_event(w: &mut kv_client::Watch) -> kv_core::Event {
    tokio::time::timeout(std::time::Duration::from_secs(10), w.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream is open")
        .expect("an event, not an error")
}

#[test]
fn grpc_in_process_over_the_memory_backend() {
    block_on(async {
        let backend = Arc::new(MemoryBackend::ephemeral(MemoryConfig {
            id: 0x1234,
            cluster_id: 0xabcd,
            name: "mem".into(),
            peer_urls: vec!["http://127.0.0.1:2380".into()],
            client_urls: vec![],
            data_dir: Default::default(),
        }));
        let limits = Limits {
            max_key_bytes: 16,
            ..Limits::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(serve(
            listener,
            router(backend, limits),
            std::future::pending(),
        ));
        let kv = KvClient::connect(&url).await.expect("connect");

        let e = kv.put("/a-key-longer-than-sixteen", "v").await.unwrap_err();
        assert_eq!(e.grpc_code(), Some(Code::ResourceExhausted), "{e}");
        let e = kv
            .txn(wire::TxnRequest {
                compare: vec![wire::Compare {
                    key: "/another-key-that-is-too-long".into(),
                    target: Some(wire::compare::Target::Exists(true)),
                }],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.grpc_code(), Some(Code::ResourceExhausted), "{e}");

        // A transaction's events share one index: a watch from that index replays them all.
        let t = kv
            .batch_put([("/m/a", "1"), ("/m/b", "2"), ("/m/c", "3")])
            .await
            .expect("batch");
        let mut w = kv.watch("/m", true, t.index).await.expect("watch");
        for key in ["/m/a", "/m/b", "/m/c"] {
            let e = next_event(&mut w).await;
            assert_eq!((e.node.key.as_str(), e.index), (key, t.index));
        }

        let st = kv.status().await.expect("status");
        assert_eq!((st.name.as_str(), st.leader), ("mem", 0x1234));
        assert_eq!(st.header.expect("header").cluster_id, 0xabcd);
        let ms = kv.members().await.expect("members");
        assert_eq!(ms.len(), 1);
        assert!(ms[0].is_leader);
        let e = kv
            .add_member(vec!["http://127.0.0.1:9".into()])
            .await
            .unwrap_err();
        assert_eq!(e.grpc_code(), Some(Code::Unimplemented), "{e}");
    });
}
