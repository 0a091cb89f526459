//! Setting values: booleans, time spans, Exec lines, environment, resource limits.
//!
//! Each parser follows the systemd 252 function named in its docs. Parsers take the value as
//! the file parser delivers it (`Entry::value()`: continuations joined, outer whitespace
//! trimmed); an empty value usually means "reset to default", which the typed views handle
//! before calling these.
//!
//! ```
//! use unit_parser::value::{Timespan, parse_bool, parse_exec, parse_sec};
//!
//! assert_eq!(parse_bool("On")?, true);
//! assert_eq!(parse_sec("1h 30min")?.as_micros(), 5_400_000_000);
//! assert_eq!(parse_sec("infinity")?, Timespan::Infinity);
//! let line = parse_exec("/bin/echo one ; -/bin/echo 'two words'", None)?;
//! assert_eq!(line.commands[1].argv, ["/bin/echo", "two words"]);
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod boolean;
mod env;
mod resource;
mod timespan;
pub(crate) mod word;

pub use crate::exec::{
    ExecCommand, ExecError, ExecFlags, ExecLine, expand_exec_argv, parse_exec, replace_env,
};
pub use boolean::{BoolError, fleet_truthy, parse_bool};
pub use env::{
    EnvFileError, EnvironmentFile, EnvironmentFileError, EnvironmentLine, env_name_is_valid,
    env_replace, parse_env_file, parse_environment, parse_environment_file,
};
pub use resource::{
    CpuWeight, MemoryLimit, ResourceError, parse_cpu_quota, parse_cpu_weight, parse_memory_limit,
    parse_permyriad, parse_size,
};
pub use timespan::{Timespan, TimespanError, parse_sec, parse_sec_fix_0, parse_time};

/// A setting systemd logs and ignores (bad value, unknown key), with where it is.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingWarning {
    /// 1-based line of the assignment.
    pub line: usize,
    /// The section.
    pub section: String,
    /// The key.
    pub key: String,
    /// What is wrong (systemd's wording where it has one).
    pub message: String,
}

impl std::fmt::Display for SettingWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}: [{}] {}: {}",
            self.line, self.section, self.key, self.message
        )
    }
}

/// systemd's `unichar_is_valid()`: no surrogates (impossible in a `char`), nothing above
/// U+10FFFF, and none of the Unicode noncharacters U+FDD0..U+FDEF and U+xxFFFE/U+xxFFFF.
pub(crate) fn unichar_is_valid(c: char) -> bool {
    let u = c as u32;
    !((0xFDD0..=0xFDEF).contains(&u) || (u & 0xFFFE) == 0xFFFE)
}

/// systemd's `utf8_is_valid()` on a Rust string: additionally refuses noncharacters.
pub(crate) fn str_is_valid_utf8_systemd(s: &str) -> bool {
    s.chars().all(unichar_is_valid)
}
