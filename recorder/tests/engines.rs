//! docs/archive-engines.md: every snippet marked `<!-- tested: duckdb -->` or
//! `<!-- tested: pyarrow -->` runs verbatim (the path `archive` replaced by a
//! real archive's directory) and returns what the catalog behind
//! `chaperone query` returns for the same question. Also after compaction, as
//! engines read compacted files the same way.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use chaperone_catalog::{render, Catalog, CatalogOptions, Format};
use chaperone_recorder::Store;
use serde_json::Value;
use support::*;

const DOC: &str = include_str!("../../docs/archive-engines.md");

/// The code blocks after each `<!-- tested: ENGINE -->` marker.
fn snippets(engine: &str) -> Vec<String> {
    let marker = format!("<!-- tested: {engine} -->");
    DOC.split(&marker)
        .skip(1)
        .map(|rest| {
            let body = rest.split_once("```").expect("a code block").1;
            let body = body.split_once('\n').expect("a language tag").1;
            body.split_once("```")
                .expect("the block ends")
                .0
                .to_string()
        })
        .collect()
}

/// Rows of `sql` from the catalog, as JSON arrays of their values.
fn ours(store: &Store, sql: &str) -> Vec<Vec<Value>> {
    let text = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let catalog = Catalog::open(store.clone(), CatalogOptions::default())
                .await
                .unwrap();
            render(&catalog.query(sql).await.unwrap(), Format::Json).unwrap()
        });
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let row: serde_json::Map<String, Value> = serde_json::from_str(l).unwrap();
            row.into_iter().map(|(_, v)| v).collect()
        })
        .collect()
}

fn duckdb(root: &str, sql: &str) -> Vec<Vec<Value>> {
    let out = python(
        r#"
import sys, json, duckdb
rows = duckdb.sql(sys.argv[2].replace("'archive/", "'" + sys.argv[1] + "/")).fetchall()
print(json.dumps([list(r) for r in rows], default=str))
"#,
        &[root, sql],
    );
    serde_json::from_str(&out).unwrap()
}

fn pyarrow(root: &str, code: &str) -> Value {
    let out = python(
        r#"
import sys, json
root, code = sys.argv[1], sys.argv[2]
code = code.replace('"archive/', '"' + root + '/')
exec(code, {"print": lambda x: sys.stdout.write(json.dumps(x, default=str))})
"#,
        &[root, code],
    );
    serde_json::from_str(&out).unwrap()
}

/// Object keys in the JSON lines come out sorted; compare on a canonical form.
fn canonical(mut rows: Vec<Vec<Value>>) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = rows
        .iter_mut()
        .map(|r| {
            let mut cells: Vec<String> = r
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            cells.sort();
            cells
        })
        .collect();
    out.sort();
    out
}

fn check_all(store: &Store, root: &str) {
    let duck = snippets("duckdb");
    assert_eq!(duck.len(), 3, "the doc's DuckDB snippets");
    let expected = [
        "SELECT subject, date, count(*) AS statements FROM statements GROUP BY subject, date",
        "SELECT subject, session_id, command_index, 'read' AS access, table_name FROM table_access \
         WHERE access = 'read' AND table_name = 'shop.t'",
        "SELECT session_id, count(*) AS frames, min(seq) AS first_seq, max(seq) AS last_seq \
         FROM frames GROUP BY session_id",
    ];
    for (snippet, ours_sql) in duck.iter().zip(expected) {
        let theirs = duckdb(root, snippet);
        assert!(!theirs.is_empty(), "{snippet}");
        assert_eq!(
            canonical(theirs),
            canonical(ours(store, ours_sql)),
            "{snippet}"
        );
    }
    let py = snippets("pyarrow");
    assert_eq!(py.len(), 1);
    let theirs = pyarrow(root, &py[0]);
    let theirs: Vec<Vec<Value>> = theirs
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_object().unwrap().values().cloned().collect())
        .collect();
    assert!(!theirs.is_empty());
    assert_eq!(
        canonical(theirs),
        canonical(ours(
            store,
            "SELECT subject, count(sql) AS sql_count FROM statements \
             WHERE statement_class = 'read' GROUP BY subject"
        ))
    );
}

#[test]
fn the_documented_duckdb_and_pyarrow_queries_match_the_catalog() {
    let tmp = tempdir("engines");
    let archive = tmp.path().join("archive");
    let root = archive.to_str().unwrap().to_string();
    let rec = open(config(&root, &tmp.path().join("spool")));
    for (i, subject) in ["agent-a", "agent-b", "agent-a"].iter().enumerate() {
        let mut s = FakeSession::start(&rec, &format!("eng-{i}"), subject);
        for q in 0..4 {
            s.query(&rec, &format!("SELECT {i}, {q} FROM shop.t"), 2, 16);
        }
        s.end(&rec);
        assert!(rec.flush(Duration::from_secs(30)));
    }
    rec.shutdown(Duration::from_secs(10));
    let store = Store::open(&root, &BTreeMap::new()).unwrap();
    check_all(&store, &root);

    // The same after compaction.
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(chaperone_archive::lifecycle::compact(
            &store,
            &key,
            &chaperone_archive::lifecycle::CompactOptions {
                target_bytes: 64 << 20,
                sealed_before_ns: chaperone_schemas::event::now_ns(),
                zstd_level: 3,
                dry_run: false,
                gateway: None,
            },
            &mut |_| {},
        ))
        .unwrap();
    assert!(parquet_files(&archive.join("v1/frames"))
        .iter()
        .all(|f| f.to_string_lossy().contains('_')));
    check_all(&store, &root);
}
