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
