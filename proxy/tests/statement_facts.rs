//! Statement facts through a real gateway and MariaDB: digest, class, tables
//! read and written (qualified with the current database, also for prepared
//! statements), parse errors, and the result hash over what the client got.

mod support;

use chaperone_mysql::protocol::command::{COM_QUERY, COM_STMT_EXECUTE};
use chaperone_mysql::protocol::response::EOF_HEADER;
use chaperone_schemas::CommandSummary;
use sha2::{Digest, Sha256};
use support::*;

/// The summary the gateway recorded for the last command with this SQL text.
fn summary_of(gw: &TestGateway, session: &str, sql: &str) -> CommandSummary {
    gw.commands(session)
        .into_iter()
        .rev()
        .find(|c| c.sql.as_deref() == Some(sql))
        .unwrap_or_else(|| panic!("no command recorded for {sql}"))
}

/// The result hash computed independently from the packets the client
/// received: SHA-256 over (u32 LE length, payload) of every column-count,
/// column-definition and row packet, in order (classic EOF protocol).
fn expected_hash(packets: &[chaperone_mysql::protocol::Packet]) -> String {
    let mut h = Sha256::new();
    let mut i = 0;
    while i < packets.len() {
        let count = packets[i].payload[0] as usize; // < 251 columns in these tests
        for p in &packets[i..=i + count] {
            h.update((p.payload.len() as u32).to_le_bytes());
            h.update(&p.payload);
        }
        i += count + 2; // definitions, then the EOF after them
        while packets[i].payload[0] != EOF_HEADER {
            h.update((packets[i].payload.len() as u32).to_le_bytes());
            h.update(&packets[i].payload);
            i += 1;
        }
        i += 1;
    }
    hex::encode(h.finalize())
}

async fn text_query(client: &mut SqlClient, sql: &str) -> support::sql::Reply {
    let mut payload = vec![COM_QUERY];
    payload.extend_from_slice(sql.as_bytes());
    let reply = client.command(payload).await.expect("query");
    assert!(reply.error().is_none(), "{sql}: {:?}", reply.error());
    reply
}

#[tokio::test(flavor = "multi_thread")]
async fn statement_facts_and_result_hash_through_the_gateway() {
    let gw = TestGateway::start().await;
    let db = TestDb::create("chp_facts_gateway").await;
    let other = TestDb::create("chp_facts_other").await;
    let mut root = db.root().await;
    root.exec(
        "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(20));
         CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT, total INT);
         INSERT INTO customers VALUES (1, 'ann'), (2, 'bob');
         INSERT INTO orders VALUES (10, 1, 5), (11, 2, 7), (12, 1, 9)",
    )
    .await;
    root.quit().await;
    let mut root = other.root().await;
    root.exec("CREATE TABLE notes (id INT)").await;
    root.quit().await;

    let mut c = SqlClient::via(gw.addr, APP_USER, APP_PASSWORD, Some(&db.name))
        .await
        .expect("login through the gateway");
    let session = gw
        .sessions()
        .last()
        .expect("session recorded")
        .session_id
        .clone();
    let d = &db.name;

    // A join: class, tables, digest, and the hash of exactly what was delivered.
    let join = "SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.total > 6 ORDER BY o.id";
    let reply = text_query(&mut c, join).await;
    let s = summary_of(&gw, &session, join);
    assert_eq!(s.statement_class.as_deref(), Some("read"));
    assert_eq!(
        s.tables_read,
        vec![format!("{d}.orders"), format!("{d}.customers")]
    );
    assert!(s.tables_written.is_empty());
    assert_eq!(
        s.normalized_sql.as_deref(),
        Some("SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.total > ? ORDER BY o.id")
    );
    assert_eq!(s.rows_returned, 2);
    assert_eq!(
        s.result_hash.as_deref(),
        Some(expected_hash(&reply.packets).as_str())
    );
    let join_hash = s.result_hash.clone();
    let join_digest = s.digest.clone().expect("digest");

    // Same shape, other literal: same digest, other result, other hash.
    let join2 = join.replace("> 6", "> 0");
    let reply2 = text_query(&mut c, &join2).await;
    let s2 = summary_of(&gw, &session, &join2);
    assert_eq!(s2.digest.as_deref(), Some(join_digest.as_str()));
    assert_eq!(s2.rows_returned, 3);
    assert_ne!(s2.result_hash, join_hash);
    assert_eq!(
        s2.result_hash.as_deref(),
        Some(expected_hash(&reply2.packets).as_str())
    );
    // The same statement again: the same hash.
    text_query(&mut c, join).await;
    assert_eq!(summary_of(&gw, &session, join).result_hash, join_hash);

    // A multi-statement packet, with an executable comment, judged statement by statement.
    let multi = "UPDATE orders SET total = total + 1 WHERE id = 10; /*!50000 DELETE FROM customers WHERE id = 99 */; SELECT COUNT(*) FROM chp_facts_other.notes";
    let reply = text_query(&mut c, multi).await;
    let s = summary_of(&gw, &session, multi);
    assert_eq!(s.statement_class.as_deref(), Some("write"));
    assert_eq!(
        s.tables_written,
        vec![format!("{d}.orders"), format!("{d}.customers")]
    );
    assert_eq!(s.tables_read, vec!["chp_facts_other.notes".to_string()]);
    // Only the final SELECT produced a result set; the OKs are not hashed.
    let first_result = reply
        .packets
        .iter()
        .position(|p| p.payload[0] == 1)
        .expect("the SELECT's column count");
    assert_eq!(
        s.result_hash.as_deref(),
        Some(expected_hash(&reply.packets[first_result..]).as_str())
    );
    assert_eq!(s.rows_affected, 1);

    // An UPDATE has no result set, so no hash.
    let update = "UPDATE orders SET total = 0 WHERE id = 12";
    text_query(&mut c, update).await;
    let s = summary_of(&gw, &session, update);
    assert_eq!(s.statement_class.as_deref(), Some("write"));
    assert_eq!(s.result_hash, None);

    // Unparsable SQL: recorded as such; the server's error is recorded too.
    let bad = "SELEC * FROM orders";
    let mut payload = vec![COM_QUERY];
    payload.extend_from_slice(bad.as_bytes());
    let reply = c.command(payload).await.expect("reply");
    assert_eq!(reply.error().map(|e| e.code), Some(1064));
    let s = summary_of(&gw, &session, bad);
    assert_eq!(s.statement_class.as_deref(), Some("unparsed"));
    assert!(s.parse_error.is_some() && s.tables_read.is_empty());
    assert!(s.digest.is_some());

    // A prepared statement: analysed at PREPARE, in the database of that moment;
    // EXECUTE carries the same facts even after USE switched databases.
    let prepared = "SELECT total FROM orders WHERE id = ?";
    let (id, params) = c.prepare(prepared).await.expect("prepare");
    assert_eq!(params, 1);
    c.exec(&format!("USE {}", other.name)).await;
    let mut exec = vec![COM_STMT_EXECUTE];
    exec.extend_from_slice(&id.to_le_bytes());
    exec.push(0); // no cursor
    exec.extend_from_slice(&1u32.to_le_bytes());
    exec.push(0); // NULL bitmap
    exec.push(1); // types follow
    exec.extend_from_slice(&[8, 0]); // LONGLONG
    exec.extend_from_slice(&11i64.to_le_bytes());
    let reply = c.command(exec).await.expect("execute");
    assert!(reply.error().is_none(), "{:?}", reply.error());
    let execs: Vec<CommandSummary> = gw
        .commands(&session)
        .into_iter()
        .filter(|s| s.command == "COM_STMT_EXECUTE")
        .collect();
    let s = execs.last().expect("execute recorded");
    assert_eq!(s.sql.as_deref(), Some(prepared));
    assert_eq!(s.params, vec!["11".to_string()]);
    assert_eq!(s.statement_class.as_deref(), Some("read"));
    assert_eq!(s.tables_read, vec![format!("{d}.orders")]);
    assert_eq!(s.rows_returned, 1);
    assert_eq!(
        s.result_hash.as_deref(),
        Some(expected_hash(&reply.packets).as_str())
    );
    // The text form of the same statement has the same digest.
    let text = format!("SELECT total FROM {d}.orders WHERE id = 11");
    text_query(&mut c, &text).await;
    let t = summary_of(&gw, &session, &text);
    assert_eq!(
        t.normalized_sql.as_deref(),
        Some(format!("SELECT total FROM {d}.orders WHERE id = ?").as_str())
    );
    // After USE, unqualified names belong to the new database.
    text_query(&mut c, "SELECT * FROM notes").await;
    let s = summary_of(&gw, &session, "SELECT * FROM notes");
    assert_eq!(s.tables_read, vec![format!("{}.notes", other.name)]);

    c.quit().await;
    gw.stop().await;
}
