//! Just-in-time credentials: a random MySQL user name and password minted for one
//! verified identity and one target, valid for a short time, for clients that
//! cannot send a token as a clear-text password (sysbench, older drivers).
//!
//! The gateway keeps only hashes of each password, the ones the MySQL
//! challenge-response plugins need (SHA1(SHA1(p)) for mysql_native_password,
//! SHA256(SHA256(p)) for caching_sha2_password): neither lets anyone log in, so
//! a copied store file gives nothing away. A [`CredentialBackend`] persists
//! them; [`FileBackend`] is the local one, and a shared backend (a database
//! table, object storage) can implement the same trait later.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use chaperone_schemas::identity::{AuthMethod, Identity};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::roles::RoleGrant;
use crate::auth::constant_time_eq;
use chaperone_mysql::protocol::handshake::{CACHING_SHA2_PASSWORD, NATIVE_PASSWORD};

/// Every minted user name starts with this.
pub const USER_PREFIX: &str = "jit_";

#[derive(Debug, thiserror::Error)]
pub enum JitError {
    #[error("credential store {path}: {message}")]
    Store { path: PathBuf, message: String },
    #[error(
        "this identity already has {0} live credentials; revoke some or wait for them to expire"
    )]
    TooMany(usize),
    #[error("no such credentials for this identity")]
    NotFound,
}

/// One set of minted credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credential {
    pub user: String,
    /// The identity they were minted for, with `auth_method = jit_credential`
    /// and `expires_at` = the credentials' expiry.
    pub identity: Identity,
    pub grant: RoleGrant,
    /// The plugin the client is asked to use.
    pub plugin: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// SHA1(SHA1(password)), hex.
    native_hash: String,
    /// SHA256(SHA256(password)), hex.
    sha2_hash: String,
    /// Cancelled on revocation: sessions opened with these credentials end.
    #[serde(skip)]
    revocation: tokio_util::sync::CancellationToken,
}

impl Credential {
    pub fn is_expired(&self, now: i64) -> bool {
        now >= self.expires_at
    }

    /// Cancelled when the credentials are revoked.
    pub fn revocation(&self) -> &tokio_util::sync::CancellationToken {
        &self.revocation
    }

    /// Verifies a challenge response (`nonce` is the 20-byte scramble).
    pub fn verify_scramble(&self, plugin: &str, nonce: &[u8], response: &[u8]) -> bool {
        match plugin {
            NATIVE_PASSWORD => {
                let Ok(stored) = hex::decode(&self.native_hash) else {
                    return false;
                };
                // response = SHA1(p) XOR SHA1(nonce ‖ SHA1(SHA1(p)))
                let mask = Sha1::new()
                    .chain_update(nonce)
                    .chain_update(&stored)
                    .finalize();
                response.len() == mask.len() && {
                    let h1: Vec<u8> = response.iter().zip(mask).map(|(a, b)| a ^ b).collect();
                    constant_time_eq(&Sha1::digest(&h1), &stored)
                }
            }
            CACHING_SHA2_PASSWORD => {
                let Ok(stored) = hex::decode(&self.sha2_hash) else {
                    return false;
                };
                // response = SHA256(p) XOR SHA256(SHA256(SHA256(p)) ‖ nonce)
                let mask = Sha256::new()
                    .chain_update(&stored)
                    .chain_update(nonce)
                    .finalize();
                response.len() == mask.len() && {
                    let h1: Vec<u8> = response.iter().zip(mask).map(|(a, b)| a ^ b).collect();
                    constant_time_eq(&Sha256::digest(&h1), &stored)
                }
            }
            _ => false,
        }
    }

    /// Verifies a password received in clear text over TLS.
    pub fn verify_password(&self, password: &[u8]) -> bool {
        hex::decode(&self.sha2_hash).is_ok_and(|stored| {
            constant_time_eq(&Sha256::digest(Sha256::digest(password)), &stored)
        })
    }
}

/// Persists credentials. Writes replace the whole set (it is small: live
/// credentials only).
pub trait CredentialBackend: Send + Sync {
    fn load(&self) -> Result<Vec<Credential>, JitError>;
    fn save(&self, all: &[Credential]) -> Result<(), JitError>;
}

/// A JSON file, replaced atomically (write to a temporary file, then rename),
/// readable by the gateway's user only.
pub struct FileBackend {
    path: PathBuf,
}

impl FileBackend {
    pub fn new(path: &Path) -> Self {
        FileBackend {
            path: path.to_path_buf(),
        }
    }

    fn err(&self, message: impl std::fmt::Display) -> JitError {
        JitError::Store {
            path: self.path.clone(),
            message: message.to_string(),
        }
    }
}

impl CredentialBackend for FileBackend {
    fn load(&self) -> Result<Vec<Credential>, JitError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| self.err(e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.err(e)),
        }
    }

    fn save(&self, all: &[Credential]) -> Result<(), JitError> {
        use std::io::Write;
        let tmp = self.path.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(all).map_err(|e| self.err(e))?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(|e| self.err(e))?;
        f.write_all(&bytes).map_err(|e| self.err(e))?;
        f.sync_all().map_err(|e| self.err(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.err(e))
    }
}

/// How long swept (expired) credentials are still recognised, so that a login
/// with them is refused as expired rather than as unknown.
const REMEMBER_EXPIRED_SECS: i64 = 3600;
/// At most this many swept credentials are remembered (the oldest go first).
const MAX_REMEMBERED: usize = 10_000;

/// The live credentials.
pub struct JitStore {
    creds: RwLock<HashMap<String, Arc<Credential>>>,
    /// Credentials a mint swept out after they expired. A login refusal must
    /// not depend on whether a mint happened to sweep in between: the client
    /// and the audit record get "expired" either way.
    swept: RwLock<HashMap<String, Arc<Credential>>>,
    backend: Option<Box<dyn CredentialBackend>>,
    max_per_identity: usize,
}

/// What a client gets back from minting.
#[derive(Debug, Clone, Serialize)]
pub struct Minted {
    pub user: String,
    pub password: String,
    pub target: String,
    pub plugin: String,
    pub expires_at: i64,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn random_string(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

impl JitStore {
    /// Opens the store, loading what the backend holds (expired entries dropped).
    pub fn open(
        backend: Option<Box<dyn CredentialBackend>>,
        max_per_identity: usize,
    ) -> Result<Self, JitError> {
        let mut creds = HashMap::new();
        let mut swept = HashMap::new();
        if let Some(b) = &backend {
            let t = now();
            for c in b.load()? {
                let map = if c.is_expired(t) {
                    &mut swept
                } else {
                    &mut creds
                };
                map.insert(c.user.clone(), Arc::new(c));
            }
        }
        Ok(JitStore {
            creds: RwLock::new(creds),
            swept: RwLock::new(swept),
            backend,
            max_per_identity,
        })
    }

    /// The credentials for `user`, if any: live ones, or ones that expired
    /// recently (swept or not; check [`Credential::is_expired`]). Revoked
    /// credentials are forgotten at once.
    pub fn get(&self, user: &str) -> Option<Arc<Credential>> {
        if !user.starts_with(USER_PREFIX) {
            return None;
        }
        if let Some(c) = self.creds.read().expect("jit lock").get(user) {
            return Some(c.clone());
        }
        self.swept.read().expect("jit lock").get(user).cloned()
    }

    /// Moves expired credentials out of the live set (they stay recognised for
    /// [`REMEMBER_EXPIRED_SECS`]).
    fn sweep(&self, creds: &mut HashMap<String, Arc<Credential>>, t: i64) {
        let expired: Vec<String> = creds
            .iter()
            .filter(|(_, c)| c.is_expired(t))
            .map(|(u, _)| u.clone())
            .collect();
        let mut swept = self.swept.write().expect("jit lock");
        swept.retain(|_, c| t - c.expires_at < REMEMBER_EXPIRED_SECS);
        for user in expired {
            if let Some(c) = creds.remove(&user) {
                swept.insert(user, c);
            }
        }
        while swept.len() > MAX_REMEMBERED {
            let Some(oldest) = swept
                .iter()
                .min_by_key(|(_, c)| c.expires_at)
                .map(|(u, _)| u.clone())
            else {
                break;
            };
            swept.remove(&oldest);
        }
    }

    /// Mints credentials for a verified identity and the grant its role gave.
    /// `ttl_secs` is bounded by the role's `jit_max_ttl_secs`.
    pub fn mint(
        &self,
        identity: &Identity,
        grant: RoleGrant,
        ttl_secs: u64,
        plugin: &str,
    ) -> Result<Minted, JitError> {
        let ttl = ttl_secs.clamp(1, grant.jit_max_ttl_secs);
        let t = now();
        let password = random_string(
            32,
            b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789",
        );
        let user = format!(
            "{USER_PREFIX}{}",
            random_string(16, b"abcdefghijklmnopqrstuvwxyz0123456789")
        );
        let mut identity = identity.clone();
        identity.auth_method = AuthMethod::JitCredential;
        identity.role = Some(grant.role.clone());
        identity.expires_at = Some(t + ttl as i64);
        let cred = Credential {
            user: user.clone(),
            identity,
            plugin: plugin.to_string(),
            created_at: t,
            expires_at: t + ttl as i64,
            native_hash: hex::encode(Sha1::digest(Sha1::digest(password.as_bytes()))),
            sha2_hash: hex::encode(Sha256::digest(Sha256::digest(password.as_bytes()))),
            revocation: Default::default(),
            grant,
        };
        let minted = Minted {
            user: user.clone(),
            password,
            target: cred.grant.target.clone(),
            plugin: cred.plugin.clone(),
            expires_at: cred.expires_at,
        };
        let mut creds = self.creds.write().expect("jit lock");
        self.sweep(&mut creds, t);
        let owner = owner_of(&cred.identity);
        let mine = creds
            .values()
            .filter(|c| owner_of(&c.identity) == owner)
            .count();
        if mine >= self.max_per_identity {
            return Err(JitError::TooMany(mine));
        }
        creds.insert(user, Arc::new(cred));
        self.persist(&creds)?;
        Ok(minted)
    }

    /// Revokes `user`'s credentials, if they belong to `identity`.
    pub fn revoke(&self, identity: &Identity, user: &str) -> Result<(), JitError> {
        let mut creds = self.creds.write().expect("jit lock");
        match creds.get(user) {
            Some(c) if owner_of(&c.identity) == owner_of(identity) => {
                c.revocation.cancel();
                creds.remove(user);
                self.persist(&creds)
            }
            _ => Err(JitError::NotFound),
        }
    }

    fn persist(&self, creds: &HashMap<String, Arc<Credential>>) -> Result<(), JitError> {
        let Some(b) = &self.backend else {
            return Ok(());
        };
        let all: Vec<Credential> = creds.values().map(|c| (**c).clone()).collect();
        b.save(&all)
    }
}

fn owner_of(identity: &Identity) -> (&str, &str) {
    (&identity.issuer, &identity.subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> RoleGrant {
        RoleGrant {
            role: "r".into(),
            target: "t".into(),
            upstream_user: None,
            databases: None,
            max_session_secs: None,
            jit_max_ttl_secs: 60,
            policy: None,
        }
    }

    fn identity(sub: &str) -> Identity {
        let mut i = Identity::config_user(sub);
        i.issuer = "https://issuer".into();
        i
    }

    #[test]
    fn hashes_verify_what_real_clients_compute() {
        let store = JitStore::open(None, 4).unwrap();
        let m = store
            .mint(&identity("a"), grant(), 3600, CACHING_SHA2_PASSWORD)
            .unwrap();
        assert!(m.user.starts_with(USER_PREFIX));
        let c = store.get(&m.user).unwrap();
        // The TTL is bounded by the role.
        assert!(c.expires_at - c.created_at <= 60);
        let nonce = *b"0123456789abcdefghij";
        use mysql_common::auth::plugins::{caching_sha2_password, mysql_native_password};
        let native = mysql_native_password::scramble_native(&nonce, m.password.as_bytes()).unwrap();
        let sha2 = caching_sha2_password::scramble_sha256(&nonce, m.password.as_bytes()).unwrap();
        assert!(c.verify_scramble(NATIVE_PASSWORD, &nonce, &native));
        assert!(c.verify_scramble(CACHING_SHA2_PASSWORD, &nonce, &sha2));
        assert!(!c.verify_scramble(CACHING_SHA2_PASSWORD, &nonce, &native));
        assert!(!c.verify_scramble(NATIVE_PASSWORD, b"other-nonce-01234567", &native));
        assert!(c.verify_password(m.password.as_bytes()));
        assert!(!c.verify_password(b"nope"));
    }

    #[test]
    fn revoke_only_by_owner_and_persisted() {
        let dir = std::env::temp_dir().join(format!("chp_jit_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jit.json");
        let _ = std::fs::remove_file(&path);
        let store = JitStore::open(Some(Box::new(FileBackend::new(&path))), 2).unwrap();
        let m = store
            .mint(&identity("a"), grant(), 30, NATIVE_PASSWORD)
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&m.password),
            "the password itself is never stored"
        );
        // Survives a restart.
        let reopened = JitStore::open(Some(Box::new(FileBackend::new(&path))), 2).unwrap();
        assert!(reopened.get(&m.user).is_some());
        assert!(matches!(
            reopened.revoke(&identity("b"), &m.user),
            Err(JitError::NotFound)
        ));
        reopened.revoke(&identity("a"), &m.user).unwrap();
        assert!(reopened.get(&m.user).is_none());
        let again = JitStore::open(Some(Box::new(FileBackend::new(&path))), 2).unwrap();
        assert!(again.get(&m.user).is_none());
        // Per-identity limit.
        again
            .mint(&identity("a"), grant(), 30, NATIVE_PASSWORD)
            .unwrap();
        again
            .mint(&identity("a"), grant(), 30, NATIVE_PASSWORD)
            .unwrap();
        assert!(matches!(
            again.mint(&identity("a"), grant(), 30, NATIVE_PASSWORD),
            Err(JitError::TooMany(2))
        ));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn swept_credentials_are_still_recognised_as_expired() {
        let store = JitStore::open(None, 8).unwrap();
        let mut g = grant();
        g.jit_max_ttl_secs = 1;
        let m = store.mint(&identity("a"), g, 1, NATIVE_PASSWORD).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2100));
        // A mint sweeps the expired entry out of the live set...
        store
            .mint(&identity("b"), grant(), 30, NATIVE_PASSWORD)
            .unwrap();
        assert!(!store.creds.read().unwrap().contains_key(&m.user));
        // ...yet a login still finds it, expired, and refuses it as expired.
        let c = store.get(&m.user).expect("remembered");
        assert!(c.is_expired(now()));
        assert!(c.verify_password(m.password.as_bytes()));
    }
}
