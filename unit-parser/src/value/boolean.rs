//! Booleans as systemd's `parse_boolean()` reads them.

use thiserror::Error;

/// Not one of systemd's boolean spellings.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid boolean {0:?} (expected 1/yes/y/true/t/on or 0/no/n/false/f/off)")]
pub struct BoolError(pub String);

/// `1 yes y true t on` are true, `0 no n false f off` false, case-insensitively; nothing
/// else (not even with surrounding whitespace).
///
/// # Errors
/// [`BoolError`] for any other text.
pub fn parse_bool(s: &str) -> Result<bool, BoolError> {
    const TRUE: [&str; 6] = ["1", "yes", "y", "true", "t", "on"];
    const FALSE: [&str; 6] = ["0", "no", "n", "false", "f", "off"];
    if TRUE.iter().any(|t| t.eq_ignore_ascii_case(s)) {
        Ok(true)
    } else if FALSE.iter().any(|f| f.eq_ignore_ascii_case(s)) {
        Ok(false)
    } else {
        Err(BoolError(s.to_owned()))
    }
}

/// fleet's `isTruthyValue` (used for `Global=`): case-insensitive `true yes 1 on t` are true,
/// anything else (including invalid text) is false.
pub fn fleet_truthy(s: &str) -> bool {
    ["true", "yes", "1", "on", "t"]
        .iter()
        .any(|t| t.eq_ignore_ascii_case(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        for t in ["1", "yes", "YES", "y", "True", "t", "On"] {
            assert_eq!(parse_bool(t), Ok(true), "{t}");
        }
        for f in ["0", "no", "N", "false", "F", "OFF"] {
            assert_eq!(parse_bool(f), Ok(false), "{f}");
        }
        for bad in ["", "enable", "2", " yes", "ye s", "truee"] {
            assert!(parse_bool(bad).is_err(), "{bad}");
        }
        assert!(
            fleet_truthy("TRUE") && fleet_truthy("t") && !fleet_truthy("y") && !fleet_truthy("12")
        );
    }
}
