//! Unit names and escaping: differential tests against the real `systemd-escape` (from
//! Debian's `systemd` package, installed by scripts/install-deps) and property tests.

use std::process::Command;

use proptest::prelude::*;
use unit_parser::name::{
    FleetNameError, NameKind, UnitName, escape, escape_path, unescape, unescape_bytes,
    unescape_path, validate_fleet_name,
};

/// Runs `systemd-escape ARGS -- INPUT...`; `Some(stdout without the final newline)` on
/// success, `None` when it fails. Panics if the tool is missing: the differential test must
/// not pass silently without its oracle.
fn systemd_escape(flags: &[&str], inputs: &[&str]) -> Option<String> {
    let bytes = systemd_escape_bytes(flags, inputs)?;
    Some(String::from_utf8(bytes).expect("systemd-escape printed UTF-8"))
}

/// As [`systemd_escape`], for `--unescape`, whose output is whatever bytes the escapes
/// name (`\xf0` alone is not UTF-8).
fn systemd_escape_bytes(flags: &[&str], inputs: &[&str]) -> Option<Vec<u8>> {
    let out = Command::new("systemd-escape")
        .args(flags)
        .arg("--")
        .args(inputs)
        .output()
        .expect(
            "systemd-escape must be installed (Debian package `systemd`; scripts/install-deps)",
        );
    if !out.status.success() {
        return None;
    }
    let mut s = out.stdout;
    assert_eq!(s.pop(), Some(b'\n'));
    Some(s)
}

/// Strings that exercise every escaping rule: ASCII with specials, dots, slashes, dashes,
/// backslashes and a few multi-byte characters. No NUL (cannot be an argument) and no
/// leading `-` needed since we pass `--`.
fn arg_string() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::char::range('a', 'z'),
            2 => prop::sample::select(vec!['.', '/', '-', '\\', ' ', '_', ':', '@', '%', 'Z', '0', 'x']),
            1 => prop::char::range('\u{1}', '\u{7f}'),
            1 => prop::sample::select(vec!['ü', '€', '😀', '\u{a0}']),
        ],
        0..16,
    )
    .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn escape_matches_systemd_escape(inputs in prop::collection::vec(arg_string(), 1..12)) {
        let args: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let theirs = systemd_escape(&[], &args).expect("plain escaping never fails");
        let ours: Vec<String> = inputs.iter().map(|s| escape(s)).collect();
        // Escaped strings never contain spaces, so the tool's space-joined output splits back.
        prop_assert_eq!(theirs, ours.join(" "));
    }

    #[test]
    fn path_escape_matches_systemd_escape(input in arg_string()) {
        let theirs = systemd_escape(&["--path"], &[&input]);
        prop_assert_eq!(theirs, escape_path(&input).ok(), "input {:?}", input);
    }

    #[test]
    fn unescape_matches_systemd_escape(input in arg_string(), raw in "[a-z\\\\x0-9A-F-]{0,12}") {
        for s in [escape(&input), raw] {
            let theirs = systemd_escape_bytes(&["--unescape"], &[&s]);
            prop_assert_eq!(&theirs, &unescape_bytes(&s).ok(), "input {:?}", s);
            // A result that is not UTF-8 (`\xf0` alone) is an error for the String API.
            let theirs = theirs.and_then(|b| String::from_utf8(b).ok());
            prop_assert_eq!(theirs, unescape(&s).ok(), "input {:?}", s);
            let theirs = systemd_escape_bytes(&["--unescape", "--path"], &[&s])
                .and_then(|b| String::from_utf8(b).ok());
            prop_assert_eq!(theirs, unescape_path(&s).ok(), "path input {:?}", s);
        }
    }

    #[test]
    fn escape_round_trips(s in "\\PC{0,40}") {
        let e = escape(&s);
        prop_assert!(e.bytes().all(|b| b.is_ascii_alphanumeric() || b":_.\\-".contains(&b)));
        prop_assert_eq!(unescape(&e).unwrap(), s);
    }

    #[test]
    fn path_escape_round_trips(parts in prop::collection::vec("[^/\0]{1,12}", 1..5)) {
        // `.` components are simplified away and `..` refused, so neither round-trips.
        prop_assume!(!parts.iter().any(|p| p == ".." || p == "."));
        let path = format!("/{}", parts.join("/"));
        let e = escape_path(&path).unwrap();
        prop_assert_eq!(unescape_path(&e).unwrap(), path);
    }

    #[test]
    fn name_parsers_never_panic(s in "\\PC{0,300}") {
        let _ = UnitName::parse(&s);
        let _ = validate_fleet_name(&s);
        let _ = escape_path(&s);
        let _ = unescape(&s);
        let _ = unescape_path(&s);
    }

    #[test]
    fn valid_names_have_consistent_parts(
        prefix in "[a-zA-Z0-9:_.\\\\-]{1,20}",
        instance in prop::option::of("[a-zA-Z0-9:_.\\\\@-]{0,20}"),
        ty in prop::sample::select(vec!["service", "socket", "timer", "mount", "target"]),
    ) {
        let name = match &instance {
            Some(i) => format!("{prefix}@{i}.{ty}"),
            None => format!("{prefix}.{ty}"),
        };
        let n = UnitName::parse(&name).unwrap();
        prop_assert_eq!(n.prefix(), prefix.as_str());
        prop_assert_eq!(n.instance(), instance.as_deref());
        let kind = match instance.as_deref() {
            None => NameKind::Plain,
            Some("") => NameKind::Template,
            Some(_) => NameKind::Instance,
        };
        prop_assert_eq!(n.kind(), kind);
        if let Some(t) = n.template() {
            prop_assert_eq!(t.as_str(), format!("{prefix}@.{ty}"));
        }
    }
}

#[test]
fn fleet_accepts_what_fleet_tests_accept() {
    // fleet's api/units_test.go TestValidateName, plus a 256-byte name.
    let long = format!("{}.service", "a".repeat(248));
    assert_eq!(long.len(), 256);
    for good in [
        "foo.service",
        "hello.mount",
        "foo@123.service",
        "foo@.service",
        "yo.yo.service",
        "hello@world.path",
        "hello:world.service",
        "yes@no\\.service",
        "foo-bar.mount",
        "jalapano_chips.service",
        long.as_str(),
    ] {
        assert_eq!(validate_fleet_name(good), Ok(()), "{good}");
    }
    let too_long = format!("a{long}");
    assert_eq!(validate_fleet_name(&too_long), Err(FleetNameError::TooLong));
    // systemd is one byte stricter.
    assert!(UnitName::parse(&long).is_err());
}

#[test]
fn every_fleet_name_message() {
    let cases: &[(&str, &str)] = &[
        ("", "unit name cannot be empty"),
        ("fooservice", "unit name must contain \".\""),
        ("bar@foo", "unit name must contain \".\""),
        ("foo.", "unit name cannot end in \".\""),
        ("foo.bar", "invalid unit type: \"bar\""),
        ("foo@1.swap", "invalid unit type for template: \"swap\""),
        ("this+that.mount", "invalid character '+' in unit name"),
        ("foo@{1..3}.service", "invalid character '{' in unit name"),
        ("tab\there.service", "invalid character '\\t' in unit name"),
        ("@foo.service", "unit name cannot start in \"@\""),
    ];
    for (name, msg) in cases {
        assert_eq!(
            validate_fleet_name(name).unwrap_err().to_string(),
            *msg,
            "{name:?}"
        );
    }
    assert_eq!(
        validate_fleet_name(&format!("{}.service", "x".repeat(250)))
            .unwrap_err()
            .to_string(),
        "unit name exceeds maximum length (256)"
    );
}

/// Found by a random run in CI: `\xf0` unescapes to a lone byte that is not UTF-8; systemd
/// prints it as is, the String API refuses it and the byte API gives it back.
#[test]
fn unescaping_to_bytes_that_are_not_utf8() {
    let s = "j\\xf0-1jf68";
    assert_eq!(
        systemd_escape_bytes(&["--unescape"], &[s]),
        Some(b"j\xf0/1jf68".to_vec())
    );
    assert_eq!(unescape_bytes(s).unwrap(), b"j\xf0/1jf68");
    assert!(unescape(s).is_err());
    assert!(unescape_path(s).is_err());
}
