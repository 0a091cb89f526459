//! raft-store figures: committed writes/s through the embedding API (64 writers, 256-byte
//! values) on 1 member and on 3 members in 3 processes over loopback gRPC, linearizable
//! reads/s on 3 members, and failover time (leader killed -> next successful write).
//!
//! ```text
//! cargo bench -p raft-store --bench throughput -- [single] [cluster] [failover]
//! ```
//! Environment: `BENCH_SECS` (per measurement, default 5), `BENCH_WRITERS` (64),
//! `BENCH_VALUE` (256 bytes), `BENCH_FAILOVERS` (20). With `--test` (as `cargo bench --
//! --test` passes) every mode runs once at a tiny size, to keep the binary working in CI.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use raft_store::{Config, GrpcTransport, Member, Node, ReadConsistency, Role, StateMachine};

/// The benchmark's state machine: a plain map (kv-core's costs are measured in kv-core).
#[derive(Default)]
struct Map(BTreeMap<String, String>);

impl StateMachine for Map {
    type Command = (String, String);
    type Output = ();
    fn apply(&mut self, _index: u64, (k, v): (String, String)) {
        self.0.insert(k, v);
    }
    fn snapshot(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer(w, &self.0).map_err(std::io::Error::other)
    }
    fn restore(&mut self, r: &mut dyn std::io::Read) -> Result<(), String> {
        self.0 = serde_json::from_reader(r).map_err(|e| e.to_string())?;
        Ok(())
    }
}

struct Params {
    secs: f64,
    writers: usize,
    value: usize,
    failovers: usize,
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(id: u64, dir: &std::path::Path, members: &[Member]) -> Config {
    let mut c = Config::new(id, dir);
    c.initial_members = members.to_vec();
    c.snapshot_entries = 100_000;
    c.catchup_entries = 10_000;
    c
}

async fn wait_leader(nodes: &[&Node<Map>]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for n in nodes {
            let s = n.status();
            if s.role == Role::Leader {
                return s.id;
            }
        }
        assert!(Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs `workers` loops of `op` for `secs`; prints ops/s, p50 and p99.
async fn drive<F, Fut>(label: &str, workers: usize, secs: f64, op: F)
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (op, stop) = (op.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if op(w, i).await {
                    lat.push(t.elapsed());
                } else {
                    errors += 1;
                }
                i += 1;
                // An op that never awaits a tokio resource (a serializable read) would
                // otherwise never yield: the workers would spin without parking, the timer
                // would never fire, and the measurement would never end.
                tokio::task::consume_budget().await;
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    println!(
        "{label}: {:.0} ops/s ({} ops in {elapsed:.1} s, {errors} errors), p50 {:.2} ms, p99 {:.2} ms",
        all.len() as f64 / elapsed,
        all.len(),
        percentile(&all, 0.50).as_secs_f64() * 1e3,
        percentile(&all, 0.99).as_secs_f64() * 1e3,
    );
}

async fn single(p: &Params) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let members = vec![Member::new(1, "one")];
    let node = Node::open(
        config(1, dir.path(), &members),
        Map::default(),
        GrpcTransport::new(1),
    )
    .await?;
    wait_leader(&[&node]).await;
    let value = "v".repeat(p.value);
    let n = node.clone();
    drive(
        &format!("1 member, put, {} writers", p.writers),
        p.writers,
        p.secs,
        move |w, i| {
            let n = n.clone();
            let cmd = (format!("k{w}-{}", i % 1000), value.clone());
            async move { n.write(&cmd).await.is_ok() }
        },
    )
    .await;
    node.shutdown().await;
    Ok(())
}

/// Three members: this process runs member 1 and the clients; members 2 and 3 run in child
/// processes of this binary (`member` mode) and exit when their stdin closes.
async fn cluster(p: &Params) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut listeners = Vec::new();
    let mut members = Vec::new();
    for id in 1..=3u64 {
        let (l, url) = raft_store::grpc::bind("127.0.0.1:0".parse()?).await?;
        let mut m = Member::new(id, format!("m{id}"));
        m.peer_urls.push(url);
        members.push(m);
        listeners.push(l);
    }
    let urls: Vec<String> = members.iter().map(|m| m.peer_urls[0].clone()).collect();
    // Members 2 and 3 bind their ports again in the children once ours are closed.
    let listener = listeners.remove(0);
    drop(listeners);
    let mut children = Vec::new();
    for id in 2..=3u64 {
        let child = std::process::Command::new(std::env::current_exe()?)
            .arg("member")
            .arg(id.to_string())
            .arg(dir.path().join(format!("m{id}")))
            .arg(urls.join(","))
            .stdin(std::process::Stdio::piped())
            .spawn()?;
        children.push(child);
    }
    let transport = GrpcTransport::new(7);
    let node = Node::open(
        config(1, &dir.path().join("m1"), &members),
        Map::default(),
        transport.clone(),
    )
    .await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        transport
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
    });
    // Wait until the cluster commits.
    let deadline = Instant::now() + Duration::from_secs(60);
    while node.write(&("warmup".into(), "x".into())).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "3-member cluster never committed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leader = node.status().leader;
    println!("3 members in 3 processes, leader {leader:?}, writing via member 1");
    let value = "v".repeat(p.value);
    let n = node.clone();
    drive(
        &format!("3 members, put, {} writers", p.writers),
        p.writers,
        p.secs,
        move |w, i| {
            let n = n.clone();
            let cmd = (format!("k{w}-{}", i % 1000), value.clone());
            async move { n.write(&cmd).await.is_ok() }
        },
    )
    .await;
    let n = node.clone();
    drive(
        &format!("3 members, linearizable get, {} readers", p.writers),
        p.writers,
        p.secs,
        move |w, _| {
            let n = n.clone();
            let key = format!("k{w}-0");
            async move {
                n.read(ReadConsistency::Linearizable, move |m| {
                    m.0.get(&key).map(String::len)
                })
                .await
                .is_ok()
            }
        },
    )
    .await;
    let n = node.clone();
    drive(
        &format!("3 members, serializable get, {} readers", p.writers),
        p.writers,
        p.secs,
        move |w, _| {
            let n = n.clone();
            let key = format!("k{w}-0");
            async move {
                n.read(ReadConsistency::Serializable, move |m| {
                    m.0.get(&key).map(String::len)
                })
                .await
                .is_ok()
            }
        },
    )
    .await;
    node.shutdown().await;
    let _ = stop.send(());
    // Graceful shutdown waits for peers' streams to close; do not let a peer that is still
    // up hold the benchmark forever.
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    for mut c in children {
        drop(c.stdin.take());
        let _ = c.wait();
    }
    Ok(())
}

/// Child-process mode for [`cluster`]: runs one member until stdin closes.
async fn member(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let id: u64 = args.first().ok_or("member: id")?.parse()?;
    let dir = args.get(1).ok_or("member: dir")?;
    let urls: Vec<&str> = args.get(2).ok_or("member: urls")?.split(',').collect();
    let members: Vec<Member> = urls
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let mut m = Member::new(i as u64 + 1, format!("m{}", i + 1));
            m.peer_urls.push((*u).to_string());
            m
        })
        .collect();
    let addr: std::net::SocketAddr = urls[id as usize - 1]
        .trim_start_matches("http://")
        .parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let transport = GrpcTransport::new(7);
    let node = Node::open(
        config(id, std::path::Path::new(dir), &members),
        Map::default(),
        transport.clone(),
    )
    .await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        transport
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
    });
    // Block (off the runtime) until the parent closes our stdin.
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    })
    .await?;
    node.shutdown().await;
    let _ = stop.send(());
    // Graceful shutdown waits for peers' streams to close; do not let a peer that is still
    // up hold the benchmark forever.
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(())
}

struct Running {
    node: Node<Map>,
    stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_member(
    id: u64,
    dir: &std::path::Path,
    members: &[Member],
) -> Result<Running, Box<dyn std::error::Error>> {
    let addr: std::net::SocketAddr = members[id as usize - 1].peer_urls[0]
        .trim_start_matches("http://")
        .parse()?;
    // The previous incarnation's socket may linger briefly.
    let deadline = Instant::now() + Duration::from_secs(10);
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let transport = GrpcTransport::new(9);
    let node = Node::open(config(id, dir, members), Map::default(), transport.clone()).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        transport
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok(Running { node, stop })
}

/// Kills the leader (its raft loop is aborted and its peer port closed, as a SIGKILL would)
/// and times the next successful write through another member; restarts it; repeats.
async fn failover(p: &Params) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut members = Vec::new();
    for id in 1..=3u64 {
        let (l, url) = raft_store::grpc::bind("127.0.0.1:0".parse()?).await?;
        drop(l);
        let mut m = Member::new(id, format!("m{id}"));
        m.peer_urls.push(url);
        members.push(m);
    }
    let mut running: BTreeMap<u64, Running> = BTreeMap::new();
    for id in 1..=3u64 {
        running.insert(
            id,
            start_member(id, &dir.path().join(format!("m{id}")), &members).await?,
        );
    }
    let mut times = Vec::new();
    for round in 0..p.failovers {
        let nodes: Vec<&Node<Map>> = running.values().map(|r| &r.node).collect();
        let leader = wait_leader(&nodes).await;
        // Make sure every member is caught up before the kill.
        let any = running[&leader].node.clone();
        while any
            .write(&("before".into(), round.to_string()))
            .await
            .is_err()
        {}
        let victim = running.remove(&leader).ok_or("leader vanished")?;
        let t0 = Instant::now();
        victim.node.crash().await;
        let _ = victim.stop.send(());
        let survivor = running.values().next().ok_or("no survivor")?.node.clone();
        let deadline = t0 + Duration::from_secs(30);
        loop {
            if survivor
                .write(&("after".into(), round.to_string()))
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no write succeeded after killing the leader"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = t0.elapsed();
        times.push(took);
        println!(
            "failover {round}: killed {leader}, next write after {:.0} ms",
            took.as_secs_f64() * 1e3
        );
        running.insert(
            leader,
            start_member(leader, &dir.path().join(format!("m{leader}")), &members).await?,
        );
    }
    times.sort_unstable();
    println!(
        "failover over {} kills: median {:.0} ms, worst {:.0} ms (election timeout {} ms, randomized up to 2x)",
        times.len(),
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        times.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        Config::new(1, "").tick_interval.as_millis() * Config::new(1, "").election_ticks as u128,
    );
    for r in running.into_values() {
        r.node.shutdown().await;
        let _ = r.stop.send(());
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("member") {
        return member(&args[1..]).await;
    }
    let quick = args.iter().any(|a| a == "--test");
    let mut modes: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| matches!(*a, "single" | "cluster" | "failover"))
        .collect();
    if modes.is_empty() {
        modes = vec!["single", "cluster", "failover"];
    }
    let p = if quick {
        Params {
            secs: 0.3,
            writers: 4,
            value: 256,
            failovers: 1,
        }
    } else {
        Params {
            secs: env("BENCH_SECS", 5.0),
            writers: env("BENCH_WRITERS", 64),
            value: env("BENCH_VALUE", 256),
            failovers: env("BENCH_FAILOVERS", 20),
        }
    };
    for m in modes {
        match m {
            "single" => single(&p).await?,
            "cluster" => cluster(&p).await?,
            _ => failover(&p).await?,
        }
    }
    Ok(())
}
