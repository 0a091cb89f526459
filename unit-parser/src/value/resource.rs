//! Resource-control values: byte sizes (`MemoryMax=`), percentages (`CPUQuota=`) and
//! `CPUWeight=`.

use thiserror::Error;

/// A memory limit as `MemoryMax=`/`MemoryHigh=` accept it.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLimit {
    /// An absolute size in bytes.
    Bytes(u64),
    /// A share of physical memory, in permyriad (1/10000), as `N%`, `N‰` or `N‱` give it.
    Permyriad(u32),
    /// `infinity`: no limit.
    Infinity,
}

/// `CPUWeight=`: `idle` or 1..=10000.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuWeight {
    /// `idle` (cgroup v2 `cpu.idle`).
    Idle,
    /// A weight in 1..=10000.
    Weight(u64),
}

/// A resource value systemd would ignore with a warning.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ResourceError {
    /// Not a size.
    #[error("invalid size {0:?}")]
    Size(String),
    /// Not a percentage (or out of range).
    #[error("invalid percentage {0:?}")]
    Percent(String),
    /// Not a CPU weight.
    #[error("invalid CPU weight {0:?} (expected idle or 1..10000)")]
    CpuWeight(String),
    /// A memory limit of zero or otherwise refused.
    #[error("invalid memory limit {0:?}")]
    MemoryLimit(String),
}

/// systemd's `parse_size(t, 1024)`: a sum of `<number>[.fraction]<suffix>` components with
/// suffixes `E P T G M K B` (powers of 1024) or none, in decreasing order (`1G 512M`).
///
/// # Errors
/// [`ResourceError::Size`] for anything else, negative values and overflow.
pub fn parse_size(t: &str) -> Result<u64, ResourceError> {
    const TABLE: [(u8, u64); 8] = [
        (b'E', 1 << 60),
        (b'P', 1 << 50),
        (b'T', 1 << 40),
        (b'G', 1 << 30),
        (b'M', 1 << 20),
        (b'K', 1 << 10),
        (b'B', 1),
        (0, 1),
    ];
    let err = || ResourceError::Size(t.to_owned());
    let s = t.as_bytes();
    let ws = |mut i: usize| {
        while i < s.len() && super::word::is_ws(s[i]) {
            i += 1;
        }
        i
    };
    let mut p = ws(0);
    if p == s.len() {
        return Err(err());
    }
    let mut total: u64 = 0;
    let mut start = 0;
    loop {
        p = ws(p);
        if s.get(p) == Some(&b'-') {
            return Err(err());
        }
        let d0 = p;
        let mut l: u64 = 0;
        while p < s.len() && s[p].is_ascii_digit() {
            l = l
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(s[p] - b'0')))
                .ok_or_else(err)?;
            p += 1;
        }
        if p == d0 {
            return Err(err());
        }
        let mut frac: u64 = 0;
        let mut frac_scale: u64 = 1;
        if s.get(p) == Some(&b'.') {
            p += 1;
            let f0 = p;
            while p < s.len() && s[p].is_ascii_digit() {
                // systemd caps the fraction at what fits; 18 digits are plenty.
                if frac_scale < 1_000_000_000_000_000_000 {
                    frac = frac * 10 + u64::from(s[p] - b'0');
                    frac_scale *= 10;
                }
                p += 1;
            }
            if p == f0 {
                return Err(err());
            }
        }
        p = ws(p);
        let found = TABLE[start..]
            .iter()
            .position(|(c, _)| *c == 0 || s.get(p) == Some(c))
            .map(|i| i + start)
            .ok_or_else(err)?;
        let (c, mult) = TABLE[found];
        if c != 0 {
            p += 1;
        }
        let whole = l.checked_mul(mult).ok_or_else(err)?;
        let part = (u128::from(frac) * u128::from(mult) / u128::from(frac_scale)) as u64;
        total = total
            .checked_add(whole)
            .and_then(|v| v.checked_add(part))
            .ok_or_else(err)?;
        start = found + 1;
        p = ws(p);
        if p == s.len() {
            return Ok(total);
        }
        if c == 0 || start >= TABLE.len() {
            return Err(err());
        }
    }
}

/// systemd's `parse_permyriad()`: `N%` (up to 2 decimals), `N‰` (1 decimal) or `N‱`,
/// returning permyriad (100% = 10000). Values above 100% are refused unless `unbounded`.
///
/// # Errors
/// [`ResourceError::Percent`] for anything else.
pub fn parse_permyriad(t: &str, unbounded: bool) -> Result<u32, ResourceError> {
    let err = || ResourceError::Percent(t.to_owned());
    let (num, scale_digits, per) = if let Some(n) = t.strip_suffix('%') {
        (n, 2u32, 100u64)
    } else if let Some(n) = t.strip_suffix('\u{2030}') {
        (n, 1, 10)
    } else if let Some(n) = t.strip_suffix('\u{2031}') {
        (n, 0, 1)
    } else {
        return Err(err());
    };
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > scale_digits as usize
        || (num.contains('.') && frac.is_empty())
        || int.len() > 9
    {
        return Err(err());
    }
    let i: u64 = int.parse().map_err(|_| err())?;
    let mut f: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| err())?
    };
    for _ in frac.len()..scale_digits as usize {
        f *= 10;
    }
    let v = i * per + f;
    if (!unbounded && v > 10_000) || v > u64::from(u32::MAX) {
        return Err(err());
    }
    Ok(v as u32)
}

/// `MemoryMax=`/`MemoryHigh=`: `infinity`, a percentage, or a non-zero size.
///
/// # Errors
/// [`ResourceError::MemoryLimit`] for anything else.
pub fn parse_memory_limit(t: &str) -> Result<MemoryLimit, ResourceError> {
    if t == "infinity" {
        return Ok(MemoryLimit::Infinity);
    }
    if let Ok(p) = parse_permyriad(t, false) {
        return Ok(MemoryLimit::Permyriad(p));
    }
    match parse_size(t) {
        Ok(b) if b > 0 => Ok(MemoryLimit::Bytes(b)),
        _ => Err(ResourceError::MemoryLimit(t.to_owned())),
    }
}

/// `CPUQuota=`: a positive percentage, may exceed 100%; returned in percent.
///
/// # Errors
/// [`ResourceError::Percent`] for anything else, including `0%`.
pub fn parse_cpu_quota(t: &str) -> Result<f64, ResourceError> {
    match parse_permyriad(t, true)? {
        0 => Err(ResourceError::Percent(t.to_owned())),
        v => Ok(f64::from(v) / 100.0),
    }
}

/// `CPUWeight=`: `idle` or an integer in 1..=10000.
///
/// # Errors
/// [`ResourceError::CpuWeight`] for anything else.
pub fn parse_cpu_weight(t: &str) -> Result<CpuWeight, ResourceError> {
    if t == "idle" {
        return Ok(CpuWeight::Idle);
    }
    match t.parse::<u64>() {
        Ok(w) if (1..=10_000).contains(&w) && t.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(CpuWeight::Weight(w))
        }
        _ => Err(ResourceError::CpuWeight(t.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("1.5G"), Ok(1536 << 20));
        assert_eq!(parse_size("1G 512M"), Ok((1 << 30) + (512 << 20)));
        assert_eq!(parse_size("2 M"), Ok(2 << 20));
        assert_eq!(parse_size("10B"), Ok(10));
        for bad in [
            "",
            "-1",
            "1k",
            "1M 1G",
            "1.G",
            "x",
            "1 2",
            "1Q",
            "99999999999E",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percentages_and_limits() {
        assert_eq!(parse_permyriad("50%", false), Ok(5000));
        assert_eq!(parse_permyriad("12.34%", false), Ok(1234));
        assert_eq!(parse_permyriad("5\u{2030}", false), Ok(50));
        assert!(parse_permyriad("101%", false).is_err());
        assert!(parse_permyriad("1.234%", false).is_err());
        assert!(parse_permyriad("%", false).is_err());
        assert_eq!(parse_cpu_quota("150%"), Ok(150.0));
        assert_eq!(parse_cpu_quota("20.5%"), Ok(20.5));
        assert!(parse_cpu_quota("0%").is_err());
        assert!(parse_cpu_quota("20").is_err());
        assert_eq!(parse_memory_limit("1G"), Ok(MemoryLimit::Bytes(1 << 30)));
        assert_eq!(parse_memory_limit("infinity"), Ok(MemoryLimit::Infinity));
        assert_eq!(parse_memory_limit("10%"), Ok(MemoryLimit::Permyriad(1000)));
        assert!(parse_memory_limit("0").is_err());
        assert_eq!(parse_cpu_weight("idle"), Ok(CpuWeight::Idle));
        assert_eq!(parse_cpu_weight("100"), Ok(CpuWeight::Weight(100)));
        for bad in ["0", "10001", "+5", "", "x"] {
            assert!(parse_cpu_weight(bad).is_err(), "{bad}");
        }
    }
}
