//! The bytes of a snapshot: the member list and the state machine's bytes, checksummed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::Member;
use crate::error::{Error, Result, StorageError};
use crate::state_machine::StateMachine;

const SNAP_MAGIC: &[u8; 4] = b"FRSS";
const SNAP_VERSION: u8 = 1;

/// Snapshot data: magic, version, the member list (JSON, length-prefixed), the state
/// machine's bytes, and a CRC32 of everything before it.
pub(super) fn encode_snapshot<S: StateMachine>(
    members: &BTreeMap<u64, Member>,
    sm: &S,
) -> Result<Vec<u8>> {
    encode_snapshot_until(members, sm, &AtomicBool::new(false))
}

/// [`encode_snapshot`], given up with an error as soon as `stop` is set (a member shutting
/// down need not wait seconds for the encoding of a large state machine).
pub(super) fn encode_snapshot_until<S: StateMachine>(
    members: &BTreeMap<u64, Member>,
    sm: &S,
    stop: &AtomicBool,
) -> Result<Vec<u8>> {
    struct Until<'a> {
        out: Vec<u8>,
        stop: &'a AtomicBool,
    }
    impl std::io::Write for Until<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.stop.load(Ordering::Relaxed) {
                return Err(std::io::Error::other("the member is stopping"));
            }
            self.out.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut out = Vec::new();
    out.extend_from_slice(SNAP_MAGIC);
    out.push(SNAP_VERSION);
    let m = serde_json::to_vec(&members.values().collect::<Vec<_>>())
        .map_err(|e| Error::Codec(e.to_string()))?;
    out.extend_from_slice(&(m.len() as u32).to_le_bytes());
    out.extend_from_slice(&m);
    let mut w = Until { out, stop };
    sm.snapshot(&mut w)
        .map_err(|e| Error::Snapshot(e.to_string()))?;
    let mut out = w.out;
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

pub(super) fn decode_snapshot(data: &[u8]) -> Result<(BTreeMap<u64, Member>, &[u8]), StorageError> {
    let bad = |d: &str| StorageError::Corrupt {
        what: "snapshot data".into(),
        detail: d.into(),
    };
    if data.len() < 13 {
        return Err(bad("too short"));
    }
    let (body, crc) = data.split_at(data.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(bad("checksum mismatch"));
    }
    if &body[..4] != SNAP_MAGIC {
        return Err(bad("bad magic"));
    }
    if body[4] != SNAP_VERSION {
        return Err(bad(&format!("unknown snapshot version {}", body[4])));
    }
    let n = u32::from_le_bytes([body[5], body[6], body[7], body[8]]) as usize;
    let rest = &body[9..];
    if n > rest.len() {
        return Err(bad("member list length out of range"));
    }
    let members: Vec<Member> =
        serde_json::from_slice(&rest[..n]).map_err(|e| bad(&format!("member list: {e}")))?;
    Ok((members.into_iter().map(|m| (m.id, m)).collect(), &rest[n..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_data_round_trips_and_rejects_damage() {
        struct Bytesm(Vec<u8>);
        impl StateMachine for Bytesm {
            type Command = ();
            type Output = ();
            fn apply(&mut self, _: u64, (): ()) {}
            fn snapshot(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
                w.write_all(&self.0)
            }
            fn restore(&mut self, r: &mut dyn std::io::Read) -> Result<(), String> {
                self.0.clear();
                r.read_to_end(&mut self.0)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        }
        let mut members = BTreeMap::new();
        members.insert(3, Member::new(3, "c"));
        let data = encode_snapshot(&members, &Bytesm(b"state".to_vec())).unwrap();
        let (m, sm) = decode_snapshot(&data).unwrap();
        assert_eq!(m, members);
        assert_eq!(sm, b"state");
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x40;
            assert!(decode_snapshot(&bad).is_err(), "flip at {i}");
        }
        for n in 0..data.len() {
            assert!(decode_snapshot(&data[..n]).is_err());
        }
    }
}
