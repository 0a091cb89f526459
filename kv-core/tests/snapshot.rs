//! Snapshot round trips and clear errors on bad input.

use kv_core::{Command, Op, SnapshotError, Store};

fn sample() -> Store {
    let mut s = Store::with_index(10);
    let mut run = |op| s.apply(&Command::new(5_000, op)).unwrap();
    run(Op::Set {
        key: "/a/b".into(),
        value: "v".into(),
        dir: false,
        ttl: Some(30),
        refresh: false,
    });
    run(Op::Set {
        key: "/a/_h".into(),
        value: "ü\n".into(),
        dir: false,
        ttl: None,
        refresh: false,
    });
    run(Op::Create {
        key: "/q".into(),
        value: "x".into(),
        dir: false,
        ttl: None,
        unique: true,
    });
    run(Op::Set {
        key: "/d".into(),
        value: String::new(),
        dir: true,
        ttl: Some(1),
        refresh: false,
    });
    run(Op::Delete {
        key: "/q".into(),
        dir: true,
        recursive: true,
    });
    s
}

fn bytes(s: &Store) -> Vec<u8> {
    let mut v = Vec::new();
    let n = s.snapshot(&mut v).unwrap();
    assert_eq!(n as usize, v.len());
    v
}

#[test]
fn round_trip_is_identical() {
    let s = sample();
    let b = bytes(&s);
    let r = Store::restore(&mut b.as_slice()).unwrap();
    assert_eq!(bytes(&r), b);
    assert_eq!(r.index(), s.index());
    assert_eq!(r.next_expiry(), s.next_expiry());
    assert_eq!(
        r.get("/", true, true, 5_000).unwrap(),
        s.get("/", true, true, 5_000).unwrap()
    );
}

#[test]
fn foreign_truncated_and_corrupt_input_are_reported() {
    let b = bytes(&sample());
    let err = Store::restore(&mut &b"{\"json\": true}"[..]).unwrap_err();
    assert!(matches!(err, SnapshotError::BadMagic { .. }), "{err}");
    let err = Store::restore(&mut &b[..b.len() / 2]).unwrap_err();
    assert!(matches!(err, SnapshotError::Truncated { .. }), "{err}");
    let mut v = b.clone();
    v[8] = 9;
    let err = Store::restore(&mut v.as_slice()).unwrap_err();
    assert!(
        matches!(err, SnapshotError::UnsupportedVersion { found: 9 }),
        "{err}"
    );
    // Flip one byte of every position past the header: never a panic, always an error.
    for i in 12..b.len() {
        let mut v = b.clone();
        v[i] ^= 0x5a;
        assert!(
            Store::restore(&mut v.as_slice()).is_err(),
            "byte {i} flipped was accepted"
        );
    }
}
