//! Crash-and-restart checks at the persist, apply and snapshot boundaries (feature
//! `failpoints`). A failpoint set to `return(<id>)` stops that member right there, as if its
//! process died; the member is then restarted from its data directory and must rejoin with
//! every acknowledged write.
//!
//! Failpoints are global to the process, so these tests use member ids no other test uses
//! and run one at a time.

use crate::util::{Cluster, WAIT};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Crashes member `victim` of a fresh cluster at failpoint `name` while writes flow, restarts
/// it, and checks convergence and that no acknowledged write was lost.
async fn crash_at(name: &str, ids: [u64; 3], victim: u64, snapshot_entries: u64) {
    let _one = SERIAL.lock().await;
    let mut c = Cluster::with_ids(&ids, snapshot_entries).await;
    let leader = c.leader().await;
    let mut acked = Vec::new();
    for i in 0..5 {
        c.set(leader, &format!("a{i}"), "1").await;
        acked.push(format!("a{i}"));
    }
    let fp = format!("raft_store::{name}");
    fail::cfg(&fp, &format!("return({victim})")).unwrap();
    // Write until the victim trips over the failpoint.
    let deadline = std::time::Instant::now() + WAIT;
    let via = ids.iter().copied().find(|&id| id != victim).unwrap();
    for i in 0.. {
        if c.node(victim).status().stopped {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}: the failpoint never fired"
        );
        let key = format!("b{i}");
        if let Ok((_, o)) = c
            .node(via)
            .write(&crate::util::Cmd::Set(key.clone(), "1".into()))
            .await
        {
            assert!(o.ok);
            acked.push(key);
        }
    }
    fail::remove(&fp);
    let failure = c.node(victim).failure().unwrap_or_default();
    assert!(failure.contains(name), "{failure}");
    c.crash(victim).await;
    // The others go on (a 3-member cluster survives one crash) ...
    let others: Vec<u64> = ids.iter().copied().filter(|&x| x != victim).collect();
    c.leader_among(&others).await;
    c.set(others[0], "during", "1").await;
    acked.push("during".into());
    // ... and the victim comes back from its directory.
    c.start(victim, true).await;
    c.converged().await;
    let map = c.map(victim).await;
    for k in &acked {
        assert!(map.contains_key(k), "{name}: acknowledged {k} lost");
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_persist() {
    crash_at("before_persist", [101, 102, 103], 101, 10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_persist() {
    crash_at("after_persist", [111, 112, 113], 112, 10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_apply() {
    crash_at("before_apply", [121, 122, 123], 123, 10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_apply() {
    crash_at("after_apply", [131, 132, 133], 131, 10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_while_taking_a_snapshot() {
    crash_at("before_snapshot", [141, 142, 143], 142, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_taking_a_snapshot() {
    crash_at("after_snapshot", [151, 152, 153], 153, 8).await;
}
