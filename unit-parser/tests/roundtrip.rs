//! Round trips: parse -> serialize -> parse is the identity, the serialization of an
//! unmodified document is the input byte for byte, and edits read back as the model says.

use proptest::prelude::*;
use unit_parser::{UnitFile, UnitView};

/// Byte soup biased towards the tokenizer's special bytes.
fn unit_bytes() -> impl Strategy<Value = Vec<u8>> {
    let atom = prop_oneof![
        4 => prop::sample::select(b"[]=\\#; \t\n\r\0ab".to_vec()).prop_map(|b| vec![b]),
        1 => Just(b"[Unit]\n".to_vec()),
        1 => Just(b"Key=value".to_vec()),
        1 => Just(b"\xEF\xBB\xBF".to_vec()),
        1 => Just("\u{FDD0}".as_bytes().to_vec()),
        1 => Just("ü".as_bytes().to_vec()),
        1 => Just(vec![0xff]),
        1 => Just(b"\r\n".to_vec()),
    ];
    prop::collection::vec(atom, 0..60).prop_map(|v| v.concat())
}

/// Mostly valid unit text: sections, assignments, comments, continuations, blanks.
fn unit_text() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec!["A", "B", "ExecStart", "After", "K k"]);
    let val = prop::sample::select(vec![
        "",
        "v",
        "a b",
        "x\\\\",
        "=",
        "w \\\n  more",
        "é",
        "t\\",
    ]);
    let nl = prop::sample::select(vec!["\n", "\r\n", "\r"]);
    let line = prop_oneof![
        3 => (key, val).prop_map(|(k, v)| format!("{k}={v}")),
        1 => prop::sample::select(vec!["[Unit]", "[Service]", "[X-Fleet]"]).prop_map(str::to_owned),
        1 => prop::sample::select(vec!["# c", "; c", "", "  ", "noequals", "=x", "  K = v  "]).prop_map(str::to_owned),
    ];
    (prop::collection::vec((line, nl), 0..25), any::<bool>()).prop_map(|(lines, last_nl)| {
        let mut s = String::new();
        let n = lines.len();
        for (i, (l, nl)) in lines.into_iter().enumerate() {
            s.push_str(&l);
            if i + 1 < n || last_nl {
                s.push_str(nl);
            }
        }
        s
    })
}

fn triples(doc: &UnitFile) -> Vec<(String, String, String)> {
    doc.entries()
        .map(|(s, e)| (s.to_owned(), e.key().to_owned(), e.value().to_owned()))
        .collect()
}

fn check_lossless(bytes: &[u8]) -> Result<(), TestCaseError> {
    let doc = UnitFile::parse_bytes(bytes);
    let view = UnitView::parse_bytes(bytes);
    prop_assert_eq!(doc.is_ok(), view.is_ok());
    if let (Ok(doc), Ok(view)) = (doc, view) {
        let out = doc.to_bytes();
        prop_assert_eq!(&out, bytes);
        let again = UnitFile::parse_bytes(&out).unwrap();
        prop_assert_eq!(&again, &doc);
        let vt: Vec<(String, String, String)> = view
            .entries()
            .iter()
            .map(|e| {
                (
                    e.section.to_string(),
                    e.key.to_string(),
                    e.value.to_string(),
                )
            })
            .collect();
        prop_assert_eq!(vt, triples(&doc));
        prop_assert_eq!(view.warnings(), doc.warnings());
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Edit {
    Set(&'static str, &'static str, &'static str),
    Append(&'static str, &'static str, &'static str),
    Remove(&'static str, &'static str),
    AddSection(&'static str),
}

fn edit() -> impl Strategy<Value = Edit> {
    let sec = prop::sample::select(vec!["Unit", "Service", "Install"]);
    let key = prop::sample::select(vec!["A", "B", "After"]);
    let val = prop::sample::select(vec!["", "v", "a b", "x\\\\"]);
    prop_oneof![
        (sec.clone(), key.clone(), val.clone()).prop_map(|(s, k, v)| Edit::Set(s, k, v)),
        (sec.clone(), key.clone(), val).prop_map(|(s, k, v)| Edit::Append(s, k, v)),
        (sec.clone(), key).prop_map(|(s, k)| Edit::Remove(s, k)),
        sec.prop_map(Edit::AddSection),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_that_parse_round_trip(bytes in unit_bytes()) {
        check_lossless(&bytes)?;
    }

    #[test]
    fn unit_text_round_trips(text in unit_text()) {
        check_lossless(text.as_bytes())?;
        let doc = UnitFile::parse(&text).unwrap();
        prop_assert_eq!(doc.to_string(), text);
    }

    #[test]
    fn edits_read_back_as_the_model_says(text in unit_text(), edits in prop::collection::vec(edit(), 1..8)) {
        let mut doc = UnitFile::parse(&text).unwrap();
        for e in edits {
            match e {
                Edit::Set(s, k, v) => {
                    doc.set(s, k, v).unwrap();
                    prop_assert_eq!(doc.get(s, k), Some(v));
                }
                Edit::Append(s, k, v) => {
                    doc.append(s, k, v).unwrap();
                    prop_assert_eq!(doc.get(s, k), Some(v));
                }
                Edit::Remove(s, k) => {
                    doc.remove(s, k);
                    prop_assert_eq!(doc.get(s, k), None);
                }
                Edit::AddSection(s) => doc.add_section(s).unwrap(),
            }
            let back = UnitFile::parse_bytes(&doc.to_bytes()).unwrap();
            prop_assert_eq!(triples(&back), triples(&doc));
            let names: Vec<&str> = back.sections().map(|s| s.name()).collect();
            let model: Vec<&str> = doc.sections().map(|s| s.name()).collect();
            prop_assert_eq!(names, model);
        }
    }

    #[test]
    fn lookups_follow_systemd_list_semantics(text in unit_text()) {
        let doc = UnitFile::parse(&text).unwrap();
        for (s, k) in [("Unit", "A"), ("Service", "ExecStart"), ("Unit", "After")] {
            let all: Vec<&str> = doc.entries().filter(|(sec, e)| *sec == s && e.key() == k).map(|(_, e)| e.value()).collect();
            prop_assert_eq!(doc.get(s, k), all.last().copied());
            let after_reset = match all.iter().rposition(|v| v.is_empty()) {
                Some(i) => &all[i + 1..],
                None => &all[..],
            };
            prop_assert_eq!(doc.get_list(s, k), after_reset.to_vec());
        }
    }
}

#[test]
fn unmodified_file_is_byte_identical() {
    let text = "\u{FEFF}# c\r\n[Unit]\r\nA=b \\\r\n # x\r\n c\r\n\r\n[Service]\0K=v  \t";
    assert_eq!(UnitFile::parse(text).unwrap().to_string(), text);
}
