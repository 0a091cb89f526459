//! `fleetd dev`: a local cluster of N machines on loopback in one command.
//!
//! Each machine is a separate `fleetd` process with its own machine ID, metadata, data
//! directory and API port, so killing one is real. The first three are members of the
//! embedded replicated store; the others are agent-only machines using that store. Once
//! the machines are up, the example units are started, and the endpoints are printed as
//! lines a script can read:
//!
//! ```text
//! FLEETCTL_ENDPOINT=http://127.0.0.1:PORT
//! FLEET_ETCD_SERVERS=http://127.0.0.1:PORT,http://127.0.0.1:PORT,http://127.0.0.1:PORT
//! MACHINE <machine-id> <pid>
//! ```
//!
//! A machine's death is total, as on real hardware: when one of the fleetd processes
//! exits, `fleetd dev` ends that machine's unit processes too (the native supervisor
//! records them in the machine's data directory) and says so. Ctrl-C stops every machine
//! gracefully (each stops its units and leaves the cluster).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::ctl::{self, Io};
use crate::registry::{Keys, Registry};
use crate::store::etcd::EtcdStore;

/// Why the dev cluster could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    /// A file or process operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// No machines asked for.
    #[error("--machines must be at least 1")]
    NoMachines,
    /// A machine's fleetd exited before the cluster was up.
    #[error("machine {index} ({id}) exited while starting ({status}); see {log}")]
    Exited {
        /// The machine's number.
        index: usize,
        /// Its ID.
        id: String,
        /// How it exited.
        status: String,
        /// Its log file.
        log: String,
    },
    /// The machines did not all register in time.
    #[error("the machines did not all register within {secs} s; see {dir}/m*/fleetd.log")]
    Timeout {
        /// The wait.
        secs: u64,
        /// The data directory.
        dir: String,
    },
    /// The store could not be used.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The example units could not be started.
    #[error("starting the example units failed: {0}")]
    Units(String),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DevError {
    let path = path.to_path_buf();
    move |source| DevError::Io { what, path, source }
}

/// How many machines are members of the embedded store.
pub const STORE_MEMBERS: usize = 3;

/// `fleetd dev`'s options.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// How many machines.
    pub machines: usize,
    /// Where the machines keep their data (one subdirectory each).
    pub data_dir: PathBuf,
    /// The machines' agent TTL.
    pub agent_ttl: Duration,
    /// Where the units to start are (a directory of unit files); `None`: the example
    /// units ([`EXAMPLE_FILES`]), written under the data directory.
    pub units_dir: Option<PathBuf>,
    /// The units to start from it, as fleetctl arguments.
    pub units: Vec<String>,
    /// The fleetd binary to run for each machine.
    pub fleetd: PathBuf,
}

/// The example units `fleetd dev` starts: three web instances (one per machine by
/// `Conflicts`), their sidekicks (`MachineOf`), a global monitor and a unit pinned by
/// metadata.
pub const EXAMPLE_UNITS: [&str; 8] = [
    "web@1.service",
    "web@2.service",
    "web@3.service",
    "web-discovery@1.service",
    "web-discovery@2.service",
    "web-discovery@3.service",
    "monitor.service",
    "db.service",
];

/// The example unit files, compiled in so `fleetd dev` works from any directory (the
/// same files as the repository's `examples/units/`).
pub const EXAMPLE_FILES: [(&str, &str); 4] = [
    (
        "web@.service",
        include_str!("../../examples/units/web@.service"),
    ),
    (
        "web-discovery@.service",
        include_str!("../../examples/units/web-discovery@.service"),
    ),
    (
        "monitor.service",
        include_str!("../../examples/units/monitor.service"),
    ),
    (
        "db.service",
        include_str!("../../examples/units/db.service"),
    ),
];

/// One machine of the dev cluster.
#[derive(Debug)]
struct DevMachine {
    index: usize,
    id: String,
    dir: PathBuf,
    api: String,
    child: Option<Child>,
}

/// A free TCP port on 127.0.0.1 (bound then released: the machines bind it right after).
fn free_port() -> Result<u16, DevError> {
    let addr = Path::new("127.0.0.1:0");
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("binding", addr))?;
    Ok(l.local_addr().map_err(io("binding", addr))?.port())
}

/// The machine ID kept in `dir/machine-id`, made up (32 hex digits) the first time.
fn machine_id(dir: &Path) -> Result<String, DevError> {
    let path = dir.join("machine-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim().to_owned();
        if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(id);
        }
    }
    let mut bytes = [0u8; 16];
    getrandom(&mut bytes)?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, format!("{id}\n")).map_err(io("writing", &path))?;
    Ok(id)
}

fn getrandom(buf: &mut [u8]) -> Result<(), DevError> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(io("reading", Path::new("/dev/urandom")))
}

/// The metadata of machine `i` (1-based): machine 1 is the database host; zones spread.
fn metadata(i: usize) -> String {
    let zone = ["a", "b", "c"][(i - 1) % 3];
    if i == 1 {
        format!("role=db,zone={zone}")
    } else {
        format!("role=web,zone={zone}")
    }
}

/// Runs the dev cluster until Ctrl-C (or `shutdown`), printing to `out`.
///
/// # Errors
/// When a machine cannot be started, or the cluster does not come up.
pub async fn run(
    opts: DevOptions,
    out: &mut (dyn Write + Send),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DevError> {
    if opts.machines == 0 {
        return Err(DevError::NoMachines);
    }
    std::fs::create_dir_all(&opts.data_dir).map_err(io("creating", &opts.data_dir))?;
    let members = opts.machines.min(STORE_MEMBERS);
    let mut client_urls = Vec::new();
    let mut peer_urls = Vec::new();
    for _ in 0..members {
        client_urls.push(format!("http://127.0.0.1:{}", free_port()?));
        peer_urls.push(format!("http://127.0.0.1:{}", free_port()?));
    }
    let initial_cluster = (0..members)
        .map(|i| format!("m{}={}", i + 1, peer_urls[i]))
        .collect::<Vec<_>>()
        .join(",");
    let ttl = format!("{}s", opts.agent_ttl.as_secs().max(1));
    let mut machines = Vec::new();
    for i in 1..=opts.machines {
        let dir = opts.data_dir.join(format!("m{i}"));
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        let id = machine_id(&dir)?;
        let api = format!("127.0.0.1:{}", free_port()?);
        let mut cmd = Command::new(&opts.fleetd);
        cmd.arg(format!("--machine_id={id}"))
            .arg(format!("--metadata={}", metadata(i)))
            .arg(format!("--public_ip=127.0.0.{i}"))
            .arg(format!("--agent_ttl={ttl}"))
            .arg(format!("--api_listen={api}"))
            .arg("--api_socket=")
            .arg("--data-dir")
            .arg(&dir);
        if i <= members {
            let c = &client_urls[i - 1];
            let p = &peer_urls[i - 1];
            cmd.args(["--name", &format!("m{i}")])
                .args(["--listen-client-urls", c, "--advertise-client-urls", c])
                .args(["--listen-peer-urls", p, "--initial-advertise-peer-urls", p])
                .args(["--initial-cluster", &initial_cluster]);
        } else {
            // kvd over gRPC: the store's transactions fence engine writes in one write.
            let members: Vec<String> = client_urls
                .iter()
                .map(|u| u.replacen("http://", crate::store::kvd::KVD_SCHEME, 1))
                .collect();
            cmd.arg(format!("--store={}", members.join(",")));
        }
        let log_path = dir.join("fleetd.log");
        let log = std::fs::File::create(&log_path).map_err(io("creating", &log_path))?;
        let log2 = log.try_clone().map_err(io("opening", &log_path))?;
        cmd.stdin(Stdio::null())
            .stdout(log2)
            .stderr(log)
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(io("starting", &opts.fleetd))?;
        machines.push(DevMachine {
            index: i,
            id,
            dir,
            api: format!("http://{api}"),
            child: Some(child),
        });
    }

    let store = EtcdStore::new(&client_urls)?;
    let registry = Registry::with_keys(store, Keys::default());
    wait_for_machines(&registry, &mut machines, opts.machines).await?;

    say(out, format_args!("FLEETCTL_ENDPOINT={}", machines[0].api));
    say(
        out,
        format_args!("FLEET_ETCD_SERVERS={}", client_urls.join(",")),
    );
    for m in &machines {
        let pid = m.child.as_ref().and_then(Child::id).unwrap_or(0);
        say(out, format_args!("MACHINE {} {pid}", m.id));
    }

    let units_dir = match &opts.units_dir {
        Some(d) => d.clone(),
        None => {
            let d = opts.data_dir.join("example-units");
            std::fs::create_dir_all(&d).map_err(io("creating", &d))?;
            for (name, text) in EXAMPLE_FILES {
                let p = d.join(name);
                std::fs::write(&p, text).map_err(io("writing", &p))?;
            }
            d
        }
    };
    if !opts.units.is_empty() {
        let dir = &units_dir;
        let args: Vec<String> = opts
            .units
            .iter()
            .map(|u| dir.join(u).to_string_lossy().into_owned())
            .collect();
        let mut o = Vec::new();
        let mut e = Vec::new();
        let code = ctl::commands::submit_load_start(
            &registry,
            &mut Io {
                out: &mut o,
                err: &mut e,
            },
            std::path::Path::new(""),
            "start",
            &args,
            false,
            ctl::Blocking::from_flags(true, 0),
        )
        .await;
        if code != 0 {
            return Err(DevError::Units(
                String::from_utf8_lossy(&e).trim().to_owned(),
            ));
        }
        say(out, format_args!("started {}", opts.units.join(" ")));
    }
    say(
        out,
        format_args!(
            "\nTry:\n  export FLEETCTL_ENDPOINT={}\n  fleetctl list-machines\n  fleetctl list-units\n  kill -9 <pid of a MACHINE line but the first, whose API this is>   # its units move\nLogs: {}/m<N>/fleetd.log. Ctrl-C stops the cluster.",
            machines[0].api,
            opts.data_dir.display()
        ),
    );

    supervise(&mut machines, out, shutdown).await
}

/// Writes one line for the person at the terminal (a closed output is not an error).
fn say(out: &mut (dyn Write + Send), line: std::fmt::Arguments<'_>) {
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Waits until every machine has registered its presence, or one of them exits.
async fn wait_for_machines(
    registry: &Registry<EtcdStore>,
    machines: &mut [DevMachine],
    n: usize,
) -> Result<(), DevError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        for m in machines.iter_mut() {
            if let Some(child) = &mut m.child
                && let Some(status) = child.try_wait().map_err(io("waiting for", &m.dir))?
            {
                return Err(DevError::Exited {
                    index: m.index,
                    id: m.id.clone(),
                    status: status.to_string(),
                    log: m.dir.join("fleetd.log").display().to_string(),
                });
            }
        }
        if let Ok((present, _)) = registry.machines().await
            && present.len() >= n
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(DevError::Timeout {
                secs: 60,
                dir: machines[0]
                    .dir
                    .parent()
                    .unwrap_or(Path::new("."))
                    .display()
                    .to_string(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Watches the machines until `shutdown`: a machine whose fleetd exits loses its unit
/// processes too. Then stops the others gracefully.
async fn supervise(
    machines: &mut [DevMachine],
    out: &mut (dyn Write + Send),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DevError> {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let exited = {
            let waits = machines.iter_mut().filter(|m| m.child.is_some()).map(|m| {
                let index = m.index;
                let child = m.child.as_mut().expect("filtered");
                Box::pin(async move { (index, child.wait().await) })
            });
            let waits: Vec<_> = waits.collect();
            if waits.is_empty() {
                say(out, format_args!("every machine has exited"));
                return Ok(());
            }
            tokio::select! {
                ((index, status), _, _) = futures::future::select_all(waits) => Some((index, status)),
                () = &mut shutdown => None,
            }
        };
        let Some((index, status)) = exited else {
            break;
        };
        let m = machines
            .iter_mut()
            .find(|m| m.index == index)
            .expect("a machine");
        m.child = None;
        let killed = systemd_driver::kill_orphaned_units(&m.dir.join("units")).unwrap_or(0);
        say(
            out,
            format_args!(
                "MACHINE {} exited ({}); ended its {killed} unit process(es), as a dead machine's",
                m.id,
                status.map_or_else(|e| e.to_string(), |s| s.to_string()),
            ),
        );
    }
    say(out, format_args!("stopping the machines"));
    // Agent-only machines first, then the store's members: a machine leaving needs a
    // store with a leader to remove its presence.
    let (agents, members): (Vec<_>, Vec<_>) =
        machines.iter_mut().partition(|m| m.index > STORE_MEMBERS);
    for group in [agents, members] {
        for m in &group {
            if let Some(pid) = m.child.as_ref().and_then(Child::id) {
                // SIGTERM: fleetd stops its units and leaves the cluster.
                let _ = rustix::process::kill_process(
                    rustix::process::Pid::from_raw(pid as i32).expect("a child's pid is positive"),
                    rustix::process::Signal::TERM,
                );
            }
        }
        for m in group {
            if let Some(child) = &mut m.child {
                let stopped = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
                if stopped.is_err() {
                    say(
                        out,
                        format_args!("MACHINE {} did not stop within 30 s; killing it", m.id),
                    );
                    let _ = child.kill().await;
                    let _ = systemd_driver::kill_orphaned_units(&m.dir.join("units"));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_ids_persist() {
        let dir = tempfile::tempdir().unwrap();
        let a = machine_id(dir.path()).unwrap();
        assert_eq!(a.len(), 32);
        assert_eq!(machine_id(dir.path()).unwrap(), a);
    }

    #[test]
    fn metadata_spreads_zones() {
        assert_eq!(metadata(1), "role=db,zone=a");
        assert_eq!(metadata(5), "role=web,zone=b");
    }
}
