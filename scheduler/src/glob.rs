//! Glob patterns with the semantics of Go's `path.Match`, which fleet uses for `Conflicts=`
//! and `Replaces=`.
//!
//! `*` matches any run of characters except `/`, `?` one character except `/`, `[...]` a
//! class (`^` negates, `a-z` ranges, `\` escapes), and `\x` the character `x`. A malformed
//! pattern (an unclosed class, a trailing backslash) matches nothing, as in fleet, where
//! `path.Match` returns an error that the caller treats as "no match".

/// A compiled glob pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Glob {
    text: Box<str>,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Kind {
    /// No metacharacters: plain string equality.
    Literal,
    /// `prefix*suffix` with literal parts (the common `web@*.service` shape).
    Star { prefix: Box<str>, suffix: Box<str> },
    /// Anything else, matched by the general matcher.
    General,
    /// Malformed: matches nothing.
    Invalid,
}

impl Glob {
    /// Compiles `text`. Never fails: a malformed pattern simply matches nothing.
    pub fn new(text: &str) -> Glob {
        let kind = if !valid(text) {
            Kind::Invalid
        } else if !text.contains(['*', '?', '[', '\\']) {
            Kind::Literal
        } else {
            match text.split_once('*') {
                Some((p, s))
                    if !p.contains(['?', '[', '\\']) && !s.contains(['*', '?', '[', '\\']) =>
                {
                    Kind::Star {
                        prefix: p.into(),
                        suffix: s.into(),
                    }
                }
                _ => Kind::General,
            }
        };
        Glob {
            text: text.into(),
            kind,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The literal text every matching name starts with (empty when the pattern starts
    /// with a metacharacter). Used to index patterns by name prefix.
    pub fn literal_prefix(&self) -> &str {
        match &self.kind {
            Kind::Literal => &self.text,
            Kind::Star { prefix, .. } => prefix,
            Kind::General => {
                let end = self
                    .text
                    .find(['*', '?', '[', '\\'])
                    .unwrap_or(self.text.len());
                &self.text[..end]
            }
            Kind::Invalid => "",
        }
    }

    /// Whether the pattern can match anything at all.
    pub fn is_valid(&self) -> bool {
        self.kind != Kind::Invalid
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        match &self.kind {
            Kind::Literal => *self.text == *name,
            Kind::Star { prefix, suffix } => {
                name.len() >= prefix.len() + suffix.len()
                    && name.starts_with(&**prefix)
                    && name.ends_with(&**suffix)
                    && !name[prefix.len()..name.len() - suffix.len()].contains('/')
            }
            Kind::General => match_general(self.text.as_bytes(), name.as_bytes()),
            Kind::Invalid => false,
        }
    }
}

/// Checks the pattern's syntax the way Go does: classes must close and escapes must have a
/// character to escape.
fn valid(p: &str) -> bool {
    let b = p.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                if i + 1 >= b.len() {
                    return false;
                }
                i += 2;
            }
            b'[' => match class_end(b, i + 1) {
                Some(end) => i = end,
                None => return false,
            },
            _ => i += 1,
        }
    }
    true
}

/// Returns the index just past the `]` that closes a class starting at `i` (after `[`).
fn class_end(b: &[u8], mut i: usize) -> Option<usize> {
    if i < b.len() && b[i] == b'^' {
        i += 1;
    }
    let mut first = true;
    loop {
        if i >= b.len() {
            return None;
        }
        if b[i] == b']' && !first {
            return Some(i + 1);
        }
        first = false;
        // A range endpoint, possibly escaped.
        i = class_char_end(b, i)?;
        if i < b.len() && b[i] == b'-' && i + 1 < b.len() && b[i + 1] != b']' {
            i = class_char_end(b, i + 1)?;
        }
    }
}

fn class_char_end(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'\\' => {
            b.get(i + 1)?;
            Some(i + 2)
        }
        b'-' | b']' if i > 0 && b[i - 1] != b'[' && b[i - 1] != b'^' => None,
        _ => Some(i + utf8_len(b[i])),
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

fn decode(b: &[u8], i: usize) -> (char, usize) {
    let n = utf8_len(b[i]).min(b.len() - i);
    let c = std::str::from_utf8(&b[i..i + n])
        .ok()
        .and_then(|s| s.chars().next())
        .unwrap_or('\u{fffd}');
    (c, i + n)
}

/// Backtracking matcher over a pattern already known to be valid.
fn match_general(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    // Where to resume after the most recent `*`: (pattern index after the star, name index).
    let mut star: Option<(usize, usize)> = None;
    loop {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    star = Some((pi + 1, si));
                    pi += 1;
                    continue;
                }
                _ if si < s.len() => {
                    if let Some(next_p) = match_one(p, pi, s, si) {
                        let (_, next_s) = decode(s, si);
                        pi = next_p;
                        si = next_s;
                        continue;
                    }
                }
                _ => {}
            }
        } else if si == s.len() {
            return true;
        }
        // Mismatch: let the last star swallow one more character (never a '/').
        match star {
            Some((sp, ss)) if ss < s.len() && s[ss] != b'/' => {
                let (_, next) = decode(s, ss);
                star = Some((sp, next));
                pi = sp;
                si = next;
            }
            _ => return false,
        }
    }
}

/// Matches one pattern element at `pi` against the character at `si`; returns the pattern
/// index after the element.
fn match_one(p: &[u8], pi: usize, s: &[u8], si: usize) -> Option<usize> {
    let (c, _) = decode(s, si);
    match p[pi] {
        b'?' => (c != '/').then_some(pi + 1),
        b'\\' => {
            let (pc, next) = decode(p, pi + 1);
            (pc == c).then_some(next)
        }
        b'[' => {
            let mut i = pi + 1;
            let negate = p.get(i) == Some(&b'^');
            if negate {
                i += 1;
            }
            let mut hit = false;
            let mut first = true;
            while first || p[i] != b']' {
                first = false;
                let (lo, next) = class_char(p, i);
                i = next;
                let mut hi = lo;
                if p[i] == b'-' && p[i + 1] != b']' {
                    let (h, next) = class_char(p, i + 1);
                    hi = h;
                    i = next;
                }
                if lo <= c && c <= hi {
                    hit = true;
                }
            }
            (hit != negate && c != '/').then_some(i + 1)
        }
        _ => {
            let (pc, next) = decode(p, pi);
            (pc == c).then_some(next)
        }
    }
}

fn class_char(p: &[u8], i: usize) -> (char, usize) {
    if p[i] == b'\\' {
        decode(p, i + 1)
    } else {
        decode(p, i)
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn fleet_glob_table() {
        // engine/agent TestGlobMatches.
        let cases = [
            ("*", "foo.service", true),
            ("foo.*", "foo.socket", true),
            ("foo@*.service", "foo@12.service", true),
            ("foo@[abc].service", "foo@a.service", true),
            ("foo@[abc].service", "foo@d.service", false),
            ("foo@?.service", "foo@1.service", true),
            ("foo@?.service", "foo@12.service", false),
            ("web@*.service", "web.service", false),
            ("*bar*", "foobarbaz.service", true),
            ("*bar*", "foo.service", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("[^a]x", "bx", true),
            ("[^a]x", "ax", false),
            ("[a-c]x", "bx", true),
            ("\\*x", "*x", true),
            ("\\*x", "ax", false),
            ("a*", "a/b", false),
            ("[", "[", false),
            ("a\\", "a\\", false),
            ("ping.service", "ping.service", true),
            ("ping.service", "pong.service", false),
        ];
        for (p, n, want) in cases {
            assert_eq!(Glob::new(p).matches(n), want, "{p} vs {n}");
        }
    }

    #[test]
    fn literal_prefix() {
        assert_eq!(Glob::new("web@*.service").literal_prefix(), "web@");
        assert_eq!(Glob::new("a?b*").literal_prefix(), "a");
        assert_eq!(Glob::new("*x").literal_prefix(), "");
        assert_eq!(Glob::new("x.service").literal_prefix(), "x.service");
    }
}
