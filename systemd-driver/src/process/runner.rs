//! One task per loaded unit: systemd's service state machine over real processes.
//!
//! The task owns every process of its unit. Driver calls reach it as [`Cmd`]s; the task
//! answers start/stop at once (like a queued systemd job) and performs them in order, so a
//! caller that gives up waiting never leaves a unit half-handled.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::net::UnixDatagram;
use tokio::sync::{mpsc, oneshot};
use unit_parser::exec::{ExecCommand, expand_exec_argv};

use super::Ctx;
use super::cgroup::UnitCgroup;
use super::spawn::{self, SpawnRequest, Spawned};
use super::sys;
use super::user::{self, UserRecord};
use crate::config::{KillMode, NotifyAccess, RestartPolicy, ServiceConfig, ServiceType};
use crate::error::{Error, Result};
use crate::state::{ActiveState, LoadState, ServiceResult, UnitState, UnitStatus};

/// A request to a unit's task.
#[derive(Debug)]
pub(crate) enum Cmd {
    Start(Ack),
    Stop(Ack),
    Reload(Ack),
    Unload(Ack),
}

pub(crate) type Ack = oneshot::Sender<Result<()>>;

/// What the driver and the task share about a unit.
#[derive(Debug)]
pub(crate) struct UnitShared {
    pub(crate) status: Mutex<UnitStatus>,
    /// The configuration the next start uses (a load replaces it; a running unit keeps its own).
    pub(crate) config: Mutex<Arc<ServiceConfig>>,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    Code(i32),
    Signal {
        sig: i32,
        core: bool,
    },
    /// A process we did not spawn (adopted, or a forking daemon): its status is not ours to read.
    Unknown,
}

impl Exit {
    pub(crate) fn from_status(s: std::process::ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        match (s.code(), s.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(sig)) => Exit::Signal {
                sig,
                core: s.core_dumped(),
            },
            _ => Exit::Unknown,
        }
    }

    /// systemd's notion of a clean exit for the main process.
    fn clean(self, stopping: bool) -> bool {
        match self {
            Exit::Code(c) => c == 0,
            Exit::Signal { sig, .. } => {
                matches!(
                    sig,
                    libc::SIGHUP | libc::SIGINT | libc::SIGTERM | libc::SIGPIPE
                )
            }
            Exit::Unknown => stopping,
        }
    }

    /// systemd's `Result` value for an unclean exit.
    fn result(self) -> ServiceResult {
        match self {
            Exit::Code(_) | Exit::Unknown => ServiceResult::ExitCode,
            Exit::Signal { core: true, .. } => ServiceResult::CoreDump,
            Exit::Signal { .. } => ServiceResult::Signal,
        }
    }
}

/// A process being watched.
#[derive(Debug)]
pub(crate) enum Proc {
    /// One we started: ours to reap, so its exit status is known.
    Child(ChildProc),
    /// One we did not start (adopted, or a forking daemon): watched through a pidfd.
    Foreign { pid: u32, fd: AsyncFd<OwnedFd> },
}

/// A child of the supervisor, watched through the pidfd it was created with.
#[derive(Debug)]
pub(crate) struct ChildProc {
    pid: u32,
    /// `None` only while being dropped.
    fd: Option<AsyncFd<OwnedFd>>,
    status: Option<Exit>,
}

impl ChildProc {
    fn new(s: Spawned) -> std::io::Result<ChildProc> {
        Ok(ChildProc {
            pid: s.pid,
            fd: Some(sys::watch_fd(s.pidfd)?),
            status: None,
        })
    }

    /// The PID while the process is not reaped (after that the number may be reused).
    fn id(&self) -> Option<u32> {
        self.status.is_none().then_some(self.pid)
    }

    fn try_wait(&mut self) -> Option<Exit> {
        if self.status.is_none() {
            self.status = sys::try_reap(self.pid);
        }
        self.status
    }

    /// Waits for the exit. Cancel-safe.
    async fn wait(&mut self) -> Exit {
        loop {
            if let Some(e) = self.try_wait() {
                return e;
            }
            let Some(fd) = &self.fd else {
                return Exit::Unknown;
            };
            // A pidfd becomes readable once the process has exited.
            match fd.readable().await {
                Ok(mut guard) => {
                    if let Some(e) = sys::try_reap(self.pid) {
                        self.status = Some(e);
                        return e;
                    }
                    guard.clear_ready();
                }
                Err(_) => return Exit::Unknown,
            }
        }
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        // A unit left running (the driver was dropped) is still our child: reap it when it
        // exits rather than leave a zombie, as long as a runtime is there to wait on.
        if self.try_wait().is_some() {
            return;
        }
        if let (Some(fd), Ok(rt)) = (self.fd.take(), tokio::runtime::Handle::try_current()) {
            let pid = self.pid;
            rt.spawn(async move {
                let _ = fd.readable().await;
                sys::try_reap(pid);
            });
        }
    }
}

impl Proc {
    pub(crate) fn foreign(pid: u32) -> std::io::Result<Proc> {
        Ok(Proc::Foreign {
            pid,
            fd: sys::watch_pid(pid)?,
        })
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Proc::Child(c) => c.id(),
            Proc::Foreign { pid, .. } => Some(*pid),
        }
    }

    fn pid_even_if_reaped(&self) -> u32 {
        match self {
            Proc::Child(c) => c.pid,
            Proc::Foreign { pid, .. } => *pid,
        }
    }

    /// Waits for the exit. Cancel-safe.
    async fn wait(&mut self) -> Exit {
        match self {
            Proc::Child(c) => c.wait().await,
            Proc::Foreign { fd, .. } => {
                // A pidfd becomes readable once the process has exited.
                let _ = fd.readable().await;
                Exit::Unknown
            }
        }
    }

    fn exited(&mut self) -> bool {
        match self {
            Proc::Child(c) => c.try_wait().is_some(),
            Proc::Foreign { pid, .. } => sys::stat(*pid).is_none_or(|s| s.state == 'Z'),
        }
    }
}

/// What the supervisor writes into its state directory for a unit with processes, so that
/// after a restart it can adopt them or clean them up.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct PidRecord {
    pub(crate) main_pid: Option<u32>,
    pub(crate) main_start_time: Option<u64>,
    /// (process group id, start time of its leader).
    pub(crate) groups: Vec<(u32, u64)>,
    pub(crate) cgroup: Option<PathBuf>,
    /// `running` or `exited`.
    pub(crate) sub: String,
}

/// The processes found for a unit when the driver opened.
#[derive(Debug)]
pub(crate) struct Adopted {
    pub(crate) main: Option<Proc>,
    pub(crate) record: PidRecord,
}

enum Ev<T> {
    Done(T),
    Cmd(Cmd),
    /// A notification and the PID that sent it.
    Notify(String, Option<u32>),
    Timeout,
    /// The driver is gone: the task ends and leaves its processes for the next driver.
    Detached,
}

async fn select_ev<F: std::future::Future>(
    rx: &mut mpsc::UnboundedReceiver<Cmd>,
    notify: Option<&UnixDatagram>,
    deadline: Option<Instant>,
    fut: F,
) -> Ev<F::Output> {
    let sleep = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => std::future::pending().await,
        }
    };
    let note = async {
        match notify {
            Some(sock) => {
                let mut buf = vec![0u8; 4096];
                let got = sock
                    .async_io(tokio::io::Interest::READABLE, || {
                        sys::recv_with_pid(sock.as_fd(), &mut buf)
                    })
                    .await;
                match got {
                    Ok((n, pid)) => (String::from_utf8_lossy(&buf[..n]).into_owned(), pid),
                    Err(_) => std::future::pending().await,
                }
            }
            None => std::future::pending().await,
        }
    };
    // A notification is handled before the process's exit, as systemd does: a service that
    // sends READY=1 (or MAINPID=) and exits right away has its message queued before the
    // exit is seen, and must not be failed for "exiting before READY=1".
    tokio::select! {
        biased;
        cmd = rx.recv() => match cmd { Some(c) => Ev::Cmd(c), None => Ev::Detached },
        (msg, pid) = note => Ev::Notify(msg, pid),
        out = fut => Ev::Done(out),
        () = sleep => Ev::Timeout,
    }
}

/// Outcome of one phase.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Flow {
    Ok,
    /// Failed with this `Result`.
    Fail(ServiceResult),
    /// A stop (or unload) was requested.
    Stop,
    Detached,
}

pub(crate) struct Runner {
    name: String,
    ctx: Arc<Ctx>,
    shared: Arc<UnitShared>,
    rx: mpsc::UnboundedReceiver<Cmd>,
    cfg: Arc<ServiceConfig>,
    main: Option<Proc>,
    groups: Vec<(u32, u64)>,
    cgroup: Option<UnitCgroup>,
    notify: Option<UnixDatagram>,
    ready: bool,
    /// The watchdog timeout in force: `WatchdogSec=`, or what the service asked for with
    /// `WATCHDOG_USEC=` during this activation.
    watchdog: Option<Duration>,
    /// When the service's next keep-alive is due, once the watchdog is armed.
    watchdog_deadline: Option<Instant>,
    /// The service sent `WATCHDOG=trigger`.
    watchdog_triggered: bool,
    start_history: VecDeque<Instant>,
    stop_requested: bool,
    restart_pending: bool,
    unload_ack: Option<Ack>,
}

impl Runner {
    pub(crate) fn new(
        name: String,
        ctx: Arc<Ctx>,
        shared: Arc<UnitShared>,
        rx: mpsc::UnboundedReceiver<Cmd>,
    ) -> Runner {
        let cfg = shared.config.lock().expect("config lock").clone();
        Runner {
            name,
            ctx,
            shared,
            rx,
            cfg,
            main: None,
            groups: Vec::new(),
            cgroup: None,
            notify: None,
            ready: false,
            watchdog: None,
            watchdog_deadline: None,
            watchdog_triggered: false,
            start_history: VecDeque::new(),
            stop_requested: false,
            restart_pending: false,
            unload_ack: None,
        }
    }

    fn set(&self, active: ActiveState, sub: &str) {
        let state = UnitState::new(LoadState::Loaded, active, sub);
        let main_pid = self.main.as_ref().and_then(Proc::pid);
        let changed = {
            let mut st = self.shared.status.lock().expect("status lock");
            st.main_pid = main_pid;
            let changed = st.state != state;
            st.state = state.clone();
            changed
        };
        if changed {
            self.ctx.events.send(&self.name, Some(state));
        }
    }

    fn set_result(&self, result: ServiceResult, text: Option<String>) {
        let mut st = self.shared.status.lock().expect("status lock");
        st.result = result;
        if text.is_some() {
            st.status_text = text;
        }
    }

    fn active(&self) -> (ActiveState, String) {
        let st = self.shared.status.lock().expect("status lock");
        (st.state.active, st.state.sub.clone())
    }

    /// The task's main loop: idle until asked to start, then run the unit to rest.
    pub(crate) async fn run(mut self, adopted: Option<Adopted>) {
        if let Some(a) = adopted
            && self.adopt(a).await == Flow::Detached
        {
            return;
        }
        loop {
            if self.unload_ack.is_some() {
                return self.finish_unload();
            }
            if std::mem::take(&mut self.restart_pending) {
                if self.start_cycle(None).await == Flow::Detached {
                    return;
                }
                continue;
            }
            let Some(cmd) = self.rx.recv().await else {
                return;
            };
            match cmd {
                Cmd::Start(ack) => {
                    if self.start_cycle(Some(ack)).await == Flow::Detached {
                        return;
                    }
                }
                Cmd::Stop(ack) => {
                    let _ = ack.send(Ok(()));
                    if self.active().0 == ActiveState::Active {
                        // Active with no process left (RemainAfterExit): run the stop commands.
                        self.stop_requested = true;
                        if self.stop_sequence(ServiceResult::Success, true).await == Flow::Detached
                        {
                            return;
                        }
                    }
                }
                Cmd::Reload(ack) => {
                    let r = if self.active().0 == ActiveState::Active {
                        self.reload().await
                    } else {
                        Err(Error::Unsupported {
                            unit: self.name.clone(),
                            message: "unit is not active, cannot reload".into(),
                        })
                    };
                    let _ = ack.send(r);
                }
                Cmd::Unload(ack) => {
                    self.unload_ack = Some(ack);
                    if self.active().0 == ActiveState::Active {
                        self.stop_requested = true;
                        if self.stop_sequence(ServiceResult::Success, true).await == Flow::Detached
                        {
                            return;
                        }
                    }
                }
            }
        }
    }

    fn finish_unload(&mut self) {
        self.cleanup_records();
        let _ = std::fs::remove_file(self.record_path());
        if let Some(root) = &self.ctx.cgroups.root {
            let cg = UnitCgroup {
                path: root.join(&self.name),
            };
            if !cg.populated() {
                cg.remove();
            }
        }
        self.ctx.logs.remove(&self.name);
        if let Some(ack) = self.unload_ack.take() {
            let _ = ack.send(Ok(()));
        }
    }

    /// Handles a request that arrives while the unit is busy. Returns true when it asks
    /// the unit to stop.
    fn on_busy_cmd(&mut self, cmd: Cmd, stopping: bool) -> bool {
        match cmd {
            Cmd::Start(ack) => {
                if stopping || self.stop_requested {
                    self.restart_pending = true;
                }
                let _ = ack.send(Ok(()));
                false
            }
            Cmd::Stop(ack) => {
                let _ = ack.send(Ok(()));
                self.restart_pending = false;
                self.stop_requested = true;
                true
            }
            Cmd::Unload(ack) => {
                self.restart_pending = false;
                self.stop_requested = true;
                self.unload_ack = Some(ack);
                true
            }
            Cmd::Reload(ack) => {
                let _ = ack.send(Err(Error::Unsupported {
                    unit: self.name.clone(),
                    message: "unit is not active, cannot reload".into(),
                }));
                false
            }
        }
    }

    fn start_allowed(&mut self) -> bool {
        let (interval, burst) = (self.cfg.start_limit_interval, self.cfg.start_limit_burst);
        if interval.is_zero() || burst == 0 {
            return true;
        }
        let now = Instant::now();
        while self
            .start_history
            .front()
            .is_some_and(|t| now.duration_since(*t) > interval)
        {
            self.start_history.pop_front();
        }
        if self.start_history.len() >= burst as usize {
            return false;
        }
        self.start_history.push_back(now);
        true
    }

    /// Starts the unit and supervises it, through restarts, until it is at rest.
    async fn start_cycle(&mut self, ack: Option<Ack>) -> Flow {
        if self.active().0 == ActiveState::Active {
            if let Some(ack) = ack {
                let _ = ack.send(Ok(()));
            }
            return Flow::Ok;
        }
        self.cfg = self.shared.config.lock().expect("config lock").clone();
        self.stop_requested = false;
        if !self.start_allowed() {
            self.set_result(
                ServiceResult::StartLimitHit,
                Some("start request repeated too quickly".into()),
            );
            self.set(ActiveState::Failed, "failed");
            if let Some(ack) = ack {
                let _ = ack.send(Err(Error::StartLimitHit(self.name.clone())));
            }
            return Flow::Ok;
        }
        if let Some(ack) = ack {
            let _ = ack.send(Ok(()));
        }
        loop {
            self.set_result(ServiceResult::Success, None);
            let (flow, result) = self.run_once().await;
            if flow == Flow::Detached {
                return Flow::Detached;
            }
            if self.stop_requested || result.is_none() {
                return Flow::Ok;
            }
            let result = result.unwrap_or(ServiceResult::Success);
            if !should_restart(self.cfg.restart, &result) {
                return Flow::Ok;
            }
            // auto-restart: wait RestartSec, still answering requests.
            self.set(ActiveState::Activating, "auto-restart");
            let deadline = Instant::now().checked_add(self.cfg.restart_sec);
            loop {
                match select_ev(&mut self.rx, None, deadline, std::future::pending::<()>()).await {
                    Ev::Timeout | Ev::Done(()) => break,
                    Ev::Detached => return Flow::Detached,
                    Ev::Notify(..) => {}
                    Ev::Cmd(Cmd::Start(ack)) => {
                        let _ = ack.send(Ok(()));
                        break;
                    }
                    Ev::Cmd(c) => {
                        if self.on_busy_cmd(c, false) {
                            self.set_result(ServiceResult::Success, None);
                            self.set(ActiveState::Inactive, "dead");
                            return Flow::Ok;
                        }
                    }
                }
            }
            self.cfg = self.shared.config.lock().expect("config lock").clone();
            if !self.start_allowed() {
                // systemd 252 keeps the failing run's Result when an automatic restart hits
                // the limit (a refused manual start reports start-limit-hit).
                let text = Some("start request repeated too quickly".to_owned());
                if self.current_result().is_success() {
                    self.set_result(ServiceResult::StartLimitHit, text);
                } else {
                    self.shared.status.lock().expect("status lock").status_text = text;
                }
                self.set(ActiveState::Failed, "failed");
                return Flow::Ok;
            }
        }
    }

    /// One activation, from ExecStartPre= to rest. Returns the final `Result` when the unit
    /// came to rest on its own (for the restart decision), `None` when it stays active
    /// (RemainAfterExit) or was stopped.
    async fn run_once(&mut self) -> (Flow, Option<ServiceResult>) {
        self.ready = false;
        self.watchdog = self.cfg.watchdog;
        self.watchdog_deadline = None;
        self.watchdog_triggered = false;
        self.groups.clear();
        if let Err(message) = self.prepare() {
            self.ctx.logs.note(&self.name, &message);
            self.set_result(ServiceResult::Resources, Some(message));
            self.set(ActiveState::Failed, "failed");
            return (Flow::Ok, Some(ServiceResult::Resources));
        }
        let cfg = self.cfg.clone();
        if !cfg.exec_start_pre.is_empty() {
            self.set(ActiveState::Activating, "start-pre");
            match self
                .run_controls(&cfg.exec_start_pre, cfg.timeout_start)
                .await
            {
                Flow::Ok => {}
                f => return self.after_failed_start(f).await,
            }
        }
        let flow = match cfg.service_type {
            ServiceType::Oneshot => {
                self.set(ActiveState::Activating, "start");
                self.run_controls(&cfg.exec_start, cfg.timeout_start).await
            }
            _ => self.start_main(&cfg).await,
        };
        if flow != Flow::Ok {
            return self.after_failed_start(flow).await;
        }
        // As systemd on entering start-post: from here on keep-alives are due.
        self.arm_watchdog();
        if !cfg.exec_start_post.is_empty() {
            self.set(ActiveState::Activating, "start-post");
            match self
                .run_controls(&cfg.exec_start_post, cfg.timeout_start)
                .await
            {
                Flow::Ok => {}
                f => return self.after_failed_start(f).await,
            }
        }
        let main_alive = self.main.as_mut().is_some_and(|m| !m.exited())
            || (self.main.is_none()
                && cfg.service_type == ServiceType::Forking
                && !self.unit_empty());
        if !main_alive && self.main.is_none() && cfg.service_type != ServiceType::Forking {
            // Oneshot (or its processes are all gone): active/exited or straight to stop.
            if cfg.remain_after_exit {
                self.write_record("exited");
                self.set(ActiveState::Active, "exited");
                return (Flow::Ok, None);
            }
            let f = self.stop_sequence(ServiceResult::Success, true).await;
            return (f, Some(self.current_result()));
        }
        self.write_record("running");
        self.set(ActiveState::Active, "running");
        self.supervise_running().await
    }

    fn current_result(&self) -> ServiceResult {
        self.shared
            .status
            .lock()
            .expect("status lock")
            .result
            .clone()
    }

    /// A start phase failed or was interrupted: stop what runs, and report.
    async fn after_failed_start(&mut self, flow: Flow) -> (Flow, Option<ServiceResult>) {
        match flow {
            Flow::Detached => (Flow::Detached, None),
            Flow::Stop => {
                let f = self.stop_sequence(ServiceResult::Success, false).await;
                (f, None)
            }
            Flow::Fail(result) => {
                let f = self.stop_sequence(result, false).await;
                (f, Some(self.current_result()))
            }
            Flow::Ok => (Flow::Ok, None),
        }
    }

    /// Sets up what every process of this activation shares: cgroup, notify socket.
    fn prepare(&mut self) -> std::result::Result<(), String> {
        if let Some(root) = &self.ctx.cgroups.root {
            let cg = UnitCgroup::create(root, &self.name)
                .map_err(|e| format!("cannot create cgroup for {}: {e}", self.name))?;
            if let Some(problem) = self.ctx.cgroups.limit_problem(
                self.cfg.memory_max.is_some(),
                self.cfg.cpu_quota_percent.is_some(),
            ) {
                self.ctx
                    .logs
                    .note(&self.name, &format!("flotilla: {problem}"));
                tracing::warn!(unit = %self.name, "{problem}");
            } else {
                cg.set_limits(self.cfg.memory_max, self.cfg.cpu_quota_percent)
                    .map_err(|e| format!("cannot apply resource limits: {e}"))?;
            }
            self.cgroup = Some(cg);
        } else if let Some(problem) = self.ctx.cgroups.limit_problem(
            self.cfg.memory_max.is_some(),
            self.cfg.cpu_quota_percent.is_some(),
        ) {
            self.ctx
                .logs
                .note(&self.name, &format!("flotilla: {problem}"));
            tracing::warn!(unit = %self.name, "{problem}");
        }
        self.bind_notify()
    }

    /// Creates the unit's `NOTIFY_SOCKET` when it needs one: `Type=notify`, or a watchdog
    /// (systemd's `NotifyAccess=` defaults to `main` then, whatever the type).
    fn bind_notify(&mut self) -> std::result::Result<(), String> {
        if self.cfg.service_type == ServiceType::Notify
            || self.cfg.watchdog.is_some()
            || self.cfg.notify_access != NotifyAccess::None
        {
            let path = self.ctx.notify_dir.join(&self.name);
            let _ = std::fs::remove_file(&path);
            let sock = UnixDatagram::bind(&path)
                .and_then(|sock| sys::set_passcred(sock.as_fd()).map(|()| sock))
                .map_err(|e| format!("cannot create notify socket {}: {e}", path.display()))?;
            self.notify = Some(sock);
        }
        Ok(())
    }

    /// (Re)starts the watchdog's countdown from now (systemd's `service_reset_watchdog`).
    fn arm_watchdog(&mut self) {
        self.watchdog_deadline = self.watchdog.and_then(|t| Instant::now().checked_add(t));
    }

    /// `User=` and `Group=` resolved, or why not (naming the unit). Off the runtime's
    /// threads: a name service (LDAP, sssd) may take its time to answer.
    async fn credentials(&self) -> std::result::Result<(Option<UserRecord>, Option<u32>), String> {
        let (u, g) = (self.cfg.user.clone(), self.cfg.group.clone());
        if u.is_none() && g.is_none() {
            return Ok((None, None));
        }
        let lookup = tokio::task::spawn_blocking(move || {
            let found_user = u.as_deref().map(user::user).transpose()?;
            let found_group = g.as_deref().map(user::group).transpose()?;
            Ok::<_, user::LookupError>((found_user, found_group))
        });
        match lookup.await {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(e)) => Err(format!("{}: {e}", self.name)),
            Err(e) => Err(format!("{}: user lookup failed: {e}", self.name)),
        }
    }

    /// The environment of the unit's processes; errors name the missing file.
    fn environment(
        &self,
        with_main_pid: bool,
        user: Option<&UserRecord>,
    ) -> std::result::Result<Vec<(String, String)>, String> {
        let mut env: Vec<(String, String)> = vec![(
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        )];
        let put = |env: &mut Vec<(String, String)>, k: &str, v: String| {
            env.retain(|(n, _)| n != k);
            env.push((k.to_owned(), v));
        };
        if let Some(pw) = user {
            put(&mut env, "HOME", pw.home.clone());
            put(&mut env, "USER", pw.name.clone());
            put(&mut env, "LOGNAME", pw.name.clone());
            put(&mut env, "SHELL", pw.shell.clone());
        }
        if let Some(t) = self.watchdog {
            // WATCHDOG_PID is each process's own PID, written by the child itself (an
            // empty value here marks it for that); Environment= may override both.
            put(&mut env, "WATCHDOG_PID", String::new());
            put(&mut env, "WATCHDOG_USEC", t.as_micros().to_string());
        }
        for (k, v) in &self.cfg.environment {
            put(&mut env, k, v.clone());
        }
        for (path, optional) in &self.cfg.environment_files {
            match std::fs::read(path) {
                Ok(bytes) => {
                    let vars = unit_parser::value::parse_env_file(&bytes).map_err(|e| {
                        format!("Failed to load environment file {}: {e}", path.display())
                    })?;
                    for (k, v) in vars {
                        put(&mut env, &k, v);
                    }
                }
                Err(_) if *optional => {}
                Err(e) => {
                    return Err(format!(
                        "Failed to load environment file {}: {e}",
                        path.display()
                    ));
                }
            }
        }
        if let Some(sock) = &self.notify
            && let Ok(addr) = sock.local_addr()
            && let Some(p) = addr.as_pathname()
        {
            put(&mut env, "NOTIFY_SOCKET", p.display().to_string());
        }
        if with_main_pid && let Some(pid) = self.main.as_ref().and_then(Proc::pid) {
            put(&mut env, "MAINPID", pid.to_string());
        }
        Ok(env)
    }

    /// Spawns one command in the unit's session/cgroup with its output in the unit's log.
    async fn spawn(
        &mut self,
        cmd: &ExecCommand,
        with_main_pid: bool,
    ) -> std::result::Result<ChildProc, String> {
        let (user, group) = self.credentials().await?;
        let env = self.environment(with_main_pid, user.as_ref())?;
        let argv = exec_argv(cmd, &env);
        let log = self
            .ctx
            .logs
            .open_append(&self.name)
            .map_err(|e| format!("cannot open log file: {e}"))?;
        let mut cwd = None;
        if let Some((dir, optional)) = &self.cfg.working_directory {
            let dir = if dir == "~" {
                user.as_ref()
                    .map(|u| u.home.clone())
                    .unwrap_or_else(|| std::env::var("HOME").unwrap_or("/".into()))
            } else {
                dir.clone()
            };
            if !*optional || std::path::Path::new(&dir).is_dir() {
                cwd = Some(dir);
            }
        }
        // Switched inside the child, after it is in its cgroup (joining one needs root).
        let mut creds = None;
        if let Some(u) = user.as_ref().filter(|_| !skips_credentials(cmd)) {
            let gid = group.unwrap_or(u.gid);
            if sys::euid() == 0 {
                creds = Some((u.uid, gid));
            } else if u.uid != sys::euid() {
                return Err(format!(
                    "{}: User={} needs the supervisor to run as root",
                    self.name, u.name
                ));
            }
        }
        let req = SpawnRequest {
            program: &cmd.path,
            argv: &argv,
            env: &env,
            own_pid_var: env
                .iter()
                .any(|(k, v)| k == "WATCHDOG_PID" && v.is_empty())
                .then_some("WATCHDOG_PID"),
            output: &log,
            cwd: cwd.as_deref(),
            cgroup: self.cgroup.as_ref().map(|c| c.path.as_path()),
            creds,
        };
        // On the runtime's own thread, not the blocking pool: where spawning falls back to
        // fork(), that copies every mapping of this process, and the stacks of hundreds of
        // pool threads made each spawn about ten times as expensive (measured with the bench).
        let spawned =
            spawn::spawn(&req).map_err(|e| format!("Failed to execute {}: {e}", cmd.path))?;
        let pid = spawned.pid;
        let child = ChildProc::new(spawned).map_err(|e| {
            // A process we cannot watch must not run untracked.
            let _ = sys::kill(pid, libc::SIGKILL);
            spawn::reap(pid);
            format!("cannot watch {} (PID {pid}): {e}", cmd.path)
        })?;
        if let Some(st) = sys::stat(child.pid) {
            self.groups.push((child.pid, st.start_time));
        }
        Ok(child)
    }

    /// Runs control commands one after the other (ExecStartPre= and friends).
    async fn run_controls(&mut self, cmds: &[ExecCommand], timeout: Option<Duration>) -> Flow {
        for cmd in cmds {
            let flow = self.run_control(cmd, timeout, false).await;
            match flow {
                Flow::Fail(_) if cmd.flags.ignore_failure => {}
                Flow::Ok => {}
                other => return other,
            }
        }
        Flow::Ok
    }

    async fn run_control(
        &mut self,
        cmd: &ExecCommand,
        timeout: Option<Duration>,
        stopping: bool,
    ) -> Flow {
        let mut child = match self.spawn(cmd, true).await {
            Ok(c) => c,
            Err(message) => {
                self.ctx.logs.note(&self.name, &message);
                self.set_result(ServiceResult::ExitCode, Some(message));
                return Flow::Fail(ServiceResult::ExitCode);
            }
        };
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            match select_ev(&mut self.rx, None, deadline, child.wait()).await {
                Ev::Done(exit) => {
                    return if exit == Exit::Code(0) {
                        Flow::Ok
                    } else {
                        if !cmd.flags.ignore_failure {
                            self.set_result(
                                exit.result(),
                                Some(format!("{} failed: {exit:?}", cmd.path)),
                            );
                        }
                        Flow::Fail(exit.result())
                    };
                }
                Ev::Timeout => {
                    if let Some(pid) = child.id() {
                        let _ = sys::kill_group(pid, libc::SIGKILL);
                    }
                    let _ = child.wait().await;
                    self.set_result(
                        ServiceResult::Timeout,
                        Some(format!("{} timed out", cmd.path)),
                    );
                    return Flow::Fail(ServiceResult::Timeout);
                }
                Ev::Notify(..) => {}
                Ev::Detached => return Flow::Detached,
                Ev::Cmd(c) => {
                    if self.on_busy_cmd(c, stopping) && !stopping {
                        // systemd kills the running control process and moves on to stopping.
                        if let Some(pid) = child.id() {
                            let _ = sys::kill_group(pid, self.cfg.kill_signal);
                        }
                        let _ = tokio::time::timeout(
                            self.cfg.timeout_stop.unwrap_or(Duration::from_secs(90)),
                            child.wait(),
                        )
                        .await;
                        if let Some(pid) = child.id() {
                            let _ = sys::kill_group(pid, libc::SIGKILL);
                        }
                        let _ = child.wait().await;
                        return Flow::Stop;
                    }
                }
            }
        }
    }

    /// Starts the main process of a simple/exec/forking/notify service.
    async fn start_main(&mut self, cfg: &ServiceConfig) -> Flow {
        let cmd = &cfg.exec_start[0];
        let child = match self.spawn(cmd, false).await {
            Ok(c) => c,
            Err(message) => {
                // What systemd reports as status=203/EXEC.
                self.ctx.logs.note(&self.name, &message);
                self.set_result(ServiceResult::ExitCode, Some(message));
                return Flow::Fail(ServiceResult::ExitCode);
            }
        };
        match cfg.service_type {
            ServiceType::Simple | ServiceType::Exec | ServiceType::Oneshot => {
                self.main = Some(Proc::Child(child));
                Flow::Ok
            }
            ServiceType::Forking => {
                self.set(ActiveState::Activating, "start");
                self.main = Some(Proc::Child(child));
                let deadline = cfg
                    .timeout_start
                    .and_then(|t| Instant::now().checked_add(t));
                loop {
                    let Some(main) = self.main.as_mut() else {
                        return Flow::Fail(ServiceResult::Protocol);
                    };
                    match select_ev(&mut self.rx, None, deadline, main.wait()).await {
                        Ev::Done(exit) => {
                            self.main = None;
                            if exit != Exit::Code(0) {
                                self.set_result(
                                    exit.result(),
                                    Some(format!("control process exited: {exit:?}")),
                                );
                                return Flow::Fail(exit.result());
                            }
                            break;
                        }
                        Ev::Timeout => {
                            self.set_result(
                                ServiceResult::Timeout,
                                Some("start operation timed out".into()),
                            );
                            return Flow::Fail(ServiceResult::Timeout);
                        }
                        Ev::Notify(..) => {}
                        Ev::Detached => return Flow::Detached,
                        Ev::Cmd(c) => {
                            if self.on_busy_cmd(c, false) {
                                return Flow::Stop;
                            }
                        }
                    }
                }
                if let Some(pid) = self.guess_main_pid(cfg).await {
                    match Proc::foreign(pid) {
                        Ok(p) => self.main = Some(p),
                        Err(e) => {
                            tracing::warn!(unit = %self.name, pid, "cannot watch main process: {e}")
                        }
                    }
                }
                Flow::Ok
            }
            ServiceType::Notify => {
                self.set(ActiveState::Activating, "start");
                self.main = Some(Proc::Child(child));
                let deadline = cfg
                    .timeout_start
                    .and_then(|t| Instant::now().checked_add(t));
                while !self.ready {
                    let Some(main) = self.main.as_mut() else {
                        return Flow::Fail(ServiceResult::Protocol);
                    };
                    match select_ev(&mut self.rx, self.notify.as_ref(), deadline, main.wait()).await
                    {
                        Ev::Done(exit) => {
                            let result = if exit.clean(false) {
                                ServiceResult::Protocol
                            } else {
                                exit.result()
                            };
                            self.set_result(
                                result.clone(),
                                Some(format!("main process exited before READY=1: {exit:?}")),
                            );
                            return Flow::Fail(result);
                        }
                        Ev::Timeout => {
                            self.set_result(
                                ServiceResult::Timeout,
                                Some("start operation timed out".into()),
                            );
                            return Flow::Fail(ServiceResult::Timeout);
                        }
                        Ev::Notify(msg, pid) => self.on_notify(&msg, pid),
                        Ev::Detached => return Flow::Detached,
                        Ev::Cmd(c) => {
                            if self.on_busy_cmd(c, false) {
                                return Flow::Stop;
                            }
                        }
                    }
                }
                Flow::Ok
            }
        }
    }

    async fn guess_main_pid(&self, cfg: &ServiceConfig) -> Option<u32> {
        if let Some(path) = &cfg.pid_file {
            // The daemon should have written it before its parent exited; allow a moment.
            for _ in 0..20 {
                if let Some(pid) = std::fs::read_to_string(path)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                {
                    return Some(pid);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            return None;
        }
        let mut candidates: Vec<(u64, u32)> = match &self.cgroup {
            Some(cg) => cg
                .pids()
                .into_iter()
                .filter_map(|p| Some((sys::stat(p)?.start_time, p)))
                .collect(),
            None => self
                .groups
                .iter()
                .flat_map(|&(pgid, start)| sys::group_members(pgid, start))
                .filter_map(|p| Some((sys::stat(p)?.start_time, p)))
                .collect(),
        };
        candidates.sort_unstable();
        candidates.first().map(|&(_, p)| p)
    }

    /// Whether a notification from `sender` counts (`NotifyAccess=`).
    fn notify_allowed(&self, sender: Option<u32>) -> bool {
        // The main process's PID even once it is reaped: what it sent just before exiting
        // (READY=1, MAINPID=) is handled after its exit was seen.
        let main = self.main.as_ref().map(Proc::pid_even_if_reaped);
        match self.cfg.notify_access {
            NotifyAccess::All => true,
            NotifyAccess::None => false,
            // Control processes' notifications are not read while they run: for them,
            // exec is main.
            NotifyAccess::Main | NotifyAccess::Exec => sender.is_some() && sender == main,
        }
    }

    fn on_notify(&mut self, msg: &str, sender: Option<u32>) {
        if !self.notify_allowed(sender) {
            tracing::debug!(
                unit = %self.name,
                ?sender,
                "notification refused by NotifyAccess={:?}",
                self.cfg.notify_access
            );
            return;
        }
        for line in msg.lines() {
            if line == "READY=1" {
                self.ready = true;
            } else if line == "WATCHDOG=1" {
                self.arm_watchdog();
            } else if line == "WATCHDOG=trigger" {
                self.watchdog_triggered = true;
            } else if let Some(v) = line.strip_prefix("WATCHDOG_USEC=") {
                match v.parse::<u64>() {
                    // 0 and infinity turn the watchdog off, as in systemd.
                    Ok(us) => {
                        self.watchdog =
                            (us != 0 && us != u64::MAX).then(|| Duration::from_micros(us));
                        self.arm_watchdog();
                    }
                    Err(_) => tracing::warn!(unit = %self.name, "cannot parse WATCHDOG_USEC={v}"),
                }
            } else if let Some(text) = line.strip_prefix("STATUS=") {
                self.shared.status.lock().expect("status lock").status_text = Some(text.to_owned());
            } else if let Some(pid) = line
                .strip_prefix("MAINPID=")
                .and_then(|p| p.parse::<u32>().ok())
                && self.main.as_ref().and_then(Proc::pid) != Some(pid)
            {
                match Proc::foreign(pid) {
                    Ok(p) => self.main = Some(p),
                    Err(e) => {
                        tracing::warn!(unit = %self.name, pid, "MAINPID={pid} is not watchable: {e}")
                    }
                }
            }
        }
    }

    /// A keep-alive came too late, or the service asked for it: kill it with
    /// `WatchdogSignal=`, with the result `watchdog` (which `Restart=on-watchdog` and
    /// friends restart).
    async fn watchdog_fired(&mut self) -> (Flow, Option<ServiceResult>) {
        let why = if std::mem::take(&mut self.watchdog_triggered) {
            "Watchdog request".to_owned()
        } else {
            format!(
                "Watchdog timeout (limit {}ms)",
                self.watchdog.unwrap_or_default().as_millis()
            )
        };
        self.watchdog_deadline = None;
        self.ctx.logs.note(&self.name, &format!("flotilla: {why}!"));
        tracing::warn!(unit = %self.name, "{why}");
        self.set_result(ServiceResult::Watchdog, Some(why));
        let signal = self.cfg.watchdog_signal;
        let f = self
            .stop_sequence_with(ServiceResult::Watchdog, false, (signal, "stop-watchdog"))
            .await;
        (f, Some(self.current_result()))
    }

    /// active/running: wait for the main process, answering requests.
    async fn supervise_running(&mut self) -> (Flow, Option<ServiceResult>) {
        loop {
            if self.watchdog_triggered
                || self.watchdog_deadline.is_some_and(|d| Instant::now() >= d)
            {
                return self.watchdog_fired().await;
            }
            let (main, cgroup, groups) = (self.main.as_mut(), &self.cgroup, &self.groups);
            let wait = async move {
                match main {
                    Some(m) => m.wait().await,
                    None => {
                        // A forking service whose main process we could not identify: it
                        // runs while any of its processes does.
                        loop {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            let empty = match cgroup {
                                Some(cg) => !cg.populated(),
                                None => !groups.iter().any(|&(g, _)| sys::group_alive(g)),
                            };
                            if empty {
                                return Exit::Unknown;
                            }
                        }
                    }
                }
            };
            let deadline = self.watchdog_deadline;
            match select_ev(&mut self.rx, self.notify.as_ref(), deadline, wait).await {
                Ev::Done(exit) => {
                    if self.main.is_none() {
                        // Group emptied on its own: no status to judge by.
                        let f = self.stop_sequence(ServiceResult::Success, true).await;
                        return (f, Some(self.current_result()));
                    }
                    let clean = exit.clean(false);
                    if clean && self.cfg.remain_after_exit {
                        self.write_record("exited");
                        self.set(ActiveState::Active, "exited");
                        return (Flow::Ok, None);
                    }
                    let result = if clean {
                        ServiceResult::Success
                    } else {
                        exit.result()
                    };
                    if !clean {
                        self.set_result(
                            result.clone(),
                            Some(format!("main process exited: {exit:?}")),
                        );
                    }
                    let f = self.stop_sequence(result, clean).await;
                    return (f, Some(self.current_result()));
                }
                Ev::Cmd(Cmd::Reload(ack)) => {
                    let r = self.reload().await;
                    let _ = ack.send(r);
                }
                Ev::Cmd(c) => {
                    if self.on_busy_cmd(c, false) {
                        let f = self.stop_sequence(ServiceResult::Success, true).await;
                        return (f, None);
                    }
                }
                Ev::Notify(msg, pid) => self.on_notify(&msg, pid),
                Ev::Timeout => {}
                Ev::Detached => return (Flow::Detached, None),
            }
        }
    }

    async fn reload(&mut self) -> Result<()> {
        let cmds = self.cfg.exec_reload.clone();
        if cmds.is_empty() {
            return Err(Error::Unsupported {
                unit: self.name.clone(),
                message: "Job type reload is not applicable (no ExecReload=)".into(),
            });
        }
        let (_, sub) = self.active();
        self.set(ActiveState::Reloading, "reload");
        let flow = self.run_controls(&cmds, self.cfg.timeout_start).await;
        self.set(ActiveState::Active, &sub);
        match flow {
            Flow::Ok | Flow::Stop | Flow::Detached => Ok(()),
            Flow::Fail(r) => Err(Error::Unsupported {
                unit: self.name.clone(),
                message: format!("reload failed: {r}"),
            }),
        }
    }

    fn main_pid(&self) -> Option<u32> {
        self.main.as_ref().and_then(Proc::pid)
    }

    fn signal(&mut self, sig: i32, whole_unit: bool) {
        if let Some(pid) = self.main_pid() {
            let _ = sys::kill(pid, sig);
        }
        if whole_unit {
            match &self.cgroup {
                Some(cg) => cg.signal(sig),
                None => {
                    for &(g, _) in &self.groups {
                        let _ = sys::kill_group(g, sig);
                    }
                }
            }
        }
    }

    fn unit_empty(&mut self) -> bool {
        if self.main.as_mut().is_some_and(|m| !m.exited()) {
            return false;
        }
        match &self.cgroup {
            Some(cg) => !cg.populated(),
            None => {
                self.groups.retain(|&(g, _)| sys::group_alive(g));
                self.groups.is_empty()
            }
        }
    }

    /// Waits until `done` holds or `deadline` passes, answering requests. `true` if done.
    async fn wait_until(
        &mut self,
        deadline: Option<Instant>,
        whole_unit: bool,
    ) -> std::result::Result<bool, Flow> {
        loop {
            let done = if whole_unit {
                self.unit_empty()
            } else {
                self.main.as_mut().is_none_or(|m| m.exited())
            };
            if done {
                return Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            let tick = Instant::now() + Duration::from_millis(5);
            let until = deadline.map_or(tick, |d| d.min(tick));
            let main = self.main.as_mut();
            let wait = async move {
                match main {
                    Some(m) => {
                        let e = m.wait().await;
                        Some(e)
                    }
                    None => std::future::pending().await,
                }
            };
            match select_ev(&mut self.rx, None, Some(until), wait).await {
                Ev::Done(Some(exit)) => self.note_stop_exit(exit),
                Ev::Cmd(c) => {
                    self.on_busy_cmd(c, true);
                }
                Ev::Detached => return Err(Flow::Detached),
                _ => {}
            }
        }
    }

    /// Records how the main process died while being stopped.
    fn note_stop_exit(&mut self, exit: Exit) {
        if !exit.clean(true) && self.current_result().is_success() {
            self.set_result(
                exit.result(),
                Some(format!("main process exited: {exit:?}")),
            );
        }
        // Keep the process handle: `exited()` keeps answering true for it.
    }

    /// From running (or a failed start) to rest: ExecStop=, signals, ExecStopPost=.
    async fn stop_sequence(&mut self, result: ServiceResult, run_exec_stop: bool) -> Flow {
        let first = (self.cfg.kill_signal, "stop-sigterm");
        self.stop_sequence_with(result, run_exec_stop, first).await
    }

    /// [`stop_sequence`](Self::stop_sequence) with another first signal and sub-state
    /// (the watchdog's: `WatchdogSignal=` in `stop-watchdog`).
    async fn stop_sequence_with(
        &mut self,
        result: ServiceResult,
        run_exec_stop: bool,
        (first_signal, first_sub): (i32, &'static str),
    ) -> Flow {
        self.watchdog_deadline = None;
        if !result.is_success() && self.current_result().is_success() {
            self.set_result(result, None);
        }
        let cfg = self.cfg.clone();
        let stop_deadline = || cfg.timeout_stop.and_then(|t| Instant::now().checked_add(t));
        if run_exec_stop && !cfg.exec_stop.is_empty() {
            self.set(ActiveState::Deactivating, "stop");
            for cmd in &cfg.exec_stop {
                if self.run_control(cmd, cfg.timeout_stop, true).await == Flow::Detached {
                    return Flow::Detached;
                }
            }
        }
        let (first, whole) = match cfg.kill_mode {
            KillMode::ControlGroup => (true, true),
            KillMode::Mixed => (true, false),
            KillMode::Process => (true, false),
            KillMode::None => (false, false),
        };
        if first && !self.unit_empty_for(whole) {
            self.set(ActiveState::Deactivating, first_sub);
            self.signal(first_signal, whole);
            self.signal(libc::SIGCONT, whole);
            match self.wait_until(stop_deadline(), whole).await {
                Err(f) => return f,
                Ok(true) => {}
                Ok(false) => {
                    if self.current_result().is_success() {
                        self.set_result(
                            ServiceResult::Timeout,
                            Some("stop operation timed out, killing".into()),
                        );
                    }
                    if cfg.send_sigkill {
                        self.set(ActiveState::Deactivating, "stop-sigkill");
                        let all = matches!(cfg.kill_mode, KillMode::ControlGroup | KillMode::Mixed);
                        self.signal(libc::SIGKILL, all);
                        if let Err(f) = self.wait_until(stop_deadline(), all).await {
                            return f;
                        }
                    }
                }
            }
        }
        if !cfg.exec_stop_post.is_empty() {
            self.set(ActiveState::Deactivating, "stop-post");
            for cmd in &cfg.exec_stop_post {
                match self.run_control(cmd, cfg.timeout_stop, true).await {
                    Flow::Detached => return Flow::Detached,
                    Flow::Fail(r)
                        if !cmd.flags.ignore_failure && self.current_result().is_success() =>
                    {
                        self.set_result(r, None);
                    }
                    _ => {}
                }
            }
        }
        if matches!(cfg.kill_mode, KillMode::ControlGroup | KillMode::Mixed) && !self.unit_empty() {
            self.set(ActiveState::Deactivating, "final-sigterm");
            self.signal(cfg.kill_signal, true);
            self.signal(libc::SIGCONT, true);
            match self.wait_until(stop_deadline(), true).await {
                Err(f) => return f,
                Ok(true) => {}
                Ok(false) if cfg.send_sigkill => {
                    self.set(ActiveState::Deactivating, "final-sigkill");
                    self.signal(libc::SIGKILL, true);
                    if let Err(f) = self.wait_until(stop_deadline(), true).await {
                        return f;
                    }
                }
                Ok(false) => {}
            }
        }
        self.main = None;
        self.cleanup_records();
        let result = self.current_result();
        if !self.stop_requested && self.unload_ack.is_none() && should_restart(cfg.restart, &result)
        {
            // As systemd: straight to auto-restart, never through failed/dead.
            self.set(ActiveState::Activating, "auto-restart");
        } else if result.is_success() {
            self.set(ActiveState::Inactive, "dead");
        } else {
            self.set(ActiveState::Failed, "failed");
        }
        Flow::Ok
    }

    fn unit_empty_for(&mut self, whole: bool) -> bool {
        if whole {
            self.unit_empty()
        } else {
            self.main.as_mut().is_none_or(|m| m.exited())
        }
    }

    fn record_path(&self) -> PathBuf {
        self.ctx.run_dir.join(format!("{}.json", self.name))
    }

    fn write_record(&self, sub: &str) {
        let main_pid = self.main_pid();
        let rec = PidRecord {
            main_pid,
            main_start_time: main_pid.and_then(sys::stat).map(|s| s.start_time),
            groups: self.groups.clone(),
            cgroup: self.cgroup.as_ref().map(|c| c.path.clone()),
            sub: sub.to_owned(),
        };
        let bytes = serde_json::to_vec(&rec).expect("a record always serializes");
        self.put_record(&bytes);
    }

    fn put_record(&self, bytes: &[u8]) {
        let path = self.record_path();
        if let Err(e) = write_record_file(&path, bytes) {
            tracing::warn!(unit = %self.name, "cannot write pid record {}: {e}", path.display());
        }
    }

    fn cleanup_records(&mut self) {
        // "No processes", in place: the file lives as long as the unit is loaded.
        self.put_record(b"null");
        // The (empty) cgroup stays until unload: removing it costs more than the rest of a
        // stop, and the next start reuses it.
        self.cgroup = None;
        if let Some(sock) = self.notify.take()
            && let Ok(addr) = sock.local_addr()
            && let Some(p) = addr.as_pathname()
        {
            let _ = std::fs::remove_file(p);
        }
        self.groups.clear();
    }

    /// Resumes supervision of processes found at driver start-up.
    async fn adopt(&mut self, a: Adopted) -> Flow {
        self.groups = a.record.groups.clone();
        self.cgroup = a.record.cgroup.clone().map(|path| UnitCgroup { path });
        self.main = a.main;
        if a.record.sub == "exited" {
            self.set(ActiveState::Active, "exited");
            return Flow::Ok;
        }
        if self.main.is_none() && self.unit_empty() {
            // Everything died while we were away: no status to judge by.
            self.set_result(
                ServiceResult::ExitCode,
                Some("main process exited while the supervisor was down".into()),
            );
            self.cleanup_records();
            self.set(ActiveState::Failed, "failed");
            return Flow::Ok;
        }
        // A restarted supervisor listens again where the service sends its notifications,
        // and gives it a full watchdog period from now.
        if let Err(message) = self.bind_notify() {
            tracing::warn!(unit = %self.name, "{message}");
        }
        self.watchdog = self.cfg.watchdog;
        self.arm_watchdog();
        self.set(ActiveState::Active, "running");
        let (flow, result) = self.supervise_running().await;
        if flow == Flow::Detached {
            return flow;
        }
        if let Some(result) = result
            && !self.stop_requested
            && should_restart(self.cfg.restart, &result)
        {
            self.restart_pending = true;
        }
        flow
    }
}

/// Writes a unit's PID record over the previous one, in place, with one `pwrite`: a
/// supervisor killed at any moment leaves either the old record or the new one, never a
/// torn one (a shorter record is padded with spaces, which JSON ignores, rather than
/// truncated). In place rather than write-then-rename because that allocated an inode per
/// start, and on ext4 without a journal, with many files recently deleted (a busy build
/// machine), allocating one cost more than the rest of a start (see docs/perf-log/2026-11-25-systemd-driver-clone3.md).
pub(crate) fn write_record_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let old = usize::try_from(f.metadata()?.len()).unwrap_or(usize::MAX);
    let mut buf = bytes.to_vec();
    if old > buf.len() && old <= 64 * 1024 {
        buf.resize(old, b' ');
    } else if old > buf.len() {
        // Never the case for records we wrote; do not pad to an absurd size.
        f.set_len(0)?;
    }
    f.write_all_at(&buf, 0)
}

/// Whether `Restart=` restarts a run that ended with `result`: systemd 252's
/// `service_shall_restart()`, which lists what each policy excludes rather than what it
/// includes (so `on-abnormal` restarts after `protocol` and `resources` too). A refused
/// start (`start-limit-hit`) never gets here.
fn should_restart(policy: RestartPolicy, result: &ServiceResult) -> bool {
    use ServiceResult as R;
    match policy {
        RestartPolicy::No => false,
        RestartPolicy::Always => *result != R::ExecCondition,
        RestartPolicy::OnSuccess => *result == R::Success,
        RestartPolicy::OnFailure => !matches!(result, R::Success | R::ExecCondition),
        RestartPolicy::OnAbnormal => !matches!(result, R::Success | R::ExitCode | R::ExecCondition),
        RestartPolicy::OnWatchdog => *result == R::Watchdog,
        RestartPolicy::OnAbort => matches!(result, R::Signal | R::CoreDump),
    }
}

/// The argument vector of `cmd` with `$VAR`/`${VAR}` expanded from `env` as systemd does at
/// exec time (its `replace_env_argv()`, in unit-parser; the `:` prefix turns it off). Later
/// entries of `env` win.
fn exec_argv(cmd: &ExecCommand, env: &[(String, String)]) -> Vec<String> {
    let lookup = |k: &str| {
        env.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    expand_exec_argv(cmd, &lookup)
}

/// `+`, `!` and `!!`: the command runs without `User=`/`Group=` (the supervisor has no
/// sandboxing for `!` to keep, so all three mean the driver's own credentials).
fn skips_credentials(cmd: &ExecCommand) -> bool {
    cmd.flags.full_privileges || cmd.flags.no_setuid || cmd.flags.ambient_magic
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_table() {
        use RestartPolicy::*;
        assert!(should_restart(Always, &ServiceResult::Success));
        assert!(!should_restart(OnFailure, &ServiceResult::Success));
        assert!(should_restart(OnFailure, &ServiceResult::ExitCode));
        assert!(!should_restart(OnAbnormal, &ServiceResult::ExitCode));
        assert!(should_restart(OnAbnormal, &ServiceResult::Signal));
        assert!(should_restart(OnAbort, &ServiceResult::CoreDump));
        assert!(!should_restart(OnAbort, &ServiceResult::Timeout));
        assert!(!should_restart(No, &ServiceResult::Signal));
        assert!(should_restart(OnWatchdog, &ServiceResult::Watchdog));
        assert!(!should_restart(OnWatchdog, &ServiceResult::Signal));
        assert!(should_restart(OnAbnormal, &ServiceResult::Protocol));
        assert!(should_restart(OnAbnormal, &ServiceResult::Resources));
        assert!(should_restart(OnAbnormal, &ServiceResult::Timeout));
        assert!(!should_restart(OnAbort, &ServiceResult::Watchdog));
        assert!(!should_restart(OnSuccess, &ServiceResult::Timeout));
        assert!(!should_restart(Always, &ServiceResult::ExecCondition));
    }

    #[test]
    fn records_are_rewritten_in_place() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.service.json");
        let rec = PidRecord {
            main_pid: Some(42),
            main_start_time: Some(7),
            groups: vec![(42, 7)],
            cgroup: None,
            sub: "running".into(),
        };
        write_record_file(&path, &serde_json::to_vec(&rec).unwrap()).unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();
        let read = || serde_json::from_slice::<Option<PidRecord>>(&std::fs::read(&path).unwrap());
        assert_eq!(read().unwrap(), Some(rec.clone()));
        // Shorter: padded, still one valid document, same file.
        write_record_file(&path, b"null").unwrap();
        assert_eq!(read().unwrap(), None);
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);
        write_record_file(&path, &serde_json::to_vec(&rec).unwrap()).unwrap();
        assert_eq!(read().unwrap(), Some(rec));
    }

    #[test]
    fn expands_variables_as_systemd() {
        // Expected values are systemd 252's (replace_env_argv()): `$A` as a whole word is
        // split (quotes in the value respected) even when the unit quoted it, `${A}` is
        // replaced in place, `${A:-d}` is not a default but text kept as it is, `$$` is `$`.
        let cfg = ServiceConfig::from_text(
            "x.service",
            "[Service]\nExecStart=/bin/echo $A \"$A\" ${A} 'p${A}q' $Q $E ${E} $NOPE ${NOPE}x ${A:-d} $$A $ ${A\n\
             ExecStartPost=:/bin/echo $A ${A}\n",
        )
        .unwrap();
        let env: Vec<(String, String)> =
            [("A", "first"), ("A", "x y"), ("Q", "'a b' c"), ("E", "")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into();
        assert_eq!(
            exec_argv(&cfg.exec_start[0], &env),
            [
                "/bin/echo",
                "x",
                "y",
                "x",
                "y",
                "x y",
                "px yq",
                "a b",
                "c",
                "",
                "x",
                "${A:-d}",
                "$A",
                "${A"
            ]
        );
        assert_eq!(
            exec_argv(&cfg.exec_start_post[0], &env),
            ["/bin/echo", "$A", "${A}"]
        );
    }
}
