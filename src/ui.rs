//! `chaperone ui --archive URL`: the audit API and web UI over an archive,
//! with no gateway: an archive copied to a laptop, a bucket a regulator was
//! given read access to. Read-only (no approvals inbox: there is no gateway to
//! decide through); exports are signed with `--signing-key-file` when given.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Args)]
pub(crate) struct UiArgs {
    /// The archive: a directory or a URL (s3://bucket/prefix, gs://, az://).
    #[arg(long, env = "CHAPERONE_ARCHIVE")]
    archive: String,
    /// Where the API and web UI listen.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Require `Authorization: Bearer <token>` with the token from this
    /// environment variable. Without it the service answers loopback requests
    /// only, with no token (and refuses to listen elsewhere).
    #[arg(long, value_name = "VAR")]
    token_env: Option<String>,
    /// Sign exports with this Ed25519 key (hex or base64; `chaperone keygen`).
    /// Without it, exports are refused (an unsigned manifest proves nothing).
    #[arg(long, env = "CHAPERONE_ARCHIVE_SIGNING_KEY_FILE")]
    signing_key_file: Option<PathBuf>,
    /// Where exports are written (default: the system temp directory).
    #[arg(long)]
    export_dir: Option<PathBuf>,
}

/// The `[ui]` table the arguments stand for: one validation path with the
/// gateway's (`UiConfig::from_toml`).
fn ui_table(args: &UiArgs) -> toml::Table {
    let mut ui = toml::Table::new();
    ui.insert("listen".into(), args.listen.to_string().into());
    match &args.token_env {
        Some(var) => {
            let mut token = toml::Table::new();
            token.insert("name".into(), "ui-token".into());
            token.insert("token_env".into(), var.clone().into());
            ui.insert("tokens".into(), toml::Value::Array(vec![token.into()]));
        }
        None => {
            ui.insert("demo_mode".into(), true.into());
        }
    }
    if let Some(dir) = &args.export_dir {
        ui.insert("export_dir".into(), dir.display().to_string().into());
    }
    ui
}

pub(crate) fn run(args: UiArgs) -> anyhow::Result<()> {
    crate::init_logging(false);
    if args.token_env.is_none() && !args.listen.ip().is_loopback() {
        anyhow::bail!(
            "--listen {} is not a loopback address: pass --token-env VAR so that callers need a token",
            args.listen
        );
    }
    let config = chaperone_query_ui::UiConfig::from_toml(&ui_table(&args))?;
    let key = args
        .signing_key_file
        .as_ref()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            anyhow::Ok(chaperone_schemas::manifest::parse_signing_key(&text)?)
        })
        .transpose()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let state = chaperone_query_ui::open(config, &args.archive, &Default::default())
                .await
                .with_context(|| format!("opening the archive {}", args.archive))?;
            if let Some(key) = key {
                state.attach_export_key(key);
            }
            let (local, task) = chaperone_query_ui::serve(state, crate::wait_for_signal()).await?;
            // The address on stdout: a script (or a test) reads where to go.
            println!("http://{local}/");
            eprintln!(
                "audit UI over {} on http://{local}/ (no gateway; Ctrl-C stops)",
                args.archive
            );
            task.await?;
            anyhow::Ok(())
        })
}
