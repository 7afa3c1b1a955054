//! Shared pieces of the recorder's tests: synthetic sessions through the real
//! tap interface, archive readers (Rust, pyarrow, DuckDB), a moto S3 server.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chaperone_recorder::{ArchiveConfig, Recorder};
use chaperone_schemas::event::{
    now_ns, CommandSummary, Direction, Frame, SessionEnd, SessionStart, TapEvent,
};
use chaperone_schemas::identity::Identity;
use chaperone_schemas::tap::Tap;

/// A session driven through the tap as the gateway would.
pub struct FakeSession {
    /// Result rows are incompressible noise instead of letters.
    pub noisy: bool,
    pub id: Arc<str>,
    pub seq: u64,
    pub command: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl FakeSession {
    pub fn start(tap: &dyn Tap, id: &str, subject: &str) -> FakeSession {
        let mut identity = Identity::config_user(subject);
        identity.role = Some("reader".into());
        tap.record(TapEvent::SessionStart(Box::new(SessionStart {
            session_id: id.to_string(),
            connection_id: 7,
            upstream_connection_id: 70,
            started_at_ns: now_ns(),
            gateway_id: "gw-test".into(),
            identity,
            client_user: subject.into(),
            target: "orders".into(),
            upstream_user: "root".into(),
            database: Some("shop".into()),
            client_addr: "127.0.0.1:40000".into(),
            client_tls: false,
            upstream_tls: false,
            connect_attrs: BTreeMap::from([("program_name".into(), "test".into())]),
            access_request_id: None,
        })));
        FakeSession {
            noisy: false,
            id: Arc::from(id),
            seq: 0,
            command: 0,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    fn frame(&mut self, direction: Direction, payload: Bytes) -> Frame {
        let f = Frame {
            session_id: self.id.clone(),
            seq: self.seq,
            command_index: self.command,
            time_ns: now_ns(),
            direction,
            payload,
        };
        self.seq += 1;
        f
    }

    /// One COM_QUERY with `rows` result rows of `row_bytes` bytes each.
    /// Returns whether the request was accepted by the tap.
    pub fn query(&mut self, tap: &dyn Tap, sql: &str, rows: usize, row_bytes: usize) -> bool {
        let started = now_ns();
        let mut req = vec![0x03];
        req.extend_from_slice(sql.as_bytes());
        self.bytes_in += req.len() as u64;
        let f = self.frame(Direction::ClientToServer, Bytes::from(req));
        if tap.record_request(TapEvent::Frame(f)).is_err() {
            // The gateway answers with an error frame and a refused summary.
            let f = self.frame(
                Direction::ServerToClient,
                Bytes::from_static(b"\xffrefused"),
            );
            tap.record(TapEvent::Frame(f));
            tap.record(TapEvent::Command(Box::new(CommandSummary {
                session_id: self.id.to_string(),
                command_index: self.command,
                started_at_ns: started,
                command: "COM_QUERY".into(),
                sql: Some(sql.into()),
                refused: true,
                ..Default::default()
            })));
            self.command += 1;
            return false;
        }
        let mut responses = vec![Bytes::from_static(b"\x01"), Bytes::from_static(b"\x03def\x04shop\x01t\x01t\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00")];
        for r in 0..rows {
            let mut row = vec![(row_bytes.min(250)) as u8];
            if self.noisy {
                row.extend(noise(self.seq * 1000 + r as u64, row_bytes.min(250)));
            } else {
                row.extend((0..row_bytes.min(250)).map(|i| b'a' + ((i + r) % 26) as u8));
            }
            responses.push(Bytes::from(row));
        }
        responses.push(Bytes::from_static(b"\xfe\x00\x00\x02\x00"));
        for payload in responses {
            self.bytes_out += payload.len() as u64;
            let f = self.frame(Direction::ServerToClient, payload);
            tap.record(TapEvent::Frame(f));
        }
        tap.record(TapEvent::Command(Box::new(CommandSummary {
            session_id: self.id.to_string(),
            command_index: self.command,
            started_at_ns: started,
            duration_ns: 1000,
            command: "COM_QUERY".into(),
            sql: Some(sql.into()),
            rows_returned: rows as u64,
            result_columns: vec!["id".into()],
            tables_read: vec!["shop.t".into()],
            statement_class: Some("read".into()),
            ..Default::default()
        })));
        self.command += 1;
        true
    }

    pub fn end(self, tap: &dyn Tap) {
        tap.record(TapEvent::SessionEnd(Box::new(SessionEnd {
            session_id: self.id.to_string(),
            ended_at_ns: now_ns(),
            reason: "client_quit".into(),
            commands: self.command,
            frames: self.seq,
            bytes_from_client: self.bytes_in,
            bytes_to_client: self.bytes_out,
        })));
    }
}

pub fn tempdir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("chp_rec_{tag}_"))
        .tempdir()
        .expect("tempdir")
}

/// A config for tests: small segments, local store.
pub fn config(store: &str, spool: &Path) -> ArchiveConfig {
    let mut c = ArchiveConfig::new(store, spool);
    c.segment_max_bytes = 256 << 10;
    c.segment_max_age_ms = 200;
    c.zstd_level = 1;
    c.signing_key_env = None;
    c
}

pub fn open(config: ArchiveConfig) -> Recorder {
    Recorder::open(config, "gw-test").expect("recorder opens")
}

/// Runs `python3 -c script args...`; returns stdout.
pub fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Counts per table as pyarrow and DuckDB see a local archive directory:
/// `{"pyarrow": {table: rows}, "duckdb": {table: rows}, ...}`.
pub fn independent_counts(root: &Path) -> serde_json::Value {
    let script = r#"
import json, sys, os
import pyarrow.dataset as ds, duckdb
root = sys.argv[1]
out = {"pyarrow": {}, "duckdb": {}, "duckdb_frames_per_session": {}, "duckdb_subjects": []}
for t in ["sessions", "statements", "frames"]:
    d = os.path.join(root, "v1", t)
    if not os.path.isdir(d):
        out["pyarrow"][t] = 0; out["duckdb"][t] = 0; continue
    out["pyarrow"][t] = ds.dataset(d, format="parquet", partitioning="hive").count_rows()
    out["duckdb"][t] = duckdb.sql(f"SELECT count(*) FROM read_parquet('{d}/*/*/*.parquet', hive_partitioning=true)").fetchall()[0][0]
d = os.path.join(root, "v1", "frames")
if os.path.isdir(d):
    for sid, n, mn, mx in duckdb.sql(f"SELECT session_id, count(*), min(seq), max(seq) FROM read_parquet('{d}/*/*/*.parquet') GROUP BY 1").fetchall():
        out["duckdb_frames_per_session"][sid] = [n, mn, mx]
d = os.path.join(root, "v1", "statements")
if os.path.isdir(d):
    out["duckdb_subjects"] = [r[0] for r in duckdb.sql(f"SELECT DISTINCT subject FROM read_parquet('{d}/*/*/*.parquet') ORDER BY 1").fetchall()]
print(json.dumps(out))
"#;
    let text = python(script, &[root.to_str().expect("utf-8 path")]);
    serde_json::from_str(&text).expect("json from python")
}

/// Rows per table as the parquet crate reads them from a local archive.
pub fn rust_counts(root: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for table in ["sessions", "statements", "frames"] {
        let mut n = 0;
        for file in parquet_files(&root.join("v1").join(table)) {
            let reader = parquet::file::reader::SerializedFileReader::new(
                std::fs::File::open(&file).expect("open"),
            )
            .expect("parquet");
            use parquet::file::reader::FileReader;
            n += reader.metadata().file_metadata().num_rows() as u64;
        }
        out.insert(table.to_string(), n);
    }
    out
}

pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(parquet_files(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out.sort();
    out
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// An S3-compatible server (moto) on loopback, killed on drop.
pub struct Moto {
    pub port: u16,
    child: Option<Child>,
}

impl Moto {
    pub fn start() -> Moto {
        let port = free_port();
        let mut m = Moto { port, child: None };
        m.restart();
        m
    }

    /// The server's process id (to SIGSTOP it: a store that hangs).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("moto runs").id()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port; waits until it answers.
    pub fn restart(&mut self) {
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto server starts (pip install 'moto[server]')");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the server (its in-memory buckets are lost unless `stop` is used
    /// with a persistent backend; tests re-create the bucket).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Creates a bucket (and the env settings for object_store).
    pub fn create_bucket(&self, bucket: &str) {
        python(
            r#"
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
s3.create_bucket(Bucket=sys.argv[2])
"#,
            &[&self.endpoint(), bucket],
        );
    }

    /// Store options pointing object_store at this server.
    pub fn options(&self) -> BTreeMap<String, String> {
        s3_options(self.port)
    }

    /// Downloads every object of `bucket` into `dir` (to read it like a local
    /// archive).
    pub fn download(&self, bucket: &str, dir: &Path) {
        python(
            r#"
import sys, os, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
p = s3.get_paginator("list_objects_v2")
for page in p.paginate(Bucket=sys.argv[2]):
    for o in page.get("Contents", []):
        dest = os.path.join(sys.argv[3], o["Key"])
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        s3.download_file(sys.argv[2], o["Key"], dest)
"#,
            &[&self.endpoint(), bucket, dir.to_str().expect("utf-8")],
        );
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP forwarder in front of a server that can be switched off (connections
/// refused and cut) and on again: an outage that keeps the server's data.
pub struct Gate {
    pub port: u16,
    open: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Gate {
    pub fn new(target_port: u16) -> Gate {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let open = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (o, s, c) = (open.clone(), stop.clone(), conns.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if !o.load(Ordering::SeqCst) {
                            drop(client);
                            continue;
                        }
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target_port))
                        else {
                            continue;
                        };
                        let mut list = c.lock().unwrap();
                        list.push(client.try_clone().unwrap());
                        list.push(server.try_clone().unwrap());
                        drop(list);
                        for (mut from, mut to) in [
                            (client.try_clone().unwrap(), server.try_clone().unwrap()),
                            (server, client),
                        ] {
                            std::thread::spawn(move || {
                                let _ = std::io::copy(&mut from, &mut to);
                                let _ = to.shutdown(std::net::Shutdown::Both);
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Gate {
            port,
            open,
            conns,
            stop,
        }
    }

    /// Refuses new connections and cuts the open ones.
    pub fn close(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.close();
    }
}

/// Store options for an S3 endpoint on a loopback port.
pub fn s3_options(port: u16) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "aws_endpoint".to_string(),
            format!("http://127.0.0.1:{port}"),
        ),
        ("aws_allow_http".to_string(), "true".to_string()),
        ("aws_access_key_id".to_string(), "test".to_string()),
        ("aws_secret_access_key".to_string(), "test".to_string()),
        ("aws_region".to_string(), "us-east-1".to_string()),
    ])
}

/// Incompressible bytes (xorshift), for segments that must stay large.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
