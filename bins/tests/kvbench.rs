//! kvbench runs end to end: it starts 3-member kvd and etcd clusters itself, preloads them,
//! measures every workload on both and reports ratios and memory. Tiny sizes: this checks
//! the tool, the figures come from full runs (docs/benchmarks.md).

use std::process::Command;

#[test]
fn kvbench_drives_three_member_kvd_and_etcd_clusters() {
    let out = Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args(["--kvd-bin", env!("CARGO_BIN_EXE_kvd")])
        .args(["--members", "3", "--duration", "0.3", "--rounds", "1"])
        .args(["--conns", "2", "--keys", "40", "--rss"])
        .output()
        .expect("run kvbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kvbench failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("RSS after preloading 40 keys") && stdout.contains("3 member(s)"),
        "no memory line:\n{stdout}"
    );
    for op in ["put", "get", "qget"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {op} | 2 |")))
            .unwrap_or_else(|| panic!("no {op} row:\n{stdout}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // | op | conns | kvd ops/s | .. | etcd ops/s | .. | ratio |
        let (kvd, etcd): (f64, f64) = (cells[3].parse().unwrap(), cells[6].parse().unwrap());
        assert!(kvd > 0.0 && etcd > 0.0, "a target served nothing: {row}");
        // | .. | ratio | kvd CPU µs/op | etcd CPU µs/op |: kvbench started both clusters, so
        // it read both one's CPU time.
        for cpu in [cells[10], cells[11]] {
            let cpu: f64 = cpu
                .parse()
                .unwrap_or_else(|_| panic!("no CPU per op: {row}"));
            assert!(cpu >= 0.0, "{row}");
        }
    }
    // Every request of the run succeeded on both clusters.
    for l in stderr.lines().filter(|l| l.contains("errors")) {
        assert!(l.ends_with("errors 0"), "{l}");
    }
}

/// Against servers it did not start, kvbench reports the CPU per operation of the processes
/// named by `--kvd-pids`/`--etcd-pids` (here two kvd builds' stand-ins: one kvd under both
/// names, its pid given for one of them only), and refuses pids it cannot read.
#[test]
fn kvbench_reports_cpu_of_servers_given_by_pid() {
    let kvd = crate::util::kvd();
    let pid = kvd.pid().to_string();
    let run = |pids: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kvbench"))
            .args(["--kvd-url", &kvd.url, "--etcd-url", &kvd.url])
            .args(pids)
            .args(["--duration", "0.3", "--rounds", "1", "--conns", "2"])
            .args(["--keys", "40", "--ops", "put"])
            .output()
            .expect("run kvbench")
    };
    let out = run(&["--kvd-pids", &pid]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kvbench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| put | 2 |"))
        .unwrap_or_else(|| panic!("no put row:\n{stdout}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let cpu: f64 = cells[10]
        .parse()
        .unwrap_or_else(|_| panic!("no CPU per op for the pid given: {row}"));
    assert!(cpu > 0.0, "{row}");
    assert_eq!(
        cells[11], "n/a",
        "no pid was given for the other target: {row}"
    );

    // A pid that is not running is refused before anything is measured.
    let out = run(&["--kvd-pids", &pid, "--etcd-pids", "0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--etcd-pids"), "{stderr}");
}
