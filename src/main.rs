//! `chaperone`: the command-line entry point. Thin: each subcommand calls a crate.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

mod approvals;
mod replay;
use replay::{DiffArgs, ReplayArgs};

mod config_check;
mod demo;
mod export;
mod lifecycle;
mod ui;

#[derive(Parser)]
#[command(
    name = "chaperone",
    version,
    about = "Identity-aware MySQL gateway for AI agents: record, replay and audit every session"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (and its admin endpoint) with a config file.
    Serve {
        #[arg(
            long,
            short,
            default_value = "chaperone.toml",
            env = "CHAPERONE_CONFIG"
        )]
        config: PathBuf,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Check the archive: manifest signatures, file hashes, the manifest chain of
    /// each gateway and per-session frame continuity. Names what is missing,
    /// altered or out of order; exits non-zero if anything is.
    Verify {
        /// The gateway config whose `[archive]` store to check.
        #[arg(
            long,
            short,
            default_value = "chaperone.toml",
            env = "CHAPERONE_CONFIG"
        )]
        config: PathBuf,
        /// The store to check instead (directory or URL); overrides --config.
        #[arg(long)]
        store: Option<String>,
        /// Only segments with rows this recent: 24h, 7d, 2024-03-05, or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Require manifests signed by this Ed25519 public key (hex or base64);
        /// repeat for several keys.
        #[arg(long, env = "CHAPERONE_ARCHIVE_PUBLIC_KEY")]
        public_key: Vec<String>,
        /// Require signatures by the keys of this keyring, each within its
        /// period (TOML `[[key]]` entries; see docs/operations.md, key rotation).
        #[arg(long)]
        keyring: Option<PathBuf>,
        /// Only this gateway's chain.
        #[arg(long)]
        gateway: Option<String>,
        /// The gateways the archive must hold: a number (at least that many)
        /// or a comma-separated list of gateway ids. Without it an empty
        /// archive only gets a note.
        #[arg(long)]
        expect_gateways: Option<String>,
    },
    /// Everything local, with a scripted agent session: a dev token issuer, the
    /// gateway against the MariaDB at 127.0.0.1:3306, and a local archive.
    Demo {
        /// Where the demo keeps its config, keys, spool and archive.
        #[arg(long, default_value = ".chaperone/demo")]
        dir: PathBuf,
        /// The gateway's MySQL listener.
        #[arg(long, default_value = "127.0.0.1:3307")]
        listen: std::net::SocketAddr,
        /// The audit web UI and API.
        #[arg(long, default_value = "127.0.0.1:8080")]
        ui_listen: std::net::SocketAddr,
        /// Stop after the scripted session instead of serving until Ctrl-C.
        #[arg(long)]
        no_wait: bool,
    },
    /// Play a recorded session back: an interactive terminal player, `--plain`
    /// text or `--json` lines; with `--against DSN`, re-execute it on another
    /// database and report where it diverges from the record (exit 1 if it does).
    Replay(ReplayArgs),
    /// Compare two recorded sessions statement by statement (exit 1 if they differ).
    Diff(DiffArgs),
    /// Run SQL over the archive (tables `sessions`, `statements`, `frames`; views
    /// `session_list`, `statement_log`, `table_access`), straight from the store.
    Query {
        /// The query, e.g. "SELECT subject, count(*) FROM statements GROUP BY 1".
        sql: String,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        #[command(flatten)]
        archive: ArchiveArgs,
    },
    /// Export a selection of the archive (time range, agent, table touched) as
    /// Parquet, CSV or JSON lines, with a manifest.json of SHA-256 hashes and the
    /// archive manifests the rows came from; `export verify DIR` checks one.
    Export(export::ExportArgs),
    /// Serve the audit web UI and API over an archive, without a gateway (an
    /// archive directory copied away from it, or a bucket).
    Ui(ui::UiArgs),
    /// List recorded sessions, newest first, straight from the archive.
    Sessions {
        /// Only this agent's sessions (its subject or display name).
        #[arg(long)]
        agent: Option<String>,
        /// Only sessions that read or wrote this table (`db.table`, or a bare name).
        #[arg(long)]
        table: Option<String>,
        /// Only sessions started since: 24h, 7d, 2024-03-05, or an RFC 3339 time.
        #[arg(long, default_value = "24h")]
        since: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        #[command(flatten)]
        archive: ArchiveArgs,
    },
    /// Delete (or move) archive segments older than a policy, except those
    /// under legal hold; recorded so that `verify` still passes.
    Retention(lifecycle::RetentionArgs),
    /// Merge small archive segments into larger files, preserving verifiability.
    Compact(lifecycle::CompactArgs),
    /// Write a new Ed25519 manifest-signing key and print its public key.
    Keygen(lifecycle::KeygenArgs),
    /// Write a self-signed TLS certificate and key for development.
    DevCert {
        /// Directory to write cert.pem and key.pem into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Approval requests of guardrails (docs/guardrails.md): list, show,
    /// approve, deny, revoke, through a gateway's API with an approver token.
    Approvals(approvals::ApprovalsArgs),
    /// A local OIDC issuer for tests and demos. NOT FOR PRODUCTION: whoever can
    /// read its key file can mint any identity.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Serve the dev issuer's discovery document and JWKS on a loopback address.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8900")]
        listen: std::net::SocketAddr,
        /// The signing key (PKCS#8 PEM); created if missing.
        #[arg(long, default_value = "dev-issuer-key.pem")]
        key: PathBuf,
        /// ES256 or EdDSA, for a new key.
        #[arg(long, default_value = "ES256")]
        alg: String,
    },
    /// Print a token signed by the dev issuer's key.
    Mint {
        #[arg(long, default_value = "dev-issuer-key.pem")]
        key: PathBuf,
        /// The issuer URL, as printed by `chaperone token serve`.
        #[arg(long, default_value = "http://127.0.0.1:8900")]
        issuer: String,
        #[arg(long)]
        sub: String,
        #[arg(long, default_value = "chaperone")]
        aud: String,
        #[arg(long, default_value_t = 600)]
        ttl: i64,
        /// More claims, as a JSON object (they override the standard ones).
        #[arg(long, default_value = "{}")]
        claims: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a config file and everything `serve` needs before it binds
    /// (secrets from the environment, key files, directories, the archive's
    /// store reached); `--offline` for the file alone.
    Check(config_check::CheckArgs),
}

fn init_logging(json: bool) {
    init_logging_at(json, "info")
}

/// Logging to stderr; `CHAPERONE_LOG` (e.g. `debug`, `chaperone_proxy=trace`)
/// overrides `default_filter`.
fn init_logging_at(json: bool, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("CHAPERONE_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("Error: {}", error_chain(&e));
        std::process::exit(1);
    }
}

/// An error and its causes, each said once. Library errors often include
/// their source in their own message (`opening the archive: {0}`), so
/// anyhow's `Caused by:` list repeats the same text at every level; a cause
/// already contained in the message above it is left out.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    let mut last = out.clone();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !last.contains(&text) {
            out += &format!("\n  caused by: {text}");
        }
        last = text;
    }
    out
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config: path } => {
            // Before anything slow: a SIGHUP while starting must not end the process.
            let early_hangups = chaperone_proxy::control::catch_early_hangups()?;
            let (config, in_force) = chaperone_proxy::Config::load_effective(&path)
                .with_context(|| format!("loading {}", path.display()))?;
            init_logging(config.gateway.log_format == "json");
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(serve(config, path, in_force, early_hangups))
        }
        Command::Config {
            command: ConfigCommand::Check(args),
        } => config_check::run(args),
        Command::Token { command } => token(command),
        Command::Approvals(args) => approvals::run(args),
        Command::Verify {
            config,
            store,
            since,
            public_key,
            keyring,
            gateway,
            expect_gateways,
        } => verify(
            config,
            store,
            since,
            public_key,
            keyring,
            gateway,
            expect_gateways,
        ),
        Command::Retention(args) => lifecycle::retention(args),
        Command::Compact(args) => lifecycle::compact(args),
        Command::Keygen(args) => lifecycle::keygen(args),
        Command::Demo {
            dir,
            listen,
            ui_listen,
            no_wait,
        } => {
            // Editing the demo's config and sending SIGHUP reloads it, as `serve`.
            let early_hangups = chaperone_proxy::control::catch_early_hangups()?;
            // The demo tells its own story; the gateway's logs only when asked.
            init_logging_at(false, "warn");
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(demo::run(demo::DemoArgs {
                    dir,
                    listen,
                    ui_listen,
                    keep_running: !no_wait,
                    early_hangups,
                }))
        }
        Command::Replay(args) => replay::replay(args),
        Command::Diff(args) => replay::diff(args),
        Command::Query {
            sql,
            format,
            archive,
        } => query_archive(&archive, |_| Ok(sql), format),
        Command::Export(args) => export::run(args),
        Command::Ui(args) => ui::run(args),
        Command::Sessions {
            agent,
            table,
            since,
            limit,
            format,
            archive,
        } => query_archive(
            &archive,
            |now_ns| {
                let since_ns = chaperone_archive::since::parse_since(&since, now_ns)
                    .map_err(anyhow::Error::msg)?;
                Ok(chaperone_catalog::sessions_sql(
                    &chaperone_catalog::SessionFilter {
                        agent,
                        table,
                        since_ns: Some(since_ns),
                        limit,
                    },
                ))
            },
            format,
        ),
        Command::DevCert { out } => {
            let (cert, key) = chaperone_mysql::tls::generate_self_signed()?;
            std::fs::create_dir_all(&out)?;
            std::fs::write(out.join("cert.pem"), cert)?;
            std::fs::write(out.join("key.pem"), key)?;
            println!(
                "wrote {0}/cert.pem and {0}/key.pem (self-signed, for development only)",
                out.display()
            );
            Ok(())
        }
    }
}

/// `chaperone serve`: the gateway until SIGTERM; SIGHUP (and `[gateway]
/// config_poll_secs`) reload roles, policies and masking rules from `path`.
async fn serve(
    config: chaperone_proxy::Config,
    path: PathBuf,
    in_force: toml::Table,
    early_hangups: chaperone_proxy::control::EarlyHangups,
) -> anyhow::Result<()> {
    use chaperone_proxy::control::Reloader;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        signal.cancel();
    });
    let poll = config
        .gateway
        .config_poll_secs
        .map(std::time::Duration::from_secs);
    let gateway = start_gateway(config, shutdown.clone()).await?;
    let reloader = Reloader::new(
        path,
        in_force,
        gateway.shared.clone(),
        gateway.workload.clone(),
    );
    Arc::new(reloader).spawn(poll, shutdown, early_hangups)?;
    gateway.stopped().await
}

/// A gateway started by [`start_gateway`].
pub(crate) struct RunningGateway {
    pub addr: std::net::SocketAddr,
    /// What sessions share (the control plane a reload replaces).
    pub shared: Arc<chaperone_proxy::server::Shared>,
    /// Token login's roles, replaced by a reload.
    pub workload: Option<Arc<chaperone_proxy::identity::WorkloadIdentity>>,
    recorder: Option<Arc<chaperone_recorder::Recorder>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningGateway {
    /// Waits until everything recorded so far is sealed and uploaded (best effort).
    pub async fn flush(&self) {
        if let Some(recorder) = self.recorder.clone() {
            let _ = tokio::task::spawn_blocking(move || {
                recorder.flush(std::time::Duration::from_secs(10))
            })
            .await;
        }
    }

    /// Waits for the gateway to stop (after its shutdown token is cancelled),
    /// then seals the archive.
    pub async fn stopped(self) -> anyhow::Result<()> {
        self.task.await?;
        if let Some(recorder) = self.recorder {
            // Seal what is spooled (sessions still open end as gateway_stopped) and
            // give uploads a moment; the rest is uploaded at the next start.
            tokio::task::spawn_blocking(move || {
                recorder.shutdown(std::time::Duration::from_secs(30))
            })
            .await?;
        }
        Ok(())
    }
}

/// Starts the gateway, its admin endpoint, its API and its recorder; they run
/// until `shutdown` is cancelled.
pub(crate) async fn start_gateway(
    config: chaperone_proxy::Config,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningGateway> {
    let authenticator =
        Arc::new(chaperone_proxy::identity::GatewayAuthenticator::from_config(&config)?);
    let recorder = match &config.archive {
        Some(section) => {
            let archive = chaperone_recorder::ArchiveConfig::from_toml(section)?;
            let gateway_id = config.gateway.id.clone();
            // Opening recovers the spool and may reach the store: off the runtime.
            let recorder = tokio::task::spawn_blocking(move || {
                chaperone_recorder::Recorder::open(archive, &gateway_id)
            })
            .await?
            .context("starting the archive recorder")?;
            Some(Arc::new(recorder))
        }
        None => {
            tracing::warn!("no [archive] section: sessions are NOT recorded");
            None
        }
    };
    let tap: Arc<dyn chaperone_schemas::tap::Tap> = match &recorder {
        Some(r) => r.clone(),
        None => Arc::new(chaperone_schemas::tap::NoopTap),
    };
    let mut gateway = chaperone_proxy::Gateway::bind(config, authenticator.clone(), tap).await?;
    if let Some(r) = &recorder {
        gateway.metrics().register_collector(r.metrics_collector());
    }
    gateway.start_admin(shutdown.clone()).await?;
    let api_shutdown = shutdown.clone();
    chaperone_proxy::identity::api::start(&gateway.shared(), &authenticator, async move {
        api_shutdown.cancelled().await
    })
    .await?;
    if let Some(section) = &gateway.shared().config.ui {
        let ui = chaperone_query_ui::UiConfig::from_toml(section)?;
        let archive = gateway
            .shared()
            .config
            .archive
            .clone()
            .context("[ui] needs an [archive] section: the audit service reads the archive")?;
        let archive = chaperone_recorder::ArchiveConfig::from_toml(&archive)?;
        let state = chaperone_query_ui::open(ui, &archive.store, &archive.store_options).await?;
        // Exports are signed with the archive's key: one key for a verifier to trust.
        if let Some(key) = archive.existing_signing_key().map_err(anyhow::Error::msg)? {
            state.attach_export_key(key);
        }
        // The web inbox decides through this gateway's approvals.
        if let Some(approvals) = gateway.shared().guardrails.approvals() {
            state.attach_approvals(approvals.clone());
        }
        let ui_shutdown = shutdown.clone();
        let (local, _task) =
            chaperone_query_ui::serve(state, async move { ui_shutdown.cancelled().await }).await?;
        tracing::info!(%local, "audit service (API and web UI) listening");
    }
    let addr = gateway.local_addr();
    let shared = gateway.shared();
    let task = tokio::spawn(gateway.run(shutdown));
    Ok(RunningGateway {
        addr,
        shared,
        workload: authenticator.workload().cloned(),
        recorder,
        task,
    })
}

/// Where the archive to read is: `--archive`, else the `[archive]` store of the
/// gateway config.
#[derive(clap::Args)]
struct ArchiveArgs {
    /// The archive: a directory or a URL (s3://bucket/prefix, gs://, az://).
    #[arg(long, env = "CHAPERONE_ARCHIVE")]
    archive: Option<String>,
    /// The gateway config whose `[archive]` store to read, without --archive.
    #[arg(
        long,
        short,
        default_value = "chaperone.toml",
        env = "CHAPERONE_CONFIG"
    )]
    config: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OutputFormat {
    Table,
    Csv,
    Json,
}

/// Opens the archive's store: `location` if given, else the config's `[archive]`.
fn archive_store(
    location: Option<String>,
    config: &std::path::Path,
    flag: &str,
) -> anyhow::Result<chaperone_recorder::Store> {
    Ok(match location {
        Some(location) => chaperone_recorder::Store::open(&location, &Default::default())?,
        None => {
            let archive = archive_config(config, flag)?;
            chaperone_recorder::Store::open(&archive.store, &archive.store_options)?
        }
    })
}

/// The `[archive]` section of a gateway config.
fn archive_config(
    config: &std::path::Path,
    flag: &str,
) -> anyhow::Result<chaperone_recorder::ArchiveConfig> {
    let gateway_config = chaperone_proxy::Config::load(config)
        .with_context(|| format!("loading {} (or pass {flag})", config.display()))?;
    let section = gateway_config.archive.as_ref().with_context(|| {
        format!(
            "{} has no [archive] section (or pass {flag})",
            config.display()
        )
    })?;
    Ok(chaperone_recorder::ArchiveConfig::from_toml(section)?)
}

/// Runs one query over the archive and prints the result.
fn query_archive(
    args: &ArchiveArgs,
    sql: impl FnOnce(i64) -> anyhow::Result<String>,
    format: OutputFormat,
) -> anyhow::Result<()> {
    use chaperone_catalog::{render, Catalog, CatalogOptions, Format};
    init_logging(false);
    let store = archive_store(args.archive.clone(), &args.config, "--archive")?;
    let sql = sql(chaperone_schemas::event::now_ns())?;
    let batches = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let catalog = Catalog::open(store, CatalogOptions::default()).await?;
            catalog.query(&sql).await
        })?;
    let format = match format {
        OutputFormat::Table => Format::Table,
        OutputFormat::Csv => Format::Csv,
        OutputFormat::Json => Format::Json,
    };
    let text = render(&batches, format)?;
    print!("{text}");
    if format == Format::Table && !text.is_empty() {
        println!();
    }
    Ok(())
}

fn verify(
    config: PathBuf,
    store: Option<String>,
    since: Option<String>,
    public_key: Vec<String>,
    keyring: Option<PathBuf>,
    gateway: Option<String>,
    expect_gateways: Option<String>,
) -> anyhow::Result<()> {
    use chaperone_archive::verify::{verify, VerifyOptions};
    init_logging(false);
    let store = archive_store(store, &config, "--store")?;
    let options = VerifyOptions {
        since_ns: since
            .map(|s| chaperone_archive::since::parse_since(&s, chaperone_schemas::event::now_ns()))
            .transpose()
            .map_err(anyhow::Error::msg)?,
        keyring: keyring_arg(keyring, &public_key)?,
        gateway,
        expect_gateways: expect_gateways
            .map(|e| chaperone_archive::head::Expectation::parse(&e))
            .transpose()
            .map_err(anyhow::Error::msg)?,
    };
    let report = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(verify(&store, &options))?;
    print!("{report}");
    if report.ok() {
        Ok(())
    } else {
        std::process::exit(1);
    }
}

/// The keys a verifier trusts: `--keyring FILE` or `--public-key KEY`s (none:
/// signatures prove integrity, not origin).
fn keyring_arg(
    keyring: Option<PathBuf>,
    public_key: &[String],
) -> anyhow::Result<Option<chaperone_archive::keyring::Keyring>> {
    Ok(match (keyring, public_key.is_empty()) {
        (Some(path), true) => Some(chaperone_archive::keyring::Keyring::load(&path)?),
        (None, false) => Some(chaperone_archive::keyring::Keyring::always(
            public_key
                .iter()
                .map(|k| chaperone_schemas::manifest::parse_verifying_key(k))
                .collect::<Result<_, _>>()?,
        )),
        (None, true) => None,
        (Some(_), false) => anyhow::bail!("use --keyring or --public-key, not both"),
    })
}

fn token(command: TokenCommand) -> anyhow::Result<()> {
    use chaperone_proxy::identity::dev_issuer::{self, DevIssuer, DevKey, MintRequest};
    match command {
        TokenCommand::Serve { listen, key, alg } => {
            init_logging(false);
            let key = DevKey::load_or_create(&key, dev_issuer::signing_algorithm(&alg)?)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(async move {
                    let (issuer, task) =
                        dev_issuer::serve(listen, key, wait_for_signal()).await?;
                    eprintln!("NOT FOR PRODUCTION: a development issuer; anyone with its key file can mint any identity.");
                    println!("{}", issuer.issuer);
                    task.await?;
                    Ok(())
                })
        }
        TokenCommand::Mint {
            key,
            issuer,
            sub,
            aud,
            ttl,
            claims,
        } => {
            let pem = std::fs::read_to_string(&key).with_context(|| {
                format!(
                    "reading {} (run `chaperone token serve` first)",
                    key.display()
                )
            })?;
            let key = DevKey::from_pem(&pem, &key.display().to_string())?;
            let claims = dev_issuer::claims_from_json(&claims)?;
            let token = DevIssuer::new(issuer, key).mint(&MintRequest {
                subject: sub,
                audience: aud,
                ttl_secs: ttl,
                claims,
            })?;
            println!("{token}");
            Ok(())
        }
    }
}

pub(crate) async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
