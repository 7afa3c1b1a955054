//! The catalogue: statements and the facts the gateway must record for them.

use super::*;
use StatementClass::*;

/// (sql, class, tables read, tables written), with `shop` as the current database.
const CATALOGUE: &[(&str, StatementClass, &[&str], &[&str])] = &[
    // Reads.
    ("SELECT 1", Read, &[], &[]),
    ("SELECT 1 FROM dual", Read, &[], &[]),
    ("select * from orders where id = 42", Read, &["shop.orders"], &[]),
    ("SELECT * FROM `order items` AS oi", Read, &["shop.order items"], &[]),
    (
        "SELECT o.id, c.name FROM orders o JOIN crm.customers c ON c.id = o.customer_id LEFT JOIN shop.items i USING (order_id)",
        Read,
        &["shop.orders", "crm.customers", "shop.items"],
        &[],
    ),
    (
        "SELECT * FROM orders WHERE customer_id IN (SELECT id FROM customers WHERE vip) AND EXISTS (SELECT 1 FROM audit.flags f WHERE f.o = orders.id)",
        Read,
        &["shop.orders", "shop.customers", "audit.flags"],
        &[],
    ),
    (
        "SELECT (SELECT max(total) FROM invoices) AS m, t.* FROM (SELECT * FROM payments) AS t",
        Read,
        &["shop.invoices", "shop.payments"],
        &[],
    ),
    (
        "WITH recent AS (SELECT * FROM orders WHERE ts > now() - interval 1 day) SELECT * FROM recent JOIN customers ON customers.id = recent.customer_id",
        Read,
        &["shop.orders", "shop.customers"],
        &[],
    ),
    (
        "WITH RECURSIVE tree AS (SELECT id, parent FROM nodes WHERE parent IS NULL UNION ALL SELECT n.id, n.parent FROM nodes n JOIN tree t ON n.parent = t.id) SELECT * FROM tree",
        Read,
        &["shop.nodes"],
        &[],
    ),
    (
        "SELECT a FROM t1 UNION SELECT b FROM t2 UNION ALL SELECT c FROM other.t3",
        Read,
        &["shop.t1", "shop.t2", "other.t3"],
        &[],
    ),
    ("SELECT * FROM orders FOR UPDATE", Read, &["shop.orders"], &[]),
    ("SELECT id INTO @last FROM orders ORDER BY id DESC LIMIT 1", Read, &["shop.orders"], &[]),
    ("SHOW TABLES", Read, &[], &[]),
    ("SHOW VARIABLES LIKE 'max%'", Read, &[], &[]),
    ("DESCRIBE orders", Read, &["shop.orders"], &[]),
    ("SHOW COLUMNS FROM orders FROM crm", Read, &["crm.orders"], &[]),
    ("SHOW CREATE TABLE crm.customers", Read, &["crm.customers"], &[]),
    ("EXPLAIN SELECT * FROM orders JOIN items ON items.o = orders.id", Read, &["shop.orders", "shop.items"], &[]),
    ("EXPLAIN DELETE FROM orders WHERE id = 1", Read, &["shop.orders"], &[]),
    // Writes.
    ("INSERT INTO orders (id, total) VALUES (1, 9.5), (2, 3)", Write, &[], &["shop.orders"]),
    ("INSERT INTO orders SET id = 1, total = 2", Write, &[], &["shop.orders"]),
    (
        "INSERT INTO archive.orders SELECT * FROM orders WHERE ts < '2020-01-01'",
        Write,
        &["shop.orders"],
        &["archive.orders"],
    ),
    ("INSERT INTO t SELECT * FROM t", Write, &["shop.t"], &["shop.t"]),
    (
        "INSERT INTO counters (k, n) VALUES ('a', 1) ON DUPLICATE KEY UPDATE n = n + (SELECT step FROM config)",
        Write,
        &["shop.config"],
        &["shop.counters"],
    ),
    ("REPLACE INTO kv (k, v) VALUES ('a', 'b')", Write, &[], &["shop.kv"]),
    ("REPLACE INTO kv SELECT * FROM staging.kv", Write, &["staging.kv"], &["shop.kv"]),
    ("UPDATE orders SET total = total * 2 WHERE id = 7", Write, &[], &["shop.orders"]),
    (
        "UPDATE orders SET status = 'x' WHERE customer_id IN (SELECT id FROM customers WHERE banned)",
        Write,
        &["shop.customers"],
        &["shop.orders"],
    ),
    (
        "UPDATE orders o JOIN customers c ON c.id = o.customer_id SET o.vip = c.vip WHERE c.region = 'eu'",
        Write,
        &["shop.customers"],
        &["shop.orders"],
    ),
    (
        "UPDATE items JOIN orders ON items.o = orders.id SET items.price = orders.total, orders.total = 0",
        Write,
        &[],
        &["shop.items", "shop.orders"],
    ),
    // Unqualified column in a multi-table UPDATE: every joined table counts as written.
    (
        "UPDATE items JOIN orders ON items.o = orders.id SET price = 0",
        Write,
        &[],
        &["shop.items", "shop.orders"],
    ),
    ("DELETE FROM sessions WHERE expires < now()", Write, &[], &["shop.sessions"]),
    (
        "DELETE t1, t2 FROM t1 INNER JOIN t2 INNER JOIN t3 WHERE t1.id = t2.id AND t2.id = t3.id",
        Write,
        &["shop.t3"],
        &["shop.t1", "shop.t2"],
    ),
    (
        "DELETE FROM t1 USING t1 JOIN t2 ON t1.id = t2.id WHERE t2.gone",
        Write,
        &["shop.t2"],
        &["shop.t1"],
    ),
    (
        "DELETE a FROM orders AS a JOIN crm.blocked b ON b.id = a.customer_id",
        Write,
        &["crm.blocked"],
        &["shop.orders"],
    ),
    (
        "DELETE FROM orders WHERE id IN (SELECT order_id FROM refunds)",
        Write,
        &["shop.refunds"],
        &["shop.orders"],
    ),
    (
        "WITH old AS (SELECT id FROM orders WHERE ts < '2000-01-01') DELETE FROM orders WHERE id IN (SELECT id FROM old)",
        Write,
        &["shop.orders"],
        &["shop.orders"],
    ),
    // DDL.
    ("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(10) NOT NULL DEFAULT '')", Ddl, &[], &["shop.t"]),
    ("CREATE TABLE IF NOT EXISTS bak.t LIKE t", Ddl, &["shop.t"], &["bak.t"]),
    ("CREATE TABLE t2 AS SELECT * FROM t1 WHERE x > 1", Ddl, &["shop.t1"], &["shop.t2"]),
    ("CREATE VIEW v AS SELECT a FROM t JOIN u ON t.id = u.id", Ddl, &["shop.t", "shop.u"], &["shop.v"]),
    ("ALTER TABLE orders ADD COLUMN note TEXT", Ddl, &[], &["shop.orders"]),
    ("ALTER TABLE orders RENAME TO orders_old", Ddl, &[], &["shop.orders", "shop.orders_old"]),
    ("DROP TABLE IF EXISTS a, other.b", Ddl, &[], &["shop.a", "other.b"]),
    ("DROP VIEW v", Ddl, &[], &["shop.v"]),
    ("TRUNCATE TABLE logs", Ddl, &[], &["shop.logs"]),
    ("RENAME TABLE a TO b, c TO old.c", Ddl, &[], &["shop.a", "shop.b", "shop.c", "old.c"]),
    ("CREATE INDEX idx ON orders (customer_id)", Ddl, &[], &["shop.orders"]),
    ("DROP INDEX idx ON orders", Ddl, &[], &["shop.orders"]),
    ("CREATE DATABASE reports", Ddl, &[], &[]),
    ("DROP DATABASE reports", Ddl, &[], &[]),
    // Admin.
    ("GRANT SELECT ON shop.* TO 'bob'", Admin, &[], &[]),
    ("REVOKE ALL PRIVILEGES ON shop.* FROM 'bob'", Admin, &[], &[]),
    ("KILL 42", Admin, &[], &[]),
    ("FLUSH PRIVILEGES", Admin, &[], &[]),
    ("SET GLOBAL max_connections = 10", Admin, &[], &[]),
    ("SET @@global.read_only = 1", Admin, &[], &[]),
    ("ANALYZE TABLE orders", Admin, &["shop.orders"], &[]),
    // Transactions and session state.
    ("BEGIN", Transaction, &[], &[]),
    ("START TRANSACTION READ ONLY", Transaction, &[], &[]),
    ("COMMIT", Transaction, &[], &[]),
    ("ROLLBACK TO SAVEPOINT s1", Transaction, &[], &[]),
    ("SAVEPOINT s1", Transaction, &[], &[]),
    ("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", Transaction, &[], &[]),
    ("LOCK TABLES orders READ", Transaction, &["shop.orders"], &[]),
    ("UNLOCK TABLES", Transaction, &[], &[]),
    ("SET NAMES utf8mb4", Session, &[], &[]),
    ("SET autocommit = 0", Session, &[], &[]),
    ("SET @x = (SELECT max(id) FROM orders)", Session, &["shop.orders"], &[]),
    ("SET SESSION sql_mode = 'STRICT_ALL_TABLES'", Session, &[], &[]),
    ("USE crm", Session, &[], &[]),
    // Code the text does not show.
    ("CALL refresh_stats(1)", Other, &[], &[]),
    ("EXECUTE stmt USING @a", Other, &[], &[]),
    // Executable comments are code.
    ("/*!40101 SET NAMES utf8 */", Session, &[], &[]),
    ("SELECT 1 /*!50000 FROM secrets */", Read, &["shop.secrets"], &[]),
    ("/*M!100100 DELETE FROM audit_log */", Write, &[], &["shop.audit_log"]),
    ("/*!DROP TABLE x*/", Ddl, &[], &["shop.x"]),
    ("SELECT '/*! DROP TABLE x */' AS s", Read, &[], &[]),
    // Comments and odd spellings.
    ("-- note\nSELECT * FROM t # trailing\n", Read, &["shop.t"], &[]),
    ("SELECT/* inline */* FROM `weird``name`", Read, &["shop.weird`name"], &[]),
    // Multi-statement packets: judged statement by statement.
    (
        "BEGIN; UPDATE accounts SET b = b - 1 WHERE id = 1; INSERT INTO ledger SELECT * FROM pending; COMMIT",
        Write,
        &["shop.pending"],
        &["shop.accounts", "shop.ledger"],
    ),
    ("SELECT 1; DROP TABLE users", Ddl, &[], &["shop.users"]),
    // What the parser cannot read is unparsed, with what it could read kept.
    ("SELEC * FROM t", Unparsed, &[], &[]),
    ("SELECT * FROM t INTO OUTFILE '/tmp/x'", Unparsed, &[], &[]),
    // Not (yet) in sqlparser's MySQL grammar: recorded as unparsed, not guessed.
    ("UPDATE items, orders SET items.price = 0 WHERE items.o = orders.id", Unparsed, &[], &[]),
    ("LOAD DATA LOCAL INFILE '/x' INTO TABLE t", Unparsed, &[], &[]),
    ("XA START 'x'", Unparsed, &[], &[]),
    ("SET @@GLOBAL.x = 1, @@session.y = 2", Admin, &[], &[]),
    ("SELECT * FROM a; FROBNICATE b; DELETE FROM c", Unparsed, &["shop.a"], &["shop.c"]),
    ("SELECT 'unterminated", Unparsed, &[], &[]),
];

#[test]
fn catalogue() {
    assert!(CATALOGUE.len() >= 40);
    let mut failures = Vec::new();
    for &(sql, class, read, written) in CATALOGUE {
        let a = analyze(sql);
        let got = (
            a.class,
            a.tables_read(Some("shop")),
            a.tables_written(Some("shop")),
        );
        let want = (
            class,
            read.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            written.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        );
        if got != want {
            failures.push(format!(
                "{sql}\n   got  {got:?} ({:?})\n   want {want:?}",
                a.parse_error
            ));
        }
        assert_eq!(a.class == Unparsed, a.parse_error.is_some(), "{sql}");
    }
    assert!(
        failures.is_empty(),
        "{} of {}:\n{}",
        failures.len(),
        CATALOGUE.len(),
        failures.join("\n")
    );
}

#[test]
fn no_database_leaves_names_bare() {
    let a = analyze("SELECT * FROM t JOIN crm.c ON 1");
    assert_eq!(a.tables_read(None), vec!["t", "crm.c"]);
}

#[test]
fn multi_statement_facts_are_per_statement() {
    let a = analyze("SELECT * FROM a; FROBNICATE b; DELETE FROM c");
    let classes: Vec<_> = a.statements.iter().map(|s| s.class).collect();
    assert_eq!(classes, vec![Read, Unparsed, Write]);
    assert!(a.parse_error.as_deref().unwrap().contains("FROBNICATE"));
}

/// (sql, normalised text)
const NORMALISED: &[(&str, &str)] = &[
    (
        "select  *\n from t where id=42",
        "SELECT * FROM t WHERE id = ?",
    ),
    (
        "SELECT * FROM t WHERE id = -42",
        "SELECT * FROM t WHERE id = ?",
    ),
    ("SELECT a - 1 FROM t", "SELECT a - ? FROM t"),
    (
        "SELECT * FROM t WHERE name = 'x''y' AND v = \"z\"",
        "SELECT * FROM t WHERE name = ? AND v = ?",
    ),
    (
        "SELECT * FROM t WHERE id IN (1, 2, 3)",
        "SELECT * FROM t WHERE id IN (...)",
    ),
    (
        "SELECT * FROM t WHERE id IN (1)",
        "SELECT * FROM t WHERE id IN (...)",
    ),
    (
        "SELECT * FROM t WHERE id IN (?, ?)",
        "SELECT * FROM t WHERE id IN (...)",
    ),
    (
        "SELECT * FROM t WHERE id IN (SELECT id FROM u)",
        "SELECT * FROM t WHERE id IN (SELECT id FROM u)",
    ),
    (
        "INSERT INTO t (a, b) VALUES (1, 'x'), (2, NULL), (-3, 'z')",
        "INSERT INTO t(a, b) VALUES (...)",
    ),
    ("insert into t values (1,2)", "INSERT INTO t VALUES (...)"),
    (
        "INSERT INTO t VALUES (1, now())",
        "INSERT INTO t VALUES (?, now())",
    ),
    (
        "SELECT `id`, `select`, `my col` FROM `t`",
        "SELECT id, `select`, `my col` FROM t",
    ),
    (
        "SELECT x'1f', 0x1F, b'01', _utf8mb4'abc', N'n', 1.5e3, .5",
        "SELECT ?, ?, ?, ?, ?, ?, ?",
    ),
    (
        "SELECT COUNT(*) FROM t LIMIT 10",
        "SELECT COUNT(*) FROM t LIMIT ?",
    ),
    (
        "SELECT 1 /*!50000 , 2 */ -- c\n # d\n /* e */",
        "SELECT ?, ?",
    ),
    (
        "SELECT @a, @@session.sql_mode",
        "SELECT @a, @@session.sql_mode",
    ),
    ("SELECT 1;", "SELECT ?"),
    ("SELECT 1; SELECT 2", "SELECT ?; SELECT ?"),
];

#[test]
fn normalisation() {
    for &(sql, want) in NORMALISED {
        assert_eq!(digest::normalize(sql).unwrap(), want, "{sql}");
    }
}

#[test]
fn digests_are_stable_and_literal_free() {
    let a = analyze("SELECT * FROM t WHERE id = 1 AND name = 'a'");
    let b = analyze("select *   from t\nwhere id=22 and name='bbb'");
    assert_eq!(a.digest, b.digest);
    assert_eq!(a.normalized, b.normalized);
    // A fixed value: the digest is part of the archive format.
    assert_eq!(
        a.digest.as_deref(),
        Some(digest::digest_of("SELECT * FROM t WHERE id = ? AND name = ?").as_str())
    );
    assert_eq!(a.digest.as_ref().unwrap().len(), 32);
    assert_ne!(a.digest, analyze("SELECT * FROM u WHERE id = 1").digest);
    // Unparsed statements still get a digest; untokenizable ones do not.
    assert!(analyze("FROBNICATE 1").digest.is_some());
    assert!(analyze("SELECT 'x").digest.is_none());
}

#[test]
fn large_texts_are_not_parsed() {
    let sql = format!("INSERT INTO t VALUES ('{}')", "x".repeat(MAX_PARSED_LEN));
    let a = analyze(&sql);
    assert_eq!(a.class, Unparsed);
    assert_eq!(a.normalized.as_deref(), Some("INSERT INTO t VALUES (...)"));
    assert!(a.parse_error.unwrap().contains("bytes"));
}

#[test]
fn record_into_a_summary() {
    let mut s = CommandSummary::default();
    analyze("UPDATE a JOIN b ON a.id = b.id SET a.x = b.y").record_into(&mut s, Some("shop"));
    assert_eq!(s.statement_class.as_deref(), Some("write"));
    assert_eq!(s.tables_read, vec!["shop.b"]);
    assert_eq!(s.tables_written, vec!["shop.a"]);
    assert_eq!(
        s.normalized_sql.as_deref(),
        Some("UPDATE a JOIN b ON a.id = b.id SET a.x = b.y")
    );
    assert!(s.digest.is_some() && s.parse_error.is_none());
}

#[test]
fn class_names_round_trip() {
    for c in StatementClass::ALL {
        assert_eq!(StatementClass::from_name(c.as_str()), Some(c));
    }
    assert_eq!(Read.combine(Write), Write);
    assert_eq!(Admin.combine(Unparsed), Unparsed);
}

#[test]
fn keyword_list_is_sorted_for_binary_search() {
    let words = digest::keywords();
    assert!(words.windows(2).all(|w| w[0] < w[1]));
    assert!(words.iter().all(|w| w.len() <= 32));
}
