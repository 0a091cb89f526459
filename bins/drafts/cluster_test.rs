// DRAFT, NOT COMPILED (no module declares this file). Written against raft-store's
// uncommitted API on 2026-11-25 (~14:40 UTC), never type-checked: raft-store did not build
// then. See bins/drafts/README.md for where it goes once raft-store is committed.

//! A 3-member kvd cluster (3 processes on loopback, raft-store backend): writes on
//! followers, quorum reads, member remove/add, and kill -9 of the leader with no
//! acknowledged write lost.

use std::collections::BTreeMap;
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

fn start(s: &Spec, cluster: &str, state: &str, data: &std::path::Path) -> Server {
    let args = vec![
        "--name".to_string(),
        s.name.clone(),
        "--data-dir".into(),
        data.join(&s.name).display().to_string(),
        "--listen-client-urls".into(),
        s.client.clone(),
        "--advertise-client-urls".into(),
        s.client.clone(),
        "--listen-peer-urls".into(),
        s.peer.clone(),
        "--initial-advertise-peer-urls".into(),
        s.peer.clone(),
        "--initial-cluster".into(),
        cluster.into(),
        "--initial-cluster-state".into(),
        state.into(),
        "--heartbeat-interval".into(),
        "50".into(),
        "--election-timeout".into(),
        "500".into(),
    ];
    util::kvd_process(args, s.client.clone(), s.peer.clone())
}

/// PUT with retries while there is no leader; returns the response once acknowledged.
fn put_acked(http: &reqwest::blocking::Client, url: &str, key: &str, value: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let r = http.put(format!("{url}/v2/keys{key}")).form(&[("value", value)]).send();
        if let Ok(r) = r {
            if r.status().is_success() {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn quorum_get(http: &reqwest::blocking::Client, url: &str, key: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{url}/v2/keys{key}?quorum=true")).send() {
            if r.status().as_u16() == 404 {
                return None;
            }
            if r.status().is_success() {
                let v: serde_json::Value = r.json().ok()?;
                return v["node"]["value"].as_str().map(String::from);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("quorum read of {key} on {url} did not succeed within 15 s");
}

fn leader_of(http: &reqwest::blocking::Client, urls: &[String]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        for (i, u) in urls.iter().enumerate() {
            let st: Option<serde_json::Value> =
                http.get(format!("{u}/v2/stats/self")).send().ok().and_then(|r| r.json().ok());
            if st.is_some_and(|s| s["state"] == "StateLeader") {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no leader within 15 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_members_replicate_survive_leader_kill_and_change_membership() {
    let dir = tempfile::tempdir().expect("tempdir");
    let specs: Vec<Spec> = ["n1", "n2", "n3"].iter().map(|n| spec(n)).collect();
    let cluster = specs.iter().map(|s| format!("{}={}", s.name, s.peer)).collect::<Vec<_>>().join(",");
    let mut servers: Vec<Option<Server>> =
        specs.iter().map(|s| Some(start(s, &cluster, "new", dir.path()))).collect();
    let urls: Vec<String> = specs.iter().map(|s| s.client.clone()).collect();
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");

    // Writes on every member (followers forward), quorum reads on another one.
    let mut acked = BTreeMap::new();
    for (i, u) in urls.iter().enumerate() {
        let key = format!("/k{i}");
        assert!(put_acked(&http, u, &key, "v"), "write on member {i}");
        acked.insert(key.clone(), "v".to_string());
        let other = &urls[(i + 1) % urls.len()];
        assert_eq!(quorum_get(&http, other, &key).as_deref(), Some("v"));
    }
    let members: serde_json::Value =
        http.get(format!("{}/v2/members", urls[0])).send().expect("members").json().expect("json");
    assert_eq!(members["members"].as_array().map(Vec::len), Some(3));

    // kill -9 the leader while writing; every acknowledged write must survive.
    let leader = leader_of(&http, &urls);
    let victim_pid = servers[leader].as_ref().expect("running").pid();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &victim_pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    servers[leader] = None;
    let survivors: Vec<String> =
        urls.iter().enumerate().filter(|(i, _)| *i != leader).map(|(_, u)| u.clone()).collect();
    for n in 0..20 {
        let key = format!("/after{n}");
        if put_acked(&http, &survivors[n % 2], &key, "w") {
            acked.insert(key, "w".into());
        }
    }
    assert!(acked.len() > 3, "no write acknowledged after the leader was killed");
    for (k, v) in &acked {
        assert_eq!(quorum_get(&http, &survivors[0], k).as_deref(), Some(v.as_str()), "{k} lost");
    }

    // Remove the dead member, add a new one, and start it as an existing-cluster member.
    let ids: Vec<(String, String)> = members["members"]
        .as_array()
        .expect("array")
        .iter()
        .map(|m| (m["name"].as_str().unwrap_or_default().to_string(), m["id"].as_str().unwrap_or_default().to_string()))
        .collect();
    let dead_id = &ids.iter().find(|(n, _)| *n == specs[leader].name).expect("dead member").1;
    let r = http.delete(format!("{}/v2/members/{dead_id}", survivors[0])).send().expect("remove");
    assert_eq!(r.status().as_u16(), 204);
    let n4 = spec("n4");
    let r = http
        .post(format!("{}/v2/members", survivors[0]))
        .header("Content-Type", "application/json")
        .body(format!("{{\"peerURLs\":[\"{}\"]}}", n4.peer))
        .send()
        .expect("add");
    assert_eq!(r.status().as_u16(), 201);
    let mut cluster4: Vec<String> = specs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, s)| format!("{}={}", s.name, s.peer))
        .collect();
    cluster4.push(format!("n4={}", n4.peer));
    let _n4 = start(&n4, &cluster4.join(","), "existing", dir.path());
    assert!(put_acked(&http, &survivors[1], "/with-n4", "x"));
    assert_eq!(quorum_get(&http, &n4.client, "/with-n4").as_deref(), Some("x"));
}
