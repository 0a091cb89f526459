//! Starting a unit's process: a new session, the unit's cgroup, its descriptors, working
//! directory and credentials, then `execve`, at `posix_spawn` cost.
//!
//! std's `Command` with a `pre_exec` hook (which joining a cgroup and `setsid()` need)
//! forks the whole multi-threaded supervisor: its page tables are copied, then every page
//! the supervisor writes before the child has exec'd faults. That was two thirds of the
//! supervisor's CPU per unit start. Here the child shares the supervisor's memory
//! (`clone3(CLONE_VM | CLONE_VFORK)`, what `posix_spawn` does) and is created directly in the
//! unit's cgroup (`CLONE_INTO_CGROUP`): it is in it from its first instruction, before it
//! could fork anything, and without a migration. Signal handlers are reset in the child
//! by the kernel (`CLONE_CLEAR_SIGHAND`), so none of the supervisor's handlers can run on
//! the shared memory.
//!
//! Where `clone3` with those flags is unavailable (kernels before 5.7, seccomp filters that
//! refuse it, architectures without the trampoline below) the same child code runs after a
//! plain `fork()`, joining the cgroup by writing to its `cgroup.procs` first.
#![allow(unsafe_code)]

use std::ffi::{CString, c_char, c_int};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// What to start.
#[derive(Debug)]
pub(crate) struct SpawnRequest<'a> {
    /// The executable: a path, or a file name looked up in the `PATH` of `env`.
    pub(crate) program: &'a str,
    /// The argument vector, `argv[0]` included.
    pub(crate) argv: &'a [String],
    /// The whole environment.
    pub(crate) env: &'a [(String, String)],
    /// A variable to set to the child's own PID (`WATCHDOG_PID`), which only the child knows.
    pub(crate) own_pid_var: Option<&'a str>,
    /// stdout and stderr (stdin is `/dev/null`).
    pub(crate) output: &'a File,
    pub(crate) cwd: Option<&'a str>,
    /// The cgroup directory the child starts in.
    pub(crate) cgroup: Option<&'a Path>,
    /// (uid, gid) to switch to; supplementary groups are set to `gid` alone.
    pub(crate) creds: Option<(u32, u32)>,
}

/// A started child: its PID and a pidfd (readable once it has exited; it is not reaped).
#[derive(Debug)]
pub(crate) struct Spawned {
    pub(crate) pid: u32,
    pub(crate) pidfd: OwnedFd,
}

/// Why a start failed: the step and the system's error.
#[derive(Debug)]
pub(crate) struct SpawnError {
    pub(crate) stage: Stage,
    pub(crate) source: io::Error,
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", stage_prefix(self.stage), self.source)
    }
}

impl std::error::Error for SpawnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The steps of a start, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub(crate) enum Stage {
    Prepare = 1,
    Clone,
    Setsid,
    Cgroup,
    Descriptors,
    Chdir,
    Credentials,
    Exec,
}

fn stage_prefix(stage: Stage) -> &'static str {
    match stage {
        Stage::Prepare | Stage::Exec => "",
        Stage::Clone => "cannot create process: ",
        Stage::Setsid => "setsid: ",
        Stage::Cgroup => "cannot join the unit's cgroup: ",
        Stage::Descriptors => "cannot set up stdin/stdout/stderr: ",
        Stage::Chdir => "Changing to the requested working directory failed: ",
        Stage::Credentials => "Failed to change user/group: ",
    }
}

impl Stage {
    fn from_raw(v: i32) -> Stage {
        match v {
            2 => Stage::Clone,
            3 => Stage::Setsid,
            4 => Stage::Cgroup,
            5 => Stage::Descriptors,
            6 => Stage::Chdir,
            7 => Stage::Credentials,
            8 => Stage::Exec,
            _ => Stage::Prepare,
        }
    }
}

/// Set once `clone3` turned out to be unusable here: later starts fork straight away.
static CLONE3_UNUSABLE: AtomicBool = AtomicBool::new(false);

/// Whether starts use the `clone3` path (false once it failed for want of support).
pub(crate) fn fast_path() -> bool {
    cfg!(target_arch = "x86_64") && !CLONE3_UNUSABLE.load(Ordering::Relaxed)
}

/// Room for a PID in decimal (at most 2^22 on Linux, but a u32 is cheap to allow for).
const PID_DIGITS: usize = 10;

/// Starts `req`. Returns once the child has called `execve` (or failed before it).
pub(crate) fn spawn(req: &SpawnRequest<'_>) -> Result<Spawned, SpawnError> {
    spawn_with(req, fast_path())
}

/// [`spawn`], trying `clone3` first only when `try_clone3` is set.
fn spawn_with(req: &SpawnRequest<'_>, try_clone3: bool) -> Result<Spawned, SpawnError> {
    let prep = |source: io::Error| SpawnError {
        stage: Stage::Prepare,
        source,
    };
    let path = resolve(req.program, req.env).map_err(|source| SpawnError {
        stage: Stage::Exec,
        source,
    })?;
    let argv: Vec<CString> = req
        .argv
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<io::Result<_>>()
        .map_err(prep)?;
    let mut argv_ptrs: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    // Environment strings as plain byte buffers: the own-PID variable's digits are written
    // by the child into room reserved here.
    let mut env: Vec<Vec<u8>> = Vec::with_capacity(req.env.len() + 1);
    for (k, v) in req.env {
        if Some(k.as_str()) == req.own_pid_var {
            continue;
        }
        let mut s = Vec::with_capacity(k.len() + v.len() + 2);
        s.extend_from_slice(k.as_bytes());
        s.push(b'=');
        s.extend_from_slice(v.as_bytes());
        if s.contains(&0) {
            return Err(prep(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("environment variable {k} contains a NUL byte"),
            )));
        }
        s.push(0);
        env.push(s);
    }
    let mut pid_slot = (std::ptr::null_mut(), 0usize);
    if let Some(var) = req.own_pid_var {
        let mut s = Vec::with_capacity(var.len() + PID_DIGITS + 2);
        s.extend_from_slice(var.as_bytes());
        s.push(b'=');
        let at = s.len();
        s.resize(at + PID_DIGITS + 1, 0);
        env.push(s);
        let last = env.last_mut().expect("just pushed");
        // SAFETY: `at` is within the buffer, which is not moved again (only the outer Vec
        // could reallocate, and nothing more is pushed to it).
        pid_slot = (unsafe { last.as_mut_ptr().add(at) }, PID_DIGITS);
    }
    let mut env_ptrs: Vec<*const c_char> = env.iter().map(|e| e.as_ptr().cast()).collect();
    env_ptrs.push(std::ptr::null());
    let cwd = req
        .cwd
        .map(|d| cstring(d.as_bytes()))
        .transpose()
        .map_err(prep)?;
    // Descriptors numbered 0-2 would be overwritten by the dup2 calls before they are read.
    let out_fd = req.output.as_raw_fd();
    let out_dup;
    let out_fd = if out_fd < 3 {
        out_dup = dup_high(out_fd).map_err(prep)?;
        out_dup.as_raw_fd()
    } else {
        out_fd
    };
    let null = dev_null().map_err(prep)?;
    let mut args = ChildArgs {
        path: path.as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: env_ptrs.as_ptr(),
        pid_slot: pid_slot.0,
        pid_slot_len: pid_slot.1,
        fds: [null, out_fd, out_fd],
        cwd: cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        cgroup_procs: std::ptr::null(),
        creds: req.creds.is_some(),
        uid: req.creds.map_or(0, |c| c.0),
        gid: req.creds.map_or(0, |c| c.1),
        err_pipe: -1,
        err: 0,
        stage: 0,
    };
    if try_clone3 {
        let cgroup_dir = match req.cgroup {
            Some(dir) => Some(open_dir(dir).map_err(|source| SpawnError {
                stage: Stage::Cgroup,
                source,
            })?),
            None => None,
        };
        match clone_vm(&mut args, cgroup_dir.as_ref()) {
            CloneOutcome::Started(s) => return Ok(s),
            CloneOutcome::Failed(e) => return Err(e),
            CloneOutcome::Unsupported(e) => {
                tracing::info!(
                    "process driver: clone3 is not usable here ({e}); starting units with fork()"
                );
                CLONE3_UNUSABLE.store(true, Ordering::Relaxed);
            }
        }
    }
    let procs = req
        .cgroup
        .map(|d| cstring(d.join("cgroup.procs").as_os_str().as_bytes()))
        .transpose()
        .map_err(prep)?;
    args.cgroup_procs = procs.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    fork_spawn(&mut args)
}

fn cstring(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "contains a NUL byte"))
}

/// The executable for `program`: as given when it contains a slash, else the first
/// executable file of that name in the environment's `PATH` (as `execvp` would find it).
fn resolve(program: &str, env: &[(String, String)]) -> io::Result<CString> {
    if program.contains('/') {
        return cstring(program.as_bytes());
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or("/usr/local/bin:/usr/bin:/bin", |(_, v)| v.as_str());
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(program);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            use std::os::unix::fs::PermissionsExt;
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return cstring(candidate.as_os_str().as_bytes());
            }
        }
    }
    Err(io::Error::from_raw_os_error(libc::ENOENT))
}

/// `/dev/null`, opened once for every child's stdin.
fn dev_null() -> io::Result<RawFd> {
    static NULL: OnceLock<File> = OnceLock::new();
    if let Some(f) = NULL.get() {
        return Ok(f.as_raw_fd());
    }
    let f = File::open("/dev/null")?;
    let f = if f.as_raw_fd() < 3 {
        File::from(dup_high(f.as_raw_fd())?)
    } else {
        f
    };
    Ok(NULL.get_or_init(|| f).as_raw_fd())
}

fn dup_high(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor (owned by us) or -1.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: n is a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    let c = cstring(dir.as_os_str().as_bytes())?;
    // SAFETY: open(2) on a NUL-terminated path; returns a new descriptor or -1.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Everything the child needs, prepared by the parent: the child only reads it (and
/// writes the PID digits and, on failure, `err`/`stage`), calling nothing that allocates
/// or takes a lock.
#[repr(C)]
struct ChildArgs {
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    pid_slot: *mut u8,
    pid_slot_len: usize,
    /// stdin, stdout, stderr.
    fds: [c_int; 3],
    cwd: *const c_char,
    /// Fork path only: the `cgroup.procs` file to write "0" into.
    cgroup_procs: *const c_char,
    creds: bool,
    uid: u32,
    gid: u32,
    /// Fork path only: where to report a failure (the memory is not shared there).
    err_pipe: c_int,
    err: c_int,
    stage: c_int,
}

/// The child, from its creation to `execve`. Only system calls, on prepared data.
///
/// # Safety
/// `a` points to a valid [`ChildArgs`]; the caller is a child created by `clone_vm` or
/// `fork_spawn`.
unsafe extern "C" fn child_main(a: *mut ChildArgs) -> ! {
    // SAFETY (whole function): `a` is valid (the parent waits for us while it is in use);
    // every call is a plain system call wrapper. Credentials are changed with raw system
    // calls: glibc's wrappers would try to change the credentials of all the parent's
    // threads, which in a CLONE_VM child means signalling threads that are not ours.
    unsafe {
        let a = &mut *a;
        let fail = |a: &mut ChildArgs, stage: Stage| -> ! {
            let err = *libc::__errno_location();
            std::ptr::write_volatile(&mut a.err, err);
            std::ptr::write_volatile(&mut a.stage, stage as c_int);
            if a.err_pipe >= 0 {
                let msg = [err, stage as c_int];
                libc::write(a.err_pipe, msg.as_ptr().cast(), std::mem::size_of_val(&msg));
            }
            libc::_exit(127)
        };
        if libc::setsid() < 0 {
            fail(a, Stage::Setsid);
        }
        if !a.cgroup_procs.is_null() {
            let fd = libc::open(a.cgroup_procs, libc::O_WRONLY | libc::O_CLOEXEC);
            // "0" moves the writing process itself.
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) < 0 {
                fail(a, Stage::Cgroup);
            }
            libc::close(fd);
        }
        for (target, &fd) in a.fds.iter().enumerate() {
            let target = target as c_int;
            if libc::dup2(fd, target) < 0 {
                fail(a, Stage::Descriptors);
            }
        }
        if !a.cwd.is_null() && libc::chdir(a.cwd) < 0 {
            fail(a, Stage::Chdir);
        }
        if a.creds {
            // Supplementary groups first (root's must not leak), then gid, then uid.
            let gid: libc::gid_t = a.gid;
            if libc::syscall(
                libc::SYS_setgroups,
                1 as libc::c_long,
                &gid as *const libc::gid_t,
            ) < 0
                || libc::syscall(libc::SYS_setgid, a.gid as libc::c_long) < 0
                || libc::syscall(libc::SYS_setuid, a.uid as libc::c_long) < 0
            {
                fail(a, Stage::Credentials);
            }
        }
        if !a.pid_slot.is_null() {
            // Decimal digits of our PID, then the terminating NUL (the room was reserved).
            let mut pid = libc::getpid() as u32;
            let mut digits = [0u8; PID_DIGITS];
            let mut n = 0;
            loop {
                digits[n] = b'0' + (pid % 10) as u8;
                n += 1;
                pid /= 10;
                if pid == 0 || n == PID_DIGITS {
                    break;
                }
            }
            for i in 0..n.min(a.pid_slot_len) {
                *a.pid_slot.add(i) = digits[n - 1 - i];
            }
            *a.pid_slot.add(n.min(a.pid_slot_len)) = 0;
        }
        // A clean signal state for the program, as systemd gives its services: nothing
        // blocked and every signal at its default disposition. Ignored signals survive
        // execve, and the supervisor may ignore some: the Rust runtime ignores SIGPIPE, and
        // a supervisor started in the background by a non-interactive shell ignores SIGINT
        // and SIGQUIT (nohup adds SIGHUP); a unit would inherit those and could not even
        // trap them. Signals the C library reserves for itself refuse the call, harmlessly.
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        for sig in 1..=libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        libc::execve(a.path, a.argv, a.envp);
        fail(a, Stage::Exec)
    }
}

enum CloneOutcome {
    Started(Spawned),
    Failed(SpawnError),
    /// clone3 (or one of its flags) is not available here.
    Unsupported(io::Error),
}

/// Room for the child's stack: it only makes system calls, but the compiler's frames for
/// `child_main` and libc's wrappers need some.
const CHILD_STACK: usize = 64 * 1024;

/// clone3 flags above 32 bits (libc declares them as a 32-bit int).
const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

#[cfg(target_arch = "x86_64")]
fn clone_vm(args: &mut ChildArgs, cgroup: Option<&OwnedFd>) -> CloneOutcome {
    // 16-byte aligned, as the ABI wants the stack at the call into child_main.
    let mut stack: Vec<u128> = Vec::with_capacity(CHILD_STACK / 16);
    let mut pidfd: c_int = -1;
    let mut flags =
        (libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD) as u64 | CLONE_CLEAR_SIGHAND;
    if cgroup.is_some() {
        flags |= CLONE_INTO_CGROUP;
    }
    // SAFETY: clone_args is plain data; all-zero is its "no options" value.
    let mut cl: libc::clone_args = unsafe { std::mem::zeroed() };
    cl.flags = flags;
    cl.pidfd = &raw mut pidfd as u64;
    cl.exit_signal = libc::SIGCHLD as u64;
    cl.stack = stack.as_mut_ptr() as u64;
    cl.stack_size = (stack.capacity() * 16) as u64;
    cl.cgroup = cgroup.map_or(0, |fd| fd.as_raw_fd() as u64);
    let ret: i64;
    // SAFETY: clone3 with CLONE_VM | CLONE_VFORK suspends this thread until the child has
    // exec'd or exited. The child starts on `stack` (the kernel sets its stack pointer to
    // the top) and calls child_main, which never returns; this thread's registers and
    // stack are untouched by it. `args`, `stack` and everything `args` points to outlive
    // the child's use of them, since we only return after it has exec'd or exited.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") &raw mut cl,
            in("rsi") std::mem::size_of::<libc::clone_args>(),
            in("r12") std::ptr::from_mut(args),
            in("r13") child_main as unsafe extern "C" fn(*mut ChildArgs) -> !,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    drop(stack);
    if ret < 0 {
        let errno = i32::try_from(-ret).unwrap_or(libc::EINVAL);
        let e = io::Error::from_raw_os_error(errno);
        return if matches!(
            errno,
            libc::ENOSYS | libc::EPERM | libc::EINVAL | libc::E2BIG
        ) {
            CloneOutcome::Unsupported(e)
        } else {
            CloneOutcome::Failed(SpawnError {
                stage: Stage::Clone,
                source: e,
            })
        };
    }
    let pid = ret as u32;
    // SAFETY: the kernel stored a fresh descriptor for the child in `pidfd`.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // SAFETY: the child wrote these before exiting, if it failed; it is gone or exec'd now.
    let (err, stage) = unsafe {
        (
            std::ptr::read_volatile(&args.err),
            std::ptr::read_volatile(&args.stage),
        )
    };
    if stage != 0 {
        reap(pid);
        return CloneOutcome::Failed(SpawnError {
            stage: Stage::from_raw(stage),
            source: io::Error::from_raw_os_error(err),
        });
    }
    CloneOutcome::Started(Spawned { pid, pidfd })
}

#[cfg(not(target_arch = "x86_64"))]
fn clone_vm(_args: &mut ChildArgs, _cgroup: Option<&OwnedFd>) -> CloneOutcome {
    CloneOutcome::Unsupported(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// The portable path: fork, join the cgroup from the child, report failures over a pipe.
fn fork_spawn(args: &mut ChildArgs) -> Result<Spawned, SpawnError> {
    let clone_err = |source| SpawnError {
        stage: Stage::Clone,
        source,
    };
    let mut pipe = [-1 as c_int; 2];
    // SAFETY: pipe2 fills the two descriptors or fails.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(clone_err(io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptors we own.
    let (rd, wr) = unsafe { (File::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    args.err_pipe = wr.as_raw_fd();
    // SAFETY: the child only runs child_main, which makes async-signal-safe calls on data
    // prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(clone_err(io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: we are the forked child; `args` is our copy.
        unsafe { child_main(args) }
    }
    drop(wr);
    let pid = pid as u32;
    let mut msg = [0u8; 8];
    let mut got = 0;
    let mut rd = rd;
    while got < msg.len() {
        match io::Read::read(&mut rd, &mut msg[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if got == msg.len() {
        reap(pid);
        let err = i32::from_ne_bytes(msg[..4].try_into().expect("4 bytes"));
        let stage = i32::from_ne_bytes(msg[4..].try_into().expect("4 bytes"));
        return Err(SpawnError {
            stage: Stage::from_raw(stage),
            source: io::Error::from_raw_os_error(err),
        });
    }
    let pidfd = super::sys::pidfd_open(pid).map_err(clone_err)?;
    Ok(Spawned { pid, pidfd })
}

/// Waits for our child `pid` to exit and collects it (one that failed before exec, or was
/// just killed).
pub(crate) fn reap(pid: u32) {
    let mut status = 0;
    // SAFETY: waitpid on our own child.
    unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    use crate::process::cgroup::{CgroupSupport, UnitCgroup};

    /// Through clone3 where this host allows, or through the portable fork path.
    fn run(req: &SpawnRequest<'_>, fork: bool) -> Result<Spawned, SpawnError> {
        spawn_with(req, !fork && fast_path())
    }

    fn wait_exit(s: &Spawned) -> i32 {
        let mut status = 0;
        // SAFETY: waitpid on our own child.
        unsafe { libc::waitpid(s.pid as libc::pid_t, &mut status, 0) };
        libc::WEXITSTATUS(status)
    }

    /// Removes the test's cgroups however the test ends.
    struct Cgroups(Option<PathBuf>, Option<UnitCgroup>);

    impl Drop for Cgroups {
        fn drop(&mut self) {
            if let Some(u) = &self.1 {
                u.remove();
            }
            if let Some(root) = &self.0 {
                let _ = std::fs::remove_dir(root);
            }
        }
    }

    #[test]
    fn child_gets_session_env_pid_cgroup_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let cg = CgroupSupport::detect(&format!("flotilla-spawn-test-{}", std::process::id()));
        let guard = Cgroups(
            cg.root.clone(),
            cg.root
                .as_ref()
                .map(|r| UnitCgroup::create(r, "t.service").unwrap()),
        );
        let unit = guard.1.as_ref();
        for fork in [false, true] {
            let out_path = dir.path().join(format!("out-{fork}"));
            let out = File::create(&out_path).unwrap();
            let argv: Vec<String> = [
                "sh",
                "-c",
                "echo \"$WATCHDOG_PID $$ $A $(cut -d' ' -f6 /proc/$$/stat) $(pwd)\"; cat /proc/self/cgroup; exit 3",
            ]
            .map(String::from)
            .into();
            let env = vec![
                ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
                ("A".to_owned(), "x y".to_owned()),
            ];
            let req = SpawnRequest {
                program: "sh",
                argv: &argv,
                env: &env,
                own_pid_var: Some("WATCHDOG_PID"),
                output: &out,
                cwd: Some("/"),
                cgroup: unit.map(|u| u.path.as_path()),
                creds: None,
            };
            let s = run(&req, fork).unwrap();
            assert_eq!(wait_exit(&s), 3);
            let text = std::fs::read_to_string(&out_path).unwrap();
            let first: Vec<&str> = text.lines().next().unwrap().split(' ').collect();
            let pid = s.pid.to_string();
            // WATCHDOG_PID is the child's own PID, and it leads its own session.
            assert_eq!(
                first,
                [&pid, &pid, "x", "y", &pid, "/"],
                "fork={fork}: {text}"
            );
            if let Some(u) = unit {
                let name = u.path.file_name().unwrap().to_string_lossy().into_owned();
                assert!(
                    text.lines()
                        .any(|l| l.starts_with("0::") && l.ends_with(&name)),
                    "fork={fork}: not in {}: {text}",
                    u.path.display()
                );
            }
        }
        #[cfg(target_arch = "x86_64")]
        assert!(fast_path(), "clone3 should work on this kernel");
    }

    #[test]
    fn failures_name_their_step() {
        let out = tempfile::tempfile().unwrap();
        let argv = vec!["x".to_owned()];
        let env = vec![("PATH".to_owned(), "/bin".to_owned())];
        for fork in [false, true] {
            let mut req = SpawnRequest {
                program: "/nonexistent/prog",
                argv: &argv,
                env: &env,
                own_pid_var: None,
                output: &out,
                cwd: None,
                cgroup: None,
                creds: None,
            };
            let e = run(&req, fork).unwrap_err();
            assert_eq!(
                (e.stage, e.source.raw_os_error()),
                (Stage::Exec, Some(libc::ENOENT))
            );
            assert_eq!(e.to_string(), "No such file or directory (os error 2)");
            req.program = "no-such-program-anywhere";
            assert_eq!(run(&req, fork).unwrap_err().stage, Stage::Exec);
            req.program = "/bin/true";
            req.cwd = Some("/nonexistent/dir");
            let e = run(&req, fork).unwrap_err();
            assert_eq!(e.stage, Stage::Chdir, "fork={fork}");
            assert!(e.to_string().contains("working directory"), "{e}");
        }
    }
}
