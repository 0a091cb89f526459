//! SystemdDriver against a real systemd: a user manager (`systemd --user`) with its own
//! D-Bus session bus and journald, started for this test.
//!
//! systemd is not PID 1 on the machines this runs on, so the test builds a small world for
//! the manager: its own cgroup (so it never takes over the host's root cgroup), a private
//! mount namespace with a tmpfs on `/run/systemd` holding `/run/systemd/system` (which a user
//! manager requires, and which must not appear on the host, where it would make tools think
//! systemd is running), a session bus, and a journald whose files land in the test's
//! directory. Where that cannot be built the test fails and says why.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use systemd_driver::{Instance, SystemdDriver, SystemdDriverConfig, UnitDriver};

use crate::suite;
use crate::util::{Scratch, wait_state};

const LAUNCHER: &str = r#"#!/bin/bash
set -eu
D="$1"
mkdir -p "$D/run" "$D/journal" "$D/units"
chmod 700 "$D/run"
moved=0
for h in /sys/fs/cgroup/unified /sys/fs/cgroup/systemd /sys/fs/cgroup; do
  if [ -f "$h/cgroup.procs" ]; then
    cg="$h/flotilla-sdtest-$$"
    if mkdir -p "$cg" 2>/dev/null && echo $$ > "$cg/cgroup.procs" 2>/dev/null; then
      echo "$cg" >> "$D/cgroups"
      moved=1
    fi
  fi
done
if [ $moved = 0 ]; then
  echo "no writable cgroup hierarchy to give systemd --user a cgroup of its own" >&2
  exit 1
fi
SYSTEMD=/lib/systemd/systemd
[ -x "$SYSTEMD" ] || SYSTEMD=/usr/lib/systemd/systemd
JOURNALD=/lib/systemd/systemd-journald
[ -x "$JOURNALD" ] || JOURNALD=/usr/lib/systemd/systemd-journald
for b in "$SYSTEMD" "$JOURNALD" "$(command -v dbus-daemon || echo dbus-daemon)" "$(command -v unshare || echo unshare)"; do
  [ -x "$b" ] || { echo "missing $b (scripts/install-deps installs systemd and dbus)" >&2; exit 1; }
done
export XDG_RUNTIME_DIR="$D/run" DBUS_SESSION_BUS_ADDRESS="unix:path=$D/run/bus" SYSTEMD="$SYSTEMD" JOURNALD="$JOURNALD"
exec unshare --mount --propagation private /bin/bash -c '
  set -e
  mkdir -p /run/systemd /run/log/journal
  mount -t tmpfs tmpfs /run/systemd
  mkdir -p /run/systemd/system
  mount --bind "$0/journal" /run/log/journal
  dbus-daemon --session --address="$DBUS_SESSION_BUS_ADDRESS" --nofork --nopidfile --syslog-only &
  "$JOURNALD" &
  exec "$SYSTEMD" --user' "$D"
"#;

/// A running user manager; dropping it kills everything it and its units started.
struct UserManager {
    dir: tempfile::TempDir,
    launcher: Child,
}

impl UserManager {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    async fn start() -> Result<(UserManager, SystemdDriver), String> {
        if euid_is_root().is_err() {
            return Err(
                "the test needs root to give systemd --user its own cgroup and mount namespace"
                    .into(),
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("sdu")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let script = dir.path().join("launch.sh");
        std::fs::write(&script, LAUNCHER).map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(dir.path().join("launch.log")).map_err(|e| e.to_string())?;
        let launcher = Command::new("setsid")
            .arg("/bin/bash")
            .arg(&script)
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run the launcher: {e}"))?;
        let mut mgr = UserManager { dir, launcher };
        let bus = mgr.path("run/bus");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last_err = String::from("the session bus never appeared");
        loop {
            if let Ok(Some(status)) = mgr.launcher.try_wait() {
                let log = std::fs::read_to_string(mgr.path("launch.log")).unwrap_or_default();
                return Err(format!("systemd --user exited ({status}): {}", log.trim()));
            }
            if bus.exists() {
                let cfg = SystemdDriverConfig {
                    instance: Instance::User,
                    bus_address: Some(format!("unix:path={}", bus.display())),
                    units_dir: mgr.path("units"),
                    journal_dir: Some(mgr.path("journal")),
                    poll_interval: Duration::from_millis(500),
                };
                match SystemdDriver::connect(cfg).await {
                    Ok(d) => return Ok((mgr, d)),
                    Err(e) => last_err = e.to_string(),
                }
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(mgr.path("launch.log")).unwrap_or_default();
                return Err(format!(
                    "systemd --user did not come up in 30 s: {last_err}; launcher said: {}",
                    log.trim()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Whether we run as root (`id -u`: no unsafe code in tests).
fn euid_is_root() -> Result<(), ()> {
    let out = Command::new("id").arg("-u").output().map_err(|_| ())?;
    if String::from_utf8_lossy(&out.stdout).trim() == "0" {
        Ok(())
    } else {
        Err(())
    }
}

fn kill_cgroup_tree(cg: &Path) {
    // Kill every process in the tree (several rounds: a dying manager may still fork).
    for _ in 0..50 {
        let mut any = false;
        visit(cg, &mut |dir| {
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines() {
                    any = true;
                    let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
                }
            }
        });
        if !any {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Remove the (now empty) cgroups, deepest first.
    fn remove(dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    remove(&e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    remove(cg);
}

fn visit(dir: &Path, f: &mut dyn FnMut(&Path)) {
    f(dir);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                visit(&e.path(), f);
            }
        }
    }
}

impl Drop for UserManager {
    fn drop(&mut self) {
        let cgroups = std::fs::read_to_string(self.path("cgroups")).unwrap_or_default();
        for cg in cgroups.lines() {
            kill_cgroup_tree(Path::new(cg));
        }
        let _ = self.launcher.kill();
        let _ = self.launcher.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behavioural_suite_against_real_systemd() {
    let (mgr, d) = match UserManager::start().await {
        Ok(x) => x,
        Err(why) => {
            panic!("systemd-driver: cannot test against a real systemd on this machine: {why}")
        }
    };
    let s = Scratch::new();
    for (i, case) in suite::CASES.iter().enumerate() {
        suite::run(case, &d, &s, &format!("sd{i}")).await;
    }

    // [Install] units are enabled at runtime and disabled on unload.
    let wants = mgr.path("run/systemd/user/default.target.wants/sd-installed.service");
    d.load(
        "sd-installed.service",
        "[Service]\nExecStart=/bin/sleep 30\n[Install]\nWantedBy=default.target\n",
    )
    .await
    .unwrap();
    assert!(
        wants.symlink_metadata().is_ok(),
        "enabled at runtime: {}",
        wants.display()
    );
    d.start("sd-installed.service").await.unwrap();
    wait_state(&d, "sd-installed.service", "loaded/active/running").await;
    d.unload("sd-installed.service").await.unwrap();
    assert!(wants.symlink_metadata().is_err(), "disabled on unload");
    assert!(
        !mgr.path("units/sd-installed.service").exists(),
        "file removed on unload"
    );

    // Batches: one daemon-reload for several loads, and for several unloads.
    let batch: Vec<(String, String)> = (0..3)
        .map(|i| {
            (
                format!("sd-batch{i}.service"),
                "[Service]\nExecStart=/bin/sleep 30\n".to_owned(),
            )
        })
        .collect();
    d.load_all(&batch).await.unwrap();
    for (name, _) in &batch {
        d.start(name).await.unwrap();
        wait_state(&d, name, "loaded/active/running").await;
    }
    let names: Vec<String> = batch.iter().map(|(n, _)| n.clone()).collect();
    d.unload_all(&names).await.unwrap();
    assert!(
        d.list()
            .await
            .unwrap()
            .iter()
            .all(|u| !u.name.starts_with("sd-batch"))
    );
    for name in &names {
        assert!(!mgr.path(&format!("units/{name}")).exists());
    }

    // A unit systemd refuses is reported and not left behind.
    let err = d
        .load("sd-bad.service", "[Service]\nType=simple\n")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bad-setting"), "{err}");

    // Straight to stderr, past the test harness's capture, so CI's log shows it.
    let _ = writeln!(
        std::io::stderr(),
        "systemd-driver: tested against systemd {}",
        d.version()
    );
    drop(d);
    drop(mgr);
}
