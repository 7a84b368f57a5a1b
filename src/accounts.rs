//! SMTP accounts: who may submit, with which password, as which senders.
//!
//! Accounts live in their own TOML file (`[accounts] file`), written by
//! `schleuse user …` and editable by hand; the gateway re-reads it on SIGHUP.
//! Passwords are stored only as argon2id PHC strings.
//!
//! ```toml
//! [[account]]
//! name = "via"
//! password_hash = "$argon2id$v=19$..."
//! allowed_senders = ["*@landkreis.example"]
//! messages_per_hour = 1000   # optional: overrides [limits] account_*
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use argon2::password_hash::PasswordHasher;
use argon2::{Argon2, PasswordHash};
use serde::{Deserialize, Serialize};

use crate::argon2_pool::Memory;

#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("{file}: cannot read: {cause}")]
    Read {
        file: PathBuf,
        cause: std::io::Error,
    },
    #[error("{file}: cannot write: {cause}")]
    Write {
        file: PathBuf,
        cause: std::io::Error,
    },
    #[error("{file}: {reason}")]
    Invalid { file: PathBuf, reason: String },
    #[error("cannot hash password: {0}")]
    Hash(String),
    #[error("account {0:?} already exists")]
    Exists(String),
    #[error("no account named {0:?}")]
    NotFound(String),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub name: String,
    pub password_hash: String,
    /// Envelope senders and `From:` addresses this account may use:
    /// `*@domain`, `*@*.domain`, an exact address, or `*` for any.
    pub allowed_senders: Vec<String>,
    /// The staff member's own address for `Reply-To:` (and copies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// A header the app sets per message with the staff member's address
    /// (e.g. `X-VIA-User`); trusted only within `allowed_senders`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_header: Option<String>,
    /// Overrides `[sender] copy_to_sender` for this account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_to_sender: Option<bool>,
    /// Override `[limits] account_messages_per_hour`, `_per_day` and
    /// `account_recipients_per_day` for this account (0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_per_hour: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_per_day: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipients_per_day: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accounts {
    #[serde(default, rename = "account")]
    pub accounts: Vec<Account>,
}

impl Accounts {
    /// Loads the file; a missing file is an empty set of accounts.
    pub fn load(path: &Path) -> Result<Accounts, AccountsError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Accounts::default()),
            Err(cause) => {
                return Err(AccountsError::Read {
                    file: path.into(),
                    cause,
                });
            }
        };
        let accounts: Accounts = toml::from_str(&text).map_err(|e| AccountsError::Invalid {
            file: path.into(),
            reason: e.message().trim().to_string(),
        })?;
        accounts.validate(path)?;
        Ok(accounts)
    }

    fn validate(&self, path: &Path) -> Result<(), AccountsError> {
        let invalid = |reason: String| AccountsError::Invalid {
            file: path.into(),
            reason,
        };
        for (i, a) in self.accounts.iter().enumerate() {
            if !valid_name(&a.name) {
                return Err(invalid(format!(
                    "account {:?}: names use letters, digits, '.', '_' and '-'",
                    a.name
                )));
            }
            if self.accounts[..i].iter().any(|b| b.name == a.name) {
                return Err(invalid(format!("account {:?} is defined twice", a.name)));
            }
            if PasswordHash::new(&a.password_hash).is_err() {
                return Err(invalid(format!(
                    "account {:?}: password_hash is not a PHC string (use `schleuse user passwd`)",
                    a.name
                )));
            }
            if a.allowed_senders.is_empty() {
                return Err(invalid(format!(
                    "account {:?}: allowed_senders is empty, so it could send nothing",
                    a.name
                )));
            }
        }
        Ok(())
    }

    /// Writes atomically (temp file, fsync, rename) with mode 0600: the file
    /// holds password hashes.
    pub fn save(&self, path: &Path) -> Result<(), AccountsError> {
        let werr = |cause| AccountsError::Write {
            file: path.into(),
            cause,
        };
        let body = toml::to_string_pretty(self).map_err(|e| AccountsError::Invalid {
            file: path.into(),
            reason: e.to_string(),
        })?;
        let text = format!(
            "# schleuse SMTP accounts: managed by `schleuse user`, editable by hand.\n\
             # The gateway re-reads this file on SIGHUP (systemctl reload schleuse).\n\n{body}"
        );
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(werr)?;
        }
        let tmp = path.with_extension("toml.tmp");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(werr)?;
            f.write_all(text.as_bytes()).map_err(werr)?;
            f.sync_all().map_err(werr)?;
        }
        std::fs::rename(&tmp, path).map_err(werr)?;
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.name == name)
    }

    pub fn add(&mut self, account: Account) -> Result<(), AccountsError> {
        if self.get(&account.name).is_some() {
            return Err(AccountsError::Exists(account.name));
        }
        self.accounts.push(account);
        Ok(())
    }

    pub fn set_password(&mut self, name: &str, password: &str) -> Result<(), AccountsError> {
        let hash = hash_password(password)?;
        let account = self
            .accounts
            .iter_mut()
            .find(|a| a.name == name)
            .ok_or_else(|| AccountsError::NotFound(name.into()))?;
        account.password_hash = hash;
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Result<(), AccountsError> {
        let before = self.accounts.len();
        self.accounts.retain(|a| a.name != name);
        if self.accounts.len() == before {
            return Err(AccountsError::NotFound(name.into()));
        }
        Ok(())
    }

    /// Checks a login. CPU-heavy (argon2): call from a blocking thread; the
    /// server goes through [`crate::argon2_pool`] ([`Accounts::verify_with`]).
    pub fn verify(&self, name: &str, password: &str) -> Option<Account> {
        self.verify_with(&mut Memory::default(), name, password)
    }

    /// [`Accounts::verify`] with argon2 working in `memory`. Unknown
    /// accounts still cost one hash so timing does not reveal names.
    pub fn verify_with(&self, memory: &mut Memory, name: &str, password: &str) -> Option<Account> {
        match self.get(name) {
            Some(a) => memory
                .verify(&a.password_hash, password.as_bytes())
                .then(|| a.clone()),
            None => {
                memory.waste(password.as_bytes());
                None
            }
        }
    }
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

pub fn hash_password(password: &str) -> Result<String, AccountsError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AccountsError::Hash(e.to_string()))
}

/// A random password for generated accounts: 24 characters from an
/// unambiguous alphabet (≈ 137 bits).
pub fn random_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..24)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl Account {
    /// May this account use `address` as envelope sender or `From:`?
    pub fn may_send_as(&self, address: &str) -> bool {
        self.allowed_senders
            .iter()
            .any(|pattern| sender_matches(pattern, address))
    }
}

/// Case-insensitive match of an address against `*`, `*@domain`,
/// `*@*.domain` (subdomains) or an exact address.
pub fn sender_matches(pattern: &str, address: &str) -> bool {
    let pattern = pattern.trim();
    if pattern == "*" {
        return true;
    }
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    if local.is_empty() || domain.is_empty() {
        return false;
    }
    match pattern.strip_prefix("*@") {
        Some(pd) => match pd.strip_prefix("*.") {
            Some(parent) => {
                domain.len() > parent.len() + 1
                    && domain
                        .to_ascii_lowercase()
                        .ends_with(&format!(".{}", parent.to_ascii_lowercase()))
            }
            None => domain.eq_ignore_ascii_case(pd),
        },
        None => pattern.eq_ignore_ascii_case(address),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_patterns() {
        assert!(sender_matches("*", "a@b.c"));
        assert!(sender_matches(
            "*@landkreis.example",
            "Anna@Landkreis.Example"
        ));
        assert!(!sender_matches("*@landkreis.example", "a@evil.example"));
        assert!(!sender_matches(
            "*@landkreis.example",
            "a@xlandkreis.example"
        ));
        assert!(sender_matches(
            "*@*.landkreis.example",
            "a@schule.landkreis.example"
        ));
        assert!(!sender_matches(
            "*@*.landkreis.example",
            "a@landkreis.example"
        ));
        assert!(sender_matches(
            "via@landkreis.example",
            "VIA@landkreis.example"
        ));
        assert!(!sender_matches(
            "via@landkreis.example",
            "via2@landkreis.example"
        ));
        assert!(!sender_matches("*@landkreis.example", "@landkreis.example"));
    }

    #[test]
    fn password_round_trip_and_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("accounts.toml");
        let mut accounts = Accounts::load(&path).expect("missing file is empty");
        assert!(accounts.accounts.is_empty());
        accounts
            .add(Account {
                name: "via".into(),
                password_hash: hash_password("geheim").expect("hash"),
                allowed_senders: vec!["*@landkreis.example".into()],
                ..Account::default()
            })
            .expect("add");
        accounts.save(&path).expect("save");
        let loaded = Accounts::load(&path).expect("load");
        assert!(loaded.verify("via", "geheim").is_some());
        assert!(loaded.verify("via", "falsch").is_none());
        assert!(loaded.verify("nobody", "geheim").is_none());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn broken_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("accounts.toml");
        std::fs::write(
            &path,
            "[[account]]\nname = \"x\"\npassword_hash = \"plain\"\nallowed_senders = [\"*\"]\n",
        )
        .expect("write");
        let err = Accounts::load(&path).unwrap_err().to_string();
        assert!(err.contains("PHC"), "{err}");
    }
}
