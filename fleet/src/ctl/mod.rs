//! fleetctl: fleet's command-line client (fleet.md §2), over the API or the registry.
//!
//! [`run`] reads fleetctl's arguments ([`cli`], as fleet's cobra and pflag read them) and
//! environment (`FLEETCTL_*`), picks the driver (`--driver=API` through `--endpoint`,
//! `--driver=grpc` through fleetd's gRPC API there, or `--driver=etcd` straight to the
//! registry) and runs one command, writing to the given
//! output and returning the exit code. The commands themselves are generic over
//! [`FleetApi`] ([`commands`]).
//!
//! Output is fleet 1.0's byte for byte (`tests/ctl_golden.rs` replays fleet's recorded
//! transcripts), except for the differences listed there and in
//! `testdata/oracle/fleetctl/README.md`, among them: usage errors exit 2 instead of 0;
//! `-l` works as well as `--l`/`--full`; `--sign` is refused; templates are refused on the
//! etcd driver too; `start` waits for systemd within the blocking budget instead of giving
//! up after 2 s, and `start --no-block` prints its line once.

pub mod api;
pub mod cli;
pub mod commands;
pub mod fields;
mod help;
mod registry_driver;
pub mod table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use api::{ApiError, FleetApi};
pub use commands::{Blocking, Io, ListOptions};

use crate::registry::{Keys, Registry};
use crate::store::etcd::EtcdStore;
use cli::{Parsed, ROOT, UsageError};

/// fleetctl's version line.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What fleetctl takes from its process besides its arguments: the directory unit files
/// named relatively are read from, and the environment its global flags may come from.
#[derive(Debug, Clone, Default)]
pub struct Process {
    /// The working directory (empty: the process's own).
    pub dir: PathBuf,
    /// The environment.
    pub env: BTreeMap<String, String>,
}

impl Process {
    /// This process: its own working directory and environment.
    pub fn current() -> Process {
        Process {
            dir: PathBuf::new(),
            env: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    /// A global flag's value: given on the command line, else from the environment as
    /// fleet reads it there (`FLEETCTL_` and the flag's name upper-cased with `-` as `_`,
    /// if not empty and of the flag's kind), else its default.
    fn flag(&self, parsed: &Parsed, name: &str) -> String {
        if parsed.given(name).is_none() {
            let key = format!("FLEETCTL_{}", name.to_uppercase().replace('-', "_"));
            if let Some(v) = self.env.get(&key).filter(|v| !v.is_empty())
                && (name != "request-timeout" || cli::go_parse_float(v).is_some())
            {
                return v.clone();
            }
        }
        parsed.string(name)
    }
}

/// A command to run, with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Upload units without starting them.
    Submit {
        /// Replace units whose contents differ.
        replace: bool,
        /// The units.
        units: Vec<String>,
    },
    /// Schedule units, submitting them first if necessary.
    Load {
        /// Replace units whose contents differ.
        replace: bool,
        /// How long to wait.
        blocking: Blocking,
        /// The units.
        units: Vec<String>,
    },
    /// Start units, submitting and loading them first if necessary.
    Start {
        /// Replace units whose contents differ.
        replace: bool,
        /// How long to wait.
        blocking: Blocking,
        /// The units.
        units: Vec<String>,
    },
    /// Stop units.
    Stop {
        /// How long to wait.
        blocking: Blocking,
        /// The units.
        units: Vec<String>,
    },
    /// Unschedule units.
    Unload {
        /// How long to wait.
        blocking: Blocking,
        /// The units.
        units: Vec<String>,
    },
    /// Destroy units.
    Destroy {
        /// The units.
        units: Vec<String>,
    },
    /// Print a unit's file.
    Cat {
        /// The units (exactly one is right).
        units: Vec<String>,
    },
    /// The published unit states.
    ListUnits(ListOptions),
    /// The submitted units.
    ListUnitFiles(ListOptions),
    /// The present machines.
    ListMachines(ListOptions),
}

impl Command {
    /// The command a parsed command line asks for (`None` for those [`run_in`] answers
    /// itself: help, version, verify).
    fn of(p: &Parsed) -> Option<Command> {
        let units = p.args.clone();
        let blocking = || Blocking::from_flags(p.bool("no-block"), p.int("block-attempts"));
        let list = || ListOptions {
            fields: p.string("fields"),
            full: p.bool("full"),
            no_legend: p.bool("no-legend"),
        };
        Some(match p.command.name {
            "submit" => Command::Submit {
                replace: p.bool("replace"),
                units,
            },
            "load" => Command::Load {
                replace: p.bool("replace"),
                blocking: blocking(),
                units,
            },
            "start" => Command::Start {
                replace: p.bool("replace"),
                blocking: blocking(),
                units,
            },
            "stop" => Command::Stop {
                blocking: blocking(),
                units,
            },
            "unload" => Command::Unload {
                blocking: blocking(),
                units,
            },
            "destroy" => Command::Destroy { units },
            "cat" => Command::Cat { units },
            "list-units" => Command::ListUnits(list()),
            "list-unit-files" => Command::ListUnitFiles(list()),
            "list-machines" => Command::ListMachines(list()),
            _ => return None,
        })
    }
}

/// Runs fleetctl with `argv` (the program name first) in this process, writing to `io`;
/// returns the exit code.
pub async fn run(argv: Vec<String>, io: &mut Io<'_>) -> i32 {
    run_in(argv, &Process::current(), io).await
}

/// fleet's warning for the signed-units flag and command.
const SIGNED_UNITS: &str =
    "WARNING: The signed/verified units feature is DEPRECATED and cannot be used.";

/// Runs fleetctl with `argv` (the program name first) as if in `process`, writing to `io`;
/// returns the exit code.
pub async fn run_in(argv: Vec<String>, process: &Process, io: &mut Io<'_>) -> i32 {
    let args = argv.get(1..).unwrap_or_default();
    let Some(first) = args.first() else {
        let _ = io.out.write_all(help::intro().as_bytes());
        return 0;
    };
    if first == "--version" || first == "-v" {
        let _ = writeln!(io.out, "fleetctl version {VERSION}");
        return 0;
    }
    let parsed = match cli::parse(args) {
        Ok(p) => p,
        Err(e) => return usage_error(&e, io),
    };
    let spec = parsed.command;
    if let Some(why) = spec.deprecated {
        let _ = writeln!(io.err, "Command {:?} is deprecated, {why}", spec.name);
    }
    if parsed.help || spec.name == ROOT.name {
        let _ = io.out.write_all(help::usage(spec, VERSION).as_bytes());
        return 0;
    }
    match spec.name {
        "help" => {
            return match cli::find(&parsed.args) {
                Ok((topic, _)) => {
                    let _ = io.out.write_all(help::usage(topic, VERSION).as_bytes());
                    0
                }
                Err(_) => {
                    let topics: Vec<String> =
                        parsed.args.iter().map(|a| format!("`{a}`")).collect();
                    let _ = write!(io.err, "Unknown help topic [{}].", topics.join(" "));
                    let _ = io.out.write_all(help::usage(&ROOT, VERSION).as_bytes());
                    0
                }
            };
        }
        "version" => {
            let _ = writeln!(io.out, "fleetctl version {VERSION}");
            return 0;
        }
        _ => {}
    }
    // fleet meant `--sign` to be refused so, but checked it before reading the flags.
    if parsed.bool("sign") {
        let _ = writeln!(io.err, "{SIGNED_UNITS}");
        return 2;
    }
    let endpoint = process.flag(&parsed, "endpoint");
    let driver = process.flag(&parsed, "driver");
    let timeout = cli::go_parse_float(&process.flag(&parsed, "request-timeout")).unwrap_or(3.0);
    let prefix = process.flag(&parsed, "etcd-key-prefix");
    let timeout = Duration::from_secs_f64(timeout.clamp(0.001, 1e9));
    let command = Command::of(&parsed);
    match driver.as_str() {
        "etcd" => {
            let endpoints: Vec<String> = endpoint.split(',').map(str::to_owned).collect();
            let store = reqwest::Client::builder()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|client| {
                    EtcdStore::with_client(&endpoints, client, timeout).map_err(|e| e.to_string())
                });
            let store = match store {
                Ok(s) => s,
                Err(e) => {
                    let _ = writeln!(io.err, "Unable to initialize client: {e}");
                    return 1;
                }
            };
            let registry = Registry::with_keys(store, Keys::new(&prefix));
            // fleet reads the machines' versions first (to warn of an older fleetctl).
            if let Err(e) = FleetApi::machines(&registry).await {
                commands::log(
                    io.err,
                    "ERROR",
                    format!("error attempting to check latest fleet version in Registry: {e}"),
                );
            }
            run_command(&registry, command, &process.dir, io).await
        }
        "API" => {
            // fleet uses the first of several endpoints.
            let first = endpoint.split(',').next().unwrap_or_default().trim();
            if let Some(e) = go_url_error(first) {
                let _ = writeln!(io.err, "Unable to initialize client: {e}");
                return 1;
            }
            let builder = reqwest::Client::builder().timeout(timeout);
            match crate::client::Client::with_builder(first, builder) {
                Ok(client) => run_command(&client, command, &process.dir, io).await,
                Err(e) => {
                    let _ = writeln!(io.err, "Unable to initialize client: {e}");
                    1
                }
            }
        }
        // Beyond fleet: fleetd's gRPC API (fleet.v1) at the endpoint.
        "grpc" => {
            let first = endpoint.split(',').next().unwrap_or_default().trim();
            let connect =
                crate::client::grpc::GrpcClient::connect_with(first, timeout, Some(timeout));
            match connect.await {
                Ok(client) => run_command(&client, command, &process.dir, io).await,
                Err(e) => {
                    let _ = writeln!(io.err, "Unable to initialize client: {e}");
                    1
                }
            }
        }
        other => {
            let _ = writeln!(
                io.err,
                "Unable to initialize client: unrecognized driver {}",
                unit_parser::name::go_quote_str(other)
            );
            1
        }
    }
}

/// A command, or `verify` (`None`): fleet's signed units are gone.
async fn run_command<A: FleetApi>(
    api: &A,
    command: Option<Command>,
    dir: &Path,
    io: &mut Io<'_>,
) -> i32 {
    match command {
        Some(c) => dispatch(api, c, dir, io).await,
        None => {
            let _ = writeln!(io.err, "{SIGNED_UNITS}");
            2
        }
    }
}

/// What fleetctl prints for a command line it cannot run (cobra's words, fleet's usage
/// page for a flag error). Exits 2, where fleet exited 0.
fn usage_error(e: &UsageError, io: &mut Io<'_>) -> i32 {
    match e {
        UsageError::UnknownCommand { .. } => {
            let _ = writeln!(io.err, "Error: {e}");
            let _ = writeln!(io.err, "Run 'fleetctl --help' for usage.");
        }
        UsageError::Flag { command, .. } => {
            let _ = writeln!(io.err, "Error: {e}");
            let _ = writeln!(io.err);
            let _ = io.out.write_all(help::usage(command, VERSION).as_bytes());
        }
    }
    let _ = writeln!(io.err, "cannot execute cmdFleet: {e}");
    2
}

/// Go's `url.Parse` refusal of an endpoint written without a scheme but with a port
/// (`127.0.0.1:10001`), which fleetctl reports as it is.
fn go_url_error(endpoint: &str) -> Option<String> {
    let scheme_like = endpoint.split_once(':').is_some_and(|(s, _)| {
        s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    let first_segment = endpoint.split('/').next().unwrap_or_default();
    (!scheme_like && !endpoint.starts_with('/') && first_segment.contains(':')).then(|| {
        format!(
            "parse {}: first path segment in URL cannot contain colon",
            unit_parser::name::go_quote_str(endpoint)
        )
    })
}

/// Runs one command over `api`; unit files named relatively are read from `dir`.
pub async fn dispatch<A: FleetApi>(api: &A, command: Command, dir: &Path, io: &mut Io<'_>) -> i32 {
    match command {
        Command::Submit { replace, units } => {
            // Submitting waits for new units to report `inactive`, however long it takes.
            let blocking = Blocking::from_flags(false, 0);
            commands::submit_load_start(api, io, dir, "submit", &units, replace, blocking).await
        }
        Command::Load {
            replace,
            blocking,
            units,
        } => commands::submit_load_start(api, io, dir, "load", &units, replace, blocking).await,
        Command::Start {
            replace,
            blocking,
            units,
        } => commands::submit_load_start(api, io, dir, "start", &units, replace, blocking).await,
        Command::Stop { blocking, units } => {
            commands::stop_unload(api, io, "stop", &units, blocking).await
        }
        Command::Unload { blocking, units } => {
            commands::stop_unload(api, io, "unload", &units, blocking).await
        }
        Command::Destroy { units } => commands::destroy(api, io, &units).await,
        Command::Cat { units } => commands::cat(api, io, &units).await,
        Command::ListUnits(opts) => commands::list_units(api, io, &opts).await,
        Command::ListUnitFiles(opts) => commands::list_unit_files(api, io, &opts).await,
        Command::ListMachines(opts) => commands::list_machines(api, io, &opts).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_without_a_scheme_are_refused_as_go_refuses_them() {
        assert_eq!(
            go_url_error("127.0.0.1:10001").as_deref(),
            Some("parse \"127.0.0.1:10001\": first path segment in URL cannot contain colon")
        );
        assert_eq!(go_url_error("http://127.0.0.1:10001"), None);
        assert_eq!(go_url_error("localhost:10001"), None);
        assert_eq!(go_url_error("unix:///var/run/fleet.sock"), None);
        assert_eq!(go_url_error("fleet.sock"), None);
    }
}
