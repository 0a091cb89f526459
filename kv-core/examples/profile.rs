//! A small driver for instruction-count profiling (`valgrind --tool=callgrind`), where
//! criterion's timing loop would be far too slow.
//!
//! `cargo run --release -p kv-core --example profile -- <get|getref|set|setbuild|snapshot|none>
//! [ops]
//! [keys]`
//! builds a store of `keys` (default 100,000) fleet-shaped keys with 256-byte values,
//! then runs `ops` (default 200,000) gets or sets over existing keys, spread over the
//! store as the criterion bench does. Instructions per operation: (`get` - `none`) / ops (also
//! `getref`), and
//! (`set` - `setbuild`) / ops.

use std::hint::black_box;

use kv_core::{Command, Op, Store};

const NOW: u64 = 1_800_000_000_000;

fn key(i: usize) -> String {
    format!(
        "/_coreos.com/fleet/job/unit-{:04}/object-{i:016}-abcdefghij",
        i % 1024
    )
}

fn value(i: usize) -> String {
    let mut v = format!("{i:016}");
    v.extend(std::iter::repeat_n('v', 256 - v.len()));
    v
}

fn set(key: String, value: String) -> Command {
    Command::new(
        NOW,
        Op::Set {
            key,
            value,
            dir: false,
            ttl: None,
            refresh: false,
        },
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("get", String::as_str);
    let ops: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let names: Vec<String> = (0..n).map(key).collect();
    let mut store = Store::new();
    for (i, k) in names.iter().enumerate() {
        store.apply(&set(k.clone(), value(i))).unwrap();
    }
    // Commands are built outside the measured part where possible.
    let v = value(7);
    let spread = |i: usize| i.wrapping_mul(2_654_435_761) % n;
    match mode {
        "get" => {
            for i in 0..ops {
                black_box(store.get(&names[spread(i)], false, false, NOW).unwrap());
            }
        }
        // The borrowed read, its value copied into a reused buffer (as a server writes
        // its response).
        "getref" => {
            let mut out = Vec::with_capacity(512);
            for i in 0..ops {
                let r = store.get_ref(&names[spread(i)], NOW).unwrap();
                out.clear();
                out.extend_from_slice(r.value().unwrap_or("").as_bytes());
                black_box((&out, r.modified_index()));
            }
        }
        "set" => {
            let cmds: Vec<Command> = (0..ops)
                .map(|i| set(names[spread(i)].clone(), v.clone()))
                .collect();
            for c in &cmds {
                black_box(store.apply(c).unwrap());
            }
        }
        // The cost of building the commands alone, to subtract from `set`.
        "setbuild" => {
            let cmds: Vec<Command> = (0..ops)
                .map(|i| set(names[spread(i)].clone(), v.clone()))
                .collect();
            black_box(cmds);
        }
        // A fingerprint of the snapshot after some writes, to check that a change
        // leaves the format byte for byte as it was.
        "snapshot" => {
            for i in 0..ops {
                let c = set(names[spread(i)].clone(), value(i ^ 0x5a5a));
                store.apply(&c).unwrap();
            }
            let mut buf = Vec::new();
            store.snapshot(&mut buf).unwrap();
            let fnv = buf.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
            println!("snapshot: {} bytes, FNV-1a {fnv:016x}", buf.len());
        }
        "none" => {}
        other => panic!("unknown mode {other:?}: get, getref, set, setbuild, snapshot or none"),
    }
    println!("{mode}: {ops} ops on {n} keys, index {}", store.index());
}
