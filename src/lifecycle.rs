//! `chaperone retention`, `chaperone compact` and `chaperone keygen`: the
//! archive's life cycle (docs/operations.md, "Archive life cycle").

use std::path::PathBuf;

use anyhow::Context;
use chaperone_archive::lifecycle::{self, CompactOptions, LegalHolds, RetentionOptions};

use crate::ArchiveArgs;

/// Delete (or move) segments older than a policy, except those under legal
/// hold; recorded in the archive's lifecycle chain so `verify` still passes.
#[derive(clap::Args)]
pub struct RetentionArgs {
    /// Remove segments whose newest row is older than this: 90d, 12w, 2160h.
    /// Default: `[archive.retention] older_than` of the config.
    #[arg(long)]
    older_than: Option<String>,
    /// A file of legal holds, one per line: `session=<id>` or `subject=<agent>`.
    #[arg(long)]
    legal_hold: Option<PathBuf>,
    /// A legal hold: `session=<id>` or `subject=<agent>` (repeatable).
    #[arg(long = "hold")]
    holds: Vec<String>,
    /// Copy the segments to this store (directory or URL) before deleting them.
    #[arg(long)]
    move_to: Option<String>,
    /// Say what would be removed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Only this gateway's segments.
    #[arg(long)]
    gateway: Option<String>,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    archive: ArchiveArgs,
}

/// Merge runs of small segments into larger files; recorded in the archive's
/// lifecycle chain so `verify` still passes and queries return the same rows.
#[derive(clap::Args)]
pub struct CompactArgs {
    /// Segments smaller than this many bytes are merged, in groups of about
    /// this size.
    #[arg(long, default_value_t = 64 << 20)]
    target_bytes: u64,
    /// Leave segments sealed more recently than this alone: 1h, 1d.
    #[arg(long, default_value = "1h")]
    min_age: String,
    /// Say what would be merged; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Only this gateway's segments.
    #[arg(long)]
    gateway: Option<String>,
    /// zstd level of the new files.
    #[arg(long, default_value_t = 3)]
    zstd_level: i32,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    archive: ArchiveArgs,
}

/// The key lifecycle records are signed with.
#[derive(clap::Args)]
pub(crate) struct KeyArgs {
    /// File holding the Ed25519 signing key (hex or base64). Default: the
    /// config's `[archive]` key (`signing_key_env` / `signing_key_file`, or the
    /// key the gateway generated in its spool directory).
    #[arg(long, env = "CHAPERONE_ARCHIVE_SIGNING_KEY_FILE")]
    signing_key_file: Option<PathBuf>,
}

/// Write a new manifest-signing key (for a new gateway or a key rotation).
#[derive(clap::Args)]
pub struct KeygenArgs {
    /// Where to write the secret key (hex; created with mode 0600, never
    /// overwritten).
    #[arg(long)]
    out: PathBuf,
}

/// The archive's store, its config section (when read from a config), and the
/// signing key.
pub(crate) fn open(
    archive: &ArchiveArgs,
    key: &KeyArgs,
    needs_key: bool,
) -> anyhow::Result<(
    chaperone_recorder::Store,
    Option<chaperone_recorder::ArchiveConfig>,
    Option<ed25519_dalek::SigningKey>,
)> {
    let config = match &archive.archive {
        Some(_) => None,
        None => Some(crate::archive_config(&archive.config, "--archive")?),
    };
    let store = match (&archive.archive, &config) {
        (Some(location), _) => chaperone_recorder::Store::open(location, &Default::default())?,
        (None, Some(c)) => chaperone_recorder::Store::open(&c.store, &c.store_options)?,
        (None, None) => unreachable!("a config is loaded without --archive"),
    };
    let signing_key = match &key.signing_key_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(chaperone_schemas::manifest::parse_signing_key(&text)?)
        }
        None => match &config {
            Some(c) => c.existing_signing_key().map_err(anyhow::Error::msg)?,
            None => None,
        },
    };
    if needs_key && signing_key.is_none() {
        anyhow::bail!(
            "no signing key: pass --signing-key-file (the archive's manifest-signing key), or --config with an [archive] signing key"
        );
    }
    Ok((store, config, signing_key))
}

fn progress() -> impl FnMut(String) + Send {
    |line| eprintln!("{line}")
}

pub fn retention(args: RetentionArgs) -> anyhow::Result<()> {
    crate::init_logging_at(false, "warn");
    let (store, config, key) = open(&args.archive, &args.key, !args.dry_run)?;
    let configured = config.as_ref().and_then(|c| c.retention.clone());
    let older_than = args
        .older_than
        .or_else(|| configured.as_ref().map(|r| r.older_than.clone()))
        .context("--older-than is required (or [archive.retention] older_than in the config)")?;
    let age = chaperone_archive::since::parse_duration(&older_than)
        .map_err(|e| anyhow::anyhow!("--older-than: {e}"))?;
    let mut holds = LegalHolds::default();
    let hold_file = args
        .legal_hold
        .or_else(|| configured.as_ref().and_then(|r| r.legal_hold_file.clone()));
    if let Some(path) = &hold_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the legal holds in {}", path.display()))?;
        holds
            .add_file(&text, &path.display().to_string())
            .map_err(anyhow::Error::msg)?;
    }
    for h in &args.holds {
        holds.add(h).map_err(anyhow::Error::msg)?;
    }
    let move_to = args
        .move_to
        .or_else(|| configured.as_ref().and_then(|r| r.move_to.clone()))
        .map(|location| chaperone_recorder::Store::open(&location, &Default::default()))
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(async {
        if !holds.subjects.is_empty() {
            let ids = chaperone_catalog::subjects_sessions(&store, &holds.subjects).await?;
            eprintln!(
                "legal holds: {} session(s) of {} subject(s), {} session(s) by id",
                ids.len(),
                holds.subjects.len(),
                holds.sessions.len()
            );
            holds.sessions.extend(ids);
        }
        let options = RetentionOptions {
            cutoff_ns: chaperone_schemas::event::now_ns() - age,
            policy: format!("older than {older_than}"),
            holds,
            move_to,
            dry_run: args.dry_run,
            gateway: args.gateway,
        };
        let key = key.unwrap_or_else(|| ed25519_dalek::SigningKey::from_bytes(&[0; 32]));
        anyhow::Ok(lifecycle::retention(&store, &key, &options, &mut progress()).await?)
    })?;
    if args.dry_run {
        println!("dry run, nothing changed; would remove:");
    }
    print!("{outcome}");
    Ok(())
}

pub fn compact(args: CompactArgs) -> anyhow::Result<()> {
    crate::init_logging_at(false, "warn");
    let (store, _, key) = open(&args.archive, &args.key, !args.dry_run)?;
    let min_age = chaperone_archive::since::parse_duration(&args.min_age)
        .map_err(|e| anyhow::anyhow!("--min-age: {e}"))?;
    if !(1..=22).contains(&args.zstd_level) {
        anyhow::bail!("--zstd-level must be between 1 and 22");
    }
    let options = CompactOptions {
        target_bytes: args.target_bytes,
        sealed_before_ns: chaperone_schemas::event::now_ns() - min_age,
        zstd_level: args.zstd_level,
        dry_run: args.dry_run,
        gateway: args.gateway,
    };
    let key = key.unwrap_or_else(|| ed25519_dalek::SigningKey::from_bytes(&[0; 32]));
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(lifecycle::compact(&store, &key, &options, &mut progress()))?;
    if args.dry_run {
        println!("dry run, nothing changed; would merge:");
    }
    print!("{outcome}");
    Ok(())
}

pub fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let seed: [u8; 32] = rand::random();
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let mut options = std::fs::File::options();
    options.create_new(true).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&args.out).with_context(|| {
        format!(
            "creating {} (an existing key is never overwritten)",
            args.out.display()
        )
    })?;
    f.write_all(hex::encode(seed).as_bytes())?;
    f.sync_all()?;
    println!(
        "wrote {}\npublic_key = \"{}\"\nkey_id = \"{}\"",
        args.out.display(),
        hex::encode(key.verifying_key().as_bytes()),
        chaperone_schemas::manifest::key_id(&key.verifying_key())
    );
    Ok(())
}
