//! The `[Unit]` section: description, documentation, dependencies, start rate limiting.
//!
//! Values are read as systemd 252's `load-fragment.c` reads them: dependency settings are
//! whitespace-separated unit names that accumulate over assignments and **cannot be reset**
//! (an empty assignment adds nothing); `Documentation=` is a list that an empty assignment
//! resets; `Description=` is a single value. Invalid values and unknown keys become
//! [`SettingWarning`]s, as systemd logs and ignores them; `X-` keys are ignored silently.

use crate::UnitFile;
use crate::name::UnitName;
use crate::specifier::{SpecifierContext, expand};
use crate::value::word::{Flags, extract_first_word};
use crate::value::{SettingWarning, Timespan, parse_sec};

/// The section name.
pub const SECTION: &str = "Unit";

/// Every `[Unit]` key systemd 252 knows (`load-fragment-gperf.gperf.in`; checked against
/// `systemd --dump-configuration-items`), typed here or not.
pub const KNOWN_KEYS: &[&str] = &[
    "Description",
    "BindTo",
    "PropagateReloadTo",
    "PropagateReloadFrom",
    "OnSuccessJobMode",
    "Documentation",
    "Requires",
    "Requisite",
    "Wants",
    "BindsTo",
    "PartOf",
    "Upholds",
    "Conflicts",
    "Before",
    "After",
    "OnFailure",
    "OnSuccess",
    "PropagatesReloadTo",
    "ReloadPropagatedFrom",
    "PropagatesStopTo",
    "StopPropagatedFrom",
    "JoinsNamespaceOf",
    "RequiresMountsFor",
    "StopWhenUnneeded",
    "RefuseManualStart",
    "RefuseManualStop",
    "AllowIsolate",
    "DefaultDependencies",
    "OnFailureJobMode",
    "OnFailureIsolate",
    "IgnoreOnIsolate",
    "JobTimeoutSec",
    "JobRunningTimeoutSec",
    "JobTimeoutAction",
    "JobTimeoutRebootArgument",
    "StartLimitIntervalSec",
    "StartLimitInterval",
    "StartLimitBurst",
    "StartLimitAction",
    "FailureAction",
    "SuccessAction",
    "FailureActionExitStatus",
    "SuccessActionExitStatus",
    "RebootArgument",
    "SourcePath",
    "CollectMode",
    "RequiresOverridable",
    "RequisiteOverridable",
    "ConditionPathExists",
    "ConditionPathExistsGlob",
    "ConditionPathIsDirectory",
    "ConditionPathIsSymbolicLink",
    "ConditionPathIsMountPoint",
    "ConditionPathIsReadWrite",
    "ConditionPathIsEncrypted",
    "ConditionDirectoryNotEmpty",
    "ConditionFileNotEmpty",
    "ConditionFileIsExecutable",
    "ConditionNeedsUpdate",
    "ConditionFirstBoot",
    "ConditionKernelCommandLine",
    "ConditionKernelVersion",
    "ConditionCredential",
    "ConditionArchitecture",
    "ConditionFirmware",
    "ConditionVirtualization",
    "ConditionSecurity",
    "ConditionCapability",
    "ConditionHost",
    "ConditionACPower",
    "ConditionUser",
    "ConditionGroup",
    "ConditionControlGroupController",
    "ConditionOSRelease",
    "ConditionMemory",
    "ConditionCPUs",
    "ConditionEnvironment",
    "ConditionCPUFeature",
    "ConditionCPUPressure",
    "ConditionMemoryPressure",
    "ConditionIOPressure",
    "AssertPathExists",
    "AssertPathExistsGlob",
    "AssertPathIsDirectory",
    "AssertPathIsSymbolicLink",
    "AssertPathIsMountPoint",
    "AssertPathIsReadWrite",
    "AssertPathIsEncrypted",
    "AssertDirectoryNotEmpty",
    "AssertFileNotEmpty",
    "AssertFileIsExecutable",
    "AssertNeedsUpdate",
    "AssertFirstBoot",
    "AssertKernelCommandLine",
    "AssertKernelVersion",
    "AssertCredential",
    "AssertArchitecture",
    "AssertVirtualization",
    "AssertSecurity",
    "AssertCapability",
    "AssertHost",
    "AssertACPower",
    "AssertUser",
    "AssertGroup",
    "AssertControlGroupController",
    "AssertOSRelease",
    "AssertMemory",
    "AssertCPUs",
    "AssertEnvironment",
    "AssertCPUFeature",
    "AssertCPUPressure",
    "AssertMemoryPressure",
    "AssertIOPressure",
];

/// The dependency settings, as `(key, field accessor)` pairs.
const DEPENDENCIES: &[&str] = &[
    "BindTo",
    "PropagateReloadTo",
    "PropagateReloadFrom",
    "Requires",
    "Requisite",
    "Wants",
    "BindsTo",
    "PartOf",
    "Upholds",
    "Conflicts",
    "Before",
    "After",
    "OnFailure",
    "OnSuccess",
    "PropagatesReloadTo",
    "ReloadPropagatedFrom",
    "PropagatesStopTo",
    "StopPropagatedFrom",
    "JoinsNamespaceOf",
];

/// The non-dependency keys [`UnitSection`] interprets.
const TYPED_KEYS: &[&str] = &[
    "Description",
    "Documentation",
    "DefaultDependencies",
    "StartLimitIntervalSec",
    "StartLimitInterval",
    "StartLimitBurst",
    "SuccessAction",
];

/// The typed `[Unit]` section.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitSection {
    /// `Description=` (last wins, empty resets).
    pub description: Option<String>,
    /// `Documentation=` URIs (`http(s)://`, `file:`, `info:`, `man:`).
    pub documentation: Vec<String>,
    /// `Requires=`.
    pub requires: Vec<String>,
    /// `Requisite=`.
    pub requisite: Vec<String>,
    /// `Wants=`.
    pub wants: Vec<String>,
    /// `BindsTo=`.
    pub binds_to: Vec<String>,
    /// `PartOf=`.
    pub part_of: Vec<String>,
    /// `Upholds=`.
    pub upholds: Vec<String>,
    /// `Conflicts=`.
    pub conflicts: Vec<String>,
    /// `Before=`.
    pub before: Vec<String>,
    /// `After=`.
    pub after: Vec<String>,
    /// `OnFailure=`.
    pub on_failure: Vec<String>,
    /// `OnSuccess=`.
    pub on_success: Vec<String>,
    /// `PropagatesReloadTo=`.
    pub propagates_reload_to: Vec<String>,
    /// `ReloadPropagatedFrom=`.
    pub reload_propagated_from: Vec<String>,
    /// `PropagatesStopTo=`.
    pub propagates_stop_to: Vec<String>,
    /// `StopPropagatedFrom=`.
    pub stop_propagated_from: Vec<String>,
    /// `JoinsNamespaceOf=`.
    pub joins_namespace_of: Vec<String>,
    /// `DefaultDependencies=`.
    pub default_dependencies: Option<bool>,
    /// `StartLimitIntervalSec=` (or the old `StartLimitInterval=`).
    pub start_limit_interval: Option<Timespan>,
    /// `StartLimitBurst=`.
    pub start_limit_burst: Option<u32>,
    /// `SuccessAction=` as written (`none`, `exit`, `reboot`, ...); a service needs no
    /// `ExecStart=` when it is set to anything but `none`.
    pub success_action: Option<String>,
    /// Ignored values and unknown keys.
    pub warnings: Vec<SettingWarning>,
}

impl UnitSection {
    /// Reads every `[Unit]` section of `unit`, specifiers unresolved.
    pub fn from_unit(unit: &UnitFile) -> UnitSection {
        Self::from_unit_with(unit, None)
    }

    /// Reads every `[Unit]` section of `unit`, resolving specifiers with `ctx` if given.
    pub fn from_unit_with(unit: &UnitFile, ctx: Option<&SpecifierContext>) -> UnitSection {
        let mut u = UnitSection::default();
        for (section, entry) in unit.entries() {
            if section != SECTION {
                continue;
            }
            let (key, value, line) = (entry.key(), entry.value(), entry.line());
            let mut warnings = Vec::new();
            let mut warn = |message: String| {
                warnings.push(SettingWarning {
                    line,
                    section: SECTION.to_owned(),
                    key: key.to_owned(),
                    message,
                })
            };
            // Only settings this view interprets get their specifiers resolved (and
            // complain about them); the others are systemd's business.
            let typed = TYPED_KEYS.contains(&key) || DEPENDENCIES.contains(&key);
            let resolved = match if typed {
                resolve(value, ctx)
            } else {
                Ok(String::new())
            } {
                Ok(v) => v,
                Err(e) => {
                    warn(e);
                    u.warnings.extend(warnings);
                    continue;
                }
            };
            match key {
                "Description" => {
                    u.description = (!resolved.is_empty()).then_some(resolved);
                }
                "Documentation" => {
                    if resolved.is_empty() {
                        u.documentation.clear();
                    }
                    for w in split_words(&resolved) {
                        if documentation_url_is_valid(&w) {
                            u.documentation.push(w);
                        } else {
                            warn(format!("Invalid URL, ignoring: {w}"));
                        }
                    }
                }
                "DefaultDependencies" => match crate::value::parse_bool(&resolved) {
                    Ok(b) => u.default_dependencies = Some(b),
                    Err(e) => warn(format!("Failed to parse boolean, ignoring: {e}")),
                },
                "StartLimitIntervalSec" | "StartLimitInterval" => {
                    match parse_start_limit_interval(&resolved) {
                        Ok(v) => u.start_limit_interval = v,
                        Err(m) => warn(m),
                    }
                }
                // Kept as written: only "set to something other than none" matters here.
                "SuccessAction" => {
                    u.success_action = (!resolved.is_empty()).then_some(resolved);
                }
                "StartLimitBurst" => match parse_burst(&resolved) {
                    Ok(v) => u.start_limit_burst = v,
                    Err(m) => warn(m),
                },
                k if DEPENDENCIES.contains(&k) => {
                    for name in resolved
                        .split([' ', '\t', '\n', '\r'])
                        .filter(|w| !w.is_empty())
                    {
                        // Unresolved specifiers (no context given) make a name uncheckable: keep it.
                        if UnitName::parse(name).is_ok() || (ctx.is_none() && name.contains('%')) {
                            u.dependency_list(k).push(name.to_owned());
                        } else {
                            warn(format!(
                                "Failed to add dependency on {name}, ignoring: Invalid argument"
                            ));
                        }
                    }
                }
                k => {
                    if let Some(m) = unknown_key_message(k, SECTION, KNOWN_KEYS) {
                        warn(m);
                    }
                }
            }
            u.warnings.extend(warnings);
        }
        u
    }

    fn dependency_list(&mut self, key: &str) -> &mut Vec<String> {
        match key {
            "Requires" => &mut self.requires,
            "Requisite" => &mut self.requisite,
            "Wants" => &mut self.wants,
            // Old spellings systemd 252 still accepts as aliases.
            "BindsTo" | "BindTo" => &mut self.binds_to,
            "PartOf" => &mut self.part_of,
            "Upholds" => &mut self.upholds,
            "Conflicts" => &mut self.conflicts,
            "Before" => &mut self.before,
            "After" => &mut self.after,
            "OnFailure" => &mut self.on_failure,
            "OnSuccess" => &mut self.on_success,
            "PropagatesReloadTo" | "PropagateReloadTo" => &mut self.propagates_reload_to,
            "ReloadPropagatedFrom" | "PropagateReloadFrom" => &mut self.reload_propagated_from,
            "PropagatesStopTo" => &mut self.propagates_stop_to,
            "StopPropagatedFrom" => &mut self.stop_propagated_from,
            _ => &mut self.joins_namespace_of,
        }
    }
}

/// Resolves specifiers if a context is given; the error is the warning text.
pub(crate) fn resolve(value: &str, ctx: Option<&SpecifierContext>) -> Result<String, String> {
    match ctx {
        Some(c) => expand(value, c)
            .map_err(|e| format!("Failed to resolve unit specifiers in '{value}', ignoring: {e}")),
        None => Ok(value.to_owned()),
    }
}

/// Words with quotes removed and C escapes decoded; stops at a syntax error.
pub(crate) fn split_words(value: &str) -> Vec<String> {
    let flags = Flags {
        unquote: true,
        cunescape: true,
        ..Flags::default()
    };
    let mut p = value.as_bytes();
    let mut out = Vec::new();
    while let Ok(Some(w)) = extract_first_word(&mut p, flags) {
        out.push(String::from_utf8_lossy(&w).into_owned());
    }
    out
}

/// systemd's `documentation_url_is_valid()`.
fn documentation_url_is_valid(url: &str) -> bool {
    let has_rest = |p: &str| url.strip_prefix(p).is_some_and(|r| !r.is_empty());
    if url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return false;
    }
    has_rest("http://")
        || has_rest("https://")
        || has_rest("file:/")
        || has_rest("info:")
        || has_rest("man:")
}

/// `StartLimitIntervalSec=`: a time span (`config_parse_sec()`: an empty value is invalid).
pub(crate) fn parse_start_limit_interval(v: &str) -> Result<Option<Timespan>, String> {
    parse_sec(v)
        .map(Some)
        .map_err(|e| format!("Failed to parse sec value, ignoring: {e}"))
}

/// `StartLimitBurst=`: an unsigned integer (`config_parse_unsigned()`: an empty value is
/// invalid).
pub(crate) fn parse_burst(v: &str) -> Result<Option<u32>, String> {
    v.parse::<u32>()
        .ok()
        .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
        .map(Some)
        .ok_or_else(|| format!("Failed to parse unsigned integer value, ignoring: {v}"))
}

/// systemd's message for a key outside `known`, or `None` for known and `X-` keys.
pub(crate) fn unknown_key_message(key: &str, section: &str, known: &[&str]) -> Option<String> {
    if key.starts_with("X-") || known.contains(&key) {
        return None;
    }
    Some(format!(
        "Unknown key name '{key}' in section '{section}', ignoring."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_unit_section() {
        let f = crate::parse(
            "[Unit]\nDescription=Web %i\nDocumentation=man:web(8) https://x.org/ bad\n\
             After=network.target a.service\nAfter=\nAfter=b.service not/valid\n\
             Wants=db.service\nStartLimitIntervalSec=1min\nStartLimitBurst=5\n\
             Foo=bar\nX-Mine=ok\nConditionPathExists=/x\n[Service]\nAfter=ignored.service\n",
        )
        .unwrap();
        let u = UnitSection::from_unit(&f);
        assert_eq!(u.description.as_deref(), Some("Web %i"));
        assert_eq!(u.documentation, ["man:web(8)", "https://x.org/"]);
        assert_eq!(u.after, ["network.target", "a.service", "b.service"]);
        assert_eq!(u.wants, ["db.service"]);
        assert_eq!(u.start_limit_interval.unwrap().as_micros(), 60_000_000);
        assert_eq!(u.start_limit_burst, Some(5));
        let msgs: Vec<_> = u
            .warnings
            .iter()
            .map(|w| (w.line, w.message.as_str()))
            .collect();
        assert_eq!(
            msgs,
            [
                (3, "Invalid URL, ignoring: bad"),
                (
                    6,
                    "Failed to add dependency on not/valid, ignoring: Invalid argument"
                ),
                (10, "Unknown key name 'Foo' in section 'Unit', ignoring."),
            ]
        );
        let ctx = SpecifierContext::system(Some(UnitName::parse("web@1.service").unwrap()));
        let u = UnitSection::from_unit_with(&f, Some(&ctx));
        assert_eq!(u.description.as_deref(), Some("Web 1"));
    }
}
