//! systemd's `extract_first_word()` and `cunescape_one()`, the word splitter behind Exec
//! lines, `Environment=` and `$VAR` expansion.

/// Subset of systemd's `ExtractFlags` this crate needs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Flags {
    /// `EXTRACT_UNQUOTE`: `'...'` and `"..."` group and the quotes are removed.
    pub(crate) unquote: bool,
    /// `EXTRACT_CUNESCAPE`: C escapes are decoded.
    pub(crate) cunescape: bool,
    /// `EXTRACT_UNESCAPE_RELAX`: unknown escapes (and a trailing `\`) are kept verbatim.
    pub(crate) unescape_relax: bool,
    /// `EXTRACT_RELAX`: an unterminated quote or trailing `\` ends the word instead of failing.
    pub(crate) relax: bool,
}

/// systemd's `WHITESPACE`.
pub(crate) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The word could not be extracted (systemd's `-EINVAL`): a bad escape or an unterminated
/// quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WordError;

fn hex(b: Option<&u8>) -> Option<u32> {
    (*b? as char).to_digit(16)
}

fn oct(b: Option<&u8>) -> Option<u32> {
    (*b? as char).to_digit(8)
}

/// `cunescape_one()` with `accept_nul = false`: decodes the escape starting at `s[0]` (the byte
/// after the backslash). Returns the decoded bytes and how many input bytes were used.
fn cunescape_one(s: &[u8]) -> Option<(Vec<u8>, usize)> {
    let simple = |b: u8| Some((vec![b], 1));
    match *s.first()? {
        b'a' => simple(7),
        b'b' => simple(8),
        b'f' => simple(12),
        b'n' => simple(b'\n'),
        b'r' => simple(b'\r'),
        b't' => simple(b'\t'),
        b'v' => simple(11),
        b'\\' => simple(b'\\'),
        b'"' => simple(b'"'),
        b'\'' => simple(b'\''),
        b's' => simple(b' '),
        b'x' => {
            let v = (hex(s.get(1))? << 4) | hex(s.get(2))?;
            (v != 0).then(|| (vec![v as u8], 3))
        }
        b'u' | b'U' => {
            let n = if s[0] == b'u' { 4 } else { 8 };
            let mut v: u32 = 0;
            for i in 1..=n {
                v = (v << 4) | hex(s.get(i))?;
            }
            if v == 0 {
                return None;
            }
            // systemd checks only \U for valid code points; a \u surrogate is encoded as
            // the (invalid) three-byte UTF-8 form, as its `utf8_encode_unichar()` does.
            if s[0] == b'U' && !char::from_u32(v).is_some_and(crate::value::unichar_is_valid) {
                return None;
            }
            let bytes = match char::from_u32(v) {
                Some(c) => c.encode_utf8(&mut [0u8; 4]).as_bytes().to_vec(),
                None => vec![
                    0xE0 | (v >> 12) as u8,
                    0x80 | ((v >> 6) & 0x3F) as u8,
                    0x80 | (v & 0x3F) as u8,
                ],
            };
            Some((bytes, n + 1))
        }
        b'0'..=b'7' => {
            let v = (oct(s.first())? << 6) | (oct(s.get(1))? << 3) | oct(s.get(2))?;
            (v != 0 && v <= 255).then(|| (vec![v as u8], 3))
        }
        _ => None,
    }
}

/// `extract_first_word(p, separators = WHITESPACE, flags)`.
///
/// Returns `Ok(None)` when only separators remain (systemd's `0`), `Ok(Some(word))` with
/// `*p` advanced past the word and the separators after it, or `Err` for `-EINVAL`.
pub(crate) fn extract_first_word(
    p: &mut &[u8],
    flags: Flags,
) -> Result<Option<Vec<u8>>, WordError> {
    let s = *p;
    let mut i = 0;
    while i < s.len() && is_ws(s[i]) {
        i += 1;
    }
    if i == s.len() {
        *p = &s[s.len()..];
        return Ok(None);
    }
    let mut out = Vec::new();
    let mut quote: Option<u8> = None;
    loop {
        let Some(&c) = s.get(i) else {
            // End of input.
            if let Some(_q) = quote {
                if flags.relax {
                    break;
                }
                return Err(WordError);
            }
            break;
        };
        if c == b'\\' {
            let Some(next) = s.get(i + 1) else {
                // Trailing backslash.
                if flags.unescape_relax && (quote.is_none() || flags.relax) {
                    out.push(b'\\');
                    i += 1;
                    break;
                }
                if flags.relax {
                    i += 1;
                    break;
                }
                return Err(WordError);
            };
            if flags.cunescape {
                if let Some((bytes, used)) = cunescape_one(&s[i + 1..]) {
                    out.extend_from_slice(&bytes);
                    i += 1 + used;
                } else if flags.unescape_relax {
                    out.push(b'\\');
                    out.push(*next);
                    i += 2;
                } else {
                    return Err(WordError);
                }
            } else {
                out.push(*next);
                i += 2;
            }
            continue;
        }
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                } else {
                    out.push(c);
                }
                i += 1;
            }
            None => {
                if flags.unquote && (c == b'\'' || c == b'"') {
                    quote = Some(c);
                    i += 1;
                } else if is_ws(c) {
                    while i < s.len() && is_ws(s[i]) {
                        i += 1;
                    }
                    break;
                } else {
                    out.push(c);
                    i += 1;
                }
            }
        }
    }
    *p = &s[i..];
    Ok(Some(out))
}

/// How `extract_first_word_and_warn()` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Warned {
    /// A word, possibly with the "unknown escape sequences" warning.
    Word(Vec<u8>, Option<String>),
    /// Nothing left.
    End,
    /// Unbalanced quoting even in relaxed mode.
    Unbalanced,
}

/// `extract_first_word_and_warn()`: on an escape error, retries keeping unknown escapes
/// verbatim and reports a warning.
pub(crate) fn extract_first_word_and_warn(p: &mut &[u8], flags: Flags) -> Warned {
    let save = *p;
    match extract_first_word(p, flags) {
        Ok(Some(w)) => Warned::Word(w, None),
        Ok(None) => Warned::End,
        Err(WordError) => {
            *p = save;
            let relaxed = Flags {
                unescape_relax: true,
                ..flags
            };
            match extract_first_word(p, relaxed) {
                Ok(Some(w)) => {
                    let msg = format!(
                        "Ignoring unknown escape sequences: \"{}\"",
                        String::from_utf8_lossy(&w)
                    );
                    Warned::Word(w, Some(msg))
                }
                Ok(None) => Warned::End,
                Err(WordError) => Warned::Unbalanced,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UQ_CU: Flags = Flags {
        unquote: true,
        cunescape: true,
        unescape_relax: false,
        relax: false,
    };

    fn words(s: &str, flags: Flags) -> Result<Vec<String>, WordError> {
        let mut p = s.as_bytes();
        let mut v = Vec::new();
        while let Some(w) = extract_first_word(&mut p, flags)? {
            v.push(String::from_utf8(w).unwrap());
        }
        Ok(v)
    }

    #[test]
    fn quoting_and_escapes() {
        assert_eq!(
            words(r#"  a "b c" mid"dle"x 'q\"' \x41\101\u00fc\s\t  "#, UQ_CU).unwrap(),
            ["a", "b c", "middlex", "q\"", "AAü \t"]
        );
        assert_eq!(words("\"\"", UQ_CU).unwrap(), [""]);
        assert_eq!(words("a\\q", UQ_CU), Err(WordError));
        assert_eq!(words("\"abc", UQ_CU), Err(WordError));
        assert_eq!(words("\\x00", UQ_CU), Err(WordError));
        assert_eq!(words("\\400", UQ_CU), Err(WordError));
        let relaxed = Flags {
            unescape_relax: true,
            ..UQ_CU
        };
        assert_eq!(
            words("a\\q a\\ b x\\", relaxed).unwrap(),
            ["a\\q", "a\\ b", "x\\"]
        );
    }

    #[test]
    fn warned_retry() {
        let mut p: &[u8] = b"a\\qb c";
        assert_eq!(
            extract_first_word_and_warn(&mut p, UQ_CU),
            Warned::Word(
                b"a\\qb".to_vec(),
                Some("Ignoring unknown escape sequences: \"a\\qb\"".into())
            )
        );
        assert_eq!(p, b"c");
        let mut p: &[u8] = b"'abc";
        assert_eq!(
            extract_first_word_and_warn(&mut p, UQ_CU),
            Warned::Unbalanced
        );
    }
}
