//! systemd unit files, read exactly as systemd 252 reads them.
//!
//! [`parse`] turns text into a [`UnitFile`], a lossless document: sections and entries in
//! file order with duplicates, plus every comment, blank line and line terminator, so an
//! unmodified file prints back byte for byte and edits keep the user's layout. Lookups
//! follow systemd's semantics: [`UnitFile::get`] (last assignment wins) and
//! [`UnitFile::get_list`] (assignments accumulate, an empty one resets). [`UnitView`] is a
//! faster, borrowing view for readers that only need `(section, key, value)` triples.
//! Drop-in directories are merged by [`dropin`]. Files systemd would refuse give a
//! [`ParseError`] with a line and column; lines systemd ignores give [`Warning`]s.
//!
//! The tokenizer follows systemd's `config_parse()`: LF, CR, CRLF and NUL line ends;
//! `#`/`;` comments only at line start (and dropped inside continuations); a line ending
//! in an odd number of backslashes continues onto the next with one space; the first UTF-8
//! BOM is removed; invalid UTF-8 (including surrogates and noncharacters), a bad section
//! header, or a line of 1 MiB or more fails the whole file.
//!
//! ```
//! let text = "[Unit]\nDescription=Web \\\n  server\nAfter=a.service\n\n[Service]\n\
//!             ExecStart=/usr/bin/web\nExecStart=\nExecStart=/usr/bin/web --fast\n";
//! let mut unit = unit_parser::parse(text)?;
//! assert_eq!(unit.get("Unit", "Description"), Some("Web    server"));
//! assert_eq!(unit.get_list("Service", "ExecStart"), ["/usr/bin/web --fast"]);
//! assert_eq!(unit.to_string(), text);
//!
//! unit.set("Unit", "Description", "Web")?;
//! assert!(unit.to_string().starts_with("[Unit]\nDescription=Web\nAfter=a.service\n"));
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod dropin;
mod error;
pub mod exec;
pub mod hash;
pub mod install;
pub mod name;
mod parse;
pub mod service;
pub mod specifier;
mod unit;
pub mod unit_section;
pub mod value;
pub mod xfleet;

pub use error::{EditError, IoErrorText, Location, ParseError, Warning, WarningKind};
pub use unit::{Entry, Section, UnitFile, UnitView, ViewEntry};

/// Parses unit file text into a lossless [`UnitFile`].
///
/// # Errors
///
/// A [`ParseError`] when systemd would refuse to load the file.
pub fn parse(text: &str) -> Result<UnitFile, ParseError> {
    UnitFile::parse(text)
}
