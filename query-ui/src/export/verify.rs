//! Checking an export directory offline against its `manifest.json`.

use std::collections::BTreeSet;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{io, ExportError, ExportManifest, EXPORT_FORMAT, MANIFEST_FILE};

/// One thing wrong with an export directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportProblem {
    Missing { file: String },
    Altered { file: String, detail: String },
    Unlisted { file: String },
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
        }
    }
}

/// Checks an export directory against its `manifest.json`: every listed file
/// present with the same size and SHA-256, and no file that is not listed.
/// Returns the manifest and the problems (empty: the export verifies).
pub fn verify_dir(dir: &Path) -> Result<(ExportManifest, Vec<ExportProblem>), ExportError> {
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
    Ok((manifest, problems))
}
