//! fleetd: one machine of a fleet cluster, its roles composed over one registry.
//!
//! [`run`] starts, over the store the configuration names, the engine (unless
//! `disable_engine`), the agent with the unit driver the host allows (systemd over D-Bus
//! when systemd is PID 1 and answers, otherwise the native supervisor), and the `/fleet/v1`
//! API (and its gRPC form, `fleet.v1`) on its unix socket and TCP address, with `/metrics`.
//! When `shutdown` completes it stops them as fleet does: the agent stops its units and
//! removes the machine's presence, the engine gives its lease up, the API finishes the
//! requests in flight.

pub mod host;
pub mod metrics;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use systemd_driver::{
    Instance, ProcessDriver, ProcessDriverConfig, SystemdDriver, SystemdDriverConfig, UnitDriver,
};
use tokio::sync::watch;

use crate::agent::{Agent, AgentConfig, AgentError, Presence};
use crate::api::{self, ApiConfig};
use crate::config::Config;
use crate::engine::{Engine, EngineConfig, EngineError};
use crate::registry::{Keys, Registry};
use crate::store::KvStore;

/// The version fleetd publishes (in presence records and the `Server` header).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why fleetd could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The host's identity.
    #[error(transparent)]
    Host(#[from] host::HostError),
    /// The engine's settings.
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    /// The agent's settings, or its driver failed.
    #[error("agent: {0}")]
    Agent(#[from] AgentError),
    /// The unit driver could not be opened.
    #[error("unit driver: {0}")]
    Driver(#[from] systemd_driver::Error),
    /// The embedded store failed.
    #[cfg(feature = "embedded")]
    #[error("embedded store: {0}")]
    EmbeddedStore(#[from] kv_server::Error),
    /// The store could not be used.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A listener could not be set up.
    #[error("{what} {addr}: {source}")]
    Listen {
        /// Which listener.
        what: &'static str,
        /// Its address or path.
        addr: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// A future that completes when `rx` says so; one per component.
fn stopped(rx: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// The unit driver fleetd picked.
enum Picked {
    Systemd(SystemdDriver),
    Process(ProcessDriver),
}

/// systemd when it is PID 1 (or `systemd_user` asks for the user manager) and answers on
/// D-Bus; otherwise the native supervisor, keeping its state under `state_dir`.
async fn pick_driver(config: &Config, state_dir: PathBuf) -> Result<Picked, DaemonError> {
    if config.systemd_user || systemd_driver::booted_with_systemd() {
        let mut c = SystemdDriverConfig::system();
        if config.systemd_user {
            c.instance = Instance::User;
        }
        c.units_dir = config.units_directory.clone();
        match SystemdDriver::connect(c).await {
            Ok(d) => {
                tracing::info!("driving systemd over D-Bus");
                return Ok(Picked::Systemd(d));
            }
            Err(e) if config.systemd_user => return Err(e.into()),
            Err(e) => tracing::warn!("systemd is not reachable ({e}); using the native supervisor"),
        }
    }
    tracing::info!(state = %state_dir.display(), "running units with the native supervisor");
    Ok(Picked::Process(
        ProcessDriver::open(ProcessDriverConfig::new(state_dir)).await?,
    ))
}

/// Where fleetd's registry lives.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreChoice {
    /// A member of the embedded replicated store, configured as kvd is (its data
    /// directory, client and peer URLs, initial cluster); it also serves the etcd v2 API
    /// and `kv.v1` on its client URLs, so etcdctl and fleet's own tools read the registry.
    #[cfg(feature = "embedded")]
    Embedded(Box<kv_server::Config>),
    /// Any etcd v2 endpoints, over HTTP.
    Etcd(Vec<String>),
    /// kvd members, over gRPC `kv.v1` (with transactions, so engine writes are fenced in
    /// one write).
    Kvd(Vec<String>),
}

impl StoreChoice {
    /// The store a `--store` value names: `kvd://host:port,...` for kvd members over gRPC,
    /// `http(s)://...` for etcd v2 endpoints.
    pub fn from_url(urls: &str) -> StoreChoice {
        let list = crate::config::parse_list(urls);
        if list
            .iter()
            .any(|u| u.starts_with(crate::store::kvd::KVD_SCHEME))
        {
            StoreChoice::Kvd(list)
        } else {
            StoreChoice::Etcd(list)
        }
    }
}

/// Runs fleetd until `shutdown` completes: the store it is given (starting the embedded
/// one, which stops last, after the agent has removed the machine from the cluster), then
/// the roles ([`run_with_store`]).
///
/// # Errors
/// When the store or a role cannot be set up.
pub async fn run(
    config: Config,
    store: StoreChoice,
    state_dir: PathBuf,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    match store {
        StoreChoice::Kvd(members) => {
            let store = crate::store::kvd::KvdStore::with_tls(
                &members,
                None,
                config
                    .etcd_request_timeout
                    .max(std::time::Duration::from_secs(1)),
            )?;
            run_with_store(&config, store, state_dir, shutdown).await
        }
        StoreChoice::Etcd(endpoints) => {
            let client = reqwest::Client::builder().build().map_err(|e| {
                crate::store::StoreError::Protocol {
                    endpoint: endpoints.join(","),
                    detail: format!("cannot build an HTTP client: {e}"),
                }
            })?;
            let store = crate::store::etcd::EtcdStore::with_client(
                &endpoints,
                client,
                config
                    .etcd_request_timeout
                    .max(std::time::Duration::from_secs(1)),
            )?;
            run_with_store(&config, store, state_dir, shutdown).await
        }
        #[cfg(feature = "embedded")]
        StoreChoice::Embedded(member) => {
            let label = member.advertise_client_urls.clone();
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            let (stop_store, store_rx) = watch::channel(false);
            let mut server = tokio::spawn(kv_server::run_embedded(
                *member,
                None,
                ready_tx,
                stopped(&store_rx),
            ));
            let backend = tokio::select! {
                b = ready_rx => b.ok(),
                r = &mut server => {
                    return match r {
                        Ok(Err(e)) => Err(e.into()),
                        _ => Err(DaemonError::EmbeddedStore(kv_server::Error::Config(
                            "the embedded store stopped while starting".into(),
                        ))),
                    };
                }
            };
            let Some(backend) = backend else {
                return match server.await {
                    Ok(Err(e)) => Err(e.into()),
                    _ => Err(DaemonError::EmbeddedStore(kv_server::Error::Config(
                        "the embedded store stopped while starting".into(),
                    ))),
                };
            };
            let store = crate::store::embedded::EmbeddedStore::new(backend, label);
            let result = run_with_store(&config, store, state_dir, shutdown).await;
            let _ = stop_store.send(true);
            match server.await {
                Ok(Err(e)) => tracing::warn!("embedded store: {e}"),
                Err(e) => tracing::warn!("embedded store: {e}"),
                Ok(Ok(())) => {}
            }
            result
        }
    }
}

/// Runs fleetd's roles over `store` until `shutdown` completes. `state_dir` is where the
/// native supervisor, if used, keeps its units.
///
/// # Errors
/// When a role cannot be set up; a role that fails later is logged and the others go on.
pub async fn run_with_store<S: KvStore>(
    config: &Config,
    store: S,
    state_dir: PathBuf,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let machine_id = host::machine_id(
        config.machine_id.as_deref(),
        std::path::Path::new(host::MACHINE_ID_FILE),
    )?;
    let public_ip = config
        .public_ip
        .clone()
        .or_else(|| host::default_route_ip().map(|ip| ip.to_string()))
        .unwrap_or_default();
    tracing::info!(machine = %machine_id, ip = %public_ip, store = store.endpoint(), "fleetd starting");
    let registry = Arc::new(Registry::with_keys(
        store,
        Keys::new(&config.etcd_key_prefix),
    ));
    match pick_driver(config, state_dir).await? {
        Picked::Systemd(d) => {
            run_roles(
                config,
                registry,
                Arc::new(d),
                machine_id,
                public_ip,
                shutdown,
            )
            .await
        }
        Picked::Process(d) => {
            run_roles(
                config,
                registry,
                Arc::new(d),
                machine_id,
                public_ip,
                shutdown,
            )
            .await
        }
    }
}

async fn run_roles<S: KvStore, D: UnitDriver>(
    config: &Config,
    registry: Arc<Registry<S>>,
    driver: Arc<D>,
    machine_id: String,
    public_ip: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let (tx, rx) = watch::channel(false);
    let tx = Arc::new(tx);
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(true);
        });
    }

    let mut engine_config = EngineConfig::new(machine_id.clone())
        .with_reconcile_interval(config.engine_reconcile_interval);
    engine_config.disabled = config.disable_engine;
    // The engine waits one presence TTL before it treats a machine it has not seen since
    // a store outage as gone, and its lease must not outlive a presence (the engine's
    // docs say why).
    engine_config.presence_grace = config.agent_ttl;
    engine_config.lease_ttl = engine_config.lease_ttl.min(config.agent_ttl);
    let engine = Engine::new(registry.clone(), engine_config)?;
    let engine_handle = engine.handle();

    let agent_config = AgentConfig {
        machine_id,
        public_ip,
        metadata: config.metadata.clone(),
        capabilities: [
            ("DISABLE_ENGINE".to_owned(), config.disable_engine),
            ("GRPC".to_owned(), false),
        ]
        .into(),
        version: VERSION.to_owned(),
        capacity: Some(host::capacity()),
        agent_ttl: config.agent_ttl,
        ..AgentConfig::default()
    };
    let agent = Agent::new(agent_config, registry.clone(), driver)?;
    let metrics = metrics::Sources {
        engine: engine_handle,
        agent: agent.counters(),
    };

    let api_config = ApiConfig {
        token_limit: std::num::NonZeroU16::new(config.token_limit)
            .unwrap_or(ApiConfig::default().token_limit),
        version: VERSION.to_owned(),
    };
    // fleet answers 503 until the machine is registered, and while it is cut off.
    let presence = agent.presence();
    let router = api::router_with_grpc(registry, api_config, metrics::router(metrics)).layer(
        axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let alive = matches!(*presence.borrow(), Presence::Alive);
                async move {
                    if alive || req.uri().path() == "/metrics" {
                        next.run(req).await
                    } else {
                        api::grpc::refusal(
                            &req,
                            api::ApiError::new(
                                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                api::UNAVAILABLE,
                            ),
                        )
                    }
                }
            },
        ),
    );
    let mut servers = Vec::new();
    if let Some(addr) = &config.api_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Listen {
                what: "API address",
                addr: addr.clone(),
                source,
            })?;
        tracing::info!(addr = %addr, "serving the fleet API");
        servers.push(tokio::spawn(api::serve_tcp(
            listener,
            router.clone(),
            stopped(&rx),
        )));
    }
    if let Some(path) = &config.api_socket {
        let listener = api::bind_unix(path).map_err(|source| DaemonError::Listen {
            what: "API socket",
            addr: path.display().to_string(),
            source,
        })?;
        tracing::info!(socket = %path.display(), "serving the fleet API");
        servers.push(tokio::spawn(api::serve_unix(
            listener,
            router,
            stopped(&rx),
        )));
    }

    let engine_task = tokio::spawn(engine.run(stopped(&rx)));
    let agent_result = agent.run(stopped(&rx)).await;
    if let Err(e) = &agent_result {
        // A machine without its agent is no machine: stop the other roles too.
        tracing::error!("agent: {e}; stopping");
    }
    let _ = tx.send(true);
    let _ = engine_task.await;
    for s in servers {
        if let Ok(Err(e)) = s.await {
            tracing::warn!("API server: {e}");
        }
    }
    agent_result.map_err(DaemonError::Agent)
}
