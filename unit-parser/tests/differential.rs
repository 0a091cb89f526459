//! Differential tests against systemd itself: a tiny C program calls `config_parse()` from
//! `libsystemd-shared` (the unit loader's tokenizer) and prints what it delivers; we
//! compare with our output on every unit file of this machine, the edge cases, and
//! generated 1 MiB lines. Needs the `systemd` package and a C compiler
//! (`scripts/install-deps` installs both).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::util::{files_with_ext, ours, run_oracle, systemd_oracle, testdata};

const UNIT_SUFFIXES: &[&str] = &[
    "service",
    "socket",
    "device",
    "mount",
    "automount",
    "swap",
    "target",
    "path",
    "timer",
    "slice",
    "scope",
    "conf",
];

fn walk(dir: &Path, out: &mut BTreeSet<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            // Symlinked directories (e.g. /lib -> /usr/lib) are reached by their real path.
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&p, out);
            }
        } else if meta.is_file()
            && p.extension()
                .is_some_and(|x| UNIT_SUFFIXES.iter().any(|s| x == *s))
            // Unreadable files (permissions) are left out of the comparison.
            && std::fs::File::open(&p).is_ok()
        {
            out.insert(std::fs::canonicalize(&p).unwrap_or(p));
        }
    }
}

fn compare(files: &[PathBuf]) -> (usize, Vec<String>) {
    let oracle = systemd_oracle().unwrap_or_else(|e| panic!("systemd oracle unavailable: {e}"));
    let expected = run_oracle(&oracle, files);
    let mut differ = Vec::new();
    for (f, want) in files.iter().zip(expected) {
        let got = ours(&std::fs::read(f).unwrap());
        if got != want {
            differ.push(format!(
                "{}:\n  ours    {got}\n  systemd {want}",
                f.display()
            ));
        }
    }
    (files.len(), differ)
}

#[test]
fn machine_corpus_agrees_with_systemd() {
    let mut set = BTreeSet::new();
    for d in ["/lib/systemd", "/usr/lib/systemd", "/etc/systemd"] {
        walk(Path::new(d), &mut set);
    }
    let files: Vec<PathBuf> = set.into_iter().collect();
    let (n, differ) = compare(&files);
    println!(
        "corpus: {n} files compared, {} agree, {} differ",
        n - differ.len(),
        differ.len()
    );
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

#[test]
fn edge_cases_agree_with_live_systemd() {
    let mut files = files_with_ext(&testdata("edge"), "service");
    files.extend(files_with_ext(&testdata("real"), "service"));
    let (n, differ) = compare(&files);
    println!("edge cases: {n} files compared, {} differ", differ.len());
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

/// Files around the 1 MiB limits, generated rather than shipped.
fn long_cases(dir: &Path) -> Vec<(PathBuf, bool)> {
    const L: usize = 1 << 20;
    let cont = |n: usize, len: usize| -> Vec<u8> {
        let mut v = b"[Unit]\nA=".to_vec();
        for _ in 0..n {
            v.extend(std::iter::repeat_n(b'y', len));
            v.extend_from_slice(b"\\\n");
        }
        v.extend_from_slice(b"end\n");
        v
    };
    let line = |content: usize, nl: bool| -> Vec<u8> {
        let mut v = b"[Unit]\n".to_vec();
        v.extend_from_slice(b"A=");
        v.extend(std::iter::repeat_n(b'x', content - 2));
        if nl {
            v.push(b'\n');
        }
        v
    };
    let split = |first: usize, second: usize| -> Vec<u8> {
        // First physical line "A=yyy\" has `first` bytes, the second `second` bytes.
        let mut v = b"[Unit]\nA=".to_vec();
        v.extend(std::iter::repeat_n(b'y', first - 3));
        v.extend_from_slice(b"\\\n");
        v.extend(std::iter::repeat_n(b'z', second));
        v.push(b'\n');
        v
    };
    let mut comment = b"[Unit]\n#".to_vec();
    comment.extend(std::iter::repeat_n(b'c', L - 1));
    comment.extend_from_slice(b"\nA=b\n");
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("line-max", line(L - 1, true), true),
        ("line-max-eof", line(L - 1, false), true),
        ("line-at-limit", line(L, true), false),
        ("line-at-limit-eof", line(L, false), false),
        ("comment-at-limit", comment, false),
        ("continued-1mib", cont(10_000, 99), true),
        ("continued-over", cont(1025, 1023), false),
        ("joined-exactly-limit", split(L / 2, L / 2), true),
        ("joined-over-limit", split(L / 2, L / 2 + 1), false),
    ];
    cases
        .into_iter()
        .map(|(name, bytes, ok)| {
            let p = dir.join(format!("{name}.service"));
            std::fs::write(&p, bytes).unwrap();
            (p, ok)
        })
        .collect()
}

#[test]
fn long_lines_follow_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    let cases = long_cases(dir.path());
    for (p, ok) in &cases {
        let got = ours(&std::fs::read(p).unwrap());
        assert_eq!(got.is_array(), *ok, "{}: {got:.80}", p.display());
    }
    let files: Vec<PathBuf> = cases.into_iter().map(|c| c.0).collect();
    let (_, differ) = compare(&files);
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

/// Random unit-like byte soup (every tokenizer special byte, BOMs, noncharacters, invalid
/// UTF-8, headers, assignments), compared with systemd file by file. Deterministic seed so
/// a failure reproduces; the file that differs is printed in full.
#[test]
fn random_files_agree_with_systemd() {
    // The last four atoms make a file invalid unless they land in a comment; only every
    // fourth file may use them, so most files are accepted and compared entry by entry.
    const ATOMS: &[&[u8]] = &[
        b"[",
        b"]",
        b"=",
        b"\\",
        b"#",
        b";",
        b" ",
        b"\t",
        b"\n",
        b"\n",
        b"\r",
        b"\0",
        b"a",
        b"b",
        b"[Unit]\n",
        b"[Service]\n",
        b"Key=value",
        b"\n\\\n",
        b"\xEF\xBB\xBF",
        "ü".as_bytes(),
        b"\r\n",
        b"\"",
        b"\x01",
        b"\x0c",
        b"\xff",
        b"\xC0\xAF",
        b"\xEF\xB7\x90",
        b"\xEF\xBF\xBE",
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for i in 0..1500 {
        let mut bytes = Vec::new();
        let n = (next() % 80) as usize;
        let atoms = if i % 4 == 0 {
            ATOMS.len()
        } else {
            ATOMS.len() - 4
        } as u64;
        for _ in 0..n {
            bytes.extend_from_slice(ATOMS[(next() % atoms) as usize]);
        }
        let p = dir.path().join(format!("r{i}.service"));
        std::fs::write(&p, &bytes).unwrap();
        files.push(p);
    }
    let accepted = files
        .iter()
        .filter(|p| ours(&std::fs::read(p).unwrap()).is_array())
        .count();
    assert!(
        accepted > files.len() / 3,
        "only {accepted} accepted: the generator is too hostile"
    );
    let (n, differ) = compare(&files);
    let ok = n - differ.len();
    println!(
        "random files: {n} compared ({accepted} accepted by us), {ok} agree, {} differ",
        differ.len()
    );
    let shown: Vec<String> = differ
        .iter()
        .take(5)
        .map(|d| {
            let path = d.split(':').next().unwrap_or_default();
            let bytes = std::fs::read(path).unwrap_or_default();
            format!("{d}\n  input {:?}", String::from_utf8_lossy(&bytes))
        })
        .collect();
    assert!(differ.is_empty(), "{}", shown.join("\n"));
}
