//! One parse per statement on the hot path: a statement that is masked,
//! guarded and recorded is parsed once — its facts, its guardrail verdict and
//! its masking lineage all come from one `Analysis` — and a repeated text is
//! not parsed again (the analysis cache). Its own test binary: the parse
//! counter is process-wide.

mod support;

use chaperone_proxy::guardrails::config::PolicyConfig;
use support::clients::mariadb;
use support::*;

const MASKING: &str = r#"
key = "test-masking-key-0123456789"
[roles."*"]
strict = true
[[roles."*".rules]]
name = "email"
table = "people"
column = "email"
strategy = "partial"
keep_prefix = 1
keep_domain = true
"#;

const POLICY: &str = r#"
classes = ["read", "write", "session", "transaction"]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_masked_guarded_recorded_statement_is_parsed_once() {
    let gw = TestGateway::start_with(|c| {
        c.masking = toml::from_str(MASKING).expect("masking config");
        let policy: PolicyConfig = toml::from_str(POLICY).expect("policy");
        c.policies.insert("reads".into(), policy);
        c.users.get_mut(APP_USER).expect("app user").policy = Some("reads".into());
    })
    .await;
    let db = TestDb::create("chp_one_parse").await;
    db.root()
        .await
        .exec("CREATE TABLE people (id INT PRIMARY KEY, email VARCHAR(100))")
        .await;
    db.root()
        .await
        .exec("INSERT INTO people VALUES (1, 'ana.lopez@example.com')")
        .await;
    // A text no one has sent before in this process.
    let sql = "SELECT email AS one_parse_email FROM people WHERE id = 1";
    let run = || async {
        mariadb(gw.addr, APP_USER, APP_PASSWORD)
            .args(["-D", &db.name, "-e", sql])
            .run()
            .await
    };
    // The CLI sends its own statements on connecting (`select @@version_comment
    // limit 1`): a first session gets them analysed and cached.
    mariadb(gw.addr, APP_USER, APP_PASSWORD)
        .args(["-D", &db.name, "-e", "SELECT 1"])
        .run()
        .await
        .assert_success();
    let before = chaperone_sql::texts_parsed();
    let first = run().await;
    let after_first = chaperone_sql::texts_parsed();
    first.assert_success();
    assert!(
        first.stdout.contains("a***@example.com") && !first.stdout.contains("ana.lopez"),
        "masked: {}",
        first.stdout
    );
    let second = run().await;
    second.assert_success();
    let after_second = chaperone_sql::texts_parsed();

    let commands: Vec<_> = gw
        .sessions()
        .iter()
        .flat_map(|s| gw.commands(&s.session_id))
        .filter(|c| c.sql.as_deref() == Some(sql))
        .collect();
    assert_eq!(commands.len(), 2, "both runs recorded");
    assert!(commands
        .iter()
        .all(|c| c.masked_columns.iter().any(|m| m.contains("email"))));
    assert_eq!(
        after_first - before,
        1,
        "the statement is parsed once for its facts, its verdict and its masking"
    );
    assert_eq!(
        after_second - after_first,
        0,
        "a repeated text is not parsed again"
    );
    gw.stop().await;
}
