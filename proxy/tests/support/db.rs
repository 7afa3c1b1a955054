//! A MariaDB database of its own for each test, so that tests running in
//! parallel never see each other's tables.

use super::SqlClient;

/// A database created for one test (dropped first if a crashed run left it
/// behind), and dropped again when this value goes away.
///
/// Name it after your area and test, e.g. `chp_gw_blob` or `chp_rec_spool`.
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub async fn create(name: &str) -> Self {
        assert!(
            name.starts_with("chp_")
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "test database names start with chp_ and are plain identifiers: {name}"
        );
        let mut root = SqlClient::direct(None).await;
        root.exec(&format!(
            "DROP DATABASE IF EXISTS `{name}`; CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        ))
        .await;
        root.quit().await;
        TestDb {
            name: name.to_string(),
        }
    }

    /// A root connection to this database, directly (not through a gateway).
    pub async fn root(&self) -> SqlClient {
        SqlClient::direct(Some(&self.name)).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs outside async context guarantees: use the CLI, bounded.
        let child = std::process::Command::new("mariadb")
            .args(["-h127.0.0.1", "-P3306", "-uroot", "--protocol=TCP", "-e"])
            .arg(format!("DROP DATABASE IF EXISTS `{}`", self.name))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if let Ok(mut child) = child {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
