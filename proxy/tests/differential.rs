//! The differential test: each client runs the same queries
//! (`tests/clients/differential_queries.json`: every column type family, NULLs,
//! multi-statements and multi-results, a stored procedure, errors and warnings,
//! text and prepared) once directly against MariaDB and once through the
//! gateway. What it gets must be identical, down to the column metadata and the
//! warnings: the expectations are MariaDB's own answers, not hand-written ones.

mod support;

use std::net::SocketAddr;

use serde_json::Value;
use support::clients::{node, python, ClientCommand};
use support::*;

/// One client configuration: how to start it (without the connection options).
struct Run {
    name: &'static str,
    command: fn() -> ClientCommand,
}

const RUNS: &[Run] = &[
    Run {
        name: "PyMySQL",
        command: || python("differential.py").args(["--driver", "pymysql"]),
    },
    Run {
        name: "mysqlclient (MySQLdb)",
        command: || python("differential.py").args(["--driver", "mysqldb"]),
    },
    Run {
        name: "mysql-connector-python, C extension",
        command: || python("differential.py").args(["--driver", "connector-c"]),
    },
    Run {
        name: "mysql-connector-python, C extension, prepared",
        command: || python("differential.py").args(["--driver", "connector-c", "--prepared"]),
    },
    Run {
        name: "mysql-connector-python, pure Python",
        command: || python("differential.py").args(["--driver", "connector-pure"]),
    },
    Run {
        name: "mysql-connector-python, pure Python, prepared",
        command: || python("differential.py").args(["--driver", "connector-pure", "--prepared"]),
    },
    Run {
        name: "node mysql2 query",
        command: || node("differential.js").args(["--mode", "query"]),
    },
    Run {
        name: "node mysql2 execute",
        command: || node("differential.js").args(["--mode", "execute"]),
    },
];

fn spec() -> Value {
    let path = clients::clients_dir().join("differential_queries.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("read queries")).expect("JSON")
}

/// Where the outputs first differ, for a readable failure.
fn first_difference(direct: &Value, via: &Value) -> String {
    let (Some(a), Some(b)) = (direct["queries"].as_array(), via["queries"].as_array()) else {
        return "no query list".into();
    };
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x != y {
            let show = |v: &Value| {
                let s = serde_json::to_string_pretty(v).unwrap_or_default();
                s.chars().take(3000).collect::<String>()
            };
            return format!(
                "query #{i} ({}):\n--- direct\n{}\n--- through the gateway\n{}",
                x["name"],
                show(x),
                show(y)
            );
        }
    }
    format!(
        "{} queries directly, {} through the gateway",
        a.len(),
        b.len()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_client_gets_through_the_gateway_what_it_gets_directly() {
    let gw = TestGateway::start().await;
    let db = TestDb::create("chp_gw_differential").await;
    let spec = spec();
    let mut root = db.root().await;
    for sql in spec["setup"].as_array().expect("setup list") {
        root.exec(sql.as_str().expect("setup SQL")).await;
    }
    root.quit().await;
    let mariadb: SocketAddr = MARIADB_ADDR.parse().expect("address");

    let runs = RUNS.iter().map(|run| {
        let db = db.name.clone();
        async move {
            let direct = (run.command)()
                .connect_to(mariadb, MARIADB_USER, MARIADB_PASSWORD, Some(&db))
                .run();
            let via = (run.command)()
                .connect_to(gw.addr, APP_USER, APP_PASSWORD, Some(&db))
                .run();
            let (direct, via) = tokio::join!(direct, via);
            (run.name, direct, via)
        }
    });
    let outputs = futures::future::join_all(runs).await;

    let expected_queries = spec["queries"].as_array().expect("queries").len();
    for (name, direct, via) in outputs {
        direct.assert_success();
        via.assert_success();
        let (direct, via) = (direct.json(), via.json());
        let queries = direct["queries"].as_array().expect("query list");
        // The comparison means something only if the queries really ran: most of
        // them (prepared runs skip the multi-statement ones), with rows.
        assert!(
            queries.len() >= expected_queries - 4,
            "{name}: only {} queries ran",
            queries.len()
        );
        let rows: usize = queries
            .iter()
            .flat_map(|q| q["results"].as_array().into_iter().flatten())
            .map(|r| r["rows"].as_array().map_or(0, Vec::len))
            .sum();
        assert!(rows > 3000, "{name}: only {rows} rows came back");
        assert!(
            direct.to_string().contains("😀"),
            "{name}: the emoji values are missing"
        );
        assert!(
            direct == via,
            "{name}: the gateway changed what the client sees; first difference at {}",
            first_difference(&direct, &via)
        );
    }
    gw.stop().await;
}
