//! The archive's life cycle through the CLI, on an archive recorded from real
//! traffic (`chaperone serve` in front of MariaDB, the mariadb client):
//! `chaperone compact` (queries return the same rows, verify passes), a
//! signing-key rotation (`chaperone keygen`, a keyring with periods), and
//! `chaperone retention` with a legal hold by subject (verify passes and names
//! what retention removed).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{chaperone, free_port, root_sql, terminate, Dir};

fn write_config(dir: &Path, port: u16, key: &Path) -> PathBuf {
    let path = dir.join("chaperone.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[gateway]
id = "lc-gw"
listen = "127.0.0.1:{port}"
shutdown_grace_secs = 5
[targets.db]
address = "127.0.0.1:3306"
user = "root"
password = ""
[users.migrator]
target = "db"
password = "m-secret"
plugin = "mysql_native_password"
[users.auditee]
target = "db"
password = "a-secret"
plugin = "mysql_native_password"
[archive]
store = "{archive}"
spool_dir = "{spool}"
segment_max_age_ms = 300
signing_key_file = "{key}"
"#,
            archive = dir.join("archive").display(),
            spool = dir.join("spool").display(),
            key = key.display(),
        ),
    )
    .unwrap();
    path
}

fn serve(config: &Path, log: &Path, port: u16) -> std::process::Child {
    common::serve(config, log, &[port])
}

/// Runs SQL through the gateway as `user` with the mariadb client.
fn client(port: u16, user: &str, password: &str, sql: &str) {
    let out = Command::new("mariadb")
        .args([
            "-h127.0.0.1",
            &format!("-P{port}"),
            &format!("-u{user}"),
            &format!("-p{password}"),
            "--skip-ssl",
            "-N",
            "-B",
            "-e",
            sql,
        ])
        .output()
        .expect("mariadb client");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn query(archive: &Path, sql: &str) -> String {
    ok(chaperone(&[
        "query",
        "--archive",
        archive.to_str().unwrap(),
        "--format",
        "csv",
        sql,
    ]))
}

/// `public_key = "..."` from `chaperone keygen`'s output.
fn keygen(path: &Path) -> String {
    let text = ok(chaperone(&["keygen", "--out", path.to_str().unwrap()]));
    let line = text
        .lines()
        .find(|l| l.starts_with("public_key = "))
        .unwrap_or_else(|| panic!("{text}"));
    line.trim_start_matches("public_key = ")
        .trim_matches('"')
        .to_string()
}

fn verify(archive: &Path, trust: &[&str]) -> Output {
    let mut args = vec!["verify", "--store", archive.to_str().unwrap()];
    args.extend_from_slice(trust);
    chaperone(&args)
}

fn traffic(port: u16, user: &str, password: &str, rounds: usize) {
    for round in 0..rounds {
        client(
            port,
            user,
            password,
            &format!(
                "INSERT INTO chp_lc_cli.events (who, round) VALUES ('{user}', {round}); \
                 SELECT count(*) FROM chp_lc_cli.events WHERE who = '{user}'"
            ),
        );
        // Let the segment seal (segment_max_age_ms = 300).
        std::thread::sleep(Duration::from_millis(400));
    }
}

fn parquet_count(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            n += parquet_count(&p);
        } else if p.extension().is_some_and(|x| x == "parquet") {
            n += 1;
        }
    }
    n
}

#[test]
fn compaction_key_rotation_and_retention_on_an_archive_of_real_sessions() {
    let dir = Dir::new("cli");
    let archive = dir.0.join("archive");
    let old_key = dir.0.join("old.key");
    let new_key = dir.0.join("new.key");
    let old_public = keygen(&old_key);
    // keygen never overwrites a key.
    assert!(!chaperone(&["keygen", "--out", old_key.to_str().unwrap()])
        .status
        .success());
    let port = free_port();
    let config = write_config(&dir.0, port, &old_key);
    root_sql(
        "DROP DATABASE IF EXISTS chp_lc_cli; CREATE DATABASE chp_lc_cli; \
         CREATE TABLE chp_lc_cli.events (id INT AUTO_INCREMENT PRIMARY KEY, who VARCHAR(20), round INT)",
    );

    // Sessions of two agents over many small segments, with the old key.
    let gw = serve(&config, &dir.0.join("gw1.log"), port);
    traffic(port, "auditee", "a-secret", 2);
    traffic(port, "migrator", "m-secret", 6);
    terminate(gw);
    let before_segments = std::fs::read_dir(archive.join("v1/manifests/lc-gw"))
        .unwrap()
        .count();
    assert!(before_segments >= 6, "{before_segments} segments");

    // Compaction: fewer files, the same rows, verify passes.
    let statements =
        "SELECT session_id, command_index, subject, sql, rows_returned, result_hash FROM statements ORDER BY 1, 2";
    let frames = "SELECT session_id, seq, direction, payload FROM frames ORDER BY 1, 2";
    let (s_before, f_before) = (query(&archive, statements), query(&archive, frames));
    assert!(
        s_before.contains("INSERT INTO chp_lc_cli.events"),
        "{s_before}"
    );
    let files_before = parquet_count(&archive.join("v1"));
    let out = ok(chaperone(&[
        "compact",
        "--archive",
        archive.to_str().unwrap(),
        "--min-age",
        "0s",
        "--signing-key-file",
        old_key.to_str().unwrap(),
    ]));
    assert!(out.contains("gateway lc-gw"), "{out}");
    assert!(parquet_count(&archive.join("v1")) < files_before);
    assert_eq!(query(&archive, statements), s_before);
    assert_eq!(query(&archive, frames), f_before);
    let report = ok(verify(&archive, &["--public-key", &old_public]));
    assert!(
        report.contains("REPLACED BY COMPACTION gateway lc-gw"),
        "{report}"
    );

    // Key rotation: a new key, the gateway restarted with it, more sessions.
    let new_public = keygen(&new_key);
    std::thread::sleep(Duration::from_millis(1100));
    let switch = chrono_now();
    std::thread::sleep(Duration::from_millis(1100));
    write_config(&dir.0, port, &new_key);
    let gw = serve(&config, &dir.0.join("gw2.log"), port);
    traffic(port, "migrator", "m-secret", 2);
    terminate(gw);
    // Pinned to the old key alone, the new manifests fail...
    let out = verify(&archive, &["--public-key", &old_public]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("SIGNATURE INVALID"));
    // ...with both keys, each for its period, everything passes...
    let keyring = dir.0.join("keyring.toml");
    std::fs::write(
        &keyring,
        format!(
            "[[key]]\npublic_key = \"{old_public}\"\nnot_after = \"{switch}\"\nnote = \"retired\"\n\n\
             [[key]]\npublic_key = \"{new_public}\"\nnot_before = \"{switch}\"\n"
        ),
    )
    .unwrap();
    let report = ok(verify(&archive, &["--keyring", keyring.to_str().unwrap()]));
    assert!(report.contains("OK: "), "{report}");
    // ...and the old key outside its period (as if it signed after the switch) fails.
    std::fs::write(
        dir.0.join("early.toml"),
        format!(
            "[[key]]\npublic_key = \"{old_public}\"\nnot_after = \"2000-01-01T00:00:00Z\"\n\n\
             [[key]]\npublic_key = \"{new_public}\"\n"
        ),
    )
    .unwrap();
    let out = verify(
        &archive,
        &["--keyring", dir.0.join("early.toml").to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("outside the period"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Retention: everything goes but the segments holding the held agent's
    // sessions (the compacted ones, which also hold some of migrator's).
    let count = |subject: &str| -> u64 {
        let csv = query(
            &archive,
            &format!("SELECT count(*) AS n FROM statements WHERE subject = '{subject}'"),
        );
        csv.lines().nth(1).unwrap().trim().parse().unwrap()
    };
    let migrator_before = count("migrator");
    let auditee_before = query(
        &archive,
        "SELECT session_id, command_index, sql FROM statements WHERE subject = 'auditee' ORDER BY 1, 2",
    );
    assert!(auditee_before.lines().count() > 2, "{auditee_before}");
    let dry = ok(chaperone(&[
        "retention",
        "--config",
        config.to_str().unwrap(),
        "--older-than",
        "0s",
        "--hold",
        "subject=auditee",
        "--dry-run",
    ]));
    assert!(dry.contains("dry run"), "{dry}");
    let out = chaperone(&[
        "retention",
        "--config",
        config.to_str().unwrap(),
        "--older-than",
        "0s",
        "--hold",
        "subject=auditee",
    ]);
    let stdout = ok(out);
    assert!(stdout.contains("kept under legal hold"), "{stdout}");
    let report = ok(verify(&archive, &["--keyring", keyring.to_str().unwrap()]));
    assert!(
        report.contains("REMOVED BY RETENTION gateway lc-gw"),
        "{report}"
    );
    assert!(
        report.contains("legal holds: ") && report.contains("subject=auditee"),
        "{report}"
    );
    assert_eq!(
        query(
            &archive,
            "SELECT session_id, command_index, sql FROM statements WHERE subject = 'auditee' ORDER BY 1, 2",
        ),
        auditee_before
    );
    let migrator_after = count("migrator");
    assert!(
        0 < migrator_after && migrator_after < migrator_before,
        "{migrator_before} -> {migrator_after}"
    );

    // Bad input: a duration that is not one.
    let out = chaperone(&[
        "retention",
        "--archive",
        archive.to_str().unwrap(),
        "--older-than",
        "ninety days",
        "--dry-run",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a duration"));
}

/// Now as RFC 3339 (UTC, seconds), via `date` to keep the test free of a time crate.
fn chrono_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
