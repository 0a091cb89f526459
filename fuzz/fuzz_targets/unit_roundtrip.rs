//! parse -> print -> parse on arbitrary bytes: never panics, the lossless output equals
//! the input byte for byte, the reparse equals the first parse, and the borrowing view
//! agrees with the document.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unit_parser::{UnitFile, UnitView};

fuzz_target!(|data: &[u8]| {
    let doc = UnitFile::parse_bytes(data);
    let view = UnitView::parse_bytes(data);
    assert_eq!(doc.is_ok(), view.is_ok());
    let (Ok(doc), Ok(view)) = (doc, view) else { return };
    let printed = doc.to_bytes();
    assert_eq!(printed, data);
    let again = UnitFile::parse_bytes(&printed).expect("reparse of printed output");
    assert_eq!(again, doc);
    let a: Vec<_> = doc.entries().map(|(s, e)| (s, e.key(), e.value())).collect();
    let b: Vec<_> = view.entries().iter().map(|e| (&*e.section, &*e.key, &*e.value)).collect();
    assert_eq!(a, b);
});
