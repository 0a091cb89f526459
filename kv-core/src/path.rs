//! Key normalisation: etcd's `path.Clean(path.Join("/", key))`.

use std::borrow::Cow;

/// Normalises a key the way etcd does: absolute, no empty, `.` or `..` components, no
/// trailing slash; the root is `/`. Already-clean keys are borrowed, not copied.
pub fn clean(key: &str) -> Cow<'_, str> {
    if is_clean(key) {
        return Cow::Borrowed(key);
    }
    let mut parts: Vec<&str> = Vec::new();
    for seg in key.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    if parts.is_empty() {
        return Cow::Borrowed("/");
    }
    let mut out = String::with_capacity(key.len() + 1);
    for p in parts {
        out.push('/');
        out.push_str(p);
    }
    Cow::Owned(out)
}

/// Index of the first `/` in `b` at or after `from`. Eight bytes at a time: keys are
/// long runs of name bytes between a few slashes, and this runs on every request.
#[inline]
pub(crate) fn next_slash(b: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const SLASHES: u64 = ONES * b'/' as u64;
    let mut i = from;
    while i + 8 <= b.len() {
        let w = u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes")) ^ SLASHES;
        // The classic "has a zero byte" test: exact for the lowest zero byte, which is
        // the one we want (bytes above it may be false positives, never below).
        let zero = w.wrapping_sub(ONES) & !w & HIGHS;
        if zero != 0 {
            return Some(i + (zero.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b[i..].iter().position(|&c| c == b'/').map(|p| i + p)
}

/// `/`, or `/` followed by components separated by single slashes, none of them `.`
/// or `..`.
pub(crate) fn is_clean(key: &str) -> bool {
    let b = key.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    if b.len() == 1 {
        return true;
    }
    // Start of the current component (just after its slash).
    let mut start = 1;
    loop {
        let end = next_slash(b, start).unwrap_or(b.len());
        if matches!(&b[start..end], b"" | b"." | b"..") {
            return false;
        }
        if end == b.len() {
            return true;
        }
        start = end + 1;
    }
}

/// The components of a clean key (none for the root).
pub(crate) fn components(clean_key: &str) -> Components<'_> {
    Components {
        rest: clean_key.get(1..).unwrap_or(""),
    }
}

/// Iterator over the components of a clean key; cheaper than `str::split`, whose
/// `memchr` does not pay off on components of a few bytes.
pub(crate) struct Components<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Components<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let (c, rest) = match next_slash(self.rest.as_bytes(), 0) {
                Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
                None => (self.rest, ""),
            };
            self.rest = rest;
            if !c.is_empty() {
                return Some(c);
            }
        }
    }
}

/// Splits a clean, non-root key into its parent directory and last component.
pub(crate) fn split(clean_key: &str) -> (&str, &str) {
    let i = clean_key.rfind('/').unwrap_or(0);
    let parent = if i == 0 { "/" } else { &clean_key[..i] };
    (parent, &clean_key[i + 1..])
}

/// Whether `key` is `prefix` or lies below it (component-wise).
pub(crate) fn is_under(key: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    key.strip_prefix(prefix)
        .is_some_and(|r| r.is_empty() || r.starts_with('/'))
}

/// etcd's `isHidden(watchPath, keyPath)`: whether the part of `key` below the watched
/// ancestor `watch` has a component starting with `_`.
pub(crate) fn hidden_below(watch: &str, key: &str) -> bool {
    if watch.len() > key.len() {
        return false;
    }
    key[watch.len()..].split('/').any(|c| c.starts_with('_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_like_go() {
        for (i, o) in [
            ("", "/"),
            ("/", "/"),
            ("foo", "/foo"),
            ("/foo/", "/foo"),
            ("//a//b/", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/../../a", "/a"),
            ("/a/b/..", "/a"),
            ("/a b/ü", "/a b/ü"),
        ] {
            assert_eq!(clean(i), o, "{i:?}");
        }
        assert!(matches!(clean("/a/b"), Cow::Borrowed(_)));
        for k in ["/", "/a", "/a/b", "/.a/..b/c.", "/a b/ü"] {
            assert!(is_clean(k), "{k:?}");
        }
        for k in [
            "", "a", "//", "/a/", "/a//b", "/.", "/..", "/a/./b", "/a/../b", "/a/..",
        ] {
            assert!(!is_clean(k), "{k:?}");
        }
    }

    #[test]
    fn finds_slashes_like_a_plain_scan() {
        let key =
            b"/_coreos.com/fleet/job/unit-0001/object-0000000000000001-abcdefghij//x/\xc3\xa9/";
        for from in 0..=key.len() {
            let want = key[from..]
                .iter()
                .position(|&c| c == b'/')
                .map(|p| from + p);
            assert_eq!(next_slash(key, from), want, "from {from}");
        }
        // A byte just above '/' ('0') right below a slash must not hide it.
        assert_eq!(next_slash(b"000000/0", 0), Some(6));
        assert_eq!(next_slash(b"\x2e\x30/aaaaaaaaa", 0), Some(2));
    }

    #[test]
    fn split_and_components() {
        assert_eq!(split("/a"), ("/", "a"));
        assert_eq!(split("/a/b/c"), ("/a/b", "c"));
        assert_eq!(components("/").count(), 0);
        assert_eq!(components("/a/b").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(
            components("/ab/c/déf").collect::<Vec<_>>(),
            ["ab", "c", "déf"]
        );
        assert!(is_under("/a/b", "/a") && is_under("/a", "/a") && !is_under("/ab", "/a"));
        assert!(is_under("/x", "/"));
    }

    #[test]
    fn hidden_relative_to_watch() {
        assert!(hidden_below("/", "/_x"));
        assert!(hidden_below("/a", "/a/_b/c"));
        assert!(!hidden_below("/a/_b", "/a/_b/c"));
        assert!(!hidden_below("/a/b/c", "/a"));
    }
}
