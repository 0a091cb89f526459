//! A 3-member kvd cluster in three containers on this machine's Docker engine: each member
//! on its own address of a private network. The leader is cut off with `docker network
//! disconnect` (the majority must elect a new leader and keep accepting writes, the isolated
//! member must not answer quorum reads with stale data), reconnected (it catches up), and a
//! follower is `docker kill`ed and started again from its data directory.
//!
//! The image is built here `FROM scratch`: the kvd binary just built, the shared libraries
//! it links (from `ldd`), and Debian's static busybox. No image is pulled.
//!
//! The test needs a running Docker engine. Without one it fails and says why; set
//! `FLOTILLA_SKIP_DOCKER=1` to skip it explicitly on a machine that cannot run containers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `docker ARGS`, returning stdout; panics with stderr on failure.
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run docker {args:?}: {e}"));
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs `docker ARGS`, ignoring failure (clean-up).
fn docker_quiet(args: &[&str]) {
    let _ = Command::new("docker").args(args).output();
}

/// Removes what the test created, whatever happens.
struct Cleanup {
    containers: Vec<String>,
    network: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            if std::thread::panicking() {
                let logs = Command::new("docker")
                    .args(["logs", "--tail", "40", c])
                    .output();
                if let Ok(l) = logs {
                    eprintln!(
                        "--- {c} log tail ---\n{}{}",
                        String::from_utf8_lossy(&l.stdout),
                        String::from_utf8_lossy(&l.stderr)
                    );
                }
            }
            docker_quiet(&["rm", "-f", c]);
        }
        docker_quiet(&["network", "rm", &self.network]);
        docker_quiet(&["rmi", "-f", &self.image]);
    }
}

/// The shared libraries `binary` loads, as absolute paths (ldd's resolved paths and the
/// dynamic loader).
fn shared_libraries(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .expect("run ldd (Debian package libc-bin)");
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") {
        return Vec::new();
    }
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rhs)) => rhs.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Builds the `FROM scratch` image with kvd, its libraries and busybox.
fn build_image(tag: &str) {
    let ctx = tempfile::tempdir().expect("tempdir");
    let root = ctx.path().join("rootfs");
    let kvd = PathBuf::from(env!("CARGO_BIN_EXE_kvd"));
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    };
    copy(&kvd, &root.join("kvd"));
    for lib in shared_libraries(&kvd) {
        let real = std::fs::canonicalize(&lib).expect("library path");
        copy(&real, &root.join(lib.strip_prefix("/").expect("absolute")));
    }
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "/bin/busybox is missing: install Debian's busybox-static (scripts/install-deps does)"
    );
    copy(busybox, &root.join("bin/busybox"));
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).expect("symlink sh");
    std::fs::create_dir_all(root.join("data")).expect("mkdir data");
    std::fs::create_dir_all(root.join("tmp")).expect("mkdir tmp");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENTRYPOINT [\"/kvd\"]\n",
    )
    .expect("write Dockerfile");
    docker(&["build", "-q", "-t", tag, &ctx.path().display().to_string()]);
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("http client")
}

fn poll<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn put(http: &reqwest::blocking::Client, url: &str, key: &str, value: &str) -> bool {
    http.put(format!("{url}/v2/keys{key}"))
        .form(&[("value", value)])
        .send()
        .is_ok_and(|r| r.status().is_success())
}

/// The value at `key` (`quorum=true` for a linearizable read), if the member answered 200.
fn get(http: &reqwest::blocking::Client, url: &str, key: &str, quorum: bool) -> Option<String> {
    let r = http
        .get(format!("{url}/v2/keys{key}?quorum={quorum}"))
        .send()
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    let v: serde_json::Value = r.json().ok()?;
    v["node"]["value"].as_str().map(String::from)
}

fn is_leader(http: &reqwest::blocking::Client, url: &str) -> bool {
    http.get(format!("{url}/v2/stats/self"))
        .send()
        .ok()
        .and_then(|r| r.json::<serde_json::Value>().ok())
        .is_some_and(|s| s["state"] == "StateLeader")
}

#[test]
fn three_containers_survive_partition_and_kill() {
    if std::env::var_os("FLOTILLA_SKIP_DOCKER").is_some() {
        eprintln!("FLOTILLA_SKIP_DOCKER is set: the Docker cluster test did not run");
        return;
    }
    let info = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    match info {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "the Docker engine is not reachable, so the container cluster test cannot run: {} (set FLOTILLA_SKIP_DOCKER=1 to skip it on purpose)",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!(
            "docker is not installed, so the container cluster test cannot run: {e} (set FLOTILLA_SKIP_DOCKER=1 to skip it on purpose)"
        ),
    }

    let pid = std::process::id();
    // A private /24 per run so parallel runs on one engine do not collide.
    let subnet_byte = 16 + pid % 200;
    let subnet = format!("10.231.{subnet_byte}.0/24");
    let ip = |i: usize| format!("10.231.{subnet_byte}.{}", 11 + i);
    let mut cleanup = Cleanup {
        containers: Vec::new(),
        network: format!("flotilla-test-{pid}"),
        image: format!("flotilla-kvd-test:{pid}"),
    };
    build_image(&cleanup.image);
    docker(&["network", "create", "--subnet", &subnet, &cleanup.network]);

    let names: Vec<String> = (0..3).map(|i| format!("flotilla-kvd-{pid}-m{i}")).collect();
    let cluster = (0..3)
        .map(|i| format!("m{i}=http://{}:2380", ip(i)))
        .collect::<Vec<_>>()
        .join(",");
    for (i, name) in names.iter().enumerate() {
        let ip_i = ip(i);
        let member = format!("m{i}");
        let advertise = format!("http://{ip_i}:2379");
        let peer = format!("http://{ip_i}:2380");
        docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            &cleanup.network,
            "--ip",
            &ip_i,
            &cleanup.image,
            "--name",
            &member,
            "--data-dir",
            "/data/kvd",
            "--listen-client-urls",
            "http://0.0.0.0:2379",
            "--advertise-client-urls",
            &advertise,
            "--listen-peer-urls",
            "http://0.0.0.0:2380",
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &cluster,
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
        ]);
        cleanup.containers.push(name.clone());
    }
    let urls: Vec<String> = (0..3).map(|i| format!("http://{}:2379", ip(i))).collect();
    let http = client();
    for u in &urls {
        poll(&format!("{u} healthy"), 30, || {
            http.get(format!("{u}/health"))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
        });
    }
    poll("first write", 15, || {
        put(&http, &urls[0], "/k", "1").then_some(())
    });
    poll("a quorum read of the first write", 20, || {
        (get(&http, &urls[2], "/k", true).as_deref() == Some("1")).then_some(())
    });

    // Cut the leader off the network.
    let leader = poll("a leader", 15, || {
        (0..3).find(|&i| is_leader(&http, &urls[i]))
    });
    docker(&["network", "disconnect", &cleanup.network, &names[leader]]);
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    // The majority elects a new leader and accepts writes through either member.
    poll("a write on the majority side", 20, || {
        put(&http, &urls[others[0]], "/k", "2").then_some(())
    });
    poll("a write through the other majority member", 20, || {
        put(&http, &urls[others[1]], "/after", "x").then_some(())
    });
    poll("a quorum read on the majority side", 20, || {
        (get(&http, &urls[others[1]], "/k", true).as_deref() == Some("2")).then_some(())
    });
    // The isolated member is unreachable from the host too (its only network is gone), so
    // check from inside: its quorum read must not answer with the stale value.
    let inside = Command::new("docker")
        .args([
            "exec",
            &names[leader],
            "/bin/busybox",
            "wget",
            "-q",
            "-T",
            "3",
            "-O",
            "-",
            "http://127.0.0.1:2379/v2/keys/k?quorum=true",
        ])
        .output()
        .expect("docker exec");
    let body = String::from_utf8_lossy(&inside.stdout);
    assert!(
        !body.contains("\"value\":\"1\""),
        "the isolated old leader served a stale quorum read: {body}"
    );

    // Reconnect: the old leader rejoins and catches up.
    docker(&[
        "network",
        "connect",
        "--ip",
        &ip(leader),
        &cleanup.network,
        &names[leader],
    ]);
    poll("the reconnected member catching up", 20, || {
        (get(&http, &urls[leader], "/after", false).as_deref() == Some("x")).then_some(())
    });
    poll("a quorum read through the reconnected member", 20, || {
        (get(&http, &urls[leader], "/k", true).as_deref() == Some("2")).then_some(())
    });

    // Kill a member outright; the other two keep serving; it restarts from its data.
    let victim = (leader + 1) % 3;
    docker(&["kill", &names[victim]]);
    let alive: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    poll("a write with one member killed", 20, || {
        put(&http, &urls[alive[0]], "/k", "3").then_some(())
    });
    docker(&["start", &names[victim]]);
    poll("the restarted member catching up", 30, || {
        (get(&http, &urls[victim], "/k", false).as_deref() == Some("3")).then_some(())
    });
    poll("a quorum read through the restarted member", 20, || {
        (get(&http, &urls[victim], "/after", true).as_deref() == Some("x")).then_some(())
    });
}
