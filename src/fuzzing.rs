//! Entry points for the fuzz targets in `fuzz/` (not a stable API).
//!
//! Only what the targets cannot reach through the public modules lives
//! here; everything else (session, transform, scanners, webhook, link
//! service, PROXY header) they drive through the modules themselves.

use std::path::Path;

use crate::config::{Config, ConfigError};

/// The config loader on text instead of a file: parse, then validate,
/// exactly as [`Config::load`] does after reading the file.
pub fn config(text: &str) -> Result<Config, ConfigError> {
    let config = Config::parse(text, Path::new("fuzz.toml"))?;
    config.validate()?;
    Ok(config)
}
