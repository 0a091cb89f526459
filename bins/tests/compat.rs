//! etcdctl (ETCDCTL_API=2) against kvd gives what it gives against a real etcd, for a
//! script covering every subcommand; and kvctl against kvd gives the same again, over the
//! v2 HTTP API and over gRPC (`--api grpc`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{self, Server};

/// The script: etcdctl arguments. Placeholders, resolved per server: `{I+n}` is the store
/// index at the start of the script plus `n`; `{MI:/key}` is the key's current
/// `modifiedIndex`.
const SCRIPT: &[&[&str]] = &[
    &["set", "/c/a", "va"],
    &["-o", "extended", "set", "/c/a", "vb"],
    &["-o", "json", "set", "/c/b", "vc"],
    &["get", "/c/a"],
    &["-o", "extended", "get", "/c/a"],
    &["-o", "json", "get", "/c/a"],
    &["get", "--quorum", "/c/a"],
    &["mk", "/c/a", "vx"],
    &["mk", "/c/m", "vm"],
    &["-o", "extended", "mk", "--in-order", "/c/q", "first"],
    &["mk", "--in-order", "/c/q", "second"],
    &["mkdir", "/c/d"],
    &["mkdir", "/c/d"],
    &["-o", "extended", "mkdir", "/c/d2"],
    &["-o", "json", "setdir", "/c/d3"],
    &["setdir", "/c/d3"],
    &["ls", "--sort", "/c"],
    &["ls", "--sort", "-p", "/c"],
    &["ls", "--sort", "--recursive", "/c"],
    &["ls", "--sort", "--recursive", "-p"],
    &["-o", "json", "ls", "--sort", "/c/q"],
    &["-o", "extended", "ls", "--sort", "/c/q"],
    &["ls", "/c/nope"],
    &["ls", "/c/a"],
    &["update", "/c/a", "vd"],
    &["update", "/c/zz", "vz"],
    &["-o", "extended", "update", "/c/a", "ve"],
    &["updatedir", "/c/d"],
    &["updatedir", "--ttl", "100", "/c/d2"],
    &["-o", "extended", "updatedir", "/c/d"],
    &["updatedir", "/c/nodir"],
    &["get", "/c/d"],
    &["get"],
    &["set", "/c/x"],
    &["set", "--ttl", "100", "/c/t", "vt"],
    &["-o", "extended", "get", "/c/t"],
    &["set", "--swap-with-value", "vd", "/c/a", "vf"],
    &["set", "--swap-with-value", "ve", "/c/a", "vf"],
    &["set", "--swap-with-index", "{I+1}", "/c/a", "vg"],
    &["set", "--swap-with-index", "{MI:/c/a}", "/c/a", "vh"],
    &["-o", "extended", "get", "/c/a"],
    &["rm", "/c/a"],
    &["-o", "extended", "rm", "/c/b"],
    &["-o", "json", "rm", "/c/m"],
    &["rm", "/c/d"],
    &["rm", "--dir", "/c/d"],
    &["set", "/c/e/f", "vh"],
    &["rmdir", "/c/e"],
    &["rm", "--dir", "/c/e"],
    &["-o", "extended", "rm", "--recursive", "/c/e"],
    &["rmdir", "/c/d2"],
    &["rmdir", "/c/nope"],
    &["set", "/c/w", "vw"],
    &["rm", "--with-value", "nope", "/c/w"],
    &["rm", "--with-index", "{I+1}", "/c/w"],
    &["rm", "--with-index", "{MI:/c/w}", "/c/w"],
    &["set", "/c/_hidden", "vh"],
    &["ls", "--sort", "/c"],
    &["get", "/c/_hidden"],
    &["watch", "--after-index", "{I+1}", "/c/a"],
    &["-o", "extended", "watch", "--after-index", "{I+1}", "/c/a"],
    &["watch", "--recursive", "--after-index", "{I+1}", "/c"],
    &["-o", "json", "watch", "--after-index", "{I+2}", "/c/b"],
    &["set", "/c/x1", "v1"],
    // Run in the background; the harness writes /c/x1 once the watcher is registered.
    &[
        "exec-watch",
        "--recursive",
        "/c/x1",
        "--",
        "sh",
        "-c",
        "echo \"$ETCD_WATCH_ACTION $ETCD_WATCH_KEY $ETCD_WATCH_VALUE\"; kill $PPID",
    ],
    &["member", "list"],
    &["member", "remove", "1234"],
    &["member", "remove", "node1"],
    &["member", "add", "only-one-arg"],
    &["cluster-health"],
];

/// A client under test: the program and the options it gets before each command's.
#[derive(Clone, Copy)]
struct Ctl<'a> {
    program: &'a str,
    options: &'a [&'a str],
}

/// Runs one command of the script; returns (exit code or signal, stdout, stderr).
fn run(ctl: Ctl<'_>, server: &Server, base: u64, args: &[&str]) -> (String, String, String) {
    let program = ctl.program;
    let args: Vec<String> = args.iter().map(|a| resolve(a, server, base)).collect();
    let mut cmd = Command::new(program);
    cmd.env("ETCDCTL_API", "2")
        .arg("--endpoints")
        .arg(&server.url)
        .args(ctl.options)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot run {program}: {e} (etcdctl comes with the Debian package etcd-client)")
    });
    if args[0] == "exec-watch" {
        wait_for_watcher(server);
        reqwest::blocking::Client::new()
            .put(format!("{}/v2/keys{}", server.url, args[2]))
            .form(&[("value", "changed")])
            .send()
            .expect("PUT");
    }
    let out = wait_with_deadline(child, &format!("{program} {}", args.join(" ")));
    let status = match out.status.code() {
        Some(c) => format!("exit {c}"),
        None => "killed by a signal".to_string(),
    };
    (
        status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `/v2/stats/store` until a watcher is registered.
fn wait_for_watcher(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: serde_json::Value = reqwest::blocking::get(format!("{}/v2/stats/store", server.url))
            .expect("GET stats")
            .json()
            .expect("json");
        if v["watchers"].as_u64().unwrap_or(0) > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no watcher registered within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a command to exit (killing it after 20 s so a hang fails the test).
fn wait_with_deadline(mut child: Child, program: &str) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{program} did not finish within 20 s; stdout {:?}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn resolve(arg: &str, server: &Server, base: u64) -> String {
    if let Some(n) = arg.strip_prefix("{I+").and_then(|r| r.strip_suffix('}')) {
        return (base + n.parse::<u64>().expect("placeholder")).to_string();
    }
    if let Some(key) = arg.strip_prefix("{MI:").and_then(|r| r.strip_suffix('}')) {
        let v: serde_json::Value = reqwest::blocking::get(format!("{}/v2/keys{key}", server.url))
            .expect("GET")
            .json()
            .expect("json");
        return v["node"]["modifiedIndex"].to_string();
    }
    arg.to_string()
}

/// Makes two servers' outputs comparable: store indexes relative to the script's start,
/// member ids and URLs replaced by names, expiration times removed.
pub(crate) fn normalize(s: &str, base: u64, urls: (&str, &str), member_id: &str) -> String {
    let s = s
        .replace(urls.0, "<client-url>")
        .replace(urls.1, "<peer-url>");
    let s = if member_id.is_empty() {
        s
    } else {
        s.replace(member_id, "<member-id>")
    };
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let digits = &s[start..i];
            let before = &s[..start];
            let is_index = digits.len() == 20
                || ["Index: ", "Index\":", "[", " != "]
                    .iter()
                    .any(|p| before.ends_with(p));
            match digits.parse::<u64>() {
                Ok(n) if is_index && n != 0 => {
                    let rel = n.saturating_sub(base);
                    if digits.len() == 20 {
                        out.push_str(&format!("{rel:020}"));
                    } else {
                        out.push_str(&rel.to_string());
                    }
                }
                _ => out.push_str(digits),
            }
            continue;
        }
        out.push(b[i] as char);
        i += 1;
    }
    strip_expiration(&out)
}

/// Removes `"expiration":"..."` (wall-clock times differ between runs).
fn strip_expiration(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(",\"expiration\":\"") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 15..];
        let end = after.find('"').map_or(after.len(), |e| e + 1);
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn member_id(server: &Server) -> String {
    let v: serde_json::Value = reqwest::blocking::get(format!("{}/v2/members", server.url))
        .expect("GET members")
        .json()
        .expect("json");
    v["members"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn transcript(ctl: Ctl<'_>, server: &Server) -> Vec<String> {
    let base = util::etcd_index(&server.url);
    let id = member_id(server);
    SCRIPT
        .iter()
        .map(|args| {
            let (status, out, err) = run(ctl, server, base, args);
            format!(
                "$ {}\n{status}\n--- stdout\n{}--- stderr\n{}",
                args.join(" "),
                normalize(&out, base, (&server.url, &server.peer_url), &id),
                normalize(&err, base, (&server.url, &server.peer_url), &id)
            )
        })
        .collect()
}

/// The commands whose output differs from etcd's, described for the failure message.
fn differences(what: &str, expected: &[String], actual: &[String]) -> Vec<String> {
    let mut diffs = Vec::new();
    for (e, a) in expected.iter().zip(actual) {
        if e != a {
            diffs.push(format!("etcd:\n{e}\n{what}:\n{a}"));
        }
    }
    diffs
}

#[test]
fn etcdctl_and_kvctl_against_kvd_match_etcdctl_against_etcd() {
    let etcdctl = Ctl {
        program: "etcdctl",
        options: &[],
    };
    let kvctl_bin = util::kvctl_bin();
    let kvctl = |options: &'static [&'static str]| Ctl {
        program: kvctl_bin.to_str().expect("utf-8 path"),
        options,
    };
    let etcd = util::etcd();
    let expected = transcript(etcdctl, &etcd);
    drop(etcd);
    // Each client on a fresh kvd, so the store holds the same keys as etcd's did.
    let mut diffs = Vec::new();
    for (what, ctl) in [
        ("etcdctl against kvd", etcdctl),
        ("kvctl against kvd", kvctl(&[])),
        ("kvctl --api grpc against kvd", kvctl(&["--api", "grpc"])),
    ] {
        let kvd = util::kvd();
        diffs.extend(differences(what, &expected, &transcript(ctl, &kvd)));
    }
    assert!(
        diffs.is_empty(),
        "{} of {} commands differ:\n\n{}",
        diffs.len(),
        3 * expected.len(),
        diffs.join("\n=====\n")
    );
}

#[test]
fn normalize_shifts_only_indexes() {
    assert_eq!(
        normalize(
            "Created-Index: 13\nTTL: 10\nError:  101: Compare failed ([11 != 14]) [14]\n/q/00000000000000000015\n",
            10,
            ("http://u", "http://p"),
            ""
        ),
        "Created-Index: 3\nTTL: 10\nError:  101: Compare failed ([1 != 4]) [4]\n/q/00000000000000000005\n"
    );
}
