//! Millisecond timestamps and their RFC 3339 form (what etcd shows as `expiration`).
//!
//! The store never reads a clock: callers pass `now` as milliseconds since the Unix epoch.

/// Formats milliseconds since the Unix epoch as RFC 3339 in UTC with etcd's trimming of
/// trailing fractional zeros: `2026-11-25T12:41:36.084Z`, `2026-11-25T12:41:36Z`.
pub fn format_rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let frac = ms % 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
    if frac != 0 {
        let f = format!("{frac:03}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Parses an RFC 3339 timestamp (any offset, any fractional precision; sub-millisecond
/// digits are truncated) into milliseconds since the Unix epoch. `None` if malformed or
/// before the epoch.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &s[start..i.min(start + 3)];
        ms = digits.parse::<i64>().ok()? * 10i64.pow(3 - digits.len() as u32);
    }
    let offset_secs = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let v = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *sign == b'+' { v } else { -v }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let total = ((days * 86_400 + h * 3600 + mi * 60 + se - offset_secs) * 1000) + ms;
    u64::try_from(total).ok()
}

// Howard Hinnant's civil-calendar algorithms (public domain).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp as i64 + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// etcd's `ttl` for a node expiring at `expire_at` seen at `now`: the remaining time in
/// seconds rounded up, computed as Go does (truncating division, then +1 on a positive
/// remainder), so it is `<= 0` once expired.
pub(crate) fn ttl_seconds(expire_at: u64, now: u64) -> i64 {
    let diff = expire_at as i128 - now as i128;
    let mut t = diff / 1000;
    if diff % 1000 > 0 {
        t += 1;
    }
    t.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_etcd() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_rfc3339(1_795_610_496_084),
            "2026-11-25T12:41:36.084Z"
        );
        assert_eq!(format_rfc3339(1_795_610_496_100), "2026-11-25T12:41:36.1Z");
        assert_eq!(format_rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400_500), "2000-02-29T00:00:00.5Z");
    }

    #[test]
    fn parse_roundtrip_and_offsets() {
        for ms in [
            0,
            1,
            999,
            1_795_610_496_084,
            951_782_400_000,
            4_102_444_800_123,
        ] {
            assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Some(ms), "{ms}");
        }
        assert_eq!(
            parse_rfc3339("2026-11-25T12:41:36.084514131Z"),
            Some(1_795_610_496_084)
        );
        assert_eq!(
            parse_rfc3339("2026-11-25T13:41:36+01:00"),
            Some(1_795_610_496_000)
        );
        for bad in [
            "",
            "2026-11-25",
            "2026-13-25T12:41:36Z",
            "2026-11-25T12:41:36",
            "x026-11-25T12:41:36Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn ttl_rounds_like_go() {
        assert_eq!(ttl_seconds(10_000, 0), 10);
        assert_eq!(ttl_seconds(10_001, 0), 11);
        assert_eq!(ttl_seconds(1, 0), 1);
        assert_eq!(ttl_seconds(0, 0), 0);
        assert_eq!(ttl_seconds(0, 500), 0);
        assert_eq!(ttl_seconds(0, 1500), -1);
    }
}
