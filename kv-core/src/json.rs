//! etcd's JSON as Go's `encoding/json` writes it, for front ends and tools that must match
//! etcd's bytes: strings escaped the HTML-safe way (`<`, `>`, `&`, U+2028 and U+2029 too).
//! (serde's forms of [`crate::NodeView`] and [`crate::Error`] have etcd's fields, but
//! serde_json escapes strings differently.)

use std::fmt::Write as _;

/// Appends `s` as a JSON string the way Go's encoder does (HTML-safe: `<`, `>`, `&`, U+2028
/// and U+2029 are escaped too, and `\b`/`\f` as `\u00XX` like Go 1.19).
pub fn push_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    // Copy the runs between characters that need escaping in one go: values are mostly
    // plain text, and a char-by-char push cost kvd several percent of a put.
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = match b {
            b'"' | b'\\' | b'<' | b'>' | b'&' => true,
            0..0x20 => true,
            // U+2028 and U+2029 (E2 80 A8, E2 80 A9), which Go escapes too.
            0xE2 => {
                bytes.get(i + 1) == Some(&0x80) && matches!(bytes.get(i + 2), Some(0xA8 | 0xA9))
            }
            _ => false,
        };
        if !escape {
            continue;
        }
        // `i` is at a character boundary: every byte matched above starts a character.
        out.push_str(&s[run..i]);
        let c = s[i..].chars().next().unwrap_or_default();
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
        }
        run = i + c.len_utf8();
    }
    out.push_str(&s[run..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_like_go() {
        let mut s = String::new();
        push_str(&mut s, "a\"b\\c\n<&>\u{1}\u{2028}é");
        assert_eq!(s, r#""a\"b\\c\n\u003c\u0026\u003e\u0001\u2028é""#);
    }

    /// Go's escaping, one character at a time: the reference the run-copying version is
    /// held to.
    fn escape_per_char(s: &str) -> String {
        let mut out = String::from('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    proptest::proptest! {
        #[test]
        fn escaping_matches_the_per_character_reference(
            s in "(\\PC|[\"\\\\<>&\u{0}-\u{1f}\u{2028}\u{2029}\u{2027}\u{e2}])*",
        ) {
            let mut out = String::new();
            push_str(&mut out, &s);
            proptest::prop_assert_eq!(out, escape_per_char(&s));
        }
    }
}
