//! The read side over an archive written by real traffic: the `mariadb` CLI
//! through an in-process gateway recording to a local directory; the catalog's
//! answers checked against DuckDB reading the same files.

// The recorder's test helpers (a temporary archive, moto, fake sessions).
#[path = "../recorder/tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use arrow::record_batch::RecordBatch;
use chaperone_catalog::{self as catalog, Catalog, CatalogOptions, Format, SessionFilter};
use chaperone_proxy::auth::ConfigUsers;
use chaperone_proxy::config::{SecretSource, UserConfig};
use chaperone_proxy::{Config, Gateway};
use chaperone_recorder::Recorder;
use support::*;
use tokio_util::sync::CancellationToken;

const DB: &str = "chp_rec_catalog";

fn inline(password: &str) -> SecretSource {
    SecretSource {
        password: Some(password.to_string()),
        ..Default::default()
    }
}

/// `deploy/chaperone.toml` on an ephemeral port in front of the test MariaDB,
/// with two agents (mysql_native_password, which every client speaks).
fn gateway_config() -> Config {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config = Config::load(&root.join("deploy/chaperone.toml")).expect("deploy config");
    config.gateway.listen = "127.0.0.1:0".parse().expect("address");
    config.gateway.admin_listen = None;
    for t in config.targets.values_mut() {
        t.address = "127.0.0.1:3306".into();
        t.user = "root".into();
        t.password = inline("");
    }
    let target = config.users["app"].target.clone();
    config.users.clear();
    for (user_name, password) in [
        ("billing-agent", "pw-billing"),
        ("report-agent", "pw-report"),
    ] {
        // From TOML, as an operator writes it (fields added later keep their defaults).
        let user: UserConfig = toml::from_str(&format!(
            "target = {target:?}\npassword = {password:?}\nplugin = \"mysql_native_password\""
        ))
        .expect("user config");
        config.users.insert(user_name.to_string(), user);
    }
    config
}

/// Runs SQL with the `mariadb` CLI (bounded by `timeout`); panics on failure.
fn mariadb(port: Option<u16>, user: &str, password: &str, sql: &str) {
    let mut cmd = Command::new("timeout");
    cmd.args([
        "60",
        "mariadb",
        "-h127.0.0.1",
        "--protocol=TCP",
        "--skip-ssl",
    ]);
    match port {
        Some(p) => cmd.arg(format!("-P{p}")),
        None => cmd.arg("-P3306"),
    };
    cmd.arg(format!("-u{user}"));
    if !password.is_empty() {
        cmd.arg(format!("-p{password}"));
    }
    let out = cmd.arg("-e").arg(sql).output().expect("mariadb CLI runs");
    assert!(
        out.status.success(),
        "mariadb {user}: {sql}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn strings(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let col = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let col = col.as_string::<i32>();
        for i in 0..col.len() {
            out.push(col.value(i).to_string());
        }
    }
    out
}

fn count(batches: &[RecordBatch]) -> i64 {
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

/// The same questions asked of DuckDB, reading the files directly.
fn duckdb_answers(archive: &std::path::Path) -> serde_json::Value {
    let script = r#"
import json, sys, duckdb
r = sys.argv[1]
st = f"read_parquet('{r}/v1/statements/*/*/*.parquet', hive_partitioning=true)"
se = f"read_parquet('{r}/v1/sessions/*/*/*.parquet', hive_partitioning=true)"
q = lambda sql: duckdb.sql(sql).fetchall()
print(json.dumps({
  "statements": q(f"SELECT count(*) FROM {st}")[0][0],
  "by_class": dict(q(f"SELECT statement_class, count(*) FROM {st} WHERE statement_class IS NOT NULL GROUP BY 1")),
  "orders_writers": [x[0] for x in q(f"SELECT DISTINCT subject FROM {st} WHERE list_contains(tables_written, 'chp_rec_catalog.orders') ORDER BY 1")],
  "customers_touchers": [x[0] for x in q(f"SELECT DISTINCT subject FROM {st} WHERE list_contains(tables_written, 'chp_rec_catalog.customers') OR list_contains(tables_read, 'chp_rec_catalog.customers') ORDER BY 1")],
  "sessions": q(f"SELECT count(*) FROM {se} WHERE event = 'start'")[0][0],
  "partitions": q(f"SELECT count(DISTINCT date || hour) FROM {st}")[0][0],
}))
"#;
    let text = python(script, &[archive.to_str().expect("utf-8 path")]);
    serde_json::from_str(&text).expect("json")
}

#[tokio::test(flavor = "multi_thread")]
async fn catalog_answers_like_duckdb_over_an_archive_of_real_traffic() {
    let tmp = tempdir("catalog");
    let archive = tmp.path().join("archive");
    // The recorder runs its own threads and runtime: open it off this runtime.
    let recorder = Arc::new(tokio::task::block_in_place(|| {
        Recorder::open(
            config(archive.to_str().unwrap(), &tmp.path().join("spool")),
            "gw-catalog",
        )
        .expect("recorder opens")
    }));
    let gw_config = gateway_config();
    let users = Arc::new(ConfigUsers::from_config(&gw_config).expect("users"));
    let gateway = Gateway::bind(gw_config, users, recorder.clone())
        .await
        .expect("gateway starts");
    let port = gateway.local_addr().port();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(gateway.run(shutdown.clone()));

    mariadb(
        None,
        "root",
        "",
        &format!(
            "DROP DATABASE IF EXISTS {DB}; CREATE DATABASE {DB}; USE {DB};
             CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(20));
             CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT, total INT);
             INSERT INTO customers VALUES (1, 'ann'), (2, 'bob'), (3, 'cy')"
        ),
    );
    let billing = |sql: &str| {
        mariadb(
            Some(port),
            "billing-agent",
            "pw-billing",
            &format!("USE {DB}; {sql}"),
        )
    };
    let report = |sql: &str| {
        mariadb(
            Some(port),
            "report-agent",
            "pw-report",
            &format!("USE {DB}; {sql}"),
        )
    };
    tokio::task::block_in_place(|| {
        billing("INSERT INTO orders VALUES (10, 1, 5), (11, 2, 7); UPDATE orders SET total = total + 1 WHERE id = 10");
        report("SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id; SELECT count(*) FROM orders");
        report("DELETE FROM customers WHERE id = 3; SHOW TABLES");
    });
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(40), task)
        .await
        .expect("gateway stops")
        .expect("no panic");
    assert!(
        tokio::task::block_in_place(|| recorder.flush(Duration::from_secs(30))),
        "uploaded"
    );

    let cat = Catalog::open_location(
        archive.to_str().unwrap(),
        &BTreeMap::new(),
        CatalogOptions::default(),
    )
    .await
    .expect("catalog opens");
    let theirs = duckdb_answers(&archive);

    let n = count(&cat.query("SELECT count(*) FROM statements").await.unwrap());
    assert_eq!(serde_json::json!(n), theirs["statements"]);
    assert!(n >= 7, "{n} statements");
    let by_class = cat
        .query("SELECT statement_class, count(*) FROM statements WHERE statement_class IS NOT NULL GROUP BY 1")
        .await
        .unwrap();
    let mut ours = serde_json::Map::new();
    for b in &by_class {
        let names = b.column(0).as_string::<i32>();
        let counts = b.column(1).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            ours.insert(names.value(i).to_string(), counts.value(i).into());
        }
    }
    assert_eq!(serde_json::Value::Object(ours), theirs["by_class"]);

    // Who wrote to orders, who touched customers: through the table_access view.
    let writers = strings(
        &cat.query("SELECT DISTINCT subject FROM table_access WHERE table_name = 'chp_rec_catalog.orders' AND access = 'write' ORDER BY 1")
            .await
            .unwrap(),
    );
    assert_eq!(writers, vec!["billing-agent"]);
    assert_eq!(serde_json::json!(writers), theirs["orders_writers"]);
    let touchers = strings(
        &cat.query("SELECT DISTINCT subject FROM table_access WHERE table_name = 'chp_rec_catalog.customers' ORDER BY 1")
            .await
            .unwrap(),
    );
    assert_eq!(touchers, vec!["report-agent"]);
    assert_eq!(serde_json::json!(touchers), theirs["customers_touchers"]);

    // Sessions: one per CLI run, with their end and client program joined.
    let sessions = count(
        &cat.query("SELECT count(*) FROM session_list")
            .await
            .unwrap(),
    );
    assert_eq!(sessions, 3);
    assert_eq!(serde_json::json!(sessions), theirs["sessions"]);
    let ended = count(
        &cat.query(
            "SELECT count(*) FROM session_list WHERE end_reason = 'client_quit' AND commands > 0",
        )
        .await
        .unwrap(),
    );
    assert_eq!(ended, 3);
    let unlinked = count(
        &cat.query("SELECT count(*) FROM statement_log WHERE client_program IS NULL")
            .await
            .unwrap(),
    );
    assert_eq!(
        unlinked, 0,
        "every statement joins its session's client program"
    );

    // `chaperone sessions` filters.
    let all = SessionFilter {
        since_ns: Some(chaperone_schemas::event::now_ns() - 3_600_000_000_000),
        limit: 100,
        ..Default::default()
    };
    let ids = |f: &SessionFilter| {
        let sql = catalog::sessions_sql(f);
        let cat = &cat;
        async move {
            cat.query(&sql)
                .await
                .unwrap()
                .iter()
                .map(|b| b.num_rows())
                .sum::<usize>()
        }
    };
    assert_eq!(ids(&all).await, 3);
    let by_agent = SessionFilter {
        agent: Some("report-agent".into()),
        ..all.clone()
    };
    assert_eq!(ids(&by_agent).await, 2);
    let by_table = SessionFilter {
        table: Some("orders".into()),
        ..all.clone()
    };
    assert_eq!(
        ids(&by_table).await,
        2,
        "billing wrote orders, report read it"
    );
    let by_both = SessionFilter {
        agent: Some("billing-agent".into()),
        table: Some("chp_rec_catalog.customers".into()),
        ..all.clone()
    };
    assert_eq!(ids(&by_both).await, 0);
    let future = SessionFilter {
        since_ns: Some(chaperone_schemas::event::now_ns() + 3_600_000_000_000),
        ..all.clone()
    };
    assert_eq!(ids(&future).await, 0);

    // One session by id: the partition hint from the id finds it, with its end.
    let any = cat
        .query("SELECT session_id, commands FROM session_list LIMIT 1")
        .await
        .unwrap();
    let id = arrow::array::cast::as_string_array(any[0].column(0))
        .value(0)
        .to_string();
    assert!(catalog::session_start_ns(&id).is_some(), "{id}");
    let one = cat.query(&catalog::session_sql(&id)).await.unwrap();
    assert_eq!(one.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    let by_view = cat
        .query(&format!(
            "SELECT * FROM session_list WHERE session_id = {}",
            catalog::quote(&id)
        ))
        .await
        .unwrap();
    assert_eq!(
        arrow::util::pretty::pretty_format_batches(&one)
            .unwrap()
            .to_string(),
        arrow::util::pretty::pretty_format_batches(&by_view)
            .unwrap()
            .to_string(),
        "the same row as the view's"
    );
    let missing = cat.query(&catalog::session_sql("nope")).await.unwrap();
    assert_eq!(missing.iter().map(|b| b.num_rows()).sum::<usize>(), 0);

    // Output formats.
    let batches = cat
        .query("SELECT subject, count(*) AS n FROM statements GROUP BY 1 ORDER BY 1")
        .await
        .unwrap();
    let table = catalog::render(&batches, Format::Table).unwrap();
    assert!(table.contains("| billing-agent"), "{table}");
    let csv = catalog::render(&batches, Format::Csv).unwrap();
    assert!(csv.starts_with("subject,n\nbilling-agent,"), "{csv}");
    let json = catalog::render(&batches, Format::Json).unwrap();
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["subject"], "billing-agent");

    // No rows: the columns are still there.
    let none = cat
        .query("SELECT subject FROM statements WHERE subject = 'nobody'")
        .await
        .unwrap();
    assert_eq!(catalog::render(&none, Format::Csv).unwrap(), "subject\n");

    // The archive is read-only through the catalog.
    assert!(cat.query("DROP TABLE statements").await.is_err());
    assert!(cat.query("CREATE TABLE x AS SELECT 1").await.is_err());

    // New segments show up once the listing cache expires.
    let short = Catalog::open_location(
        archive.to_str().unwrap(),
        &BTreeMap::new(),
        CatalogOptions {
            list_cache_ttl: Duration::from_millis(100),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let before = count(&short.query("SELECT count(*) FROM sessions").await.unwrap());
    tokio::task::block_in_place(|| {
        let rec2 = Recorder::open(
            config(archive.to_str().unwrap(), &tmp.path().join("spool2")),
            "gw-catalog-2",
        )
        .expect("second recorder");
        let s = FakeSession::start(&rec2, "late-session", "late-agent");
        s.end(&rec2);
        assert!(rec2.flush(Duration::from_secs(30)));
        rec2.shutdown(Duration::from_secs(10));
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = count(&short.query("SELECT count(*) FROM sessions").await.unwrap());
    assert_eq!(after, before + 2, "the new segment's start and end rows");

    tokio::task::block_in_place(|| recorder.shutdown(Duration::from_secs(10)));
    mariadb(None, "root", "", &format!("DROP DATABASE IF EXISTS {DB}"));
}
