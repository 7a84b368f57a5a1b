//! The admin side of the command line: `schleuse user …`,
//! `schleuse queue …` and `schleuse links …`. Both work while the gateway runs: accounts are a
//! file the gateway re-reads on SIGHUP; the queue is the shared SQLite
//! database, whose changes the delivery scheduler picks up within a second.
//! And the running gateway's HTTP [`endpoint`] for monitoring.

pub mod bans;
#[cfg(test)]
mod dry_run_equality;
pub mod endpoint;
pub mod gdpr;
pub mod links;
pub mod queue;
pub mod rules;
pub mod store;
pub mod suppress;
pub mod user;

/// A Unix-millisecond time for tables: RFC 3339, UTC, whole seconds.
pub(crate) fn time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A byte count for tables: `812`, `4.0K`, `1.5M`.
pub(crate) fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1}M", b as f64 / (1 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1}K", b as f64 / (1 << 10) as f64),
        b => format!("{b}"),
    }
}

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
