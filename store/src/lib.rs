//! Object storage by URL, opened the same way for every part of Chaperone (the
//! archive, the approvals store, a shared policy file): a local directory, or
//! S3 / GCS / Azure by URL (credentials from the environment, as each SDK reads
//! them, then the configured options).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// S3's smallest part (except the last); also the size past which uploads are
/// multipart.
pub const PART_SIZE: usize = 5 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {store:?}: {message}")]
    Config { store: String, message: String },
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("local file: {0}")]
    Io(#[from] std::io::Error),
    #[error("upload of {path} not confirmed: {message}")]
    Unconfirmed { path: String, message: String },
}

/// Short retries inside one request: the uploader retries whole segments
/// forever with its own backoff, and needs to notice an outage quickly.
fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: std::time::Duration::from_millis(100),
            max_backoff: std::time::Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(15),
    }
}

/// Applies `store_options` to a builder, after what it read from the
/// environment: each key parsed as the store's own config key (an unknown key
/// is an error naming it).
fn with_options<B, K>(
    mut builder: B,
    options: &BTreeMap<String, String>,
    set: impl Fn(B, K, &str) -> B,
) -> Result<B, String>
where
    K: std::str::FromStr<Err = object_store::Error>,
{
    for (k, v) in options {
        let key = k
            .parse()
            .map_err(|e: object_store::Error| format!("option {k}: {e}"))?;
        builder = set(builder, key, v);
    }
    Ok(builder)
}

/// An opened store and the prefix inside it that its user works under.
#[derive(Debug, Clone)]
pub struct Store {
    pub inner: Arc<dyn ObjectStore>,
    /// The path inside the store given by the URL (for the archive, where `v1/`
    /// lives; may be empty).
    pub prefix: String,
    /// What the operator configured, for messages.
    pub description: String,
}

impl Store {
    /// Opens `location`: a URL (`s3://bucket/prefix`, `gs://…`, `az://…`,
    /// `file:///dir`) or a local directory (created if missing).
    pub fn open(location: &str, options: &BTreeMap<String, String>) -> Result<Store, StoreError> {
        let config_err = |message: String| StoreError::Config {
            store: location.to_string(),
            message,
        };
        if !location.contains("://") {
            return Self::open_dir(Path::new(location), location);
        }
        let url = url::Url::parse(location).map_err(|e| config_err(e.to_string()))?;
        if url.scheme() == "file" {
            let dir = url
                .to_file_path()
                .map_err(|_| config_err("not a local path".into()))?;
            return Self::open_dir(&dir, location);
        }
        let prefix = url.path().trim_matches('/').to_string();
        let inner: Arc<dyn ObjectStore> = match url.scheme() {
            "s3" | "s3a" => {
                let b = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(location)
                    .with_retry(retry());
                let b = with_options(b, options, |b, k, v| b.with_config(k, v));
                Arc::new(
                    b.map_err(config_err)?
                        .build()
                        .map_err(|e| config_err(e.to_string()))?,
                )
            }
            "gs" => {
                let b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(location)
                    .with_retry(retry());
                let b = with_options(b, options, |b, k, v| b.with_config(k, v));
                Arc::new(
                    b.map_err(config_err)?
                        .build()
                        .map_err(|e| config_err(e.to_string()))?,
                )
            }
            "az" | "azure" | "abfs" | "abfss" => {
                let b = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(location)
                    .with_retry(retry());
                let b = with_options(b, options, |b, k, v| b.with_config(k, v));
                Arc::new(
                    b.map_err(config_err)?
                        .build()
                        .map_err(|e| config_err(e.to_string()))?,
                )
            }
            other => {
                return Err(config_err(format!(
                    "unsupported scheme {other}://; use a directory, file://, s3://, gs:// or az://"
                )))
            }
        };
        Ok(Store {
            inner,
            prefix,
            description: location.to_string(),
        })
    }

    fn open_dir(dir: &Path, description: &str) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Config {
            store: description.to_string(),
            message: format!("cannot create the directory: {e}"),
        })?;
        let inner = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| {
            StoreError::Config {
                store: description.to_string(),
                message: e.to_string(),
            }
        })?;
        Ok(Store {
            inner: Arc::new(inner),
            prefix: String::new(),
            description: description.to_string(),
        })
    }

    /// Uploads a local file (multipart past [`PART_SIZE`]) and confirms its size.
    pub async fn upload_file(&self, local: &Path, path: &str) -> Result<(), StoreError> {
        let data = Bytes::from(std::fs::read(local)?);
        self.put(path, data).await
    }

    /// Stores bytes at `path` (multipart past [`PART_SIZE`]) and confirms the
    /// stored size.
    pub async fn put(&self, path: &str, data: Bytes) -> Result<(), StoreError> {
        let location = ObjectPath::from(path);
        let len = data.len();
        if len <= PART_SIZE {
            self.inner.put(&location, PutPayload::from(data)).await?;
        } else {
            let mut upload = self.inner.put_multipart(&location).await?;
            let mut offset = 0;
            let result: Result<(), object_store::Error> = async {
                while offset < len {
                    let end = (offset + PART_SIZE).min(len);
                    upload
                        .put_part(PutPayload::from(data.slice(offset..end)))
                        .await?;
                    offset = end;
                }
                upload.complete().await?;
                Ok(())
            }
            .await;
            if let Err(e) = result {
                let _ = upload.abort().await;
                return Err(e.into());
            }
        }
        let meta = self.inner.head(&location).await?;
        if meta.size != len as u64 {
            return Err(StoreError::Unconfirmed {
                path: path.to_string(),
                message: format!("stored {} bytes, uploaded {len}", meta.size),
            });
        }
        Ok(())
    }

    /// Reads a whole object.
    pub async fn get(&self, path: &str) -> Result<Bytes, StoreError> {
        Ok(self
            .inner
            .get(&ObjectPath::from(path))
            .await?
            .bytes()
            .await?)
    }

    /// Reads a whole object, or `None` if there is none at `path` (any other
    /// error is an error: "absent" must never be guessed from an outage).
    pub async fn get_if_exists(&self, path: &str) -> Result<Option<Bytes>, StoreError> {
        match self.inner.get(&ObjectPath::from(path)).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Lists object paths under `prefix`, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let mut out: Vec<(String, u64)> = self
            .inner
            .list(Some(&ObjectPath::from(prefix)))
            .map_ok(|m| (m.location.to_string(), m.size))
            .try_collect()
            .await?;
        out.sort();
        Ok(out)
    }
}
