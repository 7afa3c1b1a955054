//! Loading a recorded session from the archive: its statements up front, the
//! frames of one command on demand (pushdown by `session_id` and
//! `command_index`, so a 100,000-statement session starts at once).
//!
//! This is the one seam between the replayer and the archive's read side:
//! [`SessionSource`]. [`Archive`] implements it with the shared catalog over the
//! `chaperone_schemas` layout (hive `date=/hour=` partitions).

use arrow::array::{
    Array, AsArray, BinaryArray, BooleanArray, Int32Array, Int64Array, ListArray, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::DataType;
use chaperone_catalog::{quote as sql_string, Catalog, CatalogOptions};
use chaperone_schemas::tables::{frames as fcol, statements as scol, Table};

use crate::model::{Direction, Frame, SessionInfo, Statement};

/// Why a session could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot open the archive {0}: {1}")]
    Open(String, String),
    #[error("session {0} is not in the archive {1} (list sessions with `chaperone sessions`)")]
    UnknownSession(String, String),
    #[error("damaged archive file {file}: {detail} (run `chaperone verify --store {store}`)")]
    Damaged {
        file: String,
        store: String,
        detail: String,
    },
    #[error("reading the archive {store}: {detail}")]
    Query { store: String, detail: String },
    #[error("no session of agent {0} in the archive")]
    NoAgentSessions(String),
}

/// Where sessions come from. One implementation today ([`Archive`]); the seam
/// lets the replayer switch to the shared catalog without touching the rest.
#[allow(async_fn_in_trait)]
pub trait SessionSource {
    /// All statements of a session, in `command_index` order.
    async fn statements(&self, session_id: &str) -> Result<Vec<Statement>, ArchiveError>;
    /// The frames of one command of a session, in `seq` order.
    async fn frames(
        &self,
        session_id: &str,
        command_index: i64,
    ) -> Result<Vec<Frame>, ArchiveError>;
    /// Every client-to-server frame of a session (the requests), in `seq` order.
    async fn requests(&self, session_id: &str) -> Result<Vec<Frame>, ArchiveError>;
}

/// An archive opened for reading, through the shared catalog
/// ([`chaperone_catalog::Catalog`]: partition pruning and parquet
/// pushdown by `session_id` / `command_index`).
pub struct Archive {
    catalog: Catalog,
}

impl Archive {
    /// Opens an archive: a local directory or an object-store URL (as in `[archive] store`).
    pub async fn open(location: &str) -> Result<Archive, ArchiveError> {
        let catalog =
            Catalog::open_location(location, &Default::default(), CatalogOptions::default())
                .await
                .map_err(|e| ArchiveError::Open(location.to_string(), e.to_string()))?;
        Ok(Archive { catalog })
    }

    pub fn description(&self) -> &str {
        &self.catalog.store().description
    }

    /// Runs a query; on a read failure, names the damaged file when one is.
    async fn query(&self, sql: &str, table: Table) -> Result<Vec<RecordBatch>, ArchiveError> {
        let result = self.catalog.query(sql).await;
        match result {
            Ok(b) => Ok(b),
            Err(e) => Err(self.find_damage(table, e.to_string()).await),
        }
    }

    /// Reads the footer of each file of `table` to say which one is damaged.
    async fn find_damage(&self, table: Table, detail: String) -> ArchiveError {
        let layout = chaperone_schemas::layout::Layout::new(&self.catalog.store().prefix);
        if let Ok(files) = self.catalog.store().list(&layout.table_root(table)).await {
            for (path, size) in files {
                if !path.ends_with(".parquet") {
                    continue;
                }
                let _ = size;
                let check = match self.catalog.store().get(&path).await {
                    Ok(bytes) => parquet::file::reader::SerializedFileReader::new(bytes)
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = check {
                    return ArchiveError::Damaged {
                        file: path,
                        store: self.catalog.store().description.clone(),
                        detail: e,
                    };
                }
            }
        }
        ArchiveError::Query {
            store: self.catalog.store().description.clone(),
            detail,
        }
    }

    /// The sessions of an agent (subject or display name), most recent last.
    pub async fn sessions_of_agent(&self, agent: &str) -> Result<Vec<SessionInfo>, ArchiveError> {
        let agent = sql_string(agent);
        let sql = format!(
            "SELECT session_id, min(started_at) AS started_at, min(subject) AS subject, \
             min(display_name) AS display_name FROM sessions \
             WHERE subject = {agent} OR display_name = {agent} OR client_user = {agent} \
             GROUP BY session_id ORDER BY started_at, session_id"
        );
        let batches = self.query(&sql, Table::Sessions).await?;
        let mut out = Vec::new();
        for b in &batches {
            let ids = str_col(b, "session_id");
            let started = b.column_by_name("started_at").and_then(|c| {
                c.as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .cloned()
            });
            let subject = str_col(b, "subject");
            let name = str_col(b, "display_name");
            for i in 0..b.num_rows() {
                out.push(SessionInfo {
                    session_id: get_str(&ids, i).unwrap_or_default(),
                    started_at_us: started
                        .as_ref()
                        .and_then(|s| (!s.is_null(i)).then(|| s.value(i))),
                    subject: get_str(&subject, i),
                    display_name: get_str(&name, i),
                });
            }
        }
        Ok(out)
    }
}

impl SessionSource for Archive {
    async fn statements(&self, session_id: &str) -> Result<Vec<Statement>, ArchiveError> {
        let sql = format!(
            "SELECT * FROM statements WHERE session_id = {} ORDER BY command_index",
            sql_string(session_id)
        );
        let batches = self.query(&sql, Table::Statements).await?;
        let mut out = Vec::new();
        for b in &batches {
            statements_from_batch(b, &mut out);
        }
        if out.is_empty() {
            return Err(ArchiveError::UnknownSession(
                session_id.to_string(),
                self.catalog.store().description.clone(),
            ));
        }
        Ok(out)
    }

    async fn frames(
        &self,
        session_id: &str,
        command_index: i64,
    ) -> Result<Vec<Frame>, ArchiveError> {
        self.frames_where(&format!(
            "session_id = {} AND command_index = {command_index}",
            sql_string(session_id)
        ))
        .await
    }

    async fn requests(&self, session_id: &str) -> Result<Vec<Frame>, ArchiveError> {
        self.frames_where(&format!(
            "session_id = {} AND direction = 'client_to_server'",
            sql_string(session_id)
        ))
        .await
    }
}

impl Archive {
    async fn frames_where(&self, filter: &str) -> Result<Vec<Frame>, ArchiveError> {
        let sql = format!(
            "SELECT seq, command_index, time, direction, payload, payload_length, payload_capped \
             FROM frames WHERE {filter} ORDER BY seq"
        );
        let batches = self.query(&sql, Table::Frames).await?;
        let mut out = Vec::new();
        for b in &batches {
            let seq = i64_col(b, fcol::SEQ);
            let index = i64_col(b, fcol::COMMAND_INDEX);
            let time = b.column_by_name(fcol::TIME).and_then(|c| {
                c.as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .cloned()
            });
            let dir = str_col(b, fcol::DIRECTION);
            let payload = b
                .column_by_name(fcol::PAYLOAD)
                .and_then(|c| c.as_any().downcast_ref::<BinaryArray>().cloned());
            let len = i64_col(b, fcol::PAYLOAD_LENGTH);
            let capped = bool_col(b, fcol::PAYLOAD_CAPPED);
            for i in 0..b.num_rows() {
                out.push(Frame {
                    seq: get_i64(&seq, i).unwrap_or(0),
                    command_index: get_i64(&index, i).unwrap_or(0),
                    time_us: time.as_ref().map(|t| t.value(i)).unwrap_or(0),
                    direction: if get_str(&dir, i).as_deref() == Some("client_to_server") {
                        Direction::ClientToServer
                    } else {
                        Direction::ServerToClient
                    },
                    payload: payload
                        .as_ref()
                        .map(|p| p.value(i).to_vec())
                        .unwrap_or_default(),
                    payload_length: get_i64(&len, i).unwrap_or(0),
                    capped: get_bool(&capped, i).unwrap_or(false),
                });
            }
        }
        Ok(out)
    }
}

fn statements_from_batch(b: &RecordBatch, out: &mut Vec<Statement>) {
    let session = str_col(b, scol::SESSION_ID);
    let index = i64_col(b, scol::COMMAND_INDEX);
    let started = b.column_by_name(scol::STARTED_AT).and_then(|c| {
        c.as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .cloned()
    });
    let duration = i64_col(b, scol::DURATION_US);
    let subject = str_col(b, scol::SUBJECT);
    let role = str_col(b, scol::ROLE);
    let database = str_col(b, scol::DATABASE);
    let command = str_col(b, scol::COMMAND);
    let sql = str_col(b, scol::SQL);
    let stmt_id = i64_col(b, scol::STATEMENT_ID);
    let params = list_col(b, scol::PARAMS);
    let digest = str_col(b, scol::DIGEST);
    let normalized = str_col(b, scol::NORMALIZED_SQL);
    let class = str_col(b, scol::STATEMENT_CLASS);
    let tread = list_col(b, scol::TABLES_READ);
    let twritten = list_col(b, scol::TABLES_WRITTEN);
    let verdict = str_col(b, scol::VERDICT);
    let verdict_reason = str_col(b, scol::VERDICT_REASON);
    let rows_returned = i64_col(b, scol::ROWS_RETURNED);
    let rows_affected = i64_col(b, scol::ROWS_AFFECTED);
    let last_insert_id = i64_col(b, scol::LAST_INSERT_ID);
    let warnings = i32_col(b, scol::WARNINGS);
    let error_code = i32_col(b, scol::ERROR_CODE);
    let error_message = str_col(b, scol::ERROR_MESSAGE);
    let columns = list_col(b, scol::RESULT_COLUMNS);
    let hash = str_col(b, scol::RESULT_HASH);
    let masked = list_col(b, scol::MASKED_COLUMNS);
    let capped = bool_col(b, scol::PAYLOAD_CAPPED);
    let dropped = i64_col(b, scol::PAYLOAD_BYTES_DROPPED);
    for i in 0..b.num_rows() {
        out.push(Statement {
            session_id: get_str(&session, i).unwrap_or_default(),
            command_index: get_i64(&index, i).unwrap_or(0),
            started_at_us: started.as_ref().map(|t| t.value(i)).unwrap_or(0),
            duration_us: get_i64(&duration, i).unwrap_or(0),
            subject: get_str(&subject, i),
            role: get_str(&role, i),
            database: get_str(&database, i),
            command: get_str(&command, i).unwrap_or_default(),
            sql: get_str(&sql, i),
            statement_id: get_i64(&stmt_id, i),
            params: get_list(&params, i),
            digest: get_str(&digest, i),
            normalized_sql: get_str(&normalized, i),
            statement_class: get_str(&class, i),
            tables_read: get_list(&tread, i),
            tables_written: get_list(&twritten, i),
            verdict: get_str(&verdict, i),
            verdict_reason: get_str(&verdict_reason, i),
            rows_returned: get_i64(&rows_returned, i).unwrap_or(0),
            rows_affected: get_i64(&rows_affected, i).unwrap_or(0),
            last_insert_id: get_i64(&last_insert_id, i).unwrap_or(0),
            warnings: get_i32(&warnings, i).unwrap_or(0),
            error_code: get_i32(&error_code, i),
            error_message: get_str(&error_message, i),
            result_columns: get_list(&columns, i),
            result_hash: get_str(&hash, i),
            masked_columns: get_list(&masked, i),
            payload_capped: get_bool(&capped, i).unwrap_or(false),
            payload_bytes_dropped: get_i64(&dropped, i).unwrap_or(0),
        });
    }
}

// Column access that tolerates columns missing from older files (read as null).

fn str_col(b: &RecordBatch, name: &str) -> Option<StringArray> {
    b.column_by_name(name)
        .and_then(|c| arrow::compute::cast(c, &DataType::Utf8).ok())
        .map(|c| c.as_string::<i32>().clone())
}
fn i64_col(b: &RecordBatch, name: &str) -> Option<Int64Array> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
}
fn i32_col(b: &RecordBatch, name: &str) -> Option<Int32Array> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Int32Array>().cloned())
}
fn bool_col(b: &RecordBatch, name: &str) -> Option<BooleanArray> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<BooleanArray>().cloned())
}
fn list_col(b: &RecordBatch, name: &str) -> Option<ListArray> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<ListArray>().cloned())
}
fn get_str(a: &Option<StringArray>, i: usize) -> Option<String> {
    a.as_ref()
        .and_then(|a| (!a.is_null(i)).then(|| a.value(i).to_string()))
}
fn get_i64(a: &Option<Int64Array>, i: usize) -> Option<i64> {
    a.as_ref().and_then(|a| (!a.is_null(i)).then(|| a.value(i)))
}
fn get_i32(a: &Option<Int32Array>, i: usize) -> Option<i32> {
    a.as_ref().and_then(|a| (!a.is_null(i)).then(|| a.value(i)))
}
fn get_bool(a: &Option<BooleanArray>, i: usize) -> Option<bool> {
    a.as_ref().and_then(|a| (!a.is_null(i)).then(|| a.value(i)))
}
fn get_list(a: &Option<ListArray>, i: usize) -> Vec<String> {
    let Some(a) = a else { return Vec::new() };
    if a.is_null(i) {
        return Vec::new();
    }
    let v = a.value(i);
    let Ok(v) = arrow::compute::cast(&v, &DataType::Utf8) else {
        return Vec::new();
    };
    let s = v.as_string::<i32>();
    (0..s.len())
        .filter(|j| !s.is_null(*j))
        .map(|j| s.value(j).to_string())
        .collect()
}
