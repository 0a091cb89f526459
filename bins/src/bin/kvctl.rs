//! kvctl: etcdctl v2's commands against kvd or etcd. See `bins::kvctl` for the behaviour.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = bins::kvctl::Cli::parse();
    ExitCode::from(bins::kvctl::run(cli))
}
