//! `chaperone replay` and `chaperone diff`: argument handling only; the work is
//! in the `chaperone-replayer` crate.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use chaperone_replayer::against::{replay_against, same_server, AgainstOptions, Dsn};
use chaperone_replayer::archive::{Archive, SessionSource};
use chaperone_replayer::dbmap::DatabaseMap;
use chaperone_replayer::story::{print_story, StoryError, StoryFormat};

#[derive(clap::Args)]
pub struct ArchiveArgs {
    /// The archive (directory or object-store URL); default: the `[archive]`
    /// store of --config.
    #[arg(long, env = "CHAPERONE_ARCHIVE")]
    archive: Option<String>,
    /// The gateway config (its `[archive]` store; its targets, which
    /// `--against` refuses to touch; its `[masking]`, which `--against` applies
    /// as the recorded role's before comparing result hashes).
    #[arg(long, short, env = "CHAPERONE_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The session id (see `chaperone sessions`).
    session: String,
    #[command(flatten)]
    archive: ArchiveArgs,
    /// Print the session as text (for logs and pipes).
    #[arg(long, conflicts_with = "json")]
    plain: bool,
    /// Print the session as JSON lines.
    #[arg(long)]
    json: bool,
    /// Re-execute the session on this database: mysql://user:pass@host:port/db.
    #[arg(long, value_name = "DSN")]
    against: Option<String>,
    /// Allow --against a target of the gateway's config (production).
    #[arg(long)]
    i_know: bool,
    /// With --against: skip every statement that is not a read.
    #[arg(long)]
    read_only: bool,
    /// With --against: wrap the replay in a transaction and roll it back (the
    /// session's own BEGIN/COMMIT/ROLLBACK become savepoints of it).
    #[arg(long)]
    rollback: bool,
    /// With --against: the recorded database FROM is called TO on the target
    /// (qualified names, USE, the default database); repeat for several.
    #[arg(long, value_name = "FROM=TO")]
    map_database: Vec<String>,
}

#[derive(clap::Args)]
pub struct DiffArgs {
    /// Session A (older) and session B (newer); or use --agent.
    sessions: Vec<String>,
    #[command(flatten)]
    archive: ArchiveArgs,
    /// Compare the last runs of this agent (subject, display name or user).
    #[arg(long)]
    agent: Option<String>,
    /// With --agent: how many of its last sessions (the oldest and newest of
    /// them are compared).
    #[arg(long, default_value_t = 2)]
    last: usize,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Session A's database FROM is session B's TO: compare as if A had used
    /// B's names (the same migration on two databases); repeat for several.
    #[arg(long, value_name = "FROM=TO")]
    map_database: Vec<String>,
}

fn load_config(path: &std::path::Path) -> anyhow::Result<chaperone_proxy::Config> {
    chaperone_proxy::Config::load(path).with_context(|| format!("loading {}", path.display()))
}

fn archive_location(args: &ArchiveArgs) -> anyhow::Result<String> {
    if let Some(a) = &args.archive {
        return Ok(a.clone());
    }
    let path = args
        .config
        .clone()
        .unwrap_or_else(|| "chaperone.toml".into());
    let config = load_config(&path).context("pass --archive DIR|URL")?;
    let section = config.archive.as_ref().with_context(|| {
        format!(
            "{} has no [archive] section (pass --archive)",
            path.display()
        )
    })?;
    Ok(chaperone_recorder::ArchiveConfig::from_toml(section)?.store)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let location = archive_location(&args.archive)?;
    let rt = runtime()?;
    // Ctrl-C is caught from the start (not from the first poll of a ctrl_c()
    // future), so an early interrupt still stops cleanly and rolls back.
    let mut interrupt = rt.block_on(async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
    })?;
    let archive = rt.block_on(Archive::open(&location))?;
    if let Some(dsn) = &args.against {
        let dsn = Dsn::parse(dsn)?;
        let mut masking = None;
        if let Some(path) = &args.archive.config {
            let config = load_config(path)?;
            masking = Some(std::sync::Arc::new(
                chaperone_masking::Masking::compile(&config.masking)
                    .with_context(|| format!("the [masking] section of {}", path.display()))?,
            ));
            for (name, t) in &config.targets {
                if same_server(&t.address, &dsn.address) && !args.i_know {
                    anyhow::bail!(
                        "refusing to replay against {}: it is target {name:?} of {} (a gateway target, \
                         maybe production); replay against a copy, or pass --i-know",
                        dsn.address,
                        path.display()
                    );
                }
            }
        }
        let options = AgainstOptions {
            read_only: args.read_only,
            rollback: args.rollback,
            connect_timeout: None,
            masking,
            databases: DatabaseMap::parse(&args.map_database)?,
        };
        let cancel = async move {
            interrupt.recv().await;
        };
        let report = rt.block_on(replay_against(
            &archive,
            &args.session,
            &dsn,
            &options,
            cancel,
        ))?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print!("{}", report.render(std::io::stdout().is_terminal()));
        }
        std::process::exit(if report.ok() { 0 } else { 1 });
    }
    let format = if args.json {
        Some(StoryFormat::Json)
    } else if args.plain || !std::io::stdout().is_terminal() {
        Some(StoryFormat::Plain)
    } else {
        None
    };
    match format {
        Some(format) => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            match rt.block_on(print_story(&archive, &args.session, format, &mut out)) {
                // `| head`: the reader has what it wanted.
                Err(StoryError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other?,
            }
        }
        None => {
            let hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                chaperone_replayer::player::restore_terminal();
                hook(info);
            }));
            rt.block_on(chaperone_replayer::player::run(&archive, &args.session))?;
        }
    }
    Ok(())
}

pub fn diff(args: DiffArgs) -> anyhow::Result<()> {
    let location = archive_location(&args.archive)?;
    let rt = runtime()?;
    let archive = rt.block_on(Archive::open(&location))?;
    let (a, b) = match (&args.agent, args.sessions.as_slice()) {
        (None, [a, b]) => (a.clone(), b.clone()),
        (Some(agent), []) => {
            let sessions = rt.block_on(archive.sessions_of_agent(agent))?;
            let last: Vec<_> = sessions.iter().rev().take(args.last.max(2)).rev().collect();
            if last.len() < 2 {
                anyhow::bail!(
                    "agent {agent} has {} recorded session(s) in {location}; diff needs two",
                    last.len()
                );
            }
            (
                last[0].session_id.clone(),
                last[last.len() - 1].session_id.clone(),
            )
        }
        _ => anyhow::bail!("give two session ids, or --agent NAME [--last N]"),
    };
    let sa = rt.block_on(archive.statements(&a))?;
    let sb = rt.block_on(archive.statements(&b))?;
    let map = DatabaseMap::parse(&args.map_database)?;
    let d = chaperone_replayer::diff::diff_mapped(&a, &sa, &b, &sb, &map);
    if args.json {
        println!("{}", serde_json::to_string(&d)?);
    } else {
        print!(
            "{}",
            chaperone_replayer::diff::render(&d, std::io::stdout().is_terminal())
        );
    }
    std::process::exit(if d.is_different() { 1 } else { 0 });
}
