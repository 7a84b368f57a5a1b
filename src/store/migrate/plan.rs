//! What `store migrate` will do, decided from the two configs before
//! anything is opened: copy the rows (only embedded → PostgreSQL), copy
//! the documents (unless both configs keep them in one place), or refuse.

use std::path::Path;

use super::{MigrateError, SQLITE_FILE};
use crate::config::{Config, DocumentBackend, StoreBackend, parse_postgres_url};

/// What the two configs call for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Copy the rows (embedded → PostgreSQL); `false`: the same store.
    pub rows: bool,
    /// Copy the documents; `false`: the same place.
    pub documents: bool,
}

/// Decides what to copy, or why nothing can be.
pub fn plan(from: &Config, to: &Config) -> Result<Plan, MigrateError> {
    let rows = match (from.store.backend, to.store.backend) {
        (StoreBackend::Embedded, StoreBackend::Postgres) => true,
        (StoreBackend::Embedded, StoreBackend::Embedded)
            if same_dir(&from.server.data_dir, &to.server.data_dir) =>
        {
            false
        }
        (StoreBackend::Postgres, StoreBackend::Postgres)
            if same_database(&store_url(from)?, &store_url(to)?) =>
        {
            false
        }
        (StoreBackend::Embedded, StoreBackend::Embedded) => {
            return Err(MigrateError::Unsupported(
                "both configs use the embedded store, in different data directories: stop the \
                 gateway and copy the data directory instead"
                    .into(),
            ));
        }
        (StoreBackend::Postgres, StoreBackend::Postgres) => {
            return Err(MigrateError::Unsupported(
                "both configs use PostgreSQL, in different databases: copy it with pg_dump and \
                 pg_restore instead"
                    .into(),
            ));
        }
        (StoreBackend::Postgres, StoreBackend::Embedded) => {
            return Err(MigrateError::Unsupported(
                "moving from PostgreSQL back to the embedded store is not supported (--from \
                 names the PostgreSQL store, --config the embedded one)"
                    .into(),
            ));
        }
    };
    let documents = !same_documents(from, to);
    if !rows && !documents {
        return Err(MigrateError::NothingToDo);
    }
    Ok(Plan { rows, documents })
}

pub(super) fn store_url(config: &Config) -> Result<String, MigrateError> {
    config.store.url().map_err(|e| {
        MigrateError::Config(format!("{}: store.url: {e}", config.file_name().display()))
    })
}

/// Whether two paths are one directory (a missing one compares by its
/// absolute path).
fn same_dir(a: &Path, b: &Path) -> bool {
    let resolve = |p: &Path| {
        std::fs::canonicalize(p)
            .or_else(|_| std::path::absolute(p))
            .unwrap_or_else(|_| p.to_owned())
    };
    resolve(a) == resolve(b)
}

/// Whether two store URLs reach the same database: same hosts, ports and
/// database name (user, password and TLS settings may differ).
fn same_database(a: &str, b: &str) -> bool {
    match (parse_postgres_url(a), parse_postgres_url(b)) {
        (Ok(a), Ok(b)) => {
            a.get_hosts() == b.get_hosts()
                && a.get_hostaddrs() == b.get_hostaddrs()
                && a.get_ports() == b.get_ports()
                && a.get_dbname() == b.get_dbname()
        }
        _ => a == b,
    }
}

fn same_documents(from: &Config, to: &Config) -> bool {
    let (a, b) = (&from.documents, &to.documents);
    match (a.backend, b.backend) {
        (DocumentBackend::Local, DocumentBackend::Local) => same_dir(
            &from.server.data_dir.join("documents"),
            &to.server.data_dir.join("documents"),
        ),
        (DocumentBackend::S3, DocumentBackend::S3) => {
            let endpoint = |e: &Option<String>| {
                e.as_deref()
                    .map(|e| e.trim().trim_end_matches('/').to_owned())
            };
            endpoint(&a.endpoint) == endpoint(&b.endpoint)
                && a.bucket.trim() == b.bucket.trim()
                && a.prefix_trimmed() == b.prefix_trimmed()
        }
        _ => false,
    }
}

/// Where a config keeps its rows, in words (never the URL: it may hold a
/// password).
pub fn describe_store(config: &Config) -> String {
    match config.store.backend {
        StoreBackend::Embedded => format!(
            "embedded store {}",
            config.server.data_dir.join(SQLITE_FILE).display()
        ),
        StoreBackend::Postgres => {
            let parsed = config
                .store
                .url()
                .ok()
                .and_then(|u| parse_postgres_url(&u).ok());
            let Some(pg) = parsed else {
                return "PostgreSQL".into();
            };
            let host = pg
                .get_hosts()
                .first()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(name) => name.clone(),
                    tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                })
                .unwrap_or_default();
            let port = pg.get_ports().first().copied().unwrap_or(5432);
            let db = pg.get_dbname().or(pg.get_user()).unwrap_or("(default)");
            format!("PostgreSQL database {db} on {host}:{port}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(data_dir: &str, store: &str) -> Config {
        let mut c = Config::default();
        c.server.data_dir = data_dir.into();
        if store == "postgres" {
            c.store.backend = StoreBackend::Postgres;
            c.store.url_template = "postgresql://schleuse@127.0.0.1:5432/schleuse".into();
        }
        c
    }

    #[test]
    fn the_plan_copies_rows_only_from_embedded_to_postgres() {
        let old = config("/srv/old", "embedded");
        let new = config("/srv/new", "postgres");
        assert_eq!(
            plan(&old, &new).expect("plan"),
            Plan {
                rows: true,
                documents: true
            }
        );
        assert!(matches!(
            plan(&new, &old),
            Err(MigrateError::Unsupported(_))
        ));
        assert!(matches!(
            plan(&old, &config("/srv/other", "embedded")),
            Err(MigrateError::Unsupported(_))
        ));
        // The same store (another user, same database) with documents moving.
        let mut same_db = config("/srv/third", "postgres");
        same_db.store.url_template =
            "postgresql://other:pw@127.0.0.1:5432/schleuse?sslmode=disable".into();
        assert_eq!(
            plan(&new, &same_db).expect("plan"),
            Plan {
                rows: false,
                documents: true
            }
        );
        let mut other_db = same_db.clone();
        other_db.store.url_template = "postgresql://schleuse@127.0.0.1:5432/elsewhere".into();
        assert!(matches!(
            plan(&new, &other_db),
            Err(MigrateError::Unsupported(_))
        ));
        assert!(matches!(
            plan(&old, &old.clone()),
            Err(MigrateError::NothingToDo)
        ));
    }

    #[test]
    fn documents_in_one_bucket_and_prefix_are_the_same_place() {
        let mut a = config("/srv/a", "postgres");
        a.documents.backend = DocumentBackend::S3;
        a.documents.bucket = "docs".into();
        a.documents.endpoint = Some("https://s3.example/".into());
        let mut b = a.clone();
        b.server.data_dir = "/srv/b".into();
        b.documents.prefix = "/documents".into();
        b.documents.endpoint = Some("https://s3.example".into());
        assert!(same_documents(&a, &b));
        b.documents.prefix = "other/".into();
        assert!(!same_documents(&a, &b));
        assert!(!same_documents(&a, &config("/srv/a", "embedded")));
    }
}
