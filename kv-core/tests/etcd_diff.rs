//! Differential test against the real etcd (`etcd --enable-v2`, Debian's `etcd-server`).
//!
//! Thousands of random v2 operations go through etcd's HTTP API and, mapped the way an
//! etcd v2 server dispatches them, through kv-core directly; actions, nodes, prevNodes,
//! errors (code, message, cause) and indexes must agree. kv-core starts at etcd's
//! initial index so absolute indexes (and index-bearing causes) compare exactly.
//! TTLs are long, so nothing expires during the run; `expiration` is ignored and `ttl`
//! compared for presence only, since both sides read different clocks.

use std::net::TcpListener;
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kv_core::{Command, Event, Op, Store, WatchStart};
use serde_json::{Value, json};

/// Kills the etcd child by PID when the test ends, panics included.
struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port, never one handed out before in this process (the kernel may give a
/// released port again at once, e.g. as etcd's client and peer port).
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
}

fn start_etcd(http: &reqwest::blocking::Client) -> Etcd {
    let found = Process::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if found.is_err() {
        panic!(
            "etcd is not installed: this differential test needs the real etcd v2 server \
             (Debian: apt-get install -y etcd-server etcd-client, or scripts/install-deps)"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Process::new("etcd")
        .args(["--enable-v2", "--name", "diff", "--data-dir"])
        .arg(dir.path())
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("diff={peer_url}")])
        .args(["--log-level", "error", "--logger", "zap"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn etcd");
    let etcd = Etcd {
        child,
        url,
        _dir: dir,
    };
    // Ready when healthy and the cluster version is decided (etcd's own writes to the
    // v2 store are done, so the index only moves with ours).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = http
            .get(format!("{}/version", etcd.url))
            .send()
            .ok()
            .and_then(|r| r.text().ok())
            .is_some_and(|t| t.contains("etcdcluster") && !t.contains("not_decided"));
        let healthy = ok
            && http
                .get(format!("{}/health", etcd.url))
                .send()
                .ok()
                .and_then(|r| r.text().ok())
                .is_some_and(|t| t.contains("\"true\""));
        if healthy {
            return etcd;
        }
        assert!(
            Instant::now() < deadline,
            "etcd did not become healthy within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SplitMix64: a tiny deterministic generator (the seed is printed on failure).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn random_key(rng: &mut Rng) -> String {
    if rng.chance(2) {
        return "/".into();
    }
    let depth = 1 + rng.below(3);
    (0..depth)
        .map(|_| *rng.pick(&["a", "b", "c", "_h", "q"]))
        .fold(String::new(), |k, c| k + "/" + c)
}

fn random_value(rng: &mut Rng) -> String {
    rng.pick(&["", "v1", "v2", "two words", "ünï", "line\nbreak", "x&y=z"])
        .to_string()
}

/// One HTTP request in etcd's terms and the kv-core operation a v2 server maps it to.
struct Request {
    method: &'static str,
    key: String,
    params: Vec<(&'static str, String)>,
    op: Option<Op>,
    get: Option<(bool, bool)>,
    watch: Option<(bool, u64)>,
}

/// `first` is the first index kv-core produced: etcd's history also holds its own
/// earlier internal events, so watches start from there.
fn random_request(rng: &mut Rng, store: &Store, first: u64) -> Request {
    let key = random_key(rng);
    let mut params = Vec::new();
    let ttl = rng.chance(25).then(|| 500 + rng.below(5000));
    let current = store.get(&key, false, false, 0).ok().map(|e| e.node);
    let prev_index = |rng: &mut Rng| match &current {
        // prevIndex=0 means "no condition" over HTTP; the root's index is 0.
        Some(n) if rng.chance(60) && n.modified_index > 0 => n.modified_index,
        _ => 1 + rng.below(store.index().max(1)),
    };
    let prev_value = |rng: &mut Rng| match &current {
        Some(n) if rng.chance(60) && n.value.as_deref().is_some_and(|v| !v.is_empty()) => {
            n.value.clone().unwrap()
        }
        _ => rng.pick(&["v1", "v2", "nope"]).to_string(),
    };
    let mut req = Request {
        method: "GET",
        key: key.clone(),
        params: Vec::new(),
        op: None,
        get: None,
        watch: None,
    };
    match rng.below(100) {
        0..=11 => {
            let recursive = rng.chance(50);
            params.push(("recursive", recursive.to_string()));
            params.push(("sorted", "true".into()));
            req.get = Some((recursive, true));
        }
        12..=17 => {
            let recursive = rng.chance(50);
            let wait_index = store.index().saturating_sub(rng.below(1200)).max(first);
            params.push(("wait", "true".into()));
            params.push(("recursive", recursive.to_string()));
            params.push(("waitIndex", wait_index.to_string()));
            req.watch = Some((recursive, wait_index));
        }
        18..=45 => {
            let value = random_value(rng);
            let dir = rng.chance(10);
            params.push(("value", value.clone()));
            if dir {
                params.push(("dir", "true".into()));
            }
            if let Some(t) = ttl {
                params.push(("ttl", t.to_string()));
            }
            req.method = "PUT";
            req.op = Some(Op::Set {
                key,
                value,
                dir,
                ttl,
                refresh: false,
            });
        }
        46..=53 => {
            let value = random_value(rng);
            let dir = rng.chance(15);
            params.push(("value", value.clone()));
            params.push(("prevExist", "false".into()));
            if dir {
                params.push(("dir", "true".into()));
            }
            if let Some(t) = ttl {
                params.push(("ttl", t.to_string()));
            }
            req.method = "PUT";
            req.op = Some(Op::Create {
                key,
                value,
                dir,
                ttl,
                unique: false,
            });
        }
        54..=60 => {
            let value = if rng.chance(20) {
                String::new()
            } else {
                random_value(rng)
            };
            params.push(("value", value.clone()));
            params.push(("prevExist", "true".into()));
            if let Some(t) = ttl {
                params.push(("ttl", t.to_string()));
            }
            req.method = "PUT";
            req.op = Some(Op::Update {
                key,
                value,
                ttl,
                refresh: false,
            });
        }
        61..=69 => {
            let value = random_value(rng);
            let (pv, pi) = match rng.below(3) {
                0 => (Some(prev_value(rng)), None),
                1 => (None, Some(prev_index(rng))),
                _ => (Some(prev_value(rng)), Some(prev_index(rng))),
            };
            params.push(("value", value.clone()));
            if let Some(v) = &pv {
                params.push(("prevValue", v.clone()));
            }
            if let Some(i) = pi {
                params.push(("prevIndex", i.to_string()));
            }
            if rng.chance(30) {
                params.push(("prevExist", "true".into()));
            }
            if let Some(t) = ttl {
                params.push(("ttl", t.to_string()));
            }
            req.method = "PUT";
            req.op = Some(Op::CompareAndSwap {
                key,
                value,
                prev_value: pv,
                prev_index: pi,
                ttl,
                refresh: false,
            });
        }
        70..=74 => {
            let t = 500 + rng.below(5000);
            params.push(("refresh", "true".into()));
            params.push(("ttl", t.to_string()));
            req.method = "PUT";
            req.op = Some(match rng.below(3) {
                0 => Op::Set {
                    key,
                    value: String::new(),
                    dir: false,
                    ttl: Some(t),
                    refresh: true,
                },
                1 => {
                    params.push(("prevExist", "true".into()));
                    Op::Update {
                        key,
                        value: String::new(),
                        ttl: Some(t),
                        refresh: true,
                    }
                }
                _ => {
                    let pv = prev_value(rng);
                    params.push(("prevValue", pv.clone()));
                    Op::CompareAndSwap {
                        key,
                        value: String::new(),
                        prev_value: Some(pv),
                        prev_index: None,
                        ttl: Some(t),
                        refresh: true,
                    }
                }
            });
        }
        75..=86 => {
            let dir = rng.chance(40);
            let recursive = rng.chance(30);
            params.push(("dir", dir.to_string()));
            params.push(("recursive", recursive.to_string()));
            req.method = "DELETE";
            req.op = Some(Op::Delete {
                key,
                dir,
                recursive,
            });
        }
        87..=91 => {
            let (pv, pi) = match rng.below(3) {
                0 => (Some(prev_value(rng)), None),
                1 => (None, Some(prev_index(rng))),
                _ => (Some(prev_value(rng)), Some(prev_index(rng))),
            };
            if let Some(v) = &pv {
                params.push(("prevValue", v.clone()));
            }
            if let Some(i) = pi {
                params.push(("prevIndex", i.to_string()));
            }
            req.method = "DELETE";
            req.op = Some(Op::CompareAndDelete {
                key,
                prev_value: pv,
                prev_index: pi,
            });
        }
        _ => {
            let key = rng.pick(&["/q", "/a", "/", "/a/b", "/q/_h"]).to_string();
            let value = random_value(rng);
            let dir = rng.chance(15);
            params.push(("value", value.clone()));
            if dir {
                params.push(("dir", "true".into()));
            }
            if let Some(t) = ttl {
                params.push(("ttl", t.to_string()));
            }
            req.method = "POST";
            req.key = key.clone();
            req.op = Some(Op::Create {
                key,
                value,
                dir,
                ttl,
                unique: true,
            });
        }
    }
    req.params = params;
    req
}

/// The JSON etcd sends for an event.
fn event_json(e: &Event) -> Value {
    let mut v = json!({"action": e.action, "node": e.node});
    if let Some(p) = &e.prev_node {
        v["prevNode"] = serde_json::to_value(p).unwrap();
    }
    v
}

/// Drops `expiration` and turns `ttl` into a presence marker, recursively.
fn normalize(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("expiration");
            if m.contains_key("ttl") {
                m.insert("ttl".into(), Value::Bool(true));
            }
            m.values_mut().for_each(normalize);
        }
        Value::Array(a) => a.iter_mut().for_each(normalize),
        _ => {}
    }
}

struct Answer {
    index: Option<u64>,
    body: Value,
}

fn send(http: &reqwest::blocking::Client, base: &str, req: &Request) -> Answer {
    let url = format!(
        "{base}/v2/keys{}",
        if req.key == "/" {
            "/".to_owned()
        } else {
            req.key.clone()
        }
    );
    let builder = match req.method {
        "GET" => http.get(&url).query(&req.params),
        "DELETE" => http.delete(&url).query(&req.params),
        "PUT" => http.put(&url).form(&req.params),
        _ => http.post(&url).form(&req.params),
    };
    let what = format!("{} {} {:?}", req.method, req.key, req.params);
    let resp = builder
        .send()
        .unwrap_or_else(|e| panic!("etcd request {what}: {e}"));
    let index = resp
        .headers()
        .get("x-etcd-index")
        .and_then(|h| h.to_str().ok())
        .and_then(|s| s.parse().ok());
    let text = resp
        .text()
        .unwrap_or_else(|e| panic!("etcd body for {what}: {e}"));
    let body =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("etcd sent non-JSON {text:?}: {e}"));
    Answer { index, body }
}

#[test]
fn random_operations_match_etcd() {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let etcd = start_etcd(&http);
    let ops: usize = std::env::var("KV_DIFF_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4000);
    let seed: u64 = std::env::var("KV_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026);
    let start = send(
        &http,
        &etcd.url,
        &Request {
            method: "GET",
            key: "/".into(),
            params: vec![],
            op: None,
            get: Some((false, false)),
            watch: None,
        },
    );
    let first = start.index.expect("X-Etcd-Index on GET /v2/keys");
    let mut store = Store::with_index(first);
    let mut rng = Rng(seed);
    let mut compared_watches = 0;
    for i in 0..ops {
        let req = random_request(&mut rng, &store, first + 1);
        let now = now_ms();
        let ours: Result<Event, kv_core::Error> = if let Some(op) = &req.op {
            store.apply(&Command::new(now, op.clone()))
        } else if let Some((recursive, sorted)) = req.get {
            store.get(&req.key, recursive, sorted, now)
        } else {
            let (recursive, wait_index) = req.watch.expect("a watch");
            match store.watch(&req.key, recursive, false, Some(wait_index)) {
                Ok(WatchStart::Ready(e, _)) => Ok(e),
                Ok(WatchStart::Pending(id)) => {
                    // etcd would block: nothing to compare without waiting.
                    store.unwatch(id);
                    continue;
                }
                Ok(other) => panic!("unexpected {other:?}"),
                Err(e) => Err(e),
            }
        };
        if req.watch.is_some() {
            compared_watches += 1;
        }
        let theirs = send(&http, &etcd.url, &req);
        let (mut want, want_index) = match &ours {
            Ok(e) => (event_json(e), Some(e.index)),
            Err(e) => (serde_json::to_value(e).unwrap(), None),
        };
        let mut got = theirs.body;
        normalize(&mut want);
        normalize(&mut got);
        let ctx = format!(
            "op #{i} (seed {seed}): {} {} {:?}\nkv-core: {want}\netcd:    {got}",
            req.method, req.key, req.params
        );
        assert_eq!(want, got, "{ctx}");
        if let Some(idx) = want_index {
            assert_eq!(Some(idx), theirs.index, "X-Etcd-Index differs\n{ctx}");
        }
        if i % 500 == 499 {
            let full = Request {
                method: "GET",
                key: "/".into(),
                params: vec![("recursive", "true".into()), ("sorted", "true".into())],
                op: None,
                get: None,
                watch: None,
            };
            let mut got = send(&http, &etcd.url, &full).body;
            let mut want = event_json(&store.get("/", true, true, now_ms()).unwrap());
            normalize(&mut want);
            normalize(&mut got);
            assert_eq!(want, got, "whole tree differs after op #{i} (seed {seed})");
        }
    }
    assert!(
        compared_watches > 20,
        "too few history watches compared: {compared_watches}"
    );
    let writes = store.index() - first;
    assert!(
        ops < 4000 || writes > 1100,
        "the run should overflow the 1000-event history: {writes} writes"
    );
    if writes > 1000 {
        let cleared = store.watch("/", true, false, Some(first + 1)).unwrap_err();
        assert_eq!(cleared.code(), 401);
    }
}
