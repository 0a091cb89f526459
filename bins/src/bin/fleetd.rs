//! fleetd: one machine of a fleet cluster (`fleet::daemon`), or a local cluster of them
//! (`fleetd dev`, `fleet::dev`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use fleet::config::Config;
use fleet::daemon::StoreChoice;

/// fleetd: fleet's daemon. fleet's options come from `--config` (default
/// /etc/fleet/fleet.conf), `FLEET_<KEY>` variables and `--<key>=<value>` flags (e.g.
/// `--metadata=region=us-east --agent_ttl=10s`); the embedded store takes kvd's flags.
#[derive(Parser)]
#[command(name = "fleetd", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// fleet's configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The registry's store instead of the embedded one: kvd members over gRPC
    /// (`kvd://host:port,...`) or etcd v2 client URLs (`http://...`, comma-separated; fleet's
    /// `etcd_servers` option does the same).
    #[arg(long, env = "FLEET_STORE")]
    store: Option<String>,
    /// The embedded store member (kvd's flags); its `--data-dir` is fleetd's data
    /// directory (default /var/lib/fleetd): the store lives in `store/`, the native
    /// supervisor's units in `units/`.
    #[command(flatten)]
    member: kv_server::Config,
}

#[derive(Subcommand)]
enum Command {
    /// A local cluster of N fleetd processes on loopback, with the example units running.
    Dev(DevArgs),
    /// Print the version.
    Version,
}

#[derive(Args)]
struct DevArgs {
    /// How many machines (the first three are store members).
    #[arg(long, default_value_t = 5)]
    machines: usize,
    /// Where the machines keep their data.
    #[arg(long, default_value = "fleetd-dev")]
    data_dir: PathBuf,
    /// The machines' agent TTL: how long a dead machine's units wait before moving.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    agent_ttl: Duration,
    /// A directory of unit files to start instead of the built-in examples.
    #[arg(long)]
    units: Option<PathBuf>,
    /// Start these units (by file name in the units directory) instead of the examples.
    #[arg(long = "start", value_delimiter = ',')]
    start: Vec<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    fleet::config::parse_duration(s)
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().collect();
    let key_flags = fleet::config::take_key_flags(&mut args);
    let cli = Cli::parse_from(args);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fleetd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli, key_flags)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleetd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, key_flags: Vec<(String, String)>) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Version) => {
            println!("fleetd version {}", fleet::daemon::VERSION);
            return Ok(());
        }
        Some(Command::Dev(d)) => {
            let units = if d.start.is_empty() && d.units.is_none() {
                fleet::dev::EXAMPLE_UNITS
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            } else {
                d.start
            };
            let opts = fleet::dev::DevOptions {
                machines: d.machines,
                data_dir: std::path::absolute(&d.data_dir)?,
                agent_ttl: d.agent_ttl,
                units_dir: d.units,
                units,
                fleetd: std::env::current_exe()?,
            };
            let mut out = std::io::stdout();
            fleet::dev::run(opts, &mut out, bins::shutdown_signal()).await?;
            return Ok(());
        }
        None => {}
    }
    let (config, deprecated) = Config::load(cli.config.as_deref(), std::env::vars(), &key_flags)?;
    for key in deprecated {
        eprintln!("fleetd: config option {key} is deprecated and ignored");
    }
    let data_dir = cli
        .member
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/lib/fleetd"));
    std::fs::create_dir_all(&data_dir)?;
    let store = match (cli.store, config.etcd_servers.is_empty()) {
        (Some(urls), _) => StoreChoice::from_url(&urls),
        (None, false) => StoreChoice::Etcd(config.etcd_servers.clone()),
        (None, true) => {
            let mut member = cli.member;
            member.data_dir = Some(data_dir.join("store"));
            StoreChoice::Embedded(Box::new(member))
        }
    };
    fleet::daemon::run(
        config,
        store,
        data_dir.join("units"),
        bins::shutdown_signal(),
    )
    .await?;
    Ok(())
}
