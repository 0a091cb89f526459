//! The kvd binary over HTTP: graceful shutdown and snapshots, and kvctl's endpoint failover
//! and watch back-off. (The v2 HTTP API in-process: kv-server's tests.)

use std::sync::Arc;
use std::time::Duration;

use crate::util;

#[test]
fn sigterm_saves_the_store_and_a_snapshot_restores_into_a_new_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut kvd = util::kvd_at(&data);
    let c = reqwest::blocking::Client::new();
    c.put(format!("{}/v2/keys/kept", kvd.url))
        .form(&[("value", "yes")])
        .send()
        .expect("PUT");

    let snap = dir.path().join("snap.db");
    let out = std::process::Command::new(util::kvctl_bin())
        .args(["--endpoints", &kvd.url, "snapshot", "save"])
        .arg(&snap)
        .output()
        .expect("kvctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("Snapshot saved at {}\n", snap.display())
    );
    c.put(format!("{}/v2/keys/later", kvd.url))
        .form(&[("value", "also")])
        .send()
        .expect("PUT");

    let status = kvd.terminate();
    assert!(status.success(), "kvd exited with {status} after SIGTERM");
    drop(kvd);

    // Restarted on the same data directory: everything written before SIGTERM is there.
    let kvd = util::kvd_at(&data);
    let v: serde_json::Value = c
        .get(format!("{}/v2/keys/later", kvd.url))
        .send()
        .expect("GET")
        .json()
        .expect("json");
    assert_eq!(v["node"]["value"], "also");
    drop(kvd);

    // The snapshot restored into a new data directory has what was written before it.
    let restored = dir.path().join("restored");
    let out = std::process::Command::new(util::kvctl_bin())
        .args(["snapshot", "restore"])
        .arg(&snap)
        .arg("--data-dir")
        .arg(&restored)
        .output()
        .expect("kvctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kvd = util::kvd_at(&restored);
    let v: serde_json::Value = c
        .get(format!("{}/v2/keys/kept", kvd.url))
        .send()
        .expect("GET")
        .json()
        .expect("json");
    assert_eq!(v["node"]["value"], "yes");
    let r = c
        .get(format!("{}/v2/keys/later", kvd.url))
        .send()
        .expect("GET");
    assert_eq!(r.status(), 404);
}

#[test]
fn kvctl_fails_over_between_endpoints_and_exits_2_when_none_answers() {
    kvctl_fails_over(&[]);
}

/// kvctl with `options` (such as `--api grpc`) skips an endpoint that refuses connections
/// for the next one, and exits 2 with etcdctl's message when none answers.
pub(crate) fn kvctl_fails_over(options: &[&str]) {
    let kvd = util::kvd();
    let dead = format!("http://127.0.0.1:{}", util::free_port());
    let run = |endpoints: &str, args: &[&str]| {
        std::process::Command::new(util::kvctl_bin())
            .args(["--endpoints", endpoints])
            .args(options)
            .args(args)
            .output()
            .expect("kvctl")
    };
    let out = run(&format!("{dead},{}", kvd.url), &["set", "/f", "over"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over\n");
    let out = run(&format!("{dead},{}", kvd.url), &["get", "/f"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over\n");
    let out = run(&dead, &["get", "/f"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("Error:  client: etcd cluster is unavailable or misconfigured"),
        "{err}"
    );
    assert!(err.contains(&format!("error #0: {dead}")), "{err}");
}

/// A member that ends every long poll at once with an empty body (as one shutting down
/// does) gets a few retries a second from `kvctl watch --forever`, not a busy loop.
#[test]
fn kvctl_watch_backs_off_from_long_polls_that_end_at_once() {
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::sync::atomic::{AtomicUsize, Ordering};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let polls = Arc::new(AtomicUsize::new(0));
    {
        let polls = Arc::clone(&polls);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let polls = Arc::clone(&polls);
                std::thread::spawn(move || {
                    let mut w = conn.try_clone().expect("clone");
                    let mut r = BufReader::new(conn);
                    let mut line = String::new();
                    loop {
                        line.clear();
                        match r.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => {
                                polls.fetch_add(1, Ordering::SeqCst);
                                let answer = "HTTP/1.1 200 OK\r\nX-Etcd-Index: 7\r\n\
                                              Content-Length: 0\r\n\r\n";
                                if w.write_all(answer.as_bytes()).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                        }
                    }
                });
            }
        });
    }
    let mut child = std::process::Command::new(util::kvctl_bin())
        .args(["--endpoints", &url, "watch", "--forever", "/k"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kvctl watch");
    // A fixed window: the test counts what happens in it, it does not wait for anything.
    let window = Duration::from_secs(3);
    std::thread::sleep(window);
    let exited = child.try_wait().expect("try_wait");
    let _ = child.kill();
    let out = child.wait_with_output().expect("kvctl output");
    assert!(
        exited.is_none(),
        "kvctl watch --forever exited ({exited:?}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 0, 100, 200, 400, 800 ms and then 1.6 s between polls: 6 in 3 s. Without the back-off
    // there are thousands.
    let n = polls.load(Ordering::SeqCst);
    assert!((2..=12).contains(&n), "{n} long polls in {window:?}");
}
