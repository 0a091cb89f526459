//! kvd: an etcd v2-compatible key/value server. See `kv_server` for the behaviour.

use std::process::ExitCode;

use clap::Parser;

/// kvd: an etcd v2-compatible key/value store server.
#[derive(Parser)]
#[command(name = "kvd", version)]
struct Cli {
    #[command(flatten)]
    config: kv_server::Config,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.config.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kvd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(kv_server::run(cli.config, bins::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Through anyhow, `{:#}` prints each cause after the error's own message.
            eprintln!("kvd: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}
