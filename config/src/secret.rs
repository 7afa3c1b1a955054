//! Where a secret comes from: `x_env`, `x_file` or inline `x`, resolved once.

use std::path::PathBuf;

use serde::Deserialize;

use crate::{ConfigError, Secret};

/// Where a secret comes from: the environment (preferred), a file, or inline.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Inline secrets are for tests and demos; prefer `password_env`.
    #[serde(default)]
    pub password: Option<String>,
    /// The key the three are named after in their section (`password`,
    /// `token`, `signing_key`, ...), for messages.
    #[serde(skip, default = "password_key")]
    pub key: &'static str,
}

fn password_key() -> &'static str {
    "password"
}

impl Default for SecretSource {
    fn default() -> Self {
        SecretSource::of("password", None, None, None)
    }
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSource")
            .field("password_env", &self.password_env)
            .field("password_file", &self.password_file)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl SecretSource {
    /// The secret a section names with `<key>_env`, `<key>_file` or `<key>`:
    /// every secret of the configuration resolves through here.
    pub fn of(
        key: &'static str,
        env: Option<String>,
        file: Option<PathBuf>,
        inline: Option<String>,
    ) -> SecretSource {
        SecretSource {
            password_env: env,
            password_file: file,
            password: inline,
            key,
        }
    }

    /// Is any of the three set?
    pub fn is_set(&self) -> bool {
        self.password_env.is_some() || self.password_file.is_some() || self.password.is_some()
    }

    /// The secret, or None when none of the three is set.
    pub fn resolve_optional(&self, what: &str) -> Result<Option<Secret>, ConfigError> {
        if !self.is_set() {
            return Ok(None);
        }
        self.resolve(what).map(Some)
    }

    /// Resolves the secret. `what` names it in errors (never its value).
    pub fn resolve(&self, what: &str) -> Result<Secret, ConfigError> {
        let set = [
            self.password_env.is_some(),
            self.password_file.is_some(),
            self.password.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            let key = self.key;
            return Err(ConfigError::Invalid(format!(
                "{what}: set exactly one of {key}_env, {key}_file, {key}"
            )));
        }
        if let Some(var) = &self.password_env {
            return std::env::var(var)
                .map(|v| Secret::new(v.into_bytes()))
                .map_err(|_| ConfigError::MissingEnv {
                    what: what.to_string(),
                    var: var.clone(),
                });
        }
        if let Some(path) = &self.password_file {
            let mut bytes = std::fs::read(path).map_err(|source| ConfigError::SecretFile {
                what: what.to_string(),
                path: path.clone(),
                source,
            })?;
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            return Ok(Secret::new(bytes));
        }
        Ok(Secret::new(
            self.password.clone().unwrap_or_default().into_bytes(),
        ))
    }
}
