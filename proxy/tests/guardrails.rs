//! Guardrails end to end: real clients (PyMySQL, mysql-connector's binary
//! protocol, the `mariadb` CLI, the gateway's own SQL client for raw
//! COM_FIELD_LIST) through an in-process gateway against MariaDB.
//!
//! - a catalogue of bypass attempts under a "no DDL, no privilege changes, no
//!   file access" policy, every one denied or held, and of legitimate
//!   application SQL, every one untouched;
//! - approval flows: held then approved from the API, denied, timed out, async
//!   mode, two of three approvers, `EXPLAIN` row estimates (text and binary
//!   protocol), webhooks (generic JSON and Slack) to a local receiver, access
//!   requests (connect approval), two gateways sharing a store (a restart, and
//!   replicas) on a directory and on PostgreSQL.
//!
//! Guarded sessions log in upstream as `chp_gr_app`, a MariaDB user with rights
//! on `chp_gr_%` databases only (defence in depth: whatever a bug let through
//! could not reach beyond them, and the assertions on error 1290 would catch it).

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chaperone_approvals::RequestView;
use chaperone_proxy::config::{TargetConfig, UserConfig};
use chaperone_proxy::guardrails::config::{ApprovalsConfig, PolicyConfig};
use chaperone_proxy::Config;
use chaperone_schemas::CommandSummary;
use serde_json::Value;
use support::*;
use tokio_util::sync::CancellationToken;

const UPSTREAM_USER: &str = "chp_gr_app";
const UPSTREAM_PASSWORD: &str = "chp-gr-app-pw";
const PASSWORD: &str = "guarded-pw";
const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-0123456789ab";
const CAROL: &str = "carol-token-0123456789";

/// The limited MariaDB user guarded sessions log in as (once per test binary).
async fn upstream_user() {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let mut root = SqlClient::direct(None).await;
        root.exec(&format!(
            "CREATE USER IF NOT EXISTS '{UPSTREAM_USER}'@'%' IDENTIFIED BY '{UPSTREAM_PASSWORD}'; \
             GRANT ALL PRIVILEGES ON `chp\\_gr\\_%`.* TO '{UPSTREAM_USER}'@'%'"
        ))
        .await;
        root.quit().await;
    })
    .await;
}

/// `[policies.*]` and `[approvals]` from TOML, with the approvers alice, bob
/// and carol (carol is also the identity `carol-agent`).
#[derive(serde::Deserialize)]
struct Guardrails {
    #[serde(default)]
    policies: BTreeMap<String, PolicyConfig>,
    #[serde(default)]
    approvals: Option<ApprovalsConfig>,
}

fn approvals_toml(store: &str, extra: &str) -> String {
    format!(
        r#"
[approvals]
store = "{store}"
poll_interval_ms = 50
claim_ttl_secs = 120
pending_ttl_secs = 120
{extra}
[approvals.approvers.alice]
token = "{ALICE}"
[approvals.approvers.bob]
token = "{BOB}"
[approvals.approvers.carol]
token = "{CAROL}"
identities = ["carol-agent"]
"#
    )
}

/// A gateway with guarded users (`user -> policy`) whose sessions go to the
/// limited upstream user, and its approvals API on an ephemeral port.
struct Guarded {
    gw: TestGateway,
    /// The approvals API's base URL.
    api: String,
    api_stop: CancellationToken,
}

impl Guarded {
    async fn start(guardrails_toml: &str, users: &[(&str, &str)]) -> Guarded {
        Self::start_with(guardrails_toml, users, |_| {}).await
    }

    async fn start_with(
        guardrails_toml: &str,
        users: &[(&str, &str)],
        adjust: impl FnOnce(&mut Config),
    ) -> Guarded {
        upstream_user().await;
        let g: Guardrails = toml::from_str(guardrails_toml).expect("guardrails TOML");
        let users: Vec<(String, String)> = users
            .iter()
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect();
        let gw = TestGateway::start_with(move |c| {
            let target: TargetConfig = toml::from_str(&format!(
                "address = \"{MARIADB_ADDR}\"\nuser = \"{UPSTREAM_USER}\"\npassword = \"{UPSTREAM_PASSWORD}\""
            ))
            .unwrap();
            c.targets.insert("guarded".into(), target);
            for (user, policy) in &users {
                let u: UserConfig = toml::from_str(&format!(
                    "target = \"guarded\"\npassword = \"{PASSWORD}\"\npolicy = \"{policy}\""
                ))
                .unwrap();
                c.users.insert(user.clone(), u);
            }
            c.policies = g.policies;
            c.approvals = g.approvals;
            c.gateway.shutdown_grace_secs = 2;
            adjust(c);
            c.validate().expect("test config is valid");
        })
        .await;
        let api_stop = CancellationToken::new();
        let approvals = gw.shared.guardrails.approvals().cloned();
        let mut api = String::new();
        if let Some(a) = &approvals {
            let stop = api_stop.clone();
            let local = chaperone_proxy::identity::api::serve_router(
                "127.0.0.1:0".parse().unwrap(),
                chaperone_proxy::guardrails::api::router(a.clone()),
                None,
                async move { stop.cancelled().await },
            )
            .await
            .expect("approvals API listens");
            api = format!("http://{local}");
            a.set_api_base(api.clone());
        }
        Guarded { gw, api, api_stop }
    }

    async fn stop(self) {
        self.api_stop.cancel();
        self.gw.stop().await;
    }

    /// The command summaries of every session, in order.
    fn summaries(&self) -> Vec<CommandSummary> {
        self.gw
            .tap
            .events()
            .into_iter()
            .filter_map(|e| match e {
                chaperone_schemas::TapEvent::Command(c) => Some(*c),
                _ => None,
            })
            .collect()
    }

    /// The latest summary of `sql`. The gateway records a command's summary
    /// just after the client has its response, so give it a moment.
    fn summary_of(&self, sql: &str) -> CommandSummary {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(c) = self
                .summaries()
                .into_iter()
                .rev()
                .find(|c| c.sql.as_deref() == Some(sql))
            {
                return c;
            }
            assert!(std::time::Instant::now() < deadline, "no summary for {sql}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `mariadb -e SQL` as `user`, in the background.
    fn cli(&self, user: &str, db: &str, sql: &str) -> tokio::task::JoinHandle<clients::Output> {
        let cmd = clients::mariadb(self.gw.addr, user, PASSWORD)
            .arg(format!("--database={db}"))
            .arg("--comments")
            .arg("-e")
            .arg(sql.to_string());
        tokio::spawn(cmd.run())
    }

    /// Waits for a request in `state` whose SQL is `sql` (or any, for None).
    async fn wait_for(&self, state: &str, sql: Option<&str>) -> RequestView {
        let deadline = tokio::time::Instant::now() + secs(30);
        loop {
            let list = api(
                &self.api,
                "GET",
                &format!("/v1/approvals?state={state}"),
                ALICE,
                None,
            )
            .await;
            assert_eq!(list.0, 200, "{list:?}");
            let views: Vec<RequestView> =
                serde_json::from_value(list.1["approvals"].clone()).unwrap();
            if let Some(v) = views
                .into_iter()
                .find(|v| sql.is_none() || v.request.sql.as_deref() == sql)
            {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {state} request for {sql:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One call to the approvals API: (status, JSON body).
async fn api(
    base: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("{base}{path}");
    let mut req = match method {
        "GET" => client.get(&url),
        _ => client.post(&url),
    };
    if !token.is_empty() {
        req = req.bearer_auth(token);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = within(secs(30), "approvals API call", req.send())
        .await
        .expect("API reachable");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn table_exists(db: &str, table: &str) -> bool {
    let mut root = SqlClient::direct(Some(db)).await;
    let n = root
        .scalar(&format!(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '{db}' AND table_name = '{table}'"
        ))
        .await;
    root.quit().await;
    n.as_deref() == Some("1")
}

async fn count(db: &str, sql: &str) -> i64 {
    let mut root = SqlClient::direct(Some(db)).await;
    let n = root.scalar(sql).await.unwrap_or_default().parse().unwrap();
    root.quit().await;
    n
}

// --- the catalogue --------------------------------------------------------------

/// "No DDL, no privilege changes, no file access", databases `chp_gr_*`, the
/// `secrets` tables off limits, UPDATE / DELETE without WHERE held (async).
const NODDL: &str = r#"
[policies.noddl]
classes = ["read", "write", "transaction", "session"]
databases = ["chp_gr_*"]
deny_tables = ["*.secrets"]
unparsed = "deny"
dynamic_sql = "deny"
[[policies.noddl.approve]]
name = "no-where"
statements = ["without_where"]
[policies.noddl.approval]
mode = "async"
"#;

fn item(name: &str, sql: &str) -> Value {
    serde_json::json!({ "name": name, "sql": sql })
}

fn prepared(name: &str, sql: &str, params: Value) -> Value {
    serde_json::json!({ "name": name, "via": "prepared", "sql": sql, "params": params })
}

fn bypass_attempts(db: &str) -> Vec<Value> {
    let mut v = vec![
        // DDL, spelled every way.
        item("drop", "DROP TABLE orders"),
        item("drop lower case", "drop table orders"),
        item("drop mixed case", "DrOp TaBlE orders"),
        item("drop backticks", "DROP TABLE `orders`"),
        item("drop schema-qualified", &format!("DROP TABLE {db}.orders")),
        item(
            "drop schema-qualified backticks",
            &format!("DROP TABLE `{db}`.`orders`"),
        ),
        item("drop if exists", "DROP TABLE IF EXISTS orders"),
        item("executable comment", "/*!DROP TABLE orders*/"),
        item(
            "versioned executable comment",
            "/*!50000 DROP TABLE orders */",
        ),
        item(
            "MariaDB executable comment",
            "/*M!100100 DROP TABLE orders */",
        ),
        item(
            "executable comment after a select",
            "SELECT 1 /*!; DROP TABLE orders */",
        ),
        item("comments between keywords", "DROP/**/TABLE/**/orders"),
        item("tabs", "DROP\tTABLE\torders"),
        item("bare CR", "DROP\rTABLE orders"),
        item("newline", "DROP\nTABLE\norders"),
        item("hash comment first", "# just a comment\nDROP TABLE orders"),
        item("dash comment first", "-- just a comment\nDROP TABLE orders"),
        item("block comment first", "/* harmless */ DROP TABLE orders"),
        item("no-break space", "DROP\u{a0}TABLE orders"),
        item("ideographic space", "DROP\u{3000}TABLE orders"),
        item("stacked", "SELECT 1; DROP TABLE orders"),
        item("stacked no spaces", "SELECT 1;DROP TABLE orders;"),
        item("double dash is minus", "SELECT 1 --1; DROP TABLE orders"),
        item(
            "stacked in executable comment",
            "SELECT 1;\n/*!40101 DROP TABLE orders */;",
        ),
        item(
            "parenthesised then stacked",
            "(SELECT 1); DROP TABLE orders",
        ),
        item("truncate", "TRUNCATE orders"),
        item("truncate table", "TRUNCATE TABLE orders"),
        item("alter", "ALTER TABLE orders ADD COLUMN x INT"),
        item("create table", "CREATE TABLE t2 (a INT)"),
        item(
            "create temporary table",
            "CREATE TEMPORARY TABLE t3 (a INT)",
        ),
        item("create index", "CREATE INDEX i_total ON orders (total)"),
        item("rename", "RENAME TABLE orders TO orders2"),
        item("drop database", &format!("DROP DATABASE {db}")),
        item("create database", "CREATE DATABASE chp_gr_evil"),
        item(
            "create trigger",
            "CREATE TRIGGER tr BEFORE INSERT ON orders FOR EACH ROW SET NEW.total = 0",
        ),
        item(
            "set statement for",
            "SET STATEMENT max_statement_time=100 FOR DROP TABLE orders",
        ),
        // Privileges.
        item("grant", "GRANT ALL ON *.* TO 'chp_gr_x'@'%'"),
        item("revoke", "REVOKE ALL PRIVILEGES ON *.* FROM 'chp_gr_x'@'%'"),
        item(
            "create user",
            "CREATE USER 'chp_gr_x'@'%' IDENTIFIED BY 'pw'",
        ),
        item("create or replace user", "CREATE OR REPLACE USER chp_gr_x"),
        item("drop user", "DROP USER chp_gr_nobody"),
        item(
            "set password",
            "SET PASSWORD FOR 'chp_gr_nobody'@'%' = PASSWORD('x')",
        ),
        item("flush privileges", "FLUSH PRIVILEGES"),
        item(
            "install plugin",
            "INSTALL PLUGIN chp_gr_x SONAME 'chp_gr_x.so'",
        ),
        // Files.
        item(
            "into outfile",
            "SELECT * FROM orders INTO OUTFILE '/tmp/chp_gr_out1'",
        ),
        item(
            "into outfile before from",
            "SELECT * INTO OUTFILE '/tmp/chp_gr_out2' FROM orders",
        ),
        item(
            "into dumpfile",
            "SELECT * FROM orders LIMIT 1 INTO DUMPFILE '/tmp/chp_gr_out3'",
        ),
        item(
            "into outfile lower case",
            "select * from orders into outfile '/tmp/chp_gr_out4'",
        ),
        item(
            "into outfile in executable comment",
            "SELECT * FROM orders /*!INTO OUTFILE '/tmp/chp_gr_out5'*/",
        ),
        item(
            "into comment outfile",
            "SELECT * FROM orders INTO/**/OUTFILE '/tmp/chp_gr_out6'",
        ),
        item(
            "into newline outfile",
            "SELECT * FROM orders INTO\nOUTFILE '/tmp/chp_gr_out7'",
        ),
        item(
            "union into outfile",
            "SELECT 1 UNION SELECT 2 INTO OUTFILE '/tmp/chp_gr_out8'",
        ),
        item(
            "cte into outfile",
            "WITH x AS (SELECT 1 AS a) SELECT a FROM x INTO OUTFILE '/tmp/chp_gr_out9'",
        ),
        item("load_file", "SELECT LOAD_FILE('/etc/passwd')"),
        item("load_file spaced", "SELECT load_file ('/etc/passwd')"),
        item("load_file backticks", "SELECT `load_file`('/etc/passwd')"),
        item(
            "load_file in where",
            "SELECT * FROM orders WHERE status = LOAD_FILE('/etc/hostname')",
        ),
        item(
            "load data",
            "LOAD DATA INFILE '/etc/passwd' INTO TABLE orders",
        ),
        item(
            "load data local",
            "LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE orders",
        ),
        item(
            "load xml",
            "LOAD XML INFILE '/tmp/chp_gr.xml' INTO TABLE orders",
        ),
        // Server administration.
        item("handler", "HANDLER orders OPEN"),
        item(
            "set global",
            "SET GLOBAL max_connections = @@global.max_connections",
        ),
        item(
            "set @@global",
            "SET @@global.max_connections = @@global.max_connections",
        ),
        item("sql_log_bin", "SET sql_log_bin = 0"),
        item("@@session.sql_log_bin", "SET @@session.sql_log_bin = 0"),
        item("kill another connection", "KILL 999999"),
        item("kill in a stacked packet", "SELECT 1; KILL QUERY 999999"),
        item("shutdown", "SHUTDOWN"),
        item("sleep", "SELECT SLEEP(5)"),
        item("benchmark", "SELECT BENCHMARK(100000000, MD5('a'))"),
        item("get_lock", "SELECT GET_LOCK('chp_gr', 10)"),
        item("do sleep", "DO SLEEP(5)"),
        // Dynamic SQL and procedures.
        item(
            "prepare from variable",
            "SET @q = 'DROP TABLE orders'; PREPARE s FROM @q; EXECUTE s",
        ),
        item("prepare from literal", "PREPARE s FROM 'DROP TABLE orders'"),
        item("execute immediate", "EXECUTE IMMEDIATE 'DROP TABLE orders'"),
        item(
            "execute immediate concat",
            "EXECUTE IMMEDIATE CONCAT('DROP ', 'TABLE orders')",
        ),
        item("call", "CALL chp_gr_drop_orders()"),
        item(
            "call qualified",
            &format!("CALL `{db}`.chp_gr_drop_orders()"),
        ),
        // Databases and tables.
        item("use another database", "USE mysql"),
        item("use backticks", "USE `mysql`"),
        item("use in a stacked packet", &format!("SELECT 1; USE {db}")),
        item("other database qualified", "SELECT * FROM mysql.user"),
        item("other database backticks", "SELECT * FROM `mysql`.`user`"),
        item("denied table", "SELECT * FROM secrets"),
        item("denied table upper case", "SELECT * FROM SECRETS"),
        item(
            "denied table joined",
            "SELECT * FROM orders JOIN secrets ON 1 = 1",
        ),
        item(
            "denied table in a subquery",
            "SELECT (SELECT token FROM secrets LIMIT 1)",
        ),
        item(
            "denied table copied",
            "INSERT INTO orders (id, status) SELECT 1000, token FROM secrets",
        ),
        // Held for approval (async: the client gets the request id at once).
        item("delete without where", "DELETE FROM orders"),
        item("update without where", "UPDATE orders SET total = 0"),
        item(
            "update where 1=1",
            "UPDATE orders SET total = 0 WHERE 1 = 1",
        ),
        // Texts that read differently with other sql_modes.
        item(
            "ANSI_QUOTES backslash",
            "SET SESSION sql_mode = 'ANSI_QUOTES'; SELECT \"a\\\"; DROP TABLE orders; -- \"",
        ),
        serde_json::json!({
            "name": "NO_BACKSLASH_ESCAPES backslash",
            "setup": ["SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'"],
            "sql": "SELECT 'a\\' ; DROP TABLE orders; -- '"
        }),
        // The binary protocol: judged at PREPARE.
        prepared("prepared drop", "DROP TABLE orders", serde_json::json!([])),
        prepared(
            "prepared denied table",
            "SELECT * FROM secrets WHERE id = ?",
            serde_json::json!([1]),
        ),
        prepared(
            "prepared into outfile",
            "SELECT * FROM orders WHERE id = ? INTO OUTFILE '/tmp/chp_gr_out10'",
            serde_json::json!([1]),
        ),
        prepared(
            "prepared delete without where",
            "DELETE FROM orders",
            serde_json::json!([]),
        ),
        // COM_INIT_DB.
        serde_json::json!({ "name": "COM_INIT_DB mysql", "via": "init_db", "sql": "mysql" }),
        serde_json::json!({ "name": "COM_INIT_DB information_schema", "via": "init_db", "sql": "information_schema" }),
    ];
    for (i, x) in v.iter_mut().enumerate() {
        x["index"] = i.into();
    }
    v
}

fn legitimate(db: &str) -> Vec<Value> {
    vec![
        item("select 1", "SELECT 1"),
        item("select all", "SELECT * FROM orders"),
        item("join", "SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id"),
        item("left join", "SELECT c.name, o.total FROM customers c LEFT JOIN orders o ON o.customer_id = c.id"),
        item("in list", "SELECT * FROM orders WHERE id IN (1, 2, 3)"),
        item("in subquery", "SELECT * FROM orders WHERE customer_id IN (SELECT id FROM customers WHERE name LIKE 'A%')"),
        item("exists", "SELECT * FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id)"),
        item("cte", "WITH big AS (SELECT * FROM orders WHERE total > 10) SELECT COUNT(*) FROM big"),
        item("recursive cte", "WITH RECURSIVE seq (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < 5) SELECT * FROM seq"),
        item("row_number", "SELECT id, ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY total DESC) AS rn FROM orders"),
        item("running sum", "SELECT id, SUM(total) OVER (ORDER BY id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM orders"),
        item("rank", "SELECT id, RANK() OVER (ORDER BY total) FROM orders"),
        item("json_extract", "SELECT JSON_EXTRACT(doc, '$.tag') FROM orders"),
        item("json_unquote", "SELECT JSON_UNQUOTE(JSON_EXTRACT(doc, '$.tag')) FROM orders WHERE JSON_EXTRACT(doc, '$.n') > 1"),
        item("json_object", "SELECT JSON_OBJECT('id', id, 'total', total) FROM orders"),
        item("json_arrayagg", "SELECT JSON_ARRAYAGG(id) FROM orders"),
        item("json_contains", "SELECT id FROM orders WHERE JSON_CONTAINS(doc, '\"x\"', '$.tags')"),
        item("string with DROP", "SELECT 'DROP TABLE orders' AS s"),
        item("where with drop table", "SELECT * FROM orders WHERE status = 'drop table'"),
        item("double-quoted TRUNCATE", "SELECT \"TRUNCATE orders\""),
        item("string with INTO OUTFILE", "SELECT 'x INTO OUTFILE /tmp/x' AS s"),
        item("string with LOAD_FILE", "SELECT 'LOAD_FILE(1)' AS s"),
        item("like GRANT", "SELECT * FROM orders WHERE status LIKE '%GRANT%'"),
        item("string with stacked statement", "SELECT 'a; DROP TABLE orders; --' AS s"),
        item("insert", "INSERT INTO orders (id, customer_id, total, status) VALUES (101, 1, 5.5, 'new')"),
        item("insert on duplicate key", "INSERT INTO orders (id, customer_id, total, status) VALUES (1, 1, 9, 'new') ON DUPLICATE KEY UPDATE total = total + 1"),
        item("replace", "REPLACE INTO orders (id, customer_id, total, status) VALUES (102, 2, 1, 'new')"),
        item("update by id", "UPDATE orders SET status = 'paid' WHERE id = 1"),
        item("delete by id", "DELETE FROM orders WHERE id = 9999"),
        item("delete with subquery", "DELETE FROM orders WHERE id IN (SELECT id FROM (SELECT id FROM orders WHERE total < 0) x)"),
        item("insert select", "INSERT INTO orders (id, customer_id, total, status) SELECT id + 1000, customer_id, total, status FROM orders WHERE id = 2"),
        item("transaction", "BEGIN; UPDATE orders SET total = total + 1 WHERE id = 2; COMMIT"),
        item("start transaction", "START TRANSACTION"),
        item("user variables", "SET @x = 1; SELECT @x"),
        item("set names", "SET NAMES utf8mb4"),
        item("set autocommit", "SET autocommit = 1"),
        item("set sql_mode", "SET SESSION sql_mode = 'STRICT_TRANS_TABLES'"),
        item("show tables", "SHOW TABLES"),
        item("show columns", "SHOW COLUMNS FROM orders"),
        item("describe", "DESCRIBE orders"),
        item("explain", "EXPLAIN SELECT * FROM orders WHERE id = 1"),
        item("group by having", "SELECT status, COUNT(*) FROM orders GROUP BY status HAVING COUNT(*) > 0"),
        item("order limit offset", "SELECT * FROM orders ORDER BY id LIMIT 10 OFFSET 1"),
        item("union all", "SELECT id FROM orders UNION ALL SELECT id FROM customers"),
        item("case", "SELECT CASE WHEN total > 10 THEN 'big' ELSE 'small' END FROM orders"),
        item("dates", "SELECT NOW(), CURDATE(), DATE_ADD(NOW(), INTERVAL 1 DAY)"),
        item("concat dashes", "SELECT CONCAT(name, ' -- not a comment') FROM customers"),
        item("comment text", "SELECT '/* not a comment */'"),
        item("trailing dash comment", "SELECT 1 -- trailing comment"),
        item("trailing hash comment", "SELECT 1 # trailing comment"),
        item("leading block comment", "/* leading comment */ SELECT 1"),
        item("for update", "SELECT * FROM orders WHERE id = 1 FOR UPDATE"),
        item("select into variable", "SELECT id INTO @v FROM orders WHERE id = 1"),
        item("escaped quotes", "SELECT 'it''s', 'back\\\\slash', 'it\\'s'"),
        item("backticks", "SELECT `status` FROM `orders`"),
        item("schema-qualified", &format!("SELECT {db}.orders.id FROM {db}.orders")),
        item("scalar subquery", "SELECT * FROM orders o WHERE total > (SELECT AVG(total) FROM orders)"),
        item("group_concat", "SELECT GROUP_CONCAT(status) FROM orders"),
        item("multi select", "SELECT 1; SELECT 2"),
        item("use own database", &format!("USE {db}")),
        item("lock tables", "LOCK TABLES orders READ; UNLOCK TABLES"),
        prepared("prepared select", "SELECT * FROM orders WHERE id = ?", serde_json::json!([1])),
        prepared("prepared insert", "INSERT INTO orders (id, customer_id, total, status) VALUES (?, ?, ?, ?)", serde_json::json!([103, 1, 2.5, "new"])),
        prepared("prepared update", "UPDATE orders SET total = ? WHERE id = ?", serde_json::json!([7, 2])),
        prepared("prepared string with DROP", "SELECT ? AS s", serde_json::json!(["DROP TABLE orders"])),
        serde_json::json!({ "name": "COM_INIT_DB own database", "via": "init_db", "sql": db }),
    ]
}

async fn catalogue_db(name: &str) -> TestDb {
    let db = TestDb::create(name).await;
    let mut root = db.root().await;
    root.exec(
        "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(50)); \
         CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT, total DECIMAL(10,2), status VARCHAR(20), doc JSON); \
         CREATE TABLE secrets (id INT PRIMARY KEY, token VARCHAR(50)); \
         INSERT INTO customers VALUES (1, 'Alice'), (2, 'Bob'); \
         INSERT INTO orders VALUES (1, 1, 12.5, 'new', '{\"tag\": \"a\", \"n\": 2, \"tags\": [\"x\"]}'), \
           (2, 2, 3, 'paid', '{\"tag\": \"b\", \"n\": 1, \"tags\": []}'), (3, 1, 40, 'new', NULL); \
         INSERT INTO secrets VALUES (1, 's3cret'); \
         CREATE PROCEDURE chp_gr_drop_orders() DROP TABLE orders",
    )
    .await;
    root.quit().await;
    db
}

async fn run_catalogue(gw: &TestGateway, user: &str, db: &str, items: &[Value]) -> Vec<Value> {
    let dir = TempDir::new("chp-gr-catalogue");
    let file = dir.path().join("catalogue.json");
    std::fs::write(&file, serde_json::to_vec(items).unwrap()).unwrap();
    let out = clients::python("guardrails_catalogue.py")
        .connect_to(gw.addr, user, PASSWORD, Some(db))
        .arg(file.display().to_string())
        .run()
        .await;
    out.assert_success();
    out.json().as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn bypass_attempts_are_denied_or_held_and_application_sql_passes() {
    let db = catalogue_db("chp_gr_catalogue").await;
    let store = TempDir::new("chp-gr-store");
    let g = Guarded::start(
        &format!(
            "{NODDL}{}",
            approvals_toml(&store.path().display().to_string(), "")
        ),
        &[("guarded", "noddl")],
    )
    .await;
    let attempts = bypass_attempts(&db.name);
    let legit = legitimate(&db.name);
    assert!(attempts.len() >= 40 && legit.len() >= 40);

    let results = run_catalogue(&g.gw, "guarded", &db.name, &attempts).await;
    let mut failures = Vec::new();
    for (item, r) in attempts.iter().zip(&results) {
        let code = r["error"][0].as_u64();
        let message = r["error"][1].as_str().unwrap_or_default();
        if code != Some(1290) || !message.contains("Chaperone") {
            failures.push(format!("{}: {r}", item["name"]));
        }
    }
    assert!(
        failures.is_empty(),
        "not refused by the gateway:\n{}",
        failures.join("\n")
    );
    // The held ones say so, with a request id.
    for r in &results {
        if r["name"].as_str().unwrap().contains("without where") {
            let m = r["error"][1].as_str().unwrap();
            assert!(m.contains("held for approval") && m.contains("apr_"), "{m}");
        }
    }

    let results = run_catalogue(&g.gw, "guarded", &db.name, &legit).await;
    let failures: Vec<String> = legit
        .iter()
        .zip(&results)
        .filter(|(_, r)| r["ok"] != Value::Bool(true))
        .map(|(i, r)| format!("{}: {r}", i["name"]))
        .collect();
    assert!(
        failures.is_empty(),
        "legitimate SQL refused:\n{}",
        failures.join("\n")
    );

    // COM_FIELD_LIST, by hand: the denied table, then an allowed one.
    let mut c = SqlClient::via(g.gw.addr, "guarded", PASSWORD, Some(&db.name))
        .await
        .unwrap();
    let mut p = vec![chaperone_mysql::protocol::command::COM_FIELD_LIST];
    p.extend_from_slice(b"secrets\0");
    let reply = c.command(p).await.unwrap();
    assert_eq!(reply.error().map(|e| e.code), Some(1290), "{reply:?}");
    let mut p = vec![chaperone_mysql::protocol::command::COM_FIELD_LIST];
    p.extend_from_slice(b"orders\0");
    assert!(c.command(p).await.unwrap().error().is_none());
    // COM_SET_OPTION turns multi-statements on mid-session: still judged one by one.
    let reply = c
        .command(vec![
            chaperone_mysql::protocol::command::COM_SET_OPTION,
            0,
            0,
        ])
        .await
        .unwrap();
    assert!(reply.error().is_none(), "{reply:?}");
    let err = c.query("SELECT 1; DROP TABLE orders").await.unwrap_err();
    assert!(err.to_string().contains("1290"), "{err}");
    c.quit().await;
    let s = g
        .summaries()
        .into_iter()
        .find(|s| s.command == "COM_SET_OPTION")
        .expect("COM_SET_OPTION recorded");
    assert!(s.verdict_reason.unwrap().contains("multi-statements on"));

    // Nothing happened that should not have.
    for t in ["orders", "customers", "secrets"] {
        assert!(table_exists(&db.name, t).await, "{t} is gone");
    }
    for t in ["orders2", "t2"] {
        assert!(!table_exists(&db.name, t).await, "{t} was created");
    }
    assert_eq!(
        count(&db.name, "SELECT COUNT(*) FROM orders WHERE total = 0").await,
        0
    );
    for i in 1..=10 {
        assert!(!std::path::Path::new(&format!("/tmp/chp_gr_out{i}")).exists());
    }
    // The record says what was decided, by which rule.
    let s = g.summary_of("SELECT * FROM orders INTO OUTFILE '/tmp/chp_gr_out1'");
    assert_eq!(s.verdict.as_deref(), Some("denied"));
    assert_eq!(s.policy.as_deref(), Some("noddl"));
    assert_eq!(s.policy_rule.as_deref(), Some("feature:file"));
    assert!(s.refused);
    let s = g.summary_of("DELETE FROM orders");
    assert_eq!(s.verdict.as_deref(), Some("pending_approval"));
    assert!(s
        .approval_id
        .as_deref()
        .is_some_and(|id| id.starts_with("apr_")));
    let s = g.summary_of("SELECT * FROM orders");
    assert_eq!(s.verdict.as_deref(), Some("allowed"));
    assert!(!s.refused);
    g.stop().await;
}

// --- approval flows -------------------------------------------------------------

const MIGRATIONS: &str = r#"
[policies.migrations]
classes = ["read", "write", "transaction", "session"]
databases = ["chp_gr_*"]
[[policies.migrations.approve]]
name = "ddl"
statements = ["drop", "truncate", "alter", "create", "rename"]
[[policies.migrations.approve]]
name = "big-delete"
max_rows = 100
[policies.migrations.approval]
timeout_secs = 30
"#;

async fn flow_db(name: &str, rows: usize) -> TestDb {
    let db = TestDb::create(name).await;
    let mut root = db.root().await;
    root.exec("CREATE TABLE t1 (id INT PRIMARY KEY, v INT); CREATE TABLE t2 (id INT PRIMARY KEY)")
        .await;
    let values: Vec<String> = (1..=rows).map(|i| format!("({i}, {i})")).collect();
    if !values.is_empty() {
        root.exec(&format!("INSERT INTO t1 VALUES {}", values.join(",")))
            .await;
    }
    root.exec("ANALYZE TABLE t1").await;
    root.quit().await;
    db
}

#[tokio::test(flavor = "multi_thread")]
async fn held_statements_approved_denied_and_timed_out_through_the_api() {
    let db = flow_db("chp_gr_flows", 10).await;
    let store = TempDir::new("chp-gr-store");
    let short = r#"
[policies.short]
classes = ["read", "write", "transaction", "session"]
[[policies.short.approve]]
name = "ddl"
statements = ["drop"]
[policies.short.approval]
timeout_secs = 2
"#;
    let g = Guarded::start(
        &format!(
            "{MIGRATIONS}{short}{}",
            approvals_toml(&store.path().display().to_string(), "")
        ),
        &[
            ("migrator", "migrations"),
            ("carol-agent", "migrations"),
            ("hasty", "short"),
        ],
    )
    .await;

    // Held, then approved: the statement runs and the client gets its result.
    let client = g.cli("migrator", &db.name, "DROP TABLE t2");
    let v = g.wait_for("pending", Some("DROP TABLE t2")).await;
    let id = v.request.id.clone();
    assert_eq!(v.request.rule, "ddl");
    assert_eq!(v.request.requester.subject, "migrator");
    assert_eq!(v.request.target, "guarded");
    assert_eq!(v.request.database.as_deref(), Some(db.name.as_str()));
    assert_eq!(v.request.tables, [format!("{}.t2", db.name)]);
    assert_eq!(
        v.url.as_deref(),
        Some(&*format!("{}/v1/approvals/{id}", g.api))
    );
    // Without a token, with a wrong one: 401.
    assert_eq!(api(&g.api, "GET", "/v1/approvals", "", None).await.0, 401);
    assert_eq!(
        api(
            &g.api,
            "POST",
            &format!("/v1/approvals/{id}/approve"),
            "nope",
            None
        )
        .await
        .0,
        401
    );
    assert_eq!(
        api(&g.api, "GET", "/v1/approvals/apr_0000", ALICE, None)
            .await
            .0,
        404
    );
    assert!(table_exists(&db.name, "t2").await, "held, not run");
    let (status, body) = api(
        &g.api,
        "POST",
        &format!("/v1/approvals/{id}/approve"),
        ALICE,
        Some(serde_json::json!({ "comment": "planned migration" })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["state"] == "approved" || body["state"] == "used",
        "{body}"
    );
    let out = within(secs(30), "the held client returns", client)
        .await
        .unwrap();
    out.assert_success();
    assert!(!table_exists(&db.name, "t2").await, "approved DROP ran");
    let s = g.summary_of("DROP TABLE t2");
    assert_eq!(s.verdict.as_deref(), Some("approved"));
    assert_eq!(s.approval_id.as_deref(), Some(id.as_str()));
    assert_eq!(s.approvers, ["alice"]);
    assert!(s.approval_wait_ms.is_some_and(|ms| ms > 0));
    assert_eq!(s.policy_rule.as_deref(), Some("ddl"));
    // Decided requests stay decided; the approval was used once.
    assert_eq!(
        api(
            &g.api,
            "POST",
            &format!("/v1/approvals/{id}/deny"),
            BOB,
            None
        )
        .await
        .0,
        409
    );
    let (_, v) = api(&g.api, "GET", &format!("/v1/approvals/{id}"), BOB, None).await;
    assert_eq!(v["state"], "used");

    // An approver cannot approve their own request (carol is carol-agent).
    let client = g.cli("carol-agent", &db.name, "ALTER TABLE t1 ADD COLUMN c INT");
    let v = g
        .wait_for("pending", Some("ALTER TABLE t1 ADD COLUMN c INT"))
        .await;
    let (status, body) = api(
        &g.api,
        "POST",
        &format!("/v1/approvals/{}/approve", v.request.id),
        CAROL,
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("own"));
    // Denied: a clear error with the request id and the reason.
    let (status, _) = api(
        &g.api,
        "POST",
        &format!("/v1/approvals/{}/deny", v.request.id),
        BOB,
        Some(serde_json::json!({ "reason": "not during business hours" })),
    )
    .await;
    assert_eq!(status, 200);
    let out = within(secs(30), "the denied client returns", client)
        .await
        .unwrap();
    out.assert_failure_with("not during business hours");
    out.assert_failure_with(&v.request.id);
    assert_eq!(
        count(&db.name, &format!("SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = '{}' AND table_name = 't1' AND column_name = 'c'", db.name)).await,
        0
    );
    let s = g.summary_of("ALTER TABLE t1 ADD COLUMN c INT");
    assert_eq!(s.verdict.as_deref(), Some("approval_denied"));
    assert_eq!(s.approvers, ["bob"]);

    // Timed out.
    let started = std::time::Instant::now();
    let out = g.cli("hasty", &db.name, "DROP TABLE t1").await.unwrap();
    out.assert_failure_with("was not approved within 2 s");
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(table_exists(&db.name, "t1").await);
    let s = g.summary_of("DROP TABLE t1");
    assert_eq!(s.verdict.as_deref(), Some("approval_timeout"));
    let expired = g.wait_for("expired", Some("DROP TABLE t1")).await;
    assert_eq!(
        expired.decision.unwrap().reason.as_deref(),
        Some("the client's wait timed out")
    );
    // Too late to approve.
    assert_eq!(
        api(
            &g.api,
            "POST",
            &format!("/v1/approvals/{}/approve", expired.request.id),
            ALICE,
            None
        )
        .await
        .0,
        409
    );
    g.stop().await;
}

/// A real client killed while its statement is held: the gateway notices at
/// once (not when someone decides, nor at the policy's 30 s timeout), withdraws
/// the request, records the statement and the session's end, and the statement
/// never runs, even when an approver acts on the request afterwards. Text
/// protocol (`mariadb` CLI, held at COM_QUERY) and binary protocol
/// (mysql-connector, held at COM_STMT_PREPARE).
#[tokio::test(flavor = "multi_thread")]
async fn a_client_killed_while_held_is_noticed_and_its_request_withdrawn() {
    let db = flow_db("chp_gr_gone", 10).await;
    let store = TempDir::new("chp-gr-store");
    let g = Guarded::start(
        &format!(
            "{MIGRATIONS}{}",
            approvals_toml(&store.path().display().to_string(), "")
        ),
        &[("migrator", "migrations")],
    )
    .await;
    let dir = TempDir::new("chp-gr-gone");
    let catalogue = dir.path().join("held.json");
    std::fs::write(
        &catalogue,
        serde_json::to_vec(&[prepared("held", "DROP TABLE t1", serde_json::json!([]))]).unwrap(),
    )
    .unwrap();
    let clients: [(&str, Vec<String>, &str); 2] = [
        (
            "mariadb",
            vec![
                "--protocol=TCP".into(),
                format!("--host={}", g.gw.addr.ip()),
                format!("--port={}", g.gw.addr.port()),
                "--user=migrator".into(),
                format!("--password={PASSWORD}"),
                format!("--database={}", db.name),
                "-e".into(),
                "DROP TABLE t2".into(),
            ],
            "DROP TABLE t2",
        ),
        (
            "python3",
            vec![
                clients::clients_dir()
                    .join("guardrails_catalogue.py")
                    .display()
                    .to_string(),
                "--host".into(),
                g.gw.addr.ip().to_string(),
                "--port".into(),
                g.gw.addr.port().to_string(),
                "--user".into(),
                "migrator".into(),
                "--password".into(),
                PASSWORD.into(),
                "--database".into(),
                db.name.clone(),
                catalogue.display().to_string(),
            ],
            "DROP TABLE t1",
        ),
    ];
    for (program, args, sql) in clients {
        let mut child = tokio::process::Command::new(program)
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        let held = g.wait_for("pending", Some(sql)).await;
        let id = held.request.id.clone();
        // SIGKILL: the client says nothing, its socket just closes.
        child.start_kill().unwrap();
        child.wait().await.unwrap();

        let withdrawn = g.wait_for("expired", Some(sql)).await;
        assert_eq!(withdrawn.request.id, id);
        assert_eq!(
            withdrawn
                .decision
                .as_ref()
                .and_then(|d| d.reason.as_deref()),
            Some("the client disconnected while waiting"),
            "{program}: withdrawn because the client left, not at the timeout"
        );
        let s = g.summary_of(sql);
        assert_eq!(s.verdict.as_deref(), Some("approval_abandoned"), "{s:?}");
        assert_eq!(s.approval_id.as_deref(), Some(id.as_str()));
        assert!(
            s.verdict_reason
                .as_deref()
                .is_some_and(|r| r.contains("disconnected") && r.contains("withdrawn")),
            "{s:?}"
        );
        wait_until(secs(10), "the session's end is recorded", || {
            g.gw.session_ends()
                .iter()
                .any(|e| e.session_id == s.session_id && e.reason == "client_disconnected")
        })
        .await;
        // Too late to approve; nothing ran.
        let (status, body) = api(
            &g.api,
            "POST",
            &format!("/v1/approvals/{id}/approve"),
            ALICE,
            None,
        )
        .await;
        assert_eq!(status, 409, "{body}");
    }
    assert!(
        table_exists(&db.name, "t1").await,
        "the held PREPARE never ran"
    );
    assert!(
        table_exists(&db.name, "t2").await,
        "the held DROP never ran"
    );
    g.gw.wait_idle(secs(10)).await;
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn async_mode_and_two_of_three_approvers() {
    let db = flow_db("chp_gr_async", 10).await;
    let store = TempDir::new("chp-gr-store");
    let policies = r#"
[policies.later]
classes = ["read", "write", "transaction", "session"]
[[policies.later.approve]]
name = "ddl"
statements = ["drop", "truncate"]
[policies.later.approval]
mode = "async"
[policies.two]
classes = ["read", "write", "transaction", "session"]
[[policies.two.approve]]
name = "ddl"
statements = ["drop", "truncate"]
[policies.two.approval]
required = 2
approvers = ["alice", "bob", "carol"]
timeout_secs = 30
"#;
    let g = Guarded::start(
        &format!(
            "{policies}{}",
            approvals_toml(&store.path().display().to_string(), "")
        ),
        &[("agent", "later"), ("careful", "two")],
    )
    .await;

    // Async: the error comes at once, with the id and the URL.
    let started = std::time::Instant::now();
    let out = g.cli("agent", &db.name, "TRUNCATE TABLE t1").await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    out.assert_failure_with("held for approval");
    let v = g.wait_for("pending", Some("TRUNCATE TABLE t1")).await;
    out.assert_failure_with(&v.request.id);
    out.assert_failure_with(&format!("{}/v1/approvals/{}", g.api, v.request.id));
    // Asking again before a decision joins the same request.
    let again = g.cli("agent", &db.name, "TRUNCATE TABLE t1").await.unwrap();
    again.assert_failure_with(&v.request.id);
    assert_eq!(count(&db.name, "SELECT COUNT(*) FROM t1").await, 10);
    // Approved: the identical statement runs once...
    let (status, _) = api(
        &g.api,
        "POST",
        &format!("/v1/approvals/{}/approve", v.request.id),
        ALICE,
        None,
    )
    .await;
    assert_eq!(status, 200);
    // ...not another one...
    g.cli("agent", &db.name, "TRUNCATE TABLE t2")
        .await
        .unwrap()
        .assert_failure_with("held for approval");
    g.cli("agent", &db.name, "TRUNCATE TABLE t1")
        .await
        .unwrap()
        .assert_success();
    assert_eq!(count(&db.name, "SELECT COUNT(*) FROM t1").await, 0);
    let s = g.summary_of("TRUNCATE TABLE t1");
    assert_eq!(s.verdict.as_deref(), Some("approved"));
    assert_eq!(s.approval_id.as_deref(), Some(v.request.id.as_str()));
    // ...and only once.
    let third = g.cli("agent", &db.name, "TRUNCATE TABLE t1").await.unwrap();
    third.assert_failure_with("held for approval");
    assert!(!third.stderr.contains(&v.request.id), "{third}");

    // Two of three: one approval is not enough.
    let client = g.cli("careful", &db.name, "DROP TABLE t2");
    let v = g.wait_for("pending", Some("DROP TABLE t2")).await;
    assert_eq!(v.request.required_approvals, 2);
    let (_, body) = api(
        &g.api,
        "POST",
        &format!("/v1/approvals/{}/approve", v.request.id),
        ALICE,
        None,
    )
    .await;
    assert_eq!(body["state"], "pending");
    assert_eq!(body["approvals"].as_array().unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!client.is_finished(), "one approval of two let it run");
    assert!(table_exists(&db.name, "t2").await);
    let (_, body) = api(
        &g.api,
        "POST",
        &format!("/v1/approvals/{}/approve", v.request.id),
        BOB,
        None,
    )
    .await;
    assert!(
        body["state"] == "approved" || body["state"] == "used",
        "{body}"
    );
    within(secs(30), "the client returns", client)
        .await
        .unwrap()
        .assert_success();
    assert!(!table_exists(&db.name, "t2").await);
    let s = g.summary_of("DROP TABLE t2");
    assert_eq!(s.approvers, ["alice", "bob"]);
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn row_estimates_from_explain_hold_big_writes_text_and_binary() {
    let db = flow_db("chp_gr_explain", 500).await;
    let store = TempDir::new("chp-gr-store");
    let policies = r#"
[policies.rows]
classes = ["read", "write", "transaction", "session"]
[[policies.rows.approve]]
name = "big-writes"
max_rows = 100
[policies.rows.approval]
mode = "async"
"#;
    let g = Guarded::start(
        &format!(
            "{policies}{}",
            approvals_toml(&store.path().display().to_string(), "")
        ),
        &[("writer", "rows")],
    )
    .await;
    // Small writes run.
    g.cli("writer", &db.name, "DELETE FROM t1 WHERE id = 5")
        .await
        .unwrap()
        .assert_success();
    g.cli(
        "writer",
        &db.name,
        "UPDATE t1 SET v = 0 WHERE id BETWEEN 10 AND 20",
    )
    .await
    .unwrap()
    .assert_success();
    let s = g.summary_of("DELETE FROM t1 WHERE id = 5");
    assert_eq!(s.verdict.as_deref(), Some("allowed"));
    assert!(
        s.verdict_reason
            .as_deref()
            .is_some_and(|r| r.contains("EXPLAIN estimated")),
        "{s:?}"
    );
    // A big one is held, with the estimate for the approver.
    let out = g
        .cli("writer", &db.name, "DELETE FROM t1 WHERE id > 10")
        .await
        .unwrap();
    out.assert_failure_with("held for approval");
    let v = g
        .wait_for("pending", Some("DELETE FROM t1 WHERE id > 10"))
        .await;
    assert_eq!(v.request.rule, "big-writes");
    assert!(
        v.request.explain_rows.is_some_and(|n| n > 100),
        "{:?}",
        v.request.explain_rows
    );
    assert_eq!(count(&db.name, "SELECT COUNT(*) FROM t1").await, 499);
    // The binary protocol: estimated at EXECUTE with the parameters.
    let items = vec![
        prepared(
            "small",
            "DELETE FROM t1 WHERE id = ?",
            serde_json::json!([6]),
        ),
        prepared(
            "big",
            "DELETE FROM t1 WHERE id > ?",
            serde_json::json!([20]),
        ),
    ];
    let r = run_catalogue(&g.gw, "writer", &db.name, &items).await;
    assert_eq!(r[0]["ok"], true, "{r:?}");
    assert_eq!(r[1]["error"][0], 1290, "{r:?}");
    assert!(r[1]["error"][1]
        .as_str()
        .unwrap()
        .contains("held for approval"));
    assert_eq!(count(&db.name, "SELECT COUNT(*) FROM t1").await, 498);
    g.stop().await;
}

/// A local HTTP receiver for webhooks: every POST body, in order.
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<Value>>>, CancellationToken) {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/{kind}",
        axum::routing::post(
            move |axum::extract::Path(kind): axum::extract::Path<String>, body: String| {
                let sink = sink.clone();
                async move {
                    let mut v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    v["_hook"] = Value::String(kind);
                    sink.lock().unwrap().push(v);
                    "ok"
                }
            },
        ),
    );
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { s.cancelled().await })
            .await;
    });
    (format!("http://{addr}"), got, stop)
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_tell_of_requests_and_decisions_in_json_and_for_slack() {
    let db = flow_db("chp_gr_webhooks", 3).await;
    let store = TempDir::new("chp-gr-store");
    let (hooks, got, stop) = webhook_receiver().await;
    let extra = format!(
        "request_url = \"https://chaperone.example/approvals/{{id}}\"\n\
         [[approvals.webhooks]]\nurl = \"{hooks}/json\"\n\
         [[approvals.webhooks]]\nurl = \"{hooks}/slack\"\nformat = \"slack\"\n"
    );
    let g = Guarded::start(
        &format!(
            "{MIGRATIONS}{}",
            approvals_toml(&store.path().display().to_string(), &extra)
        ),
        &[("migrator", "migrations")],
    )
    .await;
    let sql = "DROP TABLE t2 /* <script>alert(1)</script> */";
    let client = g.cli("migrator", &db.name, sql);
    let v = g.wait_for("pending", None).await;
    assert_eq!(
        v.url.as_deref(),
        Some(&*format!(
            "https://chaperone.example/approvals/{}",
            v.request.id
        ))
    );
    wait_until(secs(10), "the requested webhooks arrive", || {
        got.lock().unwrap().len() >= 2
    })
    .await;
    api(
        &g.api,
        "POST",
        &format!("/v1/approvals/{}/approve", v.request.id),
        ALICE,
        None,
    )
    .await;
    within(secs(30), "client", client)
        .await
        .unwrap()
        .assert_success();
    wait_until(secs(10), "the approved webhooks arrive", || {
        got.lock().unwrap().len() >= 4
    })
    .await;
    let got = got.lock().unwrap().clone();
    let json: Vec<&Value> = got.iter().filter(|v| v["_hook"] == "json").collect();
    assert_eq!(json[0]["event"], "approval.requested");
    assert_eq!(json[0]["approval"]["id"], v.request.id.as_str());
    assert_eq!(json[0]["approval"]["sql"], sql);
    assert_eq!(json[0]["approval"]["requester"]["subject"], "migrator");
    assert_eq!(json[1]["event"], "approval.approved");
    assert_eq!(json[1]["approval"]["decision"]["by"][0], "alice");
    let slack: Vec<&Value> = got.iter().filter(|v| v["_hook"] == "slack").collect();
    assert!(slack[0]["text"]
        .as_str()
        .unwrap()
        .contains("needs approval"));
    let block = slack[0]["blocks"][0]["text"]["text"].as_str().unwrap();
    assert!(
        block.contains(&v.request.id) && block.contains("migrator"),
        "{block}"
    );
    assert!(
        block.contains("&lt;script&gt;") && !block.contains("<script>"),
        "{block}"
    );
    assert!(
        block.contains("<https://chaperone.example/approvals/"),
        "{block}"
    );
    assert!(slack[1]["text"].as_str().unwrap().contains("was approved"));
    stop.cancel();
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn access_requests_open_a_revocable_window() {
    let db = flow_db("chp_gr_access", 1).await;
    let store = TempDir::new("chp-gr-store");
    let policies = r#"
[policies.jit]
classes = ["read", "write", "transaction", "session"]
[policies.jit.approval]
connect = true
access_window_secs = 600
"#;
    let g = Guarded::start(
        &format!(
            "{policies}{}",
            approvals_toml(&store.path().display().to_string(), "")
        ),
        &[("oncall", "jit")],
    )
    .await;
    let out = g.cli("oncall", &db.name, "SELECT 1").await.unwrap();
    out.assert_failure_with("needs approval: access request apr_");
    let v = g.wait_for("pending", None).await;
    assert_eq!(v.request.kind, chaperone_approvals::RequestKind::Connect);
    // Asking again joins the pending request.
    g.cli("oncall", &db.name, "SELECT 1")
        .await
        .unwrap()
        .assert_failure_with(&v.request.id);
    let (_, body) = api(
        &g.api,
        "POST",
        &format!("/v1/approvals/{}/approve", v.request.id),
        ALICE,
        None,
    )
    .await;
    assert_eq!(body["state"], "approved");
    assert!(body["valid_until"].as_i64().unwrap() > body["decision"]["at"].as_i64().unwrap());
    // The window is open: sessions start (and may reconnect), each recording
    // the access request it opened under.
    for _ in 0..2 {
        let out = g.cli("oncall", &db.name, "SELECT 42").await.unwrap();
        out.assert_success();
        assert_eq!(out.stdout.trim(), "42");
    }
    let opened: Vec<_> =
        g.gw.sessions()
            .into_iter()
            .filter(|s| s.client_user == "oncall")
            .collect();
    assert_eq!(opened.len(), 2, "refused logins open no session");
    for s in &opened {
        assert_eq!(
            s.access_request_id.as_deref(),
            Some(v.request.id.as_str()),
            "{s:?}"
        );
    }
    // An open session ends its run when the window is revoked.
    let mut c = SqlClient::via(g.gw.addr, "oncall", PASSWORD, Some(&db.name))
        .await
        .unwrap();
    assert!(c.query("SELECT 1").await.is_ok());
    let (status, body) = api(
        &g.api,
        "POST",
        &format!("/v1/approvals/{}/revoke", v.request.id),
        BOB,
        None,
    )
    .await;
    assert_eq!((status, body["state"].as_str()), (200, Some("revoked")));
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let err = c.query("SELECT 1").await.unwrap_err().to_string();
    assert!(err.contains("revoked"), "{err}");
    c.quit().await;
    // And no new session opens (a new request is made).
    let out = g.cli("oncall", &db.name, "SELECT 1").await.unwrap();
    out.assert_failure_with("access request apr_");
    assert!(!out.stderr.contains(&v.request.id));
    g.stop().await;
}

/// Two gateways on one store: a request made on one is decided on the other's
/// API (replicas), and survives the first one's restart.
async fn shared_store(store: &str, db_name: &str) {
    let db = flow_db(db_name, 1).await;
    let toml = format!("{MIGRATIONS}{}", approvals_toml(store, ""));
    let a = Guarded::start(&toml, &[("migrator", "migrations")]).await;
    let b = Guarded::start(&toml, &[("migrator", "migrations")]).await;
    // Replicas: held on A, approved on B's API.
    let client = a.cli("migrator", &db.name, "DROP TABLE t2");
    let v = b.wait_for("pending", Some("DROP TABLE t2")).await;
    let (status, _) = api(
        &b.api,
        "POST",
        &format!("/v1/approvals/{}/approve", v.request.id),
        ALICE,
        None,
    )
    .await;
    assert_eq!(status, 200);
    within(secs(30), "client on A", client)
        .await
        .unwrap()
        .assert_success();
    assert!(!table_exists(&db.name, "t2").await);
    // A restart while a request is pending: the client's session is lost with
    // gateway A, the request is not.
    let client = a.cli("migrator", &db.name, "ALTER TABLE t1 ADD COLUMN c INT");
    let v = a
        .wait_for("pending", Some("ALTER TABLE t1 ADD COLUMN c INT"))
        .await;
    a.gw.request_shutdown();
    let out = within(secs(30), "client of the stopped gateway", client)
        .await
        .unwrap();
    assert!(!out.success(), "{out}");
    a.stop().await;
    let a2 = Guarded::start(&toml, &[("migrator", "migrations")]).await;
    let still = a2
        .wait_for("pending", Some("ALTER TABLE t1 ADD COLUMN c INT"))
        .await;
    assert_eq!(still.request.id, v.request.id);
    let (status, _) = api(
        &a2.api,
        "POST",
        &format!("/v1/approvals/{}/approve", v.request.id),
        BOB,
        None,
    )
    .await;
    assert_eq!(status, 200);
    // The agent retries the identical statement: it runs under the approval.
    a2.cli("migrator", &db.name, "ALTER TABLE t1 ADD COLUMN c INT")
        .await
        .unwrap()
        .assert_success();
    let s = a2.summary_of("ALTER TABLE t1 ADD COLUMN c INT");
    assert_eq!(s.verdict.as_deref(), Some("approved"));
    assert_eq!(s.approval_id.as_deref(), Some(v.request.id.as_str()));
    a2.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_and_restarts_share_approvals_in_a_directory() {
    let store = TempDir::new("chp-gr-store");
    shared_store(&store.path().display().to_string(), "chp_gr_shared_dir").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_and_restarts_share_approvals_in_postgresql() {
    // A schema of this test's own in the `test` database (trust auth).
    let schema = format!("chp_gr_{}", std::process::id());
    let status = std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-d", "test", "-qc"])
        .arg(format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .status()
        .expect("psql runs (run scripts/setup-test-env.sh)");
    assert!(
        status.success(),
        "PostgreSQL at 127.0.0.1:5432 with database test"
    );
    // The current user, as scripts/ensure-postgres.sh sets it up.
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let url = format!("postgres://{user}@127.0.0.1:5432/test?options=-csearch_path%3D{schema}");
    shared_store(&url, "chp_gr_shared_pg").await;
    let _ = std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-d", "test", "-qc"])
        .arg(format!("DROP SCHEMA {schema} CASCADE"))
        .status();
}
