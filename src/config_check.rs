//! `chaperone config check FILE`: everything `serve` needs before it binds —
//! the config, identities and secrets, TLS files, the archive's signing key,
//! spool directory and store (reached), the audit service's section — so that
//! "ok" means `serve` starts. `--offline` checks only what does not depend on
//! the machine (for CI over deployment files).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

#[derive(clap::Args)]
pub(crate) struct CheckArgs {
    file: PathBuf,
    /// Only the file itself: no key files, directories or store (CI over
    /// deployment files that name another machine's paths).
    #[arg(long)]
    offline: bool,
}

pub(crate) fn run(args: CheckArgs) -> anyhow::Result<()> {
    let file = &args.file;
    let config = chaperone_proxy::Config::load(file)?;
    // Users, issuers (their CA files), roles and the JIT store.
    chaperone_proxy::identity::GatewayAuthenticator::from_config(&config)?;
    for (name, t) in &config.targets {
        t.password.resolve(&format!("targets.{name}"))?;
    }
    let mut notes = Vec::new();
    if !args.offline {
        if let Some(tls) = &config.tls {
            for (what, path) in [("cert", &tls.cert), ("key", &tls.key)] {
                if let Some(path) = path {
                    readable(path).with_context(|| format!("[tls] {what}"))?;
                }
            }
        }
    }
    let archive = match &config.archive {
        Some(section) => Some(chaperone_recorder::ArchiveConfig::from_toml(section)?),
        None => {
            notes.push("no [archive]: sessions are NOT recorded".to_string());
            None
        }
    };
    if let (Some(archive), false) = (&archive, args.offline) {
        notes.extend(check_archive(archive)?);
    }
    if let Some(section) = &config.ui {
        let ui = chaperone_query_ui::UiConfig::from_toml(section)?;
        if archive.is_none() {
            bail!("[ui] needs an [archive] section: the audit service reads the archive");
        }
        if let (Some(dir), false) = (&ui.export_dir, args.offline) {
            writable_dir(dir).context("[ui] export_dir")?;
        }
    }
    println!(
        "{}: ok ({} targets, {} users{})",
        file.display(),
        config.targets.len(),
        config.users.len(),
        if args.offline {
            "; offline: key files, directories and the store not checked"
        } else {
            ""
        }
    );
    for n in notes {
        println!("  note: {n}");
    }
    Ok(())
}

/// The archive's signing key, spool directory and store; notes for what is
/// fine but worth knowing.
fn check_archive(archive: &chaperone_recorder::ArchiveConfig) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    match archive.existing_signing_key() {
        Ok(Some(key)) => notes.push(format!(
            "archive signing key {}",
            chaperone_schemas::manifest::key_id(&key.verifying_key())
        )),
        Ok(None) => notes.push(format!(
            "no archive signing key configured: serve generates one in {}; for production \
             run `chaperone keygen --out FILE` and set [archive] signing_key_file",
            archive.spool_dir.join("signing-key").display()
        )),
        Err(e) => bail!(
            "[archive] manifest signing key: {e}\n  create one with `chaperone keygen --out PATH` \
             (then point signing_key_file at PATH), or remove signing_key_file to have the gateway \
             generate one in its spool directory"
        ),
    }
    writable_dir(&archive.spool_dir).context("[archive] spool_dir")?;
    let store = chaperone_recorder::Store::open(&archive.store, &archive.store_options)
        .context("[archive] store")?;
    let reached = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(15), store.list(&store.prefix)).await
        });
    match reached {
        Ok(Ok(objects)) => notes.push(format!(
            "archive store {} reached ({} objects)",
            store.description,
            objects.len()
        )),
        Ok(Err(e)) => bail!("[archive] store {}: cannot list it: {e}", store.description),
        Err(_) => bail!(
            "[archive] store {}: no answer within 15 s",
            store.description
        ),
    }
    Ok(notes)
}

fn readable(path: &Path) -> anyhow::Result<()> {
    std::fs::File::open(path)
        .map(drop)
        .with_context(|| format!("cannot read {}", path.display()))
}

/// Creates the directory if missing (as `serve` would) and writes a probe file.
fn writable_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let probe = dir.join(format!(".chaperone-config-check-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(|| format!("cannot write in {}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}
