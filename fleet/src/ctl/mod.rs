//! fleetctl: fleet's command-line client (fleet.md §2), over the API or the registry.
//!
//! [`run`] parses fleetctl's arguments and environment (`FLEETCTL_*`), picks the driver
//! (`--driver=API` through `--endpoint`, `--driver=grpc` through fleetd's gRPC API there,
//! or `--driver=etcd` straight to the registry) and runs one command, writing to the given
//! output and returning the exit code. The commands themselves are generic over
//! [`FleetApi`] ([`commands`]).
//!
//! Deliberate differences from fleet 1.0: usage errors exit 2 instead of 0; `-l` works as
//! well as `--l`/`--full`; `start` waits for systemd within the blocking budget instead of
//! giving up after 2 s; `start --no-block` prints its line once.

pub mod api;
pub mod commands;
pub mod fields;
mod registry_driver;
pub mod table;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub use api::{ApiError, FleetApi};
pub use commands::{Blocking, Io, ListOptions};

use crate::registry::{Keys, Registry};
use crate::store::etcd::EtcdStore;

/// fleetctl's version line.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// fleetctl's arguments.
#[derive(Debug, Parser)]
#[command(
    name = "fleetctl",
    about = "fleetctl is a command-line interface to fleet, the cluster-wide systemd scheduler.",
    version = VERSION,
    disable_help_subcommand = false
)]
pub struct Cli {
    /// Location of the fleet API if --driver=API. Alternatively, if --driver=etcd, location
    /// of the etcd API.
    #[arg(
        long,
        global = true,
        env = "FLEETCTL_ENDPOINT",
        default_value = "unix:///var/run/fleet.sock"
    )]
    pub endpoint: String,
    /// Adapter used to talk to the cluster: API, etcd, or grpc (fleetd's gRPC API at
    /// --endpoint).
    #[arg(long, global = true, env = "FLEETCTL_DRIVER", default_value = "API")]
    pub driver: String,
    /// Amount of time in seconds to allow a single request before considering it failed.
    #[arg(
        long,
        global = true,
        env = "FLEETCTL_REQUEST_TIMEOUT",
        default_value_t = 3.0
    )]
    pub request_timeout: f64,
    /// Keyspace for fleet data in etcd (development use only!).
    #[arg(long, global = true, env = "FLEETCTL_ETCD_KEY_PREFIX", default_value = crate::registry::DEFAULT_PREFIX)]
    pub etcd_key_prefix: String,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Blocking flags of the state-changing commands.
#[derive(Debug, Args)]
pub struct BlockArgs {
    /// Wait until the units reach their state, at most this many 2-second attempts (0:
    /// forever).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub block_attempts: i64,
    /// Do not wait for the units to reach their state.
    #[arg(long)]
    pub no_block: bool,
}

/// Flags of the list commands.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Columns to print.
    #[arg(long)]
    pub fields: Option<String>,
    /// Do not abbreviate machine IDs and hashes.
    #[arg(long, short = 'l', alias = "l")]
    pub full: bool,
    /// Do not print a header line.
    #[arg(long)]
    pub no_legend: bool,
}

/// fleetctl's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload one or more units to the cluster without starting them.
    Submit {
        /// Replace units already in the cluster whose contents differ.
        #[arg(long)]
        replace: bool,
        /// Units.
        units: Vec<String>,
    },
    /// Schedule one or more units in the cluster, first submitting them if necessary.
    Load {
        /// Replace units already in the cluster whose contents differ.
        #[arg(long)]
        replace: bool,
        /// Blocking.
        #[command(flatten)]
        block: BlockArgs,
        /// Units.
        units: Vec<String>,
    },
    /// Instruct systemd to start one or more units in the cluster, first submitting and
    /// loading if necessary.
    Start {
        /// Replace units already in the cluster whose contents differ.
        #[arg(long)]
        replace: bool,
        /// Blocking.
        #[command(flatten)]
        block: BlockArgs,
        /// Units.
        units: Vec<String>,
    },
    /// Instruct systemd to stop one or more units in the cluster.
    Stop {
        /// Blocking.
        #[command(flatten)]
        block: BlockArgs,
        /// Units.
        units: Vec<String>,
    },
    /// Unschedule one or more units in the cluster.
    Unload {
        /// Blocking.
        #[command(flatten)]
        block: BlockArgs,
        /// Units.
        units: Vec<String>,
    },
    /// Destroy one or more units in the cluster.
    Destroy {
        /// Blocking.
        #[command(flatten)]
        block: BlockArgs,
        /// Units.
        units: Vec<String>,
    },
    /// Output the contents of a submitted unit.
    Cat {
        /// The unit.
        units: Vec<String>,
    },
    /// List the current state of units in the cluster.
    ListUnits {
        /// Output.
        #[command(flatten)]
        list: ListArgs,
    },
    /// List the units that exist in the cluster.
    ListUnitFiles {
        /// Output.
        #[command(flatten)]
        list: ListArgs,
    },
    /// Enumerate the current hosts in the cluster.
    ListMachines {
        /// Output.
        #[command(flatten)]
        list: ListArgs,
    },
    /// Print the version and exit.
    Version,
}

/// Runs fleetctl with `argv` (the program name first), writing to `io`; returns the exit
/// code.
pub async fn run(argv: Vec<String>, io: &mut Io<'_>) -> i32 {
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            let code = e.exit_code();
            let text = e.render().to_string();
            let w = if e.use_stderr() {
                &mut *io.err
            } else {
                &mut *io.out
            };
            let _ = w.write_all(text.as_bytes());
            return code;
        }
    };
    if let Command::Version = cli.command {
        let _ = writeln!(io.out, "fleetctl version {VERSION}");
        return 0;
    }
    let timeout = Duration::from_secs_f64(cli.request_timeout.max(0.001));
    match cli.driver.as_str() {
        "etcd" => {
            let endpoints = crate::config::parse_list(&cli.endpoint);
            let client = match reqwest::Client::builder().build() {
                Ok(c) => c,
                Err(e) => {
                    let _ = writeln!(io.err, "Unable to initialize client: {e}");
                    return 1;
                }
            };
            let store = match EtcdStore::with_client(&endpoints, client, timeout) {
                Ok(s) => s,
                Err(e) => {
                    let _ = writeln!(io.err, "Unable to initialize client: {e}");
                    return 1;
                }
            };
            let registry = Registry::with_keys(store, Keys::new(&cli.etcd_key_prefix));
            dispatch(&registry, cli.command, io).await
        }
        "API" => {
            // fleet uses the first of several endpoints.
            let first = cli.endpoint.split(',').next().unwrap_or_default().trim();
            let builder = reqwest::Client::builder().timeout(timeout);
            match crate::client::Client::with_builder(first, builder) {
                Ok(client) => dispatch(&client, cli.command, io).await,
                Err(e) => {
                    let _ = writeln!(io.err, "Unable to initialize client: {e}");
                    1
                }
            }
        }
        "grpc" => {
            let first = cli.endpoint.split(',').next().unwrap_or_default().trim();
            let connect =
                crate::client::grpc::GrpcClient::connect_with(first, timeout, Some(timeout));
            match connect.await {
                Ok(client) => dispatch(&client, cli.command, io).await,
                Err(e) => {
                    let _ = writeln!(io.err, "Unable to initialize client: {e}");
                    1
                }
            }
        }
        other => {
            let _ = writeln!(
                io.err,
                "Unable to initialize client: unrecognized driver {other:?}"
            );
            1
        }
    }
}

/// Runs one parsed command over `api`.
pub async fn dispatch<A: FleetApi>(api: &A, command: Command, io: &mut Io<'_>) -> i32 {
    let list = |l: ListArgs, default: &str| ListOptions {
        fields: l.fields.unwrap_or_else(|| default.to_owned()),
        full: l.full,
        no_legend: l.no_legend,
    };
    let block = |b: BlockArgs| Blocking::from_flags(b.no_block, b.block_attempts);
    match command {
        Command::Submit { replace, units } => {
            commands::submit_load_start(
                api,
                io,
                "submit",
                &units,
                replace,
                Blocking::from_flags(false, 0),
            )
            .await
        }
        Command::Load {
            replace,
            block: b,
            units,
        } => commands::submit_load_start(api, io, "load", &units, replace, block(b)).await,
        Command::Start {
            replace,
            block: b,
            units,
        } => commands::submit_load_start(api, io, "start", &units, replace, block(b)).await,
        Command::Stop { block: b, units } => {
            commands::stop_unload(api, io, "stop", &units, block(b)).await
        }
        Command::Unload { block: b, units } => {
            commands::stop_unload(api, io, "unload", &units, block(b)).await
        }
        Command::Destroy { units, .. } => commands::destroy(api, io, &units).await,
        Command::Cat { units } => commands::cat(api, io, &units).await,
        Command::ListUnits { list: l } => {
            commands::list_units(api, io, &list(l, fields::UNIT_STATE_DEFAULT)).await
        }
        Command::ListUnitFiles { list: l } => {
            commands::list_unit_files(api, io, &list(l, fields::UNIT_FILE_DEFAULT)).await
        }
        Command::ListMachines { list: l } => {
            commands::list_machines(api, io, &list(l, fields::MACHINE_DEFAULT)).await
        }
        Command::Version => {
            let _ = writeln!(io.out, "fleetctl version {VERSION}");
            0
        }
    }
}
