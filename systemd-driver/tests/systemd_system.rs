//! SystemdDriver against a system manager: systemd as PID 1 in a container on the machine's
//! Docker engine, reached from here through bind mounts of its system bus socket and its
//! journal directory.
//!
//! The image is built `FROM scratch` (`docker import` of a root file system) from this
//! host's own systemd, D-Bus and coreutils with the libraries `ldd` names, so nothing is
//! pulled; it is tagged by a hash of the host's systemd version and of the build script, and
//! reused while those stay the same (about 30 MB). Unit files and the test's scratch files are
//! bind-mounted at the same paths, so the manager sees the paths the driver names. The whole
//! behavioural suite runs; PIDs the units report are the container's, which the suite's
//! liveness checks translate through `/proc/*/status` (`NSpid:`).
//!
//! Where there is no Docker engine, or `FLOTILLA_SKIP_DOCKER=1`, the test prints why and
//! passes without running; once it has an engine, any failure is a failure.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use systemd_driver::{Instance, SystemdDriver, SystemdDriverConfig, UnitDriver};

use crate::suite;
use crate::util::{Scratch, wait_state};

/// Builds the root file system in `$1` from this host's files.
const BUILD_ROOTFS: &str = r#"#!/bin/bash
set -eu
R="$1"
rm -rf "$R"; mkdir -p "$R"/usr/bin "$R"/usr/sbin "$R"/usr/lib "$R"/usr/lib64
for l in bin sbin lib lib64; do ln -s usr/$l "$R/$l"; done
SD=/usr/lib/systemd
[ -x "$SD/systemd" ] || SD=/lib/systemd
[ -x "$SD/systemd" ] || { echo "no systemd on this host (scripts/install-deps installs it)" >&2; exit 1; }
command -v dbus-daemon >/dev/null || { echo "no dbus-daemon on this host" >&2; exit 1; }
# A path as it is (a symlink stays one, in the real directory), and what it points to.
copy() {
  local f d t
  for f in "$@"; do
    [ -e "$f" ] || continue
    d=$(readlink -f "$(dirname "$f")")
    mkdir -p "$R$d"
    cp -a "$f" "$R$d/"
    t=$(readlink -f "$f")
    if [ "$t" != "$d/$(basename "$f")" ] && [ ! -e "$R$t" ]; then copy "$t"; fi
  done
}
copy "$SD" /usr/lib/x86_64-linux-gnu/systemd /usr/lib/aarch64-linux-gnu/systemd /usr/lib/os-release \
  "$(command -v systemctl)" "$(command -v journalctl)" "$(command -v dbus-daemon)" \
  /usr/share/dbus-1 /usr/lib/dbus-1.0 \
  /bin/sh /bin/dash /bin/bash /bin/sleep /bin/cat /bin/echo /bin/true /bin/false /bin/touch \
  /bin/date /usr/bin/id /usr/bin/env /bin/kill /bin/mkdir /bin/rm /bin/ls \
  /etc/passwd /etc/group /etc/nsswitch.conf
# Every shared library those programs load, by ldd, as real files.
find "$R/usr" -type f \( -perm -u+x -o -name '*.so*' \) -print0 |
  xargs -0 ldd 2>/dev/null | awk '/=> \// {print $3} /^\t\/[^ ]+ \(/ {print $1}' | sort -u |
  while read -r lib; do
    [ -e "$R$lib" ] && continue
    mkdir -p "$R$(dirname "$lib")"
    cp -L "$lib" "$R$lib"
  done
mkdir -p "$R"/etc/systemd/system "$R"/proc "$R"/sys "$R"/dev "$R"/run "$R"/tmp \
  "$R"/var/log/journal "$R"/var/lib "$R"/root
chmod 1777 "$R/tmp"
: > "$R/etc/machine-id"
ln -sf ../usr/lib/os-release "$R/etc/os-release"
ln -s "$SD/systemd" "$R/usr/sbin/init"
# (journalctl is there for systemd-journal-flush.service, which moves the journal to
# /var/log/journal, where the test reads it.)
# basic.target: journald and the D-Bus socket, without logins, gettys and the like.
ln -s "$SD/system/basic.target" "$R/etc/systemd/system/default.target"
"#;

/// `docker ARGS`: its stdout, or what went wrong.
fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "docker {} failed ({}): {}",
            args.first().unwrap_or(&""),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why the test cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    if std::env::var_os("FLOTILLA_SKIP_DOCKER").is_some_and(|v| v == "1") {
        return Some("FLOTILLA_SKIP_DOCKER=1".into());
    }
    match docker(&["info", "--format", "{{.ServerVersion}}"]) {
        Ok(v) if !v.is_empty() => None,
        Ok(_) => Some("docker info names no server".into()),
        Err(e) => Some(format!("no usable Docker engine: {e}")),
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The image's tag, building it unless it exists.
fn image(work: &Path) -> Result<String, String> {
    let version = ["/usr/lib/systemd/systemd", "/lib/systemd/systemd"]
        .iter()
        .find_map(|p| Command::new(p).arg("--version").output().ok())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let tag = format!(
        "flotilla-sdtest-systemd:{:016x}",
        fnv1a(format!("{BUILD_ROOTFS}{version}").as_bytes())
    );
    if docker(&["image", "inspect", &tag]).is_ok() {
        return Ok(tag);
    }
    let script = work.join("build-rootfs.sh");
    std::fs::write(&script, BUILD_ROOTFS).map_err(|e| e.to_string())?;
    let rootfs = work.join("rootfs");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&rootfs)
        .output()
        .map_err(|e| format!("cannot run the root file system script: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the root file system failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let tar = work.join("rootfs.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    if !status.success() {
        return Err(format!("tar of the root file system failed ({status})"));
    }
    docker(&[
        "import",
        "--change",
        r#"CMD ["/sbin/init"]"#,
        &tar.display().to_string(),
        &tag,
    ])?;
    let _ = std::fs::remove_dir_all(&rootfs);
    let _ = std::fs::remove_file(&tar);
    Ok(tag)
}

/// A running container with systemd as its PID 1; removed on drop.
struct SystemManager {
    name: String,
    dir: tempfile::TempDir,
}

impl Drop for SystemManager {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
    }
}

impl SystemManager {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    async fn start(scratch: &Path) -> Result<(SystemManager, SystemdDriver), String> {
        let dir = tempfile::Builder::new()
            .prefix("sds")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let tag = image(dir.path())?;
        let mgr = SystemManager {
            name: format!("flotilla-sdtest-{}", std::process::id()),
            dir,
        };
        for d in ["dbus", "journal", "units"] {
            std::fs::create_dir_all(mgr.path(d)).map_err(|e| e.to_string())?;
        }
        let bind = |from: PathBuf, to: &str| format!("{}:{to}", from.display());
        let units = mgr.path("units").display().to_string();
        let scratch = scratch.display().to_string();
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--name",
            &mgr.name,
            "-e",
            "container=docker",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            // What systemd needs to mount its file systems and manage cgroups. Not
            // --privileged: an engine that lacks a capability itself (CAP_SYS_RESOURCE
            // here) cannot grant all of them.
            "--cap-add",
            "SYS_ADMIN",
            "--cap-add",
            "NET_ADMIN",
            "--cap-add",
            "SYS_PTRACE",
            "--cap-add",
            "SYS_NICE",
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "apparmor=unconfined",
        ]
        .map(String::from)
        .into();
        // The host's cgroup tree, writable: systemd finds its own cgroup (the container's)
        // in /proc/1/cgroup and works below it.
        args.extend([
            "--cgroupns=host".into(),
            "-v".into(),
            "/sys/fs/cgroup:/sys/fs/cgroup:rw".into(),
            "-v".into(),
            bind(mgr.path("dbus"), "/run/dbus"),
            "-v".into(),
            bind(mgr.path("journal"), "/var/log/journal"),
            "-v".into(),
            format!("{units}:{units}"),
            "-v".into(),
            format!("{scratch}:{scratch}"),
            tag,
        ]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&argv)?;
        let bus = mgr.path("dbus/system_bus_socket");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last_err = String::from("the system bus socket never appeared");
        loop {
            let running = docker(&["inspect", "-f", "{{.State.Running}}", &mgr.name]);
            if running.as_deref() != Ok("true") {
                let logs = docker(&["logs", &mgr.name]).unwrap_or_default();
                return Err(format!("the container stopped ({running:?}): {logs}"));
            }
            if bus.exists() {
                let cfg = SystemdDriverConfig {
                    instance: Instance::System,
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
                return Err(format!("systemd did not come up in 60 s: {last_err}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_manager_in_a_container() {
    if let Some(why) = unavailable() {
        println!("systemd-driver: system manager test not run: {why}");
        return;
    }
    let mut s = Scratch::new();
    let (mgr, d) = match SystemManager::start(s.dir()).await {
        Ok(x) => x,
        Err(why) => panic!("systemd-driver: cannot run systemd as PID 1 in a container: {why}"),
    };
    // The units' PIDs are the container's: the suite looks them up through its PID 1.
    let init = docker(&["inspect", "-f", "{{.State.Pid}}", &mgr.name])
        .ok()
        .and_then(|p| p.parse().ok())
        .expect("the container's PID 1");
    s.set_pid_namespace_of(init);
    for (i, case) in suite::CASES.iter().enumerate() {
        suite::run(case, &d, &s, &format!("sys{i}")).await;
    }

    // [Install] units are enabled in the runtime tree of the system manager.
    let name = "sys-installed.service";
    d.load(
        name,
        "[Service]\nExecStart=/bin/sleep 30\n[Install]\nWantedBy=multi-user.target\n",
    )
    .await
    .unwrap();
    let wants = format!("/run/systemd/system/multi-user.target.wants/{name}");
    let is_link = || {
        docker(&[
            "exec",
            &mgr.name,
            "/bin/sh",
            "-c",
            &format!("test -L {wants}"),
        ])
    };
    is_link().expect("enabled at runtime");
    d.start(name).await.unwrap();
    wait_state(&d, name, "loaded/active/running").await;
    d.unload(name).await.unwrap();
    assert!(is_link().is_err(), "disabled on unload");
    assert!(
        !mgr.path("units").join(name).exists(),
        "file removed on unload"
    );

    // Straight to stderr, past the test harness's capture, so CI's log shows it.
    let _ = writeln!(
        std::io::stderr(),
        "systemd-driver: tested against systemd {} (system manager, PID 1 in a container)",
        d.version()
    );
    drop(d);
    drop(mgr);
}
