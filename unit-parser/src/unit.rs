//! The lossless document model ([`UnitFile`]) and the borrowing view ([`UnitView`]).

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

use crate::error::{EditError, Location, ParseError, Warning};
use crate::parse::{self, Kind, Tokenizer};

/// A parsed unit file that remembers every byte it was made of.
///
/// Sections and entries are kept in file order with duplicates; comments, blank lines,
/// ignored lines and the exact line terminators are kept as raw text, so an unmodified file
/// serializes ([`UnitFile::to_bytes`], or `Display` for text input) to exactly its input.
/// Edits ([`set`](UnitFile::set), [`append`](UnitFile::append),
/// [`remove`](UnitFile::remove), [`add_section`](UnitFile::add_section)) rewrite only the
/// lines they touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    /// Lines before the first section header (comments, blanks, ignored assignments).
    preamble: Vec<Trivia>,
    sections: Vec<Section>,
    warnings: Vec<Warning>,
    /// Line terminator used for lines added by edits (the file's first one, else LF).
    newline: &'static str,
}

impl Default for UnitFile {
    /// An empty document; lines added to it end in LF.
    fn default() -> Self {
        UnitFile {
            preamble: Vec::new(),
            sections: Vec::new(),
            warnings: Vec::new(),
            newline: "\n",
        }
    }
}

/// A `[Name]` section: its header line and the lines up to the next header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    name: String,
    line: usize,
    header_raw: Vec<u8>,
    items: Vec<Item>,
}

/// One line of a section, kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Entry(Entry),
    Trivia(Trivia),
}

/// Comment, blank or ignored line(s).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Trivia {
    raw: Vec<u8>,
}

/// One `Key=value` assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    repr: Repr,
    line: usize,
}

/// How an entry keeps its text. Most entries are one physical line: one allocation holds
/// the raw line and the key and value are ranges of it. Joined continuations (whose raw
/// text may hold comment lines with arbitrary bytes) and edited entries own each part.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Repr {
    Line {
        raw: String,
        key: std::ops::Range<usize>,
        value: std::ops::Range<usize>,
    },
    Owned {
        raw: Vec<u8>,
        key: String,
        value: String,
    },
}

impl Entry {
    fn owned(key: &str, value: &str, raw: Vec<u8>, line: usize) -> Entry {
        Entry {
            repr: Repr::Owned {
                raw,
                key: key.to_owned(),
                value: value.to_owned(),
            },
            line,
        }
    }

    /// Builds a [`Repr::Line`] when `key` and `value` are slices of `raw` (same memory),
    /// otherwise an owned entry.
    fn from_parts(
        raw: Option<&str>,
        raw_bytes: &[u8],
        key: &str,
        value: &str,
        line: usize,
    ) -> Entry {
        let range_of = |raw: &str, part: &str| {
            let start = (part.as_ptr() as usize).checked_sub(raw.as_ptr() as usize)?;
            let r = start..start + part.len();
            (raw.get(r.clone()) == Some(part)).then_some(r)
        };
        if let Some(raw) = raw
            && let (Some(k), Some(v)) = (range_of(raw, key), range_of(raw, value))
        {
            return Entry {
                repr: Repr::Line {
                    raw: raw.to_owned(),
                    key: k,
                    value: v,
                },
                line,
            };
        }
        Entry::owned(key, value, raw_bytes.to_vec(), line)
    }

    fn raw_mut(&mut self) -> &mut Vec<u8> {
        if let Repr::Line { raw, key, value } = &self.repr {
            let owned = Repr::Owned {
                raw: raw.as_bytes().to_vec(),
                key: raw[key.clone()].to_owned(),
                value: raw[value.clone()].to_owned(),
            };
            self.repr = owned;
        }
        match &mut self.repr {
            Repr::Owned { raw, .. } => raw,
            // Converted just above.
            Repr::Line { .. } => unreachable!("entry converted to owned form"),
        }
    }
}

impl Entry {
    /// The key, trimmed (case-sensitive; may contain spaces and any character but `=`).
    pub fn key(&self) -> &str {
        match &self.repr {
            Repr::Line { raw, key, .. } => &raw[key.clone()],
            Repr::Owned { key, .. } => key,
        }
    }

    /// The value as systemd delivers it: continuations joined with one space, comment
    /// lines inside them dropped, surrounding whitespace trimmed, nothing unescaped.
    pub fn value(&self) -> &str {
        match &self.repr {
            Repr::Line { raw, value, .. } => &raw[value.clone()],
            Repr::Owned { value, .. } => value,
        }
    }

    /// 1-based line where the assignment starts (0 for entries added by an edit).
    pub fn line(&self) -> usize {
        self.line
    }

    /// The raw bytes of the assignment, including continuation lines, comment lines inside
    /// them and the line terminator.
    pub fn raw(&self) -> &[u8] {
        match &self.repr {
            Repr::Line { raw, .. } => raw.as_bytes(),
            Repr::Owned { raw, .. } => raw,
        }
    }
}

impl Section {
    /// The section name, without brackets (case-sensitive, may be empty).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// 1-based line of the header (0 for sections added by an edit).
    pub fn line(&self) -> usize {
        self.line
    }

    /// The assignments of this section in file order, duplicates included.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.items.iter().filter_map(|i| match i {
            Item::Entry(e) => Some(e),
            Item::Trivia(_) => None,
        })
    }

    /// The last value assigned to `key` in this section.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries()
            .filter(|e| e.key() == key)
            .last()
            .map(|e| e.value())
    }

    fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.header_raw);
        for item in &self.items {
            out.extend_from_slice(item.raw());
        }
    }
}

impl Item {
    fn raw(&self) -> &[u8] {
        match self {
            Item::Entry(e) => e.raw(),
            Item::Trivia(t) => &t.raw,
        }
    }

    fn raw_mut(&mut self) -> &mut Vec<u8> {
        match self {
            Item::Entry(e) => e.raw_mut(),
            Item::Trivia(t) => &mut t.raw,
        }
    }
}

fn first_newline(bytes: &[u8]) -> &'static str {
    match bytes
        .iter()
        .position(|&c| c == b'\n' || c == b'\r' || c == 0)
    {
        Some(i) if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') => "\r\n",
        Some(i) if bytes[i] == b'\r' => "\r",
        _ => "\n",
    }
}

impl UnitFile {
    /// Parses unit file text. Same as [`crate::parse`].
    ///
    /// # Errors
    ///
    /// A [`ParseError`] when systemd would refuse to load the file.
    #[allow(clippy::should_implement_trait)]
    pub fn parse(text: &str) -> Result<UnitFile, ParseError> {
        Self::parse_bytes(text.as_bytes())
    }

    /// Parses raw bytes, validating UTF-8 line by line exactly as systemd does (invalid
    /// bytes are fatal except inside comment lines).
    ///
    /// # Errors
    ///
    /// A [`ParseError`] when systemd would refuse to load the file.
    pub fn parse_bytes(bytes: &[u8]) -> Result<UnitFile, ParseError> {
        let mut doc = UnitFile {
            newline: first_newline(bytes),
            ..UnitFile::default()
        };
        let mut tok = Tokenizer::new(bytes);
        while let Some(l) = tok.next_logical() {
            let l = l?;
            let raw = &bytes[l.start..l.end];
            match l.kind {
                Kind::Header(name) => doc.sections.push(Section {
                    name: name.into_owned(),
                    line: l.line,
                    header_raw: raw.to_vec(),
                    items: Vec::new(),
                }),
                Kind::Assignment { key, value } => {
                    let raw_text = match tok.text() {
                        Some(t) => t.get(l.start..l.end),
                        None => std::str::from_utf8(raw).ok(),
                    };
                    let entry = Entry::from_parts(raw_text, raw, &key, &value, l.line);
                    // The tokenizer only yields assignments inside a section.
                    if let Some(s) = doc.sections.last_mut() {
                        s.items.push(Item::Entry(entry));
                    }
                }
                Kind::Comment | Kind::Blank | Kind::Ignored(_) => {
                    if let Kind::Ignored(kind) = l.kind {
                        doc.warnings.push(Warning {
                            at: Location::new(l.line, l.column),
                            kind,
                            message: parse::warning_message(kind).to_owned(),
                        });
                    }
                    // Consecutive comment/blank lines share one buffer.
                    match doc.sections.last_mut() {
                        Some(s) => match s.items.last_mut() {
                            Some(Item::Trivia(t)) => t.raw.extend_from_slice(raw),
                            _ => s.items.push(Item::Trivia(Trivia { raw: raw.to_vec() })),
                        },
                        None => match doc.preamble.last_mut() {
                            Some(t) => t.raw.extend_from_slice(raw),
                            None => doc.preamble.push(Trivia { raw: raw.to_vec() }),
                        },
                    }
                }
            }
        }
        Ok(doc)
    }

    /// Reads and parses a file; errors and warnings carry its path.
    ///
    /// # Errors
    ///
    /// [`ParseError::Io`] if it cannot be read, otherwise as [`UnitFile::parse_bytes`].
    pub fn from_path(path: impl AsRef<Path>) -> Result<UnitFile, ParseError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| ParseError::io(path, e))?;
        let mut doc = Self::parse_bytes(&bytes).map_err(|e| e.with_path(path))?;
        for w in &mut doc.warnings {
            w.at.path = Some(path.to_path_buf());
        }
        Ok(doc)
    }

    /// The sections in file order (a name may repeat).
    pub fn sections(&self) -> impl Iterator<Item = &Section> {
        self.sections.iter()
    }

    /// Every `(section, entry)` in file order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.sections
            .iter()
            .flat_map(|s| s.entries().map(move |e| (s.name(), e)))
    }

    /// The entries assigning `key` in every section named `section`, in file order.
    pub fn assignments<'s, 'q>(
        &'s self,
        section: &'q str,
        key: &'q str,
    ) -> impl Iterator<Item = &'s Entry> + use<'s, 'q> {
        self.sections
            .iter()
            .filter(move |s| s.name == section)
            .flat_map(move |s| s.entries().filter(move |e| e.key() == key))
    }

    /// The value of a single-valued setting: the last assignment wins (an empty assignment
    /// yields `Some("")`, which settings treat as "reset to default").
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.assignments(section, key).last().map(Entry::value)
    }

    /// The values of a list setting: every assignment in order, an empty assignment
    /// clearing what came before. Splitting values into words is up to the caller.
    pub fn get_list(&self, section: &str, key: &str) -> Vec<&str> {
        let mut out = Vec::new();
        for e in self.assignments(section, key) {
            if e.value().is_empty() {
                out.clear();
            } else {
                out.push(e.value());
            }
        }
        out
    }

    /// Recoverable problems (ignored lines), in file order.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// The document as bytes: exactly the input for an unmodified file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for t in &self.preamble {
            out.extend_from_slice(&t.raw);
        }
        for s in &self.sections {
            s.write_to(&mut out);
        }
        out
    }

    /// Writes [`UnitFile::to_bytes`] to `w`.
    ///
    /// # Errors
    ///
    /// Whatever `w` returns.
    pub fn write_to(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        w.write_all(&self.to_bytes())
    }

    /// Sets a single-valued setting: rewrites the last assignment of `key` in `section`
    /// (keeping its line terminator and the surrounding lines), or appends one, adding the
    /// section at the end if there is none.
    ///
    /// # Errors
    ///
    /// [`EditError`] if the key, value or section could not be written so that it reads
    /// back unchanged.
    pub fn set(&mut self, section: &str, key: &str, value: &str) -> Result<(), EditError> {
        check_key(key)?;
        check_value(value)?;
        let found = self
            .sections
            .iter_mut()
            .rev()
            .filter(|s| s.name == section)
            .find_map(|s| {
                s.items.iter_mut().rev().find_map(|i| match i {
                    Item::Entry(e) if e.key() == key => Some(e),
                    _ => None,
                })
            });
        match found {
            Some(e) => {
                let mut raw = format!("{key}={value}").into_bytes();
                raw.extend_from_slice(trailing_terminator(e.raw()));
                *e = Entry::owned(key, value, raw, e.line);
                Ok(())
            }
            None => self.append(section, key, value),
        }
    }

    /// Appends an assignment after the last assignment of the last section named `section`
    /// (adding the section at the end if there is none). For list settings this adds an
    /// element; an empty `value` resets the list.
    ///
    /// # Errors
    ///
    /// [`EditError`] as for [`UnitFile::set`].
    pub fn append(&mut self, section: &str, key: &str, value: &str) -> Result<(), EditError> {
        check_key(key)?;
        check_value(value)?;
        let idx = match self.sections.iter().rposition(|s| s.name == section) {
            Some(i) => i,
            None => {
                self.add_section(section)?;
                self.sections.len() - 1
            }
        };
        let nl = self.newline;
        let s = &self.sections[idx];
        let pos = s
            .items
            .iter()
            .rposition(|i| matches!(i, Item::Entry(_)))
            .map_or(0, |p| p + 1);
        let is_tail = idx + 1 == self.sections.len() && pos == s.items.len();
        let s = &mut self.sections[idx];
        let prev = if pos == 0 {
            &mut s.header_raw
        } else {
            s.items[pos - 1].raw_mut()
        };
        close_line(prev, nl, is_tail);
        let raw = format!("{key}={value}{nl}").into_bytes();
        let entry = Entry::owned(key, value, raw, 0);
        s.items.insert(pos, Item::Entry(entry));
        Ok(())
    }

    /// Removes every assignment of `key` in sections named `section`; returns how many.
    pub fn remove(&mut self, section: &str, key: &str) -> usize {
        let mut n = 0;
        for s in self.sections.iter_mut().filter(|s| s.name == section) {
            s.items.retain(|i| match i {
                Item::Entry(e) if e.key() == key => {
                    n += 1;
                    false
                }
                _ => true,
            });
        }
        n
    }

    /// Adds an empty `[name]` section at the end of the file, after a blank line.
    ///
    /// # Errors
    ///
    /// [`EditError::InvalidSection`] if systemd would refuse the header.
    pub fn add_section(&mut self, name: &str) -> Result<(), EditError> {
        if !parse::string_is_safe(name)
            || name.contains(['\n', '\r', '\0'])
            || parse::validate(name.as_bytes()).is_err()
        {
            return Err(EditError::InvalidSection(name.to_owned()));
        }
        let nl = self.newline;
        let prev = match self.sections.last_mut() {
            Some(s) => Some(match s.items.last_mut() {
                Some(i) => i.raw_mut(),
                None => &mut s.header_raw,
            }),
            None => self.preamble.last_mut().map(|t| &mut t.raw),
        };
        if let Some(prev) = prev {
            close_line(prev, nl, true);
            // A blank line between sections, written with the same terminator byte as the
            // previous line so the two cannot merge into a single line end.
            if let Some(&last) = prev.last() {
                prev.push(last);
            }
        }
        self.sections.push(Section {
            name: name.to_owned(),
            line: 0,
            header_raw: format!("[{name}]{nl}").into_bytes(),
            items: Vec::new(),
        });
        Ok(())
    }
}

/// Makes sure `raw` ends with a line terminator; if it is the last line of the file and an
/// unterminated continuation (a trailing odd backslash at EOF), also ends that
/// continuation with an empty line so what follows is not appended to it.
fn close_line(raw: &mut Vec<u8>, nl: &str, is_tail: bool) {
    if is_tail && raw_is_open(raw) {
        if trailing_terminator(raw).is_empty() {
            raw.extend_from_slice(nl.as_bytes());
        }
        if let Some(&last) = raw.last() {
            raw.push(last);
        }
        return;
    }
    if trailing_terminator(raw).is_empty() {
        raw.extend_from_slice(nl.as_bytes());
    }
}

/// Whether `raw` (one logical line) ends in a continuation still open at EOF.
fn raw_is_open(raw: &[u8]) -> bool {
    let mut tok = Tokenizer::new(raw);
    while let Some(Ok(_)) = tok.next_logical() {}
    tok.ended_open
}

fn trailing_terminator(raw: &[u8]) -> &[u8] {
    let n = raw
        .iter()
        .rev()
        .take_while(|&&c| c == b'\n' || c == b'\r' || c == 0)
        .count();
    &raw[raw.len() - n..]
}

fn check_key(key: &str) -> Result<(), EditError> {
    let bad = key.is_empty()
        || key.contains(['=', '\n', '\r', '\0'])
        || key.starts_with(['[', '#', ';'])
        || parse::trim_ws(key) != key
        || parse::validate(key.as_bytes()).is_err()
        || parse::odd_trailing_backslashes(key.as_bytes());
    if bad {
        Err(EditError::InvalidKey(key.to_owned()))
    } else {
        Ok(())
    }
}

fn check_value(value: &str) -> Result<(), EditError> {
    let bad = value.contains(['\n', '\r', '\0'])
        || parse::trim_ws(value) != value
        || parse::validate(value.as_bytes()).is_err()
        || parse::odd_trailing_backslashes(value.as_bytes());
    if bad {
        Err(EditError::InvalidValue(value.to_owned()))
    } else {
        Ok(())
    }
}

impl fmt::Display for UnitFile {
    /// Writes the document losslessly. Input given as `&str` round-trips exactly; bytes
    /// that are not UTF-8 (possible only inside comments read by
    /// [`UnitFile::parse_bytes`]) are shown as U+FFFD here; use [`UnitFile::to_bytes`]
    /// for those.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

impl std::str::FromStr for UnitFile {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UnitFile::parse(s)
    }
}

/// One `(section, key, value)` triple of a [`UnitView`], borrowed from the input whenever no
/// continuation had to be joined.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewEntry<'a> {
    /// The section name.
    pub section: Cow<'a, str>,
    /// The key.
    pub key: Cow<'a, str>,
    /// The value as systemd delivers it.
    pub value: Cow<'a, str>,
    /// 1-based line where the assignment starts.
    pub line: usize,
}

/// The fast, read-only view: every `(section, key, value)` in file order, zero-copy where
/// possible. Use it when comments and layout do not matter.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitView<'a> {
    entries: Vec<ViewEntry<'a>>,
    warnings: Vec<Warning>,
}

impl<'a> UnitView<'a> {
    /// Parses text into a view.
    ///
    /// # Errors
    ///
    /// A [`ParseError`] when systemd would refuse the file.
    #[allow(clippy::should_implement_trait)]
    pub fn parse(text: &'a str) -> Result<UnitView<'a>, ParseError> {
        Self::parse_bytes(text.as_bytes())
    }

    /// Parses bytes into a view (UTF-8 validated as systemd does).
    ///
    /// # Errors
    ///
    /// A [`ParseError`] when systemd would refuse the file.
    pub fn parse_bytes(bytes: &'a [u8]) -> Result<UnitView<'a>, ParseError> {
        let mut view = UnitView {
            entries: Vec::with_capacity(bytes.len() / 32),
            ..Default::default()
        };
        let mut tok = Tokenizer::new(bytes);
        let mut section: Cow<'a, str> = Cow::Borrowed("");
        while let Some(l) = tok.next_logical() {
            let l = l?;
            match l.kind {
                Kind::Header(name) => section = name,
                Kind::Assignment { key, value } => view.entries.push(ViewEntry {
                    section: section.clone(),
                    key,
                    value,
                    line: l.line,
                }),
                Kind::Ignored(kind) => view.warnings.push(Warning {
                    at: Location::new(l.line, l.column),
                    kind,
                    message: parse::warning_message(kind).to_owned(),
                }),
                Kind::Comment | Kind::Blank => {}
            }
        }
        Ok(view)
    }

    /// The triples in file order.
    pub fn entries(&self) -> &[ViewEntry<'a>] {
        &self.entries
    }

    /// Last assignment of `key` in `section`.
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.section == section && e.key == key)
            .map(|e| &*e.value)
    }

    /// All assignments of `key` in `section`, an empty one clearing the list.
    pub fn get_list(&self, section: &str, key: &str) -> Vec<&str> {
        let mut out = Vec::new();
        for e in self
            .entries
            .iter()
            .filter(|e| e.section == section && e.key == key)
        {
            if e.value.is_empty() {
                out.clear();
            } else {
                out.push(&*e.value);
            }
        }
        out
    }

    /// Recoverable problems, in file order.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }
}

impl From<&UnitView<'_>> for UnitFile {
    /// Builds a canonical document (`[Section]` headers and `key=value` lines) from a view.
    fn from(view: &UnitView<'_>) -> UnitFile {
        let mut doc = UnitFile {
            newline: "\n",
            ..UnitFile::default()
        };
        for e in &view.entries {
            if doc.sections.last().is_none_or(|s| s.name != *e.section) {
                doc.sections.push(Section {
                    name: e.section.clone().into_owned(),
                    line: 0,
                    header_raw: format!("[{}]\n", e.section).into_bytes(),
                    items: Vec::new(),
                });
            }
            if let Some(s) = doc.sections.last_mut() {
                let raw = format!("{}={}\n", e.key, e.value).into_bytes();
                s.items
                    .push(Item::Entry(Entry::owned(&e.key, &e.value, raw, e.line)));
            }
        }
        doc
    }
}

impl UnitFile {
    /// Appends the sections of `other` (its preamble is dropped, as systemd ignores it) and
    /// its warnings. Used to merge drop-ins after the main fragment.
    pub fn extend(&mut self, other: UnitFile) {
        if let Some(prev) = self.sections.last_mut().map(|s| match s.items.last_mut() {
            Some(i) => i.raw_mut(),
            None => &mut s.header_raw,
        }) {
            close_line(prev, self.newline, true);
        }
        self.sections.extend(other.sections);
        self.warnings.extend(other.warnings);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# top\r\n[Unit]\r\nDescription=Hello \\\r\n  # inner\r\n world\r\n\r\nAfter=a.service\r\nAfter=\r\nAfter=b.service c.service\r\n[Service]\r\nExecStart=/bin/true ; keep\r\n[Unit]\r\nAfter=d.service";

    #[test]
    fn round_trip_and_lookups() {
        let doc = UnitFile::parse(SAMPLE).unwrap();
        assert_eq!(doc.to_string(), SAMPLE);
        assert_eq!(doc.get("Unit", "Description"), Some("Hello   world"));
        assert_eq!(
            doc.get_list("Unit", "After"),
            ["b.service c.service", "d.service"]
        );
        assert_eq!(doc.get("Unit", "After"), Some("d.service"));
        assert_eq!(doc.get("Service", "ExecStart"), Some("/bin/true ; keep"));
        let names: Vec<_> = doc.sections().map(Section::name).collect();
        assert_eq!(names, ["Unit", "Service", "Unit"]);
        let view = UnitView::parse(SAMPLE).unwrap();
        let triples: Vec<_> = doc
            .entries()
            .map(|(s, e)| (s, e.key(), e.value()))
            .collect();
        let vtriples: Vec<_> = view
            .entries()
            .iter()
            .map(|e| (&*e.section, &*e.key, &*e.value))
            .collect();
        assert_eq!(triples, vtriples);
        assert!(matches!(view.entries()[0].value, Cow::Owned(_)));
        assert!(matches!(view.entries()[1].value, Cow::Borrowed(_)));
    }

    #[test]
    fn edits_keep_layout() {
        let mut doc = UnitFile::parse(SAMPLE).unwrap();
        doc.set("Service", "ExecStart", "/bin/false").unwrap();
        doc.append("Service", "Restart", "always").unwrap();
        assert_eq!(doc.remove("Unit", "After"), 4);
        doc.add_section("Install").unwrap();
        doc.set("Install", "WantedBy", "multi-user.target").unwrap();
        let text = doc.to_string();
        assert!(text.starts_with("# top\r\n[Unit]\r\nDescription=Hello \\\r\n  # inner\r\n"));
        assert!(text.contains("[Service]\r\nExecStart=/bin/false\r\nRestart=always\r\n[Unit]\r\n"));
        assert!(text.ends_with("[Unit]\r\n\n[Install]\r\nWantedBy=multi-user.target\r\n"));
        let back = UnitFile::parse(&text).unwrap();
        assert_eq!(back.get("Install", "WantedBy"), Some("multi-user.target"));
        assert_eq!(back.get("Service", "Restart"), Some("always"));
        assert_eq!(back.get("Unit", "After"), None);
    }

    #[test]
    fn warnings_and_errors_carry_positions() {
        let doc = UnitFile::parse("A=b\n[Unit]\n  noequals\n\t=x\nk=v\n").unwrap();
        let w: Vec<_> = doc
            .warnings()
            .iter()
            .map(|w| (w.kind, w.line(), w.at.column))
            .collect();
        use crate::WarningKind::*;
        assert_eq!(
            w,
            [
                (OutsideSection, 1, 1),
                (MissingEquals, 3, 3),
                (EmptyKey, 4, 2)
            ]
        );
        assert_eq!(doc.warnings()[1].message(), "Missing '=', ignoring line.");
        assert_eq!(doc.get("Unit", "k"), Some("v"));

        let e = UnitFile::parse("[Unit]\nA=b\n  [Service\n").unwrap_err();
        assert!(matches!(e, ParseError::InvalidSectionHeader { .. }));
        assert_eq!((e.line(), e.column()), (3, 3));
        assert_eq!(
            e.to_string(),
            "line 3, column 3: invalid section header \"[Service\""
        );
        let e = UnitFile::parse("[Unit]\nA=b \\\n c\u{E9}\u{FFFF}\n").unwrap_err();
        assert!(matches!(e, ParseError::InvalidUtf8 { .. }));
        assert_eq!((e.line(), e.column()), (3, 5));
        let e = UnitFile::parse("[Unit]\n[Ser\"vice]\n").unwrap_err();
        assert!(matches!(e, ParseError::BadSectionName { .. }));
        assert_eq!(e.line(), 2);
        assert_eq!(
            e.clone().with_path("/x.service").to_string(),
            format!(
                "/x.service:2:1: {}",
                e.to_string().split(": ").nth(1).unwrap()
            )
        );
    }

    #[test]
    fn append_after_open_continuation_at_eof() {
        let mut doc = UnitFile::parse("[A]\nk=v\\").unwrap();
        doc.append("A", "x", "y").unwrap();
        let back = UnitFile::parse(&doc.to_string()).unwrap();
        assert_eq!(back.get("A", "k"), Some("v"));
        assert_eq!(back.get("A", "x"), Some("y"));
    }

    #[test]
    fn edits_reject_what_cannot_round_trip() {
        let mut doc = UnitFile::default();
        assert!(doc.set("A", "k", "a\nb").is_err());
        assert!(doc.set("A", "k=", "v").is_err());
        assert!(doc.set("A", "k", "v\\").is_err());
        assert!(doc.set("A", " k", "v").is_err());
        assert!(doc.add_section("a\"b").is_err());
        doc.set("A", "k", "v\\\\").unwrap();
        assert_eq!(doc.to_string(), "[A]\nk=v\\\\\n");
    }
}
