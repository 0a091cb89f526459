//! The v2 HTTP API served in-process on 127.0.0.1:0 over the memory backend: watches,
//! expiry, limits, members, metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_server::backend::memory::{MemoryBackend, MemoryConfig};
use kv_server::http::{Limits, router, serve};

fn config() -> MemoryConfig {
    MemoryConfig {
        id: 0x1234,
        cluster_id: 0xabcd,
        name: "t".into(),
        peer_urls: vec!["http://127.0.0.1:2380".into()],
        client_urls: vec!["http://127.0.0.1:2379".into()],
        data_dir: Default::default(),
    }
}

/// Serves a fresh ephemeral store; returns its base URL.
async fn start(limits: Limits) -> String {
    let backend = Arc::new(MemoryBackend::ephemeral(config()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve(
        listener,
        router(backend, limits),
        std::future::pending(),
    ));
    format!("http://{addr}")
}

async fn put(
    c: &reqwest::Client,
    url: &str,
    key: &str,
    form: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let r = c
        .put(format!("{url}/v2/keys{key}"))
        .form(form)
        .send()
        .await
        .expect("PUT");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json"))
}

#[tokio::test]
async fn stream_watch_flushes_headers_then_delivers_every_event() {
    let url = start(Limits::default()).await;
    let c = reqwest::Client::new();
    // The headers must arrive before any event exists (etcd flushes them at once).
    let mut resp = tokio::time::timeout(
        Duration::from_secs(5),
        c.get(format!(
            "{url}/v2/keys/w?wait=true&stream=true&recursive=true"
        ))
        .send(),
    )
    .await
    .expect("headers were not flushed before the first event")
    .expect("watch");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["X-Etcd-Index"], "0");
    for v in ["1", "2", "3"] {
        put(&c, &url, "/w/k", &[("value", v)]).await;
    }
    let mut body = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while body.lines().count() < 3 {
        let chunk = tokio::time::timeout_at(deadline.into(), resp.chunk())
            .await
            .expect("events within 5 s")
            .expect("chunk")
            .expect("stream still open");
        body.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
    }
    let values: Vec<String> = body
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["node"]["value"].to_string()
        })
        .collect();
    assert_eq!(values, ["\"1\"", "\"2\"", "\"3\""]);
}

#[tokio::test]
async fn ttl_keys_expire_and_watchers_see_the_expire_event() {
    let url = start(Limits::default()).await;
    let c = reqwest::Client::new();
    let (status, body) = put(&c, &url, "/t", &[("value", "v"), ("ttl", "1")]).await;
    assert_eq!(status, 201);
    assert_eq!(body["node"]["ttl"], 1);
    let watch = c.get(format!("{url}/v2/keys/t?wait=true")).send();
    let resp = tokio::time::timeout(Duration::from_secs(10), watch)
        .await
        .expect("expire within 10 s")
        .expect("watch");
    let ev: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(ev["action"], "expire");
    assert_eq!(ev["prevNode"]["value"], "v");
    let r = c.get(format!("{url}/v2/keys/t")).send().await.expect("GET");
    assert_eq!(r.status(), 404);
    let stats: serde_json::Value = c
        .get(format!("{url}/v2/stats/store"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["expireCount"], 1);
}

#[tokio::test]
async fn limits_give_etcd_errors_not_crashes() {
    let limits = Limits {
        max_request_bytes: 1024,
        max_watchers: 1,
        ..Limits::default()
    };
    let url = start(limits).await;
    let c = reqwest::Client::new();
    let big = "x".repeat(4096);
    let r = c
        .put(format!("{url}/v2/keys/big"))
        .form(&[("value", big.as_str())])
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 500);
    let e: serde_json::Value = r.json().await.expect("json");
    assert_eq!(e["errorCode"], 300);
    assert_eq!(e["cause"], "etcdserver: request is too large");

    let _first = c
        .get(format!("{url}/v2/keys/w?wait=true"))
        .send()
        .await
        .expect("first watch");
    let r = c
        .get(format!("{url}/v2/keys/w?wait=true"))
        .send()
        .await
        .expect("second watch");
    assert_eq!(r.status(), 500);
    let e: serde_json::Value = r.json().await.expect("json");
    assert!(
        e["cause"]
            .as_str()
            .unwrap_or_default()
            .contains("too many watchers"),
        "{e}"
    );
    // The server still serves.
    let (status, _) = put(&c, &url, "/ok", &[("value", "1")]).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn members_stats_metrics_and_errors() {
    let url = start(Limits::default()).await;
    let c = reqwest::Client::new();
    let m: serde_json::Value = c
        .get(format!("{url}/v2/members"))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(m["members"][0]["id"], "1234");
    let leader: serde_json::Value = c
        .get(format!("{url}/v2/members/leader"))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(leader["name"], "t");
    let r = c
        .post(format!("{url}/v2/members"))
        .body("{}")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 415);
    let r = c
        .delete(format!("{url}/v2/members/ffff"))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), 404);
    let r = c
        .get(format!("{url}/v2/machines"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.text().await.expect("text"), "http://127.0.0.1:2379");
    let r = c.get(format!("{url}/health")).send().await.expect("GET");
    assert_eq!(r.text().await.expect("text"), "{\"health\":\"true\"}");
    let r = c.get(format!("{url}/metrics")).send().await.expect("GET");
    let text = r.text().await.expect("text");
    assert!(text.contains("\netcd_server_has_leader 1\n"), "{text}");
    let r = c.get(format!("{url}/nope")).send().await.expect("GET");
    assert_eq!(r.status(), 404);
    let r = c
        .patch(format!("{url}/v2/keys/a"))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), 405);
    let r = c
        .get(format!("{url}/v2/keys/a?recursive=maybe"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await.expect("json");
    assert_eq!(
        (e["errorCode"].as_u64(), e["index"].as_u64()),
        (Some(209), Some(0))
    );
}
