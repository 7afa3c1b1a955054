//! The write-once log in PostgreSQL, for deployments that already run one:
//! one table, `INSERT ... ON CONFLICT DO NOTHING` for create-if-absent.
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS chaperone_approval_objects (
//!     key        text PRIMARY KEY,
//!     body       bytea NOT NULL,
//!     created_at timestamptz NOT NULL DEFAULT now()
//! );
//! ```
//!
//! The gateway creates the table when it is missing. The connection string is
//! libpq's URL form (`postgres://user:password@host:5432/db?sslmode=disable`);
//! TLS to PostgreSQL is not implemented yet: use a local socket, a loopback
//! address or a trusted network, and say so in `sslmode=disable`.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};
use tracing::warn;

use super::store::{ObjectLog, StoreError};

pub struct PostgresLog {
    url: String,
    /// Reconnected when the connection breaks.
    client: Mutex<Option<Arc<Client>>>,
}

const TABLE: &str = "CREATE TABLE IF NOT EXISTS chaperone_approval_objects (
    key text PRIMARY KEY,
    body bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)";

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("postgres: {e}"))
}

impl PostgresLog {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let log = PostgresLog {
            url: url.to_string(),
            client: Mutex::new(None),
        };
        let client = log.client().await.map_err(|e| StoreError::Config {
            store: redact(url),
            message: e.to_string(),
        })?;
        client.batch_execute(TABLE).await.map_err(backend)?;
        Ok(log)
    }

    async fn client(&self) -> Result<Arc<Client>, StoreError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let (client, connection) = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio_postgres::connect(&self.url, NoTls),
        )
        .await
        .map_err(|_| backend("connection timed out"))?
        .map_err(backend)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                warn!(error = %e, "approvals store: PostgreSQL connection ended");
            }
        });
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[async_trait]
impl ObjectLog for PostgresLog {
    async fn create(&self, key: &str, body: Bytes) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "INSERT INTO chaperone_approval_objects (key, body) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&key, &body.as_ref()],
            )
            .await
            .map_err(backend)?;
        Ok(n == 1)
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT body FROM chaperone_approval_objects WHERE key = $1",
                &[&key],
            )
            .await
            .map_err(backend)?;
        Ok(row.map(|r| Bytes::from(r.get::<_, Vec<u8>>(0))))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let c = self.client().await?;
        // A range scan on the primary key: keys >= prefix and < prefix with its
        // last byte incremented (prefixes end in '/', so '0' follows).
        let upper = match prefix.strip_suffix('/') {
            Some(p) => format!("{p}0"),
            None => format!("{prefix}\u{10FFFF}"),
        };
        let rows = c
            .query(
                "SELECT key FROM chaperone_approval_objects WHERE key >= $1 AND key < $2",
                &[&prefix, &upper],
            )
            .await
            .map_err(backend)?;
        Ok(rows.into_iter().map(|r| r.get::<_, String>(0)).collect())
    }

    fn describe(&self) -> String {
        redact(&self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact("postgres://db/x"), "postgres://db/x");
    }
}
