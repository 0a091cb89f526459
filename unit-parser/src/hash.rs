//! fleet's unit hash: SHA-1 of the unit re-serialised from go-systemd's parse of it.
//!
//! fleet never hashes the file as written. It parses it with (its vendored) go-systemd
//! `unit.Deserialize`, then hashes `unit.Serialize` of the options: for each section in
//! order of first appearance, `[Section]` and then **all** of that section's options as
//! `Name=Value` lines (options of a repeated section are gathered under its first header),
//! with one blank line between sections. Comments, blank lines and spaces around `=` vanish.
//!
//! To give fleet's hash for every file, this module re-reads the unit's text with
//! go-systemd's lexer rules (not systemd's): continuation lines are kept verbatim
//! (backslash, newline and all), comment lines inside them belong to the value, lines
//! without `=` are an error, and a run of 2048 bytes without a line end is an error, checked
//! where go-systemd checks it (at its `bufio.Reader` buffer boundaries).
//!
//! ```
//! let unit = unit_parser::parse("# web\n[Service]\n  ExecStart = /bin/sleep 100\n")?;
//! // The hash fleet's own test expects for "[Service]\nExecStart=/bin/sleep 100\n".
//! let h = unit_parser::hash::fleet_hash(&unit)?;
//! assert_eq!(h.to_string(), "1c6fb6f3684bafb0c173d8b8b957ceff031180c1");
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use sha1::{Digest, Sha1};
use thiserror::Error;

use crate::UnitFile;

/// A unit content hash (SHA-1).
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnitHash(pub [u8; 20]);

impl UnitHash {
    /// The 20 bytes (fleet stores them as a JSON array of integers).
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// The first 7 hex digits, as `fleetctl list-unit-files` shows them.
    pub fn short(&self) -> String {
        self.to_string()[..7].to_owned()
    }

    /// Parses 40 hex digits.
    ///
    /// # Errors
    /// [`HashError::BadHex`] for anything else.
    pub fn from_hex(s: &str) -> Result<UnitHash, HashError> {
        let b = s.as_bytes();
        if b.len() != 40 {
            return Err(HashError::BadHex(s.to_owned()));
        }
        let mut out = [0u8; 20];
        for (i, pair) in b.chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16);
            let lo = (pair[1] as char).to_digit(16);
            match (hi, lo) {
                (Some(h), Some(l)) => out[i] = (h * 16 + l) as u8,
                _ => return Err(HashError::BadHex(s.to_owned())),
            }
        }
        Ok(UnitHash(out))
    }

    /// SHA-1 of arbitrary bytes.
    pub fn of_bytes(bytes: &[u8]) -> UnitHash {
        UnitHash(Sha1::digest(bytes).into())
    }
}

impl fmt::Display for UnitHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Why fleet could not hash (go-systemd could not parse) a unit; `Display` is go-systemd's
/// message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum HashError {
    /// More than 2048 bytes without a line end.
    #[error("line too long (max 2048 bytes)")]
    LineTooLong,
    /// `[` without a closing `]`.
    #[error("unable to find end of section")]
    UnterminatedSection,
    /// Text after `]` on a header line.
    #[error("found garbage after section name : {0}")]
    GarbageAfterSection(String),
    /// A line without `=` inside a section.
    #[error("unexpected newline encountered while parsing option name")]
    MissingEquals,
    /// The file ends inside an option name.
    #[error("EOF")]
    UnexpectedEof,
    /// Not 40 hex digits.
    #[error("invalid unit hash {0:?}")]
    BadHex(String),
}

/// One option as go-systemd delivers it. Section and value are bytes because go-systemd
/// keeps invalid UTF-8 in them verbatim (names are decoded, invalid bytes becoming U+FFFD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoOption {
    /// Section name.
    pub section: Vec<u8>,
    /// Option name (trimmed).
    pub name: String,
    /// Value: trimmed; continuation lines kept verbatim with their `\` and newlines.
    pub value: Vec<u8>,
}

impl GoOption {
    /// An option from UTF-8 parts (as the fleet API receives them).
    pub fn new(section: &str, name: &str, value: &str) -> GoOption {
        GoOption {
            section: section.as_bytes().to_vec(),
            name: name.to_owned(),
            value: value.as_bytes().to_vec(),
        }
    }
}

const LINE_MAX: usize = 2048;
const BUF_SIZE: usize = 4096;

/// A model of Go's `bufio.Reader` (4096-byte buffer) over an in-memory string: only the
/// read position and the end of the buffered data matter for go-systemd's length check.
struct GoReader<'a> {
    text: &'a [u8],
    pos: usize,
    /// Absolute offset of the end of buffered data.
    end: usize,
    /// The last fill hit the end of the source and has not been reported yet.
    err: bool,
    last_rune: usize,
}

impl<'a> GoReader<'a> {
    fn fill(&mut self) {
        let space = BUF_SIZE - (self.end - self.pos);
        let n = space.min(self.text.len() - self.end);
        if n == 0 {
            self.err = true;
        }
        self.end += n;
    }

    fn buffered(&self) -> usize {
        self.end - self.pos
    }

    fn read_rune(&mut self) -> Option<char> {
        while self.pos + 4 > self.end
            && !full_rune(&self.text[self.pos..self.end])
            && !self.err
            && self.buffered() < BUF_SIZE
        {
            self.fill();
        }
        self.last_rune = 0;
        if self.pos == self.end {
            self.err = false;
            return None;
        }
        let s = &self.text[self.pos..self.end];
        let (c, n) = match std::str::from_utf8(&s[..s.len().min(4)]) {
            Ok(t) => (t.chars().next()?, t.chars().next()?.len_utf8()),
            Err(e) if e.valid_up_to() > 0 => {
                let t = std::str::from_utf8(&s[..e.valid_up_to()]).ok()?;
                let c = t.chars().next()?;
                (c, c.len_utf8())
            }
            Err(_) => ('\u{fffd}', 1),
        };
        self.pos += n;
        self.last_rune = n;
        Some(c)
    }

    fn unread_rune(&mut self) {
        self.pos -= self.last_rune;
        self.last_rune = 0;
    }

    /// `ReadBytes(delim)`: up to and including `delim`, or to the end; `None` at EOF with
    /// nothing read... returns the bytes and whether EOF was hit.
    fn read_bytes(&mut self, delim: u8) -> (&'a [u8], bool) {
        self.last_rune = 0;
        let start = self.pos;
        let mut searched = self.pos;
        loop {
            if let Some(i) = self.text[searched..self.end]
                .iter()
                .position(|&b| b == delim)
            {
                self.pos = searched + i + 1;
                return (&self.text[start..self.pos], false);
            }
            if self.err {
                self.err = false;
                self.pos = self.end;
                return (&self.text[start..self.pos], true);
            }
            if self.buffered() >= BUF_SIZE {
                // ErrBufferFull: the fragment is kept and reading goes on.
                self.pos = self.end;
            }
            searched = self.end;
            self.fill();
        }
    }

    /// go-systemd's check before every lexer step.
    fn too_long(&self) -> bool {
        self.buffered() >= LINE_MAX
            && !self.text[self.pos..self.pos + LINE_MAX]
                .iter()
                .any(|&b| b == b'\r' || b == b'\n')
    }

    /// `toEOL()` (named `read_eol` here): a line without its `\n` (and a `\r` only if no `\n` follows it).
    fn read_eol(&mut self) -> (&'a [u8], bool) {
        let (mut line, eof) = self.read_bytes(b'\n');
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        if let [rest @ .., b'\n'] = line {
            line = rest;
        }
        (line, eof)
    }
}

fn full_rune(s: &[u8]) -> bool {
    match s.first() {
        None => false,
        Some(b) if *b < 0x80 => true,
        Some(b) => {
            let need = if *b >= 0xF0 {
                4
            } else if *b >= 0xE0 {
                3
            } else {
                2
            };
            s.len() >= need || std::str::from_utf8(s).is_err()
        }
    }
}

/// The character starting at `b[0]`, if `b` starts with valid UTF-8.
fn first_char(b: &[u8]) -> Option<char> {
    let n = b.len().min(4);
    match std::str::from_utf8(&b[..n]) {
        Ok(s) => s.chars().next(),
        Err(e) => std::str::from_utf8(&b[..e.valid_up_to()])
            .ok()?
            .chars()
            .next(),
    }
}

/// The character ending at `b[len-1]`, if `b` ends with valid UTF-8.
fn last_char(b: &[u8]) -> Option<char> {
    (1..=b.len().min(4)).find_map(|n| {
        std::str::from_utf8(&b[b.len() - n..])
            .ok()?
            .chars()
            .next_back()
    })
}

/// Go's `bytes.TrimSpace`: Unicode white space off both ends; invalid UTF-8 is not space.
fn go_trim(mut b: &[u8]) -> &[u8] {
    while let Some(c) = first_char(b).filter(|c| c.is_whitespace()) {
        b = &b[c.len_utf8()..];
    }
    while let Some(c) = last_char(b).filter(|c| c.is_whitespace()) {
        b = &b[..b.len() - c.len_utf8()];
    }
    b
}

enum Step {
    NextSection,
    SectionName,
    SectionSuffix(Vec<u8>),
    NextSectionOrOption(Vec<u8>),
    IgnoreLine(Box<Step>),
    OptionName(Vec<u8>),
    OptionValue(Vec<u8>, String, Vec<u8>),
}

/// Parses unit text exactly as go-systemd's `unit.Deserialize` (the copy vendored in fleet).
///
/// # Errors
/// go-systemd's error for text it refuses.
pub fn go_deserialize(text: &[u8]) -> Result<Vec<GoOption>, HashError> {
    let mut r = GoReader {
        text,
        pos: 0,
        end: 0,
        err: false,
        last_rune: 0,
    };
    let mut opts = Vec::new();
    let mut step = Step::NextSection;
    loop {
        if r.too_long() {
            return Err(HashError::LineTooLong);
        }
        step = match step {
            Step::NextSection => match r.read_rune() {
                None => return Ok(opts),
                Some('[') => Step::SectionName,
                Some('#' | ';') => Step::IgnoreLine(Box::new(Step::NextSection)),
                Some(_) => Step::NextSection,
            },
            Step::SectionName => {
                let (sec, eof) = r.read_bytes(b']');
                if eof {
                    return Err(HashError::UnterminatedSection);
                }
                Step::SectionSuffix(sec[..sec.len() - 1].to_vec())
            }
            Step::SectionSuffix(section) => {
                let (garbage, _) = r.read_eol();
                let g = go_trim(garbage);
                if !g.is_empty() {
                    let list: Vec<String> = g.iter().map(|b| b.to_string()).collect();
                    return Err(HashError::GarbageAfterSection(format!(
                        "[{}]",
                        list.join(" ")
                    )));
                }
                Step::NextSectionOrOption(section)
            }
            Step::NextSectionOrOption(section) => match r.read_rune() {
                None => return Ok(opts),
                Some(c) if c.is_whitespace() => Step::NextSectionOrOption(section),
                Some('[') => Step::SectionName,
                Some('#' | ';') => Step::IgnoreLine(Box::new(Step::NextSectionOrOption(section))),
                Some(_) => {
                    r.unread_rune();
                    Step::OptionName(section)
                }
            },
            Step::IgnoreLine(next) => {
                loop {
                    let (line, _) = r.read_eol();
                    let line = line.strip_suffix(b" ").unwrap_or(line);
                    if !line.ends_with(b"\\") {
                        break;
                    }
                }
                *next
            }
            Step::OptionName(section) => {
                let mut name = String::new();
                loop {
                    match r.read_rune() {
                        None => return Err(HashError::UnexpectedEof),
                        Some('\n' | '\r') => return Err(HashError::MissingEquals),
                        Some('=') => break,
                        Some(c) => name.push(c),
                    }
                }
                let name = name.trim_matches(char::is_whitespace).to_owned();
                Step::OptionValue(section, name, Vec::new())
            }
            Step::OptionValue(section, name, mut partial) => {
                let mut more = false;
                let (line, eof) = r.read_eol();
                if !go_trim(line).is_empty() {
                    partial.extend_from_slice(line);
                    if line.last() == Some(&b'\\') {
                        if !eof {
                            partial.push(b'\n');
                        }
                        more = true;
                    }
                }
                if more {
                    Step::OptionValue(section, name, partial)
                } else {
                    let mut value = go_trim(&partial).to_vec();
                    if partial.ends_with(b"\n") {
                        value.push(b'\n');
                    }
                    opts.push(GoOption {
                        section: section.clone(),
                        name,
                        value,
                    });
                    Step::NextSectionOrOption(section)
                }
            }
        };
    }
}

/// go-systemd's `unit.Serialize`: options grouped by section (first-appearance order),
/// `[Section]`, `Name=Value` lines, a blank line between sections.
pub fn go_serialize(opts: &[GoOption]) -> Vec<u8> {
    let mut sections: Vec<(&[u8], Vec<&GoOption>)> = Vec::new();
    for o in opts {
        match sections
            .iter_mut()
            .find(|(s, _)| *s == o.section.as_slice())
        {
            Some((_, v)) => v.push(o),
            None => sections.push((&o.section, vec![o])),
        }
    }
    let mut out = Vec::new();
    for (i, (name, opts)) in sections.iter().enumerate() {
        out.push(b'[');
        out.extend_from_slice(name);
        out.extend_from_slice(b"]\n");
        for o in opts {
            out.extend_from_slice(o.name.as_bytes());
            out.push(b'=');
            out.extend_from_slice(&o.value);
            out.push(b'\n');
        }
        if i + 1 < sections.len() {
            out.push(b'\n');
        }
    }
    out
}

/// The normalised text fleet stores in the registry and `fleetctl cat` prints.
///
/// # Errors
/// [`HashError`] when go-systemd (and so fleet) cannot parse the unit.
pub fn fleet_normalized(unit: &UnitFile) -> Result<Vec<u8>, HashError> {
    Ok(go_serialize(&go_deserialize(&unit.to_bytes())?))
}

/// fleet's hash of a unit file.
///
/// # Errors
/// [`HashError`] when go-systemd (and so fleet) cannot parse the unit.
pub fn fleet_hash(unit: &UnitFile) -> Result<UnitHash, HashError> {
    Ok(UnitHash::of_bytes(&fleet_normalized(unit)?))
}

/// fleet's hash of a unit file's bytes (what fleetctl computes for a local file, including
/// files systemd itself would refuse).
///
/// # Errors
/// [`HashError`] when go-systemd cannot parse the text.
pub fn fleet_hash_bytes(text: &[u8]) -> Result<UnitHash, HashError> {
    Ok(UnitHash::of_bytes(&go_serialize(&go_deserialize(text)?)))
}

/// fleet's hash of a unit given as options (as the fleet API receives them).
pub fn fleet_hash_options(opts: &[GoOption]) -> UnitHash {
    UnitHash::of_bytes(&go_serialize(opts))
}

/// fleet's submit-time check: does re-parsing the serialised unit fail (over-long line)?
pub(crate) fn go_reparse_too_long(unit: &UnitFile) -> bool {
    match go_deserialize(&unit.to_bytes()) {
        Ok(opts) => matches!(
            go_deserialize(&go_serialize(&opts)),
            Err(HashError::LineTooLong)
        ),
        Err(e) => e == HashError::LineTooLong,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(text: &str) -> Vec<(String, String, String)> {
        go_deserialize(text.as_bytes())
            .unwrap()
            .into_iter()
            .map(|o| {
                let s = String::from_utf8(o.section).unwrap();
                (s, o.name, String::from_utf8(o.value).unwrap())
            })
            .collect()
    }

    #[test]
    fn known_hashes() {
        // fleet's unit/unit_test.go TestUnitHash.
        let h = fleet_hash_bytes(b"[Service]\nExecStart=/bin/sleep 100\n").unwrap();
        assert_eq!(h.to_string(), "1c6fb6f3684bafb0c173d8b8b957ceff031180c1");
        assert_eq!(h.short(), "1c6fb6f");
        assert_eq!(UnitHash::from_hex(&h.to_string()), Ok(h));
        assert_eq!(
            fleet_hash_bytes(b"").unwrap().to_string(),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        // Formatting differences vanish.
        let messy = "# c\n\n[Service]\n  ExecStart = /bin/sleep 100   \n\n\n";
        assert_eq!(fleet_hash_bytes(messy.as_bytes()).unwrap(), h);
        assert!(UnitHash::from_hex("xyz").is_err());
        // Invalid UTF-8 in values is hashed verbatim, as Go keeps the bytes.
        let raw = fleet_hash_bytes(b"[S]\nA=\xff\xfe \n").unwrap();
        assert_eq!(raw, UnitHash::of_bytes(b"[S]\nA=\xff\xfe\n"));
    }

    #[test]
    fn go_lexer_rules() {
        assert_eq!(
            opts("[Unit]\nDescription = Foo\n[Service]\nA=1\nA=2\n[Unit]\nAfter=x\n"),
            [
                ("Unit".into(), "Description".into(), "Foo".into()),
                ("Service".into(), "A".into(), "1".into()),
                ("Service".into(), "A".into(), "2".into()),
                ("Unit".into(), "After".into(), "x".into()),
            ]
        );
        assert_eq!(
            go_serialize(&go_deserialize(b"[Unit]\nA=1\n[Service]\nB=2\n[Unit]\nC=3\n").unwrap()),
            b"[Unit]\nA=1\nC=3\n\n[Service]\nB=2\n"
        );
        // Continuations are kept verbatim, comments inside them too.
        assert_eq!(opts("[S]\nA=a \\\n# x \\\nb\n")[0].2, "a \\\n# x \\\nb");
        assert_eq!(opts("[S]\nA=a \\\n\nB=c\n")[0].2, "a \\\n");
        assert_eq!(opts("[S]\nA=a\\")[0].2, "a\\");
        assert_eq!(opts("K=v\n[S]\nA=1\n").len(), 1);
        assert_eq!(opts("[S]\r\nA=1\r\n")[0].2, "1");
        assert_eq!(
            go_deserialize(b"[S]\nnonsense\n"),
            Err(HashError::MissingEquals)
        );
        assert_eq!(go_deserialize(b"[S]\nA"), Err(HashError::UnexpectedEof));
        assert_eq!(go_deserialize(b"[S"), Err(HashError::UnterminatedSection));
        assert_eq!(
            go_deserialize(b"[S] x\n").unwrap_err().to_string(),
            "found garbage after section name : [120]"
        );
        let long = format!("[S]\nA={}\n", "x".repeat(3000));
        assert_eq!(go_deserialize(long.as_bytes()), Err(HashError::LineTooLong));
        let ok = format!("[S]\nA={}\n", "x".repeat(2000));
        assert!(go_deserialize(ok.as_bytes()).is_ok());
    }
}
