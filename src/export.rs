//! `chaperone export`: a selection of the archive into a directory, with a
//! verifiable `manifest.json` (the engine of the audit API's exports,
//! `chaperone_query_ui::export`); `chaperone export verify DIR` checks one.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chaperone_query_ui::export::{self, ExportFormat, ExportRequest, Selection};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ExportArgs {
    #[command(subcommand)]
    verify: Option<ExportCommand>,
    /// The directory to write (created; must be new or empty).
    #[arg(long)]
    out: Option<PathBuf>,
    /// From this time: 24h, 7d, 2024-03-05, or an RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Before this time (same forms).
    #[arg(long)]
    until: Option<String>,
    /// Only this agent (its subject or display name).
    #[arg(long)]
    agent: Option<String>,
    /// Only statements that read or wrote this table (`db.table`, or a bare name).
    #[arg(long)]
    table: Option<String>,
    /// Archive tables to export, comma-separated: sessions, statements, frames.
    #[arg(long, value_delimiter = ',', default_value = "sessions,statements")]
    tables: Vec<String>,
    /// parquet, csv or jsonl.
    #[arg(long, default_value = "parquet")]
    format: String,
    #[command(flatten)]
    key: crate::lifecycle::KeyArgs,
    #[command(flatten)]
    archive: crate::ArchiveArgs,
}

#[derive(clap::Subcommand)]
enum ExportCommand {
    /// Check an export directory against its manifest.json: the manifest's
    /// signature, every file present with the same size and SHA-256, nothing
    /// unlisted. Exits 1 naming what is wrong.
    Verify {
        dir: PathBuf,
        /// Require the manifest signed by this Ed25519 public key (hex or
        /// base64); repeat for several keys. Without it (or --keyring) the
        /// signature proves the export unaltered, not who made it.
        #[arg(long, env = "CHAPERONE_EXPORT_PUBLIC_KEY")]
        public_key: Vec<String>,
        /// Require a signature by a key of this keyring, within its period.
        #[arg(long)]
        keyring: Option<PathBuf>,
    },
}

pub(crate) fn run(args: ExportArgs) -> anyhow::Result<()> {
    crate::init_logging(false);
    if let Some(ExportCommand::Verify {
        dir,
        public_key,
        keyring,
    }) = args.verify
    {
        return verify(&dir, crate::keyring_arg(keyring, &public_key)?);
    }
    let out = args
        .out
        .context("--out DIR: where to write the export (or `chaperone export verify DIR`)")?;
    let request = ExportRequest {
        selection: Selection {
            since: args.since,
            until: args.until,
            agent: args.agent,
            table: args.table,
            tables: args.tables,
        },
        format: ExportFormat::parse(&args.format)?,
    };
    let (store, _, key) = crate::lifecycle::open(&args.archive, &args.key, false)?;
    let key = key.context(
        "exports are signed: pass --signing-key-file (`chaperone keygen --out FILE` writes one), \
         or --config with an [archive] signing key",
    )?;
    let exporter = export::Exporter::os_user();
    let who = exporter.label();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            use chaperone_catalog::{Catalog, CatalogOptions};
            let catalog = Catalog::open(store, CatalogOptions::default()).await?;
            tracing::info!(target: "chaperone::access", who = %who, action = "export started",
                detail = %serde_json::to_string(&request)?, out = %out.display(), "audit access");
            let progress = Arc::new(export::Progress::default());
            let reporter = {
                let progress = progress.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        eprint!(
                            "\rexporting {}: {} rows, {} bytes   ",
                            progress.table.lock().expect("progress lock"),
                            progress.rows.load(Ordering::Relaxed),
                            progress.bytes.load(Ordering::Relaxed)
                        );
                    }
                })
            };
            let result =
                export::run_export(&catalog, &request, &out, progress, &exporter, &key).await;
            reporter.abort();
            eprintln!();
            let manifest = result.with_context(|| format!("exporting into {}", out.display()))?;
            for f in &manifest.files {
                eprintln!(
                    "{}: {} rows, {} bytes, sha256 {}",
                    f.name, f.rows, f.bytes, f.sha256
                );
            }
            eprintln!(
                "{} archive manifests; wrote {}",
                manifest.archive_manifests.len(),
                out.join(export::MANIFEST_FILE).display()
            );
            tracing::info!(target: "chaperone::access", who = %who, action = "export completed",
                out = %out.display(), rows = ?manifest.rows, "audit access");
            anyhow::Ok(())
        })
}

fn verify(
    dir: &std::path::Path,
    keyring: Option<chaperone_archive::keyring::Keyring>,
) -> anyhow::Result<()> {
    let checked = export::verify_dir(dir, keyring.as_ref())?;
    let manifest = &checked.manifest;
    if checked.problems.is_empty() {
        let signer = checked.signer.as_deref().unwrap_or("?");
        println!(
            "{}: ok ({} files, rows {:?}, from {} archive manifests; exported by {} ({}) at {}; signed by {signer}{})",
            dir.display(),
            manifest.files.len(),
            manifest.rows,
            manifest.archive_manifests.len(),
            manifest.exporter.label(),
            manifest.exporter.authenticated_by,
            manifest.created_at,
            if checked.signer_trusted {
                ", a trusted key"
            } else {
                "; pass --public-key or --keyring to check who signed"
            }
        );
        return Ok(());
    }
    for p in &checked.problems {
        println!("{p}");
    }
    println!("{}: {} problems", dir.display(), checked.problems.len());
    std::process::exit(1);
}
