//! Documents in an S3-compatible bucket (`[documents] backend = "s3"`,
//! SPEC §11): the same [`DocumentFiles`] contract as the local files, so
//! several gateway instances can serve each other's links.
//!
//! **Only ciphertext reaches the object store.** `crate::links::vault`
//! encrypts every document (AES-256-GCM, key derived from the link token and
//! password, never stored) before it calls [`DocumentFiles::put`]; this
//! module moves those opaque bytes and nothing else. A copy of the bucket,
//! a provider's backup or a leaked access key reveals no document. Keep it
//! that way: nothing here may ever be handed plaintext.
//!
//! How the local contract maps onto S3, and why:
//! - **Durable before the link row commits.** `put` returns only after the
//!   store answered the PUT with success; S3 (and MinIO, Ceph RGW) acknowledge
//!   a PUT only once the object is stored redundantly, which is what the
//!   fsync gives the local files. The request signature covers a SHA-256 of
//!   the body, so a damaged upload is refused rather than stored; AES-GCM
//!   would catch any later damage when the document is opened.
//! - **Keys:** `<prefix>/<id>`, `prefix` from the config (default
//!   `documents`). Ids are checked like file names
//!   ([`super::document_files::valid_id`]: letters, digits, `-`), so an id can
//!   never leave the prefix.
//! - **The prefix belongs to schleuse alone.** `list` returns the objects
//!   directly below it whose names are valid ids (nothing nested, nothing
//!   else), and the purge deletes those that are older than an hour and have
//!   no active link. Instances that share a prefix must therefore share their
//!   link store too (PostgreSQL); with the embedded store each instance needs
//!   a prefix of its own, or one instance's purge deletes the other's
//!   documents after an hour.
//! - **Missing is not an error:** `get` of a missing key is `Ok(None)`,
//!   `delete` of one is `Ok(())`, as for files.
//! - **Bounded waits:** every request has `[documents] timeout`, with at most
//!   two retries inside it; a put runs inside an SMTP session, which answers
//!   `451` if the store fails.
//! - **One TLS stack:** object_store's `aws` feature brings reqwest on
//!   rustls with aws-lc-rs, the provider the rest of the tree uses (no
//!   `ring`). `[documents] ca_file` adds a private CA for an on-premises
//!   endpoint; plain HTTP is allowed only to loopback (config validation).
//!
//! Requests are path-style (`<endpoint>/<bucket>/<key>`), which every
//! S3-compatible server understands.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{
    BackoffConfig, Certificate, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt, PutOptions,
    PutPayload, RetryConfig,
};

use super::BoxFuture;
use super::document_files::{DocumentError, DocumentFiles, valid_id};
use crate::config::Documents;

/// Documents as objects below one prefix of one bucket.
pub struct ObjectFiles {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
}

impl std::fmt::Debug for ObjectFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectFiles({} {})", self.store, self.prefix)
    }
}

fn config_error(key: &str, reason: impl std::fmt::Display) -> DocumentError {
    DocumentError::Config(format!("documents.{key}: {reason}"))
}

impl ObjectFiles {
    /// A client for the configured bucket. Sends nothing yet (see
    /// [`DocumentFiles::probe`]).
    pub fn open(conf: &Documents) -> Result<ObjectFiles, DocumentError> {
        // Admin commands read an unset ${VAR} as empty: say which key, and
        // why it is empty, instead of a signature error from the server.
        let credential = |key: &str, value: &Option<String>| match value.as_deref() {
            Some(v) if !v.is_empty() => Ok(v.to_owned()),
            _ => Err(config_error(
                key,
                "is empty (an unset ${VAR}? set it in this environment too)",
            )),
        };
        let access_key_id = credential("access_key_id", &conf.access_key_id)?;
        let secret_access_key = credential("secret_access_key", &conf.secret_access_key)?;
        let mut options = ClientOptions::new()
            .with_timeout(conf.timeout)
            .with_connect_timeout(conf.timeout.min(Duration::from_secs(5)))
            .with_allow_http(conf.allow_http);
        if let Some(ca) = &conf.ca_file {
            let pem = std::fs::read(ca).map_err(|e| config_error("ca_file", e))?;
            for cert in
                Certificate::from_pem_bundle(&pem).map_err(|e| config_error("ca_file", e))?
            {
                options = options.with_root_certificate(cert);
            }
        }
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: 2,
            retry_timeout: conf.timeout,
        };
        let region = conf.region.as_deref().unwrap_or("us-east-1");
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(conf.bucket.trim())
            .with_region(region.trim())
            .with_access_key_id(access_key_id)
            .with_secret_access_key(secret_access_key)
            .with_allow_http(conf.allow_http)
            .with_client_options(options)
            .with_retry(retry);
        if let Some(endpoint) = &conf.endpoint {
            builder = builder.with_endpoint(endpoint.trim().trim_end_matches('/'));
        }
        let store = builder.build().map_err(|e| config_error("bucket", e))?;
        ObjectFiles::with_store(Arc::new(store), conf.prefix_trimmed())
    }

    /// Documents below `prefix` (slashes around it are ignored) of any
    /// object store; the gateway uses [`ObjectFiles::open`].
    pub fn with_store(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
    ) -> Result<ObjectFiles, DocumentError> {
        let trimmed = prefix.trim_matches('/');
        let prefix = Path::parse(trimmed).map_err(|e| config_error("prefix", e))?;
        if prefix.parts_count() == 0 {
            return Err(config_error("prefix", "must not be empty"));
        }
        Ok(ObjectFiles { store, prefix })
    }

    /// The object key of a document.
    pub fn key(&self, id: &str) -> Result<Path, DocumentError> {
        if valid_id(id) {
            Ok(self.prefix.clone().join(id))
        } else {
            Err(DocumentError::BadId(id.to_owned()))
        }
    }
}

fn object_error(id: &str) -> impl FnOnce(object_store::Error) -> DocumentError + '_ {
    move |cause| DocumentError::Object {
        id: id.to_owned(),
        cause,
    }
}

impl DocumentFiles for ObjectFiles {
    fn put(&self, id: &str, data: Vec<u8>) -> BoxFuture<'_, Result<(), DocumentError>> {
        let id = id.to_owned();
        Box::pin(async move {
            let key = self.key(&id)?;
            // Success means the store has the whole object (a PUT is atomic
            // and acknowledged only once stored): as durable as the fsync.
            self.store
                .put_opts(&key, PutPayload::from(data), PutOptions::default())
                .await
                .map_err(object_error(&id))?;
            Ok(())
        })
    }

    fn get(&self, id: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, DocumentError>> {
        let id = id.to_owned();
        Box::pin(async move {
            let key = self.key(&id)?;
            let result = match self.store.get_opts(&key, GetOptions::default()).await {
                Ok(result) => result,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(cause) => return Err(object_error(&id)(cause)),
            };
            let bytes = result.bytes().await.map_err(object_error(&id))?;
            Ok(Some(bytes.to_vec()))
        })
    }

    fn delete(&self, id: &str) -> BoxFuture<'_, Result<(), DocumentError>> {
        let id = id.to_owned();
        Box::pin(async move {
            let key = self.key(&id)?;
            match self.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(cause) => Err(object_error(&id)(cause)),
            }
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<(String, SystemTime)>, DocumentError>> {
        Box::pin(async move {
            // Non-recursive, all pages: the documents are the direct
            // children of the prefix; anything nested is not ours to purge.
            let listed = self
                .store
                .list_with_delimiter(Some(&self.prefix))
                .await
                .map_err(DocumentError::List)?;
            Ok(listed
                .objects
                .into_iter()
                .filter_map(|meta| {
                    let name = meta.location.filename()?;
                    let id_of_ours =
                        valid_id(name) && meta.location.prefix_match(&self.prefix)?.count() == 1;
                    id_of_ours.then(|| (name.to_owned(), SystemTime::from(meta.last_modified)))
                })
                .collect())
        })
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), DocumentError>> {
        Box::pin(async move {
            // One list request below a name no id can take (`_`): answered
            // only when the endpoint is reachable, the bucket exists (else
            // 404 NoSuchBucket), the credentials are right and may list
            // (which the purge needs).
            let probe = self.prefix.clone().join("_probe");
            self.store
                .list_with_delimiter(Some(&probe))
                .await
                .map(drop)
                .map_err(DocumentError::Probe)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn files() -> ObjectFiles {
        ObjectFiles::with_store(Arc::new(InMemory::new()), "/documents/").expect("prefix")
    }

    #[tokio::test]
    async fn put_get_delete_list() {
        let files = files();
        files.put("abc", b"cipher".to_vec()).await.expect("put");
        assert_eq!(
            files.get("abc").await.expect("get"),
            Some(b"cipher".to_vec())
        );
        assert_eq!(files.get("nope").await.expect("get"), None);
        let listed = files.list().await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, "abc");
        files.delete("abc").await.expect("delete");
        files.delete("abc").await.expect("delete twice");
        assert_eq!(files.get("abc").await.expect("get"), None);
        files.probe().await.expect("probe");
    }

    #[tokio::test]
    async fn ids_cannot_leave_the_prefix_and_strangers_are_not_listed() {
        let store = Arc::new(InMemory::new());
        let files = ObjectFiles::with_store(store.clone(), "documents").expect("prefix");
        for bad in ["../x", "a/b", "", ".hidden", "a.b", "_probe"] {
            assert!(matches!(
                files.put(bad, vec![1]).await,
                Err(DocumentError::BadId(_))
            ));
        }
        assert_eq!(files.key("abc").expect("key").as_ref(), "documents/abc");
        // Objects the purge must never take for orphans: nested, foreign
        // names, or next to the prefix.
        for other in [
            "documents/sub/abc",
            "documents/a.b",
            "documents-x/abc",
            "abc",
        ] {
            store
                .put(&Path::from(other), PutPayload::from_static(b"x"))
                .await
                .expect("put");
        }
        files.put("ours", vec![2]).await.expect("put");
        let listed: Vec<String> = files
            .list()
            .await
            .expect("list")
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(listed, ["ours"]);
    }

    #[test]
    fn an_empty_prefix_is_refused() {
        for bad in ["", "/", "a/../b"] {
            assert!(
                ObjectFiles::with_store(Arc::new(InMemory::new()), bad).is_err(),
                "{bad:?}"
            );
        }
    }
}
