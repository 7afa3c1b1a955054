//! What the root integration tests share: the `chaperone` binary as a child
//! process, scratch directories, free ports, and the `mariadb` CLI as root.
//!
//! Each file under `tests/` is its own crate and uses only part of this.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
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
