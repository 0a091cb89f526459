//! ProcessDriver: the behavioural suite, plus what only the native supervisor promises
//! (adoption after its own restart, cleanup of untracked processes, notify, rotation).

use std::time::Duration;

use systemd_driver::{LogOptions, ProcessDriver, ProcessDriverConfig, ServiceResult, UnitDriver};

use crate::suite;
use crate::util::{Scratch, alive, lines, wait_for, wait_log_line, wait_state};

async fn driver(s: &Scratch) -> ProcessDriver {
    ProcessDriver::open(ProcessDriverConfig::new(s.path("state")))
        .await
        .expect("open driver")
}

macro_rules! suite_cases {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let s = Scratch::new();
                let d = driver(&s).await;
                suite::run(stringify!($case), &d, &s, "pd").await;
                d.stop_all().await;
            }
        )*

        #[test]
        fn every_suite_case_runs_here() {
            let here = [$(stringify!($case)),*];
            assert_eq!(here.as_slice(), suite::CASES);
        }
    };
}

suite_cases!(
    oneshot_remain_after_exit,
    clean_exit,
    crash,
    missing_binary,
    unknown_user_or_group,
    stdout_follow,
    ignores_sigterm,
    forked_children,
    restart_on_failure_timing,
    restart_always_then_stop,
    environment_files,
    exec_variables,
    start_pre_and_stop_post,
    forking_with_pid_file,
    subscribe_sees_transitions,
    unload_stops,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_binary_says_why() {
    let s = Scratch::new();
    let d = driver(&s).await;
    d.load("m.service", "[Service]\nExecStart=/nonexistent/prog\n")
        .await
        .unwrap();
    d.start("m.service").await.unwrap();
    let st = wait_state(&d, "m.service", "loaded/failed/failed").await;
    let text = st.status_text.unwrap_or_default();
    assert!(
        text.contains("/nonexistent/prog") && text.contains("No such file"),
        "{text}"
    );
    wait_log_line(&d, "m.service", &text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_unit_is_refused_with_its_line() {
    let s = Scratch::new();
    let d = driver(&s).await;
    let err = d
        .load(
            "b.service",
            "[Service]\nExecStart=/bin/true\nExecStart=/bin/false\n",
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("line 3") && err.to_string().contains("more than one ExecStart="),
        "{err}"
    );
    assert!(d.load("b.timer", "[Timer]\n").await.is_err());
    assert!(d.start("never-loaded.service").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopts_running_units_after_restart() {
    let s = Scratch::new();
    let d = driver(&s).await;
    d.load(
        "keep.service",
        "[Service]\nExecStart=/bin/sh -c 'echo started; exec sleep 300'\n",
    )
    .await
    .unwrap();
    d.load(
        "once.service",
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n",
    )
    .await
    .unwrap();
    d.start("keep.service").await.unwrap();
    d.start("once.service").await.unwrap();
    let pid = wait_state(&d, "keep.service", "loaded/active/running")
        .await
        .main_pid
        .unwrap();
    wait_state(&d, "once.service", "loaded/active/exited").await;
    drop(d);

    // The supervisor is gone; its units are not.
    assert!(alive(pid));
    let d = driver(&s).await;
    let st = d.status("keep.service").await.unwrap();
    assert_eq!(st.state.to_string(), "loaded/active/running");
    assert_eq!(st.main_pid, Some(pid));
    assert_eq!(
        d.status("once.service").await.unwrap().state.to_string(),
        "loaded/active/exited"
    );

    // The adopted process is watched: killing it is noticed.
    let mut sub = d.subscribe().await.unwrap();
    std::process::Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let change = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let c = sub.recv().await.unwrap();
            if c.name == "keep.service" && c.state.as_ref().is_some_and(|s| s.sub == "failed") {
                return c;
            }
        }
    })
    .await
    .expect("the adopted unit's death is reported");
    assert_eq!(change.state.unwrap().to_string(), "loaded/failed/failed");
    d.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_what_it_no_longer_tracks() {
    let s = Scratch::new();
    let d = driver(&s).await;
    let pidfile = s.path("child.pid");
    d.load(
        "gone.service",
        &format!(
            "[Service]\nExecStart=/bin/sh -c 'sleep 300 & echo $$! > {}; wait'\n",
            pidfile.display()
        ),
    )
    .await
    .unwrap();
    d.start("gone.service").await.unwrap();
    let main = wait_state(&d, "gone.service", "loaded/active/running")
        .await
        .main_pid
        .unwrap();
    wait_for("child pid", || lines(&pidfile).len() == 1).await;
    let child: u32 = lines(&pidfile)[0].parse().unwrap();
    drop(d);
    // Someone removed the unit while the supervisor was down.
    std::fs::remove_file(s.path("state").join("units").join("gone.service")).unwrap();
    let d = driver(&s).await;
    assert!(d.list().await.unwrap().is_empty());
    wait_for("untracked processes killed", || {
        !alive(main) && !alive(child)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_units_die_with_their_machine() {
    let s = Scratch::new();
    let d = driver(&s).await;
    let pidfile = s.path("child.pid");
    d.load(
        "orphan.service",
        &format!(
            "[Service]\nExecStart=/bin/sh -c 'sleep 300 & echo $$! > {}; wait'\n",
            pidfile.display()
        ),
    )
    .await
    .unwrap();
    d.start("orphan.service").await.unwrap();
    let main = wait_state(&d, "orphan.service", "loaded/active/running")
        .await
        .main_pid
        .unwrap();
    wait_for("child pid", || lines(&pidfile).len() == 1).await;
    let child: u32 = lines(&pidfile)[0].parse().unwrap();
    // The supervisor dies without stopping anything, as a killed fleetd does.
    drop(d);
    assert!(alive(main) && alive(child));
    assert_eq!(
        systemd_driver::kill_orphaned_units(&s.path("state")).unwrap(),
        1
    );
    wait_for("orphans killed", || !alive(main) && !alive(child)).await;
    // Nothing recorded, nothing to do.
    assert_eq!(
        systemd_driver::kill_orphaned_units(&s.path("nowhere")).unwrap(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_ready_status_and_timeout() {
    let s = Scratch::new();
    let d = driver(&s).await;
    // A tiny notifier: the supervisor's NOTIFY_SOCKET is a datagram socket.
    let py = "import os,socket,time; time.sleep(0.2); s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b'STATUS=serving\\\\nREADY=1', os.environ['NOTIFY_SOCKET']); time.sleep(300)";
    if std::process::Command::new("python3")
        .arg("-c")
        .arg("1")
        .status()
        .is_err()
    {
        panic!("python3 is needed for the notify test (scripts/install-deps installs it)");
    }
    d.load(
        "n.service",
        &format!("[Service]\nType=notify\nExecStart=/usr/bin/python3 -c \"{py}\"\n"),
    )
    .await
    .unwrap();
    d.start("n.service").await.unwrap();
    wait_state(&d, "n.service", "loaded/activating/start").await;
    let st = wait_state(&d, "n.service", "loaded/active/running").await;
    assert_eq!(st.status_text.as_deref(), Some("serving"));

    // Never ready: TimeoutStartSec= fails it.
    d.load(
        "slow.service",
        "[Service]\nType=notify\nExecStart=/bin/sleep 300\nTimeoutStartSec=200ms\n",
    )
    .await
    .unwrap();
    d.start("slow.service").await.unwrap();
    let st = wait_state(&d, "slow.service", "loaded/failed/failed").await;
    assert_eq!(st.result, ServiceResult::Timeout);
    d.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_bounded() {
    let s = Scratch::new();
    let mut cfg = ProcessDriverConfig::new(s.path("state"));
    cfg.log_max_bytes = 4096;
    let d = ProcessDriver::open(cfg).await.unwrap();
    d.load(
        "chatty.service",
        "[Service]\nExecStart=/bin/sh -c 'i=0; while [ $$i -lt 4000 ]; do echo line $$i; i=$$((i+1)); done; echo end; exec sleep 300'\n",
    )
    .await
    .unwrap();
    d.start("chatty.service").await.unwrap();
    wait_log_line(&d, "chatty.service", "end").await;
    // The rotator runs every 250 ms.
    let logs = s.path("state").join("logs");
    wait_for("rotation", || {
        std::fs::metadata(logs.join("chatty.service.log"))
            .map(|m| m.len())
            .unwrap_or(0)
            <= 4096
    })
    .await;
    let mut all = d
        .logs("chatty.service", LogOptions::default())
        .await
        .unwrap();
    let mut n = 0;
    while all.next().await.is_some() {
        n += 1;
    }
    assert!(n > 0 && n < 4000, "kept {n} lines of 4001");
    d.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_and_kill_modes() {
    let s = Scratch::new();
    let d = driver(&s).await;
    let trail = s.path("reload.trail");
    d.load(
        "r.service",
        &format!("[Service]\nExecStart=/bin/sleep 300\nExecReload=/bin/sh -c 'echo reloaded $$MAINPID >> {}'\n", trail.display()),
    )
    .await
    .unwrap();
    assert!(
        d.reload("r.service").await.is_err(),
        "reload of an inactive unit"
    );
    d.start("r.service").await.unwrap();
    let pid = wait_state(&d, "r.service", "loaded/active/running")
        .await
        .main_pid
        .unwrap();
    d.reload("r.service").await.unwrap();
    assert_eq!(lines(&trail), [format!("reloaded {pid}")]);

    // KillMode=process: only the main process is signalled, children stay (systemd's
    // documented behaviour); we clean the child up ourselves.
    let pids = s.path("kp.pids");
    d.load(
        "kp.service",
        &format!("[Service]\nKillMode=process\nExecStart=/bin/sh -c 'sleep 300 & echo $$! > {}; exec sleep 300'\n", pids.display()),
    )
    .await
    .unwrap();
    d.start("kp.service").await.unwrap();
    wait_state(&d, "kp.service", "loaded/active/running").await;
    wait_for("child pid", || lines(&pids).len() == 1).await;
    let child: u32 = lines(&pids)[0].parse().unwrap();
    d.stop("kp.service").await.unwrap();
    wait_state(&d, "kp.service", "loaded/inactive/dead").await;
    assert!(alive(child));
    std::process::Command::new("kill")
        .arg(child.to_string())
        .status()
        .unwrap();
    wait_for("the left-over child to go", || !alive(child)).await;

    // KillSignal=SIGINT reaches the process, and the unit can trap it even when the
    // supervisor itself ignores SIGINT (as when a non-interactive shell starts it in the
    // background): units get default dispositions, as systemd gives them.
    #[allow(unsafe_code)]
    // SAFETY: only changes SIGINT's disposition in this test process (to ignored, restored
    // below); no handler is installed and nothing here sends SIGINT to this process.
    let before = unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let got = s.path("int.got");
    let ready = s.path("int.ready");
    d.load(
        "ks.service",
        &format!("[Service]\nKillSignal=SIGINT\nExecStart=/bin/sh -c 'trap \"echo INT > {}; exit 0\" INT; echo ready > {}; while :; do sleep 0.05; done'\n", got.display(), ready.display()),
    )
    .await
    .unwrap();
    d.start("ks.service").await.unwrap();
    wait_state(&d, "ks.service", "loaded/active/running").await;
    // Stop only once the trap is installed (the script says so), not after a guessed delay.
    wait_for("the SIGINT trap to be installed", || {
        lines(&ready).len() == 1
    })
    .await;
    d.stop("ks.service").await.unwrap();
    wait_state(&d, "ks.service", "loaded/inactive/dead").await;
    #[allow(unsafe_code)]
    // SAFETY: puts back the disposition saved above.
    unsafe {
        libc::signal(libc::SIGINT, before);
    }
    assert_eq!(lines(&got), ["INT"]);
    d.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_limit_refuses_manual_starts() {
    let s = Scratch::new();
    let d = driver(&s).await;
    let runs = s.path("q.runs");
    let mut sub = d.subscribe().await.unwrap();
    d.load(
        "q.service",
        &format!("[Unit]\nStartLimitIntervalSec=30s\nStartLimitBurst=2\n[Service]\nExecStart=/bin/sh -c 'echo run >> {}'\n", runs.display()),
    )
    .await
    .unwrap();
    // Loading reports inactive/dead once; each run ends with it again.
    let mut deads = 0;
    for i in 1..=2 {
        d.start("q.service").await.unwrap();
        while deads < i + 1 {
            let c = tokio::time::timeout(Duration::from_secs(10), sub.recv())
                .await
                .unwrap()
                .unwrap();
            if c.state.is_some_and(|s| s.sub == "dead") {
                deads += 1;
            }
        }
        assert_eq!(lines(&runs).len(), i);
    }
    let err = d.start("q.service").await.unwrap_err();
    assert!(err.to_string().contains("start-limit-hit"), "{err}");
    let st = d.status("q.service").await.unwrap();
    assert_eq!(
        (st.state.to_string().as_str(), st.result),
        ("loaded/failed/failed", ServiceResult::StartLimitHit)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_limits_are_applied_or_reported() {
    let s = Scratch::new();
    let d = driver(&s).await;
    let support = d.cgroup_support().clone();
    d.load(
        "lim.service",
        "[Service]\nMemoryMax=64M\nCPUQuota=50%\nExecStart=/bin/sleep 300\n",
    )
    .await
    .unwrap();
    d.start("lim.service").await.unwrap();
    wait_state(&d, "lim.service", "loaded/active/running").await;
    if support.memory && support.cpu {
        let cg = support.root.unwrap().join("lim.service");
        assert_eq!(
            std::fs::read_to_string(cg.join("memory.max"))
                .unwrap()
                .trim(),
            (64u64 << 20).to_string()
        );
    } else {
        let mut log = d.logs("lim.service", LogOptions::default()).await.unwrap();
        let line = log.next().await.expect("a note in the unit's log").message;
        assert!(line.contains("is not enforced"), "{line}");
    }
    d.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_group_and_privileged_prefix() {
    let s = Scratch::new();
    let d = driver(&s).await;
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .unwrap()
        .stdout
        == b"0\n";
    d.load(
        "who.service",
        "[Service]\nType=oneshot\nUser=nobody\nGroup=nogroup\nExecStart=/bin/sh -c 'echo \"as $$(id -u):$$(id -g)\"; sleep 0.1'\nExecStart=+/bin/sh -c 'echo \"plus $$(id -u)\"; sleep 0.1'\n",
    )
    .await
    .unwrap();
    d.start("who.service").await.unwrap();
    if root {
        let nobody = std::process::Command::new("id")
            .args(["-u", "nobody"])
            .output()
            .unwrap();
        let uid = String::from_utf8_lossy(&nobody.stdout).trim().to_owned();
        let seen = wait_log_line(&d, "who.service", "plus 0").await;
        assert!(
            seen.iter().any(|l| l.starts_with(&format!("as {uid}:"))),
            "{seen:?}"
        );
        wait_state(&d, "who.service", "loaded/inactive/dead").await;
    } else {
        // Switching users needs root: the start fails and says so.
        let st = wait_state(&d, "who.service", "loaded/failed/failed").await;
        assert!(st.status_text.unwrap_or_default().contains("root"));
    }
    // A user the database does not know: the unit's status says which, and for which unit.
    d.load(
        "ghost.service",
        "[Service]\nUser=flotilla-no-such-user\nExecStart=/bin/true\n",
    )
    .await
    .unwrap();
    d.start("ghost.service").await.unwrap();
    let st = wait_state(&d, "ghost.service", "loaded/failed/failed").await;
    assert_eq!(
        st.status_text.as_deref(),
        Some(
            "ghost.service: Failed to determine user credentials: no such user \"flotilla-no-such-user\""
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_sigkill_no_leaves_the_process() {
    let s = Scratch::new();
    let d = driver(&s).await;
    let pidfile = s.path("nokill.pid");
    d.load(
        "nokill.service",
        &format!(
            "[Service]\nSendSIGKILL=no\nTimeoutStopSec=200ms\nExecStart=/bin/sh -c 'trap \"\" TERM; echo $$$$ > {}; while :; do sleep 0.05; done'\n",
            pidfile.display()
        ),
    )
    .await
    .unwrap();
    d.start("nokill.service").await.unwrap();
    wait_state(&d, "nokill.service", "loaded/active/running").await;
    wait_for("pid file", || lines(&pidfile).len() == 1).await;
    let pid: u32 = lines(&pidfile)[0].parse().unwrap();
    d.stop("nokill.service").await.unwrap();
    let st = wait_state(&d, "nokill.service", "loaded/failed/failed").await;
    assert_eq!(st.result, ServiceResult::Timeout);
    assert!(alive(pid), "SendSIGKILL=no: the process is left alone");
    std::process::Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .unwrap();
    wait_for("cleanup", || !alive(pid)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_mainpid_hands_over() {
    let s = Scratch::new();
    let d = driver(&s).await;
    // The started process forks the real daemon, reports it as MAINPID=, and exits.
    let py = "import os,socket,subprocess; p=subprocess.Popen(['/bin/sleep','300']); s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(('MAINPID=%%d\\\\nREADY=1' %% p.pid).encode(), os.environ['NOTIFY_SOCKET'])";
    d.load(
        "handover.service",
        &format!("[Service]\nType=notify\nExecStart=/usr/bin/python3 -c \"{py}\"\n"),
    )
    .await
    .unwrap();
    d.start("handover.service").await.unwrap();
    let st = wait_state(&d, "handover.service", "loaded/active/running").await;
    let main = st.main_pid.unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{main}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "sleep", "MAINPID= names the daemon");
    // The launcher's exit does not end the service; the daemon's does.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        d.status("handover.service")
            .await
            .unwrap()
            .state
            .to_string(),
        "loaded/active/running"
    );
    d.stop("handover.service").await.unwrap();
    wait_state(&d, "handover.service", "loaded/inactive/dead").await;
    wait_for("daemon gone", || !alive(main)).await;
}

/// A watchdog client in Python: records its environment and the signals it gets in `out`,
/// then, by mode, sends keep-alives every 50 ms until `out.stop` exists, noting every 20th
/// (`ping`), or raises its own
/// timeout with `WATCHDOG_USEC=`, outlives the configured one, and asks for the watchdog
/// with `WATCHDOG=trigger` once `out.stop` exists (`override`), or leaves the keep-alives to
/// a child process (`child`).
const WATCHDOG_CLIENT: &str = r#"
import os, signal, socket, sys, time
out, mode = sys.argv[1], sys.argv[2]
def note(s):
    with open(out, 'a') as f:
        f.write(s + '\n')
def died(sig, frame):
    note('signal %d' % sig)
    os._exit(0)
signal.signal(signal.SIGABRT, died)
signal.signal(signal.SIGTERM, died)
note('env %s %s %d' % (os.environ.get('WATCHDOG_USEC'), os.environ.get('WATCHDOG_PID'), os.getpid()))
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
addr = os.environ['NOTIFY_SOCKET']
if mode == 'ping':
    n = 0
    while not os.path.exists(out + '.stop'):
        try:
            s.sendto(b'WATCHDOG=1', addr)
        except OSError:
            pass  # as sd_notify: a supervisor that is away is not the service's problem
        n += 1
        if n % 20 == 0:
            note('pinged %d' % n)
        time.sleep(0.05)
    note('silent')
elif mode == 'child':
    if os.fork() == 0:
        n = 0
        while True:
            s.sendto(b'WATCHDOG=1', addr)
            n += 1
            if n % 20 == 0:
                note('child pinged %d' % n)
            time.sleep(0.05)
else:
    s.sendto(b'WATCHDOG_USEC=30000000', addr)
    time.sleep(1.0)
    note('alive after 1s')
    while not os.path.exists(out + '.stop'):
        time.sleep(0.02)
    os.remove(out + '.stop')
    s.sendto(b'WATCHDOG=trigger', addr)
while True:
    time.sleep(1)
"#;

/// Collects sub-states from `sub` until `name` shows `last` (with a deadline).
async fn substates_until(
    sub: &mut systemd_driver::Subscription,
    name: &str,
    last: &str,
) -> Vec<String> {
    let mut seen = Vec::new();
    let res = tokio::time::timeout(crate::util::DEADLINE, async {
        loop {
            let c = sub.recv().await.expect("subscription");
            if c.name != name {
                continue;
            }
            let Some(st) = c.state else { continue };
            let shown = st.to_string();
            seen.push(st.sub.clone());
            if shown == last {
                return;
            }
        }
    })
    .await;
    assert!(
        res.is_ok(),
        "{name}: no {last} within the deadline; saw {seen:?}"
    );
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_keepalives_then_a_missed_deadline() {
    let s = Scratch::new();
    let d = driver(&s).await;
    let script = s.path("wd.py");
    std::fs::write(&script, WATCHDOG_CLIENT).unwrap();
    let out = s.path("wd.out");
    d.load(
        "wd.service",
        &format!(
            "[Service]\nExecStart=/usr/bin/python3 {} {} ping\nWatchdogSec=400ms\n",
            script.display(),
            out.display()
        ),
    )
    .await
    .unwrap();
    let mut sub = d.subscribe().await.unwrap();
    d.start("wd.service").await.unwrap();
    let pid = wait_state(&d, "wd.service", "loaded/active/running")
        .await
        .main_pid
        .unwrap();
    // 20 keep-alives 50 ms apart: a second, well past WatchdogSec=400ms.
    wait_for("20 keep-alives", || {
        lines(&out).iter().any(|l| l == "pinged 20")
    })
    .await;
    let st = d.status("wd.service").await.unwrap();
    assert_eq!(st.state.to_string(), "loaded/active/running");
    assert_eq!(st.main_pid, Some(pid), "not restarted");
    assert_eq!(lines(&out)[0], format!("env 400000 {pid} {pid}"));

    // Silence: killed with SIGABRT, result "watchdog", no restart (Restart=no).
    std::fs::write(s.path("wd.out.stop"), "").unwrap();
    let seen = substates_until(&mut sub, "wd.service", "loaded/failed/failed").await;
    assert!(seen.iter().any(|s| s == "stop-watchdog"), "{seen:?}");
    let st = d.status("wd.service").await.unwrap();
    assert_eq!(st.result, ServiceResult::Watchdog);
    assert!(
        lines(&out).contains(&format!("signal {}", libc::SIGABRT)),
        "{:?}",
        lines(&out)
    );
    // Panics unless the supervisor logged the timeout.
    wait_log_line(
        &d,
        "wd.service",
        "flotilla: Watchdog timeout (limit 400ms)!",
    )
    .await;
    d.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_override_trigger_and_restart() {
    let s = Scratch::new();
    let d = driver(&s).await;
    let script = s.path("wd.py");
    std::fs::write(&script, WATCHDOG_CLIENT).unwrap();
    let out = s.path("wdr.out");
    d.load(
        "wdr.service",
        &format!(
            "[Service]\nExecStart=/usr/bin/python3 {} {} override\nWatchdogSec=200ms\nWatchdogSignal=SIGTERM\nRestart=on-watchdog\nRestartSec=50ms\n",
            script.display(),
            out.display()
        ),
    )
    .await
    .unwrap();
    let mut sub = d.subscribe().await.unwrap();
    d.start("wdr.service").await.unwrap();
    wait_for("first instance up", || lines(&out).len() == 1).await;
    let pid = lines(&out)[0].rsplit(' ').next().unwrap().to_owned();
    wait_state(&d, "wdr.service", "loaded/active/running").await;
    assert_eq!(lines(&out)[0], format!("env 200000 {pid} {pid}"));
    wait_for("alive after 1s", || {
        lines(&out).iter().any(|l| l == "alive after 1s")
    })
    .await;
    assert_eq!(
        d.status("wdr.service").await.unwrap().state.to_string(),
        "loaded/active/running",
        "WATCHDOG_USEC= overrode WatchdogSec="
    );

    // WATCHDOG=trigger: killed with WatchdogSignal=SIGTERM at once, then restarted.
    std::fs::write(s.path("wdr.out.stop"), "").unwrap();
    let seen = substates_until(&mut sub, "wdr.service", "loaded/activating/auto-restart").await;
    assert!(seen.iter().any(|s| s == "stop-watchdog"), "{seen:?}");
    assert_eq!(
        d.status("wdr.service").await.unwrap().result,
        ServiceResult::Watchdog
    );
    assert!(
        lines(&out).contains(&format!("signal {}", libc::SIGTERM)),
        "{:?}",
        lines(&out)
    );
    wait_for("second instance up", || {
        lines(&out).iter().filter(|l| l.starts_with("env ")).count() == 2
    })
    .await;
    // The override was for the first activation only: the restart gets WatchdogSec= again.
    let second = lines(&out)
        .into_iter()
        .filter(|l| l.starts_with("env "))
        .nth(1)
        .unwrap();
    assert!(second.starts_with("env 200000 "), "{second}");
    d.stop("wdr.service").await.unwrap();
    wait_state(&d, "wdr.service", "loaded/inactive/dead").await;
}

/// The highest "pinged N" the watchdog client noted.
fn pings(out: &std::path::Path) -> u32 {
    lines(out)
        .iter()
        .filter_map(|l| l.strip_prefix("pinged ")?.parse().ok())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopted_unit_keeps_its_watchdog() {
    let s = Scratch::new();
    let d = driver(&s).await;
    let script = s.path("wd.py");
    std::fs::write(&script, WATCHDOG_CLIENT).unwrap();
    let out = s.path("wd.out");
    d.load(
        "wd.service",
        &format!(
            "[Service]\nExecStart=/usr/bin/python3 {} {} ping\nWatchdogSec=400ms\n",
            script.display(),
            out.display()
        ),
    )
    .await
    .unwrap();
    d.start("wd.service").await.unwrap();
    let pid = wait_state(&d, "wd.service", "loaded/active/running")
        .await
        .main_pid
        .unwrap();
    wait_for("first keep-alives", || pings(&out) >= 20).await;
    drop(d);

    // The new supervisor listens on the same socket: keep-alives for two more seconds
    // (five watchdog periods) keep the adopted unit running.
    let d = driver(&s).await;
    let from = pings(&out);
    wait_for("keep-alives to the new supervisor", || {
        pings(&out) >= from + 40
    })
    .await;
    let st = d.status("wd.service").await.unwrap();
    assert_eq!(st.state.to_string(), "loaded/active/running");
    assert_eq!(st.main_pid, Some(pid));

    // And it enforces the watchdog.
    std::fs::write(s.path("wd.out.stop"), "").unwrap();
    let st = wait_state(&d, "wd.service", "loaded/failed/failed").await;
    assert_eq!(st.result, ServiceResult::Watchdog);
    d.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_counts_the_main_process_unless_notify_access_all() {
    let s = Scratch::new();
    let d = driver(&s).await;
    let script = s.path("wd.py");
    std::fs::write(&script, WATCHDOG_CLIENT).unwrap();
    let unit = |out: &std::path::Path, extra: &str| {
        format!(
            "[Service]\nExecStart=/usr/bin/python3 {} {} child\nWatchdogSec=400ms\n{extra}",
            script.display(),
            out.display()
        )
    };
    // NotifyAccess= defaults to main with a watchdog: the child's keep-alives do not count.
    let out = s.path("main.out");
    d.load("wdm.service", &unit(&out, "")).await.unwrap();
    d.start("wdm.service").await.unwrap();
    let st = wait_state(&d, "wdm.service", "loaded/failed/failed").await;
    assert_eq!(st.result, ServiceResult::Watchdog);

    // NotifyAccess=all: they do.
    let out = s.path("all.out");
    d.load("wda.service", &unit(&out, "NotifyAccess=all\n"))
        .await
        .unwrap();
    d.start("wda.service").await.unwrap();
    let pid = wait_state(&d, "wda.service", "loaded/active/running")
        .await
        .main_pid;
    wait_for("a second of the child's keep-alives", || {
        lines(&out).iter().any(|l| l == "child pinged 20")
    })
    .await;
    let st = d.status("wda.service").await.unwrap();
    assert_eq!(st.state.to_string(), "loaded/active/running");
    assert_eq!(st.main_pid, pid);
    d.stop_all().await;
}
