//! fleet's gRPC API (`fleet.v1`) over a real etcd v2 store, served with the HTTP API on the
//! same listeners: the HTTP API's main scenarios through [`GrpcClient`] (each answer
//! compared with the HTTP API's where both answer, each refusal with fleet's message and
//! the code of its HTTP status), both APIs on one TCP address and one unix socket,
//! `WatchUnits`, and fleetctl's `--driver=grpc`.

use std::sync::Arc;
use std::time::Duration;

use fleet::api::grpc::UnitEvent;
use fleet::api::types::{MachineMetadataOp, Unit, UnitOption};
use fleet::api::{self, ApiConfig};
use fleet::client::grpc::{GrpcClient, UnitWatch};
use fleet::client::{Client, ClientError, StateFilter};
use fleet::ctl::{self, Io};
use fleet::registry::{
    JobState, LeaseRecord, MachineRecord, Registry, UnitContents, UnitStateRecord,
};
use fleet::store::etcd::EtcdStore;
use proto::fleet_v1 as w;
use tokio::sync::oneshot;
use tonic::Code;

use crate::util::etcd_store;

/// fleet's HTTP and gRPC APIs on 127.0.0.1:0 and a unix socket, over a fresh store; they
/// stop when this is dropped.
struct Server {
    url: String,
    socket: String,
    registry: Arc<Registry<EtcdStore>>,
    grpc: GrpcClient,
    http: Client,
    _dir: tempfile::TempDir,
    _stop: Vec<oneshot::Sender<()>>,
}

async fn server() -> Server {
    serve(Arc::new(Registry::new(etcd_store().await))).await
}

async fn serve(registry: Arc<Registry<EtcdStore>>) -> Server {
    let router = api::router_with_grpc(registry.clone(), ApiConfig::default(), axum::Router::new());
    let (tcp_stop, tcp_stopped) = oneshot::channel::<()>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(api::serve_tcp(listener, router.clone(), async {
        let _ = tcp_stopped.await;
    }));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.sock");
    let (unix_stop, unix_stopped) = oneshot::channel::<()>();
    let listener = api::bind_unix(&path).unwrap();
    tokio::spawn(api::serve_unix(listener, router, async {
        let _ = unix_stopped.await;
    }));
    Server {
        grpc: GrpcClient::connect(&url).await.unwrap(),
        http: Client::new(&url).unwrap(),
        url,
        socket: format!("unix://{}", path.display()),
        registry,
        _dir: dir,
        _stop: vec![tcp_stop, unix_stop],
    }
}

impl Server {
    async fn add_unit(&self, name: &str, text: &str, desired: JobState) {
        self.registry
            .put_unit(name, UnitContents::from_text(text).unwrap(), desired)
            .await
            .unwrap();
    }

    /// Every unit as (name, desired, normalised text).
    async fn units(&self) -> Vec<(String, JobState, String)> {
        let (units, _) = self.registry.units().await.unwrap();
        units
            .into_iter()
            .map(|u| (u.name, u.desired, u.contents.raw().to_owned()))
            .collect()
    }

    async fn add_machine(&self, id: &str, metadata: &[(&str, &str)]) {
        let record = MachineRecord {
            id: id.into(),
            public_ip: "10.0.0.1".into(),
            metadata: Some(
                metadata
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            capabilities: None,
            version: "1.0.0".into(),
        };
        self.registry.register_machine(&record, 300).await.unwrap();
    }

    async fn add_state(&self, unit: &str, machine: &str, active: &str) {
        let record = UnitStateRecord {
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: "running".into(),
            machine_state: Some(MachineRecord {
                id: machine.into(),
                ..MachineRecord::default()
            }),
            unit_hash: "1c6fb6f3684bafb0c173d8b8b957ceff031180c1".into(),
        };
        self.registry
            .save_state(unit, machine, &record, 300)
            .await
            .unwrap();
    }

    /// Schedules `unit` on `machine` as an engine holding the lease.
    async fn schedule(&self, unit: &str, machine: &str) {
        let lease = match self.registry.lease().await.unwrap() {
            Some(l) => l,
            None => self
                .registry
                .acquire_lease(
                    &LeaseRecord {
                        machine_id: machine.into(),
                        version: 1,
                    },
                    60,
                )
                .await
                .unwrap()
                .unwrap(),
        };
        self.registry
            .schedule(unit, machine, &lease.fence(self.registry.keys()))
            .await
            .unwrap();
    }

    /// Sets a unit through the generated client, for the code and message of a refusal.
    async fn set_raw(&self, unit: w::Unit) -> Result<bool, (Code, String)> {
        self.grpc
            .raw()
            .set_unit(w::SetUnitRequest { unit: Some(unit) })
            .await
            .map(|r| r.into_inner().created)
            .map_err(|s| (s.code(), s.message().to_owned()))
    }
}

const SLEEP: &str = "[Service]\nExecStart=/bin/sleep 100\n";

fn unit(name: &str, desired: Option<JobState>, options: &[(&str, &str, &str)]) -> Unit {
    Unit {
        name: name.into(),
        desired_state: desired,
        options: options
            .iter()
            .map(|(s, n, v)| UnitOption::new(s, n, v))
            .collect(),
        ..Unit::default()
    }
}

/// The code and message of a refusal.
#[track_caller]
fn refusal(e: ClientError) -> (Code, String) {
    match e {
        ClientError::Grpc { code, message, .. } => (code, message),
        e => panic!("not a refusal: {e}"),
    }
}

fn refused(code: Code, message: &str) -> (Code, String) {
    (code, message.to_owned())
}

// ---- units ----

#[tokio::test]
async fn units_create_get_list_destroy() {
    let s = server().await;
    let c = &s.grpc;
    assert!(c.units().await.unwrap().is_empty());
    let web = unit(
        "web@1.service",
        Some(JobState::Loaded),
        &[("Service", "ExecStart", "/bin/sleep 100")],
    );
    assert!(c.set_unit(&web).await.unwrap(), "created");
    c.create_unit(&unit(
        "db.service",
        None,
        &[("Service", "ExecStart", "  /bin/true  ")],
    ))
    .await
    .unwrap();

    let got = c.unit("web@1.service").await.unwrap().unwrap();
    assert_eq!(
        (
            got.desired_state,
            got.current_state,
            got.machine_id.as_deref()
        ),
        (Some(JobState::Loaded), Some(JobState::Inactive), None)
    );
    assert_eq!(got.options, web.options);
    // Stored as read back (trimmed), inactive by default.
    let db = c.unit("db.service").await.unwrap().unwrap();
    assert_eq!(db.options[0].value, "/bin/true");
    assert_eq!(db.desired_state, Some(JobState::Inactive));
    // The HTTP API answers the same, on the same address.
    let listed = c.units().await.unwrap();
    assert_eq!(listed, s.http.units().await.unwrap());
    assert_eq!(
        listed.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
        ["db.service", "web@1.service"]
    );
    assert_eq!(
        Some(got),
        s.http.unit("web@1.service").await.unwrap(),
        "GET /units/<name>"
    );

    assert!(c.destroy("web@1.service").await.unwrap());
    assert!(!c.destroy("web@1.service").await.unwrap());
    assert_eq!(c.unit("web@1.service").await.unwrap(), None);
    let raw = s
        .grpc
        .raw()
        .get_unit(w::GetUnitRequest {
            name: "web@1.service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (raw.code(), raw.message()),
        (Code::NotFound, "unit does not exist")
    );
    // Names that would address another key are never looked up.
    for name in ["", ".", "..", "a/b.service", "../db.service"] {
        let e = s
            .grpc
            .raw()
            .get_unit(w::GetUnitRequest { name: name.into() })
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::NotFound, "unit does not exist"),
            "{name:?}"
        );
        assert!(!c.destroy(name).await.unwrap(), "{name:?}");
    }
    assert_eq!(s.units().await.len(), 1);
}

// `PUT /units/<name>`'s refusals, with fleet's messages and the codes of their statuses;
// nothing refused is stored.
#[tokio::test]
async fn units_are_validated_with_fleets_messages() {
    let s = server().await;
    s.add_unit("web.service", SLEEP, JobState::Launched).await;
    s.add_unit("T@.service", SLEEP, JobState::Inactive).await;
    let before = s.units().await;
    let opts = [("Service", "ExecStart", "/bin/true")];
    let cases: Vec<(Unit, (Code, &str))> = vec![
        (
            unit("fooservice", None, &opts),
            (Code::InvalidArgument, r#"unit name must contain ".""#),
        ),
        (
            unit("", None, &opts),
            (Code::InvalidArgument, "unit name cannot be empty"),
        ),
        (
            unit("foo%.service", None, &opts),
            (Code::InvalidArgument, "invalid character '%' in unit name"),
        ),
        (
            unit("new.service", Some(JobState::Loaded), &[]),
            (
                Code::FailedPrecondition,
                "unit does not exist and options field empty",
            ),
        ),
        (
            unit("web.service", None, &[]),
            (
                Code::FailedPrecondition,
                "must provide DesiredState to update existing unit",
            ),
        ),
        (
            unit("T@.service", Some(JobState::Launched), &[]),
            (
                Code::InvalidArgument,
                r#"cannot activate template "T@.service""#,
            ),
        ),
        (
            unit("U@.service", Some(JobState::Loaded), &opts),
            (
                Code::InvalidArgument,
                r#"cannot activate template "U@.service""#,
            ),
        ),
        (
            unit(
                "web.service",
                Some(JobState::Launched),
                &[
                    ("X-Fleet", "MachineID", "abc"),
                    ("X-Fleet", "Global", "true"),
                ],
            ),
            (
                Code::InvalidArgument,
                "MachineID cannot be used with Global",
            ),
        ),
        (
            unit(
                "web.service",
                None,
                &[("Service", "ExecStart", "/bin/a\nb")],
            ),
            (
                Code::InvalidArgument,
                "unexpected newline encountered while parsing option name",
            ),
        ),
        (
            unit(
                "web.service",
                None,
                &[("Serv]ice", "ExecStart", "/bin/true")],
            ),
            (
                Code::InvalidArgument,
                "found garbage after section name : [105 99 101 93]",
            ),
        ),
    ];
    for (u, (code, message)) in cases {
        let e = refusal(s.grpc.set_unit(&u).await.unwrap_err());
        assert_eq!(e, refused(code, message), "{u:?}");
    }
    // A desired state the API does not know.
    let e = s
        .set_raw(w::Unit {
            name: "web.service".into(),
            desired_state: 9,
            ..w::Unit::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e, refused(Code::InvalidArgument, "unknown desired state 9"));
    // No unit at all is a unit without a name.
    let e = s
        .grpc
        .raw()
        .set_unit(w::SetUnitRequest { unit: None })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "unit name cannot be empty")
    );
    assert_eq!(s.units().await, before);
}

// Desired-state changes, and replacing options, by the HTTP API's decision procedure.
#[tokio::test]
async fn desired_state_changes() {
    let s = server().await;
    let c = &s.grpc;
    s.add_unit("web.service", SLEEP, JobState::Inactive).await;
    c.set_desired("web.service", JobState::Launched)
        .await
        .unwrap();
    assert_eq!(
        s.units().await,
        [("web.service".into(), JobState::Launched, SLEEP.into())]
    );
    // The same options (formatting aside) only set the desired state.
    let same = unit(
        "web.service",
        Some(JobState::Loaded),
        &[("Service", "ExecStart", " /bin/sleep 100")],
    );
    assert!(!c.set_unit(&same).await.unwrap());
    assert_eq!(s.units().await[0].1, JobState::Loaded);
    // New options replace the unit; its desired state is the request's, or inactive.
    let new = unit(
        "web.service",
        None,
        &[("Service", "ExecStart", "/bin/true")],
    );
    assert!(c.set_unit(&new).await.unwrap());
    assert_eq!(
        s.units().await,
        [(
            "web.service".into(),
            JobState::Inactive,
            "[Service]\nExecStart=/bin/true\n".into()
        )]
    );
    // A unit that does not exist cannot be started.
    let e = refusal(
        c.set_desired("nope.service", JobState::Launched)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        e,
        refused(
            Code::FailedPrecondition,
            "unit does not exist and options field empty"
        )
    );
}

// Current states as the HTTP API derives them, and the published states with filters.
#[tokio::test]
async fn states_with_filters_and_current_state() {
    let s = server().await;
    let c = &s.grpc;
    s.add_unit("a.service", SLEEP, JobState::Launched).await;
    s.add_state("a.service", "m1", "active").await;
    s.add_state("a.service", "m2", "failed").await;
    s.add_state("b.service", "m1", "active").await;
    let pairs = |states: Vec<fleet::api::types::UnitState>| -> Vec<(String, String)> {
        states.into_iter().map(|s| (s.name, s.machine_id)).collect()
    };
    let p = |n: &str, m: &str| (n.to_owned(), m.to_owned());
    let filter = |unit: Option<&str>, machine: Option<&str>| StateFilter {
        unit_name: unit.map(Into::into),
        machine_id: machine.map(Into::into),
    };
    for (f, expected) in [
        (
            filter(None, None),
            vec![
                p("a.service", "m1"),
                p("a.service", "m2"),
                p("b.service", "m1"),
            ],
        ),
        (
            filter(Some("a.service"), None),
            vec![p("a.service", "m1"), p("a.service", "m2")],
        ),
        (
            filter(None, Some("m1")),
            vec![p("a.service", "m1"), p("b.service", "m1")],
        ),
        (
            filter(Some("b.service"), Some("m1")),
            vec![p("b.service", "m1")],
        ),
        (filter(Some("c.service"), None), vec![]),
    ] {
        let states = c.states(&f).await.unwrap();
        assert_eq!(states, s.http.states(&f).await.unwrap(), "{f:?}");
        assert_eq!(pairs(states), expected, "{f:?}");
    }

    // One unit's state: its scheduled machine's.
    assert_eq!(
        c.state("a.service").await.unwrap().unwrap().machine_id,
        "m1"
    );
    s.schedule("a.service", "m2").await;
    let one = c.state("a.service").await.unwrap().unwrap();
    assert_eq!(
        (one.machine_id.as_str(), one.systemd_active_state.as_str()),
        ("m2", "failed")
    );
    assert_eq!(Some(one), s.http.state("a.service").await.unwrap());
    assert_eq!(c.state("c.service").await.unwrap(), None);
    let e = s
        .grpc
        .raw()
        .get_unit_state(w::GetUnitStateRequest {
            name: "c.service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "unit state does not exist")
    );

    // The unit's current state: scheduled on m2, which published a state: loaded; with
    // m2's launch heartbeat: launched.
    let current = || async { c.unit("a.service").await.unwrap().unwrap() };
    assert_eq!(current().await.current_state, Some(JobState::Loaded));
    assert_eq!(current().await.machine_id.as_deref(), Some("m2"));
    s.registry.heartbeat("a.service", "m2", 60).await.unwrap();
    assert_eq!(current().await.current_state, Some(JobState::Launched));
    assert_eq!(c.units().await.unwrap(), s.http.units().await.unwrap());
}

// ---- machines ----

#[tokio::test]
async fn machines_and_metadata() {
    let s = server().await;
    let c = &s.grpc;
    assert!(c.machines().await.unwrap().is_empty());
    s.add_machine("XXX", &[("ping", "pong")]).await;
    s.add_machine("YYY", &[]).await;
    let machines = c.machines().await.unwrap();
    assert_eq!(machines, s.http.machines().await.unwrap());
    assert_eq!(
        machines[0].metadata,
        [("ping".to_string(), "pong".to_string())].into()
    );

    let metadata = |id: &'static str| async move {
        let m = c.machines().await.unwrap();
        let m = m.into_iter().find(|m| m.id == id).unwrap();
        m.metadata
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
    };
    c.patch_machines(&[
        MachineMetadataOp::set("XXX", "foo", "bar"),
        MachineMetadataOp {
            op: "add".into(),
            ..MachineMetadataOp::set("YYY", "foo", "baz")
        },
    ])
    .await
    .unwrap();
    assert_eq!(metadata("XXX").await, ["foo=bar", "ping=pong"]);
    assert_eq!(metadata("YYY").await, ["foo=baz"]);
    c.set_metadata("XXX", "foo", "qux").await.unwrap();
    c.remove_metadata("XXX", "ping").await.unwrap();
    assert_eq!(metadata("XXX").await, ["foo=qux"]);

    // Bad operations: fleet's messages, and nothing of the batch applied.
    let good = MachineMetadataOp::set("YYY", "new", "x");
    for (bad, message) in [
        (
            MachineMetadataOp {
                op: "invalid".into(),
                ..MachineMetadataOp::set("YYY", "foo", "x")
            },
            "invalid op: expect add, remove, or replace",
        ),
        (
            MachineMetadataOp::set("YYY", "bad key", "x"),
            "machine metadata path invalid",
        ),
        (
            MachineMetadataOp::set("..", "foo", "x"),
            "machine metadata path invalid",
        ),
        (
            MachineMetadataOp::set("YYY", "foo", ""),
            "invalid value: add and replace require a value",
        ),
    ] {
        let e = refusal(c.patch_machines(&[good.clone(), bad]).await.unwrap_err());
        assert_eq!(e, refused(Code::InvalidArgument, message));
    }
    assert_eq!(metadata("YYY").await, ["foo=baz"]);
}

// ---- one listener ----

// Both APIs answer on the TCP address and on the unix socket; HTTP answers are fleet's
// (its JSON, its `Server` header) whatever else is served there.
#[tokio::test]
async fn http_and_grpc_share_the_listeners() {
    let s = server().await;
    s.add_unit("web.service", SLEEP, JobState::Loaded).await;
    let over_unix = GrpcClient::connect(&s.socket).await.unwrap();
    let http_over_unix = Client::new(&s.socket).unwrap();
    for (grpc, http) in [(&s.grpc, &s.http), (&over_unix, &http_over_unix)] {
        let units = grpc.units().await.unwrap();
        assert_eq!(units.len(), 1);
        assert_eq!(units, http.units().await.unwrap());
    }
    over_unix
        .set_desired("web.service", JobState::Launched)
        .await
        .unwrap();
    assert_eq!(s.units().await[0].1, JobState::Launched);

    let r = reqwest::get(format!("{}/fleet/v1/units/nope.service", s.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        r.headers()["server"]
            .to_str()
            .unwrap()
            .starts_with("fleetd/")
    );
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"error":{"code":404,"message":"unit does not exist"}}"#
    );
}

// A layer refusing every request (fleetd's while its machine is not registered) answers
// each API in its own protocol.
#[tokio::test]
async fn refusals_before_the_apis_are_in_each_protocol() {
    let registry = Arc::new(Registry::new(etcd_store().await));
    let router = api::router_with_grpc(registry, ApiConfig::default(), axum::Router::new()).layer(
        axum::middleware::from_fn(
            |req: axum::extract::Request, _next: axum::middleware::Next| async move {
                api::grpc::refusal(
                    &req,
                    api::ApiError::new(
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        api::UNAVAILABLE,
                    ),
                )
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(api::serve_tcp(listener, router, std::future::pending()));
    let grpc = GrpcClient::connect(&url).await.unwrap();
    assert_eq!(
        refusal(grpc.units().await.unwrap_err()),
        refused(Code::Unavailable, api::UNAVAILABLE)
    );
    let e = Client::new(&url).unwrap().units().await.unwrap_err();
    assert_eq!(
        (e.status(), e.message()),
        (Some(503), Some(api::UNAVAILABLE))
    );
}

// An unreachable store is UNAVAILABLE, in fleet's words, naming the store.
#[tokio::test]
async fn unreachable_store_is_unavailable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let store = EtcdStore::new(&[format!("http://127.0.0.1:{port}")]).unwrap();
    let s = serve(Arc::new(Registry::new(store))).await;
    for e in [
        s.grpc.units().await.unwrap_err(),
        s.grpc.unit("a.service").await.unwrap_err(),
        s.grpc.machines().await.unwrap_err(),
        s.grpc.watch_units(true).await.unwrap_err(),
    ] {
        let (code, message) = refusal(e);
        assert_eq!(code, Code::Unavailable);
        assert!(message.starts_with(api::UNAVAILABLE), "{message}");
        assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    }
}

// ---- watch ----

/// The next event, within a deadline.
async fn next(watch: &mut UnitWatch) -> UnitEvent {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream goes on")
        .unwrap()
}

#[tokio::test]
async fn watch_sees_units_created_changed_and_destroyed() {
    let s = server().await;
    s.add_unit("a.service", SLEEP, JobState::Launched).await;
    let mut all = s.grpc.watch_units(true).await.unwrap();
    let mut changes = s.grpc.watch_units(false).await.unwrap();

    // The initial view: the existing unit.
    let first = next(&mut all).await;
    assert_eq!(first.name, "a.service");
    assert_eq!(first.unit, s.grpc.unit("a.service").await.unwrap());
    assert!(first.states.is_empty());

    // Created.
    s.grpc
        .create_unit(&unit(
            "b.service",
            None,
            &[("Service", "ExecStart", "/bin/true")],
        ))
        .await
        .unwrap();
    for w in [&mut all, &mut changes] {
        let e = next(w).await;
        assert_eq!(e.name, "b.service");
        let u = e.unit.expect("created");
        assert_eq!(
            (u.desired_state, u.current_state),
            (Some(JobState::Inactive), Some(JobState::Inactive))
        );
        assert!(e.index > first.index);
    }
    // Its desired state set.
    s.grpc
        .set_desired("b.service", JobState::Loaded)
        .await
        .unwrap();
    let e = next(&mut all).await;
    assert_eq!(
        (e.name.as_str(), e.unit.unwrap().desired_state),
        ("b.service", Some(JobState::Loaded))
    );
    // A state published: the event carries it.
    s.add_state("b.service", "m1", "active").await;
    let e = next(&mut all).await;
    assert_eq!(e.name, "b.service");
    assert_eq!(
        e.states,
        s.grpc.states(&StateFilter::default()).await.unwrap()
    );
    // The same state published again changes nothing, so the next event is the destroy.
    s.add_state("b.service", "m1", "active").await;
    assert!(s.grpc.destroy("b.service").await.unwrap());
    let e = next(&mut all).await;
    assert_eq!((e.name.as_str(), e.unit), ("b.service", None));
    assert_eq!(e.states.len(), 1, "the state outlives the unit");
    s.registry.remove_state("b.service", "m1").await.unwrap();
    let e = next(&mut all).await;
    assert_eq!(
        e,
        UnitEvent {
            index: e.index,
            name: "b.service".into(),
            ..UnitEvent::default()
        }
    );

    // The second watch, without the initial view, followed the same changes (those it
    // re-read at once may be one event) to the same end, never sending a view twice.
    let mut last = None;
    loop {
        let e = next(&mut changes).await;
        assert_eq!(e.name, "b.service");
        let view = (e.unit, e.states);
        assert_ne!(Some(&view), last.as_ref(), "a view sent twice");
        if view == (None, Vec::new()) {
            break;
        }
        last = Some(view);
    }
}

// ---- fleetctl ----

#[tokio::test]
async fn fleetctl_drives_the_grpc_api() {
    let s = server().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hello.service");
    std::fs::write(&file, SLEEP).unwrap();
    for endpoint in [&s.url, &s.socket] {
        let run = |args: Vec<String>| async move {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let mut argv = vec![
                "fleetctl".to_string(),
                "--driver=grpc".into(),
                format!("--endpoint={endpoint}"),
            ];
            argv.extend(args);
            let code = ctl::run(
                argv,
                &mut Io {
                    out: &mut out,
                    err: &mut err,
                },
            )
            .await;
            (
                String::from_utf8(out).unwrap(),
                String::from_utf8(err).unwrap(),
                code,
            )
        };
        let (out, err, code) = run(vec!["submit".into(), file.display().to_string()]).await;
        assert_eq!(
            (out.as_str(), err.as_str(), code),
            ("Unit hello.service inactive\n", "", 0)
        );
        let (out, _, code) = run(vec!["list-unit-files".into(), "--no-legend".into()]).await;
        assert_eq!(code, 0);
        assert!(out.starts_with("hello.service\t"), "{out}");
        let (out, _, code) = run(vec!["destroy".into(), "hello.service".into()]).await;
        assert_eq!((out.as_str(), code), ("Destroyed hello.service\n", 0));
        assert!(s.units().await.is_empty());
    }
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = ctl::run(
        vec![
            "fleetctl".into(),
            "--driver=grpc".into(),
            "--endpoint=https://127.0.0.1:1".into(),
            "list-units".into(),
        ],
        &mut Io {
            out: &mut out,
            err: &mut err,
        },
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        String::from_utf8(err)
            .unwrap()
            .starts_with("Unable to initialize client: "),
    );
}
