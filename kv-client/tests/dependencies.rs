//! kv-client links neither RocksDB nor raft: a client of the store builds without them.

use std::process::Command;

/// Packages that would mean the client links the store's engine.
const FORBIDDEN: [&str; 4] = ["rocksdb", "librocksdb-sys", "raft", "raft-store"];

#[test]
fn the_dependency_tree_has_no_rocksdb_and_no_raft() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    // Every kind of edge (normal, build and dev), each package once, by name.
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--locked",
            "-p",
            "kv-client",
            "--edges",
            "normal,build,dev",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo tree");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        names.contains(&"kv-client") && names.contains(&"tonic"),
        "{stdout}"
    );
    let found: Vec<&&str> = names.iter().filter(|n| FORBIDDEN.contains(n)).collect();
    assert!(
        found.is_empty(),
        "kv-client depends on {found:?}:\n{stdout}"
    );
}
