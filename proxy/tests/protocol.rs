//! Protocol paths through the gateway that the drivers do not reach on their own,
//! driven by a client written with `chaperone_mysql::protocol`: server-side
//! cursors (COM_STMT_EXECUTE with CURSOR_TYPE_READ_ONLY, then COM_STMT_FETCH),
//! unknown and replication commands, the caching_sha2_password fast path and full
//! authentication over TLS, mysql_native_password, and what the tap records.

mod support;

use bytes::Bytes;
use chaperone_mysql::protocol::command::*;
use chaperone_mysql::protocol::handshake::{ServerGreeting, UpstreamHello};
use chaperone_mysql::protocol::response::{
    ErrInfo, ERR_HEADER, OK_HEADER, SERVER_STATUS_CURSOR_EXISTS, SERVER_STATUS_LAST_ROW_SENT,
};
use chaperone_mysql::protocol::{CapabilityFlags, Packet, PacketCodec};
use chaperone_mysql::stream::Stream;
use chaperone_schemas::{Direction, TapEvent};
use futures::{SinkExt, StreamExt};
use support::sql::CLIENT_CAPABILITIES;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

const CURSOR_TYPE_READ_ONLY: u8 = 1;

fn execute_payload(id: u32, flags: u8) -> Vec<u8> {
    let mut p = vec![COM_STMT_EXECUTE];
    p.extend_from_slice(&id.to_le_bytes());
    p.push(flags);
    p.extend_from_slice(&1u32.to_le_bytes());
    p
}

fn fetch_payload(id: u32, rows: u32) -> Vec<u8> {
    let mut p = vec![COM_STMT_FETCH];
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(&rows.to_le_bytes());
    p
}

/// Opens a read-only cursor and fetches it 4 rows at a time; returns every
/// packet payload the client received.
async fn cursor_session(client: &mut SqlClient) -> Vec<Bytes> {
    let (id, params) = client
        .prepare("SELECT id, label FROM items WHERE id > 0 ORDER BY id")
        .await
        .expect("prepare");
    assert_eq!(params, 0);
    let mut seen = Vec::new();
    let reply = client
        .command(execute_payload(id, CURSOR_TYPE_READ_ONLY))
        .await
        .expect("execute");
    assert!(reply.error().is_none(), "{:?}", reply.error());
    assert_ne!(
        reply.facts.status & SERVER_STATUS_CURSOR_EXISTS,
        0,
        "the server opened a cursor"
    );
    seen.extend(reply.packets.iter().map(|p| p.payload.clone()));
    let mut rows = 0;
    for _ in 0..20 {
        let reply = client.command(fetch_payload(id, 4)).await.expect("fetch");
        assert!(reply.error().is_none(), "{:?}", reply.error());
        rows += reply.facts.rows;
        seen.extend(reply.packets.iter().map(|p| p.payload.clone()));
        if reply.facts.status & SERVER_STATUS_LAST_ROW_SENT != 0 {
            break;
        }
    }
    assert_eq!(rows, 10, "every row came through the cursor");
    let mut close = vec![COM_STMT_CLOSE];
    close.extend_from_slice(&id.to_le_bytes());
    client.send(0, close).await.expect("close");
    seen
}

/// A server-side cursor fetched in pieces gives, packet for packet, what it
/// gives directly.
#[tokio::test(flavor = "multi_thread")]
async fn server_side_cursor_fetch() {
    let gw = TestGateway::start().await;
    let db = TestDb::create("chp_gw_cursor").await;
    let mut root = db.root().await;
    root.exec(
        "CREATE TABLE items (id INT PRIMARY KEY, label VARCHAR(20)); \
         INSERT INTO items SELECT seq, CONCAT('item ', seq, ' 😀') FROM seq_1_to_10",
    )
    .await;
    let direct = cursor_session(&mut root).await;
    let mut client = SqlClient::via(gw.addr, APP_USER, APP_PASSWORD, Some(&db.name))
        .await
        .expect("login");
    let via = cursor_session(&mut client).await;
    assert_eq!(direct, via);
    assert_eq!(
        client.scalar("SELECT 'still here'").await.as_deref(),
        Some("still here")
    );
    let session = gw
        .session_by_connection_id(client.connection_id())
        .expect("session");
    let fetches: Vec<_> = gw
        .commands(&session.session_id)
        .into_iter()
        .filter(|c| c.command == "COM_STMT_FETCH")
        .collect();
    assert_eq!(fetches.len(), 3, "10 rows, 4 at a time");
    assert_eq!(fetches.iter().map(|c| c.rows_returned).sum::<u64>(), 10);
    gw.stop().await;
}

async fn expect_err(client: &mut SqlClient, payload: Vec<u8>) -> ErrInfo {
    let reply = client.command(payload).await.expect("an answer");
    reply.error().cloned().expect("an ERR packet")
}

/// Unknown commands and replication commands get an error; the connection
/// goes on.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_and_replication_commands_are_refused() {
    let gw = TestGateway::start().await;
    let mut client = SqlClient::via(gw.addr, APP_USER, APP_PASSWORD, None)
        .await
        .expect("login");
    for code in [0x40u8, 0xEE, COM_DAEMON, COM_TIME] {
        let err = expect_err(&mut client, vec![code, 1, 2, 3]).await;
        assert_eq!(err.code, 1047, "{code:#x}: {err:?}");
        assert!(
            err.message.contains("unknown or unsupported command"),
            "{err:?}"
        );
    }
    let mut dump = vec![COM_BINLOG_DUMP];
    dump.extend_from_slice(&4u32.to_le_bytes());
    dump.extend_from_slice(&[0, 0]);
    dump.extend_from_slice(&1u32.to_le_bytes());
    dump.extend_from_slice(b"mysql-bin.000001");
    for payload in [
        dump,
        vec![COM_BINLOG_DUMP_GTID, 0, 0],
        vec![COM_REGISTER_SLAVE, 1, 0, 0, 0],
    ] {
        let err = expect_err(&mut client, payload).await;
        assert_eq!(err.code, 1235, "{err:?}");
        assert!(err.message.contains("replication"), "{err:?}");
    }
    let ping = client.command(vec![COM_PING]).await.expect("ping");
    assert!(ping.error().is_none());
    assert_eq!(client.scalar("SELECT 1").await.as_deref(), Some("1"));
    let session = gw
        .session_by_connection_id(client.connection_id())
        .expect("session");
    let refused = gw
        .commands(&session.session_id)
        .into_iter()
        .filter(|c| c.refused)
        .count();
    assert_eq!(refused, 7);
    client.quit().await;
    gw.wait_idle(secs(5)).await;
    gw.stop().await;
}

/// One login over TLS with caching_sha2_password, by hand; returns what the
/// gateway answered to the scramble (the AuthMoreData byte) and the final packet.
async fn sha2_login_over_tls(gw: &TestGateway, user: &str, password: &str) -> (Option<u8>, Packet) {
    let tcp = TcpStream::connect(gw.addr).await.expect("connect");
    let mut conn = Framed::new(Stream::Plain(tcp), PacketCodec::new(1 << 24));
    let greeting = conn.next().await.expect("greeting").expect("greeting");
    let greeting = ServerGreeting::parse(&greeting.payload).expect("greeting parses");
    assert!(greeting.capabilities.contains(CapabilityFlags::CLIENT_SSL));
    let nonce: [u8; 20] = greeting.scramble[..20]
        .try_into()
        .expect("20-byte scramble");
    let attrs = Default::default();
    let scramble = mysql_common::auth::plugins::caching_sha2_password::scramble_sha256(
        &nonce,
        password.as_bytes(),
    )
    .expect("scramble");
    let hello = UpstreamHello {
        mariadb_capabilities: Default::default(),
        capabilities: CLIENT_CAPABILITIES
            | CapabilityFlags::CLIENT_SSL
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
        max_packet_size: 1 << 24,
        collation: 45,
        user,
        auth_response: &scramble,
        database: None,
        auth_plugin: "caching_sha2_password",
        connect_attrs: &attrs,
    };
    conn.send(Packet::new(1, hello.encode_ssl_request()))
        .await
        .expect("SSLRequest");
    let Stream::Plain(tcp) = conn.into_parts().io else {
        unreachable!()
    };
    let tls = tls_connector(gw)
        .connect("localhost".try_into().expect("name"), tcp)
        .await
        .expect("TLS handshake");
    let mut conn = Framed::new(Stream::ClientTls(Box::new(tls)), PacketCodec::new(1 << 24));
    conn.send(Packet::new(2, hello.encode()))
        .await
        .expect("hello");
    let first = conn.next().await.expect("answer").expect("answer");
    if first.payload.first() != Some(&1) {
        return (None, first);
    }
    let more = first.payload.get(1).copied();
    if more == Some(4) {
        // Full authentication: the password in clear, over TLS.
        let mut pw = password.as_bytes().to_vec();
        pw.push(0);
        conn.send(Packet::new(first.seq + 1, pw))
            .await
            .expect("password");
    }
    let last = conn.next().await.expect("final").expect("final");
    (more, last)
}

fn tls_connector(gw: &TestGateway) -> tokio_rustls::TlsConnector {
    let pem = std::fs::read(&gw.ca_file).expect("CA file");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.expect("PEM")).expect("add CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// caching_sha2_password: the first login over TLS is a full authentication
/// (the password in clear over TLS), the next ones take the fast path; wrong
/// passwords are refused on both paths. mysql_native_password works too.
#[tokio::test(flavor = "multi_thread")]
async fn password_plugins_fast_and_full_auth() {
    let gw = TestGateway::start().await;
    let (more, last) = sha2_login_over_tls(&gw, OTHER_USER, "wrong").await;
    assert_eq!(more, Some(4), "full authentication first");
    assert_eq!(
        last.payload[0], ERR_HEADER,
        "wrong password refused on the full path"
    );
    let (more, last) = sha2_login_over_tls(&gw, OTHER_USER, OTHER_PASSWORD).await;
    assert_eq!(more, Some(4), "still not cached after a failure");
    assert_eq!(
        last.payload[0],
        OK_HEADER,
        "{:?}",
        ErrInfo::parse(&last.payload)
    );
    let (more, last) = sha2_login_over_tls(&gw, OTHER_USER, OTHER_PASSWORD).await;
    assert_eq!(more, Some(3), "fast path once cached");
    assert_eq!(last.payload[0], OK_HEADER);
    let (more, last) = sha2_login_over_tls(&gw, OTHER_USER, "wrong").await;
    assert_eq!(more, None, "a wrong scramble is refused at once");
    assert_eq!(ErrInfo::parse(&last.payload).expect("ERR").code, 1045);

    // Through the test client: TLS with verification, plain fast path, native.
    let mut c = SqlClient::connect_tls(&gw.addr.to_string(), APP_USER, APP_PASSWORD, &gw.ca_file)
        .await
        .expect("TLS login");
    assert_eq!(c.scalar("SELECT 1").await.as_deref(), Some("1"));
    let mut c = SqlClient::via(gw.addr, NATIVE_USER, NATIVE_PASSWORD, None)
        .await
        .expect("native login");
    assert_eq!(c.scalar("SELECT 2").await.as_deref(), Some("2"));
    let err = SqlClient::via(gw.addr, NATIVE_USER, "wrong", None)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.server().map(|e| e.code), Some(1045), "{err}");
    let err = SqlClient::via(gw.addr, "nobody", "x", None)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.server().map(|e| e.code), Some(1045), "{err}");
    // Every session (failed logins may be recorded too) knows how it came in.
    let sessions = gw.sessions();
    assert!(sessions.len() >= 5, "{sessions:#?}");
    for s in &sessions {
        let tls = s.client_user == OTHER_USER || s.client_user == APP_USER;
        assert_eq!(s.client_tls, tls, "{s:#?}");
    }
    gw.stop().await;
}

/// Regression: clients (PyMySQL, mysql-connector's C extension) send their TLS
/// ClientHello right behind the SSLRequest, often in one TCP segment. The
/// gateway used to refuse such connections as "data before the TLS handshake".
#[tokio::test(flavor = "multi_thread")]
async fn client_hello_in_the_same_segment_as_the_ssl_request() {
    let gw = TestGateway::start().await;
    for _ in 0..3 {
        let tcp = TcpStream::connect(gw.addr).await.expect("connect");
        let mut conn = Framed::new(tcp, PacketCodec::new(1 << 24));
        let greeting = conn.next().await.expect("greeting").expect("greeting");
        ServerGreeting::parse(&greeting.payload).expect("greeting parses");
        let attrs = Default::default();
        let ssl_request = UpstreamHello {
            capabilities: CLIENT_CAPABILITIES | CapabilityFlags::CLIENT_SSL,
            mariadb_capabilities: Default::default(),
            max_packet_size: 1 << 24,
            collation: 45,
            user: "",
            auth_response: &[],
            database: None,
            auth_plugin: "",
            connect_attrs: &attrs,
        }
        .encode_ssl_request();
        // A write buffer that is flushed only by the TLS handshake: the
        // SSLRequest and the ClientHello leave in one write.
        let mut io = tokio::io::BufWriter::new(conn.into_inner());
        let mut bytes = bytes::BytesMut::new();
        chaperone_mysql::protocol::packet::encode_packet(1, &ssl_request, &mut bytes);
        io.write_all(&bytes).await.expect("buffered");
        let tls = within(
            secs(5),
            "TLS handshake",
            tls_connector(&gw).connect("localhost".try_into().expect("name"), io),
        )
        .await
        .expect("the gateway completes the TLS handshake");
        drop(tls);
    }
    let mut c = SqlClient::via(gw.addr, APP_USER, APP_PASSWORD, None)
        .await
        .expect("others unaffected");
    assert_eq!(c.scalar("SELECT 3").await.as_deref(), Some("3"));
    gw.stop().await;
}

/// The tap: per session, frame numbers start at 0 without gaps, each command's
/// request frame comes before its response frames, and each command has one
/// summary with its rows, affected rows and error.
#[tokio::test(flavor = "multi_thread")]
async fn tap_frames_and_command_summaries() {
    let gw = TestGateway::start().await;
    let db = TestDb::create("chp_gw_tap").await;
    let mut c = SqlClient::via(gw.addr, APP_USER, APP_PASSWORD, Some(&db.name))
        .await
        .expect("login");
    c.exec("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))")
        .await;
    c.exec("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, NULL)")
        .await;
    assert_eq!(
        c.query("SELECT * FROM t ORDER BY id")
            .await
            .expect("select")
            .len(),
        3
    );
    let err = c.query("SELECT * FROM missing").await.expect_err("error");
    assert_eq!(err.server().map(|e| e.code), Some(1146));
    let sets = c
        .query_all("SELECT 1; UPDATE t SET v = 'z' WHERE id > 1; SELECT id FROM t")
        .await
        .expect("multi");
    assert_eq!(sets.len(), 3);
    let (id, _) = c
        .prepare("SELECT v FROM t WHERE id = ?")
        .await
        .expect("prepare");
    let mut exec = execute_payload(id, 0);
    exec.extend_from_slice(&[0, 1, 3, 0]);
    exec.extend_from_slice(&2i32.to_le_bytes());
    let reply = c.command(exec).await.expect("execute");
    assert_eq!(reply.facts.rows, 1);
    let connection_id = c.connection_id();
    c.quit().await;
    gw.wait_idle(secs(5)).await;

    let session = gw.session_by_connection_id(connection_id).expect("session");
    let sid = session.session_id.clone();
    let events: Vec<_> = gw
        .tap
        .events()
        .into_iter()
        .filter(|e| match e {
            TapEvent::Frame(f) => *f.session_id == *sid,
            TapEvent::Command(c) => c.session_id == sid,
            TapEvent::SessionStart(s) => s.session_id == sid,
            TapEvent::SessionEnd(s) => s.session_id == sid,
        })
        .collect();
    assert!(matches!(events.first(), Some(TapEvent::SessionStart(_))));
    assert!(matches!(events.last(), Some(TapEvent::SessionEnd(_))));
    let frames = gw.frames(&sid);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.seq, i as u64, "frame numbers are gap-free");
    }
    // Within each command, the request comes first, then only responses; and the
    // summary comes after the command's frames.
    let commands = gw.commands(&sid);
    for (i, cmd) in commands.iter().enumerate() {
        assert_eq!(cmd.command_index, i as u64);
        let mine: Vec<_> = frames
            .iter()
            .filter(|f| f.command_index == i as u64)
            .collect();
        assert!(!mine.is_empty(), "command {i} has frames");
        assert_eq!(mine[0].direction, Direction::ClientToServer);
        if cmd.command != "COM_QUIT" {
            assert!(mine[1..]
                .iter()
                .all(|f| f.direction == Direction::ServerToClient));
            assert!(
                mine.len() >= 2,
                "command {i} ({}) has a response",
                cmd.command
            );
        }
    }
    let position = |pred: &dyn Fn(&TapEvent) -> bool| events.iter().position(pred).expect("event");
    for cmd in &commands {
        let summary_at = position(
            &|e| matches!(e, TapEvent::Command(c) if c.command_index == cmd.command_index),
        );
        let last_frame_at = events
            .iter()
            .rposition(|e| matches!(e, TapEvent::Frame(f) if f.command_index == cmd.command_index))
            .expect("frames");
        assert!(last_frame_at < summary_at, "summary after its frames");
    }
    let by_sql = |needle: &str| {
        commands
            .iter()
            .find(|c| c.sql.as_deref().is_some_and(|s| s.starts_with(needle)))
            .unwrap_or_else(|| panic!("no command {needle}"))
    };
    assert_eq!(by_sql("INSERT").rows_affected, 3);
    assert_eq!(by_sql("SELECT * FROM t").rows_returned, 3);
    assert_eq!(by_sql("SELECT * FROM t").result_columns, vec!["id", "v"]);
    let missing = by_sql("SELECT * FROM missing");
    assert_eq!(missing.error_code, Some(1146));
    assert!(missing
        .error_message
        .as_deref()
        .unwrap_or("")
        .contains("missing"));
    let multi = by_sql("SELECT 1;");
    assert_eq!((multi.rows_returned, multi.rows_affected), (4, 2));
    let exec = commands
        .iter()
        .find(|c| c.command == "COM_STMT_EXECUTE")
        .expect("execute summary");
    assert_eq!(exec.params, vec!["2"]);
    assert_eq!(exec.sql.as_deref(), Some("SELECT v FROM t WHERE id = ?"));
    assert_eq!(exec.rows_returned, 1);
    assert_eq!(
        commands.last().map(|c| c.command.as_str()),
        Some("COM_QUIT")
    );
    let end = gw
        .session_ends()
        .into_iter()
        .find(|e| e.session_id == sid)
        .expect("end");
    assert_eq!(end.reason, "client_quit");
    assert_eq!(end.frames, frames.len() as u64);
    assert_eq!(end.commands, commands.len() as u64);
    // Sanity of the request frame: the payload as the client sent it.
    let first = &frames[0];
    assert_eq!(first.payload[0], COM_QUERY);
    gw.stop().await;
}
