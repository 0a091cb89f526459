//! Drop-in directories (`NAME.d/*.conf`), found and merged in systemd 252's order.
//!
//! For a unit `foo-bar@baz.service`, every directory of the search path (highest priority
//! first, e.g. `/etc/systemd/system` before `/usr/lib/systemd/system`) is scanned for, in
//! this order: `foo-bar@baz.service.d`, the template's `foo-bar@.service.d`, the
//! template's dash prefixes (`foo-.service.d`), the instance's dash prefixes
//! (`foo-@baz.service.d`, `foo-@.service.d`); after all of them, the type-wide
//! `service.d` in every search directory (alias names, if the caller passes them to the
//! `*_with_aliases` functions, are searched between the two). That is
//! `unit_file_find_dirs()` / `unit_file_find_dropin_paths()` in `src/shared/dropin.c`. Of the `*.conf` files found, a basename seen in an earlier
//! directory hides the same basename in later ones (so `/etc` overrides `/usr/lib`, and a
//! more specific directory overrides a more generic one); a drop-in that is empty or a
//! symlink to `/dev/null` therefore masks the ones it hides. The winners are applied in
//! byte order of their basenames, whatever directory they live in, after the main fragment.
//! Override semantics are nothing but "later assignment wins" (see [`UnitFile::get`] and
//! [`UnitFile::get_list`]).

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::ParseError;
use crate::unit::UnitFile;

/// The parts of a unit name the drop-in search needs: `prefix[@instance].type`.
struct NameParts<'a> {
    prefix: &'a str,
    /// `Some("")` for a template, `Some(i)` for an instance, `None` for a plain name.
    instance: Option<&'a str>,
    unit_type: &'a str,
}

fn split_name(name: &str) -> Option<NameParts<'_>> {
    let (stem, unit_type) = name.rsplit_once('.')?;
    if stem.is_empty() || unit_type.is_empty() {
        return None;
    }
    let (prefix, instance) = match stem.split_once('@') {
        Some((p, i)) => (p, Some(i)),
        None => (stem, None),
    };
    Some(NameParts {
        prefix,
        instance,
        unit_type,
    })
}

/// `unit_prefix_is_valid()`: non-empty, only `[A-Za-z0-9:_.\\-]`.
fn prefix_is_valid(p: &str) -> bool {
    !p.is_empty()
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'.' | b'\\'))
}

/// `unit_file_find_dirs()`: the drop-in directory names for `name`, most specific first.
fn dir_names(name: &str, out: &mut Vec<String>) {
    out.push(format!("{name}.d"));
    let Some(parts) = split_name(name) else {
        // A type-wide name ("service") has no template or prefixes.
        return;
    };
    let instance = parts.instance.filter(|i| !i.is_empty());
    if instance.is_some() {
        dir_names(&format!("{}@.{}", parts.prefix, parts.unit_type), out);
    }
    // Walk up one dash level: "foo-bar-baz" -> "foo-bar-", "foo-bar-" -> "foo-" (a
    // trailing dash is chopped once before looking for the next one).
    let mut prefix = parts.prefix;
    let mut chopped = false;
    loop {
        let Some(dash) = prefix.rfind('-') else {
            return;
        };
        if dash == 0 {
            return;
        }
        if dash + 1 != prefix.len() || chopped {
            prefix = &prefix[..=dash];
            break;
        }
        prefix = &prefix[..dash];
        chopped = true;
    }
    if !prefix_is_valid(prefix) {
        return;
    }
    let built = match instance {
        Some(i) => format!("{prefix}@{i}.{}", parts.unit_type),
        None => format!("{prefix}.{}", parts.unit_type),
    };
    dir_names(&built, out);
}

/// The drop-in directories systemd consults for `unit_name`, in priority order (a file in
/// an earlier directory hides the same basename in later ones). Directories that do not
/// exist are included; `search_path` is highest priority first.
pub fn dropin_dirs(unit_name: &str, search_path: &[impl AsRef<Path>]) -> Vec<PathBuf> {
    dropin_dirs_with_aliases(unit_name, &[], search_path)
}

/// Like [`dropin_dirs`] for a unit that also has alias names (symlinks to its fragment):
/// the aliases' directories come after all of the unit's own and before the type-wide
/// ones, as in `unit_file_find_dropin_paths()`.
pub fn dropin_dirs_with_aliases(
    unit_name: &str,
    aliases: &[&str],
    search_path: &[impl AsRef<Path>],
) -> Vec<PathBuf> {
    let mut seen = HashSet::new();
    let mut dirs = Vec::new();
    for name in std::iter::once(unit_name).chain(aliases.iter().copied()) {
        let mut names = Vec::new();
        dir_names(name, &mut names);
        for base in search_path {
            for n in &names {
                let d = base.as_ref().join(n);
                if seen.insert(d.clone()) {
                    dirs.push(d);
                }
            }
        }
    }
    if let Some(parts) = split_name(unit_name) {
        for base in search_path {
            let d = base.as_ref().join(format!("{}.d", parts.unit_type));
            if seen.insert(d.clone()) {
                dirs.push(d);
            }
        }
    }
    dirs
}

/// The drop-in files that apply to `unit_name`, in the order systemd applies them (byte
/// order of basenames), each the highest-priority file of that basename.
///
/// # Errors
///
/// [`ParseError::Io`] if an existing directory cannot be read.
pub fn find_dropins(
    unit_name: &str,
    search_path: &[impl AsRef<Path>],
) -> Result<Vec<PathBuf>, ParseError> {
    find_dropins_with_aliases(unit_name, &[], search_path)
}

/// Like [`find_dropins`] for a unit that also has alias names; see
/// [`dropin_dirs_with_aliases`].
///
/// # Errors
///
/// [`ParseError::Io`] if an existing directory cannot be read.
pub fn find_dropins_with_aliases(
    unit_name: &str,
    aliases: &[&str],
    search_path: &[impl AsRef<Path>],
) -> Result<Vec<PathBuf>, ParseError> {
    let mut winners: Vec<(OsString, PathBuf)> = Vec::new();
    let mut seen = HashSet::new();
    for dir in dropin_dirs_with_aliases(unit_name, aliases, search_path) {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                continue;
            }
            Err(e) => return Err(ParseError::io(&dir, e)),
        };
        let mut here = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| ParseError::io(&dir, e))?;
            let name = entry.file_name();
            let bytes = name.as_encoded_bytes();
            // dirent_is_file_with_suffix(): no hidden files, ".conf" only, regular
            // files or symlinks.
            if bytes.first() == Some(&b'.') || !bytes.ends_with(b".conf") {
                continue;
            }
            let is_file_like = entry
                .file_type()
                .is_ok_and(|t| t.is_file() || t.is_symlink());
            if is_file_like {
                here.push((name, entry.path()));
            }
        }
        for (name, path) in here {
            if seen.insert(name.clone()) {
                winners.push((name, path));
            }
        }
    }
    winners.sort_by(|a, b| a.0.as_encoded_bytes().cmp(b.0.as_encoded_bytes()));
    Ok(winners.into_iter().map(|(_, p)| p).collect())
}

/// A unit as systemd loads it: the main fragment and its drop-ins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedUnit {
    /// The unit name that was looked up.
    pub name: String,
    /// The fragment file found (for an instance without its own file, the template's).
    pub fragment_path: Option<PathBuf>,
    /// The parsed fragment (empty when there is none or the unit is masked).
    pub fragment: UnitFile,
    /// The fragment is empty or a symlink to `/dev/null`: systemd treats the unit as masked
    /// and loads no drop-ins.
    pub masked: bool,
    /// The drop-ins in application order, each with its path.
    pub dropins: Vec<(PathBuf, UnitFile)>,
}

impl LoadedUnit {
    /// The fragment followed by every drop-in: what the unit's settings are read from.
    /// Lookups on it (`get`, `get_list`) give systemd's override results.
    pub fn merged(&self) -> UnitFile {
        let mut doc = self.fragment.clone();
        for (_, d) in &self.dropins {
            doc.extend(d.clone());
        }
        doc
    }
}

fn is_masked(path: &Path) -> bool {
    std::fs::canonicalize(path).is_ok_and(|p| p == Path::new("/dev/null"))
        || std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0)
}

/// Loads `unit_name` from `search_path` (highest priority first): the first fragment
/// found (an instance falls back to its template), then its drop-ins.
///
/// # Errors
///
/// A [`ParseError`] (with the file's path) if the fragment or a drop-in cannot be read or
/// would be refused by systemd; a fatal error in a drop-in fails the unit, as in systemd.
pub fn load_unit(
    unit_name: &str,
    search_path: &[impl AsRef<Path>],
) -> Result<LoadedUnit, ParseError> {
    let mut candidates = vec![unit_name.to_owned()];
    if let Some(p) = split_name(unit_name)
        && p.instance.is_some_and(|i| !i.is_empty())
    {
        candidates.push(format!("{}@.{}", p.prefix, p.unit_type));
    }
    let fragment_path = candidates.iter().find_map(|c| {
        search_path
            .iter()
            .map(|d| d.as_ref().join(c))
            .find(|p| std::fs::symlink_metadata(p).is_ok())
    });
    let mut unit = LoadedUnit {
        name: unit_name.to_owned(),
        fragment_path: fragment_path.clone(),
        fragment: UnitFile::default(),
        masked: false,
        dropins: Vec::new(),
    };
    if let Some(p) = &fragment_path {
        if is_masked(p) {
            unit.masked = true;
            return Ok(unit);
        }
        unit.fragment = UnitFile::from_path(p)?;
    }
    for p in find_dropins(unit_name, search_path)? {
        let doc = UnitFile::from_path(&p)?;
        unit.dropins.push((p, doc));
    }
    Ok(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &str) -> Vec<String> {
        let mut v = Vec::new();
        dir_names(n, &mut v);
        v
    }

    #[test]
    fn directory_names_follow_unit_file_find_dirs() {
        assert_eq!(names("foo.service"), ["foo.service.d"]);
        assert_eq!(
            names("foo-bar-baz.service"),
            [
                "foo-bar-baz.service.d",
                "foo-bar-.service.d",
                "foo-.service.d"
            ]
        );
        assert_eq!(
            names("foo-bar@baz.service"),
            [
                "foo-bar@baz.service.d",
                "foo-bar@.service.d",
                "foo-.service.d",
                "foo-@baz.service.d",
                "foo-@.service.d"
            ]
        );
        assert_eq!(names("-.mount"), ["-.mount.d"]);
        assert_eq!(
            names("a--b.service"),
            ["a--b.service.d", "a--.service.d", "a-.service.d"]
        );
        assert_eq!(names("foo@.service"), ["foo@.service.d"]);
    }

    #[test]
    fn alias_directories_follow_the_unit_and_precede_the_type() {
        let d = dropin_dirs_with_aliases("a.service", &["b-c.service"], &["/etc/x", "/usr/x"]);
        let d: Vec<_> = d.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        assert_eq!(
            d,
            [
                "/etc/x/a.service.d",
                "/usr/x/a.service.d",
                "/etc/x/b-c.service.d",
                "/etc/x/b-.service.d",
                "/usr/x/b-c.service.d",
                "/usr/x/b-.service.d",
                "/etc/x/service.d",
                "/usr/x/service.d"
            ]
        );
    }

    #[test]
    fn type_wide_directories_come_last() {
        let d = dropin_dirs("a-b.socket", &["/etc/x", "/usr/x"]);
        let d: Vec<_> = d.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        assert_eq!(
            d,
            [
                "/etc/x/a-b.socket.d",
                "/etc/x/a-.socket.d",
                "/usr/x/a-b.socket.d",
                "/usr/x/a-.socket.d",
                "/etc/x/socket.d",
                "/usr/x/socket.d"
            ]
        );
    }
}
