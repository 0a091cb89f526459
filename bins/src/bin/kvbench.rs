//! kvbench: drives kvd and etcd over v2 HTTP in the same run. See `bins::bench`.

use std::process::ExitCode;

use clap::Parser;

/// kvbench: v2 HTTP load against kvd and etcd, alternating rounds, with ratios.
#[derive(Parser)]
#[command(name = "kvbench", version)]
struct Cli {
    #[command(flatten)]
    config: bins::bench::BenchConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kvbench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(bins::bench::run(cli.config)) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kvbench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
