//! Test certificates made with the `openssl` CLI: a private CA and a leaf
//! for `localhost`/`127.0.0.1`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{output_text, run_bounded};

/// A private CA and a leaf for `localhost`/`127.0.0.1` signed by it (rustls
/// refuses a CA certificate used as an end entity, so no single self-signed).
#[derive(Debug, Clone)]
pub struct Certs {
    pub ca_crt: PathBuf,
    pub ca_key: PathBuf,
    pub server_crt: PathBuf,
    pub server_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = run_bounded(
        Command::new("openssl").args(args).current_dir(dir),
        None,
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "openssl {args:?} failed\n{}",
        output_text(&out)
    );
}

pub fn make_certs(dir: &Path) -> Certs {
    fs::create_dir_all(dir).expect("create cert dir");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut args = vec!["req", "-x509", "-nodes"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "30",
        "-subj",
        "/CN=schleuse test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &args);
    let mut args = vec!["req", "-new", "-nodes"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &args);
    fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n\
         subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("write leaf.ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "30",
            "-extfile",
            "leaf.ext",
        ],
    );
    Certs {
        ca_crt: dir.join("ca.crt"),
        ca_key: dir.join("ca.key"),
        server_crt: dir.join("server.crt"),
        server_key: dir.join("server.key"),
    }
}
