//! kvd's, kvctl's and kvbench's own code, with thin mains in `src/bin/`. kvd itself is
//! kv-server's (`kv_server::run`); what is here belongs to one binary alone:
//!
//! * [`kvctl`]: etcdctl v2's commands and output formats over the v2 HTTP API, or over
//!   `kv.v1` with `--api grpc` (through kv-client's `KvClient`).
//! * [`mod@bench`]: kvbench, a v2 HTTP load generator comparing kvd with etcd in one run;
//!   [`bench_grpc`] is its `--api grpc` mode (kvd's kv.v1 against etcd's v3 API).
//!
//! kvctl's command line, parsed as the binary parses it:
//!
//! ```
//! use clap::Parser as _;
//! use bins::kvctl::{Cli, Command};
//!
//! let cli = Cli::parse_from(["kvctl", "--endpoints", "http://127.0.0.1:2379", "get", "/greeting"]);
//! assert_eq!(cli.endpoints, "http://127.0.0.1:2379");
//! assert!(matches!(cli.command, Command::Get { key: Some(ref k), .. } if k == "/greeting"));
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bench;
pub mod bench_grpc;
mod bench_http;
pub mod kvctl;

/// Completes on SIGTERM or Ctrl-C: the servers' (kvd's, fleetd's) shutdown signal.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let ctrl_c = tokio::signal::ctrl_c();
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
