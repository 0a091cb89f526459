//! Errors and warnings produced while reading unit files.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where in a file something happened: an optional path, a 1-based line and a 1-based column.
///
/// The column counts bytes of the physical line (after the line terminator of the previous
/// line), which is what an editor showing the raw file needs.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    /// The file, when the text came from one (drop-ins always carry it).
    pub path: Option<PathBuf>,
    /// 1-based physical line number.
    pub line: usize,
    /// 1-based byte column within that physical line.
    pub column: usize,
}

impl Location {
    pub(crate) fn new(line: usize, column: usize) -> Self {
        Location {
            path: None,
            line,
            column,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "{}:{}:{}", p.display(), self.line, self.column),
            None => write!(f, "line {}, column {}", self.line, self.column),
        }
    }
}

/// A reason for which systemd refuses to load a whole unit file.
///
/// Every variant carries a [`Location`]; systemd itself (v252) fails the unit for exactly
/// these cases, so a caller that gets one knows the unit would not load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// A physical line of 1 MiB (1048576 bytes) or more.
    #[error("{at}: line too long ({length} bytes or more; the limit is 1048575)")]
    LineTooLong {
        /// Where the line starts.
        at: Location,
        /// How many content bytes were read before giving up.
        length: usize,
    },
    /// Backslash-continued lines whose joined length exceeds 1 MiB.
    #[error("{at}: continuation line too long ({length} bytes; the limit is 1048576)")]
    ContinuationTooLong {
        /// The physical line that pushed the joined line over the limit.
        at: Location,
        /// The joined length.
        length: usize,
    },
    /// Bytes that are not valid UTF-8, or a surrogate or Unicode noncharacter, on a line
    /// that is not a comment.
    #[error("{at}: invalid UTF-8 ({reason})")]
    InvalidUtf8 {
        /// The first offending byte.
        at: Location,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A line starting with `[` that does not end with `]`.
    #[error("{at}: invalid section header {header:?}")]
    InvalidSectionHeader {
        /// Where the logical line starts.
        at: Location,
        /// The trimmed logical line.
        header: String,
    },
    /// A section name with control characters, quotes or backslashes.
    #[error("{at}: bad characters in section header {header:?}")]
    BadSectionName {
        /// Where the logical line starts.
        at: Location,
        /// The trimmed logical line.
        header: String,
    },
    /// Reading a file failed (drop-in loading).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error, kept as text so the error stays `Clone + Eq`.
        source: IoErrorText,
    },
}

/// The text and kind of an I/O error, kept so [`ParseError`] can be `Clone` and `Eq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoErrorText {
    /// The error kind.
    pub kind: std::io::ErrorKind,
    /// Its message.
    pub message: String,
}

impl fmt::Display for IoErrorText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for IoErrorText {}

impl From<std::io::Error> for IoErrorText {
    fn from(e: std::io::Error) -> Self {
        IoErrorText {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

impl ParseError {
    /// The location, if the error has one (I/O errors have only a path).
    pub fn location(&self) -> Option<&Location> {
        match self {
            ParseError::LineTooLong { at, .. }
            | ParseError::ContinuationTooLong { at, .. }
            | ParseError::InvalidUtf8 { at, .. }
            | ParseError::InvalidSectionHeader { at, .. }
            | ParseError::BadSectionName { at, .. } => Some(at),
            ParseError::Io { .. } => None,
        }
    }

    /// 1-based line of the error (0 for I/O errors).
    pub fn line(&self) -> usize {
        self.location().map_or(0, |l| l.line)
    }

    /// 1-based byte column of the error (0 for I/O errors).
    pub fn column(&self) -> usize {
        self.location().map_or(0, |l| l.column)
    }

    /// The file the error is in, if known.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ParseError::Io { path, .. } => Some(path),
            _ => self.location().and_then(|l| l.path.as_deref()),
        }
    }

    /// Attaches a file path to the error's location.
    pub fn with_path(mut self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        match &mut self {
            ParseError::LineTooLong { at, .. }
            | ParseError::ContinuationTooLong { at, .. }
            | ParseError::InvalidUtf8 { at, .. }
            | ParseError::InvalidSectionHeader { at, .. }
            | ParseError::BadSectionName { at, .. } => at.path = Some(path),
            ParseError::Io { .. } => {}
        }
        self
    }

    pub(crate) fn io(path: &Path, e: std::io::Error) -> Self {
        ParseError::Io {
            path: path.to_path_buf(),
            source: e.into(),
        }
    }
}

/// What kind of recoverable problem a [`Warning`] reports (systemd logs these and goes on).
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WarningKind {
    /// A line with no `=` ("Missing '=', ignoring line.").
    MissingEquals,
    /// A line starting with `=` ("Missing key name before '=', ignoring line.").
    EmptyKey,
    /// An assignment before the first section header ("Assignment outside of section.").
    OutsideSection,
}

/// A recoverable problem: systemd logs it and ignores the line.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where the logical line starts (path set for drop-ins).
    pub at: Location,
    /// What kind of problem.
    pub kind: WarningKind,
    /// systemd's message for it.
    pub message: String,
}

impl Warning {
    /// 1-based line of the ignored logical line.
    pub fn line(&self) -> usize {
        self.at.line
    }

    /// systemd's message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// Why an edit of a [`crate::UnitFile`] was refused: the result would not read back as the
/// same key and value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// The key is empty, contains `=` or a line terminator, starts with `[`, `#` or `;`, or
    /// has surrounding whitespace.
    #[error("invalid key {0:?}")]
    InvalidKey(String),
    /// The value contains a line terminator, has surrounding whitespace or ends in an odd
    /// number of backslashes (which would continue the line).
    #[error("invalid value {0:?}")]
    InvalidValue(String),
    /// The section name contains characters systemd refuses or a line terminator.
    #[error("invalid section name {0:?}")]
    InvalidSection(String),
    /// No such section or key to edit.
    #[error("no entry {key:?} in section {section:?}")]
    NotFound {
        /// Section searched.
        section: String,
        /// Key searched.
        key: String,
    },
}
