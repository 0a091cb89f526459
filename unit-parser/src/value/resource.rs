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

/// systemd's `parse_size(t, 1024)`: a sum of `<number>[.fraction][ ]<suffix>` components
/// with suffixes `E P T G M K B` (powers of 1024) or none, in decreasing order (`1G 512M`,
/// `1K1B`). Fractions are computed in floating point and truncated, exactly as systemd does.
///
/// # Errors
/// [`ResourceError::Size`] for anything else, negative values and overflow.
pub fn parse_size(t: &str) -> Result<u64, ResourceError> {
    const TABLE: [(&str, u64); 8] = [
        ("E", 1 << 60),
        ("P", 1 << 50),
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
        ("B", 1),
        ("", 1),
    ];
    let err = || ResourceError::Size(t.to_owned());
    let s = t.as_bytes();
    let ws = |mut i: usize| {
        while i < s.len() && super::word::is_ws(s[i]) {
            i += 1;
        }
        i
    };
    let digits = |mut i: usize| {
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut total: u64 = 0;
    let mut start = 0;
    let mut p = 0;
    loop {
        p = ws(p);
        // strtoull(p, &e, 10): an optional sign, then digits.
        let sign = matches!(s.get(p), Some(b'+' | b'-')) as usize;
        let e = digits(p + sign);
        if e == p + sign {
            return Err(err());
        }
        if s[p] == b'-' {
            return Err(err());
        }
        let l: u64 = t[p + sign..e].parse().map_err(|_| err())?;
        let mut e = e;
        let mut frac = 0f64;
        if s.get(e) == Some(&b'.') {
            e += 1;
            if s.get(e).is_some_and(u8::is_ascii_digit) {
                let e2 = digits(e);
                let l2: u64 = t[e..e2].parse().map_err(|_| err())?;
                frac = l2 as f64;
                for _ in e..e2 {
                    frac /= 10.0;
                }
                e = e2;
            }
        }
        e = ws(e);
        let i = (start..TABLE.len())
            .find(|&i| t[e..].starts_with(TABLE[i].0))
            .ok_or_else(err)?;
        let factor = TABLE[i].1;
        if l + u64::from(frac > 0.0) > u64::MAX / factor {
            return Err(err());
        }
        let tmp = l * factor + (frac * factor as f64) as u64;
        total = total.checked_add(tmp).ok_or_else(err)?;
        p = e + TABLE[i].0.len();
        start = i + 1;
        if p >= s.len() {
            return Ok(total);
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
    let (num, scale_digits, per) = if let Some(n) = t.strip_suffix('\u{2031}') {
        (n, 0usize, 1i64)
    } else if let Some(n) = t.strip_suffix('\u{2030}') {
        (n, 1, 10)
    } else if let Some(n) = t.strip_suffix('%') {
        (n, 2, 100)
    } else {
        return Err(err());
    };
    // The whole part goes through safe_atoi() (sign, white space, 0x and octal accepted);
    // the fraction must be 1..=scale plain digits.
    let (int, frac) = match num.split_once('.') {
        Some(_) if scale_digits == 0 => return Err(err()),
        Some((i, f)) => (i, Some(f)),
        None => (num, None),
    };
    let whole = i64::from(super::safe_atoi(int).ok_or_else(err)?);
    let mut f: i64 = 0;
    if let Some(frac) = frac {
        if frac.is_empty() || frac.len() > scale_digits || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(err());
        }
        f = frac.parse().map_err(|_| err())?;
        for _ in frac.len()..scale_digits {
            f *= 10;
        }
    }
    if whole < 0 {
        return Err(err());
    }
    let v = whole * per + f;
    if (!unbounded && v > 10_000) || v > i64::from(i32::MAX) {
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
        // "10.M" is valid in systemd (an empty fraction is ignored); trailing space is not.
        assert_eq!(parse_size("10.M"), Ok(10 << 20));
        assert_eq!(parse_size("1K1B"), Ok(1025));
        assert_eq!(parse_size("+5"), Ok(5));
        for bad in [
            "",
            "-1",
            "1k",
            "1M 1G",
            "x",
            "1 2",
            "1Q",
            "99999999999E",
            "1K ",
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
