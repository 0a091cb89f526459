//! fleetctl's help as fleet 1.0 lays it out: cobra's default help when fleetctl is run
//! without arguments, and fleet's own usage page (NAME, USAGE, DESCRIPTION, OPTIONS,
//! GLOBAL OPTIONS) for `help`, `--help` and usage errors. Flags are listed as pflag lists
//! them: sorted, `--name type`, the usages in one column, non-zero defaults after them.

use super::cli::{COMMANDS, Flag, GLOBAL_FLAGS, Kind, ROOT, Spec};
use super::table;

/// What `fleetctl` prints when run without arguments.
pub(super) fn intro() -> String {
    let pad = COMMANDS
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0)
        .max(11);
    let mut s = format!(
        "{}\n\nUsage:\n  fleetctl [flags]\n  fleetctl [command]\n\nAvailable Commands:",
        ROOT.short
    );
    for c in COMMANDS.iter().filter(|c| c.listed()) {
        s.push_str(&format!("\n  {:<pad$} {}", c.name, c.short));
    }
    s.push_str("\n\nFlags:\n");
    s.push_str(flag_usages(GLOBAL_FLAGS.iter()).trim_end());
    s.push_str("\n\nUse \"fleetctl [command] --help\" for more information about a command.\n");
    s
}

/// fleet's usage page of a command ([`ROOT`] for fleetctl itself); `version` is shown on
/// fleetctl's own.
pub(super) fn usage(spec: &Spec, version: &str) -> String {
    let root = spec.name == ROOT.name;
    let use_line = if root {
        spec.usage.to_owned()
    } else {
        format!("fleetctl {}", spec.usage)
    };
    let mut s = format!(
        "NAME:\n\t{} - {}\n\nUSAGE:\n\t{use_line}\n",
        spec.name, spec.short
    );
    if root {
        s.push_str(&format!("\nVERSION:\n\t{version}\n\nCOMMANDS:\n"));
        let rows: Vec<Vec<String>> = COMMANDS
            .iter()
            .map(|c| vec![String::new(), c.name.to_owned(), c.short.to_owned()])
            .collect();
        s.push_str(&table::render(&rows));
    }
    let long = spec.long.trim_matches(['\n', '\t', ' ']);
    if !long.is_empty() {
        s.push_str("\nDESCRIPTION:\n");
        for line in long.split('\n') {
            s.push_str(&format!("\t{line}\n"));
        }
    }
    let (local, global): (Vec<&Flag>, Vec<&Flag>) = if root {
        (GLOBAL_FLAGS.iter().collect(), Vec::new())
    } else {
        (spec.flags.iter().collect(), GLOBAL_FLAGS.iter().collect())
    };
    if !local.is_empty() {
        s.push_str("\nOPTIONS:\n");
        s.push_str(&flag_usages(local));
    }
    if !global.is_empty() {
        s.push_str("\nGLOBAL OPTIONS:\n");
        s.push_str(&flag_usages(global));
    }
    s.push('\n');
    s
}

/// pflag's list of flags: one line each, sorted by name.
fn flag_usages<'a>(flags: impl IntoIterator<Item = &'a Flag>) -> String {
    let mut flags: Vec<&Flag> = flags.into_iter().collect();
    flags.sort_by_key(|f| f.name);
    let lines: Vec<(String, String)> = flags
        .iter()
        .map(|f| {
            let mut left = match f.short {
                Some(c) => format!("  -{c}, --{}", f.name),
                None => format!("      --{}", f.name),
            };
            match f.kind {
                Kind::Bool => {}
                Kind::String => left.push_str(" string"),
                Kind::Int => left.push_str(" int"),
                Kind::Float => left.push_str(" float"),
            }
            let mut right = f.usage.to_owned();
            let zero = match f.kind {
                Kind::Bool => f.default == "false",
                Kind::String => f.default.is_empty(),
                Kind::Int | Kind::Float => f.default == "0",
            };
            if !zero {
                if f.kind == Kind::String {
                    right.push_str(&format!(" (default \"{}\")", f.default));
                } else {
                    right.push_str(&format!(" (default {})", f.default));
                }
            }
            (left, right)
        })
        .collect();
    let width = lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    lines
        .iter()
        .map(|(l, r)| format!("{l:<width$}   {r}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_line_up_as_pflags_do() {
        let start = COMMANDS.iter().find(|c| c.name == "start").unwrap();
        assert_eq!(
            flag_usages(start.flags),
            "      --block-attempts int   Wait until the units are launched, performing up to N attempts before giving up. A value of 0 indicates no limit. Does not apply to global units.\n\
             \x20     --no-block             Do not wait until the units have launched before exiting. Always the case for global units.\n\
             \x20     --replace              Replace the already started units in the cluster with new versions.\n\
             \x20     --sign                 DEPRECATED - this option cannot be used\n"
        );
        let units = COMMANDS.iter().find(|c| c.name == "list-units").unwrap();
        assert!(flag_usages(units.flags).starts_with(
            "      --fields string   Columns to print for each Unit. Valid fields are \"active,hash,load,machine,sub,unit\" (default \"unit,machine,active,sub\")\n  -l, --full            "
        ));
    }

    #[test]
    fn a_usage_page_has_fleets_sections() {
        let cat = COMMANDS.iter().find(|c| c.name == "cat").unwrap();
        let page = usage(cat, "v");
        assert!(page.starts_with("NAME:\n\tcat - Output the contents of a submitted unit\n\nUSAGE:\n\tfleetctl cat UNIT\n\nDESCRIPTION:\n\tOutputs"), "{page}");
        assert!(!page.contains("\nOPTIONS:"));
        assert!(page.contains("\nGLOBAL OPTIONS:\n      --driver string "));
        assert!(page.ends_with("exit\n\n"));
        let root = usage(&ROOT, "v9");
        assert!(
            root.contains("\nVERSION:\n\tv9\n\nCOMMANDS:\n\tcat\t\tOutput"),
            "{root}"
        );
        assert!(intro().contains("\n  list-unit-files List the units"));
    }
}
