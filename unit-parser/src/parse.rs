//! The tokenizer: systemd 252's `config_parse()` and `parse_line()` restated over a byte
//! slice, hand-written for speed (one pass, no copies unless a line is continued).
//!
//! It yields one [`Logical`] per logical line, each covering an exact byte range of the
//! input; the ranges partition the input, which is what makes the document model lossless.

use std::borrow::Cow;

use crate::error::{Location, ParseError, WarningKind};

/// `LONG_LINE_MAX` in systemd's `def.h`.
pub(crate) const LONG_LINE_MAX: usize = 1 << 20;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One logical line and the raw bytes it was made of.
#[derive(Debug)]
pub(crate) struct Logical<'a> {
    /// Byte offset of the first physical line.
    pub(crate) start: usize,
    /// Byte offset just past the last physical line's terminator.
    pub(crate) end: usize,
    /// 1-based number of the first physical line.
    pub(crate) line: usize,
    /// 1-based byte column of the first non-blank character (1 for blank lines).
    pub(crate) column: usize,
    pub(crate) kind: Kind<'a>,
}

#[derive(Debug)]
pub(crate) enum Kind<'a> {
    /// A comment line (outside a continuation).
    Comment,
    /// Empty after trimming.
    Blank,
    /// `[name]`.
    Header(Cow<'a, str>),
    /// `key=value`, both trimmed.
    Assignment {
        key: Cow<'a, str>,
        value: Cow<'a, str>,
    },
    /// A line systemd ignores with a warning.
    Ignored(WarningKind),
}

/// A continuation being accumulated.
struct Pending {
    start: usize,
    line: usize,
    buf: Vec<u8>,
    /// (offset in `buf`, physical line, byte offset of the segment within that line) so
    /// errors inside a joined line point at the right physical place.
    segments: Vec<(usize, usize, usize)>,
}

/// Iterates over the logical lines of a unit file.
pub(crate) struct Tokenizer<'a> {
    bytes: &'a [u8],
    /// The whole input, when it is valid UTF-8 (noncharacters not yet checked).
    text: Option<&'a str>,
    /// The whole input is ASCII, so no line can hold a noncharacter.
    ascii: bool,
    pos: usize,
    line: usize,
    bom_seen: bool,
    in_section: bool,
    failed: bool,
    /// Set when the last logical line was a continuation still open at EOF.
    pub(crate) ended_open: bool,
}

impl<'a> Tokenizer<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        // One UTF-8 check of the whole file is much cheaper than one per line; lines then
        // borrow from it. Files with bad bytes (maybe only in comments, which is allowed)
        // fall back to per-line validation.
        let text = std::str::from_utf8(bytes).ok();
        Tokenizer {
            bytes,
            text,
            ascii: text.is_some_and(str::is_ascii),
            pos: 0,
            line: 0,
            bom_seen: false,
            in_section: false,
            failed: false,
            ended_open: false,
        }
    }

    /// The whole input as text, when it is valid UTF-8.
    pub(crate) fn text(&self) -> Option<&'a str> {
        self.text
    }

    /// Reads one physical line at `self.pos`: (content start, content end, next line start).
    fn physical(&self) -> Result<(usize, usize, usize), ParseError> {
        let start = self.pos;
        let limit = (start + LONG_LINE_MAX).min(self.bytes.len());
        let window = &self.bytes[start..limit];
        let content_end = match find_eol(window) {
            Some(i) => start + i,
            None if limit - start >= LONG_LINE_MAX => {
                return Err(ParseError::LineTooLong {
                    at: Location::new(self.line + 1, 1),
                    length: LONG_LINE_MAX,
                });
            }
            None => limit,
        };
        // read_line_full(): absorb further terminators as long as each kind appears once
        // and no NUL has been absorbed yet.
        let mut seen = 0u8;
        let mut j = content_end;
        while j < self.bytes.len() {
            if seen & 4 != 0 {
                break;
            }
            let kind = match self.bytes[j] {
                b'\n' => 1,
                b'\r' => 2,
                0 => 4,
                _ => break,
            };
            if seen & kind != 0 {
                break;
            }
            seen |= kind;
            j += 1;
        }
        Ok((start, content_end, j))
    }

    fn fail(&mut self, e: ParseError) -> Option<Result<Logical<'a>, ParseError>> {
        self.failed = true;
        Some(Err(e))
    }

    /// The next logical line, or `None` at the end (and after an error).
    pub(crate) fn next_logical(&mut self) -> Option<Result<Logical<'a>, ParseError>> {
        if self.failed {
            return None;
        }
        let mut pending: Option<Pending> = None;
        loop {
            if self.pos >= self.bytes.len() {
                // A continuation still open at EOF is parsed as it stands.
                let p = pending?;
                let end = self.pos;
                self.ended_open = true;
                return Some(self.finish_owned(p, end));
            }
            let (cstart, cend, next) = match self.physical() {
                Ok(r) => r,
                Err(e) => return self.fail(e),
            };
            self.line += 1;
            self.pos = next;
            let phys = &self.bytes[cstart..cend];
            // Comments are recognised before BOM removal and before continuation handling.
            let lead = phys.iter().position(|&b| b != b' ' && b != b'\t');
            if let Some(i) = lead
                && (phys[i] == b'#' || phys[i] == b';')
            {
                {
                    if pending.is_some() {
                        continue;
                    }
                    return Some(Ok(Logical {
                        start: cstart,
                        end: next,
                        line: self.line,
                        column: i + 1,
                        kind: Kind::Comment,
                    }));
                }
            }
            let mut seg = phys;
            let mut seg_off = 0;
            if !self.bom_seen && seg.starts_with(BOM) {
                seg = &seg[BOM.len()..];
                seg_off = BOM.len();
                self.bom_seen = true;
            }
            let continued = odd_trailing_backslashes(seg);
            match pending.as_mut() {
                Some(p) => {
                    if p.buf.len() + seg.len() > LONG_LINE_MAX {
                        let length = p.buf.len() + seg.len();
                        return self.fail(ParseError::ContinuationTooLong {
                            at: Location::new(self.line, 1),
                            length,
                        });
                    }
                    p.segments.push((p.buf.len(), self.line, seg_off));
                    p.buf.extend_from_slice(seg);
                    if continued {
                        if let Some(last) = p.buf.last_mut() {
                            *last = b' ';
                        }
                        continue;
                    }
                    let p = pending.take()?;
                    return Some(self.finish_owned(p, next));
                }
                None if continued => {
                    let mut buf = Vec::with_capacity(seg.len() * 2);
                    buf.extend_from_slice(seg);
                    if let Some(last) = buf.last_mut() {
                        *last = b' ';
                    }
                    pending = Some(Pending {
                        start: cstart,
                        line: self.line,
                        buf,
                        segments: vec![(0, self.line, seg_off)],
                    });
                }
                None => {
                    let line = self.line;
                    let r = self.finish(Cow::Borrowed(seg), cstart, next, line, &|off| {
                        (line, seg_off + off + 1)
                    });
                    return Some(r);
                }
            }
        }
    }

    fn finish_owned(&mut self, p: Pending, end: usize) -> Result<Logical<'a>, ParseError> {
        let segments = p.segments;
        let locate = move |off: usize| {
            let i = segments.partition_point(|s| s.0 <= off).saturating_sub(1);
            let (base, line, col) = segments.get(i).copied().unwrap_or((0, 0, 0));
            (line, col + off.saturating_sub(base) + 1)
        };
        let r = self.finish(Cow::Owned(p.buf), p.start, end, p.line, &locate);
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    /// `b[lo..hi]` (`b` a slice of the input) as validated text, borrowed from the
    /// pre-validated whole input when there is one.
    fn borrow_str(
        &self,
        b: &'a [u8],
        lo: usize,
        hi: usize,
    ) -> Result<&'a str, (usize, &'static str)> {
        let start = (b.as_ptr() as usize).wrapping_sub(self.bytes.as_ptr() as usize);
        match self.text.and_then(|t| t.get(start + lo..start + hi)) {
            Some(s) if self.ascii => Ok(s),
            Some(s) => check_noncharacters(s),
            None => validate(&b[lo..hi]),
        }
    }

    /// `parse_line()`: trim, validate UTF-8, then header / assignment / warning.
    fn finish(
        &mut self,
        text: Cow<'a, [u8]>,
        start: usize,
        end: usize,
        line: usize,
        locate: &dyn Fn(usize) -> (usize, usize),
    ) -> Result<Logical<'a>, ParseError> {
        let (lo, hi) = trim_bounds(&text);
        let column = locate(lo).1;
        let mk = |kind| Logical {
            start,
            end,
            line,
            column,
            kind,
        };
        if lo == hi {
            return Ok(Logical {
                column: 1,
                ..mk(Kind::Blank)
            });
        }
        let at = |off: usize| {
            let (l, c) = locate(off);
            Location::new(l, c)
        };
        let text: Cow<'a, str> = match text {
            Cow::Borrowed(b) => match self.borrow_str(b, lo, hi) {
                Ok(s) => Cow::Borrowed(s),
                Err((off, reason)) => {
                    self.failed = true;
                    return Err(ParseError::InvalidUtf8 {
                        at: at(lo + off),
                        reason,
                    });
                }
            },
            Cow::Owned(mut v) => {
                if let Err((off, reason)) = validate(&v[lo..hi]) {
                    self.failed = true;
                    return Err(ParseError::InvalidUtf8 {
                        at: at(lo + off),
                        reason,
                    });
                }
                v.truncate(hi);
                v.drain(..lo);
                match String::from_utf8(v) {
                    Ok(s) => Cow::Owned(s),
                    // Unreachable after `validate`, but an error beats a panic.
                    Err(_) => {
                        self.failed = true;
                        return Err(ParseError::InvalidUtf8 {
                            at: at(lo),
                            reason: "invalid",
                        });
                    }
                }
            }
        };
        if text.starts_with('[') {
            if text.len() < 2 || !text.ends_with(']') {
                self.failed = true;
                return Err(ParseError::InvalidSectionHeader {
                    at: at(lo),
                    header: text.into_owned(),
                });
            }
            if !string_is_safe(&text[1..text.len() - 1]) {
                self.failed = true;
                return Err(ParseError::BadSectionName {
                    at: at(lo),
                    header: text.into_owned(),
                });
            }
            self.in_section = true;
            let name = sub(text, 1, |s| s.len() - 1);
            return Ok(mk(Kind::Header(name)));
        }
        if !self.in_section {
            return Ok(mk(Kind::Ignored(WarningKind::OutsideSection)));
        }
        let Some(eq) = text.find('=') else {
            return Ok(mk(Kind::Ignored(WarningKind::MissingEquals)));
        };
        if eq == 0 {
            return Ok(mk(Kind::Ignored(WarningKind::EmptyKey)));
        }
        let (key, value) = match text {
            Cow::Borrowed(s) => (
                Cow::Borrowed(trim_ws(&s[..eq])),
                Cow::Borrowed(trim_ws(&s[eq + 1..])),
            ),
            Cow::Owned(s) => (
                Cow::Owned(trim_ws(&s[..eq]).to_owned()),
                Cow::Owned(trim_ws(&s[eq + 1..]).to_owned()),
            ),
        };
        Ok(mk(Kind::Assignment { key, value }))
    }
}

/// The systemd message for a warning kind.
pub(crate) fn warning_message(kind: WarningKind) -> &'static str {
    match kind {
        WarningKind::MissingEquals => "Missing '=', ignoring line.",
        WarningKind::EmptyKey => "Missing key name before '=', ignoring line.",
        WarningKind::OutsideSection => "Assignment outside of section. Ignoring.",
    }
}

fn sub<'a>(s: Cow<'a, str>, from: usize, to: impl Fn(&str) -> usize) -> Cow<'a, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(&b[from..to(b)]),
        Cow::Owned(o) => Cow::Owned(o[from..to(&o)].to_owned()),
    }
}

/// Position of the first LF, CR or NUL. This is the hot loop of the whole parser, so it
/// tests eight bytes at a time for any byte below 14 (SWAR "has less than"), and only
/// scans bytewise in the words that have one (tabs included).
#[inline]
fn find_eol(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let is_eol = |c: u8| c <= b'\r' && (c == b'\n' || c == b'\r' || c == 0);
    let mut chunks = b.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        if let Ok(word) = <[u8; 8]>::try_from(chunk) {
            let x = u64::from_le_bytes(word);
            if x.wrapping_sub(ONES * 14) & !x & HIGHS != 0
                && let Some(i) = chunk.iter().position(|&c| is_eol(c))
            {
                return Some(base + i);
            }
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&c| is_eol(c))
        .map(|i| base + i)
}

/// `strstrip()` bounds: systemd's WHITESPACE is space, tab, LF, CR (LF/CR never occur
/// inside a line).
fn trim_bounds(b: &[u8]) -> (usize, usize) {
    let is_ws = |c: &u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r');
    let lo = b.iter().position(|c| !is_ws(c)).unwrap_or(b.len());
    let hi = b.iter().rposition(|c| !is_ws(c)).map_or(lo, |i| i + 1);
    (lo, hi)
}

pub(crate) fn trim_ws(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))
}

/// Whether the line ends in an odd run of backslashes (the parity of systemd's `escaped`
/// scan), computed from the end so continued lines stay linear.
pub(crate) fn odd_trailing_backslashes(b: &[u8]) -> bool {
    b.iter().rev().take_while(|&&c| c == b'\\').count() % 2 == 1
}

/// systemd's `string_is_safe()`: no control characters 0x01-0x1F, no quotes, no backslash,
/// no DEL.
pub(crate) fn string_is_safe(s: &str) -> bool {
    !s.bytes()
        .any(|b| (1..0x20).contains(&b) || matches!(b, b'"' | b'\'' | b'\\' | 0x7f))
}

/// systemd's `unichar_is_valid()` on top of Rust's UTF-8 rules: also rejects the
/// noncharacters U+FDD0..U+FDEF and U+xxFFFE/U+xxFFFF.
pub(crate) fn is_noncharacter(c: char) -> bool {
    let c = c as u32;
    (0xFDD0..=0xFDEF).contains(&c) || (c & 0xFFFE) == 0xFFFE
}

/// Validates like systemd's `utf8_is_valid()`; on failure returns the byte offset and why.
pub(crate) fn validate(b: &[u8]) -> Result<&str, (usize, &'static str)> {
    let s = match std::str::from_utf8(b) {
        Ok(s) => s,
        Err(e) => return Err((e.valid_up_to(), "malformed, overlong or surrogate sequence")),
    };
    check_noncharacters(s)
}

fn check_noncharacters(s: &str) -> Result<&str, (usize, &'static str)> {
    if !s.is_ascii()
        && let Some((i, _)) = s.char_indices().find(|&(_, c)| is_noncharacter(c))
    {
        return Err((i, "Unicode noncharacter"));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(input: &[u8]) -> Result<Vec<String>, ParseError> {
        let mut t = Tokenizer::new(input);
        let mut out = Vec::new();
        while let Some(l) = t.next_logical() {
            let l = l?;
            out.push(match l.kind {
                Kind::Comment => "#".to_owned(),
                Kind::Blank => "_".to_owned(),
                Kind::Header(n) => format!("[{n}]"),
                Kind::Assignment { key, value } => format!("{key}={value}"),
                Kind::Ignored(k) => format!("!{k:?}"),
            });
        }
        Ok(out)
    }

    #[test]
    fn ranges_partition_the_input() {
        let input = b"\xEF\xBB\xBF# c\r\n[Unit]\nA=b \\\n # x\n  c\n\n\0B=\r\rX";
        let mut t = Tokenizer::new(input);
        let mut pos = 0;
        while let Some(l) = t.next_logical() {
            let l = l.unwrap();
            assert_eq!(l.start, pos);
            pos = l.end;
        }
        assert_eq!(pos, input.len());
    }

    #[test]
    fn line_ends() {
        assert_eq!(
            kinds(b"[A]\rk=v\r\nj=w\n\rx=y\0z=1").unwrap(),
            ["[A]", "k=v", "j=w", "x=y", "z=1"]
        );
        assert_eq!(kinds(b"[A]\n\nk=v").unwrap(), ["[A]", "_", "k=v"]);
        assert_eq!(kinds(b"[A]\r\rk=v").unwrap(), ["[A]", "_", "k=v"]);
        // After a NUL, a further LF starts a new (empty) line.
        assert_eq!(kinds(b"[A]\0\nk=v").unwrap(), ["[A]", "_", "k=v"]);
        assert_eq!(kinds(b"[A]\r\n\0k=v").unwrap(), ["[A]", "k=v"]);
    }

    #[test]
    fn continuation_joins_with_one_space_and_skips_comments() {
        assert_eq!(
            kinds(b"[A]\nk=one \\\n  two").unwrap(),
            ["[A]", "k=one    two"]
        );
        assert_eq!(kinds(b"[A]\nk=a\\\n# c\n;d\nb").unwrap(), ["[A]", "k=a b"]);
        assert_eq!(
            kinds(b"[A]\nk=a\\\\\nb=c").unwrap(),
            ["[A]", "k=a\\\\", "b=c"]
        );
        assert_eq!(kinds(b"[A]\nk=a\\").unwrap(), ["[A]", "k=a"]);
        assert_eq!(kinds(b"[A]\nk=a\\\n\nb=c").unwrap(), ["[A]", "k=a", "b=c"]);
        assert_eq!(kinds(b"[A]\n#c\\\nb=c").unwrap(), ["[A]", "#", "b=c"]);
    }

    #[test]
    fn noncharacters_are_rejected() {
        for s in [
            "\u{FDD0}",
            "\u{FDEF}",
            "\u{FFFE}",
            "\u{FFFF}",
            "\u{1FFFE}",
            "\u{10FFFF}",
        ] {
            let input = format!("[A]\nk={s}\n");
            assert!(
                matches!(kinds(input.as_bytes()), Err(ParseError::InvalidUtf8 { .. })),
                "{s:?}"
            );
        }
        assert!(kinds("[A]\nk=\u{FDCF}\u{FFFD}\n".as_bytes()).is_ok());
        assert!(kinds(b"[A]\n# \xff\n").is_ok());
        let e = kinds(b"[A]\nk=ab\xed\xa0\x80\n").unwrap_err();
        assert_eq!((e.line(), e.column()), (2, 5));
    }

    #[test]
    fn find_eol_matches_a_plain_scan() {
        let plain = |b: &[u8]| b.iter().position(|&c| c == b'\n' || c == b'\r' || c == 0);
        let mut buf = Vec::new();
        for len in 0..40 {
            for at in 0..=len {
                for t in [b'\n', b'\r', 0, b'\t', 0x0b, 0x0d + 1, 0x80, 0xff] {
                    buf.clear();
                    buf.extend(std::iter::repeat_n(b'a', len));
                    if at < len {
                        buf[at] = t;
                    }
                    assert_eq!(find_eol(&buf), plain(&buf), "{buf:?}");
                }
            }
        }
    }

    #[test]
    fn long_lines() {
        let mut ok = b"[A]\nk=".to_vec();
        ok.resize(4 + LONG_LINE_MAX - 1, b'x');
        assert!(kinds(&ok).is_ok());
        ok.push(b'x');
        assert!(matches!(kinds(&ok), Err(ParseError::LineTooLong { .. })));
    }
}
