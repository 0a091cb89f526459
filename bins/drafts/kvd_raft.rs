// DRAFT, NOT COMPILED (no module declares this file). Written against raft-store's
// uncommitted API on 2026-11-25 (~14:40 UTC), never type-checked: raft-store did not build
// then. See bins/drafts/README.md for where it goes once raft-store is committed.

//! Running kvd on the replicated raft-store backend.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use raft_store::{GrpcTransport, Node};

use super::{Config, parse_initial_cluster, parse_urls, serve_backend};
use crate::store::raft::{KvMachine, RaftBackend, RaftIdentity, member_id};

fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn socket_addr(flag: &str, url: &str) -> anyhow::Result<SocketAddr> {
    let hp = url.trim_start_matches("http://").trim_end_matches('/');
    let hp = match hp.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => hp.to_owned(),
    };
    hp.parse().with_context(|| format!("--{flag}: {url}: expected an IP address and port"))
}

/// Runs kvd as a raft-store member until `shutdown` completes.
///
/// # Errors
/// Invalid flags, ports that cannot be bound, a data directory raft-store cannot open.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if config.cert_file.is_some() || config.key_file.is_some() || config.auto_tls {
        bail!("client TLS (--cert-file/--key-file/--auto-tls) is not supported by this kvd build");
    }
    if config.peer_cert_file.is_some() || config.peer_key_file.is_some() || config.peer_auto_tls {
        bail!("peer TLS is not supported by this kvd build");
    }
    let new_cluster = match config.initial_cluster_state.as_str() {
        "new" => true,
        "existing" => false,
        s => bail!("--initial-cluster-state: {s:?} is neither \"new\" nor \"existing\""),
    };
    if config.heartbeat_interval == 0 || config.election_timeout < 5 * config.heartbeat_interval {
        bail!(
            "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
            config.election_timeout,
            config.heartbeat_interval
        );
    }
    let listen = parse_urls("listen-client-urls", &config.listen_client_urls)?;
    let advertise = parse_urls("advertise-client-urls", &config.advertise_client_urls)?;
    let listen_peer = parse_urls("listen-peer-urls", &config.listen_peer_urls)?;
    let peers = parse_urls("initial-advertise-peer-urls", &config.initial_advertise_peer_urls)?;
    let token = config.initial_cluster_token.clone();
    let cluster = match &config.initial_cluster {
        Some(c) => parse_initial_cluster(c)?,
        None => peers
            .iter()
            .map(|u| super::InitialMember { name: config.name.clone(), peer_url: u.clone() })
            .collect(),
    };
    if !cluster.iter().any(|m| m.name == config.name) {
        bail!("--initial-cluster has no member named {:?} (--name)", config.name);
    }
    // Members are identified by their peer URLs and the token, so every member (and a
    // `member add` on any of them) computes the same ids.
    let mut members: Vec<raft_store::Member> = Vec::new();
    for m in &cluster {
        let urls: Vec<String> = cluster
            .iter()
            .filter(|o| o.name == m.name)
            .map(|o| o.peer_url.clone())
            .collect();
        let id = member_id(&urls, &token);
        if members.iter().any(|x| x.id == id) {
            continue;
        }
        let mut rm = raft_store::Member::new(id, m.name.clone());
        rm.peer_urls = urls;
        if m.name == config.name {
            rm.client_urls = advertise.clone();
        }
        members.push(rm);
    }
    let my_id = member_id(&peers, &token);
    let mut ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    let cluster_id = fnv(&[&format!("{ids:?}"), &token]);

    let mut client_listeners = Vec::new();
    for u in &listen {
        let a = socket_addr("listen-client-urls", u)?;
        client_listeners.push(
            tokio::net::TcpListener::bind(a).await.with_context(|| format!("binding client URL {u}"))?,
        );
    }
    let peer_addr = socket_addr("listen-peer-urls", &listen_peer[0])?;
    let (peer_listener, _) = raft_store::grpc::bind(peer_addr)
        .await
        .with_context(|| format!("binding peer URL {}", listen_peer[0]))?;

    let transport = GrpcTransport::new(cluster_id);
    let mut rc = raft_store::Config::new(my_id, config.data_dir().join("member"));
    if new_cluster {
        rc.initial_members = members;
    }
    rc.tick_interval = Duration::from_millis(config.heartbeat_interval);
    rc.heartbeat_ticks = 1;
    rc.election_ticks = (config.election_timeout / config.heartbeat_interval) as usize;
    rc.snapshot_entries = config.snapshot_count.max(1);
    rc.validate().context("raft configuration")?;
    let node = Node::open(rc, KvMachine::default(), transport.clone())
        .await
        .with_context(|| format!("opening the raft member in {}", config.data_dir().display()))?;
    let (stop_peer, peer_stopped) = tokio::sync::watch::channel(false);
    let peer_server = tokio::spawn(async move {
        let mut rx = peer_stopped;
        transport
            .serve(peer_listener, async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await
    });
    let backend = Arc::new(RaftBackend::new(node, RaftIdentity { cluster_id, token }));
    let stop = {
        let b = Arc::clone(&backend);
        async move {
            b.shutdown().await;
            Ok(())
        }
    };
    let res = serve_backend(backend, client_listeners, config.limits(), shutdown, stop).await;
    let _ = stop_peer.send(true);
    let _ = peer_server.await;
    res
}
