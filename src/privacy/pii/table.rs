//! Columns of simple text tables: lines split by `;`, `|` or tab (CSV
//! exports, tables converted from HTML). A header cell chosen by a predicate
//! marks its column; the cells below it, until a line without the
//! delimiter, are returned.

use std::ops::Range;

const DELIMITERS: &[u8] = b";|\t";

/// Byte ranges (trimmed) of the cells below header cells for which
/// `is_header` holds.
pub(crate) fn column_values(text: &str, is_header: impl Fn(&str) -> bool) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut column: Option<(u8, usize)> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let body = line.trim_end_matches(['\n', '\r']);
        if let Some((delim, index)) = column {
            if body.as_bytes().contains(&delim) {
                if let Some(cell) = cell_range(body, delim, index) {
                    out.push(start + cell.start..start + cell.end);
                }
            } else {
                column = None;
            }
        }
        for &delim in DELIMITERS {
            if !body.as_bytes().contains(&delim) {
                continue;
            }
            if let Some(index) = body.split(delim as char).position(&is_header) {
                column = Some((delim, index));
                break;
            }
        }
    }
    out
}

fn cell_range(line: &str, delim: u8, index: usize) -> Option<Range<usize>> {
    let mut pos = 0;
    for (n, cell) in line.split(delim as char).enumerate() {
        if n == index {
            let lead = cell.len() - cell.trim_start().len();
            let trimmed = cell.trim();
            return Some(pos + lead..pos + lead + trimmed.len());
        }
        pos += cell.len() + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_below_a_header() {
        let t = "name;dob;klasse\nnguyen;2013-08-21;6a\nx;y\n\nfoo;bar";
        let cells: Vec<&str> = column_values(t, |c| c == "dob")
            .into_iter()
            .map(|r| &t[r])
            .collect();
        assert_eq!(cells, vec!["2013-08-21", "y"]);
        let t = "a | b\n1 | 2";
        assert!(column_values(t, |c| c.trim() == "c").is_empty());
    }
}
