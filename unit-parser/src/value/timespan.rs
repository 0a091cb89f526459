//! Time spans as systemd's `parse_time()`/`parse_sec()` read them.

use std::fmt;
use std::time::Duration;

use thiserror::Error;

/// Microseconds per unit.
const USEC_PER_SEC: u64 = 1_000_000;
const USEC_PER_MINUTE: u64 = 60 * USEC_PER_SEC;
const USEC_PER_HOUR: u64 = 60 * USEC_PER_MINUTE;
const USEC_PER_DAY: u64 = 24 * USEC_PER_HOUR;
const USEC_PER_WEEK: u64 = 7 * USEC_PER_DAY;
const USEC_PER_MONTH: u64 = 2_629_800 * USEC_PER_SEC;
const USEC_PER_YEAR: u64 = 31_557_600 * USEC_PER_SEC;
/// systemd's `USEC_INFINITY`.
const USEC_INFINITY: u64 = u64::MAX;

/// Suffixes in systemd's lookup order: longer spellings first where one is a prefix of
/// another (`ms` before `m`, `months` before `m`).
const UNITS: &[(&str, u64)] = &[
    ("seconds", USEC_PER_SEC),
    ("second", USEC_PER_SEC),
    ("sec", USEC_PER_SEC),
    ("s", USEC_PER_SEC),
    ("minutes", USEC_PER_MINUTE),
    ("minute", USEC_PER_MINUTE),
    ("min", USEC_PER_MINUTE),
    ("months", USEC_PER_MONTH),
    ("month", USEC_PER_MONTH),
    ("M", USEC_PER_MONTH),
    ("msec", 1000),
    ("ms", 1000),
    ("m", USEC_PER_MINUTE),
    ("hours", USEC_PER_HOUR),
    ("hour", USEC_PER_HOUR),
    ("hr", USEC_PER_HOUR),
    ("h", USEC_PER_HOUR),
    ("days", USEC_PER_DAY),
    ("day", USEC_PER_DAY),
    ("d", USEC_PER_DAY),
    ("weeks", USEC_PER_WEEK),
    ("week", USEC_PER_WEEK),
    ("w", USEC_PER_WEEK),
    ("years", USEC_PER_YEAR),
    ("year", USEC_PER_YEAR),
    ("y", USEC_PER_YEAR),
    ("usec", 1),
    ("us", 1),
    ("\u{3bc}s", 1),
    ("\u{b5}s", 1),
];

/// A parsed time span: finite (microsecond resolution) or `infinity`.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timespan {
    /// A finite span.
    Finite(Duration),
    /// `infinity` (systemd's `USEC_INFINITY`).
    Infinity,
}

impl Timespan {
    /// The span in microseconds, `u64::MAX` for infinity (systemd's representation).
    pub fn as_micros(self) -> u64 {
        match self {
            Timespan::Finite(d) => d.as_micros() as u64,
            Timespan::Infinity => USEC_INFINITY,
        }
    }

    /// From microseconds, `u64::MAX` meaning infinity.
    pub fn from_micros(us: u64) -> Timespan {
        if us == USEC_INFINITY {
            Timespan::Infinity
        } else {
            Timespan::Finite(Duration::from_micros(us))
        }
    }

    /// The finite duration, `None` for infinity.
    pub fn duration(self) -> Option<Duration> {
        match self {
            Timespan::Finite(d) => Some(d),
            Timespan::Infinity => None,
        }
    }
}

/// Formats like systemd's `format_timespan()` at 1 µs accuracy, but with whole-number
/// components only (`1h 30min 5s 20ms`); the output always parses back to the same span.
impl fmt::Display for Timespan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut us = match self {
            Timespan::Infinity => return f.write_str("infinity"),
            Timespan::Finite(_) => self.as_micros(),
        };
        if us == 0 {
            return f.write_str("0");
        }
        const PARTS: &[(&str, u64)] = &[
            ("y", USEC_PER_YEAR),
            ("month", USEC_PER_MONTH),
            ("w", USEC_PER_WEEK),
            ("d", USEC_PER_DAY),
            ("h", USEC_PER_HOUR),
            ("min", USEC_PER_MINUTE),
            ("s", USEC_PER_SEC),
            ("ms", 1000),
            ("us", 1),
        ];
        let mut first = true;
        for (name, unit) in PARTS {
            if us >= *unit {
                if !first {
                    f.write_str(" ")?;
                }
                write!(f, "{}{}", us / unit, name)?;
                us %= unit;
                first = false;
            }
        }
        Ok(())
    }
}

/// Why a time span did not parse (systemd's `-EINVAL` / `-ERANGE`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TimespanError {
    /// Not a time span.
    #[error("invalid time span {0:?}")]
    Invalid(String),
    /// Negative or too large.
    #[error("time span {0:?} is out of range")]
    OutOfRange(String),
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && super::word::is_ws(s[i]) {
        i += 1;
    }
    i
}

/// systemd's `parse_time(t, default_unit)`: `<number><unit>` components, optionally
/// separated by whitespace, summed; a bare number is in `default_unit_us` microseconds;
/// decimals allowed; `infinity` alone is [`Timespan::Infinity`].
///
/// # Errors
/// [`TimespanError::Invalid`] for anything else (including empty input),
/// [`TimespanError::OutOfRange`] for negative values and overflow.
pub fn parse_time(t: &str, default_unit_us: u64) -> Result<Timespan, TimespanError> {
    let invalid = || TimespanError::Invalid(t.to_owned());
    let range = || TimespanError::OutOfRange(t.to_owned());
    let s = t.as_bytes();
    let mut p = skip_ws(s, 0);
    if let Some(rest) = s[p..].strip_prefix(b"infinity") {
        return if skip_ws(rest, 0) == rest.len() {
            Ok(Timespan::Infinity)
        } else {
            Err(invalid())
        };
    }
    let mut usec: u64 = 0;
    let mut something = false;
    loop {
        p = skip_ws(s, p);
        if p == s.len() {
            if !something {
                return Err(invalid());
            }
            break;
        }
        if s[p] == b'-' {
            return Err(range());
        }
        // strtoll: optional '+', then digits.
        let mut e = p;
        if s[e] == b'+' {
            e += 1;
        }
        let digits_start = e;
        let mut l: u64 = 0;
        while e < s.len() && s[e].is_ascii_digit() {
            l = l
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(s[e] - b'0')))
                .filter(|v| *v <= i64::MAX as u64)
                .ok_or_else(range)?;
            e += 1;
        }
        if e == digits_start {
            // No digits: strtoll leaves the pointer at the start.
            e = p;
        }
        let has_fraction = s.get(e) == Some(&b'.');
        if has_fraction {
            p = e + 1;
            while p < s.len() && s[p].is_ascii_digit() {
                p += 1;
            }
        } else if e == p {
            return Err(invalid());
        } else {
            p = e;
        }
        let unit_at = skip_ws(s, p);
        let (after_unit, multiplier) = UNITS
            .iter()
            .find(|(name, _)| s[unit_at..].starts_with(name.as_bytes()))
            .map(|(name, m)| (unit_at + name.len(), *m))
            .unwrap_or((unit_at, default_unit_us));
        if after_unit == p && p < s.len() {
            return Err(invalid());
        }
        p = after_unit;
        if l >= USEC_INFINITY / multiplier {
            return Err(range());
        }
        let k = l * multiplier;
        if k >= USEC_INFINITY - usec {
            return Err(range());
        }
        usec += k;
        something = true;
        if has_fraction {
            let mut m = multiplier / 10;
            let mut b = e + 1;
            while b < s.len() && s[b].is_ascii_digit() {
                let k = u64::from(s[b] - b'0') * m;
                if k >= USEC_INFINITY - usec {
                    return Err(range());
                }
                usec += k;
                b += 1;
                m /= 10;
            }
            if b == e + 1 {
                return Err(invalid());
            }
        }
    }
    Ok(Timespan::from_micros(usec))
}

/// `parse_sec()`: [`parse_time`] with bare numbers in seconds, for `*Sec=` settings.
///
/// # Errors
/// As [`parse_time`].
pub fn parse_sec(t: &str) -> Result<Timespan, TimespanError> {
    parse_time(t, USEC_PER_SEC)
}

/// The contract's name for [`parse_sec`]: a time span with bare numbers in seconds.
///
/// # Errors
/// As [`parse_time`].
pub fn parse_timespan(t: &str) -> Result<Timespan, TimespanError> {
    parse_sec(t)
}

/// `parse_sec_fix_0()`: like [`parse_sec`] but `0` means infinity (no timeout), as for
/// `TimeoutStartSec=`/`TimeoutStopSec=`/`TimeoutSec=`.
///
/// # Errors
/// As [`parse_time`].
pub fn parse_sec_fix_0(t: &str) -> Result<Timespan, TimespanError> {
    match parse_sec(t)? {
        Timespan::Finite(d) if d.is_zero() => Ok(Timespan::Infinity),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(s: &str) -> u64 {
        parse_sec(s).unwrap().as_micros()
    }

    #[test]
    fn accepted_forms() {
        assert_eq!(us("5min 20s"), 320_000_000);
        assert_eq!(us("5min20s"), 320_000_000);
        assert_eq!(us("1h30m"), 5_400_000_000);
        assert_eq!(us("1h 30min"), 5_400_000_000);
        assert_eq!(us("1 2"), 3_000_000);
        assert_eq!(us("1.5h"), 5_400_000_000);
        assert_eq!(us(".5s"), 500_000);
        assert_eq!(us("0.5"), 500_000);
        assert_eq!(us("0.0000001s"), 0);
        assert_eq!(us("  10 ms "), 10_000);
        assert_eq!(us("5 min"), 300_000_000);
        assert_eq!(us("+5"), 5_000_000);
        assert_eq!(us("1M"), 2_629_800_000_000);
        assert_eq!(us("1y"), 31_557_600_000_000);
        assert_eq!(us("2w 1d"), 15 * 86_400_000_000);
        assert_eq!(us("3\u{b5}s 4\u{3bc}s 5us 6usec"), 18);
        assert_eq!(us("1s.5"), 1_500_000);
        assert_eq!(parse_sec(" infinity "), Ok(Timespan::Infinity));
        assert_eq!(
            parse_time("2", 60_000_000).unwrap().as_micros(),
            120_000_000
        );
        assert_eq!(parse_sec_fix_0("0"), Ok(Timespan::Infinity));
        assert_eq!(parse_sec_fix_0("0s 0ms").unwrap(), Timespan::Infinity);
        assert_eq!(parse_sec_fix_0("1s").unwrap().as_micros(), 1_000_000);
    }

    #[test]
    fn rejected_forms() {
        for bad in [
            "",
            " ",
            "5S",
            "5MIN",
            "Infinity",
            "infinity 5",
            "1e3",
            "5.",
            "3.sec",
            "12.34.56",
            "5ns",
            "5nsec",
            "abc",
            "5 x",
            "+-5",
            "5x",
        ] {
            assert!(
                matches!(parse_sec(bad), Err(TimespanError::Invalid(_))),
                "{bad:?} -> {:?}",
                parse_sec(bad)
            );
        }
        for bad in [
            "-1",
            " -0",
            "1 -1",
            "99999999999999999999",
            "584543y",
            "9223372036854775807us 9223372036854775807us 9223372036854775807us",
        ] {
            assert!(
                matches!(parse_sec(bad), Err(TimespanError::OutOfRange(_))),
                "{bad:?} -> {:?}",
                parse_sec(bad)
            );
        }
    }

    #[test]
    fn display() {
        assert_eq!(
            parse_sec("1h 30min 5.25s").unwrap().to_string(),
            "1h 30min 5s 250ms"
        );
        assert_eq!(Timespan::Infinity.to_string(), "infinity");
        assert_eq!(parse_sec("0").unwrap().to_string(), "0");
    }
}
