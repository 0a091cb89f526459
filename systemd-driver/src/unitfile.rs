//! Reading a unit file into (section, key, value, line) assignments.
//!
//! This follows systemd's tokenizer rules for the parts the supervisor needs (comments,
//! continuation lines, sections, last-assignment-wins, empty assignment resets a list).
//! The workspace's `unit-parser` crate is the full implementation; this small reader keeps
//! the driver independent of its progress.

use crate::error::{Error, Result};

/// The assignments of one unit file, in file order.
#[derive(Debug, Clone, Default)]
pub(crate) struct UnitText {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    section: String,
    key: String,
    value: String,
    line: usize,
}

impl UnitText {
    /// The last assignment of `key` in `section`.
    pub(crate) fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.section == section && e.key == key)
            .map(|e| e.value.as_str())
    }

    /// All assignments of `key` in `section`, after the last empty one.
    pub(crate) fn get_list(&self, section: &str, key: &str) -> Vec<&str> {
        let mut out = Vec::new();
        for e in self
            .entries
            .iter()
            .filter(|e| e.section == section && e.key == key)
        {
            if e.value.is_empty() {
                out.clear();
            } else {
                out.push(e.value.as_str());
            }
        }
        out
    }

    /// The line of the last assignment of `key` in `section`.
    pub(crate) fn line_of(&self, section: &str, key: &str) -> Option<usize> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.section == section && e.key == key)
            .map(|e| e.line)
    }
}

/// Reads `text`; errors name the unit and the line.
pub(crate) fn parse(unit: &str, text: &str) -> Result<UnitText> {
    let mut out = UnitText::default();
    let mut section: Option<String> = None;
    let mut pending: Option<(String, usize)> = None;
    let mut lines = text.split(['\n', '\r', '\0']).enumerate().peekable();
    while let Some((idx, raw)) = lines.next() {
        let lineno = idx + 1;
        let trimmed = raw.trim_start_matches([' ', '\t']);
        if trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let (mut logical, start) = match pending.take() {
            Some((mut acc, start)) => {
                acc.push_str(raw);
                (acc, start)
            }
            None => (raw.to_owned(), lineno),
        };
        let trailing = logical.len() - logical.trim_end_matches('\\').len();
        if trailing % 2 == 1 && lines.peek().is_some() && !raw.trim().is_empty() {
            logical.pop();
            logical.push(' ');
            pending = Some((logical, start));
            continue;
        }
        let line = logical.trim_matches([' ', '\t', '\n', '\r']);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest.strip_suffix(']').ok_or_else(|| {
                Error::bad_unit(unit, start, format!("invalid section header {line:?}"))
            })?;
            section = Some(name.to_owned());
            continue;
        }
        let Some(section) = &section else { continue };
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim_matches([' ', '\t']);
        if key.is_empty() {
            continue;
        }
        out.entries.push(Entry {
            section: section.clone(),
            key: key.to_owned(),
            value: value.trim_matches([' ', '\t']).to_owned(),
            line: start,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_systemd() {
        let f = parse(
            "x.service",
            "# c\n[Unit]\nDescription=a \\\n  b\n[Service]\nExecStart=/bin/a\n; c\nEnvironment=A=1\nEnvironment=\nEnvironment=B=2\n[Install]\nWantedBy=multi-user.target\n",
        )
        .unwrap();
        assert_eq!(f.get("Unit", "Description"), Some("a    b"));
        assert_eq!(f.get_list("Service", "Environment"), ["B=2"]);
        assert_eq!(f.line_of("Service", "ExecStart"), Some(6));
        assert!(
            parse("x.service", "[Service\n")
                .unwrap_err()
                .to_string()
                .contains("line 1")
        );
    }
}
