//! The `mariadb` command-line client through the gateway, plain and with TLS.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_cli_plain_and_tls() {
    let gw = TestGateway::start().await;
    let db = TestDb::create("chp_gw_cli").await;
    for tls in [false, true] {
        let mut cmd = clients::mariadb(gw.addr, APP_USER, APP_PASSWORD)
            .arg(format!("--database={}", db.name))
            .arg("-e")
            .arg("SELECT 1+1, 'é😀', NULL; SHOW SESSION STATUS LIKE 'Ssl_cipher'");
        if tls {
            cmd = cmd.arg("--ssl");
        }
        let out = cmd.run().await;
        out.assert_success();
        assert!(out.stdout.starts_with("2\té😀\tNULL\n"), "{out}");
    }
    gw.stop().await;
}
