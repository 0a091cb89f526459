//! Membership changes, leader transfer and catch-up by snapshot.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use raft_store::Member;

use crate::util::{Cluster, WAIT, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_added_promoted_and_old_member_removed_under_load() {
    let mut c = Cluster::new(3).await;
    let leader = c.leader().await;
    // Background writers keep proposing through the whole change.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..3u64 {
        let node = c.node(1 + w).clone();
        let (stop, acked) = (stop.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut keys = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let k = format!("w{w}-{i}");
                if node
                    .write(&crate::util::Cmd::Set(k.clone(), "v".into()))
                    .await
                    .is_ok()
                {
                    keys.push(k);
                    acked.fetch_add(1, Ordering::Relaxed);
                } else {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                i += 1;
            }
            keys
        }));
    }
    let mut m4 = Member::new(4, "m4");
    m4.is_learner = true;
    m4.peer_urls = vec!["mem://4".into()];
    c.node(leader).add_member(m4).await.unwrap();
    c.start(4, false).await;
    eventually(WAIT, "the learner catches up", || async {
        c.node(4).status().applied >= c.node(leader).status().commit.saturating_sub(5)
            && c.node(4).members().len() == 4
    })
    .await;
    assert!(
        c.node(4)
            .members()
            .iter()
            .any(|m| m.id == 4 && m.is_learner)
    );
    c.node(2).promote_member(4).await.unwrap();
    eventually(WAIT, "member 4 is a voter everywhere", || async {
        (1..=4).all(|i| {
            c.node(i)
                .members()
                .iter()
                .any(|m| m.id == 4 && !m.is_learner)
        })
    })
    .await;
    // Remove a member that is not the one we talk to.
    let victim = (1..=3).find(|&i| i != leader).unwrap();
    c.node(leader).remove_member(victim).await.unwrap();
    eventually(WAIT, "the removed member stops", || async {
        c.node(victim).status().stopped
    })
    .await;
    c.nodes.remove(&victim);
    stop.store(true, Ordering::Relaxed);
    let mut keys = Vec::new();
    for w in writers {
        keys.extend(w.await.unwrap());
    }
    assert!(acked.load(Ordering::Relaxed) > 0);
    c.converged().await;
    let remaining: Vec<u64> = c.nodes.keys().copied().collect();
    for id in &remaining {
        let members: Vec<u64> = c.node(*id).members().iter().map(|m| m.id).collect();
        assert!(
            !members.contains(&victim) && members.contains(&4),
            "{id}: {members:?}"
        );
    }
    let map = c.map(4).await;
    for k in &keys {
        assert!(map.contains_key(k), "acknowledged {k} lost");
    }
    c.set(4, "after", "1").await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_member_catches_up_by_snapshot() {
    let mut c = Cluster::with_snapshots(3, 20).await;
    let leader = c.leader().await;
    let lagger = (1..=3).find(|&i| i != leader).unwrap();
    c.crash(lagger).await;
    for i in 0..60 {
        c.set(leader, &format!("k{i}"), "v").await;
    }
    let st = c.node(leader).status();
    assert!(
        st.snapshot_index >= 40 && st.first_index > 1,
        "leader compacted: {st:?}"
    );
    c.start(lagger, true).await;
    c.converged().await;
    let st = c.node(lagger).status();
    assert!(st.snapshot_index > 0, "caught up by snapshot: {st:?}");
    assert_eq!(c.map(lagger).await.len(), 60);
    // And it restarts from its own snapshot.
    c.restart(lagger).await;
    c.converged().await;
    assert_eq!(c.map(lagger).await.len(), 60);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_transfers_on_request() {
    let c = Cluster::new(3).await;
    let leader = c.leader().await;
    let before = c.node(leader).status().leader_since.expect("leader_since");
    let target = (1..=3).find(|&i| i != leader).unwrap();
    c.node(leader).transfer_leader(target).await.unwrap();
    assert_eq!(c.leader().await, target);
    // Every member notes when it saw the new leader take over.
    for id in 1..=3 {
        let since = c.node(id).status().leader_since.expect("leader_since");
        assert!(since >= before, "member {id}: {since:?} < {before:?}");
    }
    c.set(leader, "k", "v").await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_peer_urls_are_updated_everywhere() {
    let mut c = Cluster::new(3).await;
    c.leader().await;
    let mut two = c.node(1).members().into_iter().find(|m| m.id == 2).unwrap();
    two.peer_urls = vec!["http://10.0.0.2:2380".into()];
    // Through a follower or the leader alike.
    c.node(3)
        .update_member(2, two.peer_urls.clone())
        .await
        .unwrap();
    eventually(WAIT, "every member lists the new URL", || {
        let ok = (1..=3).all(|i| c.node(i).members().contains(&two));
        async move { ok }
    })
    .await;
    // The change is in the log: it survives a restart, and writes go on.
    c.restart(1).await;
    c.converged().await;
    assert!(c.node(1).members().contains(&two));
    c.set(1, "after", "1").await;
    assert!(c.node(1).update_member(9, Vec::new()).await.is_err());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_errors_are_reported() {
    let c = Cluster::new(3).await;
    c.leader().await;
    let err = c
        .node(1)
        .add_member(Member::new(2, "dup"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    assert!(c.node(1).promote_member(2).await.is_err());
    assert!(c.node(1).remove_member(9).await.is_err());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_bootstrapped_from_a_restored_state_hands_it_to_later_members() {
    use raft_store::{Node, StateMachine};

    use crate::util::{Cmd, MapMachine};

    // An empty cluster definition: members are opened by hand with a pre-filled machine.
    let mut c = Cluster::with_ids(&[], 10_000).await;
    c.initial = (1..=2).map(|i| Member::new(i, format!("m{i}"))).collect();
    for id in 1..=2u64 {
        c.dirs.insert(id, tempfile::tempdir().unwrap());
        let mut machine = MapMachine::default();
        machine.apply(1, Cmd::Set("restored".into(), "yes".into()));
        let mut cfg = c.config(id, true);
        cfg.bootstrap_from_machine = true;
        let node = Node::open(cfg, machine, c.net.transport()).await.unwrap();
        c.nodes.insert(id, node);
    }
    let leader = c.leader().await;
    assert_eq!(c.get(leader, "restored").await.as_deref(), Some("yes"));
    c.set(leader, "after", "1").await;
    // The log starts after the restored state, so a new member must receive a snapshot.
    assert!(c.node(leader).status().first_index > 1);
    let mut m3 = Member::new(3, "m3");
    m3.peer_urls = vec!["mem://3".into()];
    c.node(leader).add_member(m3).await.unwrap();
    c.start(3, false).await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let m = c.map(3).await;
        if m.get("restored").map(String::as_str) == Some("yes")
            && m.get("after").map(String::as_str) == Some("1")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new member never got the restored state: {m:?}; new member {:?}; leader {:?}",
            c.node(3).status(),
            c.node(leader).status()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Restarting a seeded member does not seed it again (its directory is not fresh).
    c.restart(1).await;
    c.converged().await;
    c.shutdown().await;
}
