//! The few operating-system calls the supervisor needs that std and tokio do not offer:
//! signals to processes and process groups, pidfds, and reading
//! `/proc` to tell processes apart across PID reuse.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// Sends `sig` to process `pid`. A process that is already gone is not an error.
pub(crate) fn kill(pid: u32, sig: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, sig) };
    ok_or_gone(rc)
}

/// Sends `sig` to every process of process group `pgid`.
pub(crate) fn kill_group(pgid: u32, sig: i32) -> io::Result<()> {
    let pgid =
        libc::pid_t::try_from(pgid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    if pgid <= 1 {
        // Never signal "every process" (-1) or our own group (0) by accident.
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names a group.
    let rc = unsafe { libc::kill(-pgid, sig) };
    ok_or_gone(rc)
}

fn ok_or_gone(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(e)
    }
}

/// Whether process group `pgid` still has a member that is not a zombie.
pub(crate) fn group_alive(pgid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pgid) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence.
    if unsafe { libc::kill(-p, 0) } != 0 {
        return false;
    }
    // Zombies (whose parent has not reaped them yet) still count for kill(2); they are
    // harmless, so look for a live member before calling the group alive.
    !group_members(pgid, 0).is_empty()
}

/// The live (non-zombie) members of process group `pgid` that started at or after
/// `min_start` (clock ticks since boot; guards against PID reuse).
pub(crate) fn group_members(pgid: u32, min_start: u64) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            stat(pid).is_some_and(|s| s.pgrp == pgid && s.state != 'Z' && s.start_time >= min_start)
        })
        .collect()
}

/// The fields of `/proc/<pid>/stat` the supervisor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub(crate) state: char,
    pub(crate) pgrp: u32,
    /// Clock ticks after boot at which the process started: with the PID, a unique identity.
    pub(crate) start_time: u64,
}

/// Reads `/proc/<pid>/stat`; `None` when the process does not exist.
pub(crate) fn stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): pgrp is field 5, starttime field 22.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Whether `pid` is alive (not a zombie) and is the same process that started at `start_time`.
pub(crate) fn same_process_alive(pid: u32, start_time: u64) -> bool {
    stat(pid).is_some_and(|s| s.start_time == start_time && s.state != 'Z')
}

/// Opens a pidfd for `pid`: it becomes readable when the process exits, which lets the
/// supervisor watch processes it did not spawn (adopted after a restart, forking daemons).
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let p = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p, libc::O_NONBLOCK as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A pidfd registered with tokio: readable once `pid` has exited.
pub(crate) fn watch_pid(pid: u32) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    watch_fd(pidfd_open(pid)?)
}

/// A pidfd registered with tokio.
pub(crate) fn watch_fd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the OwnedFd is moved into the AsyncFd, which keeps it open (and so the
    // registration valid) for as long as it is registered.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(Into::into)
}

/// Reaps our child `pid` if it has exited: its exit status, `None` while it runs. A child
/// someone else already reaped reports an unknown status.
pub(crate) fn try_reap(pid: u32) -> Option<super::runner::Exit> {
    use std::os::unix::process::ExitStatusExt;
    let p = libc::pid_t::try_from(pid).ok()?;
    let mut status = 0;
    loop {
        // SAFETY: waitpid(2) on one PID, writing into a local.
        let rc = unsafe { libc::waitpid(p, &mut status, libc::WNOHANG) };
        if rc == p {
            return Some(super::runner::Exit::from_status(
                std::process::ExitStatus::from_raw(status),
            ));
        }
        if rc == 0 {
            return None;
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Some(super::runner::Exit::Unknown);
        }
    }
}

/// Asks the kernel to attach the sender's credentials to every datagram `fd` receives
/// (`SO_PASSCRED`), which is how the notify socket tells the main process from others.
pub(crate) fn set_passcred(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt(2) reads `on` (an int, as SO_PASSCRED wants) for its stated size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Receives one datagram into `buf` without blocking: its length and the sender's PID
/// (from `SCM_CREDENTIALS`, present once [`set_passcred`] is on).
pub(crate) fn recv_with_pid(
    fd: std::os::fd::BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Option<u32>)> {
    use std::os::fd::AsRawFd;
    // Room for one ucred control message, aligned as cmsghdr wants.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header, filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: recvmsg(2) writes at most iov_len bytes into buf and msg_controllen bytes into
    // control, both owned by us for the duration of the call.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &raw mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut pid = None;
    // SAFETY: the CMSG_* macros walk the control buffer the kernel just filled, within
    // msg_controllen; a SCM_CREDENTIALS message carries a struct ucred.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS {
                let cred: libc::ucred = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                pid = u32::try_from(cred.pid).ok().filter(|&p| p > 0);
            }
            c = libc::CMSG_NXTHDR(&raw const msg, c);
        }
    }
    Ok((n as usize, pid))
}

/// Our effective user id.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid(2) cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_stat() {
        let me = std::process::id();
        let s = stat(me).unwrap();
        assert_ne!(s.state, 'Z');
        assert!(same_process_alive(me, s.start_time));
        assert!(!same_process_alive(me, s.start_time + 1));
        assert!(stat(u32::MAX - 1).is_none());
        assert!(kill_group(1, 0).is_err());
    }
}
