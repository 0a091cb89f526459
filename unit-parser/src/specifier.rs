//! Unit specifiers (`%n`, `%i`, `%H`, ...) expanded from a caller-provided context.
//!
//! systemd's unit specifier table (v252, `src/core/unit-printf.c`) is implemented in full,
//! including the deprecated control-group specifiers `%c %r %R`.
//! Values that depend on the unit name are derived from [`SpecifierContext::unit`]; values
//! that depend on the host (hostname, machine ID, boot ID, os-release, ...) are whatever the
//! caller put in the context, because this crate never reads the system. A specifier whose
//! value the context does not provide is an error, as is `%` followed by a letter that is not
//! in the table. `%` followed by a non-letter, or at the end, stays literal (as in systemd).

use thiserror::Error;

use crate::name::{UnitName, unescape, unescape_path};

/// Why a string could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SpecifierError {
    /// `%` followed by a letter systemd does not know (`-EBADSLT`).
    #[error("unknown specifier '%{spec}' at byte {pos}")]
    Unknown {
        /// The letter after `%`.
        spec: char,
        /// Byte offset of the `%`.
        pos: usize,
    },
    /// A known specifier whose value the context does not provide.
    #[error("specifier '%{spec}' at byte {pos} is not available: {reason}")]
    Unavailable {
        /// The letter after `%`.
        spec: char,
        /// Byte offset of the `%`.
        pos: usize,
        /// What is missing.
        reason: String,
    },
}

/// Everything specifiers can expand to. Fields left `None` make their specifiers fail.
///
/// [`SpecifierContext::system`] fills in the fixed directories and identity of the system
/// manager (root, `/run`, `/var/lib`, ...), as systemd does for system units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecifierContext {
    /// The unit being loaded: `%n %N %p %P %i %I %j %J %f`.
    pub unit: Option<UnitName>,
    /// `%y`: path of the fragment file.
    pub fragment_path: Option<String>,
    /// `%H`: hostname.
    pub hostname: Option<String>,
    /// `%l`: short hostname; derived from `hostname` (text before the first `.`) if unset.
    pub short_hostname: Option<String>,
    /// `%q`: pretty hostname; the short hostname if unset.
    pub pretty_hostname: Option<String>,
    /// `%m`: machine ID.
    pub machine_id: Option<String>,
    /// `%b`: boot ID.
    pub boot_id: Option<String>,
    /// `%v`: kernel release.
    pub kernel_release: Option<String>,
    /// `%a`: architecture.
    pub architecture: Option<String>,
    /// `%o`: os-release `ID`.
    pub os_id: Option<String>,
    /// `%w`: os-release `VERSION_ID`.
    pub os_version_id: Option<String>,
    /// `%W`: os-release `VARIANT_ID`.
    pub os_variant_id: Option<String>,
    /// `%B`: os-release `BUILD_ID`.
    pub os_build_id: Option<String>,
    /// `%M`: os-release `IMAGE_ID`.
    pub os_image_id: Option<String>,
    /// `%A`: os-release `IMAGE_VERSION`.
    pub os_image_version: Option<String>,
    /// `%u`: user name.
    pub user_name: Option<String>,
    /// `%U`: user ID.
    pub user_id: Option<String>,
    /// `%g`: group name.
    pub group_name: Option<String>,
    /// `%G`: group ID.
    pub group_id: Option<String>,
    /// `%h`: home directory.
    pub home: Option<String>,
    /// `%s`: shell.
    pub shell: Option<String>,
    /// `%t`: runtime directory.
    pub runtime_dir: Option<String>,
    /// `%S`: state directory.
    pub state_dir: Option<String>,
    /// `%C`: cache directory.
    pub cache_dir: Option<String>,
    /// `%L`: log directory.
    pub logs_dir: Option<String>,
    /// `%E`: configuration directory.
    pub config_dir: Option<String>,
    /// `%T`: temporary directory.
    pub tmp_dir: Option<String>,
    /// `%V`: temporary directory for larger, persistent files.
    pub var_tmp_dir: Option<String>,
    /// `%d`: credentials directory.
    pub credentials_dir: Option<String>,
    /// `%c` (deprecated): the unit's control group path.
    pub cgroup_path: Option<String>,
    /// `%r` (deprecated): the control group path of the unit's slice.
    pub cgroup_slice: Option<String>,
    /// `%R` (deprecated): the manager's root control group.
    pub cgroup_root: Option<String>,
}

impl SpecifierContext {
    /// A context for `unit` run by the system manager: root's identity and the system
    /// directories filled in; host values (`%H %m %b %v ...`) left for the caller.
    pub fn system(unit: Option<UnitName>) -> SpecifierContext {
        let s = |v: &str| Some(v.to_owned());
        let credentials_dir = unit
            .as_ref()
            .map(|u| format!("/run/credentials/{}", u.as_str()));
        SpecifierContext {
            unit,
            user_name: s("root"),
            user_id: s("0"),
            group_name: s("root"),
            group_id: s("0"),
            home: s("/root"),
            shell: s("/bin/sh"),
            runtime_dir: s("/run"),
            state_dir: s("/var/lib"),
            cache_dir: s("/var/cache"),
            logs_dir: s("/var/log"),
            config_dir: s("/etc"),
            tmp_dir: s("/tmp"),
            var_tmp_dir: s("/var/tmp"),
            credentials_dir,
            ..SpecifierContext::default()
        }
    }

    /// Same context with a unit name set.
    pub fn with_unit(mut self, unit: UnitName) -> SpecifierContext {
        self.unit = Some(unit);
        self
    }

    fn resolve(&self, spec: char, pos: usize) -> Result<String, SpecifierError> {
        let unavailable = |reason: &str| SpecifierError::Unavailable {
            spec,
            pos,
            reason: reason.to_owned(),
        };
        let field = |v: &Option<String>, what: &str| {
            v.clone()
                .ok_or_else(|| unavailable(&format!("no {what} in the context")))
        };
        let unit = || {
            self.unit
                .as_ref()
                .ok_or_else(|| unavailable("no unit name in the context"))
        };
        let unescaped = |s: &str| unescape(s).map_err(|e| unavailable(&e.to_string()));
        Ok(match spec {
            'n' => unit()?.as_str().to_owned(),
            'N' => unit()?.without_suffix().to_owned(),
            'p' => unit()?.prefix().to_owned(),
            'P' => unescaped(unit()?.prefix())?,
            'i' => unit()?.instance().unwrap_or("").to_owned(),
            'I' => unescaped(unit()?.instance().unwrap_or(""))?,
            'j' => last_component(unit()?.prefix()).to_owned(),
            'J' => unescaped(last_component(unit()?.prefix()))?,
            'f' => {
                let u = unit()?;
                let base = match u.instance() {
                    Some(i) if !i.is_empty() => i,
                    _ => u.prefix(),
                };
                unescape_path(base).map_err(|e| unavailable(&e.to_string()))?
            }
            'y' => field(&self.fragment_path, "fragment path")?,
            'Y' => {
                let p = field(&self.fragment_path, "fragment path")?;
                match p.rfind('/') {
                    Some(0) => "/".to_owned(),
                    Some(i) => p[..i].to_owned(),
                    None => ".".to_owned(),
                }
            }
            'H' => field(&self.hostname, "hostname")?,
            'l' => match (&self.short_hostname, &self.hostname) {
                (Some(s), _) => s.clone(),
                (None, Some(h)) => h.split('.').next().unwrap_or("").to_owned(),
                (None, None) => return Err(unavailable("no hostname in the context")),
            },
            // systemd falls back to the short hostname when no pretty hostname is set.
            'q' => match (&self.pretty_hostname, &self.hostname) {
                (Some(p), _) => p.clone(),
                (None, Some(h)) => h.split('.').next().unwrap_or("").to_owned(),
                (None, None) => return Err(unavailable("no pretty hostname in the context")),
            },
            'm' => field(&self.machine_id, "machine ID")?,
            'b' => field(&self.boot_id, "boot ID")?,
            'v' => field(&self.kernel_release, "kernel release")?,
            'a' => field(&self.architecture, "architecture")?,
            // os-release fields absent from the file expand to "" in systemd.
            'o' => self.os_id.clone().unwrap_or_default(),
            'w' => self.os_version_id.clone().unwrap_or_default(),
            'W' => self.os_variant_id.clone().unwrap_or_default(),
            'B' => self.os_build_id.clone().unwrap_or_default(),
            'M' => self.os_image_id.clone().unwrap_or_default(),
            'A' => self.os_image_version.clone().unwrap_or_default(),
            'u' => field(&self.user_name, "user name")?,
            'U' => field(&self.user_id, "user ID")?,
            'g' => field(&self.group_name, "group name")?,
            'G' => field(&self.group_id, "group ID")?,
            'h' => field(&self.home, "home directory")?,
            's' => field(&self.shell, "shell")?,
            't' => field(&self.runtime_dir, "runtime directory")?,
            'S' => field(&self.state_dir, "state directory")?,
            'C' => field(&self.cache_dir, "cache directory")?,
            'L' => field(&self.logs_dir, "logs directory")?,
            'E' => field(&self.config_dir, "configuration directory")?,
            'T' => field(&self.tmp_dir, "temporary directory")?,
            'V' => field(&self.var_tmp_dir, "variable temporary directory")?,
            'd' => field(&self.credentials_dir, "credentials directory")?,
            'c' => field(&self.cgroup_path, "control group path")?,
            'r' => field(&self.cgroup_slice, "slice control group path")?,
            'R' => field(&self.cgroup_root, "root control group")?,
            _ => return Err(SpecifierError::Unknown { spec, pos }),
        })
    }
}

/// `%j`: the text after the last `-` of the prefix, or the whole prefix.
fn last_component(prefix: &str) -> &str {
    prefix.rsplit('-').next().unwrap_or(prefix)
}

/// Expands every specifier in `s` (systemd's `specifier_printf()`).
///
/// `%%` is a literal `%`; `%` followed by a non-letter (or nothing) is kept as is.
///
/// # Errors
/// [`SpecifierError::Unknown`] for `%` + an unknown letter, [`SpecifierError::Unavailable`]
/// when the context lacks the value; both name the specifier and its byte offset.
pub fn expand(s: &str, ctx: &SpecifierContext) -> Result<String, SpecifierError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut offset = 0;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let pos = offset + i;
        match after.chars().next() {
            Some('%') => {
                out.push('%');
                rest = &after[1..];
                offset = pos + 2;
            }
            Some(c) if c.is_ascii_alphabetic() => {
                out.push_str(&ctx.resolve(c, pos)?);
                rest = &after[1..];
                offset = pos + 2;
            }
            _ => {
                out.push('%');
                rest = after;
                offset = pos + 1;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The reduced table `systemctl enable` resolves in `[Install]` (`install_name_printf()`,
/// `src/shared/install-printf.c`; checked against systemd 252's library): unit name parts
/// without unescaping, system and credential specifiers.
const INSTALL_SPECIFIERS: &str = "abgijlmnopquvwABGHMNUW";

/// Expands specifiers as `systemctl enable` does for `[Install]` values: like [`expand`]
/// but only with the reduced table of `install_name_printf()`; any other letter is unknown.
///
/// # Errors
/// As [`expand`].
pub fn expand_install(s: &str, ctx: &SpecifierContext) -> Result<String, SpecifierError> {
    let mut pos = 0;
    while let Some(i) = s[pos..].find('%') {
        let at = pos + i;
        match s[at + 1..].chars().next() {
            Some('%') => pos = at + 2,
            Some(c) if c.is_ascii_alphabetic() && !INSTALL_SPECIFIERS.contains(c) => {
                return Err(SpecifierError::Unknown { spec: c, pos: at });
            }
            _ => pos = at + 1,
        }
    }
    expand(s, ctx)
}

/// fleet's `unitPrintf`: replaces `%n`, `%N`, `%p` and `%i` (in that order, as plain string
/// replacements) with values from `unit_name`; nothing else, no unescaping, no `%%`.
///
/// fleet takes the parts from the name without validating it: everything before the last
/// `.` is the name, text after the first `@` in it the instance. A name without a `.`
/// leaves `s` unchanged (fleet's `NewUnitNameInfo` returns nil then).
pub fn fleet_printf(s: &str, unit_name: &str) -> String {
    let Some(dot) = unit_name.rfind('.') else {
        return s.to_owned();
    };
    let name = &unit_name[..dot];
    let (prefix, instance) = match name.find('@') {
        Some(a) => (&name[..a], &name[a + 1..]),
        None => (name, ""),
    };
    s.replace("%n", unit_name)
        .replace("%N", name)
        .replace("%p", prefix)
        .replace("%i", instance)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(name: &str) -> SpecifierContext {
        let mut c = SpecifierContext::system(Some(UnitName::parse(name).unwrap()));
        c.hostname = Some("node1.example.com".into());
        c.machine_id = Some("0123456789abcdef0123456789abcdef".into());
        c.boot_id = Some("fedcba9876543210fedcba9876543210".into());
        c.kernel_release = Some("6.1.0-13-amd64".into());
        c
    }

    #[test]
    fn unit_name_specifiers() {
        let c = ctx("foo-bar@dev-sda\\x2d1.service");
        let e = |s| expand(s, &c).unwrap();
        assert_eq!(e("%n"), "foo-bar@dev-sda\\x2d1.service");
        assert_eq!(e("%N"), "foo-bar@dev-sda\\x2d1");
        assert_eq!(e("%p"), "foo-bar");
        assert_eq!(e("%P"), "foo/bar");
        assert_eq!(e("%i"), "dev-sda\\x2d1");
        assert_eq!(e("%I"), "dev/sda-1");
        assert_eq!(e("%j"), "bar");
        assert_eq!(e("%J"), "bar");
        assert_eq!(e("%f"), "/dev/sda-1");
        assert_eq!(
            e("%H %l %m %b %v"),
            "node1.example.com node1 0123456789abcdef0123456789abcdef fedcba9876543210fedcba9876543210 6.1.0-13-amd64"
        );
        assert_eq!(e("%u:%U %g:%G %h %s"), "root:0 root:0 /root /bin/sh");
        assert_eq!(
            e("%t %S %C %L %E %T %V"),
            "/run /var/lib /var/cache /var/log /etc /tmp /var/tmp"
        );
        assert_eq!(e("%d"), "/run/credentials/foo-bar@dev-sda\\x2d1.service");
        assert_eq!(e("%o|%w"), "|");
        let plain = ctx("web.service");
        assert_eq!(expand("%i|%I|%f|%p", &plain).unwrap(), "||/web|web");
    }

    #[test]
    fn literal_percent_forms() {
        let c = ctx("a.service");
        assert_eq!(
            expand("100%% %%n %- % %{x} %", &c).unwrap(),
            "100% %n %- % %{x} %"
        );
        assert_eq!(expand("ü%nü", &c).unwrap(), "üa.serviceü");
    }

    #[test]
    fn errors_name_the_specifier() {
        let c = ctx("a.service");
        assert_eq!(
            expand("ab%z", &c),
            Err(SpecifierError::Unknown { spec: 'z', pos: 2 })
        );
        assert_eq!(
            expand("x%a", &c).unwrap_err().to_string(),
            "specifier '%a' at byte 1 is not available: no architecture in the context"
        );
        let none = SpecifierContext::default();
        assert!(matches!(
            expand("%n", &none),
            Err(SpecifierError::Unavailable { spec: 'n', .. })
        ));
        let y = SpecifierContext {
            fragment_path: Some("/etc/systemd/system/a.service".into()),
            ..SpecifierContext::default()
        };
        assert_eq!(
            expand("%y %Y", &y).unwrap(),
            "/etc/systemd/system/a.service /etc/systemd/system"
        );
    }

    #[test]
    fn install_specifiers() {
        let c = ctx("web@8080.service");
        assert_eq!(
            expand_install("%p-%i.%N %%P", &c).unwrap(),
            "web-8080.web@8080 %P"
        );
        assert_eq!(
            expand_install("x%I", &c),
            Err(SpecifierError::Unknown { spec: 'I', pos: 1 })
        );
        assert!(expand_install("%h", &c).is_err());
        assert!(expand_install("%T", &c).is_err());
    }

    #[test]
    fn fleet_specifiers() {
        assert_eq!(
            fleet_printf("%n %N %p %i", "foo@bar.waldo"),
            "foo@bar.waldo foo@bar foo bar"
        );
        assert_eq!(
            fleet_printf("%n %N %p [%i]", "test.service"),
            "test.service test test []"
        );
        assert_eq!(fleet_printf("%H %% %p", "ssh@2.service"), "%H %% ssh");
        assert_eq!(fleet_printf("%n", "nodot"), "%n");
    }
}
