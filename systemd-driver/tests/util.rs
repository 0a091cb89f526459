//! Helpers shared by the integration tests: polling with deadlines, scratch directories.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use systemd_driver::{LogOptions, UnitDriver, UnitStatus};

/// How long any single wait may take before the test fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// A scratch directory the units under test can read and write, and where the PIDs they
/// write there live.
pub(crate) struct Scratch {
    dir: tempfile::TempDir,
    /// `Some(host PID of a process in it)` when units run in another PID namespace (a
    /// container); their PIDs are translated through `/proc/*/status` `NSpid:`.
    pid_namespace_of: Option<u32>,
}

impl Scratch {
    pub(crate) fn new() -> Scratch {
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("sdtest")
                .tempdir()
                .expect("scratch dir"),
            pid_namespace_of: None,
        }
    }

    /// Units report PIDs in the PID namespace of host process `init` from now on.
    pub(crate) fn set_pid_namespace_of(&mut self, init: u32) {
        self.pid_namespace_of = Some(init);
    }

    /// Whether the unit's process `pid` (in the units' PID namespace) is alive.
    pub(crate) fn alive(&self, pid: u32) -> bool {
        match self.pid_namespace_of {
            None => alive(pid),
            Some(init) => host_pid(init, pid).is_some_and(alive),
        }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Polls `status` until `pred` holds; panics with the last status at the deadline.
pub(crate) async fn wait_status<D: UnitDriver>(
    d: &D,
    name: &str,
    what: &str,
    pred: impl Fn(&UnitStatus) -> bool,
) -> UnitStatus {
    let start = Instant::now();
    loop {
        let st = d.status(name).await.expect("status");
        if pred(&st) {
            return st;
        }
        if start.elapsed() > DEADLINE {
            panic!("{name}: waited {DEADLINE:?} for {what}; last status {st:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the unit's state displays as `want` (e.g. `loaded/active/running`).
pub(crate) async fn wait_state<D: UnitDriver>(d: &D, name: &str, want: &str) -> UnitStatus {
    wait_status(d, name, want, |st| st.state.to_string() == want).await
}

/// Polls a condition until it holds; panics at the deadline.
pub(crate) async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > DEADLINE {
            panic!("waited {DEADLINE:?} for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The host PID of the process that is `pid` in the PID namespace of host process `init`.
fn host_pid(init: u32, pid: u32) -> Option<u32> {
    let ns = std::fs::read_link(format!("/proc/{init}/ns/pid")).ok()?;
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let h: u32 = e.file_name().to_str()?.parse().ok()?;
        if std::fs::read_link(format!("/proc/{h}/ns/pid")).ok()? != ns {
            return None;
        }
        let status = std::fs::read_to_string(format!("/proc/{h}/status")).ok()?;
        // "NSpid:" lists the PID in each namespace, outermost first.
        let inner = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))?
            .split_whitespace()
            .last()?
            .parse::<u32>()
            .ok()?;
        (inner == pid).then_some(h)
    })
}

/// Reads a file's lines (empty when missing).
pub(crate) fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| s.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Whether a process with this PID is alive (zombies count as dead).
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rfind(')').and_then(|i| s[i + 2..].chars().next()) != Some('Z'),
        Err(_) => false,
    }
}

/// Collects the unit's log lines until one equals `want` (following).
pub(crate) async fn wait_log_line<D: UnitDriver>(d: &D, name: &str, want: &str) -> Vec<String> {
    let mut stream = d
        .logs(
            name,
            LogOptions {
                lines: None,
                follow: true,
            },
        )
        .await
        .expect("logs");
    let mut seen = Vec::new();
    let res = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = stream.next().await {
            let done = line.message == want;
            seen.push(line.message);
            if done {
                return;
            }
        }
    })
    .await;
    assert!(
        res.is_ok(),
        "{name}: waited {DEADLINE:?} for log line {want:?}; got {seen:?}"
    );
    seen
}
