//! Elections, replication and faults on in-process clusters.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use raft_store::{Error, ReadConsistency, Role};

use crate::util::{Cluster, Cmd, WAIT, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_elect_one_leader_and_replicate() {
    let c = Cluster::new(3).await;
    let leader = c.leader().await;
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let a = c.set(leader, "a", "1").await;
    assert!(a.ok && a.prev.is_none());
    // A follower forwards the write to the leader.
    let b = c.set(follower, "b", "2").await;
    assert!(b.ok && b.index > a.index);
    for id in 1..=3 {
        assert_eq!(c.get(id, "a").await.as_deref(), Some("1"), "member {id}");
        assert_eq!(c.get(id, "b").await.as_deref(), Some("2"), "member {id}");
    }
    c.converged().await;
    let st = c.node(leader).status();
    assert_eq!(st.role, Role::Leader);
    assert!(st.term >= 2 && st.applied >= 5, "{st:?}");
    assert_eq!(c.node(follower).members().len(), 3);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_new_and_past_events_on_any_member() {
    let c = Cluster::new(3).await;
    let leader = c.leader().await;
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    c.set(leader, "k", "0").await;
    c.converged().await;
    let mut live = c.node(follower).watch(None).unwrap();
    for i in 1..=3 {
        c.set(leader, "k", &i.to_string()).await;
    }
    for i in 1..=3u64 {
        let o = tokio::time::timeout(WAIT, live.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(o.index, i + 1);
    }
    // From the past: every event from index 2 on, then live ones.
    c.converged().await;
    let mut past = c.node(follower).watch(Some(2)).unwrap();
    let got: Vec<u64> = futures_take(&mut past, 3).await;
    assert_eq!(got, vec![2, 3, 4]);
    c.shutdown().await;
}

async fn futures_take(w: &mut raft_store::Watch<crate::util::MapMachine>, n: usize) -> Vec<u64> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(
            tokio::time::timeout(WAIT, w.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
                .index,
        );
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_partition_keeps_majority_available_then_catches_up() {
    let c = Cluster::new(5).await;
    let leader = c.leader().await;
    let minority: Vec<u64> = (1..=5).filter(|&i| i != leader).take(2).collect();
    let majority: Vec<u64> = (1..=5).filter(|i| !minority.contains(i)).collect();
    c.net.partition(&[&minority, &majority]);
    for i in 0..10 {
        c.set(majority[i % 3], &format!("k{i}"), "v").await;
    }
    // The cut-off side cannot serve a linearizable read.
    let r = c
        .node(minority[0])
        .read(ReadConsistency::Linearizable, |m| m.map.len())
        .await;
    assert!(r.is_err(), "minority served a linearizable read: {r:?}");
    c.net.heal();
    c.converged().await;
    assert_eq!(c.map(minority[0]).await.len(), 10);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn majority_partition_stops_writes_everywhere_without_divergence() {
    let c = Cluster::new(5).await;
    c.leader().await;
    c.set(1, "before", "1").await;
    // Every side is a minority: 2 + 2 + 1.
    c.net.partition(&[&[1, 2], &[3, 4], &[5]]);
    // Wait for check_quorum to depose the leader, then every write must fail.
    eventually(WAIT, "no member leads", || async {
        (1..=5).all(|i| c.node(i).status().role != Role::Leader)
    })
    .await;
    for id in 1..=5 {
        let r = c
            .node(id)
            .write(&Cmd::Set("during".into(), id.to_string()))
            .await;
        assert!(
            matches!(
                r,
                Err(Error::NoLeader | Error::Timeout(_) | Error::LeaderChanged { .. })
            ),
            "member {id}: {r:?}"
        );
    }
    c.net.heal();
    c.leader().await;
    c.set(3, "after", "1").await;
    c.converged().await;
    let m = c.map(5).await;
    assert!(m.contains_key("before") && m.contains_key("after"));
    assert!(
        !m.contains_key("during"),
        "a write made without a quorum was applied: {m:?}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_steps_down_and_serves_no_stale_reads() {
    let c = Cluster::new(3).await;
    let old = c.leader().await;
    c.set(old, "x", "old").await;
    let rest: Vec<u64> = (1..=3).filter(|&i| i != old).collect();
    c.net.isolate(old, &[]);
    let new = c.leader_among(&rest).await;
    assert_ne!(new, old);
    c.set(new, "x", "new").await;
    // The old leader must not answer a linearizable read with "old".
    match c
        .node(old)
        .read(ReadConsistency::Linearizable, |m| m.map.get("x").cloned())
        .await
    {
        Ok(v) => assert_eq!(
            v.as_deref(),
            Some("new"),
            "stale read from the deposed leader"
        ),
        Err(e) => assert!(
            matches!(
                e,
                Error::NoLeader | Error::Timeout(_) | Error::LeaderChanged { .. }
            ),
            "{e}"
        ),
    }
    eventually(
        WAIT,
        "the isolated leader steps down (check_quorum)",
        || async { c.node(old).status().role != Role::Leader },
    )
    .await;
    c.net.heal();
    c.converged().await;
    assert_eq!(c.get(old, "x").await.as_deref(), Some("new"));
    c.shutdown().await;
}

/// A write a follower forwarded to a leader that then crashed is lost with it. The caller
/// must hear so as soon as a new leader takes over (the outcome is unknown, as after a
/// timeout), not after the whole request timeout; and the follower, finding the leader's
/// process gone when it forwards, campaigns without waiting out its leader's lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_forwarded_to_a_crashed_leader_fails_fast() {
    let mut c = Cluster::new(3).await;
    let old = c.leader().await;
    c.set(old, "before", "1").await;
    let via = (1..=3).find(|&i| i != old).unwrap();
    let timeout = c.config(via, false).request_timeout;
    c.crash(old).await;
    let t0 = Instant::now();
    let r = c
        .node(via)
        .write(&Cmd::Set("lost".into(), "1".into()))
        .await;
    let took = t0.elapsed();
    assert!(
        matches!(r, Err(Error::LeaderChanged { .. })),
        "expected the leader change to be reported: {r:?} after {took:?}"
    );
    assert!(
        took < timeout,
        "the caller waited {took:?}, the request timeout is {timeout:?}"
    );
    let rest: Vec<u64> = (1..=3).filter(|&i| i != old).collect();
    let new = c.leader_among(&rest).await;
    assert_ne!(new, old);
    c.set(via, "after", "1").await;
    c.start(old, true).await;
    c.converged().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoining_follower_does_not_disrupt_the_leader() {
    let c = Cluster::new(3).await;
    let leader = c.leader().await;
    let f = (1..=3).find(|&i| i != leader).unwrap();
    let term = c.node(leader).status().term;
    c.net.isolate(f, &[]);
    // Long enough for the follower to time out several times (pre-vote keeps its term).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.net.heal();
    c.set(leader, "k", "v").await;
    c.converged().await;
    assert_eq!(
        c.node(leader).status().term,
        term,
        "pre-vote should prevent a new term"
    );
    assert_eq!(c.leader().await, leader);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_message_loss() {
    let c = Cluster::new(3).await;
    c.leader().await;
    c.net.set_drop_rate(0.2, 42);
    let mut acked = Vec::new();
    for i in 0..30 {
        let via = 1 + (i % 3);
        let out = c.set(via, &format!("k{i}"), &i.to_string()).await;
        acked.push((format!("k{i}"), out));
    }
    c.net.heal();
    c.converged().await;
    let m = c.map(2).await;
    for (k, _) in &acked {
        assert!(m.contains_key(k), "acknowledged write {k} lost");
    }
    let (_, dropped) = c.net.counters();
    assert!(dropped > 0);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_members_restart_from_their_data_directory() {
    let mut c = Cluster::new(3).await;
    let leader = c.leader().await;
    for i in 0..5 {
        c.set(leader, &format!("a{i}"), "1").await;
    }
    let f = (1..=3).find(|&i| i != leader).unwrap();
    c.crash(f).await;
    for i in 0..5 {
        c.set(leader, &format!("b{i}"), "1").await;
    }
    c.start(f, true).await;
    c.converged().await;
    assert_eq!(c.map(f).await.len(), 10);
    // Now every member crashes at once, and the cluster comes back with all acked writes.
    for id in 1..=3 {
        c.crash(id).await;
    }
    for id in 1..=3 {
        c.start(id, true).await;
    }
    c.leader().await;
    c.set(1, "c", "1").await;
    c.converged().await;
    assert_eq!(c.map(3).await.len(), 11);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_open_of_a_data_directory_is_refused() {
    let c = Cluster::new(1).await;
    c.leader().await;
    let err = raft_store::Node::open(
        c.config(1, true),
        crate::util::MapMachine::default(),
        c.net.transport(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("locked"), "{err}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_member_commits_and_restarts() {
    let mut c = Cluster::new(1).await;
    c.leader().await;
    for i in 0..20 {
        c.set(1, &format!("k{i}"), "v").await;
    }
    let cas = c
        .write(1, Cmd::Cas("k1".into(), Some("v".into()), "w".into()))
        .await;
    assert!(cas.ok);
    let cas = c
        .write(1, Cmd::Cas("k1".into(), Some("v".into()), "x".into()))
        .await;
    assert!(!cas.ok);
    c.node(1).shutdown().await;
    c.nodes.remove(&1);
    c.start(1, true).await;
    c.leader().await;
    assert_eq!(c.get(1, "k1").await.as_deref(), Some("w"));
    assert_eq!(c.map(1).await.len(), 20);
    c.shutdown().await;
}

/// Proposals queued together go to raft as one: the leader sends one append per follower
/// for all of them, not one per proposal (and gets one acknowledgement back for each), and
/// a follower forwards them to the leader in one message. A single-threaded runtime lets
/// every write queue before the raft loop runs.
#[tokio::test(flavor = "current_thread")]
async fn writes_queued_together_are_replicated_together() {
    let c = Cluster::new(3).await;
    let leader = c.leader().await;
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    c.converged().await;
    for via in [leader, follower] {
        let (before, _) = c.net.counters();
        let writes = (0..300).map(|i| {
            let n = c.node(via).clone();
            async move { n.write(&Cmd::Set(format!("k{i}"), format!("v{via}"))).await }
        });
        for r in futures::future::join_all(writes).await {
            assert!(r.expect("write").1.ok);
        }
        let (after, _) = c.net.counters();
        // Unbatched, 300 writes take at least 600 appends and 600 acknowledgements.
        assert!(
            after - before < 100,
            "300 writes via member {via} took {} messages",
            after - before
        );
    }
    c.converged().await;
    assert_eq!(c.map(follower).await.len(), 300);
    c.shutdown().await;
}

/// A snapshot whose encoding takes several election timeouts (a large state machine) is
/// taken off the raft loop: while the leader encodes, it goes on replicating and committing
/// (the entries are applied once the encoding is done), and it keeps its term. Taken on the
/// loop, it stopped everything, heartbeats included, and the followers elected another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_snapshot_does_not_stop_the_leader() {
    let c = Cluster::with_snapshots(3, 40).await;
    let leader = c.leader().await;
    c.converged().await;
    let term = c.node(leader).status().term;
    // Elections time out after 300-600 ms here; only the leader's snapshots are slow.
    let delay = Duration::from_millis(2000);
    c.node(leader)
        .read(ReadConsistency::Serializable, |m| {
            m.snapshot_delay_ms
                .store(delay.as_millis() as u64, Ordering::Relaxed)
        })
        .await
        .unwrap();
    let in_snapshot = || async {
        c.node(leader)
            .read(ReadConsistency::Serializable, |m| {
                m.in_snapshot.load(Ordering::SeqCst)
            })
            .await
            .unwrap()
    };
    let writes = |keys: std::ops::Range<u32>| {
        let n = c.node(leader).clone();
        tokio::spawn(async move {
            for i in keys {
                n.write(&Cmd::Set(format!("k{i}"), "v".into()))
                    .await
                    .expect("write");
            }
        })
    };
    // Enough writes to reach the snapshot threshold; the last wait for the snapshot.
    let first = writes(0..45);
    eventually(WAIT, "the leader's slow snapshot to start", in_snapshot).await;
    let st = c.node(leader).status();
    let started = Instant::now();
    let more = writes(45..50);
    // While it encodes (for `delay`), the leader commits a new write.
    loop {
        let now = c.node(leader).status();
        if now.commit > st.commit {
            break;
        }
        assert!(
            started.elapsed() < delay * 2 / 3 && in_snapshot().await,
            "the leader committed nothing while encoding its snapshot (commit {}, applied {})",
            now.commit,
            now.applied,
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(in_snapshot().await, "the snapshot ended before the check");
    first.await.unwrap();
    more.await.unwrap();
    eventually(WAIT, "the leader's snapshot saved", || {
        let s = c.node(leader).status().snapshot_index;
        async move { s >= 40 }
    })
    .await;
    for id in 1..=3 {
        let st = c.node(id).status();
        assert_eq!(
            (st.term, st.leader),
            (term, Some(leader)),
            "member {id} saw an election during the leader's snapshot"
        );
    }
    assert_eq!(c.map(leader).await.len(), 50);
    c.shutdown().await;
}
