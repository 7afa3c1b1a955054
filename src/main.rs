//! `chaperone`: the command-line entry point. Thin: each subcommand calls a crate.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

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
    /// Write a self-signed TLS certificate and key for development.
    DevCert {
        /// Directory to write cert.pem and key.pem into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file offline (secrets from the environment included).
    Check { file: PathBuf },
}

fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("CHAPERONE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let config = chaperone_proxy::Config::load(&config)
                .with_context(|| format!("loading {}", config.display()))?;
            init_logging(config.gateway.log_format == "json");
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(serve(config))
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            let config = chaperone_proxy::Config::load(&file)?;
            chaperone_proxy::auth::ConfigUsers::from_config(&config)?;
            for (name, t) in &config.targets {
                t.password.resolve(&format!("targets.{name}"))?;
            }
            println!(
                "{}: ok ({} targets, {} users)",
                file.display(),
                config.targets.len(),
                config.users.len()
            );
            Ok(())
        }
        Command::DevCert { out } => {
            let (cert, key) = chaperone_proxy::tls::generate_self_signed()?;
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

async fn serve(config: chaperone_proxy::Config) -> anyhow::Result<()> {
    let authenticator = Arc::new(chaperone_proxy::auth::ConfigUsers::from_config(&config)?);
    let tap = Arc::new(chaperone_proxy::tap::NoopTap);
    let mut gateway = chaperone_proxy::Gateway::bind(config, authenticator, tap).await?;
    let shutdown = CancellationToken::new();
    gateway.start_admin(shutdown.clone()).await?;
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        signal.cancel();
    });
    gateway.run(shutdown).await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
