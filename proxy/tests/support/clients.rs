//! External clients, run as child processes with a timeout: the `mariadb` CLI,
//! the Python and Node scripts of `tests/clients/`, and sysbench.
//!
//! The scripts of `tests/clients/` share one command-line convention:
//! `--host H --port P --user U --password PW [--database DB]`, then their own
//! options; they print JSON on stdout and exit non-zero with a message on stderr
//! when a check fails. [`ClientCommand::connect_to`] adds the common part.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::repo_root;

/// The default time limit of a client run.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// `tests/clients/`.
pub fn clients_dir() -> PathBuf {
    repo_root().join("tests/clients")
}

/// What a finished client printed.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub what: String,
    /// The exit code (None: killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Fails the test, showing the client's output, unless it exited with 0.
    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "{self}");
        self
    }

    /// Fails the test unless the client failed and said `needle` on stderr or stdout.
    pub fn assert_failure_with(&self, needle: &str) -> &Self {
        assert!(!self.success(), "expected a failure: {self}");
        assert!(
            self.stderr.contains(needle) || self.stdout.contains(needle),
            "expected {needle:?} in the output: {self}"
        );
        self
    }

    /// stdout parsed as JSON (the scripts of `tests/clients/` print one document).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self}"))
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cut = |s: &str| {
            if s.len() > 4000 {
                let mut end = 4000;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}... ({} bytes)", &s[..end], s.len())
            } else {
                s.to_string()
            }
        };
        write!(
            f,
            "`{}` exited with {:?} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.what,
            self.code,
            self.elapsed,
            cut(&self.stdout),
            cut(&self.stderr)
        )
    }
}

/// A client command line being built.
pub struct ClientCommand {
    program: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    cwd: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl ClientCommand {
    pub fn new(program: &str) -> Self {
        ClientCommand {
            program: program.to_string(),
            args: Vec::new(),
            envs: Vec::new(),
            cwd: None,
            stdin: None,
            timeout: CLIENT_TIMEOUT,
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.envs.push((k.to_string(), v.to_string()));
        self
    }

    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    /// The common options of the `tests/clients/` scripts.
    pub fn connect_to(
        self,
        addr: SocketAddr,
        user: &str,
        password: &str,
        database: Option<&str>,
    ) -> Self {
        let mut c = self.args([
            "--host".to_string(),
            addr.ip().to_string(),
            "--port".to_string(),
            addr.port().to_string(),
            "--user".to_string(),
            user.to_string(),
            "--password".to_string(),
            password.to_string(),
        ]);
        if let Some(db) = database {
            c = c.args(["--database", db]);
        }
        c
    }

    /// Runs the command to its end. Fails the test if it cannot start or runs
    /// past its timeout (it is killed then).
    pub async fn run(self) -> Output {
        let what = format!("{} {}", self.program, self.args.join(" "));
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        let started = Instant::now();
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start `{what}`: {e} (run scripts/setup-test-env.sh)")
        });
        if let Some(input) = self.stdin {
            let mut stdin = child.stdin.take().expect("piped stdin");
            tokio::spawn(async move {
                let _ = stdin.write_all(&input).await;
            });
        }
        let out = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(out) => out.unwrap_or_else(|e| panic!("`{what}`: {e}")),
            Err(_) => panic!("`{what}` did not finish within {:?}", self.timeout),
        };
        Output {
            what,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        }
    }
}

/// The `mariadb` CLI logged in to `addr`, over TCP, in batch mode. Add `-e SQL`,
/// `-D db`, `--ssl`, ... with [`ClientCommand::arg`].
pub fn mariadb(addr: SocketAddr, user: &str, password: &str) -> ClientCommand {
    ClientCommand::new("mariadb").args([
        "--protocol=TCP".to_string(),
        format!("--host={}", addr.ip()),
        format!("--port={}", addr.port()),
        format!("--user={user}"),
        format!("--password={password}"),
        "--batch".to_string(),
        "--skip-column-names".to_string(),
        "--connect-timeout=10".to_string(),
    ])
}

/// `python3 tests/clients/<script>`.
pub fn python(script: &str) -> ClientCommand {
    let mut c = ClientCommand::new("python3").arg(clients_dir().join(script).display().to_string());
    c.cwd = Some(clients_dir());
    c.env("PYTHONUNBUFFERED", "1")
}

/// `node tests/clients/<script>`, after installing `tests/clients/node_modules`
/// if it is missing.
pub fn node(script: &str) -> ClientCommand {
    ensure_node_modules();
    let mut c = ClientCommand::new("node").arg(clients_dir().join(script).display().to_string());
    c.cwd = Some(clients_dir());
    c
}

fn ensure_node_modules() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if clients_dir().join("node_modules/mysql2").is_dir() {
            return;
        }
        let status = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent"])
            .current_dir(clients_dir())
            .status()
            .expect("npm runs (run scripts/setup-test-env.sh)");
        assert!(status.success(), "npm install in tests/clients failed");
    });
}

/// `sysbench <test> <command>` against `addr` with the MySQL driver. Add the
/// test's options (`--tables`, `--table-size`, `--time`, ...) with `arg`.
pub fn sysbench(
    addr: SocketAddr,
    user: &str,
    password: &str,
    database: &str,
    test: &str,
    command: &str,
) -> ClientCommand {
    ClientCommand::new("sysbench")
        .args([
            test.to_string(),
            "--db-driver=mysql".to_string(),
            format!("--mysql-host={}", addr.ip()),
            format!("--mysql-port={}", addr.port()),
            format!("--mysql-user={user}"),
            format!("--mysql-password={password}"),
            format!("--mysql-db={database}"),
            "--mysql-ssl=off".to_string(),
        ])
        .arg(command)
}
