//! fleetd's `/metrics`: the engine's and the agent's counters in Prometheus' text format,
//! under fleet's names where fleet had one (fleet.md §6.8).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::agent::AgentCounters;
use crate::engine::EngineHandle;

/// What `/metrics` reads.
#[derive(Clone)]
pub struct Sources {
    /// The engine.
    pub engine: EngineHandle,
    /// The agent.
    pub agent: Arc<AgentCounters>,
}

/// The `/metrics` route.
pub fn router(sources: Sources) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let text = render(&sources);
            async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    text,
                )
                    .into_response()
            }
        }),
    )
}

/// The metrics as Prometheus text.
pub fn render(s: &Sources) -> String {
    let e = s.engine.metrics();
    let a = &s.agent;
    let g = AgentCounters::get;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    };
    metric(
        "fleet_engine_reconcile_count_total",
        "counter",
        "Engine reconcile passes.",
        e.reconcile_passes,
    );
    metric(
        "fleet_engine_reconcile_failure_count_total",
        "counter",
        "Engine reconcile passes that failed.",
        e.reconcile_failures,
    );
    metric(
        "fleet_engine_task_count_total",
        "counter",
        "Schedule and unschedule writes of the engine.",
        e.schedules + e.unschedules,
    );
    metric(
        "fleet_engine_task_failure_count_total",
        "counter",
        "Engine writes that failed.",
        e.task_failures,
    );
    metric(
        "fleet_engine_fenced_refusal_count_total",
        "counter",
        "Engine writes refused because the lease was no longer held.",
        e.fenced_refusals,
    );
    metric(
        "fleet_engine_leader",
        "gauge",
        "1 while this machine's engine holds the lease.",
        u64::from(e.is_leader),
    );
    metric(
        "fleet_engine_last_reconcile_duration_microseconds",
        "gauge",
        "Duration of the last reconcile pass.",
        e.last_pass_micros,
    );
    metric(
        "fleet_agent_task_count_total",
        "counter",
        "Unit tasks (load, start, stop, unload) the agent ran.",
        g(&a.tasks_run),
    );
    metric(
        "fleet_agent_task_failure_count_total",
        "counter",
        "Unit tasks that failed.",
        g(&a.tasks_failed),
    );
    metric(
        "fleet_agent_states_published_total",
        "counter",
        "Unit states published to the registry.",
        g(&a.states_published),
    );
    metric(
        "fleet_agent_presence_failure_count_total",
        "counter",
        "Presence refreshes that failed.",
        g(&a.presence_failures),
    );
    metric(
        "fleet_agent_fencing_count_total",
        "counter",
        "Times the agent stopped its units because its presence may have expired.",
        g(&a.fencing_events),
    );
    metric(
        "fleet_agent_full_reads_total",
        "counter",
        "Full reads of the registry by the agent.",
        g(&a.full_reads),
    );
    out
}
