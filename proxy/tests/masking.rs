//! Inline masking through the gateway against MariaDB, with real clients: the
//! `mariadb` CLI, PyMySQL (text protocol) and node mysql2 `execute` (binary
//! protocol). A seeded table of synthetic PII; a catalogue of extraction
//! attempts, each of which must return no raw value (or be denied in strict
//! mode); length-encoding boundaries; a masked 20 MiB value; 200,000 masked rows.

mod support;

use support::clients::{mariadb, node, python};
use support::*;

/// Synthetic PII, one row per person: (name, email, phone, card, iban, ssn, nino, ip, api_key, jwt).
const PEOPLE: &[[&str; 10]] = &[
    ["Ana Lopez", "ana.lopez@example.com", "+44 20 7946 0958", "4111 1111 1111 1111", "GB82 WEST 1234 5698 7654 32", "123-45-6789", "AB 12 34 56 C", "192.168.10.7", "AKIAIOSFODNN7EXAMPLE", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"],
    ["Bob Marsh", "bob.marsh@example.org", "(415) 555-0132", "5500005555555559", "DE89370400440532013000", "234-56-7890", "CE 65 43 21 A", "10.20.30.40", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "eyJ0eXAiOiJKV1QifQ.eyJyb2xlIjoiYWRtaW4ifQ.c2lnbmF0dXJlX2hlcmU"],
    ["Chen Wei", "chen.wei+shop@mail.example.net", "+1 212 555 0199", "3782 822463 10005", "FR1420041010050500013M02606", "345-67-8901", "JG 10 20 30 D", "2001:db8::8a2e:370:7334", "xoxb-1234567890-abcdefghij", "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJ0ZXN0In0.abcdefghij"],
    ["Dana Kowalski", "dana.k@example.co.uk", "+48 22 123 45 67", "6011111111111117", "NL91ABNA0417164300", "456-78-9012", "KL 99 88 77 B", "172.16.254.1", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "eyJraWQiOiIxIn0.eyJhdWQiOiJ4In0.sigsigsig"],
];

const CONFIG: &str = r#"
key = "test-masking-key-0123456789"
[roles."*"]
strict = STRICT
[[roles."*".rules]]
name = "customer-email"
table = "customers"
column = "email"
strategy = "partial"
keep_prefix = 1
keep_domain = true
[[roles."*".rules]]
name = "customer-name"
table = "customers"
column = "full_name"
strategy = "hash"
# Views: the server reports the view as a column's original table, so a view
# over protected columns needs rules of its own (docs/masking.md).
[[roles."*".rules]]
name = "customer-name-view"
table = "v_customers"
column = "nm"
strategy = "hash"
[[roles."*".rules]]
name = "card"
table = "customers"
column = "card"
strategy = "partial"
keep_suffix = 4
[[roles."*".rules]]
name = "salary"
column = "salary"
strategy = "bucket"
bucket = 1000
[[roles."*".rules]]
name = "birth"
column = "birth"
strategy = "bucket"
"#;

async fn masking_gateway(strict: bool) -> TestGateway {
    let text = CONFIG.replace("STRICT", if strict { "true" } else { "false" });
    TestGateway::start_with(move |c| {
        c.masking = toml::from_str(&text).expect("masking config");
    })
    .await
}

fn sql_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

async fn seed(db: &TestDb) {
    let mut root = db.root().await;
    root.exec(
        "CREATE TABLE customers (id INT PRIMARY KEY, full_name VARCHAR(100), email VARCHAR(255), \
         phone VARCHAR(40), card VARCHAR(40), iban VARCHAR(50), ssn CHAR(11), nino VARCHAR(20), \
         ip VARCHAR(50), api_key VARCHAR(100), jwt TEXT, note TEXT, salary INT, birth DATE)",
    )
    .await;
    for (i, p) in PEOPLE.iter().enumerate() {
        let note = format!("Called {} about card {}; reach at {}", p[2], p[3], p[1]);
        let values: Vec<String> = p.iter().map(|v| sql_quote(v)).collect();
        root.exec(&format!(
            "INSERT INTO customers VALUES ({}, {}, {}, {}, '19{}-0{}-1{}')",
            i + 1,
            values.join(", "),
            sql_quote(&note),
            50123 + 1111 * i,
            70 + i,
            i + 1,
            i
        ))
        .await;
    }
    root.exec("CREATE TABLE dup_target (v VARCHAR(255))").await;
    root.exec("CREATE TABLE uniq (v VARCHAR(255) UNIQUE)").await;
    root.exec("CREATE VIEW v_customers AS SELECT id, full_name AS nm, email AS em FROM customers")
        .await;
    root.exec("CREATE PROCEDURE get_customers() BEGIN SELECT id, email, full_name FROM customers; SELECT phone FROM customers; END")
        .await;
    root.exec("CREATE PROCEDURE get_email(IN i INT, OUT e VARCHAR(255)) BEGIN SELECT email INTO e FROM customers WHERE id = i; END")
        .await;
    root.quit().await;
}

/// The extraction attempts; each item is run on one connection, in order.
fn catalogue() -> Vec<Vec<&'static str>> {
    let one = |s: &'static str| vec![s];
    vec![
        one("SELECT * FROM customers"),
        one("SELECT email, full_name, card FROM customers"),
        one("SELECT email AS e, full_name AS n FROM customers c"),
        one("SELECT CONCAT(full_name, ' <', email, '>') FROM customers"),
        one("SELECT CONCAT_WS(',', phone, iban, ssn, nino) FROM customers"),
        one("SELECT SUBSTR(email, 1) FROM customers"),
        one("SELECT SUBSTRING(full_name, 2, 5) FROM customers"),
        one("SELECT HEX(email) FROM customers"),
        one("SELECT TO_BASE64(full_name) FROM customers"),
        one("SELECT REVERSE(email) FROM customers"),
        one("SELECT CAST(email AS BINARY) FROM customers"),
        one("SELECT CAST(card AS CHAR) FROM customers"),
        one("SELECT email FROM customers UNION SELECT 'x'"),
        one("SELECT 'x' UNION SELECT full_name FROM customers"),
        one("SELECT (SELECT email FROM customers LIMIT 1) AS e"),
        one("SELECT t.e, t.n FROM (SELECT email AS e, full_name AS n FROM customers) t"),
        one("WITH c AS (SELECT full_name AS n, email AS e FROM customers) SELECT n, e FROM c"),
        one("SELECT nm, em FROM v_customers"),
        one("SELECT GROUP_CONCAT(email) FROM customers"),
        one("SELECT GROUP_CONCAT(full_name SEPARATOR '|') FROM customers"),
        one("SELECT JSON_OBJECT('name', full_name, 'mail', email) FROM customers"),
        one("SELECT JSON_ARRAYAGG(card) FROM customers"),
        one("SELECT MIN(email), MAX(full_name) FROM customers"),
        one("SELECT UPPER(email), LOWER(full_name) FROM customers"),
        one("SELECT phone, iban, ssn, nino, ip FROM customers"),
        one("SELECT api_key, jwt FROM customers"),
        one("SELECT note FROM customers"),
        one("SELECT CONCAT('card: ', card) FROM customers"),
        vec!["SELECT email INTO @e FROM customers LIMIT 1", "SELECT @e"],
        vec!["SET @e = (SELECT email FROM customers LIMIT 1)", "SELECT @e"],
        vec!["INSERT INTO dup_target (v) SELECT email FROM customers", "SELECT v FROM dup_target"],
        one("INSERT INTO uniq (v) SELECT email FROM customers WHERE id = 1 UNION ALL SELECT email FROM customers WHERE id = 1"),
        one("SELECT EXTRACTVALUE('<a/>', CONCAT('/&', email)) FROM customers LIMIT 1"),
        vec!["SELECT CAST(email AS SIGNED) FROM customers", "SHOW WARNINGS"],
        vec!["PREPARE s FROM 'SELECT email, full_name FROM customers'", "EXECUTE s"],
        one("CALL get_customers()"),
        vec!["CALL get_email(2, @out)", "SELECT @out"],
        one("SELECT full_name FROM customers WHERE email LIKE 'a%'"),
        one("SELECT email FROM customers ORDER BY email DESC"),
        one("SELECT DISTINCT SUBSTRING_INDEX(email, '@', 1) FROM customers"),
        one("SELECT id, card + 0 FROM customers"),
        one("SELECT CONCAT(LEFT(email, 3), '...') FROM customers"),
        one("SELECT c.email, d.full_name FROM customers c JOIN customers d ON c.id = d.id"),
        one("SELECT COALESCE(NULL, email), IFNULL(NULL, full_name) FROM customers"),
        one("SELECT IF(id > 0, full_name, NULL) FROM customers"),
        one("SELECT CASE WHEN id > 0 THEN email END FROM customers"),
        one("SELECT JSON_EXTRACT(JSON_OBJECT('a', email), '$.a') FROM customers"),
        one("SELECT salary, birth FROM customers"),
        one("SELECT * FROM (SELECT * FROM customers) x"),
        one("SELECT ssn, phone FROM customers WHERE id = 2"),
    ]
}

/// Every raw value the agent must not see, and for strict mode its
/// transformed forms (hex, base64, reversed).
fn forbidden(strict: bool) -> Vec<String> {
    use base64::Engine;
    let mut out = Vec::new();
    for p in PEOPLE {
        for (i, v) in p.iter().enumerate() {
            // The name is masked by its rule: findable only through lineage
            // and strict mode; the rest by content detectors too.
            if i == 0 && !strict {
                continue;
            }
            out.push(v.to_string());
            if strict {
                out.push(hex::encode_upper(v));
                out.push(base64::engine::general_purpose::STANDARD.encode(v));
                out.push(v.chars().rev().collect());
            }
        }
    }
    out
}

fn leaks<'a>(output: &str, forbidden: &'a [String]) -> Vec<&'a String> {
    let lower = output.to_lowercase();
    forbidden
        .iter()
        .filter(|f| lower.contains(&f.to_lowercase()))
        .collect()
}

async fn run_catalogue(strict: bool, db_name: &str) {
    let gw = masking_gateway(strict).await;
    let db = TestDb::create(db_name).await;
    seed(&db).await;
    let items = catalogue();
    assert!(items.len() >= 40, "{} items", items.len());
    let dir = TempDir::new("chp-mask");
    let file = dir.path().join("catalogue.json");
    std::fs::write(&file, serde_json::to_vec(&items).unwrap()).unwrap();
    let forbidden = forbidden(strict);
    let mut outputs: Vec<(String, String, String)> = Vec::new();

    // mariadb CLI, one process per item.
    for item in &items {
        let out = mariadb(gw.addr, APP_USER, APP_PASSWORD)
            .args(["-D", &db.name, "-e", &item.join(";\n")])
            .run()
            .await;
        outputs.push((
            "mariadb".into(),
            item.join("; "),
            format!("{}{}", out.stdout, out.stderr),
        ));
    }
    // PyMySQL (text protocol).
    let py = python("masking_catalogue.py")
        .connect_to(gw.addr, APP_USER, APP_PASSWORD, Some(&db.name))
        .arg(file.display().to_string())
        .run()
        .await;
    py.assert_success();
    let py: Vec<Vec<String>> = serde_json::from_str(&py.stdout).expect("PyMySQL JSON");
    // node mysql2 execute (binary protocol).
    let js = node("masking_catalogue.js")
        .connect_to(gw.addr, APP_USER, APP_PASSWORD, Some(&db.name))
        .args(["--catalogue", &file.display().to_string()])
        .run()
        .await;
    js.assert_success();
    let js: Vec<Vec<String>> = serde_json::from_str(&js.stdout).expect("mysql2 JSON");
    for (i, item) in items.iter().enumerate() {
        outputs.push(("pymysql".into(), item.join("; "), py[i].join("\n")));
        outputs.push(("mysql2-execute".into(), item.join("; "), js[i].join("\n")));
    }
    let mut failures = Vec::new();
    for (client, sql, out) in &outputs {
        let l = leaks(out, &forbidden);
        if !l.is_empty() {
            failures.push(format!(
                "{client}: {sql}\n  leaked {l:?}\n  got: {}",
                &out[..out.len().min(600)]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} leaks:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Not vacuous: plain selects return masked values, and strict mode denies.
    let all: String = outputs.iter().map(|o| o.2.as_str()).collect();
    assert!(all.contains("a***@example.com"), "partial e-mail");
    assert!(all.contains("***1111"), "partial card");
    assert!(all.contains("[masked:us_ssn]") && all.contains("[masked:phone]"));
    assert!(all.contains("[masked:iban]") && all.contains("[masked:api_key]"));
    assert!(all.contains("51000"), "salary bucket: {}", &all[..0]);
    if strict {
        assert!(all.contains("cannot be masked, so the statement is refused in strict mode"));
    } else {
        assert!(!all.contains("refused in strict mode"));
    }
    // Provenance on the statement rows; the frames hold what was delivered.
    let sessions = gw.sessions();
    let mut masked = Vec::new();
    for s in &sessions {
        for c in gw.commands(&s.session_id) {
            masked.extend(c.masked_columns.clone());
        }
        for f in gw.frames(&s.session_id) {
            if f.direction == chaperone_schemas::event::Direction::ServerToClient {
                let text = String::from_utf8_lossy(&f.payload);
                assert!(
                    !text.contains("ana.lopez@example.com"),
                    "a raw value was recorded in a frame"
                );
            }
        }
    }
    assert!(
        masked.iter().any(|m| m == "email:customer-email:partial"),
        "{masked:?}"
    );
    assert!(
        masked.iter().any(|m| m.contains(":detector:us_ssn:redact")),
        "{masked:?}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_strict_mode() {
    run_catalogue(true, "chp_mask_catalogue_strict").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_detectors_without_strict_mode() {
    run_catalogue(false, "chp_mask_catalogue_loose").await;
}

/// Values across the 250/251 and 65535/65536 length-encoding boundaries, a
/// 20 MiB value and 200,000 rows, masked, through text and binary protocols.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lengths_large_values_and_many_rows() {
    let gw = masking_gateway(false).await;
    let db = TestDb::create("chp_mask_sizes").await;
    let mut root = db.root().await;
    root.exec("CREATE TABLE notes (id INT PRIMARY KEY, body LONGTEXT)")
        .await;
    let suffix = " ssn 123-45-6789";
    let mut lens = Vec::new();
    for n in (228..=240)
        .chain(65510..=65525)
        .chain([0, 1, 16_777_190, 16_777_200])
    {
        lens.push(n);
    }
    for (i, n) in lens.iter().enumerate() {
        root.exec(&format!(
            "INSERT INTO notes VALUES ({i}, CONCAT(REPEAT('x', {n}), '{suffix}'))"
        ))
        .await;
    }
    // 20 MiB, an e-mail address at the end.
    root.exec(
        "INSERT INTO notes VALUES (1000, CONCAT(REPEAT('y', 20971520), ' bob.marsh@example.org'))",
    )
    .await;
    root.exec("CREATE TABLE customers (id INT PRIMARY KEY, email VARCHAR(255))")
        .await;
    root.exec(
        "INSERT INTO customers SELECT seq, CONCAT('u', seq, '@example.com') FROM seq_1_to_200000",
    )
    .await;
    root.quit().await;

    let script = format!(
        r#"
import pymysql, sys, json
conn = pymysql.connect(host="{host}", port={port}, user="{user}", password="{pw}", database="{db}")
c = conn.cursor()
out = {{}}
c.execute("SELECT id, body FROM notes ORDER BY id")
for i, body in c.fetchall():
    out[str(i)] = [len(body), body[-40:], body.count("x") + body.count("y")]
c.execute("SELECT email FROM customers")
rows = c.fetchall()
out["rows"] = len(rows)
out["bad"] = sum(1 for (e,) in rows if e != "u***@example.com")
print(json.dumps(out))
"#,
        host = gw.addr.ip(),
        port = gw.addr.port(),
        user = APP_USER,
        pw = APP_PASSWORD,
        db = db.name
    );
    let py = support::clients::ClientCommand::new("python3")
        .args(["-c", &script])
        .timeout(std::time::Duration::from_secs(300))
        .run()
        .await;
    py.assert_success();
    let v: serde_json::Value = serde_json::from_str(py.stdout.trim()).unwrap();
    for (i, n) in lens.iter().enumerate() {
        let got = &v[i.to_string()];
        assert_eq!(got[2], *n as u64, "row {i}: {got}");
        assert!(
            got[1].as_str().unwrap().ends_with("ssn [masked:us_ssn]"),
            "row {i}: {got}"
        );
    }
    let big = &v["1000"];
    assert_eq!(big[2], 20971520);
    assert!(
        big[1].as_str().unwrap().ends_with(" [masked:email]"),
        "{big}"
    );
    assert_eq!(v["rows"], 200000);
    assert_eq!(v["bad"], 0);

    // Binary protocol: mysql2 execute of the same values.
    let js_script = format!(
        r#"
const mysql = require('mysql2/promise');
(async () => {{
  const c = await mysql.createConnection({{host: '{host}', port: {port}, user: '{user}', password: '{pw}', database: '{db}'}});
  const [rows] = await c.execute('SELECT id, body FROM notes WHERE id < ? ORDER BY id', [2000]);
  const out = {{}};
  for (const r of rows) out[r.id] = [r.body.length, r.body.slice(-40)];
  const [many] = await c.execute('SELECT email FROM customers WHERE id > ?', [0]);
  out.rows = many.length;
  out.bad = many.filter((r) => r.email !== 'u***@example.com').length;
  await c.end();
  process.stdout.write(JSON.stringify(out));
}})().catch((e) => {{ console.error(e); process.exit(1); }});
"#,
        host = gw.addr.ip(),
        port = gw.addr.port(),
        user = APP_USER,
        pw = APP_PASSWORD,
        db = db.name
    );
    let js = node("args.js"); // installs node_modules if needed
    drop(js);
    let js = support::clients::ClientCommand::new("node")
        .args(["-e", &js_script])
        .env(
            "NODE_PATH",
            &support::clients::clients_dir()
                .join("node_modules")
                .display()
                .to_string(),
        )
        .timeout(std::time::Duration::from_secs(300))
        .run()
        .await;
    js.assert_success();
    let v: serde_json::Value = serde_json::from_str(js.stdout.trim()).unwrap();
    for (i, n) in lens.iter().enumerate() {
        let got = &v[i.to_string()];
        assert_eq!(
            got[0],
            (*n + " ssn [masked:us_ssn]".len()) as u64,
            "row {i}: {got}"
        );
    }
    assert_eq!(v["1000"][0], 20971520 + " [masked:email]".len());
    assert_eq!(v["rows"], 200000);
    assert_eq!(v["bad"], 0);
    gw.stop().await;
}
