//! fleetctl: fleet's command-line client. The commands live in `fleet::ctl`.

use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fleetctl: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let argv: Vec<String> = std::env::args().collect();
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr());
    let code = rt.block_on(fleet::ctl::run(
        argv,
        &mut fleet::ctl::Io {
            out: &mut out,
            err: &mut err,
        },
    ));
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
