//! TLS material: the listener's certificate and the upstream's trust roots.
//!
//! On first start without `[tls] cert`/`key` files, a self-signed certificate
//! for `server.hostname` (plus `localhost`, `127.0.0.1`) is generated so a
//! newcomer can try STARTTLS at once; production replaces it with a real one.
//! The one rustls crypto provider in the tree is aws-lc-rs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn file_err(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Writes a self-signed certificate and key if neither file exists.
/// Returns true when it generated one.
pub fn ensure_self_signed(cert: &Path, key: &Path, hostname: &str) -> Result<bool, TlsError> {
    if cert.exists() || key.exists() {
        return Ok(false);
    }
    let mut names = vec![hostname.to_string(), "localhost".to_string()];
    names.dedup();
    let mut params =
        rcgen::CertificateParams::new(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(std::net::IpAddr::from([
            127, 0, 0, 1,
        ])));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, hostname);
    let key_pair = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let certificate = params
        .self_signed(&key_pair)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    write_file(cert, certificate.pem().as_bytes(), 0o644)?;
    write_file(key, key_pair.serialize_pem().as_bytes(), 0o600)?;
    Ok(true)
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| file_err(path, e))?;
    f.write_all(data).map_err(|e| file_err(path, e))?;
    f.sync_all().map_err(|e| file_err(path, e))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "contains no PEM certificate"));
    }
    Ok(certs)
}

/// The listeners' TLS configuration (TLS 1.2 and 1.3).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = load_certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| file_err(cert, format!("does not match the key: {e}")))?;
    Ok(Arc::new(config))
}

/// The upstream connector: public web PKI roots plus an optional extra CA
/// file (private relays, tests). Certificates are always verified.
pub fn client_connector(ca_file: Option<&Path>) -> Result<tokio_rustls::TlsConnector, TlsError> {
    Ok(tokio_rustls::TlsConnector::from(Arc::new(client_config(
        ca_file,
    )?)))
}

/// The client side for any TLS peer (upstream, database): WebPKI roots plus
/// the certificates in `ca_file`, aws-lc-rs.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        for cert in load_certs(path)? {
            roots
                .add(cert)
                .map_err(|e| file_err(path, format!("not a usable CA certificate: {e}")))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("c/server.crt");
        let key = dir.path().join("c/server.key");
        assert!(ensure_self_signed(&cert, &key, "gw.test").expect("generate"));
        assert!(!ensure_self_signed(&cert, &key, "gw.test").expect("second call"));
        server_config(&cert, &key).expect("loads");
        client_connector(Some(&cert)).expect("usable as extra root");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn missing_file_names_path() {
        let err = server_config(
            Path::new("/nonexistent/x.crt"),
            Path::new("/nonexistent/x.key"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/x.crt"), "{err}");
    }
}
