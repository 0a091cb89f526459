//! The tokenizer is linear: systemd rescans the joined buffer on every continued line
//! (quadratic); we must not.

use std::time::{Duration, Instant};

use unit_parser::{UnitFile, UnitView};

#[test]
fn a_one_mib_continued_line_parses_fast_even_in_debug() {
    // 100k physical lines of 9 bytes + "\\\n": about 1 MiB joined. A quadratic join would
    // scan ~50 GB here.
    let mut text = String::from("[Service]\nExecStart=/bin/echo");
    for _ in 0..100_000 {
        text.push_str(" abcdefgh\\\n");
    }
    text.push_str(" end\n");
    let start = Instant::now();
    let view = UnitView::parse(&text).unwrap();
    let doc = UnitFile::parse(&text).unwrap();
    let took = start.elapsed();
    assert!(
        view.get("Service", "ExecStart")
            .unwrap()
            .ends_with("abcdefgh  end")
    );
    assert_eq!(doc.to_string(), text);
    assert!(took < Duration::from_secs(2), "took {took:?}");
}
