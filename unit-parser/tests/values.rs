//! Setting values: property tests (round trips, no panics) and systemd's documented examples.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use proptest::prelude::*;
use unit_parser::exec::{ExecCommand, ExecFlags};
use unit_parser::name::{NameKind, UnitName};
use unit_parser::service::parse_signal;
use unit_parser::specifier::{SpecifierContext, expand};
use unit_parser::value::{
    Timespan, expand_exec_argv, parse_bool, parse_cpu_quota, parse_cpu_weight, parse_env_file,
    parse_environment, parse_environment_file, parse_exec, parse_memory_limit, parse_permyriad,
    parse_sec, parse_sec_fix_0, parse_size, parse_time, split_quoted, split_relaxed,
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
            // systemd's utf8_is_valid() refuses Unicode noncharacters, so such a value is an
            // invalid assignment, ignored.
            let nonchar = |c: char| (0xFDD0..=0xFDEF).contains(&(c as u32)) || (c as u32 & 0xFFFE) == 0xFFFE;
            if v.chars().any(nonchar) {
                continue;
            }
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

/// A C program calling systemd 252's own value parsers from `libsystemd-shared-252.so`.
/// Reads `OP HEX` lines; answers `ok NUMBER`, `ok COUNT :HEX :HEX...` (lists) or `err`.
const VALUE_ORACLE_C: &str = r#"
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int extract_first_word(const char **p, char **ret, const char *separators, int flags);
int load_env_file(FILE *f, const char *fname, char ***ret);
char **replace_env_argv(char **argv, char **env);
int parse_sec(const char *t, uint64_t *ret);
int parse_boolean(const char *v);
int parse_size(const char *t, uint64_t base, uint64_t *size);
int parse_permyriad(const char *p);
int signal_from_string(const char *s);
bool unit_name_is_valid(const char *n, int flags);
void log_set_max_level(int level);

enum { RELAX = 1 << 0, CUNESCAPE = 1 << 1, UNQUOTE = 1 << 5 };

static void hex(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) printf("%02x", (unsigned char) s[i]);
}

static void list(char **l) {
    int n = 0;
    for (char **i = l; i && *i; i++) n++;
    printf("ok %d", n);
    for (char **i = l; i && *i; i++) {
        printf(" :");
        hex(*i, strlen(*i));
    }
    putchar('\n');
}

static void words(const char *s, int flags) {
    char *out[4096];
    int n = 0;
    for (;;) {
        char *w = NULL;
        int r = extract_first_word(&s, &w, NULL, flags);
        if (r < 0) { puts("err"); return; }
        if (r == 0 || n == 4095) break;
        out[n++] = w;
    }
    out[n] = NULL;
    list(out);
}

int main(void) {
    static char line[1 << 20];
    log_set_max_level(0);
    while (fgets(line, sizeof line, stdin)) {
        char *sp = strchr(line, ' ');
        if (!sp) { puts("err"); continue; }
        *sp = 0;
        const char *op = line, *h = sp + 1;
        static char in[1 << 19];
        size_t n = 0;
        while (h[0] && h[1] && h[0] != '\n') {
            unsigned v;
            sscanf(h, "%2x", &v);
            in[n++] = (char) v;
            h += 2;
        }
        in[n] = 0;
        uint64_t u;
        int r;
        if (!strcmp(op, "sec")) {
            if (parse_sec(in, &u) < 0) puts("err"); else printf("ok %llu\n", (unsigned long long) u);
        } else if (!strcmp(op, "bool")) {
            r = parse_boolean(in);
            if (r < 0) puts("err"); else printf("ok %d\n", r);
        } else if (!strcmp(op, "size")) {
            if (parse_size(in, 1024, &u) < 0) puts("err"); else printf("ok %llu\n", (unsigned long long) u);
        } else if (!strcmp(op, "perm")) {
            r = parse_permyriad(in);
            if (r < 0) puts("err"); else printf("ok %d\n", r);
        } else if (!strcmp(op, "sig")) {
            r = signal_from_string(in);
            if (r <= 0) puts("err"); else printf("ok %d\n", r);
        } else if (!strcmp(op, "name")) {
            printf("ok %d\n", unit_name_is_valid(in, 1) | unit_name_is_valid(in, 2) << 1 | unit_name_is_valid(in, 4) << 2);
        } else if (!strcmp(op, "words")) {
            words(in, UNQUOTE | CUNESCAPE);
        } else if (!strcmp(op, "relaxed")) {
            words(in, UNQUOTE | RELAX);
        } else if (!strcmp(op, "envfile")) {
            if (n == 0) { puts("ok 0"); continue; } /* fmemopen() refuses empty buffers */
            FILE *f = fmemopen(in, n, "r");
            char **l = NULL;
            if (!f || load_env_file(f, "oracle", &l) < 0) puts("err"); else list(l);
            if (f) fclose(f);
        } else if (!strcmp(op, "argv")) {
            /* env entries, an empty entry, then argv entries; all NUL-terminated */
            char *env[256], *argv[256];
            int ne = 0, na = 0, in_env = 1;
            for (size_t i = 0; i < n && ne < 255 && na < 255;) {
                char *e = in + i;
                size_t len = strlen(e);
                if (in_env && len == 0) in_env = 0;
                else if (in_env) env[ne++] = e;
                else argv[na++] = e;
                i += len + 1;
            }
            env[ne] = NULL;
            argv[na] = NULL;
            list(replace_env_argv(argv, env));
        } else puts("err");
        fflush(stdout);
    }
    return 0;
}
"#;

fn find_libsystemd_shared() -> Option<PathBuf> {
    for d in [
        "/usr/lib/x86_64-linux-gnu/systemd",
        "/usr/lib/aarch64-linux-gnu/systemd",
        "/usr/lib/systemd",
        "/lib/systemd",
        "/usr/lib64/systemd",
    ] {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("libsystemd-shared-") && name.ends_with(".so") {
                return Some(e.path());
            }
        }
    }
    None
}

/// Builds the oracle once. Panics if it cannot: these tests must not pass without it
/// (scripts/install-deps installs `systemd` and `gcc`).
fn value_oracle() -> &'static Path {
    static ORACLE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &ORACLE
        .get_or_init(|| {
            let lib = find_libsystemd_shared()
                .expect("libsystemd-shared-*.so (Debian package `systemd`) is required");
            let dir = tempfile::tempdir().unwrap();
            let src = dir.path().join("value_oracle.c");
            std::fs::write(&src, VALUE_ORACLE_C).unwrap();
            let bin = dir.path().join("value_oracle");
            let libdir = lib.parent().unwrap();
            let out = Command::new("cc")
                .arg("-o")
                .arg(&bin)
                .arg(&src)
                .arg(format!("-L{}", libdir.display()))
                .arg(format!("-l:{}", lib.file_name().unwrap().to_string_lossy()))
                .arg(format!("-Wl,-rpath,{}", libdir.display()))
                .output()
                .expect("a C compiler (`cc`) is required");
            assert!(
                out.status.success(),
                "oracle build failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            (dir, bin)
        })
        .1
}

/// Asks systemd: one answer per `(op, input)`: the text after `ok `, or `None` for `err`.
fn ask_systemd(requests: &[(&str, Vec<u8>)]) -> Vec<Option<String>> {
    let mut child = Command::new(value_oracle())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for (op, bytes) in requests {
        input.push_str(op);
        input.push(' ');
        for b in bytes {
            input.push_str(&format!("{b:02x}"));
        }
        input.push('\n');
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let answers: Vec<_> = text
        .lines()
        .map(|l| l.strip_prefix("ok ").map(str::to_owned))
        .collect();
    assert_eq!(answers.len(), requests.len(), "oracle answered {text:?}");
    answers
}

/// Decodes a list answer (`COUNT :HEX :HEX...`).
fn hex_list(answer: &str) -> Vec<Vec<u8>> {
    let mut parts = answer.split(' ');
    let n: usize = parts.next().unwrap().parse().unwrap();
    let items: Vec<Vec<u8>> = parts
        .map(|p| {
            let h = p.strip_prefix(':').unwrap();
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect()
        })
        .collect();
    assert_eq!(items.len(), n);
    items
}

/// Text rich in what word splitting and escaping care about.
fn wordish() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(vec!['a', 'b', 'x', 'u', 'U', 'n', 't', 's', '0', '1', '7', '9', 'd', 'f', 'F', '8', 'A', '$', '{', '}', '=', ';']),
            3 => prop::sample::select(vec![' ', '\\', '"', '\'', '\t', '\n']),
            1 => prop::sample::select(vec!['ü', '\u{1}', '#']),
        ],
        0..24,
    )
    .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn word_splitting_matches_systemd(inputs in prop::collection::vec(wordish(), 1..16)) {
        let mut req = Vec::new();
        for s in &inputs {
            req.push(("words", s.as_bytes().to_vec()));
            req.push(("relaxed", s.as_bytes().to_vec()));
        }
        let answers = ask_systemd(&req);
        for (i, s) in inputs.iter().enumerate() {
            let theirs = answers[2 * i].as_deref().map(hex_list);
            prop_assert_eq!(split_quoted(s).ok(), theirs, "words {:?}", s);
            let theirs = hex_list(answers[2 * i + 1].as_deref().expect("relaxed never fails"));
            prop_assert_eq!(split_relaxed(s), theirs, "relaxed {:?}", s);
        }
    }

    #[test]
    fn env_files_match_systemd(files in prop::collection::vec(
        prop::collection::vec(
            prop_oneof![
                3 => "[A-Za-z_][A-Za-z0-9_]{0,3}",
                1 => prop::sample::select(vec!["=", " ", "\t", "\n", "\r", "\\", "\\\n", "\"", "'", "#", ";", "$", "`", "x y", "\u{e9}"]).prop_map(str::to_owned),
            ],
            0..20,
        ).prop_map(|v| v.concat()),
        1..12,
    )) {
        let req: Vec<_> = files.iter().map(|f| ("envfile", f.as_bytes().to_vec())).collect();
        let answers = ask_systemd(&req);
        for (f, a) in files.iter().zip(answers) {
            let theirs = a.as_deref().map(hex_list);
            let ours = parse_env_file(f.as_bytes()).ok().map(|vars| {
                vars.into_iter().map(|(k, v)| format!("{k}={v}").into_bytes()).collect::<Vec<_>>()
            });
            // systemd keeps the order of first appearance and replaces in place, as we do.
            prop_assert_eq!(ours, theirs, "env file {:?}", f);
        }
    }

    #[test]
    fn exec_env_expansion_matches_systemd(
        env in prop::collection::vec(("[ABC]", "[a-c '\"\\$]{0,6}"), 0..4),
        args in prop::collection::vec(prop_oneof![
            "\\$[ABCD]",
            "\\$\\{[ABCD]\\}",
            "[a-c$]{0,2}\\$\\{[ABD]\\}[a-c$]{0,2}",
            "[a-c${}:-]{0,6}",
        ], 1..6),
    ) {
        let env_lines: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut packed = Vec::new();
        for e in &env_lines {
            packed.extend_from_slice(e.as_bytes());
            packed.push(0);
        }
        packed.push(0);
        for a in &args {
            packed.extend_from_slice(a.as_bytes());
            packed.push(0);
        }
        let theirs = hex_list(ask_systemd(&[("argv", packed)])[0].as_deref().unwrap());
        let cmd = ExecCommand { path: "/bin/x".into(), argv: args.clone(), flags: ExecFlags::default() };
        // systemd's strv_env_get() finds the last assignment of a name.
        let lookup = |name: &str| env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let ours: Vec<Vec<u8>> = expand_exec_argv(&cmd, &lookup).into_iter().map(String::into_bytes).collect();
        prop_assert_eq!(ours, theirs, "env {:?} args {:?}", env_lines, args);
    }

    #[test]
    fn scalar_values_match_systemd(inputs in prop::collection::vec(prop_oneof![
        "[ ]?[+-]?[0-9]{0,3}(\\.[0-9]{0,3})?[ ]?[KMGTPEBk%\u{2030}\u{2031}]?[ ]?",
        "[0-9]{0,20}\\.[0-9]{0,25}[EPTGMKB]",
        "[ +-]?(0x|0X|0b|0B|0o|0O|0)?[ +-]?[0-9a-f]{0,3}[%]?",
        "[0-9]{1,3}[ ][0-9]{1,3}[KMG]",
        prop::sample::select(vec!["yes", "No", "TRUE", "t", "on", "oFf", "2", "", " 1", "y", "enable"]).prop_map(str::to_owned),
        "(SIG)?(TERM|KILL|HUP|RTMIN|RTMAX|RTMIN\\+[0-9]{1,2}|RTMAX-[0-9]{1,2}|POLL|IO|[0-9]{1,2}|term)",
        "[a-z@.:_\\\\-]{0,8}\\.(service|socket|mount|Service|snapshot|)",
    ], 1..24)) {
        let mut req = Vec::new();
        for s in &inputs {
            for op in ["bool", "size", "perm", "sig", "name"] {
                req.push((op, s.as_bytes().to_vec()));
            }
        }
        let answers = ask_systemd(&req);
        for (i, s) in inputs.iter().enumerate() {
            let a = &answers[5 * i..5 * i + 5];
            let num = |x: &Option<String>| x.as_deref().map(|t| t.parse::<u64>().unwrap());
            prop_assert_eq!(parse_bool(s).ok().map(u64::from), num(&a[0]), "bool {:?}", s);
            prop_assert_eq!(parse_size(s).ok(), num(&a[1]), "size {:?}", s);
            prop_assert_eq!(parse_permyriad(s, false).ok().map(u64::from), num(&a[2]), "permyriad {:?}", s);
            prop_assert_eq!(parse_signal(s).map(|n| n as u64), num(&a[3]), "signal {:?}", s);
            let kind = match UnitName::parse(s).map(|n| n.kind()) {
                Ok(NameKind::Plain) => 1,
                // systemd's UNIT_NAME_TEMPLATE is 1 << 1, UNIT_NAME_INSTANCE 1 << 2.
                Ok(NameKind::Template) => 2,
                Ok(NameKind::Instance) => 4,
                Err(_) => 0,
            };
            prop_assert_eq!(Some(kind), num(&a[4]), "name {:?}", s);
        }
    }
}

/// A C program running systemd 252's own `config_parse_exec()`, `config_parse_environ()` and
/// `config_parse_unit_env_file()` (from libsystemd-core) for a unit named `web@8080.service`,
/// one `OP HEX` request per input line. Exec answers are `err` when systemd refuses the unit
/// (`-ENOEXEC`), else `ok N` and per command ` :PATH/FLAGS/ARGC/ARG.ARG...` (hex strings);
/// the others answer with the resulting string list (`ok N :HEX...`).
const EXEC_ORACLE_C: &str = r#"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct Manager Manager;
typedef struct Unit Unit;
int manager_new(int scope, int test_run_flags, Manager **m);
Unit *unit_new(Manager *m, size_t size);
int unit_add_name(Unit *u, const char *text);
typedef int (*ConfigParser)(const char *unit, const char *filename, unsigned line,
                            const char *section, unsigned section_line, const char *lvalue,
                            int ltype, const char *rvalue, void *data, void *userdata);
int config_parse_exec(const char *, const char *, unsigned, const char *, unsigned,
                      const char *, int, const char *, void *, void *);
int config_parse_environ(const char *, const char *, unsigned, const char *, unsigned,
                         const char *, int, const char *, void *, void *);
int config_parse_unit_env_file(const char *, const char *, unsigned, const char *, unsigned,
                               const char *, int, const char *, void *, void *);
void log_set_max_level(int level);

/* systemd 252's ExecCommand: path, argv, ExecStatus (2 dual timestamps, pid, code,
 * status), flags, list links. */
struct ExecStatus { uint64_t t[4]; int pid, code, status; };
struct ExecCommand {
    char *path;
    char **argv;
    struct ExecStatus st;
    int flags;
    struct ExecCommand *next, *prev;
};

static void hex(const char *s) {
    for (; *s; s++) printf("%02x", (unsigned char) *s);
}

int unit_full_printf_full(const Unit *u, const char *text, size_t max_length, char **ret);

int main(int argc, char **argv) {
    static char line[1 << 20], in[1 << 19];
    const char *name = argc > 1 ? argv[1] : "web@8080.service";
    Manager *m = NULL;
    log_set_max_level(0);
    /* MANAGER_TEST_RUN_MINIMAL: nothing is started or touched. System scope when
     * possible, else a user manager under a private runtime directory. */
    if (manager_new(0, 1, &m) < 0 && manager_new(2, 1, &m) < 0) {
        fprintf(stderr, "manager_new failed\n");
        return 2;
    }
    Unit *u = unit_new(m, 1 << 16);
    if (!u || unit_add_name(u, name) < 0) {
        fprintf(stderr, "unit_new failed\n");
        return 2;
    }
    while (fgets(line, sizeof line, stdin)) {
        size_t n = 0;
        char *h = strchr(line, ' ');
        if (!h) return 3;
        *h++ = 0;
        for (; h[0] && h[1] && h[0] != '\n'; h += 2) {
            unsigned v;
            sscanf(h, "%2x", &v);
            in[n++] = (char) v;
        }
        in[n] = 0;
        if (!strcmp(line, "printf")) {
            char *r = NULL;
            if (unit_full_printf_full(u, in, (size_t) -1, &r) < 0) puts("err");
            else { printf("ok 1 :"); hex(r); putchar('\n'); }
            fflush(stdout);
            continue;
        }
        if (strcmp(line, "exec")) {
            /* Environment= / EnvironmentFile=: a string list, printed like the lists above. */
            ConfigParser p = strcmp(line, "environ") ? config_parse_unit_env_file : config_parse_environ;
            char **l = NULL;
            int r = p(name, "oracle", 1, "Service", 1, line, 0, in, &l, u);
            if (r < 0) { puts("err"); fflush(stdout); continue; }
            int count = 0;
            for (char **i = l; i && *i; i++) count++;
            printf("ok %d", count);
            for (char **i = l; i && *i; i++) { printf(" :"); hex(*i); }
            putchar('\n');
            fflush(stdout);
            continue;
        }
        struct ExecCommand *list = NULL;
        int r = config_parse_exec(name, "oracle", 1, "Service", 1, "ExecStart", 0, in, &list, u);
        if (r < 0) {
            puts("err");
        } else {
            int count = 0;
            for (struct ExecCommand *c = list; c; c = c->next) count++;
            printf("ok %d", count);
            for (struct ExecCommand *c = list; c; c = c->next) {
                int argc = 0;
                for (char **a = c->argv; a && *a; a++) argc++;
                printf(" :");
                hex(c->path);
                printf("/%d/%d/", c->flags, argc);
                for (char **a = c->argv; a && *a; a++) {
                    if (a != c->argv) putchar('.');
                    hex(*a);
                }
            }
            putchar('\n');
        }
        fflush(stdout);
    }
    return 0;
}
"#;

/// Builds the Exec oracle once (see [`value_oracle`] for why it panics when it cannot).
fn exec_oracle() -> &'static Path {
    static ORACLE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &ORACLE
        .get_or_init(|| {
            let lib = find_libsystemd_shared()
                .expect("libsystemd-shared-*.so (Debian package `systemd`) is required");
            let libdir = lib.parent().unwrap();
            let core = std::fs::read_dir(libdir)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n.starts_with("libsystemd-core-") && n.ends_with(".so"))
                .expect("libsystemd-core-*.so (Debian package `systemd`) is required");
            let dir = tempfile::tempdir().unwrap();
            let src = dir.path().join("exec_oracle.c");
            std::fs::write(&src, EXEC_ORACLE_C).unwrap();
            let bin = dir.path().join("exec_oracle");
            let out = Command::new("cc")
                .arg("-o")
                .arg(&bin)
                .arg(&src)
                .arg(format!("-L{}", libdir.display()))
                .arg(format!("-l:{core}"))
                .arg(format!("-l:{}", lib.file_name().unwrap().to_string_lossy()))
                .arg(format!("-Wl,-rpath,{}", libdir.display()))
                .output()
                .expect("a C compiler (`cc`) is required");
            assert!(
                out.status.success(),
                "exec oracle build failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            (dir, bin)
        })
        .1
}

fn unhex(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

/// One parsed command as systemd reports it: path, flag bits, argv.
type OracleCommand = (Vec<u8>, u32, Vec<Vec<u8>>);

/// systemd's verdict on each Exec value: `None` if it refuses the unit.
fn ask_systemd_exec(values: &[String]) -> Vec<Option<Vec<OracleCommand>>> {
    let runtime = tempfile::tempdir().unwrap();
    let mut child = Command::new(exec_oracle())
        .env("XDG_RUNTIME_DIR", runtime.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for v in values {
        input.push_str("exec ");
        for b in v.bytes() {
            input.push_str(&format!("{b:02x}"));
        }
        input.push('\n');
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "exec oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let answers: Vec<_> = text
        .lines()
        .map(|l| {
            let rest = l.strip_prefix("ok ")?;
            let mut parts = rest.split(' ');
            let n: usize = parts.next().unwrap().parse().unwrap();
            let cmds: Vec<OracleCommand> = parts
                .map(|p| {
                    let mut f = p.strip_prefix(':').unwrap().splitn(4, '/');
                    let path = unhex(f.next().unwrap());
                    let flags = f.next().unwrap().parse().unwrap();
                    let argc: usize = f.next().unwrap().parse().unwrap();
                    let argv: Vec<Vec<u8>> = match argc {
                        0 => Vec::new(),
                        _ => f.next().unwrap().split('.').map(unhex).collect(),
                    };
                    assert_eq!(argv.len(), argc);
                    (path, flags, argv)
                })
                .collect();
            assert_eq!(cmds.len(), n);
            Some(cmds)
        })
        .collect();
    assert_eq!(answers.len(), values.len(), "exec oracle answered {text:?}");
    answers
}

/// Exec values: prefixes, quoting, escapes, separators and unit-name specifiers.
fn exec_value() -> impl Strategy<Value = String> {
    let prefix = prop::sample::select(vec![
        "", "", "", "-", "@", ":", "+", "!", "!!", "-@", "@-", "+!", "!+", "--", ":-!",
    ]);
    let path = prop::sample::select(vec![
        "/bin/echo",
        "/usr//bin/./x",
        "/bin/",
        "bin/x",
        "true",
        "/bin/%p",
        "/bin/%z",
        "\"/bin/q u\"",
        "/bin/a\\tb",
        "'/bin/x'",
        "",
        "/bin/e\\x41",
    ]);
    let word = prop_oneof![
        3 => "[a-c]{1,3}",
        2 => prop::sample::select(vec![
            ";", "\\;", "\\\\;", "\";\"", "x;", "'a b'", "\"c d\"", "mid\"dle\"", "\\x41", "\\101", "\\q", "a\\ b",
            "\\u00fc", "\\n", "%i", "%I", "%n", "%N", "%p", "%P", "%j", "%f", "%%", "%z", "100%", "$X", "${Y}", "\"unterminated", "\\",
        ]).prop_map(str::to_owned),
    ];
    let command = (prefix, path, prop::collection::vec(word, 0..5))
        .prop_map(|(pre, p, w)| format!("{pre}{p} {}", w.join(" ")));
    prop::collection::vec(command, 1..3).prop_map(|c| c.join(" ; "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn exec_lines_match_systemd(values in prop::collection::vec(exec_value(), 1..12)) {
        let ctx = SpecifierContext::system(Some("web@8080.service".parse().unwrap()));
        let answers = ask_systemd_exec(&values);
        for (v, theirs) in values.iter().zip(answers) {
            let ours = parse_exec(v, Some(&ctx)).ok().map(|line| {
                line.commands
                    .into_iter()
                    .map(|c| {
                        let f = c.flags;
                        // systemd 252's ExecCommandFlags bits.
                        let bits = u32::from(f.ignore_failure)
                            | u32::from(f.full_privileges) << 1
                            | u32::from(f.no_setuid) << 2
                            | u32::from(f.ambient_magic) << 3
                            | u32::from(f.no_env_expand) << 4;
                        (c.path.into_bytes(), bits, c.argv.into_iter().map(String::into_bytes).collect::<Vec<_>>())
                    })
                    .collect::<Vec<_>>()
            });
            prop_assert_eq!(ours, theirs, "value {:?}", v);
        }
    }
}

/// systemd's resulting list for each `Environment=` (`op` = "environ") or `EnvironmentFile=`
/// (`op` = "envfile") value, each applied to an empty list.
fn ask_systemd_list(op: &str, values: &[String]) -> Vec<Vec<Vec<u8>>> {
    let runtime = tempfile::tempdir().unwrap();
    let mut child = Command::new(exec_oracle())
        .env("XDG_RUNTIME_DIR", runtime.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for v in values {
        input.push_str(op);
        input.push(' ');
        for b in v.bytes() {
            input.push_str(&format!("{b:02x}"));
        }
        input.push('\n');
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let answers: Vec<_> = text
        .lines()
        .map(|l| {
            hex_list(
                l.strip_prefix("ok ")
                    .expect("these settings never fail the unit"),
            )
        })
        .collect();
    assert_eq!(answers.len(), values.len(), "oracle answered {text:?}");
    answers
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn environment_settings_match_systemd(values in prop::collection::vec(
        prop::collection::vec(prop_oneof![
            3 => "[A-C_][A-C0-9_]{0,2}=[a-c ]{0,3}",
            2 => prop::sample::select(vec![
                "\"A=x y\"", "'B=$z'", "C=\\x41", "D=\\q", "E=\"open", "1X=y", "A-B=c", "NOEQ", "=x",
                "P=%i", "Q=%z", "R=%%", "S=\\t", "T=ü",
            ]).prop_map(str::to_owned),
        ], 1..5).prop_map(|w| w.join(" ")),
        1..10,
    )) {
        let ctx = SpecifierContext::system(Some("web@8080.service".parse().unwrap()));
        let answers = ask_systemd_list("environ", &values);
        for (v, theirs) in values.iter().zip(answers) {
            let ours: Vec<Vec<u8>> = parse_environment(v, Some(&ctx))
                .vars
                .into_iter()
                .map(|(k, val)| format!("{k}={val}").into_bytes())
                .collect();
            prop_assert_eq!(ours, theirs, "Environment={}", v);
        }
    }

    #[test]
    fn environment_files_match_systemd(values in prop::collection::vec(
        prop::sample::select(vec![
            "/etc/x", "-/etc/x", "etc/x", "-etc/x", "/etc/%i.env", "-/etc/%p dir/f", "/etc/%z", "--/x", "-", "/a b",
        ]).prop_map(str::to_owned),
        1..10,
    )) {
        let ctx = SpecifierContext::system(Some("web@8080.service".parse().unwrap()));
        let answers = ask_systemd_list("envfile", &values);
        for (v, theirs) in values.iter().zip(answers) {
            // systemd stores the path with its `-` prefix.
            let ours: Vec<Vec<u8>> = parse_environment_file(v, Some(&ctx))
                .ok()
                .map(|f| format!("{}{}", if f.ignore_missing { "-" } else { "" }, f.path).into_bytes())
                .into_iter()
                .collect();
            prop_assert_eq!(ours, theirs, "EnvironmentFile={}", v);
        }
    }
}

/// systemd's expansion of each text for a unit named `unit` (`None` where it fails).
fn ask_systemd_printf(unit: &str, texts: &[String]) -> Vec<Option<String>> {
    let runtime = tempfile::tempdir().unwrap();
    let mut child = Command::new(exec_oracle())
        .arg(unit)
        .env("XDG_RUNTIME_DIR", runtime.path())
        .env_remove("TMPDIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for t in texts {
        input.push_str("printf ");
        for b in t.bytes() {
            input.push_str(&format!("{b:02x}"));
        }
        input.push('\n');
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let answers: Vec<_> = text
        .lines()
        .map(|l| {
            let list = hex_list(l.strip_prefix("ok ")?);
            Some(String::from_utf8(list.into_iter().next().unwrap()).unwrap())
        })
        .collect();
    assert_eq!(answers.len(), texts.len(), "oracle answered {text:?}");
    answers
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// A specifier context filled from this machine the way systemd fills it, so that both
/// sides expand host specifiers to the same values.
fn this_machine(unit: &str) -> SpecifierContext {
    let mut c = SpecifierContext::system(Some(unit.parse().unwrap()));
    c.hostname = read_trimmed("/proc/sys/kernel/hostname");
    c.pretty_hostname = std::fs::read("/etc/machine-info")
        .ok()
        .and_then(|b| parse_env_file(&b).ok())
        .and_then(|vars| {
            vars.into_iter()
                .find(|(k, _)| k == "PRETTY_HOSTNAME")
                .map(|(_, v)| v)
        });
    c.machine_id = read_trimmed("/etc/machine-id").filter(|m| !m.is_empty());
    c.boot_id = read_trimmed("/proc/sys/kernel/random/boot_id").map(|b| b.replace('-', ""));
    c.kernel_release = read_trimmed("/proc/sys/kernel/osrelease");
    c.architecture = Some(
        match std::env::consts::ARCH {
            "x86_64" => "x86-64",
            "aarch64" => "arm64",
            other => other,
        }
        .to_owned(),
    );
    let os = std::fs::read("/etc/os-release")
        .or_else(|_| std::fs::read("/usr/lib/os-release"))
        .ok()
        .and_then(|b| parse_env_file(&b).ok())
        .unwrap_or_default();
    let get = |k: &str| os.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    c.os_id = get("ID");
    c.os_version_id = get("VERSION_ID");
    c.os_variant_id = get("VARIANT_ID");
    c.os_build_id = get("BUILD_ID");
    c.os_image_id = get("IMAGE_ID");
    c.os_image_version = get("IMAGE_VERSION");
    // root's login shell from the password database.
    c.shell = std::fs::read_to_string("/etc/passwd").ok().and_then(|p| {
        p.lines()
            .find(|l| l.starts_with("root:"))
            .and_then(|l| l.rsplit(':').next().map(str::to_owned))
    });
    // %c %r %R are left out of the comparison: they depend on the control group the test
    // runs in.
    c
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn specifiers_match_systemd(
        unit in prop::sample::select(vec![
            "web@8080.service", "foo-bar@dev-sda\\x2d1.service", "plain.service", "a-b-c.socket",
            "x@a@b.service", "srv@-.service", "p@\\x2fx-y.service",
        ]),
        texts in prop::collection::vec(
            prop::collection::vec(prop_oneof![
                3 => prop::sample::select(vec![
                    "n", "N", "p", "P", "i", "I", "j", "J", "f", "H", "l", "q", "b", "v", "a", "o",
                    "w", "W", "B", "M", "A", "u", "U", "g", "G", "h", "s", "t", "S", "C", "L", "E",
                    "T", "V", "d", "y", "Y", "%", "z", "k", "-", " ", "",
                ]).prop_map(|s| format!("%{s}")),
                1 => "[a-z/]{0,3}".prop_map(|s: String| s),
            ], 0..4).prop_map(|v| v.concat()),
            1..12,
        ),
    ) {
        // %m needs /etc/machine-id on both sides; without one systemd fails and so do we.
        let ctx = this_machine(unit);
        let answers = ask_systemd_printf(unit, &texts);
        for (t, theirs) in texts.iter().zip(answers) {
            prop_assert_eq!(expand(t, &ctx).ok(), theirs, "unit {} text {:?}", unit, t);
        }
    }
}
