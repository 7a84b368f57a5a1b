//! The admin side of the command line: `schleuse user …`,
//! `schleuse queue …` and `schleuse links …`. Both work while the gateway runs: accounts are a
//! file the gateway re-reads on SIGHUP; the queue is the shared SQLite
//! database, whose changes the delivery scheduler picks up within a second.
//! And the running gateway's HTTP [`endpoint`] for monitoring.

pub mod endpoint;
pub mod gdpr;
pub mod links;
pub mod queue;
pub mod rules;
pub mod suppress;
pub mod user;

/// Renders rows as a left-aligned table with a header line.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligned() {
        let t = super::table(
            &["ID", "STATE"],
            &[
                vec!["abc".into(), "queued".into()],
                vec!["a".into(), "held".into()],
            ],
        );
        assert_eq!(t, "ID   STATE\nabc  queued\na    held\n");
    }
}
