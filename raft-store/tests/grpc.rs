//! The gRPC transport with large commands: what a member sends at once stays within what its
//! peers decode (16 MiB per message batch).

use std::time::Duration;

use raft_store::{Config, GrpcTransport, Member, ReadConsistency, Role};

use crate::util::{Cmd, WAIT, eventually, grpc_members};

fn config(id: u64, dir: &std::path::Path, members: &[Member]) -> Config {
    let mut c = Config::new(id, dir);
    c.initial_members = members.to_vec();
    c.tick_interval = Duration::from_millis(30);
    c.election_ticks = 10;
    c.request_timeout = Duration::from_secs(20);
    c
}

/// 40 commands of 600 KiB queued together on a follower (24 MiB in all): they are forwarded
/// to the leader in proposals of about 1 MiB, not as one message the leader's transport
/// would refuse, and the leader's appends reach the followers in batches it accepts. A
/// single-threaded runtime lets every write queue before the raft loop runs.
#[tokio::test(flavor = "current_thread")]
async fn large_writes_queued_together_cross_the_transport() {
    let dirs = tempfile::tempdir().unwrap();
    let (nodes, _, stop) = grpc_members(
        1..=3,
        "http",
        dirs.path(),
        || GrpcTransport::new(0x6e7),
        config,
    )
    .await;
    let mut follower = None;
    eventually(WAIT, "a leader that every member knows", || {
        let leaders: Vec<_> = nodes.iter().map(|n| n.status().leader).collect();
        let agreed = leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0]);
        if agreed {
            follower = nodes.iter().position(|n| n.status().role == Role::Follower);
        }
        async move { agreed }
    })
    .await;
    let via = &nodes[follower.expect("a follower")];
    let value = "v".repeat(600 << 10);
    let writes = (0..40).map(|i| {
        let (n, cmd) = (via.clone(), Cmd::Set(format!("k{i}"), value.clone()));
        async move { n.write(&cmd).await }
    });
    for (i, r) in futures::future::join_all(writes)
        .await
        .into_iter()
        .enumerate()
    {
        let (_, out) = r.unwrap_or_else(|e| panic!("write {i}: {e}"));
        assert!(out.ok);
    }
    for n in &nodes {
        let held = n
            .read(ReadConsistency::Linearizable, |m| {
                m.map.values().filter(|v| v.len() == value.len()).count()
            })
            .await
            .unwrap();
        assert_eq!(held, 40, "member {}", n.id());
    }
    for n in &nodes {
        n.shutdown().await;
    }
    let _ = stop.send(true);
}
