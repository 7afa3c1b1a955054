//! Bad input and lifecycle, over raw TCP: garbage, truncated and oversized
//! packets, sequence errors, malformed EXECUTEs, a slow handshake, a malformed
//! or absent upstream, a client vanishing mid-result, the connection limit,
//! graceful shutdown and the idle timeout. Each ends in an error or a closed
//! connection, never a hang or a panic, and a second client keeps working.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chaperone_mysql::protocol::command::*;
use chaperone_mysql::protocol::handshake::{Greeting, ServerGreeting};
use chaperone_mysql::protocol::response::{encode_ok, ErrInfo, OkInfo, ERR_HEADER};
use chaperone_mysql::protocol::{CapabilityFlags, Packet, PacketCodec};
use chaperone_proxy::config::TargetConfig;
use chaperone_proxy::Config;
use futures::{SinkExt, StreamExt};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

/// A raw connection that has read the gateway's greeting.
async fn raw(gw: &TestGateway) -> TcpStream {
    let mut tcp = TcpStream::connect(gw.addr).await.expect("connect");
    let mut header = [0u8; 4];
    within(secs(5), "greeting", tcp.read_exact(&mut header))
        .await
        .expect("greeting header");
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    let mut greeting = vec![0u8; len];
    tcp.read_exact(&mut greeting).await.expect("greeting");
    ServerGreeting::parse(&greeting).expect("a valid greeting");
    tcp
}

/// Reads until the gateway closes the connection (bounded); returns what came.
async fn until_closed(tcp: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let res = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        res.is_ok(),
        "the gateway did not close the connection within {limit:?}"
    );
    out
}

/// The ERR packet at the start of `bytes`, if that is what it is.
fn err_packet(bytes: &[u8]) -> Option<ErrInfo> {
    let payload = bytes.get(4..)?;
    (payload.first() == Some(&ERR_HEADER))
        .then(|| ErrInfo::parse(payload).ok())
        .flatten()
}

async fn others_unaffected(gw: &TestGateway) {
    let mut c = SqlClient::via(gw.addr, APP_USER, APP_PASSWORD, None)
        .await
        .expect("another client logs in");
    assert_eq!(c.scalar("SELECT 'fine'").await.as_deref(), Some("fine"));
    c.quit().await;
}

fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    chaperone_mysql::protocol::packet::encode_packet(seq, payload, &mut out);
    out.to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_before_authentication() {
    let gw = TestGateway::start().await;
    // An HTTP request where the handshake response should be: its first bytes
    // read as a multi-megabyte packet length.
    let mut tcp = raw(&gw).await;
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let answer = until_closed(&mut tcp, secs(3)).await;
    assert!(
        started.elapsed() < secs(2),
        "closed at once, not at the handshake timeout"
    );
    let err = err_packet(&answer).expect("an ERR before closing");
    assert_eq!(err.code, 1043, "{err:?}");
    // Binary garbage of a plausible length.
    let mut tcp = raw(&gw).await;
    tcp.write_all(&packet(1, &[0xAB; 64])).await.expect("write");
    let answer = until_closed(&mut tcp, secs(3)).await;
    assert_eq!(err_packet(&answer).map(|e| e.code), Some(1043));
    // Garbage before the greeting was even read.
    let mut tcp = TcpStream::connect(gw.addr).await.expect("connect");
    tcp.write_all(&[0xFF; 300]).await.expect("write");
    until_closed(&mut tcp, secs(3)).await;
    others_unaffected(&gw).await;
    gw.wait_idle(secs(5)).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_and_short_handshake_responses() {
    let gw = TestGateway::start().await;
    for payload in [
        &b""[..],
        &[0x0F, 0xA2][..],
        &[0u8; 31][..],
        &[0x85, 0xA6, 0xFF, 0x01, 0, 0, 0, 1, 45][..],
    ] {
        let mut tcp = raw(&gw).await;
        tcp.write_all(&packet(1, payload)).await.expect("write");
        let answer = until_closed(&mut tcp, secs(3)).await;
        let err =
            err_packet(&answer).unwrap_or_else(|| panic!("no ERR for {payload:?}: {answer:?}"));
        assert_eq!(err.code, 1043, "{payload:?}: {err:?}");
    }
    // A response cut in the middle of its packet.
    let mut tcp = raw(&gw).await;
    tcp.write_all(&[60, 0, 0, 1, 0x85, 0xA6])
        .await
        .expect("write");
    tcp.shutdown().await.expect("half-close");
    until_closed(&mut tcp, secs(3)).await;
    others_unaffected(&gw).await;
    gw.wait_idle(secs(5)).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_handshake_is_cut_at_the_timeout() {
    let gw = TestGateway::start_with(|c| c.gateway.handshake_timeout_secs = 1).await;
    let mut silent = raw(&gw).await;
    let mut trickle = raw(&gw).await;
    // Half a packet header, then nothing.
    trickle.write_all(&[40, 0]).await.expect("write");
    let started = Instant::now();
    until_closed(&mut silent, secs(4)).await;
    until_closed(&mut trickle, secs(4)).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800),
        "closed too early: {waited:?}"
    );
    others_unaffected(&gw).await;
    gw.wait_idle(secs(5)).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_packet_is_refused() {
    let gw = TestGateway::start_with(|c| c.gateway.max_packet_size = 1 << 20).await;
    let mut c = SqlClient::via(gw.addr, APP_USER, APP_PASSWORD, None)
        .await
        .expect("login");
    // The header alone announces too much; the gateway must not wait for the rest.
    c.conn
        .get_mut()
        .write_all(&[0xFF, 0xFF, 0x1F, 0])
        .await
        .expect("header");
    let answer = c.recv_within(secs(3)).await.expect("an answer");
    let err = ErrInfo::parse(&answer.expect("ERR").payload).expect("ERR");
    assert_eq!(err.code, 1153, "{err:?}");
    assert!(matches!(c.recv_within(secs(3)).await, Ok(None) | Err(_)));
    others_unaffected(&gw).await;
    gw.wait_idle(secs(5)).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn command_with_a_non_zero_sequence_id() {
    let gw = TestGateway::start().await;
    let mut c = SqlClient::via(gw.addr, APP_USER, APP_PASSWORD, None)
        .await
        .expect("login");
    c.send(5, vec![COM_PING]).await.expect("send");
    let answer = c.recv_within(secs(3)).await;
    assert!(
        matches!(answer, Ok(None) | Err(_))
            || answer
                .as_ref()
                .ok()
                .and_then(|p| p.as_ref())
                .is_some_and(|p| p.payload[0] == ERR_HEADER),
        "expected an error or a closed connection, got {answer:?}"
    );
    assert!(matches!(c.recv_within(secs(3)).await, Ok(None) | Err(_)));
    others_unaffected(&gw).await;
    gw.wait_idle(secs(5)).await;
    let ends = gw.session_ends();
    assert!(
        ends.iter().any(|e| e.reason.contains("sequence id 5")),
        "{ends:?}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn execute_that_does_not_match_its_statement() {
    let gw = TestGateway::start().await;
    let mut c = SqlClient::via(gw.addr, APP_USER, APP_PASSWORD, None)
        .await
        .expect("login");
    let (id, params) = c.prepare("SELECT ?, ?").await.expect("prepare");
    assert_eq!(params, 2);
    let head = |flags: u8| {
        let mut p = vec![COM_STMT_EXECUTE];
        p.extend_from_slice(&id.to_le_bytes());
        p.push(flags);
        p.extend_from_slice(&1u32.to_le_bytes());
        p
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("no null bitmap", head(0)),
        ("types never bound", [head(0), vec![0, 0]].concat()),
        ("a type missing", [head(0), vec![0, 1, 3, 0]].concat()),
        (
            "value shorter than its type",
            [head(0), vec![0, 1, 8, 0, 3, 0, 1, 2, 3]].concat(),
        ),
        (
            "unknown type",
            [head(0), vec![0, 1, 200, 0, 200, 0]].concat(),
        ),
        ("bound flag 7", [head(0), vec![0, 7]].concat()),
        (
            "trailing bytes",
            [head(0), vec![0b11, 1, 3, 0, 3, 0, 9, 9]].concat(),
        ),
        (
            "lenenc string longer than the packet",
            [head(0), vec![0, 1, 253, 0, 253, 0, 0xFC, 0xFF, 0xFF, b'a']].concat(),
        ),
        ("unknown statement", {
            let mut p = vec![COM_STMT_EXECUTE];
            p.extend_from_slice(&(id + 1000).to_le_bytes());
            p.extend_from_slice(&[0, 1, 0, 0, 0]);
            p
        }),
    ];
    for (what, payload) in cases {
        let reply = c
            .command(payload)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let err = reply.error().unwrap_or_else(|| panic!("{what}: no error"));
        assert!(matches!(err.code, 1835 | 1243), "{what}: {err:?}");
        // The connection survives.
        assert_eq!(
            c.scalar("SELECT 'alive'").await.as_deref(),
            Some("alive"),
            "{what}"
        );
    }
    // A well-formed execution still works.
    let mut ok = head(0);
    ok.extend_from_slice(&[0, 1, 3, 0, 3, 0]);
    ok.extend_from_slice(&7i32.to_le_bytes());
    ok.extend_from_slice(&8i32.to_le_bytes());
    let reply = c.command(ok).await.expect("execute");
    assert!(reply.error().is_none(), "{:?}", reply.error());
    assert_eq!(reply.facts.rows, 1);
    others_unaffected(&gw).await;
    gw.stop().await;
}

/// A fake database that greets and logs in correctly, then answers every
/// command with `answer` (raw bytes, headers included) and closes.
async fn fake_upstream(answer: Vec<u8>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        // Serve a few connections (the gateway probes the target at start).
        for _ in 0..8 {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut conn = Framed::new(tcp, PacketCodec::new(1 << 24));
                let caps = CapabilityFlags::CLIENT_PROTOCOL_41
                    | CapabilityFlags::CLIENT_SECURE_CONNECTION
                    | CapabilityFlags::CLIENT_PLUGIN_AUTH
                    | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
                    | CapabilityFlags::CLIENT_CONNECT_WITH_DB
                    | CapabilityFlags::CLIENT_TRANSACTIONS
                    | CapabilityFlags::CLIENT_MULTI_RESULTS
                    | CapabilityFlags::CLIENT_MULTI_STATEMENTS
                    | CapabilityFlags::CLIENT_PS_MULTI_RESULTS
                    | CapabilityFlags::CLIENT_LONG_PASSWORD;
                let greeting = Greeting {
                    server_version: "10.11.0-MariaDB-fake",
                    connection_id: 77,
                    scramble: b"abcdefghijklmnopqrst",
                    capabilities: caps,
                    mariadb_capabilities: Default::default(),
                    collation: 45,
                    auth_plugin: "mysql_native_password",
                };
                if conn.send(Packet::new(0, greeting.encode())).await.is_err() {
                    return;
                }
                let Some(Ok(_hello)) = conn.next().await else {
                    return;
                };
                let ok = encode_ok(OkInfo::default(), caps);
                if conn.send(Packet::new(2, ok)).await.is_err() {
                    return;
                }
                // The first command gets the garbage.
                if let Some(Ok(_command)) = conn.next().await {
                    let mut tcp = conn.into_inner();
                    let _ = tcp.write_all(&answer).await;
                    let _ = tcp.shutdown().await;
                }
            });
        }
    });
    (addr, task)
}

fn with_target(config: &mut Config, name: &str, address: String) {
    let mut target: TargetConfig = config.targets.values().next().expect("a target").clone();
    target.address = address;
    config.targets.insert(name.to_string(), target);
    config.users.insert(
        name.to_string(),
        password_user(name, "pw", "caching_sha2_password"),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_packets_from_the_upstream() {
    let mut coldef = Vec::new();
    for part in ["def", "", "", "", "a", ""] {
        chaperone_mysql::protocol::lenenc::put_lenenc_str(&mut coldef, part.as_bytes());
    }
    coldef.extend_from_slice(&[0x0C, 45, 0, 10, 0, 0, 0, 253, 0, 0, 0, 0, 0]);
    let eof = [0xFE, 0, 0, 2, 0];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty packet", packet(1, &[])),
        (
            "a row then a packet out of sequence",
            [
                packet(1, &[1]),
                packet(2, &coldef),
                packet(3, &eof),
                packet(4, &[1, b'x']),
                packet(9, &[1, b'y']),
            ]
            .concat(),
        ),
        (
            "a row then a truncated packet",
            [
                packet(1, &[1]),
                packet(2, &coldef),
                packet(3, &eof),
                packet(4, &[1, b'x']),
                vec![9, 0, 0, 5, 1],
            ]
            .concat(),
        ),
        ("not a column count", packet(1, &[0xFC, 0x01])),
        ("wrong sequence id", packet(9, &[0x00, 0, 0, 2, 0, 0, 0])),
        ("truncated packet", vec![50, 0, 0, 1, 1, 2, 3]),
        (
            "column count then garbage",
            [packet(1, &[1]), packet(2, &[0xFB, 0xFB])].concat(),
        ),
        ("closed without answer", vec![]),
        ("oversized packet", vec![0xFF, 0xFF, 0xFF, 1, 0, 0]),
    ];
    for (what, answer) in cases {
        let (fake, task) = fake_upstream(answer).await;
        let gw = TestGateway::start_with(|c| with_target(c, "fake", fake.to_string())).await;
        let mut c = SqlClient::via(gw.addr, "fake", "pw", None)
            .await
            .unwrap_or_else(|e| panic!("{what}: login through the fake database: {e}"));
        let res = within(secs(5), what, c.query("SELECT 1")).await;
        let err = res.err().unwrap_or_else(|| panic!("{what}: no error"));
        if what == "column count then garbage" {
            // An ERR cannot stand in for a column definition: the client sees a
            // broken response, and the connection closes.
        } else {
            let server = err.server().unwrap_or_else(|| panic!("{what}: {err}"));
            assert_eq!(server.code, 2013, "{what}: {server:?}");
            assert!(server.message.contains("Chaperone"), "{what}: {server:?}");
        }
        assert!(
            matches!(c.recv_within(secs(3)).await, Ok(None) | Err(_)),
            "{what}: closed"
        );
        others_unaffected(&gw).await;
        gw.wait_idle(secs(5)).await;
        let ends = gw.session_ends();
        assert!(
            ends.iter().any(|e| e.reason.starts_with("upstream_closed")),
            "{what}: {ends:?}"
        );
        gw.stop().await;
        task.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down() {
    // A port nobody listens on.
    let down = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = down.local_addr().expect("addr");
    drop(down);
    let gw = TestGateway::start_with(|c| with_target(c, "down", addr.to_string())).await;
    let started = Instant::now();
    let err = within(
        secs(10),
        "login to a down target",
        SqlClient::via(gw.addr, "down", "pw", None),
    )
    .await
    .err()
    .expect("refused");
    assert!(started.elapsed() < secs(3), "answered promptly");
    let server = err.server().unwrap_or_else(|| panic!("{err}"));
    assert_eq!(server.code, 2003, "{server:?}");
    assert!(
        server.message.contains("cannot reach the database"),
        "{server:?}"
    );
    assert!(
        !server.message.contains("root"),
        "never names the gateway's database user"
    );
    others_unaffected(&gw).await;
    gw.wait_idle(secs(5)).await;
    assert!(gw.shared.metrics.upstream_connect_failures_total.get() >= 1);
    gw.stop().await;
}

/// The client disappears in the middle of a 200,000-row result: the gateway
/// closes its upstream connection and forgets the session.
#[tokio::test(flavor = "multi_thread")]
async fn client_vanishing_mid_result() {
    let gw = TestGateway::start().await;
    let db = TestDb::create("chp_gw_vanish").await;
    let mut c = SqlClient::via(gw.addr, APP_USER, APP_PASSWORD, Some(&db.name))
        .await
        .expect("login");
    let upstream_id = c.scalar("SELECT CONNECTION_ID()").await.expect("id");
    let mut q = vec![COM_QUERY];
    q.extend_from_slice(b"SELECT seq, REPEAT('x', 200) FROM seq_1_to_200000");
    c.send(0, q).await.expect("send");
    for _ in 0..50 {
        c.recv().await.expect("packet").expect("packet");
    }
    assert_eq!(gw.active_connections(), 1);
    drop(c);
    gw.wait_idle(secs(10)).await;
    let mut root = SqlClient::direct(None).await;
    let sql =
        format!("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {upstream_id}");
    let deadline = Instant::now() + secs(10);
    loop {
        if root.scalar(&sql).await.as_deref() == Some("0") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "upstream connection {upstream_id} still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ends = gw.session_ends();
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0].reason, "client_disconnected");
    others_unaffected(&gw).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_limit() {
    let gw = TestGateway::start_with(|c| c.gateway.max_connections = 2).await;
    let mut a = SqlClient::via(gw.addr, APP_USER, APP_PASSWORD, None)
        .await
        .expect("first");
    let b = SqlClient::via(gw.addr, APP_USER, APP_PASSWORD, None)
        .await
        .expect("second");
    let err = SqlClient::via(gw.addr, APP_USER, APP_PASSWORD, None)
        .await
        .err()
        .expect("third refused");
    assert_eq!(err.server().map(|e| e.code), Some(1040), "{err}");
    assert_eq!(a.scalar("SELECT 1").await.as_deref(), Some("1"));
    b.quit().await;
    // A slot frees up once a client leaves.
    wait_until(secs(5), "a slot is free", || gw.active_connections() < 2).await;
    let mut c = SqlClient::via(gw.addr, APP_USER, APP_PASSWORD, None)
        .await
        .expect("again");
    assert_eq!(c.scalar("SELECT 2").await.as_deref(), Some("2"));
    gw.stop().await;
}

/// Shutdown lets an in-flight command finish, closes idle sessions and stops
/// accepting.
#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown() {
    let mut gw = TestGateway::start_with(|c| c.gateway.shutdown_grace_secs = 10).await;
    let mut busy = SqlClient::via(gw.addr, APP_USER, APP_PASSWORD, None)
        .await
        .expect("busy");
    let mut idle = SqlClient::via(gw.addr, APP_USER, APP_PASSWORD, None)
        .await
        .expect("idle");
    let mut q = vec![COM_QUERY];
    q.extend_from_slice(b"SELECT SLEEP(2) AS slept");
    busy.send(0, q).await.expect("send");
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.request_shutdown();
    let started = Instant::now();
    // The idle session is closed right away.
    assert!(matches!(idle.recv_within(secs(3)).await, Ok(None) | Err(_)));
    // The busy one gets its result.
    let reply = within(secs(6), "the in-flight SLEEP", busy.read_reply(COM_QUERY))
        .await
        .expect("the in-flight command finishes");
    assert!(reply.error().is_none(), "{:?}", reply.error());
    assert_eq!(reply.facts.rows, 1);
    assert!(started.elapsed() >= Duration::from_millis(1200));
    gw.join(secs(8)).await;
    assert!(
        TcpStream::connect(gw.addr).await.is_err(),
        "no new connections after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_timeout() {
    let gw = TestGateway::start_with(|c| c.gateway.idle_timeout_secs = 1).await;
    let mut c = SqlClient::via(gw.addr, APP_USER, APP_PASSWORD, None)
        .await
        .expect("login");
    // Activity keeps the session alive.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(c.scalar("SELECT 1").await.as_deref(), Some("1"));
    }
    let started = Instant::now();
    let packet = c
        .recv_within(secs(4))
        .await
        .expect("a packet")
        .expect("an ERR");
    let err = ErrInfo::parse(&packet.payload).expect("ERR");
    assert_eq!(err.code, 4031, "{err:?}");
    assert!(err.message.contains("inactivity"), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert!(matches!(c.recv_within(secs(3)).await, Ok(None) | Err(_)));
    gw.wait_idle(secs(5)).await;
    assert_eq!(gw.session_ends()[0].reason, "idle_timeout");
    gw.stop().await;
}

/// A KILL that the gateway cannot rewrite to the server's connection id never
/// reaches the server. Every session of a target shares the gateway's upstream
/// user, which may kill its own connections: a KILL naming a server id must not
/// slip through beside another statement, prepared, or as dynamic SQL, or one
/// agent could end another's session.
#[tokio::test(flavor = "multi_thread")]
async fn kill_hidden_from_the_id_mapping_is_refused() {
    let gw = TestGateway::start().await;
    let mut victim = SqlClient::via(gw.addr, APP_USER, APP_PASSWORD, None)
        .await
        .expect("victim logs in");
    let upstream_id = gw
        .session_by_connection_id(victim.connection_id())
        .expect("victim's session")
        .upstream_connection_id;
    let mut attacker = SqlClient::via(gw.addr, APP_USER, APP_PASSWORD, None)
        .await
        .expect("attacker logs in");
    for sql in [
        format!("SELECT 1; KILL {upstream_id}"),
        format!("SELECT 1;KILL QUERY {upstream_id};"),
        format!("DO 1; /*!KILL {upstream_id}*/"),
        format!("PREPARE s FROM 'KILL {upstream_id}'"),
        format!("EXECUTE IMMEDIATE 'KILL {upstream_id}'"),
    ] {
        let err = attacker.query(&sql).await.expect_err(&sql).to_string();
        assert!(
            err.contains("KILL must be sent as a query of its own"),
            "{sql}: {err}"
        );
    }
    let err = attacker
        .prepare(&format!("KILL {upstream_id}"))
        .await
        .expect_err("prepared KILL")
        .to_string();
    assert!(
        err.contains("KILL must be sent as a query of its own"),
        "{err}"
    );
    // The attacker's connection is fine, and the victim's was never touched.
    assert_eq!(attacker.scalar("SELECT 2").await.as_deref(), Some("2"));
    assert_eq!(victim.scalar("SELECT 1").await.as_deref(), Some("1"));
    assert_eq!(
        victim.scalar("SELECT CONNECTION_ID()").await,
        Some(upstream_id.to_string()),
        "the victim still runs on the same server connection"
    );
    attacker.quit().await;
    victim.quit().await;
    gw.stop().await;
}
