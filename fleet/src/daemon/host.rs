//! What fleetd learns about its host: the machine ID and the public IP (fleet.md §6.6).

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::Path;

/// Where systemd keeps the machine ID.
pub const MACHINE_ID_FILE: &str = "/etc/machine-id";

/// Why the machine ID is unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The machine-id file cannot be read.
    #[error("cannot read the machine ID from {path}: {detail} (set machine_id in fleet.conf)")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
    /// The machine ID is not 32 hexadecimal digits.
    #[error("{origin}: machine ID {id:?} is not 32 hexadecimal digits")]
    Malformed {
        /// Where it came from.
        origin: String,
        /// The value.
        id: String,
    },
}

/// The machine ID: `configured`, or the contents of `file` (normally
/// [`MACHINE_ID_FILE`]); 32 lowercase hexadecimal digits, as systemd writes it.
///
/// # Errors
/// When it cannot be read or is malformed.
pub fn machine_id(configured: Option<&str>, file: &Path) -> Result<String, HostError> {
    let (id, origin) = match configured {
        Some(id) => (id.trim().to_owned(), "machine_id".to_owned()),
        None => {
            let text = std::fs::read_to_string(file).map_err(|e| HostError::Unreadable {
                path: file.display().to_string(),
                detail: e.to_string(),
            })?;
            (text.trim().to_owned(), file.display().to_string())
        }
    };
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(HostError::Malformed { origin, id });
    }
    Ok(id.to_ascii_lowercase())
}

/// The IP of the interface the default route leaves through (fleet: the first global
/// unicast IPv4 of that interface): the source address the kernel picks for a datagram
/// to a public address. Nothing is sent. `None` without a default route.
pub fn default_route_ip() -> Option<IpAddr> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    // A documentation address (TEST-NET-3): only the routing decision matters.
    socket.connect((Ipv4Addr::new(203, 0, 113, 1), 9)).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

/// What this host offers the scheduler: its memory (`MemTotal` of `/proc/meminfo`) and
/// its CPUs (100% each). Unknown parts stay unlimited.
pub fn capacity() -> crate::registry::CapacityRecord {
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| mem_total(&t));
    let cpu_percent = std::thread::available_parallelism()
        .ok()
        .map(|n| n.get() as u64 * 100);
    crate::registry::CapacityRecord {
        memory_bytes,
        cpu_percent,
        max_units: None,
    }
}

/// `MemTotal:` of a `/proc/meminfo` text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod capacity_tests {
    #[test]
    fn meminfo_total() {
        assert_eq!(
            super::mem_total("MemTotal:       24573412 kB\nMemFree: 1 kB\n"),
            Some(24_573_412 * 1024)
        );
        assert_eq!(super::mem_total("MemFree: 1 kB\n"), None);
        let c = super::capacity();
        assert!(c.cpu_percent.unwrap_or(100) >= 100);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_id_from_config_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("machine-id");
        std::fs::write(&f, "0123456789ABCDEF0123456789abcdef\n").unwrap();
        assert_eq!(
            machine_id(None, &f).unwrap(),
            "0123456789abcdef0123456789abcdef"
        );
        assert_eq!(
            machine_id(Some("ffffffffffffffffffffffffffffffff"), &f).unwrap(),
            "ffffffffffffffffffffffffffffffff"
        );
        let e = machine_id(Some("m1"), &f).unwrap_err().to_string();
        assert_eq!(
            e,
            "machine_id: machine ID \"m1\" is not 32 hexadecimal digits"
        );
        let e = machine_id(None, &dir.path().join("nope")).unwrap_err();
        assert!(matches!(e, HostError::Unreadable { .. }));
    }
}
