//! Checking an export directory offline against its `manifest.json`: the
//! manifest's signature first (the hashes it lists are only worth what the
//! signature makes them), then every file against the manifest.

use std::collections::BTreeSet;
use std::path::Path;

use sha2::{Digest, Sha256};

use chaperone_archive::keyring::Keyring;
use chaperone_schemas::manifest::{key_id, parse_verifying_key, verify_signature};

use super::{io, ExportError, ExportManifest, EXPORT_FORMAT, MANIFEST_FILE};

/// What [`verify_dir`] found.
#[derive(Debug)]
pub struct VerifiedExport {
    pub manifest: ExportManifest,
    /// The key id of a valid signature (None when it does not check out).
    pub signer: Option<String>,
    /// Whether the signer was checked against a keyring (else the signature
    /// proves the export unaltered since signing, not who signed it).
    pub signer_trusted: bool,
    /// Empty: the export verifies.
    pub problems: Vec<ExportProblem>,
}

/// One thing wrong with an export directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportProblem {
    Missing {
        file: String,
    },
    Altered {
        file: String,
        detail: String,
    },
    Unlisted {
        file: String,
    },
    /// The manifest is not signed, the signature does not match its content, or
    /// the signer is not trusted.
    Signature {
        detail: String,
    },
}

impl std::fmt::Display for ExportProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExportProblem::Missing { file } => {
                write!(f, "FILE MISSING {file} (listed in {MANIFEST_FILE})")
            }
            ExportProblem::Altered { file, detail } => write!(f, "FILE ALTERED {file}: {detail}"),
            ExportProblem::Unlisted { file } => {
                write!(f, "FILE NOT IN {MANIFEST_FILE} {file}")
            }
            ExportProblem::Signature { detail } => {
                write!(f, "SIGNATURE {MANIFEST_FILE}: {detail}")
            }
        }
    }
}

/// Checks an export directory against its `manifest.json`: the manifest's
/// signature (by a key of `keyring`, within its period, when given), every
/// listed file present with the same size and SHA-256, and no file that is not
/// listed.
pub fn verify_dir(dir: &Path, keyring: Option<&Keyring>) -> Result<VerifiedExport, ExportError> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read(&path).map_err(io(&path))?;
    let manifest: ExportManifest =
        serde_json::from_slice(&text).map_err(|e| ExportError::BadManifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
    if manifest.format != EXPORT_FORMAT {
        return Err(ExportError::BadManifest {
            path,
            message: format!("format is {:?}, not {EXPORT_FORMAT:?}", manifest.format),
        });
    }
    let mut problems = Vec::new();
    let signer = check_signature(&text, &manifest, keyring, &mut problems);
    let mut listed = BTreeSet::from([MANIFEST_FILE.to_string()]);
    for f in &manifest.files {
        listed.insert(f.name.clone());
        // Names are plain file names: never follow a path out of the directory.
        if f.name.contains('/') || f.name.contains('\\') || f.name.starts_with('.') {
            problems.push(ExportProblem::Altered {
                file: f.name.clone(),
                detail: "not a plain file name".into(),
            });
            continue;
        }
        let file = dir.join(&f.name);
        let mut input = match std::fs::File::open(&file) {
            Ok(input) => input,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                problems.push(ExportProblem::Missing {
                    file: f.name.clone(),
                });
                continue;
            }
            Err(e) => return Err(io(&file)(e)),
        };
        let mut hash = Sha256::new();
        let bytes = std::io::copy(&mut input, &mut hash).map_err(io(&file))?;
        let sha256 = hex::encode(hash.finalize());
        if bytes != f.bytes {
            problems.push(ExportProblem::Altered {
                file: f.name.clone(),
                detail: format!("{bytes} bytes, the manifest says {}", f.bytes),
            });
        } else if sha256 != f.sha256 {
            problems.push(ExportProblem::Altered {
                file: f.name.clone(),
                detail: format!("SHA-256 {sha256}, the manifest says {}", f.sha256),
            });
        }
    }
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let name = entry.map_err(io(dir))?.file_name();
        let name = name.to_string_lossy().into_owned();
        if !listed.contains(&name) {
            problems.push(ExportProblem::Unlisted { file: name });
        }
    }
    Ok(VerifiedExport {
        manifest,
        signer_trusted: signer.is_some() && keyring.is_some(),
        signer,
        problems,
    })
}

/// The signer's key id when the signature checks out (and the keyring, if any,
/// trusts the key at the manifest's `created_at`); else a problem.
fn check_signature(
    bytes: &[u8],
    manifest: &ExportManifest,
    keyring: Option<&Keyring>,
    problems: &mut Vec<ExportProblem>,
) -> Option<String> {
    let mut fail = |detail: String| problems.push(ExportProblem::Signature { detail });
    let signer_hex = match verify_signature(bytes, None) {
        Ok(hex) => hex,
        Err(e) => {
            fail(e.to_string());
            return None;
        }
    };
    let id = parse_verifying_key(&signer_hex)
        .map(|k| key_id(&k))
        .unwrap_or_else(|_| signer_hex.clone());
    if let Some(keyring) = keyring {
        let now = chaperone_schemas::event::now_ns();
        let at = match chaperone_archive::since::parse_since(&manifest.created_at, now) {
            Ok(at) => at,
            Err(e) => {
                fail(format!("created_at {:?}: {e}", manifest.created_at));
                return None;
            }
        };
        if let Err(e) = keyring.check(&signer_hex, at) {
            fail(e);
            return None;
        }
    }
    Some(id)
}
