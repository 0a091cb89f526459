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

fn is_clean(key: &str) -> bool {
    if key == "/" {
        return true;
    }
    let Some(rest) = key.strip_prefix('/') else {
        return false;
    };
    rest.split('/').all(|s| !matches!(s, "" | "." | ".."))
}

/// The components of a clean key (none for the root).
pub(crate) fn components(clean_key: &str) -> impl Iterator<Item = &str> {
    clean_key[1..].split('/').filter(|s| !s.is_empty())
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
    }

    #[test]
    fn split_and_components() {
        assert_eq!(split("/a"), ("/", "a"));
        assert_eq!(split("/a/b/c"), ("/a/b", "c"));
        assert_eq!(components("/").count(), 0);
        assert_eq!(components("/a/b").collect::<Vec<_>>(), ["a", "b"]);
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
