//! kvbench: a v2 HTTP load generator that drives kvd and etcd in the same run.
//!
//! Workloads: puts of fixed-size values over a keyspace, gets and quorum gets of keys from
//! that keyspace (preloaded first), each at several connection counts. Every (workload,
//! connections) cell is run on both targets in alternating order, for several rounds; the
//! report gives ops/s, p50 and p99 per target (median over rounds) and the kvd/etcd ratio.
//!
//! The measured requests go through a minimal HTTP/1.1 keep-alive client (one connection per
//! task, see `bench_http`), the same for both targets, so the load generator's own CPU
//! (which shares the machine's cores with the servers) stays small beside theirs.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;

/// kvbench's options.
#[derive(Debug, Clone, Args)]
pub struct BenchConfig {
    /// kvd client URL(s), comma-separated; when absent, kvbench starts kvd itself.
    #[arg(long)]
    pub kvd_url: Option<String>,
    /// etcd client URL(s), comma-separated; when absent, kvbench starts `etcd --enable-v2`
    /// itself.
    #[arg(long)]
    pub etcd_url: Option<String>,
    /// The kvd binary to start (default: `kvd` next to this executable).
    #[arg(long)]
    pub kvd_bin: Option<PathBuf>,
    /// Process ids of the servers behind `--kvd-url`, comma-separated: kvbench then reports
    /// their CPU time per operation, as it does for servers it starts. With two kvd builds
    /// behind `--kvd-url` and `--etcd-url`, a same-run A/B of their CPU per operation.
    #[arg(long, value_delimiter = ',', requires = "kvd_url")]
    pub kvd_pids: Vec<u32>,
    /// Process ids of the servers behind `--etcd-url` (see `--kvd-pids`).
    #[arg(long, value_delimiter = ',', requires = "etcd_url")]
    pub etcd_pids: Vec<u32>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Rounds (each target measured once per round, in alternating order).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Connection counts.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub conns: Vec<usize>,
    /// Workloads: `put`, `get`, `qget`.
    #[arg(long, value_delimiter = ',', default_value = "put,get,qget")]
    pub ops: Vec<String>,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Members of each cluster kvbench starts itself (kvd and etcd alike). Connections are
    /// spread over the members round-robin, as etcd's clients balance.
    #[arg(long, default_value_t = 1)]
    pub members: usize,
    /// Report each started server's resident memory (VmRSS, summed over its members) after
    /// the preload, e.g. with `--keys 1000000 --ops ''` for the memory comparison.
    #[arg(long)]
    pub rss: bool,
    /// API: `http` (v2 for both) or `grpc` (kvd's kv.v1, etcd's v3; see `bench_grpc`).
    #[arg(long, default_value = "http", value_parser = ["http", "grpc"])]
    pub api: String,
}

/// One measurement.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Completed operations per second.
    pub ops_per_sec: f64,
    /// Median latency in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency in milliseconds.
    pub p99_ms: f64,
    /// Failed requests.
    pub errors: u64,
    /// CPU time (user + system, all threads) the target's processes spent per completed
    /// operation, in microseconds; known only for servers kvbench started itself.
    pub cpu_us_per_op: Option<f64>,
}

/// A server kvbench started; killed by PID and its data removed on drop.
struct Spawned {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1, never one handed out before in this process (the kernel may
/// give a released port again at once, e.g. as a member's client and peer port). The
/// caller's server binds it right after; another process may still take it first.
///
/// # Errors
/// Binding a probe socket on 127.0.0.1 fails.
pub fn free_port() -> anyhow::Result<u16> {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return Ok(port);
        }
    }
}

/// A server that exited before it answered `/health` (e.g. its port was taken between
/// [`free_port`] and its bind).
#[derive(Debug, thiserror::Error)]
#[error("server at {url} exited during start-up: {status}")]
struct ExitedDuringStartup {
    url: String,
    status: std::process::ExitStatus,
}

async fn wait_healthy(url: &str, child: &mut Child) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = child.try_wait()? {
            return Err(ExitedDuringStartup {
                url: url.to_owned(),
                status: s,
            }
            .into());
        }
        if http
            .get(format!("{url}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("server at {url} not healthy within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a cluster of `members` processes of `program` (kvd and etcd take the same
/// flags) on free loopback ports; returns their client URLs once every member is healthy.
///
/// A port found free may be taken by another process before the server binds it (tests
/// run side by side); a member that exits during start-up gets the cluster restarted on
/// new ports, up to three times.
async fn spawn(
    program: &std::path::Path,
    etcd_style_name: &str,
    members: usize,
) -> anyhow::Result<(Vec<String>, Vec<Spawned>)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match spawn_once(program, etcd_style_name, members).await {
            Err(e) if attempt < 3 && e.downcast_ref::<ExitedDuringStartup>().is_some() => {
                eprintln!("kvbench: {e}; retrying on other ports");
            }
            r => return r,
        }
    }
}

async fn spawn_once(
    program: &std::path::Path,
    etcd_style_name: &str,
    members: usize,
) -> anyhow::Result<(Vec<String>, Vec<Spawned>)> {
    let mut ports = Vec::new();
    for _ in 0..members.max(1) {
        ports.push((free_port()?, free_port()?));
    }
    let name = |i: usize| format!("{etcd_style_name}{i}");
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, pp))| format!("{}=http://127.0.0.1:{pp}", name(i)))
        .collect();
    let initial = initial.join(",");
    let mut urls = Vec::new();
    let mut spawned = Vec::new();
    for (i, (cp, pp)) in ports.iter().enumerate() {
        let dir = tempfile::tempdir()?;
        let url = format!("http://127.0.0.1:{cp}");
        let peer = format!("http://127.0.0.1:{pp}");
        let child = Command::new(program)
            .args(["--enable-v2", "--name", &name(i), "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "kvbench"])
            .args(["--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        urls.push(url);
        spawned.push(Spawned { child, _dir: dir });
    }
    for (url, s) in urls.iter().zip(spawned.iter_mut()) {
        wait_healthy(url, &mut s.child).await?;
    }
    Ok((urls, spawned))
}

/// Clock ticks per second of `/proc/<pid>/stat`'s CPU times (Linux's `USER_HZ`, fixed at
/// 100 by its ABI on every architecture kvbench runs on).
const USER_HZ: f64 = 100.0;

/// CPU time (user + system, all threads) of processes `pids` so far, in seconds; `None` if
/// one cannot be read.
fn cpu_seconds(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    let mut ticks = 0u64;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) may hold spaces: count fields after its ')'.
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut f = rest.split_whitespace().skip(11);
        let utime: u64 = f.next()?.parse().ok()?;
        let stime: u64 = f.next()?.parse().ok()?;
        ticks += utime + stime;
    }
    Some(ticks as f64 / USER_HZ)
}

/// Resident memory of a process in bytes (VmRSS), if it can be read.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs one workload against one target for `duration` with `conns` connections.
async fn measure(urls: &[String], op: &str, conns: usize, cfg: &BenchConfig, seed: u64) -> Sample {
    let value: Arc<str> = "v".repeat(cfg.value_size).into();
    let until = Instant::now() + Duration::from_secs_f64(cfg.duration);
    let mut tasks = Vec::new();
    let form: Arc<[u8]> = format!("value={value}").into_bytes().into();
    for c in 0..conns {
        // One connection per task, so `conns` really is the number of TCP connections.
        let mut conn = match crate::bench_http::Conn::new(&urls[c % urls.len()]) {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("kvbench: {e}");
                return Sample::default();
            }
        };
        let op = op.to_owned();
        let form = Arc::clone(&form);
        let keys = cfg.keys.max(1);
        let mut x = seed ^ ((c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(4096);
            let mut errors = 0u64;
            let mut path = String::with_capacity(64);
            while Instant::now() < until {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                path.clear();
                let _ = write!(path, "/v2/keys/bench/k{}", x % keys);
                let t = Instant::now();
                let res = match op.as_str() {
                    "put" => conn.request("PUT", &path, Some(&form)).await,
                    "qget" => {
                        path.push_str("?quorum=true");
                        conn.request("GET", &path, None).await
                    }
                    _ => conn.request("GET", &path, None).await,
                };
                if res.is_ok_and(|status| (200..300).contains(&status)) {
                    lat.push(t.elapsed().as_micros() as u32);
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    collect(tasks, cfg.duration).await
}

/// Joins the connections' tasks, each returning its latencies (µs) and error count, into
/// one [`Sample`] over `duration` seconds.
pub(crate) async fn collect(
    tasks: Vec<tokio::task::JoinHandle<(Vec<u32>, u64)>>,
    duration: f64,
) -> Sample {
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 - 1.0) * p).round() as usize;
        f64::from(all[i]) / 1000.0
    };
    Sample {
        ops_per_sec: all.len() as f64 / duration,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors,
        cpu_us_per_op: None,
    }
}

/// Writes every key once (64 connections) so gets find values.
async fn preload(urls: &[String], cfg: &BenchConfig) -> anyhow::Result<()> {
    let value: Arc<str> = "v".repeat(cfg.value_size).into();
    let conns = 64u64;
    let mut tasks = Vec::new();
    for c in 0..conns {
        let http = reqwest::Client::new();
        let url = urls[c as usize % urls.len()].clone();
        let value = Arc::clone(&value);
        let keys = cfg.keys;
        tasks.push(tokio::spawn(async move {
            let mut k = c;
            while k < keys {
                http.put(format!("{url}/v2/keys/bench/k{k}"))
                    .form(&[("value", &*value)])
                    .send()
                    .await?;
                k += conns;
            }
            Ok::<_, reqwest::Error>(())
        }));
    }
    for t in tasks {
        t.await
            .context("preload task")?
            .context("preload request")?;
    }
    Ok(())
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    if xs.is_empty() { 0.0 } else { xs[xs.len() / 2] }
}

/// Runs the benchmark and returns the report (markdown).
///
/// # Errors
/// A server cannot be started or preloaded.
pub async fn run(cfg: BenchConfig) -> anyhow::Result<String> {
    let split = |u: &str| -> Vec<String> { u.split(',').map(str::to_owned).collect() };
    let (kvd_urls, kvd_procs) = match &cfg.kvd_url {
        Some(u) => (split(u), Vec::new()),
        None => {
            let bin = match &cfg.kvd_bin {
                Some(b) => b.clone(),
                None => std::env::current_exe()?.with_file_name("kvd"),
            };
            spawn(&bin, "kvd", cfg.members).await?
        }
    };
    let (etcd_urls, etcd_procs) = match &cfg.etcd_url {
        Some(u) => (split(u), Vec::new()),
        None => spawn(std::path::Path::new("etcd"), "etcd", cfg.members)
            .await
            .context("starting etcd (Debian package etcd-server)")?,
    };
    let targets = [("kvd", &kvd_urls[..]), ("etcd", &etcd_urls[..])];
    // Pids are given only with a URL (clap's `requires`), so one side of each is empty.
    let pids: [Vec<u32>; 2] = [
        kvd_procs
            .iter()
            .map(|p| p.child.id())
            .chain(cfg.kvd_pids.iter().copied())
            .collect(),
        etcd_procs
            .iter()
            .map(|p| p.child.id())
            .chain(cfg.etcd_pids.iter().copied())
            .collect(),
    ];
    for (name, pids) in [("kvd", &pids[0]), ("etcd", &pids[1])] {
        if cpu_seconds(pids).is_none() && !pids.is_empty() {
            anyhow::bail!("--{name}-pids: cannot read /proc/<pid>/stat of every one of {pids:?}");
        }
    }
    if cfg.rss || cfg.ops.iter().any(|o| !o.is_empty() && o != "put") {
        for (name, urls) in targets {
            eprintln!("kvbench: preloading {} keys into {name}", cfg.keys);
            let t = Instant::now();
            match cfg.api.as_str() {
                "grpc" => crate::bench_grpc::preload(name, urls, &cfg).await?,
                _ => preload(urls, &cfg).await?,
            }
            eprintln!(
                "kvbench: preloaded {name} in {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
    }
    let mut memory = String::new();
    if cfg.rss {
        let sum = |procs: &[Spawned]| -> Option<u64> {
            procs.iter().map(|p| rss_bytes(p.child.id())).sum()
        };
        let (k, e) = (sum(&kvd_procs), sum(&etcd_procs));
        let mib = |b: Option<u64>| {
            b.map_or("n/a".to_string(), |b| {
                format!("{:.1}", b as f64 / f64::from(1 << 20))
            })
        };
        let ratio = match (k, e) {
            (Some(k), Some(e)) if e > 0 => format!("{:.2}", k as f64 / e as f64),
            _ => "n/a".into(),
        };
        let _ = writeln!(
            memory,
            "RSS after preloading {} keys of {} bytes ({} member(s) each, summed): kvd {} MiB, etcd {} MiB, ratio kvd/etcd {ratio}\n",
            cfg.keys,
            cfg.value_size,
            cfg.members,
            mib(k),
            mib(e)
        );
    }
    let mut report = memory;
    let _ = writeln!(
        report,
        "| workload | conns | kvd ops/s | kvd p50 ms | kvd p99 ms | etcd ops/s | etcd p50 ms | etcd p99 ms | ratio ops/s kvd/etcd | kvd CPU µs/op | etcd CPU µs/op |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for op in cfg.ops.iter().filter(|o| !o.is_empty()) {
        for &conns in &cfg.conns {
            let mut per: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
            for round in 0..cfg.rounds {
                // Alternate which target goes first so drift (disk, neighbours) hits both.
                let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
                for t in order {
                    let (name, urls, seed) = (targets[t].0, targets[t].1, round as u64 + 1);
                    let cpu_before = cpu_seconds(&pids[t]);
                    let mut s = match cfg.api.as_str() {
                        "grpc" => {
                            crate::bench_grpc::measure(name, urls, op, conns, &cfg, seed).await
                        }
                        _ => measure(urls, op, conns, &cfg, seed).await,
                    };
                    let ops = s.ops_per_sec * cfg.duration;
                    s.cpu_us_per_op = match (cpu_before, cpu_seconds(&pids[t])) {
                        (Some(a), Some(b)) if ops > 0.0 => Some((b - a) * 1e6 / ops),
                        _ => None,
                    };
                    eprintln!(
                        "kvbench: {op} conns={conns} round={round} {}: {:.0} ops/s p50 {:.2} ms p99 {:.2} ms cpu {} µs/op errors {}",
                        targets[t].0,
                        s.ops_per_sec,
                        s.p50_ms,
                        s.p99_ms,
                        s.cpu_us_per_op.map_or("n/a".into(), |c| format!("{c:.1}")),
                        s.errors
                    );
                    per[t].push(s);
                }
            }
            let summary = |v: &[Sample]| {
                let mut ops: Vec<f64> = v.iter().map(|s| s.ops_per_sec).collect();
                let mut p50: Vec<f64> = v.iter().map(|s| s.p50_ms).collect();
                let mut p99: Vec<f64> = v.iter().map(|s| s.p99_ms).collect();
                let mut cpu: Vec<f64> = v.iter().filter_map(|s| s.cpu_us_per_op).collect();
                let cpu = if cpu.is_empty() {
                    "n/a".to_string()
                } else {
                    format!("{:.1}", median(&mut cpu))
                };
                (median(&mut ops), median(&mut p50), median(&mut p99), cpu)
            };
            let (ko, k50, k99, kc) = summary(&per[0]);
            let (eo, e50, e99, ec) = summary(&per[1]);
            let ratio = if eo > 0.0 { ko / eo } else { 0.0 };
            let _ = writeln!(
                report,
                "| {op} | {conns} | {ko:.0} | {k50:.2} | {k99:.2} | {eo:.0} | {e50:.2} | {e99:.2} | {ratio:.2} | {kc} | {ec} |"
            );
        }
    }
    Ok(report)
}
