//! Where `[gateway] policy_file` comes from: the policy source that every
//! replica shares while each keeps its own `[gateway]`.
//!
//! - a file, relative to the config file's directory (a Kubernetes ConfigMap,
//!   a shared volume);
//! - an object on an S3-compatible store, `s3://bucket/key`: replicas on
//!   different machines read the same object. Options (endpoint, region,
//!   credentials) come from `[gateway.policy_file_options]` and the usual
//!   `AWS_*` environment variables, as for the archive.
//!
//! The source is read at start and again at every reload (SIGHUP, or every
//! `config_poll_secs`): publishing a new object is how an operator changes
//! every replica's roles, policies and masking rules within seconds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::ConfigError;

/// How long reading the policy object may take before the (re)load fails.
const OBJECT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// `[gateway] policy_file`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    File(PathBuf),
    Object {
        url: String,
        options: BTreeMap<String, String>,
    },
}

impl PolicySource {
    /// The policy source named by a config's content, if any; `config_path`
    /// anchors a relative file name.
    pub fn of(table: &toml::Table, config_path: &Path) -> Result<Option<Self>, ConfigError> {
        let Some(gateway) = table.get("gateway") else {
            return Ok(None);
        };
        let Some(location) = gateway.get("policy_file").and_then(|v| v.as_str()) else {
            return Ok(None);
        };
        if !location.contains("://") {
            let dir = config_path.parent().unwrap_or(Path::new("."));
            return Ok(Some(PolicySource::File(dir.join(location))));
        }
        if !location.starts_with("s3://") {
            return Err(ConfigError::Invalid(format!(
                "gateway.policy_file = {location:?}: use a file name or s3://bucket/key"
            )));
        }
        let mut options = BTreeMap::new();
        if let Some(table) = gateway
            .get("policy_file_options")
            .and_then(|v| v.as_table())
        {
            for (k, v) in table {
                let Some(v) = v.as_str() else {
                    return Err(ConfigError::Invalid(format!(
                        "gateway.policy_file_options.{k} must be a string"
                    )));
                };
                options.insert(k.clone(), v.to_string());
            }
        }
        Ok(Some(PolicySource::Object {
            url: location.to_string(),
            options,
        }))
    }

    /// The source's content.
    pub fn read(&self) -> Result<String, ConfigError> {
        match self {
            PolicySource::File(path) => {
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })
            }
            PolicySource::Object { url, options } => {
                read_object(url, options).map_err(|message| ConfigError::PolicySource {
                    location: url.clone(),
                    message,
                })
            }
        }
    }
}

impl std::fmt::Display for PolicySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicySource::File(path) => write!(f, "{}", path.display()),
            PolicySource::Object { url, .. } => f.write_str(url),
        }
    }
}

/// Reads `s3://bucket/key`. Config loading is synchronous (the command line,
/// the start, a reload off the async workers), so the request runs on a
/// runtime of its own, on a thread of its own (this may be called from
/// within another runtime).
fn read_object(url: &str, options: &BTreeMap<String, String>) -> Result<String, String> {
    let store = chaperone_store::Store::open(url, options).map_err(|e| e.to_string())?;
    if store.prefix.is_empty() {
        return Err("name the object: s3://bucket/key".to_string());
    }
    let fetch = async move {
        let bytes = store.get(&store.prefix).await.map_err(|e| e.to_string())?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "the object is not UTF-8 text".to_string())
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                runtime.block_on(async {
                    tokio::time::timeout(OBJECT_READ_TIMEOUT, fetch)
                        .await
                        .map_err(|_| {
                            format!(
                                "no answer from the store in {} s",
                                OBJECT_READ_TIMEOUT.as_secs()
                            )
                        })?
                })
            })
            .join()
            .map_err(|_| "the reading thread panicked".to_string())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Result<Option<PolicySource>, ConfigError> {
        PolicySource::of(
            &toml::from_str(text).unwrap(),
            Path::new("/etc/chaperone/chaperone.toml"),
        )
    }

    #[test]
    fn a_file_is_relative_to_the_config_and_a_url_keeps_its_options() {
        assert_eq!(source("[gateway]\nlisten = \"x\"").unwrap(), None);
        assert_eq!(
            source("[gateway]\npolicy_file = \"policies.toml\"").unwrap(),
            Some(PolicySource::File("/etc/chaperone/policies.toml".into()))
        );
        let Some(PolicySource::Object { url, options }) = source(
            "[gateway]\npolicy_file = \"s3://b/p.toml\"\n[gateway.policy_file_options]\naws_region = \"eu-west-1\"",
        )
        .unwrap() else {
            panic!("an object");
        };
        assert_eq!(url, "s3://b/p.toml");
        assert_eq!(options["aws_region"], "eu-west-1");
        let err = source("[gateway]\npolicy_file = \"ftp://x/y\"").unwrap_err();
        assert!(err.to_string().contains("s3://bucket/key"), "{err}");
    }

    #[test]
    fn an_unreachable_store_is_a_clear_error_not_a_hang() {
        let s = PolicySource::Object {
            url: "s3://bucket/policies.toml".into(),
            options: [
                ("aws_endpoint", "http://127.0.0.1:9"),
                ("aws_allow_http", "true"),
                ("aws_access_key_id", "x"),
                ("aws_secret_access_key", "y"),
                ("aws_region", "us-east-1"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        };
        let err = s.read().unwrap_err().to_string();
        assert!(err.contains("s3://bucket/policies.toml"), "{err}");
        let err = PolicySource::Object {
            url: "s3://bucket".into(),
            options: BTreeMap::new(),
        }
        .read()
        .unwrap_err()
        .to_string();
        assert!(err.contains("s3://bucket/key"), "{err}");
    }
}
