//! Linearizability: concurrent clients on a few keys while faults are injected; the recorded
//! history goes through `lincheck`, and every acknowledged write must be in the final state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lincheck::{Budget, History, Op, Outcome};
use parking_lot::RwLock;
use raft_store::{Error, ReadConsistency};

use crate::util::{Cluster, Cmd, KvNode};

/// What the client knows about an operation that returned an error.
fn outcome_of_error(e: &Error, read: bool) -> Outcome {
    match e {
        // Refused before anything was proposed (or a read, which changes nothing).
        _ if read => Outcome::NotApplied,
        Error::NoLeader => Outcome::NotApplied,
        // A proposal may have been committed before the answer was lost.
        _ => Outcome::Unknown,
    }
}

async fn client(
    id: u64,
    nodes: Arc<RwLock<Vec<KvNode>>>,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
    acked: Arc<parking_lot::Mutex<Vec<(String, String)>>>,
) {
    let mut i = 0u64;
    let mut seed = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let node = {
            let n = nodes.read();
            n[(rand() % n.len() as u64) as usize].clone()
        };
        let key = format!("k{}", rand() % 5);
        let value = format!("{id}-{i}");
        match rand() % 4 {
            0 => {
                let op = history.invoke(id, Op::get(&key));
                let k = key.clone();
                let r = node
                    .read(ReadConsistency::Linearizable, move |m| {
                        m.map.get(&k).cloned()
                    })
                    .await;
                let out = match r {
                    Ok(v) => Outcome::Value(v),
                    Err(e) => outcome_of_error(&e, true),
                };
                history.ret(op, out).unwrap();
            }
            1 => {
                let op = history.invoke(id, Op::set(&key, &value));
                let out = match node.write(&Cmd::Set(key.clone(), value.clone())).await {
                    Ok(_) => {
                        acked.lock().push((key, value));
                        Outcome::Ok
                    }
                    Err(e) => outcome_of_error(&e, false),
                };
                history.ret(op, out).unwrap();
            }
            2 => {
                // Compare against a value some client may have written.
                let expect = format!("{}-{}", 1 + rand() % 3, i.saturating_sub(rand() % 3));
                let op = history.invoke(id, Op::cas(&key, &expect, &value));
                let out = match node.write(&Cmd::Cas(key, Some(expect), value)).await {
                    Ok((_, o)) if o.ok => Outcome::Ok,
                    Ok(_) => Outcome::Failed,
                    Err(e) => outcome_of_error(&e, false),
                };
                history.ret(op, out).unwrap();
            }
            _ => {
                let op = history.invoke(id, Op::delete(&key));
                let out = match node.write(&Cmd::Delete(key)).await {
                    Ok((_, o)) if o.ok => Outcome::Ok,
                    Ok(_) => Outcome::Failed,
                    Err(e) => outcome_of_error(&e, false),
                };
                history.ret(op, out).unwrap();
            }
        }
        // Keeps histories near 200 operations per key, which the checker handles quickly.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_under_faults_are_linearizable() {
    let mut c = Cluster::new(3).await;
    c.leader().await;
    let nodes = Arc::new(RwLock::new(c.nodes.values().cloned().collect::<Vec<_>>()));
    let history = Arc::new(History::new());
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let clients: Vec<_> = (1..=4)
        .map(|id| {
            tokio::spawn(client(
                id,
                nodes.clone(),
                history.clone(),
                stop.clone(),
                acked.clone(),
            ))
        })
        .collect();
    let pause = || tokio::time::sleep(Duration::from_millis(700));
    pause().await;
    // The leader is cut off: it must step down; its side must not serve stale reads.
    let leader = c.leader().await;
    c.net.isolate(leader, &[]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.net.heal();
    pause().await;
    // Lossy network.
    c.net.set_drop_rate(0.15, 7);
    pause().await;
    c.net.heal();
    // A member crashes and restarts from its data directory.
    let victim = c.leader().await % 3 + 1;
    c.crash(victim).await;
    pause().await;
    c.start(victim, true).await;
    *nodes.write() = c.nodes.values().cloned().collect();
    pause().await;
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.await.unwrap();
    }
    let started = std::time::Instant::now();
    let verdict = lincheck::check(&history, Budget::time(Duration::from_secs(60)));
    assert!(
        verdict.is_linearizable(),
        "{verdict}\n{}",
        history.to_text()
    );
    let ops = history.ops();
    let count = |f: fn(&Outcome) -> bool| ops.iter().filter(|r| f(r.outcome())).count();
    let reads = count(|o| matches!(o, Outcome::Value(_)));
    let writes = count(|o| matches!(o, Outcome::Ok | Outcome::Failed));
    eprintln!(
        "{} operations ({reads} reads and {writes} writes answered), checked in {:?}",
        ops.len(),
        started.elapsed()
    );
    assert!(
        reads >= 20 && writes >= 20,
        "too few answered operations to mean anything"
    );
    // Every acknowledged set was applied: it is either the final value or was overwritten
    // by a later event (the machine's history shows it).
    c.converged().await;
    let events = c
        .node(1)
        .read(ReadConsistency::Serializable, |m| m.index)
        .await
        .unwrap();
    assert!(
        events as usize >= acked.lock().len(),
        "fewer events than acknowledged writes"
    );
    c.shutdown().await;
}
