//! The behavioural suite, generic over [`UnitDriver`]: the same expectations hold for the
//! native supervisor and for a real systemd. Each case uses unit names starting with
//! `prefix` so cases can share one driver.

use std::time::Duration;

use systemd_driver::{ActiveState, LogOptions, ServiceResult, UnitDriver};

use crate::util::{Scratch, lines, wait_for, wait_log_line, wait_state, wait_status};

/// Every case, by name, for drivers that run them one after the other.
pub(crate) const CASES: &[&str] = &[
    "oneshot_remain_after_exit",
    "clean_exit",
    "crash",
    "missing_binary",
    "unknown_user_or_group",
    "stdout_follow",
    "ignores_sigterm",
    "forked_children",
    "restart_on_failure_timing",
    "restart_always_then_stop",
    "environment_files",
    "exec_variables",
    "start_pre_and_stop_post",
    "forking_with_pid_file",
    "subscribe_sees_transitions",
    "unload_stops",
];

/// Runs one case by name.
pub(crate) async fn run<D: UnitDriver>(case: &str, d: &D, s: &Scratch, prefix: &str) {
    match case {
        "oneshot_remain_after_exit" => oneshot_remain_after_exit(d, s, prefix).await,
        "clean_exit" => clean_exit(d, prefix).await,
        "crash" => crash(d, prefix).await,
        "missing_binary" => missing_binary(d, prefix).await,
        "unknown_user_or_group" => unknown_user_or_group(d, prefix).await,
        "stdout_follow" => stdout_follow(d, prefix).await,
        "ignores_sigterm" => ignores_sigterm(d, s, prefix).await,
        "forked_children" => forked_children(d, s, prefix).await,
        "restart_on_failure_timing" => restart_on_failure_timing(d, s, prefix).await,
        "restart_always_then_stop" => restart_always_then_stop(d, s, prefix).await,
        "environment_files" => environment_files(d, s, prefix).await,
        "exec_variables" => exec_variables(d, prefix).await,
        "start_pre_and_stop_post" => start_pre_and_stop_post(d, s, prefix).await,
        "forking_with_pid_file" => forking_with_pid_file(d, s, prefix).await,
        "subscribe_sees_transitions" => subscribe_sees_transitions(d, prefix).await,
        "unload_stops" => unload_stops(d, s, prefix).await,
        other => panic!("no case {other}"),
    }
}

fn unit(prefix: &str, name: &str) -> String {
    format!("{prefix}-{name}.service")
}

// Commands whose output is read back sleep a moment before exiting: journald attributes a
// stream to its unit by looking the writer up in /proc, which fails for a writer already gone.

pub(crate) async fn oneshot_remain_after_exit<D: UnitDriver>(d: &D, s: &Scratch, prefix: &str) {
    let name = unit(prefix, "oneshot");
    let marker = s.path("oneshot-ran");
    let text = format!(
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'echo done; touch {}; sleep 0.2'\n",
        marker.display()
    );
    d.load(&name, &text).await.unwrap();
    assert_eq!(
        d.status(&name).await.unwrap().state.to_string(),
        "loaded/inactive/dead"
    );
    d.start(&name).await.unwrap();
    wait_state(d, &name, "loaded/active/exited").await;
    assert!(marker.exists());
    wait_log_line(d, &name, "done").await;
    d.stop(&name).await.unwrap();
    wait_state(d, &name, "loaded/inactive/dead").await;
    d.unload(&name).await.unwrap();
}

pub(crate) async fn clean_exit<D: UnitDriver>(d: &D, prefix: &str) {
    let name = unit(prefix, "clean");
    d.load(&name, "[Service]\nExecStart=/bin/sh -c 'exit 0'\n")
        .await
        .unwrap();
    d.start(&name).await.unwrap();
    let st = wait_state(d, &name, "loaded/inactive/dead").await;
    assert_eq!(st.result, ServiceResult::Success);
    d.unload(&name).await.unwrap();
}

pub(crate) async fn crash<D: UnitDriver>(d: &D, prefix: &str) {
    let name = unit(prefix, "crash");
    d.load(
        &name,
        "[Service]\nExecStart=/bin/sh -c 'sleep 0.1; exit 3'\n",
    )
    .await
    .unwrap();
    d.start(&name).await.unwrap();
    let st = wait_state(d, &name, "loaded/failed/failed").await;
    assert_eq!(st.result, ServiceResult::ExitCode);
    // A failed unit starts again on request.
    d.start(&name).await.unwrap();
    wait_state(d, &name, "loaded/failed/failed").await;
    d.unload(&name).await.unwrap();
}

pub(crate) async fn missing_binary<D: UnitDriver>(d: &D, prefix: &str) {
    let name = unit(prefix, "missing");
    d.load(
        &name,
        "[Service]\nExecStart=/nonexistent/flotilla-test-binary --flag\n",
    )
    .await
    .unwrap();
    d.start(&name).await.unwrap();
    let st = wait_state(d, &name, "loaded/failed/failed").await;
    assert_eq!(st.result, ServiceResult::ExitCode);
    d.unload(&name).await.unwrap();
}

/// A `User=` or `Group=` the user database does not know fails the start, even for a
/// `+` command, which would not switch to them.
pub(crate) async fn unknown_user_or_group<D: UnitDriver>(d: &D, prefix: &str) {
    for (what, setting) in [
        ("nouser", "User=flotilla-no-such-user\nExecStart=/bin/true"),
        (
            "nogroup",
            "Group=flotilla-no-such-group\nExecStart=+/bin/true",
        ),
    ] {
        let name = unit(prefix, what);
        d.load(&name, &format!("[Service]\n{setting}\n"))
            .await
            .unwrap();
        d.start(&name).await.unwrap();
        let st = wait_state(d, &name, "loaded/failed/failed").await;
        assert_eq!(st.result, ServiceResult::ExitCode, "{setting}");
        d.unload(&name).await.unwrap();
    }
}

pub(crate) async fn stdout_follow<D: UnitDriver>(d: &D, prefix: &str) {
    let name = unit(prefix, "stdout");
    d.load(&name, "[Service]\nExecStart=/bin/sh -c 'echo one; echo two >&2; sleep 0.3; echo three; exec sleep 30'\n")
        .await
        .unwrap();
    d.start(&name).await.unwrap();
    wait_state(d, &name, "loaded/active/running").await;
    let seen = wait_log_line(d, &name, "three").await;
    let pos = |w: &str| seen.iter().position(|l| l == w);
    assert!(
        pos("one") < pos("three") && pos("two").is_some(),
        "{seen:?}"
    );
    let mut last = d
        .logs(
            &name,
            LogOptions {
                lines: Some(1),
                follow: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(last.next().await.unwrap().message, "three");
    d.stop(&name).await.unwrap();
    wait_state(d, &name, "loaded/inactive/dead").await;
    d.unload(&name).await.unwrap();
}

pub(crate) async fn ignores_sigterm<D: UnitDriver>(d: &D, s: &Scratch, prefix: &str) {
    let name = unit(prefix, "stubborn");
    let pidfile = s.path("stubborn.pid");
    let text = format!(
        "[Service]\nExecStart=/bin/sh -c 'trap \"\" TERM; echo $$$$ > {}; while :; do sleep 0.05; done'\nTimeoutStopSec=300ms\n",
        pidfile.display()
    );
    d.load(&name, &text).await.unwrap();
    d.start(&name).await.unwrap();
    wait_state(d, &name, "loaded/active/running").await;
    wait_for("pid file", || lines(&pidfile).len() == 1).await;
    let pid: u32 = lines(&pidfile)[0].parse().unwrap();
    let t0 = std::time::Instant::now();
    d.stop(&name).await.unwrap();
    wait_status(d, &name, "stop-sigterm", |st| {
        st.state.sub == "stop-sigterm" || st.state.active == ActiveState::Failed
    })
    .await;
    let st = wait_state(d, &name, "loaded/failed/failed").await;
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "SIGKILL came before the stop timeout"
    );
    assert_eq!(st.result, ServiceResult::Timeout);
    wait_for("the stubborn shell to be killed", || !s.alive(pid)).await;
    d.unload(&name).await.unwrap();
}

pub(crate) async fn forked_children<D: UnitDriver>(d: &D, s: &Scratch, prefix: &str) {
    let name = unit(prefix, "forker");
    let pids = s.path("forker.pids");
    let text = format!(
        "[Service]\nExecStart=/bin/sh -c 'sleep 300 & echo $$! >> {p}; sh -c \"sleep 300\" & echo $$! >> {p}; wait'\n",
        p = pids.display()
    );
    d.load(&name, &text).await.unwrap();
    d.start(&name).await.unwrap();
    wait_state(d, &name, "loaded/active/running").await;
    wait_for("two children", || lines(&pids).len() == 2).await;
    let children: Vec<u32> = lines(&pids).iter().map(|l| l.parse().unwrap()).collect();
    assert!(children.iter().all(|&p| s.alive(p)));
    d.stop(&name).await.unwrap();
    wait_state(d, &name, "loaded/inactive/dead").await;
    wait_for("no orphans", || children.iter().all(|&p| !s.alive(p))).await;
    d.unload(&name).await.unwrap();
}

fn stamps(path: &std::path::Path) -> Vec<u128> {
    lines(path).iter().filter_map(|l| l.parse().ok()).collect()
}

pub(crate) async fn restart_on_failure_timing<D: UnitDriver>(d: &D, s: &Scratch, prefix: &str) {
    let name = unit(prefix, "flaky");
    let log = s.path("flaky.starts");
    let text = format!(
        "[Unit]\nStartLimitIntervalSec=20s\nStartLimitBurst=3\n[Service]\nExecStart=/bin/sh -c 'date +%%s%%N >> {}; exit 1'\nRestart=on-failure\nRestartSec=200ms\n",
        log.display()
    );
    d.load(&name, &text).await.unwrap();
    let mut sub = d.subscribe().await.unwrap();
    d.start(&name).await.unwrap();
    wait_for("three starts", || stamps(&log).len() >= 3).await;
    let st = wait_state(d, &name, "loaded/failed/failed").await;
    // systemd 252 keeps the last run's Result when the start limit stops the restarts.
    assert_eq!(st.result, ServiceResult::ExitCode, "{st:?}");
    let t = stamps(&log);
    assert_eq!(t.len(), 3, "three starts, then the start limit: {t:?}");
    for w in t.windows(2) {
        let gap_ms = (w[1] - w[0]) / 1_000_000;
        assert!(
            gap_ms >= 180,
            "restarted after {gap_ms} ms, RestartSec=200ms"
        );
    }
    // Between runs the unit goes straight to activating/auto-restart, never failed/failed.
    let mut failed = 0;
    while let Ok(Ok(c)) = tokio::time::timeout(Duration::from_millis(50), sub.recv()).await {
        if c.name == name && c.state.is_some_and(|s| s.sub == "failed") {
            failed += 1;
        }
    }
    assert_eq!(failed, 1, "failed/failed only at the end");
    d.unload(&name).await.unwrap();
}

pub(crate) async fn restart_always_then_stop<D: UnitDriver>(d: &D, s: &Scratch, prefix: &str) {
    let name = unit(prefix, "always");
    let log = s.path("always.starts");
    let text = format!(
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/sh -c 'date +%%s%%N >> {}; sleep 0.05'\nRestart=always\nRestartSec=50ms\n",
        log.display()
    );
    d.load(&name, &text).await.unwrap();
    d.start(&name).await.unwrap();
    wait_for("three clean exits restarted", || stamps(&log).len() >= 3).await;
    d.stop(&name).await.unwrap();
    wait_state(d, &name, "loaded/inactive/dead").await;
    let n = stamps(&log).len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stamps(&log).len(), n, "no restart after an explicit stop");
    d.unload(&name).await.unwrap();
}

pub(crate) async fn environment_files<D: UnitDriver>(d: &D, s: &Scratch, prefix: &str) {
    let name = unit(prefix, "env");
    let env = s.path("unit.env");
    std::fs::write(&env, "# comment\nFROM_FILE=\"file value\"\nOVERRIDE=file\n").unwrap();
    let text = format!(
        "[Service]\nType=oneshot\nEnvironment=OVERRIDE=unit \"SPACED=a b\"\nEnvironmentFile={}\nEnvironmentFile=-/nonexistent/flotilla.env\nWorkingDirectory={}\nExecStart=/bin/sh -c 'echo \"$$FROM_FILE|$$OVERRIDE|$$SPACED|$$(pwd)\"; sleep 0.2'\nExecStart=/bin/sh -c 'echo \"$$*\"; sleep 0.2' sh ${{SPACED}} $SPACED\n",
        env.display(),
        s.dir().display()
    );
    d.load(&name, &text).await.unwrap();
    d.start(&name).await.unwrap();
    let want = format!("file value|file|a b|{}", s.dir().display());
    wait_log_line(d, &name, &want).await;
    wait_log_line(d, &name, "a b a b").await;
    wait_state(d, &name, "loaded/inactive/dead").await;

    // A required environment file that is missing fails the start.
    let bad = unit(prefix, "env-missing");
    d.load(
        &bad,
        "[Service]\nEnvironmentFile=/nonexistent/flotilla.env\nExecStart=/bin/true\n",
    )
    .await
    .unwrap();
    d.start(&bad).await.unwrap();
    wait_state(d, &bad, "loaded/failed/failed").await;
    d.unload(&bad).await.unwrap();
    d.unload(&name).await.unwrap();
}

/// `$VAR` and `${VAR}` in command lines: the same arguments under either driver.
pub(crate) async fn exec_variables<D: UnitDriver>(d: &D, prefix: &str) {
    let name = unit(prefix, "vars");
    // Each argument after `sh`, joined with commas: `$A` (quoted in the unit or not) splits
    // into words, respecting quotes in the value; `${A}` stays one word; an empty `$E`
    // vanishes while `${E}` is an empty argument; `${A:-d}` is no default but kept as is.
    let text = "[Service]\nType=oneshot\nEnvironment=\"A=one two\" \"Q='x y' z\" E=\n\
        ExecStart=/bin/sh -c 'IFS=,; echo \"args:$$*\"; sleep 0.2' sh $A \"$A\" ${A} pre${A}post $Q $E ${E} ${NOPE}x ${A:-d} $$A\n";
    d.load(&name, text).await.unwrap();
    d.start(&name).await.unwrap();
    wait_log_line(
        d,
        &name,
        "args:one,two,one,two,one two,preone twopost,x y,z,,x,${A:-d},$A",
    )
    .await;
    wait_state(d, &name, "loaded/inactive/dead").await;
    d.unload(&name).await.unwrap();
}

pub(crate) async fn start_pre_and_stop_post<D: UnitDriver>(d: &D, s: &Scratch, prefix: &str) {
    let name = unit(prefix, "prepost");
    let trail = s.path("prepost.trail");
    let t = trail.display();
    let text = format!(
        "[Service]\nExecStartPre=-/bin/false\nExecStartPre=/bin/sh -c 'echo pre >> {t}'\nExecStart=/bin/sleep 30\nExecStartPost=/bin/sh -c 'echo post >> {t}'\nExecStop=/bin/sh -c 'echo stop $$MAINPID >> {t}'\nExecStopPost=/bin/sh -c 'echo stop-post >> {t}'\n"
    );
    d.load(&name, &text).await.unwrap();
    d.start(&name).await.unwrap();
    let st = wait_state(d, &name, "loaded/active/running").await;
    d.stop(&name).await.unwrap();
    wait_state(d, &name, "loaded/inactive/dead").await;
    let got = lines(&trail);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[0], "pre");
    assert_eq!(got[1], "post");
    assert!(got[2].starts_with("stop "), "{got:?}");
    if let Some(pid) = st.main_pid {
        assert_eq!(got[2], format!("stop {pid}"));
    }
    assert_eq!(got[3], "stop-post");

    // A failing ExecStartPre= (without '-') fails the start before ExecStart=.
    let bad = unit(prefix, "badpre");
    let marker = s.path("badpre.ran");
    d.load(
        &bad,
        &format!(
            "[Service]\nExecStartPre=/bin/false\nExecStart=/bin/touch {}\n",
            marker.display()
        ),
    )
    .await
    .unwrap();
    d.start(&bad).await.unwrap();
    wait_state(d, &bad, "loaded/failed/failed").await;
    assert!(!marker.exists());
    d.unload(&bad).await.unwrap();
    d.unload(&name).await.unwrap();
}

pub(crate) async fn forking_with_pid_file<D: UnitDriver>(d: &D, s: &Scratch, prefix: &str) {
    let name = unit(prefix, "daemon");
    let pidfile = s.path("daemon.pid");
    let text = format!(
        "[Service]\nType=forking\nPIDFile={p}\nExecStart=/bin/sh -c 'sleep 300 & echo $$! > {p}'\n",
        p = pidfile.display()
    );
    d.load(&name, &text).await.unwrap();
    d.start(&name).await.unwrap();
    let st = wait_state(d, &name, "loaded/active/running").await;
    let pid: u32 = lines(&pidfile)[0].parse().unwrap();
    if let Some(main) = st.main_pid {
        assert_eq!(main, pid);
    }
    assert!(s.alive(pid));
    d.stop(&name).await.unwrap();
    wait_state(d, &name, "loaded/inactive/dead").await;
    wait_for("daemon gone", || !s.alive(pid)).await;
    d.unload(&name).await.unwrap();
}

pub(crate) async fn subscribe_sees_transitions<D: UnitDriver>(d: &D, prefix: &str) {
    let name = unit(prefix, "watched");
    let mut sub = d.subscribe().await.unwrap();
    d.load(&name, "[Service]\nExecStart=/bin/sleep 30\n")
        .await
        .unwrap();
    d.start(&name).await.unwrap();
    wait_state(d, &name, "loaded/active/running").await;
    d.stop(&name).await.unwrap();
    let mut seen = Vec::new();
    let res = tokio::time::timeout(crate::util::DEADLINE, async {
        loop {
            let change = sub.recv().await.expect("subscription");
            if change.name != name {
                continue;
            }
            let s = change.state.map(|s| s.to_string()).unwrap_or_default();
            seen.push(s.clone());
            if s == "loaded/inactive/dead" && seen.iter().any(|x| x == "loaded/active/running") {
                return;
            }
        }
    })
    .await;
    assert!(res.is_ok(), "changes seen: {seen:?}");
    d.unload(&name).await.unwrap();
}

pub(crate) async fn unload_stops<D: UnitDriver>(d: &D, s: &Scratch, prefix: &str) {
    let name = unit(prefix, "unloaded");
    let pidfile = s.path("unloaded.pid");
    d.load(
        &name,
        &format!(
            "[Service]\nExecStart=/bin/sh -c 'echo $$$$ > {}; exec sleep 300'\n",
            pidfile.display()
        ),
    )
    .await
    .unwrap();
    d.start(&name).await.unwrap();
    wait_state(d, &name, "loaded/active/running").await;
    wait_for("pid file", || lines(&pidfile).len() == 1).await;
    let pid: u32 = lines(&pidfile)[0].parse().unwrap();
    d.unload(&name).await.unwrap();
    wait_for("process gone after unload", || !s.alive(pid)).await;
    assert!(d.list().await.unwrap().iter().all(|u| u.name != name));
    assert_eq!(
        d.status(&name).await.unwrap().state.load.as_str(),
        "not-found"
    );
}
