//! raft-store figures: committed writes/s through the embedding API (64 writers, 256-byte
//! values) on 1 member and on 3 members in 3 processes over loopback gRPC, linearizable
//! reads/s on 3 members, and failover time (the leader's process killed with SIGKILL -> next
//! successful write), with the disk's own fsync rate measured in the same run beside them.
//!
//! ```text
//! cargo bench --workspace --bench throughput -- [disk] [single] [cluster] [failover]
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

/// The peer listeners and member list of a 3-member cluster on loopback.
async fn three_members()
-> Result<(Vec<tokio::net::TcpListener>, Vec<Member>), Box<dyn std::error::Error>> {
    let mut listeners = Vec::new();
    let mut members = Vec::new();
    for id in 1..=3u64 {
        let (l, url) = raft_store::grpc::bind("127.0.0.1:0".parse()?).await?;
        let mut m = Member::new(id, format!("m{id}"));
        m.peer_urls.push(url);
        members.push(m);
        listeners.push(l);
    }
    Ok((listeners, members))
}

/// Starts member `id` in a child process of this binary (`member` mode); it runs until its
/// stdin closes or it is killed.
fn spawn_member(
    id: u64,
    root: &std::path::Path,
    members: &[Member],
) -> Result<std::process::Child, Box<dyn std::error::Error>> {
    let urls: Vec<&str> = members.iter().map(|m| m.peer_urls[0].as_str()).collect();
    Ok(std::process::Command::new(std::env::current_exe()?)
        .arg("member")
        .arg(id.to_string())
        .arg(root.join(format!("m{id}")))
        .arg(urls.join(","))
        .stdin(std::process::Stdio::piped())
        .spawn()?)
}

/// A member of a 3-member cluster serving its peer port: member 1 in the bench process,
/// or a child process's member.
struct Local {
    node: Node<Map>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Local {
    /// Opens member `id` in `dir` and serves its peer port on `listener`.
    async fn start(
        id: u64,
        dir: &std::path::Path,
        members: &[Member],
        listener: tokio::net::TcpListener,
    ) -> Result<Local, Box<dyn std::error::Error>> {
        let transport = GrpcTransport::new(7);
        let node = Node::open(config(id, dir, members), Map::default(), transport.clone()).await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            transport
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Local { node, stop, server })
    }

    /// Member 1 in `root/m1`, once the cluster commits.
    async fn open(
        root: &std::path::Path,
        members: &[Member],
        listener: tokio::net::TcpListener,
    ) -> Result<Local, Box<dyn std::error::Error>> {
        let local = Local::start(1, &root.join("m1"), members, listener).await?;
        let node = &local.node;
        // Wait until the cluster commits.
        let deadline = Instant::now() + Duration::from_secs(60);
        while node.write(&("warmup".into(), "x".into())).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "3-member cluster never committed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(local)
    }

    /// Makes `to` the leader (raft hands over once `to` is caught up).
    async fn lead(&self, to: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.node.status().leader != Some(to) {
            let _ = self.node.transfer_leader(to).await;
            assert!(
                Instant::now() < deadline,
                "leadership never moved to member {to}"
            );
        }
    }

    async fn close(self) {
        self.node.shutdown().await;
        let _ = self.stop.send(());
        // Graceful shutdown waits for peers' streams to close; do not let a peer that is
        // still up hold the benchmark forever.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
    }
}

/// Three members in three processes: member 1 runs here with the clients, members 2 and 3
/// in child processes of this binary. Member 1 leads while the clients run.
async fn cluster(p: &Params) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (mut listeners, members) = three_members().await?;
    // Members 2 and 3 bind their ports again in the children once ours are closed.
    let listener = listeners.remove(0);
    drop(listeners);
    let mut children = Vec::new();
    for id in 2..=3u64 {
        children.push(spawn_member(id, dir.path(), &members)?);
    }
    let local = Local::open(dir.path(), &members, listener).await?;
    local.lead(1).await;
    println!("3 members in 3 processes, member 1 leads, clients on member 1");
    let value = "v".repeat(p.value);
    let n = local.node.clone();
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
    let n = local.node.clone();
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
    let n = local.node.clone();
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
    local.close().await;
    for mut c in children {
        drop(c.stdin.take());
        let _ = c.wait();
    }
    Ok(())
}

/// Child-process mode for [`cluster`] and [`failover`]: runs one member until stdin closes.
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
    // A killed predecessor's port may still be held for a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let local = Local::start(id, std::path::Path::new(dir), &members, listener).await?;
    // Block (off the runtime) until the parent closes our stdin.
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    })
    .await?;
    local.close().await;
    Ok(())
}

/// Failover as a crash really happens: three members in three processes (member 1 here,
/// 2 and 3 in children). Each round hands leadership to a child, kills that child with
/// SIGKILL, and times from the kill to the next write that succeeds through member 1
/// (retrying at once on every error); then restarts the child from its data directory.
async fn failover(p: &Params) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (mut listeners, members) = three_members().await?;
    let listener = listeners.remove(0);
    drop(listeners);
    let mut children = BTreeMap::new();
    for id in 2..=3u64 {
        children.insert(id, spawn_member(id, dir.path(), &members)?);
    }
    let local = Local::open(dir.path(), &members, listener).await?;
    let mut times = Vec::new();
    for round in 0..p.failovers {
        let victim = 2 + round as u64 % 2;
        // The other child may have just restarted: handing it leadership first proves it
        // is up and caught up, so the kill below takes one member of three, not two.
        local.lead(5 - victim).await;
        local.lead(victim).await;
        // The new leader commits an entry of its own term before it is killed.
        while local
            .node
            .write(&("before".into(), round.to_string()))
            .await
            .is_err()
        {}
        let mut child = children.remove(&victim).ok_or("victim not running")?;
        let t0 = Instant::now();
        // What member 1 went through, for the report: (ms after the kill, term, role).
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let watcher = {
            let (node, seen) = (local.node.clone(), seen.clone());
            tokio::spawn(async move {
                loop {
                    let s = node.status();
                    let now = (t0.elapsed().as_millis(), s.term, s.role);
                    {
                        let mut v = seen.lock();
                        if v.last()
                            .is_none_or(|l: &(u128, u64, Role)| (l.1, l.2) != (now.1, now.2))
                        {
                            v.push(now);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        child.kill()?;
        let _ = child.wait();
        let deadline = t0 + Duration::from_secs(30);
        let mut failed = 0;
        while local
            .node
            .write(&("after".into(), round.to_string()))
            .await
            .is_err()
        {
            failed += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
            assert!(
                Instant::now() < deadline,
                "no write succeeded after killing the leader"
            );
        }
        let took = t0.elapsed();
        watcher.abort();
        times.push(took);
        println!(
            "failover {round}: killed member {victim} (leader), next write after {:.0} ms ({failed} failed attempts), new leader {:?}; member 1 (ms, term, role): {:?}",
            took.as_secs_f64() * 1e3,
            local.node.status().leader,
            seen.lock(),
        );
        children.insert(victim, spawn_member(victim, dir.path(), &members)?);
    }
    times.sort_unstable();
    let c = Config::new(1, "");
    println!(
        "failover over {} kills: median {:.0} ms, worst {:.0} ms (election timeout {} ms, randomized up to 2x)",
        times.len(),
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        times.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        c.tick_interval.as_millis() * c.election_ticks as u128,
    );
    local.close().await;
    for mut c in children.into_values() {
        drop(c.stdin.take());
        let _ = c.wait();
    }
    Ok(())
}

/// The disk's own pace, measured in the same run: 256-byte records appended to a file and
/// made durable one at a time (`fdatasync` after each), by one writer. Committed writes
/// above this rate come from batching many writes into one sync (group commit).
fn disk_baseline(p: &Params) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Write;
    let dir = tempfile::tempdir()?;
    let mut f = std::fs::File::create(dir.path().join("log"))?;
    let record = vec![b'r'; p.value];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < p.secs.min(3.0) {
        f.write_all(&record)?;
        f.sync_data()?;
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "disk baseline: {:.0} fdatasync'd {}-byte appends/s, one writer ({n} in {secs:.1} s)",
        n as f64 / secs,
        p.value
    );
    // How the disk serves several flushes at once: writers appending to one file, each
    // fdatasync'ing after every record it appends (what a log flushed by several threads
    // would ask of it; see docs/perf-log/2026-12-06-overlapping-flush-wal.md for why raft-store does not do that).
    for threads in [1usize, 2, 4] {
        let path = dir.path().join(format!("append-{threads}"));
        let file = Arc::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?,
        );
        let secs = p.secs.min(3.0);
        let start = Instant::now();
        let counts: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let (file, record) = (file.clone(), &record);
                    s.spawn(move || {
                        let mut n = 0u64;
                        while start.elapsed().as_secs_f64() < secs {
                            if (&*file).write_all(record).is_err() || file.sync_data().is_err() {
                                break;
                            }
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
        });
        let secs = start.elapsed().as_secs_f64();
        let total: u64 = counts.iter().sum();
        println!(
            "disk append: {threads} writer(s) on one file: {:.0} fdatasyncs/s in all, {:.2} ms each",
            total as f64 / secs,
            secs * 1000.0 * threads as f64 / total.max(1) as f64
        );
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    if args.first().map(String::as_str) == Some("member") {
        return member(&args[1..]).await;
    }
    let quick = args.iter().any(|a| a == "--test");
    let mut modes: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| matches!(*a, "disk" | "single" | "cluster" | "failover"))
        .collect();
    if modes.is_empty() {
        modes = vec!["disk", "single", "cluster", "failover"];
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
            "disk" => disk_baseline(&p)?,
            "single" => single(&p).await?,
            "cluster" => cluster(&p).await?,
            _ => failover(&p).await?,
        }
    }
    Ok(())
}
