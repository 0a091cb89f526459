//! Drop-in search and merge order (systemd 252 `unit_file_find_dropin_paths()`), on
//! temporary search directories.

use std::fs;
use std::path::Path;

use unit_parser::ParseError;
use unit_parser::dropin::{find_dropins, load_unit};

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

#[test]
fn instance_template_prefix_and_type_dirs_merge_in_systemd_order() {
    let tmp = tempfile::tempdir().unwrap();
    let etc = tmp.path().join("etc");
    let usr = tmp.path().join("usr");
    write(
        &usr.join("foo-bar@.service"),
        "[Service]\nExecStart=/bin/main %i\nEnvironment=A=0\nRestart=no\n",
    );
    // Template drop-in: resets ExecStart and replaces it.
    write(
        &usr.join("foo-bar@.service.d/10-exec.conf"),
        "[Service]\nExecStart=\nExecStart=/bin/other\n",
    );
    write(
        &etc.join("foo-bar@baz.service.d/20-env.conf"),
        "[Service]\nEnvironment=B=2\n",
    );
    // Same basename in the type-wide dir (lowest) and a prefix dir (higher): prefix wins.
    write(
        &usr.join("service.d/05-top.conf"),
        "[Service]\nRestart=always\n",
    );
    write(
        &usr.join("foo-.service.d/05-top.conf"),
        "[Service]\nRestart=on-failure\n",
    );
    // The type-wide dir also contributes files nobody overrides.
    write(
        &usr.join("service.d/99-last.conf"),
        "[Service]\nEnvironment=Z=9\n",
    );
    // /etc masks a /usr drop-in with a /dev/null symlink.
    write(
        &usr.join("foo-bar@baz.service.d/30-masked.conf"),
        "[Service]\nEnvironment=M=1\n",
    );
    fs::create_dir_all(etc.join("foo-bar@baz.service.d")).unwrap();
    std::os::unix::fs::symlink(
        "/dev/null",
        etc.join("foo-bar@baz.service.d/30-masked.conf"),
    )
    .unwrap();
    // Not drop-ins: hidden, wrong suffix.
    write(
        &usr.join("foo-bar@baz.service.d/.40-hidden.conf"),
        "[Service]\nEnvironment=H=1\n",
    );
    write(
        &usr.join("foo-bar@baz.service.d/50-note.txt"),
        "[Service]\nEnvironment=T=1\n",
    );
    // Instance-prefix dir (foo-@baz.service.d) is searched too.
    write(
        &usr.join("foo-@baz.service.d/25-inst.conf"),
        "[Service]\nEnvironment=I=1\n",
    );

    let search = [&etc, &usr];
    let files = find_dropins("foo-bar@baz.service", &search).unwrap();
    let rel: Vec<String> = files
        .iter()
        .map(|p| {
            p.strip_prefix(tmp.path())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        rel,
        [
            "usr/foo-.service.d/05-top.conf",
            "usr/foo-bar@.service.d/10-exec.conf",
            "etc/foo-bar@baz.service.d/20-env.conf",
            "usr/foo-@baz.service.d/25-inst.conf",
            "etc/foo-bar@baz.service.d/30-masked.conf",
            "usr/service.d/99-last.conf",
        ]
    );

    let unit = load_unit("foo-bar@baz.service", &search).unwrap();
    assert_eq!(
        unit.fragment_path.as_deref(),
        Some(usr.join("foo-bar@.service").as_path())
    );
    assert!(!unit.masked);
    let merged = unit.merged();
    assert_eq!(merged.get_list("Service", "ExecStart"), ["/bin/other"]);
    assert_eq!(merged.get("Service", "Restart"), Some("on-failure"));
    assert_eq!(
        merged.get_list("Service", "Environment"),
        ["A=0", "B=2", "I=1", "Z=9"]
    );
}

#[test]
fn etc_overrides_usr_for_the_same_basename() {
    let tmp = tempfile::tempdir().unwrap();
    let (etc, run, usr) = (
        tmp.path().join("etc"),
        tmp.path().join("run"),
        tmp.path().join("usr"),
    );
    write(&usr.join("a.service"), "[Unit]\nDescription=usr\n");
    write(
        &usr.join("a.service.d/x.conf"),
        "[Unit]\nDescription=usr-dropin\n",
    );
    write(
        &run.join("a.service.d/x.conf"),
        "[Unit]\nDescription=run-dropin\n",
    );
    write(
        &etc.join("a.service.d/x.conf"),
        "[Unit]\nDescription=etc-dropin\n",
    );
    write(&usr.join("a.service.d/y.conf"), "[Unit]\nAfter=y.service\n");
    let unit = load_unit("a.service", &[&etc, &run, &usr]).unwrap();
    assert_eq!(unit.dropins.len(), 2);
    assert_eq!(unit.merged().get("Unit", "Description"), Some("etc-dropin"));
    let unit = load_unit("a.service", &[&run, &usr]).unwrap();
    assert_eq!(unit.merged().get("Unit", "Description"), Some("run-dropin"));
}

#[test]
fn masked_fragment_and_fatal_dropin() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::os::unix::fs::symlink("/dev/null", d.join("m.service")).unwrap();
    write(&d.join("m.service.d/x.conf"), "[Unit]\nDescription=x\n");
    let unit = load_unit("m.service", &[d]).unwrap();
    assert!(unit.masked);
    assert!(unit.dropins.is_empty());

    write(&d.join("e.service"), "");
    assert!(load_unit("e.service", &[d]).unwrap().masked);

    write(&d.join("b.service"), "[Unit]\nDescription=b\n");
    write(&d.join("b.service.d/bad.conf"), "[Unit\n");
    let err = load_unit("b.service", &[d]).unwrap_err();
    assert!(matches!(err, ParseError::InvalidSectionHeader { .. }));
    assert_eq!(err.path(), Some(d.join("b.service.d/bad.conf").as_path()));
    assert_eq!(err.line(), 1);
}

#[test]
fn dropin_without_section_header_is_ignored_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(&d.join("c.service"), "[Service]\nUser=a\n");
    write(
        &d.join("c.service.d/x.conf"),
        "User=b\n[Service]\nGroup=g\n",
    );
    let unit = load_unit("c.service", &[d]).unwrap();
    let merged = unit.merged();
    assert_eq!(merged.get("Service", "User"), Some("a"));
    assert_eq!(merged.get("Service", "Group"), Some("g"));
    assert_eq!(merged.warnings().len(), 1);
    assert_eq!(
        merged.warnings()[0].at.path.as_deref(),
        Some(d.join("c.service.d/x.conf").as_path())
    );
}
