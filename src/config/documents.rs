//! `[documents]`: where the encrypted documents behind the links live
//! (SPEC §7, §11).
//!
//! - `backend = "local"` (the default): one file per document under
//!   `<data_dir>/documents/` (`crate::store::document_files::LocalFiles`).
//! - `backend = "s3"`: an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, …)
//!   through `crate::store::objects::ObjectFiles`, so that several gateway
//!   instances can serve the same documents.
//!
//! Either way only ciphertext is stored: documents are encrypted (AES-256-GCM,
//! key derived from the link token) before they reach the backend.
//!
//! The S3 keys are refused while `backend = "local"` (a forgotten `backend`
//! line must not silently keep documents on the local disk), and plain HTTP
//! (`allow_http`) only for a loopback endpoint, as `upstream.tls = "none"`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::values::{LENIENT_ENV, duration, expand, expand_opt, expand_opt_path, is_loopback_host};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentBackend {
    /// Files under `<data_dir>/documents/`.
    #[default]
    Local,
    /// An S3-compatible object store.
    S3,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Documents {
    pub backend: DocumentBackend,
    /// The bucket (must exist; schleuse does not create it).
    #[serde(deserialize_with = "expand")]
    pub bucket: String,
    /// Base URL of an S3-compatible server (`https://minio.landkreis.example:9000`);
    /// unset: AWS S3 in `region`. Requests are path-style (`<endpoint>/<bucket>/<key>`).
    #[serde(deserialize_with = "expand_opt")]
    pub endpoint: Option<String>,
    /// The signing region. Required for AWS S3 (choose an EU region);
    /// unset with an `endpoint`: `us-east-1`, what MinIO and Ceph expect unless
    /// configured otherwise.
    #[serde(deserialize_with = "expand_opt")]
    pub region: Option<String>,
    /// Every document is the object `<prefix><id>`. The prefix belongs to
    /// schleuse alone: the purge deletes objects below it that no link knows.
    #[serde(deserialize_with = "expand")]
    pub prefix: String,
    #[serde(deserialize_with = "expand_opt")]
    pub access_key_id: Option<String>,
    #[serde(deserialize_with = "expand_opt")]
    pub secret_access_key: Option<String>,
    /// Plain `http://` to the endpoint; only for a loopback endpoint (tests,
    /// a MinIO on the same host).
    pub allow_http: bool,
    /// Extra CA certificate(s) (PEM) to trust for the endpoint, besides the
    /// system's roots (an on-premises MinIO or Ceph with a private CA).
    #[serde(deserialize_with = "expand_opt_path")]
    pub ca_file: Option<PathBuf>,
    /// Per request to the object store (a stuck store must not hold an SMTP
    /// session for long); failed requests are retried twice within it.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
}

impl Default for Documents {
    fn default() -> Self {
        Self {
            backend: DocumentBackend::Local,
            bucket: String::new(),
            endpoint: None,
            region: None,
            prefix: "documents/".into(),
            access_key_id: None,
            secret_access_key: None,
            allow_http: false,
            ca_file: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// The host of an `http://` or `https://` URL, and whether it is `https`;
/// `None` when it is not such a URL (or carries user info).
fn url_host(url: &str) -> Option<(&str, bool)> {
    let (rest, https) = match url.strip_prefix("https://") {
        Some(r) => (r, true),
        None => (url.strip_prefix("http://")?, false),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let host = if authority.starts_with('[') {
        authority.split_inclusive(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    (!host.is_empty()).then_some((host, https))
}

impl Documents {
    /// Where documents go, for the start-up log.
    pub fn describe(&self, data_dir: &std::path::Path) -> String {
        match self.backend {
            DocumentBackend::Local => data_dir.join("documents").display().to_string(),
            DocumentBackend::S3 => format!(
                "s3://{}/{} at {}",
                self.bucket,
                self.prefix,
                self.endpoint.as_deref().unwrap_or("AWS S3")
            ),
        }
    }

    /// The prefix without leading or trailing slashes (`documents`).
    pub fn prefix_trimmed(&self) -> &str {
        self.prefix.trim_matches('/')
    }

    /// What is wrong, as (key, reason), if anything.
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        if self.backend == DocumentBackend::Local {
            let defaults = Documents::default();
            let set = [
                ("documents.bucket", !self.bucket.is_empty()),
                ("documents.endpoint", self.endpoint.is_some()),
                ("documents.region", self.region.is_some()),
                ("documents.prefix", self.prefix != defaults.prefix),
                ("documents.access_key_id", self.access_key_id.is_some()),
                (
                    "documents.secret_access_key",
                    self.secret_access_key.is_some(),
                ),
                ("documents.allow_http", self.allow_http),
                ("documents.ca_file", self.ca_file.is_some()),
            ];
            if let Some((key, _)) = set.iter().find(|(_, is_set)| *is_set) {
                return Err((
                    key,
                    "is only used with backend = \"s3\" (documents are stored locally)".into(),
                ));
            }
            return Ok(());
        }
        let bucket = self.bucket.trim();
        if bucket.is_empty() {
            return Err(("documents.bucket", "backend = \"s3\" needs a bucket".into()));
        }
        if !bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return Err((
                "documents.bucket",
                format!("{bucket:?} is not a bucket name (letters, digits, '-', '.', '_')"),
            ));
        }
        let prefix = self.prefix_trimmed();
        if prefix.is_empty() {
            return Err((
                "documents.prefix",
                "must not be empty: the purge deletes unknown objects below it, so it must \
                 belong to schleuse alone"
                    .into(),
            ));
        }
        let segment_ok = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        };
        if !prefix.split('/').all(segment_ok) {
            return Err((
                "documents.prefix",
                format!(
                    "{:?} is not a prefix like \"documents/\" (letters, digits, '-', '.', '_', \
                     segments separated by '/')",
                    self.prefix
                ),
            ));
        }
        match &self.endpoint {
            Some(endpoint) => {
                let Some((host, https)) = url_host(endpoint.trim()) else {
                    return Err((
                        "documents.endpoint",
                        format!("{endpoint:?} is not an http:// or https:// URL"),
                    ));
                };
                let loopback = is_loopback_host(host);
                if self.allow_http && !loopback {
                    return Err((
                        "documents.allow_http",
                        format!("is only allowed for a loopback endpoint, not {host}"),
                    ));
                }
                if !https && !self.allow_http {
                    return Err((
                        "documents.endpoint",
                        if loopback {
                            format!(
                                "{endpoint:?} is plain http: set allow_http = true (loopback only)"
                            )
                        } else {
                            format!(
                                "{endpoint:?} is plain http: use https (http is only allowed for a loopback endpoint)"
                            )
                        },
                    ));
                }
            }
            None => {
                if self.allow_http {
                    return Err((
                        "documents.allow_http",
                        "is only allowed for a loopback endpoint, and none is set".into(),
                    ));
                }
                if self.region.is_none() {
                    return Err((
                        "documents.region",
                        "AWS S3 (no endpoint) needs a region, e.g. \"eu-central-1\"".into(),
                    ));
                }
            }
        }
        if self.region.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return Err(("documents.region", "must not be empty".into()));
        }
        // Admin commands read an unset ${VAR} as empty (Config::load_for_admin);
        // the object store then refuses to open, naming the key.
        let lenient = LENIENT_ENV.with(|l| l.get());
        for (key, value) in [
            ("documents.access_key_id", &self.access_key_id),
            ("documents.secret_access_key", &self.secret_access_key),
        ] {
            match value {
                None => {
                    return Err((key, "backend = \"s3\" needs credentials".into()));
                }
                Some(v) if v.is_empty() && !lenient => {
                    return Err((key, "must not be empty".into()));
                }
                Some(_) => {}
            }
        }
        if self.timeout < Duration::from_secs(1) {
            return Err(("documents.timeout", "must be at least 1s".into()));
        }
        if let Some(ca) = &self.ca_file
            && let Err(e) = std::fs::metadata(ca)
        {
            return Err(("documents.ca_file", format!("{}: {e}", ca.display())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3() -> Documents {
        Documents {
            backend: DocumentBackend::S3,
            bucket: "schleuse-docs".into(),
            endpoint: Some("https://minio.landkreis.example:9000".into()),
            access_key_id: Some("key".into()),
            secret_access_key: Some("secret".into()),
            ..Documents::default()
        }
    }

    fn key_of(d: &Documents) -> &'static str {
        d.check().expect_err("invalid").0
    }

    #[test]
    fn local_is_the_default_and_refuses_s3_keys() {
        assert!(Documents::default().check().is_ok());
        let d = Documents {
            bucket: "b".into(),
            ..Documents::default()
        };
        assert_eq!(key_of(&d), "documents.bucket");
    }

    #[test]
    fn s3_needs_bucket_credentials_and_a_prefix_of_its_own() {
        assert!(s3().check().is_ok());
        assert_eq!(
            key_of(&Documents {
                bucket: String::new(),
                ..s3()
            }),
            "documents.bucket"
        );
        assert_eq!(
            key_of(&Documents {
                secret_access_key: None,
                ..s3()
            }),
            "documents.secret_access_key"
        );
        for bad in ["", "/", "../x", "a//b", "a b"] {
            assert_eq!(
                key_of(&Documents {
                    prefix: bad.into(),
                    ..s3()
                }),
                "documents.prefix",
                "{bad:?}"
            );
        }
        assert!(
            Documents {
                prefix: "county/docs/".into(),
                ..s3()
            }
            .check()
            .is_ok()
        );
    }

    #[test]
    fn plain_http_only_to_loopback() {
        let loopback = |url: &str, allow_http| Documents {
            endpoint: Some(url.into()),
            allow_http,
            ..s3()
        };
        assert!(loopback("http://127.0.0.1:9000", true).check().is_ok());
        assert!(loopback("http://localhost:9000/", true).check().is_ok());
        assert!(loopback("http://[::1]:9000", true).check().is_ok());
        assert_eq!(
            key_of(&loopback("http://127.0.0.1:9000", false)),
            "documents.endpoint"
        );
        assert_eq!(
            key_of(&loopback("http://minio.example:9000", true)),
            "documents.allow_http"
        );
        assert_eq!(
            key_of(&loopback("https://minio.example:9000", true)),
            "documents.allow_http"
        );
        assert_eq!(
            key_of(&loopback("http://minio.example:9000", false)),
            "documents.endpoint"
        );
        assert_eq!(
            key_of(&loopback("ftp://127.0.0.1", true)),
            "documents.endpoint"
        );
        assert_eq!(
            key_of(&loopback("http://user@127.0.0.1", true)),
            "documents.endpoint"
        );
    }

    #[test]
    fn credentials_come_from_the_environment() {
        use super::super::Config;
        // SAFETY: only this test reads this variable.
        unsafe { std::env::set_var("SCHLEUSE_TEST_S3_SECRET", "from-env") };
        let text = |secret: &str| {
            format!(
                "[documents]\nbackend = \"s3\"\nbucket = \"docs\"\n\
                 endpoint = \"https://s3.landkreis.example\"\n\
                 access_key_id = \"key\"\nsecret_access_key = \"${{{secret}}}\"\n"
            )
        };
        let c = Config::parse(
            &text("SCHLEUSE_TEST_S3_SECRET"),
            std::path::Path::new("t.toml"),
        )
        .expect("parse");
        c.validate().expect("valid");
        assert_eq!(c.documents.secret_access_key.as_deref(), Some("from-env"));
        let err = Config::parse(
            &text("SCHLEUSE_SURELY_UNSET_VAR"),
            std::path::Path::new("t.toml"),
        )
        .expect_err("unset variable");
        assert!(
            err.to_string().contains("documents.secret_access_key"),
            "{err}"
        );
        // Admin commands read it as empty; opening the store then names the key.
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, text("SCHLEUSE_SURELY_UNSET_VAR")).expect("write");
        let c = Config::load_for_admin(&file).expect("admin commands tolerate unset secrets");
        let err = crate::store::objects::ObjectFiles::open(&c.documents).expect_err("empty secret");
        assert!(
            err.to_string().contains("documents.secret_access_key"),
            "{err}"
        );
    }

    #[test]
    fn shipped_config_states_the_defaults() {
        let text = include_str!("../../conf/schleuse.toml");
        let c = super::super::Config::parse(text, std::path::Path::new("schleuse.toml"))
            .expect("conf/schleuse.toml");
        let (d, default) = (&c.documents, Documents::default());
        assert_eq!(d.backend, default.backend);
        assert_eq!(d.prefix, default.prefix);
        assert_eq!(d.timeout, default.timeout);
        // The commented S3 example is valid once uncommented.
        let example: String = text
            .split("\n[documents]\n")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .expect("[documents] section")
            .lines()
            .map(|l| l.strip_prefix('#').unwrap_or(l))
            .filter(|l| !l.starts_with([' ', '#']) && l.contains(" = "))
            .map(|l| {
                l.replace("\"local\"", "\"s3\"")
                    .replace("${S3_ACCESS_KEY_ID}", "key")
                    .replace("${S3_SECRET_ACCESS_KEY}", "secret")
                    .replace("certs/s3-ca.pem", "Cargo.toml")
            })
            .collect::<Vec<_>>()
            .join("\n");
        let c = super::super::Config::parse(
            &format!("[documents]\n{example}\n"),
            std::path::Path::new("example.toml"),
        )
        .expect("the commented example parses");
        c.validate().expect("the commented example is valid");
        assert_eq!(c.documents.backend, DocumentBackend::S3);
        assert_eq!(c.documents.bucket, "schleuse-documents");
    }

    #[test]
    fn aws_needs_a_region() {
        let aws = Documents {
            endpoint: None,
            ..s3()
        };
        assert_eq!(key_of(&aws), "documents.region");
        assert!(
            Documents {
                region: Some("eu-central-1".into()),
                ..aws
            }
            .check()
            .is_ok()
        );
    }
}
