//! Round trips: parse -> serialize -> parse.

use unit_parser::UnitFile;

#[test]
fn unmodified_file_is_byte_identical() {
    let text = "[Unit]\nA=b\n";
    assert_eq!(UnitFile::parse(text).unwrap().to_string(), text);
}
