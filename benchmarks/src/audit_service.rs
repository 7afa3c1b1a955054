//! The audit service over a large archive (issue 5's acceptance numbers): the
//! real `chaperone_query_ui` service (router, access layer, DataFusion catalog
//! with the service's options) on a loopback port of this process, asked over
//! HTTP as the web UI and API clients ask it:
//!
//! - session search by table and by agent (`GET /api/sessions`), target p50 < 300 ms;
//! - opening a 100,000-statement session, first page (`GET /api/sessions/{id}`),
//!   target < 200 ms;
//! - SQL "statements per agent per day for 30 days" (`POST /api/sql`), target < 1 s.
//!
//! The archive is `archive-query generate --big-session 100000` (one session of
//! that many statements in the newest hour, besides the generated traffic).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use crate::table::Table as TextTable;

#[derive(Debug, Args)]
pub struct Options {
    /// The archive (from `archive-query generate --big-session N`).
    #[arg(long)]
    archive: String,
    /// Timed repetitions of each request (after one cold request).
    #[arg(long, default_value_t = 7)]
    repeat: usize,
    /// The session to open (default: the archive's longest session).
    #[arg(long)]
    session: Option<String>,
}

pub fn run(options: Options) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(measure(&options))
}

struct Timing {
    cold: Duration,
    warm: Vec<Duration>,
    detail: String,
}

impl Timing {
    fn p50(&self) -> Duration {
        let mut w = self.warm.clone();
        w.sort();
        w[w.len() / 2]
    }
    fn max(&self) -> Duration {
        self.warm.iter().copied().max().unwrap_or_default()
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e3)
}

async fn measure(o: &Options) -> anyhow::Result<()> {
    let config: toml::Table = toml::from_str(
        "listen = \"127.0.0.1:0\"\ndemo_mode = true\nquery_timeout_secs = 120\nmax_rows = 10000\n",
    )?;
    let config = chaperone_query_ui::UiConfig::from_toml(&config)?;
    let started = Instant::now();
    let state = chaperone_query_ui::open(config, &o.archive, &BTreeMap::new()).await?;
    let (addr, _task) = chaperone_query_ui::serve(state, std::future::pending()).await?;
    println!(
        "audit service over {} on {addr} (opened in {} ms)\n",
        o.archive,
        ms(started.elapsed())
    );
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let get = |path: String| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let r = client.get(&url).send().await?;
            let status = r.status();
            let body = r.text().await?;
            anyhow::ensure!(status.is_success(), "GET {url}: {status}: {body}");
            Ok::<_, anyhow::Error>(serde_json::from_str::<serde_json::Value>(&body)?)
        }
    };
    let post_sql = |sql: String| {
        let client = client.clone();
        let url = format!("{base}/api/sql");
        async move {
            let r = client
                .post(&url)
                .header("content-type", "application/json")
                .body(serde_json::json!({ "sql": sql }).to_string())
                .send()
                .await?;
            let status = r.status();
            let body = r.text().await?;
            anyhow::ensure!(status.is_success(), "POST /api/sql: {status}: {body}");
            Ok::<_, anyhow::Error>(serde_json::from_str::<serde_json::Value>(&body)?)
        }
    };

    // The longest session, unless named.
    let session = match &o.session {
        Some(s) => s.clone(),
        None => {
            let v = post_sql(
                "SELECT session_id, commands FROM session_list ORDER BY commands DESC LIMIT 1"
                    .into(),
            )
            .await?;
            v["rows"][0]["session_id"]
                .as_str()
                .context("no sessions in the archive")?
                .to_string()
        }
    };

    let today = chaperone_schemas::Partition::of_ns(chaperone_schemas::event::now_ns()).date();
    let thirty_days_ago = chaperone_schemas::Partition::of_ns(
        chaperone_schemas::event::now_ns() - 30 * 86_400_000_000_000,
    )
    .date();
    let per_agent_per_day = format!(
        "SELECT subject, date, count(*) AS statements FROM statements \
         WHERE date >= '{thirty_days_ago}' GROUP BY subject, date ORDER BY subject, date"
    );
    let cases: Vec<(&str, Request)> = vec![
        (
            "search by table db0.t0 (most used), 30 days",
            Request::Get("/api/sessions?table=db0.t0&since=30d".into()),
        ),
        (
            "search by table db7.t257 (rare), 30 days",
            Request::Get("/api/sessions?table=db7.t257&since=30d".into()),
        ),
        (
            "search by table db0.t0, 24 h",
            Request::Get("/api/sessions?table=db0.t0&since=24h".into()),
        ),
        (
            "search by table t0 (bare name), 30 days",
            Request::Get("/api/sessions?table=t0&since=30d".into()),
        ),
        (
            "search by agent agent-000 (most active), 30 days",
            Request::Get("/api/sessions?agent=agent-000&since=30d".into()),
        ),
        (
            "search by agent agent-199 (least active), 30 days",
            Request::Get("/api/sessions?agent=agent-199&since=30d".into()),
        ),
        (
            "search, no filter, 30 days",
            Request::Get("/api/sessions?since=30d".into()),
        ),
        (
            "open the longest session, first page (200)",
            Request::Get(format!("/api/sessions/{session}?limit=200")),
        ),
        (
            "the same session, page at offset 99,800",
            Request::Get(format!("/api/sessions/{session}?limit=200&offset=99800")),
        ),
        (
            "SQL: statements per agent per day, 30 days",
            Request::Sql(per_agent_per_day),
        ),
    ];
    let mut out = TextTable::new(["request", "cold ms", "p50 ms", "max ms", "result"]);
    for (name, request) in cases {
        let run = || async {
            let t = Instant::now();
            let v = match &request {
                Request::Get(path) => get(path.clone()).await?,
                Request::Sql(sql) => post_sql(sql.clone()).await?,
            };
            Ok::<_, anyhow::Error>((t.elapsed(), v))
        };
        let (cold, v) = run().await?;
        let detail = describe(&v);
        let mut warm = Vec::new();
        for _ in 0..o.repeat.max(1) {
            warm.push(run().await?.0);
        }
        let t = Timing { cold, warm, detail };
        out.row([
            name.to_string(),
            ms(t.cold),
            ms(t.p50()),
            ms(t.max()),
            t.detail.clone(),
        ]);
        eprintln!("{name}: p50 {} ms", ms(t.p50()));
    }
    println!("{}", out.render());
    println!("(today: {today}; session {session})");
    Ok(())
}

enum Request {
    Get(String),
    Sql(String),
}

/// What came back, in a few words: row counts.
fn describe(v: &serde_json::Value) -> String {
    for key in ["sessions", "rows"] {
        if let Some(a) = v[key].as_array() {
            return format!("{} {key}", a.len());
        }
    }
    if let Some(a) = v["statements"].as_array() {
        return format!(
            "{} statements of {}",
            a.len(),
            v["session"]["commands"].as_u64().unwrap_or(0)
        );
    }
    String::new()
}
