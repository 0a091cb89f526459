//! Golden tests of the typed views: each `testdata/typed/NAME` unit file (named as the unit
//! it is, so specifiers resolve against that name) is read into every view, and the debug
//! rendering is compared with `NAME.expected`. Run with `UPDATE_GOLDEN=1` to rewrite the
//! expected files after a deliberate change, then review the diff.

use std::fmt::Write as _;
use std::path::Path;

use proptest::prelude::*;
use unit_parser::hash::{fleet_hash, fleet_hash_bytes};
use unit_parser::install::Install;
use unit_parser::name::UnitName;
use unit_parser::service::Service;
use unit_parser::specifier::SpecifierContext;
use unit_parser::unit_section::UnitSection;
use unit_parser::xfleet::{XFleet, validate};

fn render(name: &str, text: &str) -> String {
    let unit = match unit_parser::parse(text) {
        Ok(u) => u,
        Err(e) => return format!("parse error: {e}\n"),
    };
    let mut ctx = SpecifierContext::system(Some(UnitName::parse(name).expect("valid test name")));
    ctx.hostname = Some("node1.example.com".into());
    ctx.machine_id = Some("0123456789abcdef0123456789abcdef".into());
    ctx.boot_id = Some("fedcba9876543210fedcba9876543210".into());
    ctx.kernel_release = Some("6.1.0-13-amd64".into());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== [Unit]\n{:#?}",
        UnitSection::from_unit_with(&unit, Some(&ctx))
    );
    let _ = writeln!(out, "== [Service]");
    match Service::from_unit_with(&unit, Some(&ctx)) {
        Ok(s) => {
            let _ = writeln!(out, "{s:#?}");
        }
        Err(e) => {
            let _ = writeln!(out, "error (line {}): {e}", e.line());
        }
    }
    let _ = writeln!(
        out,
        "== [Install]\n{:#?}",
        Install::from_unit_with(&unit, Some(&ctx))
    );
    let _ = writeln!(out, "== [X-Fleet]");
    let parsed = XFleet::parse(&unit, Some(name));
    match validate(&unit) {
        Ok(()) => {
            let _ = writeln!(out, "valid");
        }
        Err(e) => {
            let _ = writeln!(out, "invalid (line {}): {e}", e.line());
        }
    }
    let _ = writeln!(out, "{:#?}", parsed.xfleet);
    for w in &parsed.warnings {
        let _ = writeln!(out, "warning line {}: {}", w.line, w.message);
    }
    let _ = writeln!(out, "== fleet hash");
    match fleet_hash(&unit) {
        Ok(h) => {
            let _ = writeln!(out, "{h}");
        }
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
        }
    }
    out
}

#[test]
fn typed_views_match_golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/typed");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .expect("testdata/typed exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| {
            p.extension().is_some_and(|e| {
                ["service", "socket", "timer", "target", "mount"]
                    .contains(&e.to_str().unwrap_or(""))
            })
        })
        .collect();
    inputs.sort();
    assert!(
        inputs.len() >= 5,
        "golden inputs missing in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for input in inputs {
        let name = input.file_name().unwrap().to_str().unwrap().to_owned();
        let text = std::fs::read_to_string(&input).unwrap();
        let got = render(&name, &text);
        let expected_path = dir.join(format!("{name}.expected"));
        if update {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("missing {}", expected_path.display()));
        if got != want {
            failures.push(format!("{name}:\n--- got ---\n{got}\n--- want ---\n{want}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn xfleet_from_unit_resolves_specifiers_after_validating_raw_values() {
    // Validation sees `%p@*.service` unresolved (as fleet does), so no peer matches it.
    let unit = unit_parser::parse(
        "[X-Fleet]\nConflicts=%p@*.service\nMachineOf=%p-db.service\nMachineMetadata=\"role=%i\" \"disk=ssd\"\n",
    )
    .unwrap();
    let x = XFleet::from_unit(&unit, "web@2.service").unwrap();
    assert_eq!(x.conflicts, ["web@*.service"]);
    assert_eq!(x.machine_of, ["web-db.service"]);
    assert_eq!(
        x.machine_metadata,
        [
            ("role".to_owned(), "2".to_owned()),
            ("disk".to_owned(), "ssd".to_owned())
        ]
    );
}

#[test]
fn every_xfleet_validation_message() {
    // (body, message, line of the assignment the error points at)
    let cases: &[(&str, &str, usize)] = &[
        (
            "Conflicts=foo.service\nMachineOf=foo.service",
            "unresolvable requirements: peer \"foo.service\" matches conflict \"foo.service\"",
            2,
        ),
        (
            "Conflicts=b*e\nMachineOf=baz.service",
            "unresolvable requirements: peer \"baz.service\" matches conflict \"b*e\"",
            2,
        ),
        (
            "Replaces=bar.service\nMachineOf=bar.service",
            "unresolvable requirements: peer \"bar.service\" matches replace \"bar.service\"",
            2,
        ),
        (
            "MachineID=abc\nMachineOf=x.service",
            "MachineID cannot be used with Peers",
            3,
        ),
        (
            "MachineID=abc\nConflicts=x.service",
            "MachineID cannot be used with Conflicts",
            3,
        ),
        (
            "X-ConditionMachineID=abc\nGlobal=true",
            "MachineID cannot be used with Global",
            3,
        ),
        (
            "MachineID=abc\nReplaces=x.service",
            "MachineID cannot be used with Replaces",
            3,
        ),
        (
            "Global=yes\nX-ConditionMachineOf=x.service",
            "Global cannot be used with Peers",
            3,
        ),
        (
            "Global=on\nReplaces=x.service",
            "Global cannot be used with Replaces",
            3,
        ),
        (
            "X-Conflicts=a.service\nReplaces=x.service",
            "Conflicts cannot be used with Replaces",
            3,
        ),
    ];
    for (body, msg, line) in cases {
        let unit = unit_parser::parse(&format!("[X-Fleet]\n{body}\n")).unwrap();
        let err = XFleet::from_unit(&unit, "u.service").unwrap_err();
        assert_eq!(err.to_string(), *msg, "{body}");
        assert_eq!(err.line(), *line, "{body}");
    }
    let long = format!("[Service]\nExecStart=/bin/echo {}\n", "x".repeat(2100));
    let unit = unit_parser::parse(&long).unwrap();
    assert_eq!(
        validate(&unit).unwrap_err().to_string(),
        "line too long (max 2048 bytes)"
    );
    for ok in [
        "",
        "Conflicts=foo.service\nConflicts=bar.service",
        "Conflicts=b*e\nMachineOf=foo.service",
        "Replaces=foo\nMachineOf=bar",
        "Global=true\nConflicts=x.service",
        "Global=12\nMachineOf=x.service",
        "MachineMetadata=a=b\nGlobal=true",
    ] {
        let unit = unit_parser::parse(&format!("[X-Fleet]\n{ok}\n")).unwrap();
        assert_eq!(validate(&unit), Ok(()), "{ok}");
    }
}

#[test]
fn fleet_hashes_equal_fleets_own_over_the_corpus() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata");
    let list = std::fs::read_to_string(base.join("typed/fleet-hashes.txt")).unwrap();
    let mut checked = 0;
    for line in list.lines().filter(|l| !l.starts_with('#')) {
        let (path, want) = line.split_once(' ').unwrap();
        let bytes = std::fs::read(base.join(path)).unwrap();
        let got = match fleet_hash_bytes(&bytes) {
            Ok(h) => h.to_string(),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(got, want, "{path}");
        checked += 1;
    }
    assert!(checked >= 90, "only {checked} files checked");
}

/// Unit-file-shaped text: headers, assignments of the keys the views read, continuations,
/// comments, quotes, escapes, specifiers.
fn unitish() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        prop::sample::select(vec![
            "[Unit]",
            "[Service]",
            "[Install]",
            "[X-Fleet]",
            "",
            "# c",
            "\\"
        ])
        .prop_map(str::to_owned),
        (
            prop::sample::select(vec![
                "Description",
                "After",
                "Documentation",
                "StartLimitBurst",
                "Type",
                "ExecStart",
                "ExecStop",
                "Environment",
                "EnvironmentFile",
                "TimeoutSec",
                "RestartSec",
                "KillSignal",
                "MemoryMax",
                "CPUQuota",
                "CPUWeight",
                "WorkingDirectory",
                "WantedBy",
                "Alias",
                "DefaultInstance",
                "MachineID",
                "MachineOf",
                "Conflicts",
                "Global",
                "Replaces",
                "MachineMetadata",
                "X-ConditionMachineOf",
                "Bogus",
            ]),
            "[ -~]{0,30}",
        )
            .prop_map(|(k, v)| format!("{k}={v}")),
    ];
    prop::collection::vec(line, 0..20).prop_map(|l| l.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn views_never_panic(text in unitish(), name in prop::sample::select(vec!["a.service", "a@b.service", "a@.service"])) {
        let rendered = render(name, &text);
        prop_assert!(rendered.contains("== fleet hash"));
        if let Ok(unit) = unit_parser::parse(&text) {
            let _ = XFleet::from_unit(&unit, name);
        }
    }

    #[test]
    fn glob_never_panics(pattern in "[a-c*?\\[\\]^\\\\/-]{0,12}", name in "[a-c/\\[\\]*?-]{0,12}") {
        let _ = unit_parser::xfleet::glob_match(&pattern, &name);
        // A pattern without metacharacters matches exactly itself.
        if !pattern.contains(['*', '?', '[', '\\']) {
            prop_assert_eq!(unit_parser::xfleet::glob_match(&pattern, &name), pattern == name);
        }
    }

    #[test]
    fn go_lexer_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = fleet_hash_bytes(&bytes);
    }
}

#[cfg(feature = "serde")]
#[test]
fn views_serialize_to_json() {
    let unit = unit_parser::parse("[X-Fleet]\nMachineOf=a.service\nConflicts=b* c*\n").unwrap();
    let x = serde_json::to_value(XFleet::from_unit(&unit, "u.service").unwrap()).unwrap();
    assert_eq!(x["machine_of"], serde_json::json!(["a.service"]));
    assert_eq!(x["conflicts"], serde_json::json!(["b*", "c*"]));
    assert_eq!(x["global"], serde_json::json!(false));
    // fleet stores the hash as a JSON array of the 20 byte values; the derive matches.
    let h = fleet_hash_bytes(b"[Service]\nExecStart=/bin/sleep 100\n").unwrap();
    assert_eq!(
        serde_json::to_value(h).unwrap(),
        serde_json::json!(h.as_bytes().to_vec())
    );
    let s = Service::from_unit(&unit_parser::parse("[Service]\nExecStart=-/bin/a b\n").unwrap())
        .unwrap();
    let s = serde_json::to_value(s).unwrap();
    assert_eq!(
        s["exec_start"][0]["argv"],
        serde_json::json!(["/bin/a", "b"])
    );
    assert_eq!(
        s["exec_start"][0]["flags"]["ignore_failure"],
        serde_json::json!(true)
    );
}

#[test]
fn xfleet_matches_fleets_own_code() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/typed/xfleet-fleet.jsonl");
    let text = std::fs::read_to_string(path).unwrap();
    let mut checked = 0;
    for line in text.lines().skip(1) {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        let name = case["name"].as_str().unwrap();
        let unit = unit_parser::parse(case["unit"].as_str().unwrap()).unwrap();
        let want = &case["fleet"];
        let x = XFleet::parse(&unit, Some(name)).xfleet;
        let ctx = format!("{name}: {}", case["unit"]);
        let list = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default()
        };
        assert_eq!(x.machine_id.is_some(), want["has_machine_id"], "{ctx}");
        assert_eq!(
            x.machine_id.clone().unwrap_or_default(),
            want["machine_id"],
            "{ctx}"
        );
        assert_eq!(x.machine_of, list(&want["peers"]), "{ctx}");
        assert_eq!(x.conflicts, list(&want["conflicts"]), "{ctx}");
        assert_eq!(x.replaces, list(&want["replaces"]), "{ctx}");
        assert_eq!(x.global, want["global"], "{ctx}");
        let mut md: Vec<String> = x
            .machine_metadata
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        md.sort();
        md.dedup();
        assert_eq!(md, list(&want["metadata"]), "{ctx}");
        // fleet iterates sets in random order, so which peer/pattern pair it reports first
        // is not fixed; the kind of error and the pairwise messages are.
        let ours = validate(&unit)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        let theirs = want["validate"].as_str().unwrap();
        if theirs.starts_with("unresolvable") {
            assert!(ours.starts_with("unresolvable"), "{ctx}: {ours}");
        } else {
            assert_eq!(ours, theirs, "{ctx}");
        }
        checked += 1;
    }
    assert!(checked >= 200, "only {checked} cases");
}

#[test]
fn real_units_read_cleanly() {
    // Units shipped by Debian's packages: every typed view reads them without a warning,
    // and every service passes systemd's verification.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/real");
    let mut services = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let unit = unit_parser::UnitFile::from_path(&path).unwrap();
        let ctx = UnitName::parse(&name)
            .ok()
            .filter(|n| !n.is_template())
            .map(|n| SpecifierContext::system(Some(n)));
        let u = UnitSection::from_unit_with(&unit, ctx.as_ref());
        assert_eq!(u.warnings, [], "{name}");
        assert!(u.description.is_some(), "{name}");
        assert_eq!(
            Install::from_unit_with(&unit, ctx.as_ref()).warnings,
            [],
            "{name}"
        );
        if name.ends_with(".service") {
            let s = Service::from_unit_with(&unit, ctx.as_ref())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(s.warnings, [], "{name}");
            services += 1;
        }
    }
    assert!(services >= 3);
}

#[test]
fn known_keys_equal_systemds_own_list() {
    // `systemd --dump-configuration-items` prints every setting the unit loader knows.
    let bin = ["/lib/systemd/systemd", "/usr/lib/systemd/systemd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("systemd (Debian package `systemd`) is required");
    let out = std::process::Command::new(bin)
        .arg("--dump-configuration-items")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut section = String::new();
    let mut theirs: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for line in text.lines() {
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_owned();
        } else if let Some((k, _)) = line.split_once('=') {
            theirs
                .entry(section.clone())
                .or_default()
                .insert(k.to_owned());
        }
    }
    let set = |keys: &[&str]| keys.iter().map(|k| (*k).to_owned()).collect();
    assert_eq!(theirs["Unit"], set(unit_parser::unit_section::KNOWN_KEYS));
    assert_eq!(theirs["Service"], set(unit_parser::service::KNOWN_KEYS));
    assert_eq!(theirs["Install"], set(unit_parser::install::KNOWN_KEYS));
}
