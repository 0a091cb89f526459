//! The gRPC transport with large commands: what a member sends at once stays within what its
//! peers decode (16 MiB per message batch), and a command too large to cross it is refused.

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

/// A command whose encoding exceeds `MAX_COMMAND_BYTES` is refused before it reaches the log;
/// one just under the limit still crosses the gRPC transport to every member. Without the
/// limit, an entry larger than what peers decode would sit in the leader's log and keep
/// every later write from committing.
#[tokio::test]
async fn commands_over_the_size_limit_are_refused_and_the_largest_allowed_one_replicates() {
    let dirs = tempfile::tempdir().unwrap();
    let (nodes, _, stop) = grpc_members(
        1..=3,
        "http",
        dirs.path(),
        || GrpcTransport::new(0x6e8),
        config,
    )
    .await;
    eventually(WAIT, "a leader that every member knows", || {
        let leaders: Vec<_> = nodes.iter().map(|n| n.status().leader).collect();
        let agreed = leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0]);
        async move { agreed }
    })
    .await;
    let limit = raft_store::MAX_COMMAND_BYTES;

    let too_big = Cmd::Set("big".into(), "v".repeat(limit));
    match nodes[0].write(&too_big).await {
        Err(raft_store::Error::CommandTooLarge { size, limit: l }) => {
            assert!(size > limit, "size {size}");
            assert_eq!(l, limit);
        }
        other => panic!("expected CommandTooLarge, got {other:?}"),
    }

    // The JSON of `Set(key, value)` adds a few dozen bytes to the value.
    let largest = "w".repeat(limit - 1024);
    let (_, out) = nodes[1]
        .write(&Cmd::Set("largest".into(), largest.clone()))
        .await
        .expect("a command under the limit");
    assert!(out.ok);
    let (_, out) = nodes[2]
        .write(&Cmd::Set("after".into(), "x".into()))
        .await
        .expect("a small write after the large ones");
    assert!(out.ok);
    for n in &nodes {
        let (held, big) = n
            .read(ReadConsistency::Linearizable, |m| {
                (
                    m.map.get("largest").map(String::len),
                    m.map.contains_key("big"),
                )
            })
            .await
            .unwrap();
        assert_eq!(held, Some(largest.len()), "member {}", n.id());
        assert!(!big, "member {} holds the refused command", n.id());
    }
    for n in &nodes {
        n.shutdown().await;
    }
    let _ = stop.send(true);
}
