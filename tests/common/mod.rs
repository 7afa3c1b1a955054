//! What the root integration tests share: the `chaperone` binary as a child
//! process, scratch directories, free ports, the `mariadb` CLI as root, a moto
//! S3 server, and a PyMySQL connection kept open across steps.
//!
//! Each file under `tests/` is its own crate and uses only part of this.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `chaperone` binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_chaperone");

/// A scratch directory under the system temp dir, removed on drop.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(tag: &str) -> Dir {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "chp_{tag}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs SQL as MariaDB's root with the `mariadb` CLI (batch mode, no column
/// names) and returns its output; panics with the client's message on failure.
pub fn root_sql(sql: &str) -> String {
    let out = Command::new("mariadb")
        .args(["-h127.0.0.1", "-P3306", "-uroot", "-N", "-B", "-e", sql])
        .output()
        .expect("mariadb client");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Starts `chaperone serve --config CONFIG`, its log in `log`, and waits until
/// every port in `ports` accepts connections (30 s at most).
pub fn serve(config: &Path, log: &Path, ports: &[u16]) -> Child {
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env("CHAPERONE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("chaperone serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    for &port in ports {
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chaperone serve did not listen on {port}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    child
}

/// Stops a `chaperone serve` with SIGTERM (its graceful shutdown) and waits for
/// it; kills it and panics when it has not stopped after 60 s.
pub fn terminate(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chaperone serve did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the `chaperone` CLI to completion.
pub fn chaperone(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// A process's stdout and stderr, as text.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
/// Waits until something listens on `port`; `what` explains a timeout.
pub fn wait_listening(port: u16, what: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {port}: {}",
            what()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `check` until it is true or `secs` pass.
pub fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

/// The test signing key (seed 0x11 * 32) and its public half.
pub const SIGNING_KEY_HEX: &str =
    "1111111111111111111111111111111111111111111111111111111111111111";

pub fn public_key_of_test_key() -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey as K\n\
             from cryptography.hazmat.primitives import serialization as s\n\
             print(K.from_private_bytes(bytes([0x11]*32)).public_key().public_bytes(s.Encoding.Raw, s.PublicFormat.Raw).hex())",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// An S3-compatible server (moto) on loopback, killed on drop.
pub struct Moto {
    pub port: u16,
    child: Child,
}

impl Moto {
    pub fn start() -> Moto {
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto server starts (pip install 'moto[server]')");
        wait_listening(port, || "moto".into());
        Moto { port, child }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn create_bucket(&self, bucket: &str) {
        let out = Command::new("python3")
            .args([
                "-c",
                "import sys, boto3\n\
                 s3 = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1')\n\
                 s3.create_bucket(Bucket=sys.argv[2])",
                &self.endpoint(),
                bucket,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Writes an object (as an operator publishing a file with the AWS CLI).
    pub fn put_object(&self, bucket: &str, key: &str, body: &str) {
        let out = Command::new("python3")
            .args([
                "-c",
                "import sys, boto3\n\
                 s3 = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1')\n\
                 s3.put_object(Bucket=sys.argv[2], Key=sys.argv[3], Body=sys.argv[4].encode())",
                &self.endpoint(),
                bucket,
                key,
                body,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `store_options = { ... }` for a `chaperone.toml` section.
    pub fn store_options_toml(&self) -> String {
        format!(
            "{{ aws_endpoint = \"{}\", aws_allow_http = \"true\", aws_access_key_id = \"test\", aws_secret_access_key = \"test\", aws_region = \"us-east-1\" }}",
            self.endpoint()
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One PyMySQL connection kept open across steps: each `run` sends one
/// statement and returns `OK <rows>` or `ERR <code> <message>`.
pub struct OpenConnection {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

const CONNECTION_SCRIPT: &str = r#"
import sys, pymysql
host, port, user, password, db = sys.argv[1:6]
conn = pymysql.connect(host=host, port=int(port), user=user, password=password, database=db, autocommit=True, read_timeout=60)
print("CONNECTED", flush=True)
for line in sys.stdin:
    try:
        with conn.cursor() as cur:
            cur.execute(line.strip())
            print("OK", len(cur.fetchall()), flush=True)
    except pymysql.err.MySQLError as e:
        print("ERR", e.args[0], str(e.args[1] if len(e.args) > 1 else e).replace("\n", " "), flush=True)
"#;

impl OpenConnection {
    pub fn open(port: u16, user: &str, password: &str, db: &str) -> OpenConnection {
        let mut child = Command::new("timeout")
            .args(["120", "python3", "-c", CONNECTION_SCRIPT, "127.0.0.1"])
            .args([&port.to_string(), user, password, db])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(
            line.trim(),
            "CONNECTED",
            "PyMySQL connected through the gateway"
        );
        OpenConnection {
            child,
            stdin,
            stdout,
        }
    }

    pub fn run(&mut self, sql: &str) -> String {
        writeln!(self.stdin, "{sql}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "the client ended while running {sql}");
        line.trim().to_string()
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
