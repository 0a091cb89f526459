//! The `[Install]` section, read by `systemctl enable` (`src/shared/install.c`).
//!
//! `WantedBy=`, `RequiredBy=`, `Alias=` and `Also=` are whitespace-separated lists of unit
//! names (quotes allowed) that accumulate and reset on an empty assignment;
//! `DefaultInstance=` is a single value. Names that are not valid unit names are reported
//! as warnings and left out, as are `Alias=` names of a different type than the unit's own
//! (checked when the caller passes the unit's name).

use crate::UnitFile;
use crate::name::UnitName;
use crate::specifier::SpecifierContext;
use crate::specifier::expand_install;
use crate::unit_section::{split_words, unknown_key_message};
use crate::value::SettingWarning;

/// The section name.
pub const SECTION: &str = "Install";

/// The keys systemd knows in `[Install]`.
pub const KNOWN_KEYS: &[&str] = &["WantedBy", "RequiredBy", "Alias", "Also", "DefaultInstance"];

/// The typed `[Install]` section.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Install {
    /// `WantedBy=`.
    pub wanted_by: Vec<String>,
    /// `RequiredBy=`.
    pub required_by: Vec<String>,
    /// `Alias=`.
    pub alias: Vec<String>,
    /// `Also=`.
    pub also: Vec<String>,
    /// `DefaultInstance=` (templates only).
    pub default_instance: Option<String>,
    /// Ignored values and unknown keys.
    pub warnings: Vec<SettingWarning>,
}

impl Install {
    /// Reads every `[Install]` section of `unit`, specifiers unresolved.
    pub fn from_unit(unit: &UnitFile) -> Install {
        Self::from_unit_with(unit, None)
    }

    /// Reads every `[Install]` section, resolving specifiers with `ctx` if given, with the
    /// reduced table `systemctl enable` uses ([`expand_install`]). The context's unit name,
    /// if set, is also used to check `Alias=` types and `DefaultInstance=`.
    pub fn from_unit_with(unit: &UnitFile, ctx: Option<&SpecifierContext>) -> Install {
        let own = ctx.and_then(|c| c.unit.as_ref());
        let mut i = Install::default();
        for (section, entry) in unit.entries() {
            if section != SECTION {
                continue;
            }
            let (key, line) = (entry.key(), entry.line());
            let mut warn = |message: String| {
                i.warnings.push(SettingWarning {
                    line,
                    section: SECTION.to_owned(),
                    key: key.to_owned(),
                    message,
                })
            };
            let resolved = match ctx {
                Some(c) => expand_install(entry.value(), c).map_err(|e| {
                    format!(
                        "Failed to resolve specifiers in '{}', ignoring: {e}",
                        entry.value()
                    )
                }),
                None => Ok(entry.value().to_owned()),
            };
            let value = match resolved {
                Ok(v) => v,
                Err(m) => {
                    warn(m);
                    continue;
                }
            };
            let list = match key {
                "WantedBy" => &mut i.wanted_by,
                "RequiredBy" => &mut i.required_by,
                "Alias" => &mut i.alias,
                "Also" => &mut i.also,
                "DefaultInstance" => {
                    if value.is_empty() {
                        i.default_instance = None;
                    } else if own.is_some_and(|u| !u.is_template()) {
                        warn(
                            "DefaultInstance= only makes sense for template units, ignoring."
                                .into(),
                        );
                    } else {
                        i.default_instance = Some(value);
                    }
                    continue;
                }
                k => {
                    if let Some(m) = unknown_key_message(k, SECTION, KNOWN_KEYS) {
                        warn(m);
                    }
                    continue;
                }
            };
            if value.is_empty() {
                list.clear();
                continue;
            }
            for w in split_words(&value) {
                // Unresolved specifiers (no context given) make a name uncheckable: keep it.
                if ctx.is_none() && w.contains('%') {
                    list.push(w);
                    continue;
                }
                match UnitName::parse(&w) {
                    Err(e) => warn(format!("Invalid unit name, ignoring: {e}")),
                    Ok(n)
                        if key == "Alias"
                            && own.is_some_and(|u| u.unit_type() != n.unit_type()) =>
                    {
                        warn(format!("Alias {w} has a different unit type, ignoring."))
                    }
                    Ok(_) => list.push(w),
                }
            }
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_install() {
        let f = crate::parse(
            "[Install]\nWantedBy=multi-user.target \"graphical.target\"\nWantedBy=\n\
             WantedBy=default.target bad\nAlias=web.service web.socket\nAlso=web.socket\n\
             DefaultInstance=8080\nFoo=1\n",
        )
        .unwrap();
        let ctx = SpecifierContext::system(Some(UnitName::parse("web@.service").unwrap()));
        let i = Install::from_unit_with(&f, Some(&ctx));
        assert_eq!(i.wanted_by, ["default.target"]);
        assert_eq!(i.alias, ["web.service"]);
        assert_eq!(i.also, ["web.socket"]);
        assert_eq!(i.default_instance.as_deref(), Some("8080"));
        assert_eq!(i.warnings.len(), 3);
        assert_eq!(
            i.warnings[2].message,
            "Unknown key name 'Foo' in section 'Install', ignoring."
        );
    }
}
