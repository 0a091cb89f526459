//! Generates prost messages and tonic services for every `.proto` file under `proto/`.
//! Output goes only to `OUT_DIR`; nothing generated is committed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/raft/v1/raft.proto",
        "proto/kv/v1/kv.proto",
        "proto/etcdserverpb/kv_subset.proto",
        "proto/fleet/v1/fleet.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Raft messages and snapshot chunks pass through without a copy. kv.v1 keeps
        // `String`s: keys and values are etcd v2 strings (UTF-8) in kv-core too.
        .bytes(".raft.v1")
        // fleet.v1's metadata maps are `BTreeMap`s, ordered as fleet's API types.
        .btree_map(".fleet.v1")
        .compile_protos(&files, &["proto"])?;
    Ok(())
}
