//! Setting values: property tests (round trips, no panics) and systemd's documented examples.

use proptest::prelude::*;
use unit_parser::specifier::{SpecifierContext, expand};
use unit_parser::value::{
    Timespan, expand_exec_argv, parse_bool, parse_cpu_quota, parse_cpu_weight, parse_env_file,
    parse_environment, parse_environment_file, parse_exec, parse_memory_limit, parse_sec,
    parse_sec_fix_0, parse_size, parse_time,
};

/// Quotes one argument so systemd's Exec/Environment word splitting yields it back.
fn quote(arg: &str) -> String {
    let mut out = String::from("\"");
    for c in arg.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `systemd-analyze timespan TEXT`: `Ok(µs)`, or `Err(true)` for ERANGE, `Err(false)` for
/// EINVAL. Panics if the tool is missing: the differential test must not pass without it.
fn systemd_timespan(text: &str) -> Result<u64, bool> {
    let out = std::process::Command::new("systemd-analyze")
        .arg("timespan")
        .arg("--")
        .arg(text)
        .output()
        .expect("systemd-analyze must be installed (Debian package `systemd`)");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.contains("out of range"));
    }
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
    let us = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("\u{3bc}s: "))
        .expect("a µs line");
    Ok(us.parse().expect("a number"))
}

/// Text shaped like time spans, valid or nearly so.
fn timespan_text() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        4 => "[0-9]{1,4}",
        2 => "[0-9]{0,3}\\.[0-9]{0,7}",
        1 => "[0-9]{15,21}",
        1 => prop::sample::select(vec!["-", "+", ".", "infinity", "e3", "x"]).prop_map(str::to_owned),
    ];
    let unit = prop::sample::select(vec![
        "", "", "us", "usec", "\u{b5}s", "\u{3bc}s", "ms", "msec", "s", "sec", "second", "seconds",
        "m", "min", "minute", "minutes", "h", "hr", "hour", "hours", "d", "day", "days", "w",
        "week", "weeks", "M", "month", "months", "y", "year", "years", "ns", "S", "MIN", "mo",
    ]);
    let ws = prop::sample::select(vec!["", "", " ", "  ", "\t"]);
    prop::collection::vec((ws.clone(), atom, ws, unit), 1..4).prop_map(|parts| {
        parts
            .into_iter()
            .map(|(a, n, b, u)| format!("{a}{n}{b}{u}"))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn parse_sec_matches_systemd_analyze(text in timespan_text()) {
        // An argument cannot start with whitespace-only noise the shell would keep, but
        // systemd-analyze receives it verbatim through execve, so no filtering is needed.
        let ours = match parse_sec(&text) {
            Ok(t) => Ok(t.as_micros()),
            Err(unit_parser::value::TimespanError::OutOfRange(_)) => Err(true),
            Err(_) => Err(false),
        };
        prop_assert_eq!(ours, systemd_timespan(&text), "input {:?}", text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn timespan_display_parses_back(us in 0u64..u64::MAX / 2) {
        let t = Timespan::from_micros(us);
        prop_assert_eq!(parse_sec(&t.to_string()).unwrap(), t);
    }

    #[test]
    fn timespan_components_sum(h in 0u64..1000, m in 0u64..1000, s in 0u64..1000, ms in 0u64..1000) {
        let text = format!("{h}h {m}min{s}s {ms}ms");
        let want = ((h * 60 + m) * 60 + s) * 1_000_000 + ms * 1000;
        prop_assert_eq!(parse_sec(&text).unwrap().as_micros(), want);
    }

    #[test]
    fn exec_argv_round_trips(args in prop::collection::vec("[^\0]{0,12}", 0..6)) {
        let line = format!("/bin/prog {}", args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" "));
        let parsed = parse_exec(&line, None).unwrap();
        prop_assert_eq!(parsed.commands.len(), 1);
        let mut want = vec!["/bin/prog".to_owned()];
        want.extend(args);
        prop_assert_eq!(&parsed.commands[0].argv, &want);
        prop_assert!(parsed.warnings.is_empty());
    }

    #[test]
    fn environment_round_trips(vals in prop::collection::vec(("[A-Za-z_][A-Za-z0-9_]{0,6}", "[^\0]{0,10}"), 0..5)) {
        let line = vals.iter().map(|(k, v)| quote(&format!("{k}={v}"))).collect::<Vec<_>>().join(" ");
        let parsed = parse_environment(&line, None);
        let mut want: Vec<(String, String)> = Vec::new();
        for (k, v) in vals {
            match want.iter_mut().find(|(n, _)| *n == k) {
                Some(slot) => slot.1 = v,
                None => want.push((k, v)),
            }
        }
        prop_assert_eq!(parsed.vars, want);
    }

    #[test]
    fn value_parsers_never_panic(s in "\\PC{0,64}", b in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_bool(&s);
        let _ = parse_sec(&s);
        let _ = parse_sec_fix_0(&s);
        let _ = parse_time(&s, 60_000_000);
        let _ = parse_size(&s);
        let _ = parse_memory_limit(&s);
        let _ = parse_cpu_quota(&s);
        let _ = parse_cpu_weight(&s);
        let _ = parse_environment(&s, None);
        let _ = parse_environment_file(&s, None);
        let _ = parse_env_file(s.as_bytes());
        let _ = parse_env_file(&b);
        if let Ok(l) = parse_exec(&s, None) {
            for c in &l.commands {
                let _ = expand_exec_argv(c, &|_| Some("a 'b c"));
            }
        }
        let ctx = SpecifierContext::system(None);
        let _ = expand(&s, &ctx);
    }

    #[test]
    fn exec_shaped_input_never_panics(s in "[-@:+!;\\\\\"' $%{}a-z/\\x01]{0,40}") {
        let ctx = SpecifierContext::system(Some("a@b.service".parse().unwrap()));
        if let Ok(l) = parse_exec(&s, Some(&ctx)) {
            for c in &l.commands {
                prop_assert!(!c.path.is_empty());
                prop_assert!(!c.argv.is_empty());
            }
        }
    }
}

#[test]
fn systemd_time_documentation_examples() {
    // man systemd.time, "Parsing Time Spans".
    let cases = [
        ("2 h", 7_200_000_000u64),
        ("2hours", 7_200_000_000),
        ("48hr", 172_800_000_000),
        ("1y 12month", 31_557_600_000_000 + 12 * 2_629_800_000_000),
        ("55s500ms", 55_500_000),
        ("300ms20s 5day", 300_000 + 20_000_000 + 5 * 86_400_000_000),
    ];
    for (text, us) in cases {
        assert_eq!(parse_sec(text).unwrap().as_micros(), us, "{text}");
    }
    assert_eq!(parse_sec("infinity").unwrap(), Timespan::Infinity);
}

#[test]
fn systemd_service_documentation_examples() {
    // man systemd.service, "Command lines".
    let l = parse_exec("/bin/echo one ; /bin/echo \"two two\"", None).unwrap();
    let argv: Vec<_> = l.commands.iter().map(|c| c.argv.clone()).collect();
    assert_eq!(
        argv,
        [vec!["/bin/echo", "one"], vec!["/bin/echo", "two two"]]
    );
    let c = &parse_exec("/bin/echo $ONE $TWO $THREE", None)
        .unwrap()
        .commands[0];
    let env = |k: &str| match k {
        "ONE" => Some("one"),
        "TWO" => Some("two two"),
        "THREE" => Some(""),
        _ => None,
    };
    assert_eq!(
        expand_exec_argv(c, &env),
        ["/bin/echo", "one", "two", "two"]
    );
    let c = &parse_exec("/bin/echo ${ONE} ${TWO} ${THREE}", None)
        .unwrap()
        .commands[0];
    assert_eq!(
        expand_exec_argv(c, &env),
        ["/bin/echo", "one", "two two", ""]
    );
    let l = parse_environment("\"VAR1=word1 word2\" VAR2=word3 \"VAR3=$word 5 6\"", None);
    assert_eq!(l.vars.len(), 3);
    assert_eq!(l.vars[2], ("VAR3".to_owned(), "$word 5 6".to_owned()));
}
