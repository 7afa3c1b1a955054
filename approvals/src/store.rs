//! Where approval requests and decisions are kept: write-once objects.
//!
//! Nothing is ever updated in place. A request is an object; each approval, the
//! decision, the use of an approval and a revocation are further objects, each
//! created only if it does not exist yet (`PutMode::Create` on object stores,
//! `INSERT ... ON CONFLICT DO NOTHING` in PostgreSQL). "Whoever creates
//! `decision.json` first decides" and "whoever creates `used.json` first runs
//! the statement" are then atomic on every backend, across any number of
//! gateway replicas, with no locks and no read-modify-write.
//!
//! Backends: a local directory (the default: no extra service), any object
//! store with conditional creates (`s3://`, and `memory://` for tests), and
//! PostgreSQL (`postgres://`) for deployments that already run one.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("approvals store {store:?}: {message}")]
    Config { store: String, message: String },
    #[error("approvals store: {0}")]
    Backend(String),
}

/// Write-once objects by key (`a/b/c.json`).
#[async_trait]
pub trait ObjectLog: Send + Sync + 'static {
    /// Creates `key` unless it exists; true when this call created it.
    async fn create(&self, key: &str, body: Bytes) -> Result<bool, StoreError>;
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError>;
    /// Every key under `prefix` (which ends in `/`), in any order.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// What the operator configured, for messages.
    fn describe(&self) -> String;
}

/// Opens `[approvals] store`: a directory (created if missing), `file://`,
/// `s3://bucket/prefix`, `gs://…`, `az://…`, `memory://` or `postgres://...`.
pub async fn open(
    location: &str,
    options: &BTreeMap<String, String>,
) -> Result<Arc<dyn ObjectLog>, StoreError> {
    let config_err = |message: String| StoreError::Config {
        store: location.to_string(),
        message,
    };
    if location.starts_with("postgres://") || location.starts_with("postgresql://") {
        return Ok(Arc::new(
            super::postgres::PostgresLog::connect(location).await?,
        ));
    }
    if let Some(rest) = location.strip_prefix("memory://") {
        return Ok(Arc::new(ObjectStoreLog {
            store: Arc::new(object_store::memory::InMemory::new()),
            prefix: rest.trim_matches('/').to_string(),
            description: location.to_string(),
        }));
    }
    // Directories, file://, s3://, gs://, az://: the one opener every part of
    // Chaperone uses (environment credentials, then the options; retries).
    let store =
        chaperone_store::Store::open(location, options).map_err(|e| config_err(e.to_string()))?;
    Ok(Arc::new(ObjectStoreLog {
        store: store.inner,
        prefix: store.prefix,
        description: store.description,
    }))
}

/// The write-once log on an object store.
pub struct ObjectStoreLog {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    description: String,
}

impl ObjectStoreLog {
    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

#[async_trait]
impl ObjectLog for ObjectStoreLog {
    async fn create(&self, key: &str, body: Bytes) -> Result<bool, StoreError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&self.path(key), PutPayload::from(body), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(backend(e)),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        match self.store.get(&self.path(key)).await {
            Ok(r) => r.bytes().await.map(Some).map_err(backend),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let full = self.path(prefix.trim_end_matches('/'));
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let metas: Vec<_> = match self.store.list(Some(&full)).try_collect().await {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(backend(e)),
        };
        Ok(metas
            .into_iter()
            .map(|m| {
                let s = m.location.to_string();
                s.strip_prefix(&strip).map(str::to_string).unwrap_or(s)
            })
            // Half-written files of the local store are hidden by it; skip anything odd.
            .filter(|k| k.starts_with(prefix))
            .collect())
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exercise(log: Arc<dyn ObjectLog>) {
        assert!(log
            .create("requests/a/request.json", Bytes::from("1"))
            .await
            .unwrap());
        assert!(!log
            .create("requests/a/request.json", Bytes::from("2"))
            .await
            .unwrap());
        assert_eq!(
            log.get("requests/a/request.json").await.unwrap(),
            Some(Bytes::from("1"))
        );
        assert_eq!(log.get("requests/b/request.json").await.unwrap(), None);
        log.create("requests/a/approve/x.json", Bytes::from("x"))
            .await
            .unwrap();
        log.create("other/k", Bytes::from("o")).await.unwrap();
        let mut keys = log.list("requests/").await.unwrap();
        keys.sort();
        assert_eq!(
            keys,
            ["requests/a/approve/x.json", "requests/a/request.json"]
        );
        assert!(log.list("nothing/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn directory_and_memory_logs_are_write_once() {
        let dir = std::env::temp_dir().join(format!("chp-approvals-{}", std::process::id()));
        exercise(open(dir.to_str().unwrap(), &BTreeMap::new()).await.unwrap()).await;
        let _ = std::fs::remove_dir_all(&dir);
        exercise(open("memory://", &BTreeMap::new()).await.unwrap()).await;
        exercise(
            open("memory://some/prefix", &BTreeMap::new())
                .await
                .unwrap(),
        )
        .await;
    }
}
