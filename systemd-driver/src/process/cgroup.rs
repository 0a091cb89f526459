//! cgroup v2 support: one cgroup per unit under the supervisor's own cgroup, when the host
//! lets us create them. A cgroup catches every process of a unit, including daemons that
//! leave the unit's process group with `setsid()`; without one we fall back to process groups.

use std::path::{Path, PathBuf};

/// What the host's cgroups allow, found once when the driver opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupSupport {
    /// The directory holding one cgroup per unit, if cgroups are usable.
    pub root: Option<PathBuf>,
    /// Why cgroups are not used, when they are not.
    pub unavailable: Option<String>,
    /// Whether `MemoryMax=` can be enforced (the memory controller is delegated to us).
    pub memory: bool,
    /// Whether `CPUQuota=` can be enforced (the cpu controller is delegated to us).
    pub cpu: bool,
}

impl CgroupSupport {
    /// Finds the cgroup v2 hierarchy and our place in it, and creates `name` below it.
    pub(crate) fn detect(name: &str) -> CgroupSupport {
        match Self::try_detect(name) {
            Ok(s) => s,
            Err(reason) => CgroupSupport {
                root: None,
                unavailable: Some(reason),
                memory: false,
                cpu: false,
            },
        }
    }

    fn try_detect(name: &str) -> Result<CgroupSupport, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        // Field 5 is the mount point; the file system type follows the " - " separator.
        let mount = mountinfo
            .lines()
            .find_map(|l| {
                let (pre, post) = l.split_once(" - ")?;
                (post.split_whitespace().next()? == "cgroup2")
                    .then(|| pre.split_whitespace().nth(4))?
            })
            .ok_or("no cgroup v2 hierarchy is mounted")?;
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let own = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or("this process is not in a cgroup v2 hierarchy")?;
        let parent = Path::new(mount).join(own.trim_start_matches('/'));
        let root = parent.join(name);
        std::fs::create_dir_all(&root)
            .map_err(|e| format!("cannot create cgroup {}: {e}", root.display()))?;
        // Creating a directory is not enough (read-only delegation): we must be able to move
        // processes, which the child does through cgroup.procs.
        let procs = root.join("cgroup.procs");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&procs)
            .map_err(|e| format!("cannot write {}: {e}", procs.display()))?;
        let controllers =
            std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
        let (memory, cpu) = (has("memory"), has("cpu"));
        if memory || cpu {
            // Make the controllers available to the per-unit cgroups below `root`. This only
            // works while `root` itself holds no processes, which is the case: units live below.
            let want: Vec<&str> = [("memory", memory), ("cpu", cpu)]
                .iter()
                .filter(|(_, ok)| *ok)
                .map(|(c, _)| *c)
                .collect();
            let line = want
                .iter()
                .map(|c| format!("+{c}"))
                .collect::<Vec<_>>()
                .join(" ");
            let _ = std::fs::write(root.join("cgroup.subtree_control"), line);
        }
        let enabled =
            std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap_or_default();
        let on = |c: &str| enabled.split_whitespace().any(|x| x == c);
        Ok(CgroupSupport {
            root: Some(root),
            unavailable: None,
            memory: on("memory"),
            cpu: on("cpu"),
        })
    }

    /// Why `MemoryMax=`/`CPUQuota=` cannot be applied, if they cannot.
    pub(crate) fn limit_problem(&self, memory: bool, cpu: bool) -> Option<String> {
        let reason = match &self.unavailable {
            Some(r) => format!("cgroups are unavailable ({r})"),
            None => "the controller is not delegated to the supervisor's cgroup".to_owned(),
        };
        if memory && !self.memory {
            return Some(format!("MemoryMax= is not enforced: {reason}"));
        }
        if cpu && !self.cpu {
            return Some(format!("CPUQuota= is not enforced: {reason}"));
        }
        None
    }
}

/// One unit's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnitCgroup {
    pub(crate) path: PathBuf,
}

impl UnitCgroup {
    /// Creates (or reuses) the cgroup for `unit` below `root`.
    pub(crate) fn create(root: &Path, unit: &str) -> std::io::Result<UnitCgroup> {
        let path = root.join(unit);
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        Ok(UnitCgroup { path })
    }

    /// Applies `MemoryMax=` and `CPUQuota=`.
    pub(crate) fn set_limits(
        &self,
        memory_max: Option<u64>,
        cpu_quota_percent: Option<f64>,
    ) -> std::io::Result<()> {
        if let Some(bytes) = memory_max {
            std::fs::write(self.path.join("memory.max"), bytes.to_string())?;
        }
        if let Some(pct) = cpu_quota_percent {
            // Quota per 100 ms period: 100% is one full CPU.
            std::fs::write(
                self.path.join("cpu.max"),
                format!("{} 100000", (pct * 1000.0).round() as u64),
            )?;
        }
        Ok(())
    }

    /// The processes in the cgroup.
    pub(crate) fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Whether any process (exited processes excluded) remains in the cgroup.
    pub(crate) fn populated(&self) -> bool {
        match std::fs::read_to_string(self.path.join("cgroup.events")) {
            Ok(s) => s.lines().any(|l| l == "populated 1"),
            Err(_) => false,
        }
    }

    /// Signals every process in the cgroup.
    pub(crate) fn signal(&self, sig: i32) {
        if sig == libc::SIGKILL && std::fs::write(self.path.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        for pid in self.pids() {
            let _ = super::sys::kill(pid, sig);
        }
    }

    /// Removes the (empty) cgroup.
    pub(crate) fn remove(&self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}
