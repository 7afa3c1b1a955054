//! The systems under test: the gateway and the zero-logic relay, each run in a
//! child process of this binary (`chaperone-benchmarks serve ...`).
//!
//! A child process rather than a task of the benchmark process, so that its
//! resident memory can be read alone from `/proc/<pid>/status`, and so that both
//! systems run with the same runtime settings as the real `chaperone serve`
//! (tokio multi-threaded, one worker per core) and compete for the same cores.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;

/// Environment variable carrying the database password to a child process (never
/// on its command line).
const UPSTREAM_PASSWORD_ENV: &str = "CHP_BENCH_UPSTREAM_PASSWORD";
/// Environment variable carrying the gateway user's password to the gateway child.
const CLIENT_PASSWORD_ENV: &str = "CHP_BENCH_CLIENT_PASSWORD";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// `chaperone_proxy::Gateway` with a no-op tap.
    Gateway,
    /// `tokio::io::copy_bidirectional` between client and database: no parsing at all.
    Relay,
    /// The gateway with a realistic guardrail policy on its user
    /// (`crate::policy::REALISTIC_POLICY`): every statement is judged.
    GatewayPolicy,
    /// The gateway with a masking profile on its user
    /// (`crate::masking::SYSBENCH_MASKING`): sysbench's `c` and `pad` columns
    /// masked by rules, detectors on every other string value.
    GatewayMasking,
    /// The gateway recording everything: the archive recorder as its tap, with
    /// the default archive settings, a spool and a local-directory store in a
    /// temporary directory (removed when it stops).
    GatewayRecording,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Gateway => "gateway",
            Kind::Relay => "relay",
            Kind::GatewayPolicy => "gateway-policy",
            Kind::GatewayMasking => "gateway-masking",
            Kind::GatewayRecording => "gateway-recording",
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[arg(value_enum)]
    kind: Kind,
    /// The database, host:port.
    #[arg(long)]
    upstream: String,
    /// The gateway's own database user (gateway only; password from the environment).
    #[arg(long, default_value = "root")]
    upstream_user: String,
    /// The user clients log in to the gateway with (gateway only; password from
    /// the environment), with mysql_native_password.
    #[arg(long, default_value = "bench")]
    client_user: String,
}

/// How the benchmark reaches the database and what the gateway logs in as.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub address: String,
    pub user: String,
    pub password: String,
}

/// A gateway user for the benchmark's clients.
#[derive(Debug, Clone)]
pub struct GatewayUser {
    pub name: String,
    pub password: String,
}

/// The gateway's configuration: the real config format, built in code.
/// Secrets come from the environment, like in production.
fn gateway_config(args: &ServeArgs) -> String {
    let mut config = format!(
        r#"
[gateway]
id = "benchmark"
listen = "127.0.0.1:0"
max_connections = 4096
handshake_timeout_secs = 30
shutdown_grace_secs = 1

[targets.bench]
address = "{upstream}"
user = "{upstream_user}"
password_env = "{UPSTREAM_PASSWORD_ENV}"

[users.{client_user}]
target = "bench"
password_env = "{CLIENT_PASSWORD_ENV}"
# sysbench's libmariadb logs in with this one.
plugin = "mysql_native_password"
"#,
        upstream = args.upstream,
        upstream_user = args.upstream_user,
        client_user = args.client_user,
    );
    if args.kind == Kind::GatewayPolicy {
        // The user's policy (this line belongs to the [users.*] table above), and
        // the approvals its rules need.
        let store =
            std::env::temp_dir().join(format!("chaperone-bench-approvals-{}", std::process::id()));
        config.push_str("policy = \"bench\"\n[policies.bench]\n");
        config.push_str(
            &crate::policy::REALISTIC_POLICY.replace("[[approve]]", "[[policies.bench.approve]]"),
        );
        config.push_str(&format!(
            "[approvals]\nstore = {:?}\n[approvals.approvers.bench]\ntoken = \"chp-bench-approver-token\"\n",
            store.display().to_string()
        ));
    }
    if args.kind == Kind::GatewayMasking {
        // Password users have no role: the "*" profile applies to them.
        config.push_str(crate::masking::SYSBENCH_MASKING);
    }
    config
}

/// The child side: runs one system under test until standard input closes.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.kind != Kind::Relay {
        // The same logging as `chaperone serve` (info by default), to stderr, which
        // the parent sends to a file.
        let filter = tracing_subscriber::EnvFilter::try_from_env("CHAPERONE_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    // The parent holds our stdin: when it closes (the parent is done or died), stop.
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        stop.cancel();
    });
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            match args.kind {
                Kind::Gateway
                | Kind::GatewayPolicy
                | Kind::GatewayMasking
                | Kind::GatewayRecording => {
                    let config = chaperone_proxy::Config::parse(&gateway_config(&args))?;
                    let authenticator =
                        Arc::new(chaperone_proxy::auth::ConfigUsers::from_config(&config)?);
                    let recording = match args.kind {
                        // Opening recovers the spool and may reach the store
                        // on a runtime of its own: off this one.
                        Kind::GatewayRecording => {
                            Some(tokio::task::spawn_blocking(start_recorder).await??)
                        }
                        _ => None,
                    };
                    let tap: Arc<dyn chaperone_schemas::tap::Tap> = match &recording {
                        Some((recorder, _)) => recorder.clone(),
                        None => Arc::new(chaperone_schemas::tap::NoopTap),
                    };
                    let gateway =
                        chaperone_proxy::Gateway::bind(config, authenticator, tap).await?;
                    announce(gateway.local_addr());
                    gateway.run(shutdown).await;
                    if let Some((recorder, dir)) = recording {
                        tokio::task::spawn_blocking(move || {
                            recorder.shutdown(Duration::from_secs(30));
                            let _ = std::fs::remove_dir_all(dir);
                        })
                        .await?;
                    }
                }
                Kind::Relay => {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                    announce(listener.local_addr()?);
                    tokio::select! {
                        r = crate::relay::run(listener, args.upstream) => r?,
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
            anyhow::Ok(())
        })
}

/// The archive recorder of `gateway-recording`: default settings (group-commit
/// fsync, 64 MiB / 60 s segments, zstd 3), spool and store in a fresh
/// temporary directory.
fn start_recorder() -> anyhow::Result<(Arc<chaperone_recorder::Recorder>, PathBuf)> {
    let dir = std::env::temp_dir().join(format!("chaperone-bench-archive-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let config = chaperone_recorder::ArchiveConfig::new(
        dir.join("archive").to_str().context("utf-8 path")?,
        &dir.join("spool"),
    );
    let recorder = chaperone_recorder::Recorder::open(config, "benchmark")?;
    Ok((Arc::new(recorder), dir))
}

fn announce(addr: SocketAddr) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening {addr}");
    let _ = out.flush();
}

/// Numbers the log files of the children of one benchmark process.
static LOG_COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The parent side: a running system under test.
pub struct ServerProcess {
    pub kind: Kind,
    pub addr: SocketAddr,
    child: Child,
    stdin: Option<ChildStdin>,
    pub log: PathBuf,
}

impl ServerProcess {
    pub fn start(kind: Kind, upstream: &Upstream, user: &GatewayUser) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the benchmark binary")?;
        Self::start_from(&exe, kind, upstream, user)
    }

    /// Starts the system under test from another build of this binary (to compare
    /// two versions of the gateway in one run).
    pub fn start_from(
        exe: &std::path::Path,
        kind: Kind,
        upstream: &Upstream,
        user: &GatewayUser,
    ) -> anyhow::Result<Self> {
        let log = std::env::temp_dir().join(format!(
            "chaperone-benchmarks-{}-{}-{}.log",
            kind.name(),
            std::process::id(),
            LOG_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("creating the log file {}", log.display()))?;
        let mut child = Command::new(exe)
            .arg("serve")
            .arg(kind.name())
            .args(["--upstream", &upstream.address])
            .args(["--upstream-user", &upstream.user])
            .args(["--client-user", &user.name])
            .env(UPSTREAM_PASSWORD_ENV, &upstream.password)
            .env(CLIENT_PASSWORD_ENV, &user.password)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .context("starting the system under test")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("child stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix("listening ") else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the {} did not start; its log: {}\n{}",
                kind.name(),
                log.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let addr = addr.parse().context("the child's listen address")?;
        Ok(ServerProcess {
            kind,
            addr,
            child,
            stdin,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size of the process, in KiB (`VmRSS` in `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.pid())
    }

    /// CPU time the process has used so far, in ns: the sum over its threads of
    /// the first field of `/proc/<pid>/task/<tid>/schedstat` (time on a CPU).
    pub fn cpu_ns(&self) -> anyhow::Result<u64> {
        let dir = format!("/proc/{}/task", self.pid());
        let mut total = 0;
        for task in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
            // A thread may end between listing and reading: skip it.
            let Ok(stat) = std::fs::read_to_string(task?.path().join("schedstat")) else {
                continue;
            };
            total += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .with_context(|| format!("unexpected schedstat in {dir}: {stat}"))?;
        }
        Ok(total)
    }

    /// Closes the child's stdin and waits for it to exit (killing it after a while).
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!(
            "the {} did not stop within 10 s and was killed",
            self.kind.name()
        )
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.stop_inner();
        }
    }
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))
}
