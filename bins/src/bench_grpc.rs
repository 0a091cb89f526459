//! kvbench's gRPC mode (`--api grpc`): the same workloads as the HTTP mode, over each
//! server's native gRPC API: kvd's `kv.v1` and etcd's v3 KV service (Range, Put, through
//! the minimal client generated from `proto/etcdserverpb/kv_subset.proto`).
//!
//! Quorum gets are kv.v1's linearizable `Get` and etcd's default (linearizable) `Range`;
//! plain gets are serializable on both. etcd keeps its v2 and v3 key spaces apart, so the
//! preload writes through the API being measured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use proto::etcdserverpb as v3;
use proto::kv_v1 as kv;
use tonic::transport::{Channel, Endpoint};

use crate::bench::{BenchConfig, Sample};

/// Which native API a target speaks: kvd's kv.v1 or etcd's v3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Native {
    /// kvd: `kv.v1`.
    Kvd,
    /// etcd: `etcdserverpb.KV`.
    Etcd,
}

impl Native {
    /// The API of a target named as in the report (`kvd` or `etcd`).
    pub fn of(target: &str) -> Native {
        if target == "etcd" {
            Native::Etcd
        } else {
            Native::Kvd
        }
    }
}

/// One connection's client.
#[derive(Clone)]
enum Client {
    Kvd(kv::kv_client::KvClient<Channel>),
    Etcd(v3::kv_client::KvClient<Channel>),
}

async fn connect(url: &str, native: Native) -> anyhow::Result<Client> {
    let ch = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("endpoint {url}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))?;
    Ok(match native {
        Native::Kvd => Client::Kvd(kv::kv_client::KvClient::new(ch)),
        Native::Etcd => Client::Etcd(v3::kv_client::KvClient::new(ch)),
    })
}

impl Client {
    async fn put(&mut self, key: String, value: &str) -> Result<(), tonic::Status> {
        match self {
            Client::Kvd(c) => c
                .put(kv::PutRequest {
                    key,
                    value: value.to_owned(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Client::Etcd(c) => c
                .put(v3::PutRequest {
                    key: key.into_bytes(),
                    value: value.as_bytes().to_vec(),
                    ..Default::default()
                })
                .await
                .map(drop),
        }
    }

    async fn get(&mut self, key: String, quorum: bool) -> Result<(), tonic::Status> {
        match self {
            Client::Kvd(c) => {
                let consistency = if quorum {
                    kv::Consistency::Linearizable
                } else {
                    kv::Consistency::Serializable
                };
                c.get(kv::GetRequest {
                    key,
                    consistency: consistency as i32,
                    ..Default::default()
                })
                .await
                .map(drop)
            }
            Client::Etcd(c) => {
                let r = c
                    .range(v3::RangeRequest {
                        key: key.into_bytes(),
                        serializable: !quorum,
                        ..Default::default()
                    })
                    .await?;
                // A miss is an error on kvd (100); count it as one on etcd too.
                if r.get_ref().kvs.is_empty() {
                    return Err(tonic::Status::not_found("key not found"));
                }
                Ok(())
            }
        }
    }
}

/// Runs one workload (`put`, `get`, `qget`) against one target (its members' client URLs)
/// for `cfg.duration` with `conns` connections spread over the members (one HTTP/2
/// connection each, one request in flight on each).
pub async fn measure(
    target: &str,
    urls: &[String],
    op: &str,
    conns: usize,
    cfg: &BenchConfig,
    seed: u64,
) -> Sample {
    let native = Native::of(target);
    let value: Arc<str> = "v".repeat(cfg.value_size).into();
    let mut clients = Vec::with_capacity(conns);
    for c in 0..conns {
        match connect(&urls[c % urls.len()], native).await {
            Ok(c) => clients.push(c),
            Err(e) => {
                eprintln!("kvbench: {e:#}");
                return Sample {
                    errors: conns as u64,
                    ..Sample::default()
                };
            }
        }
    }
    // Connecting is not part of the measurement.
    let until = Instant::now() + Duration::from_secs_f64(cfg.duration);
    let mut tasks = Vec::new();
    for (c, mut client) in clients.into_iter().enumerate() {
        let op = op.to_owned();
        let value = Arc::clone(&value);
        let keys = cfg.keys.max(1);
        let mut x = seed ^ ((c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(4096);
            let mut errors = 0u64;
            while Instant::now() < until {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let key = format!("/bench/k{}", x % keys);
                let t = Instant::now();
                let res = match op.as_str() {
                    "put" => client.put(key, &value).await,
                    "qget" => client.get(key, true).await,
                    _ => client.get(key, false).await,
                };
                match res {
                    Ok(()) => lat.push(t.elapsed().as_micros() as u32),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    crate::bench::collect(tasks, cfg.duration).await
}

/// Writes every key once through the target's native API (64 connections spread over the
/// members) so gets find values.
///
/// # Errors
/// A connection or a put failed.
pub async fn preload(target: &str, urls: &[String], cfg: &BenchConfig) -> anyhow::Result<()> {
    let native = Native::of(target);
    let value: Arc<str> = "v".repeat(cfg.value_size).into();
    let conns = 64u64;
    let mut tasks = Vec::new();
    for c in 0..conns {
        let mut client = connect(&urls[c as usize % urls.len()], native).await?;
        let value = Arc::clone(&value);
        let keys = cfg.keys;
        tasks.push(tokio::spawn(async move {
            let mut k = c;
            while k < keys {
                client.put(format!("/bench/k{k}"), &value).await?;
                k += conns;
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    for t in tasks {
        t.await
            .context("preload task")?
            .with_context(|| format!("preloading {target} over gRPC"))?;
    }
    Ok(())
}
