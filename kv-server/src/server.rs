//! [`run`]: kvd's server, from a [`Config`] until a shutdown future completes.
//!
//! Backends (`--backend`):
//! * `raft` (the default): [`RaftBackend`], kv-core replicated by raft-store, with its raft
//!   log in RocksDB under `<data-dir>/member/raft` and gRPC between members on the peer URLs. A
//!   write is acknowledged once it is fsynced on a quorum. `--initial-cluster` bootstraps a
//!   cluster of any size; `--initial-cluster-state existing` joins one after `member add`.
//! * `memory`: the single-member [`MemoryBackend`], one `kv_core::Store` owned by one task,
//!   saved to `<data-dir>/member/snap/db` on graceful shutdown only: **not durable** against
//!   a crash and **not replicated**. Useful as a fast scratch store in tests.
//!
//! TLS follows etcd's flags: `https://` client URLs are served with `--cert-file` and
//! `--key-file` (or a self-signed pair that `--auto-tls` writes under
//! `<data-dir>/fixtures/client`), and `--trusted-ca-file` (with or without
//! `--client-cert-auth`) makes clients present a certificate one of those CAs issued.
//! `https://` peer URLs do the same between members with the `--peer-*` flags; members
//! verify each other against `--peer-trusted-ca-file`, or not at all with `--peer-auto-tls`
//! (self-signed certificates under `<data-dir>/fixtures/peer`), as etcd does.
//!
//! Renewed certificates need no restart, as in etcd 3.4: when the files of `--cert-file`/
//! `--key-file` or `--peer-cert-file`/`--peer-key-file` are replaced (or rewritten), new
//! connections get the new pair within about a second, on the client port, on the peer
//! port, and as the certificate this member presents to its peers; connections already open
//! keep theirs. `--client-crl-file` and `--peer-crl-file` are re-read the same way (etcd
//! reads them on every connection). A replacement that cannot be read, is not PEM, or whose
//! key does not belong to its certificate is logged as a warning naming the file and the
//! previous pair (or CRL) stays in use until the files change again; etcd would instead fail
//! the handshakes. `--trusted-ca-file` and `--peer-trusted-ca-file` are read at start-up
//! only, as etcd reads them: a new CA needs a restart.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::backend::KvBackend;
use crate::backend::machine::StoreMachine;
use crate::backend::memory::MemoryBackend;
use crate::backend::raft::{RaftBackend, RaftIdentity, fnv64, member_id};
use crate::config::{Config, parse_urls, socket_addr};
use crate::error::{Error, Result, bail_config, io};
use crate::http::{self, Limits};

/// Runs kvd until `shutdown` completes: binds the client and peer URLs, starts the
/// backend, serves the v2 API and `kv.v1`, then saves the store and stops.
///
/// # Errors
/// Invalid configuration, a port that cannot be bound, a data directory that cannot be read
/// or written.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    match config.backend.as_str() {
        "raft" => run_raft(config, None, None, shutdown).await,
        "memory" => run_memory(config, None, shutdown).await,
        other => bail_config!("--backend: {other:?} is neither \"raft\" nor \"memory\""),
    }
}

/// Sockets bound by the caller, for [`run_with`]: tests and embedders bind `127.0.0.1:0`
/// and put the ports they got into the [`Config`]'s URLs.
#[derive(Debug)]
pub struct Listeners {
    /// One per `--listen-client-urls` URL, in order; the URL's scheme decides whether it
    /// serves TLS.
    pub client: Vec<tokio::net::TcpListener>,
    /// The `--listen-peer-urls` socket (the raft backend's peers); `None` binds the URL
    /// (the memory backend has no peers and ignores it).
    pub peer: Option<tokio::net::TcpListener>,
}

/// [`run`] on sockets already bound (see [`Listeners`]) instead of binding the URLs.
///
/// # Errors
/// As for [`run`]; a number of client sockets other than of client URLs.
pub async fn run_with(
    config: Config,
    listeners: Listeners,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    match config.backend.as_str() {
        "raft" => run_raft(config, Some(listeners), None, shutdown).await,
        "memory" => run_memory(config, Some(listeners), shutdown).await,
        other => bail_config!("--backend: {other:?} is neither \"raft\" nor \"memory\""),
    }
}

/// A bound client URL and, for an `https://` one, the TLS it serves.
#[derive(Debug)]
pub struct ClientListener {
    /// The bound socket.
    pub listener: tokio::net::TcpListener,
    /// The TLS configuration of an `https://` URL; `None` serves cleartext.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Builds the client TLS (before binding, so a bad certificate fails before any port is
/// taken) and binds every `--listen-client-urls` URL, or takes the sockets of `bound`.
async fn bind_all(
    config: &Config,
    addrs: &[SocketAddr],
    bound: Option<Vec<tokio::net::TcpListener>>,
) -> Result<Vec<ClientListener>> {
    let tls = config.client_tls()?;
    let urls = parse_urls("listen-client-urls", &config.listen_client_urls)?;
    let sockets = match bound {
        Some(sockets) if sockets.len() == urls.len() => sockets,
        Some(sockets) => bail_config!(
            "{} client sockets given for {} --listen-client-urls URLs",
            sockets.len(),
            urls.len()
        ),
        None => {
            let mut sockets = Vec::new();
            for (a, u) in addrs.iter().zip(&urls) {
                let listener = tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(io(format!("binding client URL {u}")))?;
                sockets.push(listener);
            }
            sockets
        }
    };
    let listeners = sockets
        .into_iter()
        .zip(&urls)
        .map(|(listener, u)| ClientListener {
            listener,
            tls: tls.clone().filter(|_| u.starts_with("https://")),
        })
        .collect();
    Ok(listeners)
}

async fn run_memory(
    config: Config,
    bound: Option<Listeners>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (mem, addrs) = config.validate()?;
    let others = config
        .initial_members(&mem.peer_urls)?
        .into_iter()
        .filter(|m| m.name != config.name)
        .count();
    if others > 0 {
        bail_config!(
            "--initial-cluster names {others} other member(s): the memory backend runs one member; use --backend raft"
        );
    }
    let listeners = bind_all(&config, &addrs, bound.map(|b| b.client)).await?;
    let data_dir = mem.data_dir.clone();
    let backend = Arc::new(
        MemoryBackend::open(mem)
            .await
            .map_err(|source| Error::Memory {
                what: format!("opening the store in {}", data_dir.display()),
                source,
            })?,
    );
    let limits = config.limits();
    let shutdown_backend = {
        let b = Arc::clone(&backend);
        async move {
            b.shutdown().await.map_err(|source| Error::Memory {
                what: "saving the store".into(),
                source,
            })
        }
    };
    serve_backend(backend, listeners, limits, shutdown, shutdown_backend).await
}

/// What `<data-dir>/member/identity.json` records.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedIdentity {
    id: u64,
    cluster_id: u64,
}

/// Member ids, the cluster id and the initial member list from the flags.
fn raft_members(config: &Config) -> Result<(u64, u64, Vec<raft_store::Member>)> {
    let peers = parse_urls(
        "initial-advertise-peer-urls",
        &config.initial_advertise_peer_urls,
    )?;
    let token = &config.initial_cluster_token;
    let cluster = config.initial_members(&peers)?;
    let mut members: Vec<raft_store::Member> = Vec::new();
    for m in &cluster {
        if members.iter().any(|x| x.name == m.name) {
            continue;
        }
        let urls: Vec<String> = cluster
            .iter()
            .filter(|o| o.name == m.name)
            .map(|o| o.peer_url.clone())
            .collect();
        parse_urls("initial-cluster", &urls.join(","))?;
        let id = member_id(&urls, token);
        if members.iter().any(|x| x.id == id) {
            bail_config!(
                "--initial-cluster: member {:?} has the same peer URLs as another member",
                m.name
            );
        }
        // Client URLs are published through the log once each member runs; the bootstrap
        // entries must be identical on every member, so they carry none.
        let mut rm = raft_store::Member::new(id, m.name.clone());
        rm.peer_urls = urls;
        members.push(rm);
    }
    let my_id = member_id(&peers, token);
    match members.iter().find(|m| m.name == config.name) {
        Some(m) if m.id == my_id => {}
        Some(m) => bail_config!(
            "--initial-cluster: the peer URLs given for {:?} ({}) differ from --initial-advertise-peer-urls ({})",
            config.name,
            m.peer_urls.join(","),
            peers.join(",")
        ),
        None => bail_config!(
            "--initial-cluster has no member named {:?} (--name)",
            config.name
        ),
    }
    // The cluster id comes from the token alone: a member joining with
    // `--initial-cluster-state existing` lists today's members, not the bootstrap set, yet
    // must compute the same id (peers refuse messages carrying another cluster's id). As
    // with etcd, give every cluster its own token.
    let cluster_id = fnv64(&["cluster", token]);
    Ok((my_id, cluster_id, members))
}

/// [`run`] with the raft backend, handing the running backend to `ready` once it serves, so
/// a program that embeds the store can also use it directly, without a client (fleetd's
/// registry does). `listeners` as for [`run_with`]; `None` binds the configured URLs.
///
/// # Errors
/// As for [`run`].
pub async fn run_embedded(
    config: Config,
    listeners: Option<Listeners>,
    ready: tokio::sync::oneshot::Sender<Arc<RaftBackend>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    run_raft(config, listeners, Some(ready), shutdown).await
}

async fn run_raft(
    config: Config,
    bound: Option<Listeners>,
    ready: Option<tokio::sync::oneshot::Sender<Arc<RaftBackend>>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (_, addrs) = config.validate()?;
    let new_cluster = config.initial_cluster_state == "new";
    let advertise = parse_urls("advertise-client-urls", &config.advertise_client_urls)?;
    let listen_peer = parse_urls("listen-peer-urls", &config.listen_peer_urls)?;
    if listen_peer.len() > 1 {
        bail_config!("--listen-peer-urls: this kvd build listens on one peer URL");
    }
    let (mut my_id, mut cluster_id, members) = raft_members(&config)?;
    // A member keeps the identity it was created with, whatever the flags say now (etcd reads
    // it back from its WAL): restarting with other peer URLs must not make it a stranger to
    // its own log.
    let identity_file = config.data_dir().join("member").join("identity.json");
    match std::fs::read(&identity_file) {
        Ok(bytes) => {
            let saved: SavedIdentity =
                serde_json::from_slice(&bytes).map_err(|source| Error::Identity {
                    what: format!("{}: not a kvd member identity", identity_file.display()),
                    source,
                })?;
            if saved.id != my_id {
                tracing::warn!(
                    saved = %format!("{:x}", saved.id),
                    flags = %format!("{my_id:x}"),
                    "the data directory belongs to another member id than the flags give; keeping the stored one"
                );
            }
            my_id = saved.id;
            cluster_id = saved.cluster_id;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(format!("reading {}", identity_file.display()))(e)),
    }

    let peer_tls = config.peer_tls(&listen_peer[0], &members)?;
    let (client_sockets, peer_socket) = match bound {
        Some(Listeners { client, peer }) => (Some(client), peer),
        None => (None, None),
    };
    let listeners = bind_all(&config, &addrs, client_sockets).await?;
    let peer_listener = match peer_socket {
        Some(l) => l,
        None => {
            let peer_addr = socket_addr("listen-peer-urls", &listen_peer[0])?;
            let (l, _) = raft_store::grpc::bind(peer_addr)
                .await
                .map_err(io(format!("binding peer URL {}", listen_peer[0])))?;
            l
        }
    };

    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir).map_err(io(format!(
        "creating the data directory {}",
        data_dir.display()
    )))?;
    let transport = match peer_tls {
        Some(tls) => raft_store::GrpcTransport::with_tls(cluster_id, tls),
        None => raft_store::GrpcTransport::new(cluster_id),
    };
    // A member joining an existing cluster knows nobody until it has applied the membership
    // entries the leader sends it, yet it must answer the leader to receive them: seed the
    // transport with the peers named in --initial-cluster (the log's entries update them).
    for m in members.iter().filter(|m| m.id != my_id) {
        raft_store::Transport::set_peer(&transport, m.id, &m.peer_urls);
    }
    // `member/raft` holds raft-store's directory; `member/snap/db` is where a restored (or
    // memory-backend) store waits to seed a new cluster.
    let raft_dir = data_dir.join("member").join("raft");
    let mut rc = raft_store::Config::new(my_id, &raft_dir);
    let initialised = raft_dir.join(raft_store::storage::VERSION_FILE).exists();
    if new_cluster && !initialised {
        rc.initial_members = members;
    }
    // A store left by `kvctl snapshot restore` (or by the memory backend) in a data
    // directory raft-store has not initialised yet becomes the new cluster's initial state.
    let seed = data_dir.join("member").join("snap").join("db");
    let seeded = new_cluster && !initialised && seed.exists();
    let (machine, handle) = if seeded {
        let f = std::fs::File::open(&seed)
            .map_err(io(format!("reading the restored store {}", seed.display())))?;
        let restored =
            StoreMachine::from_snapshot(&mut std::io::BufReader::new(f)).map_err(|source| {
                Error::Snapshot {
                    what: format!("loading the restored store {}", seed.display()),
                    source,
                }
            })?;
        rc.bootstrap_from_machine = true;
        tracing::info!(path = %seed.display(), "starting the new cluster from a restored store");
        restored
    } else {
        StoreMachine::new()
    };
    rc.tick_interval = std::time::Duration::from_millis(config.heartbeat_interval.max(1));
    rc.heartbeat_ticks = 1;
    rc.election_ticks = usize::try_from(config.election_timeout / config.heartbeat_interval.max(1))
        .unwrap_or(usize::MAX);
    rc.snapshot_entries = config.snapshot_count.max(1);
    rc.validate().map_err(|source| Error::Raft {
        what: "raft configuration".into(),
        source,
    })?;
    let node = raft_store::Node::open(rc, machine, transport.clone())
        .await
        .map_err(|source| Error::Raft {
            what: format!("opening the data directory {}", data_dir.display()),
            source,
        })?;
    if !identity_file.exists() {
        let saved = SavedIdentity {
            id: my_id,
            cluster_id,
        };
        let tmp = identity_file.with_extension("tmp");
        serde_json::to_vec(&saved)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &identity_file))
            .map_err(io(format!("writing {}", identity_file.display())))?;
    }
    if seeded {
        // The bootstrap snapshot now holds the restored state; the file must not seed again.
        let done = seed.with_extension("restored");
        std::fs::rename(&seed, &done).map_err(io(format!(
            "renaming {} to {}",
            seed.display(),
            done.display()
        )))?;
    }
    let (stop_peer, peer_stopped) = tokio::sync::watch::channel(false);
    let peer_server = tokio::spawn(async move {
        let mut rx = peer_stopped;
        transport
            .serve(peer_listener, async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await
    });
    let identity = RaftIdentity {
        cluster_id,
        token: config.initial_cluster_token.clone(),
        name: config.name.clone(),
        client_urls: advertise,
    };
    tracing::info!(id = %format!("{my_id:x}"), cluster = %format!("{cluster_id:x}"), "raft member started");
    let backend = Arc::new(RaftBackend::new(node, handle, identity));
    if let Some(ready) = ready {
        let _ = ready.send(Arc::clone(&backend));
    }
    let stop = {
        let b = Arc::clone(&backend);
        async move {
            b.shutdown().await;
            Ok(())
        }
    };
    let res = serve_backend(backend, listeners, config.limits(), shutdown, stop).await;
    let _ = stop_peer.send(true);
    // A graceful stop waits for peers' streams to close; a peer that keeps its stream open
    // must not keep this process from exiting.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), peer_server).await;
    res
}

/// Serves the v2 API over `backend` on every listener until `shutdown` completes, then runs
/// `stop_backend` (which must end open watches) and waits for the servers to finish.
///
/// # Errors
/// A listener failed, or stopping the backend failed.
pub async fn serve_backend<B: KvBackend>(
    backend: Arc<B>,
    listeners: Vec<ClientListener>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    stop_backend: impl std::future::Future<Output = Result<()>>,
) -> Result<()> {
    let router = http::router(backend, limits);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    for ClientListener { listener, tls } in listeners {
        let addr = listener
            .local_addr()
            .map_err(io("reading a client listener's address"))?;
        tracing::info!(%addr, tls = tls.is_some(), "serving client requests");
        let mut rx = stop_rx.clone();
        let r = router.clone();
        let stop = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        match tls {
            Some(config) => servers.spawn(http::serve_tls(listener, config, r, stop)),
            None => servers.spawn(http::serve(listener, r, stop)),
        };
    }
    shutdown.await;
    tracing::info!("shutting down");
    // Ending the backend first closes every watch stream, so graceful HTTP shutdown does not
    // wait for long polls that would never end.
    stop_backend.await?;
    let _ = stop_tx.send(true);
    while let Some(r) = servers.join_next().await {
        r?.map_err(io("serving"))?;
    }
    Ok(())
}
