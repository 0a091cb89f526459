//! A 3-member kvd cluster: three kvd processes on loopback with the raft-store backend.
//! Writes on followers, quorum reads, watches across members, published client URLs,
//! kill -9 of the leader under concurrent writes with every acknowledged write checked,
//! restart of the killed member from its data directory, member remove + add, and a member
//! moved to a new peer URL (member update).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::{self, Server};

struct Spec {
    name: String,
    client: String,
    peer: String,
}

fn spec(name: &str) -> Spec {
    Spec {
        name: name.into(),
        client: format!("http://127.0.0.1:{}", util::free_port()),
        peer: format!("http://127.0.0.1:{}", util::free_port()),
    }
}

fn spawn(s: &Spec, cluster: &str, state: &str, data: &std::path::Path) -> Server {
    let mut args = util::member_args(&s.name, data, &s.client, &s.peer, cluster);
    args.extend(["--initial-cluster-state".to_string(), state.to_string()]);
    util::kvd_spawn(args, s.client.clone(), s.peer.clone())
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// PUT, retried while there is no leader; whether it was acknowledged within 15 s.
fn put_acked(http: &reqwest::blocking::Client, url: &str, key: &str, value: &str) -> bool {
    put_until_acked(http, url, key, value).is_ok()
}

/// As [`put_acked`], but a failure says what the last attempt got.
fn put_until_acked(
    http: &reqwest::blocking::Client,
    url: &str,
    key: &str,
    value: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = String::new();
    while Instant::now() < deadline {
        match http
            .put(format!("{url}/v2/keys{key}"))
            .form(&[("value", value)])
            .send()
        {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("{}: {}", r.status(), r.text().unwrap_or_default()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "PUT {url}/v2/keys{key} not acknowledged in 15 s; last: {last}"
    ))
}

/// A quorum read's value (`None` for 404), retried while the cluster has no leader.
fn quorum_get(http: &reqwest::blocking::Client, url: &str, key: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = String::new();
    while Instant::now() < deadline {
        match http.get(format!("{url}/v2/keys{key}?quorum=true")).send() {
            Ok(r) if r.status().as_u16() == 404 => return None,
            Ok(r) if r.status().is_success() => {
                let v: serde_json::Value = r.json().expect("json body");
                return v["node"]["value"].as_str().map(String::from);
            }
            Ok(r) => last = format!("{}: {}", r.status(), r.text().unwrap_or_default()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("quorum read of {key} on {url} did not succeed within 15 s; last answer: {last}");
}

/// Index (into `urls`) of the member that reports itself leader.
fn leader_of(http: &reqwest::blocking::Client, urls: &[&str]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        for (i, u) in urls.iter().enumerate() {
            let st: Option<serde_json::Value> = http
                .get(format!("{u}/v2/stats/self"))
                .send()
                .ok()
                .and_then(|r| r.json().ok());
            if st.is_some_and(|s| s["state"] == "StateLeader") {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no leader within 15 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn members(http: &reqwest::blocking::Client, url: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value = http
        .get(format!("{url}/v2/members"))
        .send()
        .expect("GET /v2/members")
        .json()
        .expect("members json");
    v["members"].as_array().cloned().unwrap_or_default()
}

/// Polls until every member lists `n` members, each with its client URLs published.
fn wait_members_published(http: &reqwest::blocking::Client, url: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ms = members(http, url);
        let published = ms
            .iter()
            .filter(|m| m["clientURLs"].as_array().is_some_and(|c| !c.is_empty()))
            .count();
        if ms.len() == n && published == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "members on {url} not all published within 15 s: {ms:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_members_replicate_survive_leader_kill_and_change_membership() {
    let dir = tempfile::tempdir().expect("tempdir");
    let specs: Vec<Spec> = ["n1", "n2", "n3"].iter().map(|n| spec(n)).collect();
    let cluster = specs
        .iter()
        .map(|s| format!("{}={}", s.name, s.peer))
        .collect::<Vec<_>>()
        .join(",");
    // All three start before any can be healthy: a member needs a quorum to elect a leader.
    let mut servers: Vec<Option<Server>> = specs
        .iter()
        .map(|s| Some(spawn(s, &cluster, "new", dir.path())))
        .collect();
    for (s, spec) in servers.iter_mut().zip(&specs) {
        s.as_mut().expect("running").wait_healthy(&spec.name);
    }
    let urls: Vec<&str> = specs.iter().map(|s| s.client.as_str()).collect();
    let http = client();

    // Writes on every member (followers forward to the leader), quorum reads on another.
    let mut acked = BTreeMap::new();
    for (i, u) in urls.iter().enumerate() {
        let key = format!("/k{i}");
        assert!(put_acked(&http, u, &key, "v"), "write on member {i}");
        acked.insert(key.clone(), "v".to_string());
        let other = urls[(i + 1) % urls.len()];
        assert_eq!(quorum_get(&http, other, &key).as_deref(), Some("v"));
    }
    wait_members_published(&http, urls[0], 3);

    // A long-poll watch on one member sees a write made through another.
    let leader = leader_of(&http, &urls);
    let follower = (leader + 1) % 3;
    let watch_url = format!("{}/v2/keys/watched?wait=true", urls[follower]);
    let watcher = std::thread::spawn(move || {
        client()
            .get(watch_url)
            .send()
            .and_then(|r| r.json::<serde_json::Value>())
    });
    // The watch registers asynchronously; keep writing until it fires.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    while !watcher.is_finished() {
        assert!(Instant::now() < deadline, "watch did not fire within 15 s");
        n += 1;
        assert!(put_acked(&http, urls[leader], "/watched", &format!("w{n}")));
        std::thread::sleep(Duration::from_millis(100));
    }
    let ev = watcher
        .join()
        .expect("watch thread")
        .expect("watch response");
    assert_eq!(ev["action"], "set");
    assert!(
        ev["node"]["value"]
            .as_str()
            .is_some_and(|v| v.starts_with('w'))
    );
    acked.insert("/watched".into(), format!("w{n}"));

    // kill -9 the leader while two clients write through the followers; every write
    // acknowledged before or after the kill must survive.
    let acked = Arc::new(Mutex::new(acked));
    let survivors: Vec<String> = (0..3)
        .filter(|i| *i != leader)
        .map(|i| urls[i].to_string())
        .collect();
    let writers: Vec<_> = survivors
        .iter()
        .enumerate()
        .map(|(w, url)| {
            let url = url.clone();
            let acked = Arc::clone(&acked);
            std::thread::spawn(move || {
                let http = client();
                for n in 0..30 {
                    let key = format!("/load/w{w}-{n}");
                    if put_acked(&http, &url, &key, "x") {
                        acked.lock().expect("lock").insert(key, "x".to_string());
                    }
                }
            })
        })
        .collect();
    // Kill while the writers are mid-stream: once a few of their writes were acknowledged.
    let before = acked.lock().expect("lock").len();
    let deadline = Instant::now() + Duration::from_secs(15);
    while acked.lock().expect("lock").len() < before + 5 {
        assert!(Instant::now() < deadline, "the writers made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    let victim_pid = servers[leader].as_ref().expect("running").pid();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &victim_pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let killed = servers[leader].take().expect("running");
    for w in writers {
        w.join().expect("writer thread");
    }
    let acked = Arc::try_unwrap(acked)
        .expect("writers done")
        .into_inner()
        .expect("lock");
    assert!(
        acked.len() >= 50,
        "only {} writes acknowledged around the leader's kill",
        acked.len()
    );
    for (k, v) in &acked {
        assert_eq!(
            quorum_get(&http, &survivors[0], k).as_deref(),
            Some(v.as_str()),
            "acknowledged write {k} lost"
        );
    }
    drop(killed);

    // The killed member restarts from its data directory and catches up.
    let mut restarted = spawn(&specs[leader], &cluster, "new", dir.path());
    restarted.wait_healthy("restarted member");
    for (k, v) in &acked {
        assert_eq!(
            quorum_get(&http, urls[leader], k).as_deref(),
            Some(v.as_str()),
            "{k} on the restarted member"
        );
    }
    servers[leader] = Some(restarted);

    // Remove a member, add a fourth, start it as a member of an existing cluster.
    let gone = (leader + 2) % 3;
    let gone_id = members(&http, urls[leader])
        .iter()
        .find(|m| m["name"] == specs[gone].name.as_str())
        .and_then(|m| m["id"].as_str().map(String::from))
        .expect("id of the member to remove");
    let r = http
        .delete(format!("{}/v2/members/{gone_id}", urls[leader]))
        .send()
        .expect("remove member");
    let status = r.status().as_u16();
    assert_eq!(status, 204, "member remove: {:?}", r.text());
    servers[gone] = None;
    // The removed member may have been the leader: wait for the two left to agree on one.
    let left: Vec<&str> = (0..3).filter(|i| *i != gone).map(|i| urls[i]).collect();
    leader_of(&http, &left);
    let n4 = spec("n4");
    // A change proposed during an election times out with its outcome unknown (as etcd's
    // does); like a client, retry until the member is listed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = members(&http, urls[leader])
            .iter()
            .any(|m| m["peerURLs"][0] == n4.peer.as_str());
        if listed {
            break;
        }
        let r = http
            .post(format!("{}/v2/members", urls[leader]))
            .header("Content-Type", "application/json")
            .body(format!("{{\"peerURLs\":[\"{}\"]}}", n4.peer))
            .send()
            .expect("add member");
        let status = r.status().as_u16();
        if status == 201 {
            break;
        }
        assert!(
            status >= 500 && Instant::now() < deadline,
            "member add: {status} {:?}",
            r.text()
        );
    }
    let mut cluster4: Vec<String> = (0..3)
        .filter(|i| *i != gone)
        .map(|i| format!("{}={}", specs[i].name, specs[i].peer))
        .collect();
    cluster4.push(format!("n4={}", n4.peer));
    let mut s4 = spawn(&n4, &cluster4.join(","), "existing", dir.path());
    s4.wait_healthy("n4");
    if let Err(e) = put_until_acked(&http, urls[leader], "/with-n4", "y") {
        let logs: Vec<String> = servers
            .iter()
            .flatten()
            .map(|s| s.log())
            .chain([s4.log()])
            .collect();
        panic!("{e}\nmember logs:\n{}", logs.join("\n----\n"));
    }
    let got = std::panic::catch_unwind(|| quorum_get(&client(), &n4.client, "/with-n4"));
    let Ok(got) = got else {
        panic!("n4 cannot serve a quorum read; its log:\n{}", s4.log());
    };
    assert_eq!(got.as_deref(), Some("y"));
    assert_eq!(quorum_get(&http, &n4.client, "/k0").as_deref(), Some("v"));
    // n4 lists its own attributes before their publication commits; the others list them
    // only once it has, so they are the ones to wait on before n4 stops.
    for u in &left {
        wait_members_published(&http, u, 3);
    }

    // n4 moves to another peer port: stopped, updated (etcd's member update), restarted on
    // the new URL from its data directory; the others reach it there.
    let n4_id = members(&http, urls[leader])
        .iter()
        .find(|m| m["peerURLs"][0] == n4.peer.as_str())
        .and_then(|m| m["id"].as_str().map(String::from))
        .expect("n4's id");
    s4.terminate();
    let moved = Spec {
        name: "n4".into(),
        client: n4.client.clone(),
        peer: format!("http://127.0.0.1:{}", util::free_port()),
    };
    let update = |body: String| {
        http.put(format!("{}/v2/members/{n4_id}", urls[leader]))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .expect("update member")
    };
    // Another member's URL is refused, as etcd does.
    let taken = update(format!("{{\"peerURLs\":[\"{}\"]}}", specs[leader].peer));
    assert_eq!(taken.status().as_u16(), 409, "{:?}", taken.text());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = update(format!("{{\"peerURLs\":[\"{}\"]}}", moved.peer));
        let status = r.status().as_u16();
        if status == 204 {
            break;
        }
        assert!(
            status >= 500 && Instant::now() < deadline,
            "member update: {status} {:?}",
            r.text()
        );
    }
    // A follower lists members from what it has applied, which may trail the leader's ack.
    for u in &left {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let listed = members(&http, u);
            if listed
                .iter()
                .any(|m| m["name"] == "n4" && m["peerURLs"][0] == moved.peer.as_str())
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{u} does not list n4's new peer URL within 15 s: {listed:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    cluster4.pop();
    cluster4.push(format!("n4={}", moved.peer));
    let mut s4 = spawn(&moved, &cluster4.join(","), "existing", dir.path());
    s4.wait_healthy("n4 on its new peer URL");
    assert!(put_acked(&http, urls[leader], "/after-move", "z"));
    let got = std::panic::catch_unwind(|| quorum_get(&client(), &moved.client, "/after-move"));
    let Ok(got) = got else {
        panic!(
            "n4 cannot serve a quorum read after moving; its log:\n{}",
            s4.log()
        );
    };
    assert_eq!(got.as_deref(), Some("z"));
}
