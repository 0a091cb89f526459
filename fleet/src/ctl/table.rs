//! fleetctl's tables: Go's `text/tabwriter` as fleetctl configures it (minimum width 0,
//! tab width 8, padding 1, padded with tabs), so the bytes match fleet's.
//!
//! Every cell but a line's last is followed by tabs up to its column's width: the widest
//! cell of the column plus one, rounded up to a multiple of 8. A line's last cell is
//! written as it is and takes no part in the widths.

/// Lays out `rows` (each a list of cells) as fleetctl prints them, one line per row.
pub fn render(rows: &[Vec<String>]) -> String {
    const TAB_WIDTH: usize = 8;
    const PADDING: usize = 1;
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        // The last cell of a row is not terminated by a tab, so it sets no width.
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            widths[i] = widths[i].max(text_width(cell) + PADDING);
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                let cell_width = widths[i].div_ceil(TAB_WIDTH) * TAB_WIDTH;
                let gap = cell_width - text_width(cell);
                out.extend(std::iter::repeat_n('\t', gap.div_ceil(TAB_WIDTH)));
            }
        }
        out.push('\n');
    }
    out
}

/// The width tabwriter counts for a cell: its characters (UTF-8 decoded).
fn text_width(s: &str) -> usize {
    s.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(r: &[&[&str]]) -> Vec<Vec<String>> {
        r.iter()
            .map(|row| row.iter().map(|c| c.to_string()).collect())
            .collect()
    }

    #[test]
    fn columns_align_on_tab_stops() {
        let t = render(&rows(&[
            &["UNIT", "HASH", "DSTATE", "STATE", "TARGET"],
            &[
                "web@1.service",
                "da2b1ff",
                "launched",
                "launched",
                "c31e44e1.../10.0.0.1",
            ],
        ]));
        assert_eq!(
            t,
            "UNIT\t\tHASH\tDSTATE\t\tSTATE\t\tTARGET\n\
             web@1.service\tda2b1ff\tlaunched\tlaunched\tc31e44e1.../10.0.0.1\n"
        );
    }

    #[test]
    fn a_cell_of_exactly_seven_takes_one_tab_and_eight_takes_two() {
        let t = render(&rows(&[&["1234567", "x"], &["a", "y"]]));
        assert_eq!(t, "1234567\tx\na\ty\n");
        let t = render(&rows(&[&["12345678", "x"], &["a", "y"]]));
        assert_eq!(t, "12345678\tx\na\t\ty\n");
        assert_eq!(render(&[]), "");
        assert_eq!(render(&rows(&[&["only"]])), "only\n");
    }
}
