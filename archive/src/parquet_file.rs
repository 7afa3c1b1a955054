//! How the archive's Parquet files are encoded, for sealing and compaction
//! alike: row order (by partition, then session, then sequence), writer
//! settings (zstd, page statistics, bloom filters, delta and dictionary
//! columns), and writing a file while hashing it.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use arrow::datatypes::TimestampMicrosecondType;
use chaperone_schemas::layout::Partition;
use chaperone_schemas::manifest::sha256_hex;
use chaperone_schemas::tables::Table;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use sha2::{Digest, Sha256};

/// A Parquet file could not be encoded or written.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

/// The rows of `batch` per partition, each sorted by session then the table's
/// sequence column. The spool holds each session's rows in order already, so
/// this groups (linear) instead of sorting whole rows.
pub fn order_rows(table: Table, batch: &RecordBatch) -> BTreeMap<Partition, Vec<u32>> {
    let mut out = BTreeMap::new();
    if batch.num_rows() == 0 {
        return out;
    }
    let schema = batch.schema();
    let time = batch
        .column(schema.index_of(table.time_column()).expect("time column"))
        .as_primitive::<TimestampMicrosecondType>();
    let session = batch
        .column(schema.index_of("session_id").expect("session_id column"))
        .as_string::<i32>();
    let order = batch
        .column(
            schema
                .index_of(table.sort_columns()[1])
                .expect("sort column"),
        )
        .clone();
    // Group: hour -> session -> row indices (in spool order).
    let mut groups: BTreeMap<i64, HashMap<&str, Vec<u32>>> = BTreeMap::new();
    let mut current: Option<(i64, &str)> = None;
    let mut run: Vec<u32> = Vec::new();
    for i in 0..batch.num_rows() {
        let hour = time.value(i).div_euclid(3_600_000_000);
        let key = (hour, session.value(i));
        if current != Some(key) {
            if let Some(k) = current {
                add_run(&mut groups, k, &mut run);
            }
            current = Some(key);
        }
        run.push(i as u32);
    }
    if let Some(k) = current {
        add_run(&mut groups, k, &mut run);
    }
    for (hour, by_session) in groups {
        let mut ids: Vec<(&str, Vec<u32>)> = by_session.into_iter().collect();
        ids.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut indices = Vec::new();
        for (_, mut rows) in ids {
            sort_if_needed(&mut rows, &order, time);
            indices.extend(rows);
        }
        out.insert(Partition::of_us(hour * 3_600_000_000), indices);
    }
    out
}

fn add_run<'a>(
    groups: &mut BTreeMap<i64, HashMap<&'a str, Vec<u32>>>,
    key: (i64, &'a str),
    run: &mut Vec<u32>,
) {
    groups
        .entry(key.0)
        .or_default()
        .entry(key.1)
        .or_default()
        .append(run);
}

/// Rows of one session are in spool order, which is their order; this only
/// sorts if that ever was not the case.
fn sort_if_needed(
    rows: &mut [u32],
    order: &Arc<dyn Array>,
    time: &arrow::array::PrimitiveArray<TimestampMicrosecondType>,
) {
    if let Some(ints) = order.as_primitive_opt::<arrow::datatypes::Int64Type>() {
        if rows
            .windows(2)
            .any(|w| ints.value(w[0] as usize) > ints.value(w[1] as usize))
        {
            rows.sort_by_key(|&i| ints.value(i as usize));
        }
    } else if rows
        .windows(2)
        .any(|w| time.value(w[0] as usize) > time.value(w[1] as usize))
    {
        rows.sort_by_key(|&i| time.value(i as usize));
    }
}

pub fn take_rows(batch: &RecordBatch, indices: &[u32]) -> Result<RecordBatch, EncodeError> {
    if indices.len() == batch.num_rows() && indices.iter().enumerate().all(|(i, &j)| i as u32 == j)
    {
        return Ok(batch.clone());
    }
    let indices = UInt32Array::from(indices.to_vec());
    Ok(arrow::compute::take_record_batch(batch, &indices)?)
}

pub fn time_range(table: Table, batch: &RecordBatch) -> (i64, i64) {
    let time = batch
        .column(
            batch
                .schema()
                .index_of(table.time_column())
                .expect("time column"),
        )
        .as_primitive::<TimestampMicrosecondType>();
    let min = arrow::compute::min(time).unwrap_or(0);
    let max = arrow::compute::max(time).unwrap_or(0);
    (min.saturating_mul(1000), max.saturating_mul(1000))
}

/// Parquet writer settings of a table.
pub fn writer_properties(table: Table, zstd_level: i32) -> WriterProperties {
    let schema = table.schema();
    let level = ZstdLevel::try_new(zstd_level).unwrap_or_default();
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_created_by(format!(
            "chaperone {} (parquet-rs)",
            env!("CARGO_PKG_VERSION")
        ))
        // Row groups sized for scans: up to 128 MiB or 1 Mi rows.
        .set_max_row_group_row_count(Some(1 << 20))
        .set_max_row_group_bytes(Some(128 << 20))
        // Page-level statistics give readers the column and offset indexes.
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(Some(
            table
                .sort_columns()
                .iter()
                .map(|c| SortingColumn {
                    column_idx: schema.index_of(c).expect("sort column") as i32,
                    descending: false,
                    nulls_first: false,
                })
                .collect(),
        ));
    for column in table.bloom_filter_columns() {
        props = props
            .set_column_bloom_filter_enabled(ColumnPath::from(*column), true)
            .set_column_bloom_filter_fpp(ColumnPath::from(*column), 0.01);
    }
    // Sequence and time columns rise within a session (rows are sorted by session
    // then sequence): delta encoding stores them in a few bits per row, where
    // dictionaries or plain values cost 2-8 bytes after zstd.
    for column in delta_columns(table) {
        props = props
            .set_column_dictionary_enabled(ColumnPath::from(*column), false)
            .set_column_encoding(ColumnPath::from(*column), Encoding::DELTA_BINARY_PACKED);
    }
    if table == Table::Frames {
        // Payloads repeat a lot: the same column definitions, EOF and OK packets,
        // prepared statements' requests, and the same rows read again. A
        // dictionary as large as a segment's distinct payloads stores each once
        // (then zstd), and each frame as an index: on sysbench 4x smaller than
        // plain pages, and less for zstd to compress. Past the limit the
        // column chunk falls back to plain pages. Min/max of opaque bytes do not
        // help readers.
        let payload = ColumnPath::from(chaperone_schemas::tables::frames::PAYLOAD);
        props = props
            .set_column_dictionary_enabled(payload.clone(), true)
            .set_column_dictionary_page_size_limit(payload.clone(), PAYLOAD_DICTIONARY_BYTES)
            .set_column_statistics_enabled(payload, EnabledStatistics::None);
    }
    props.build()
}

/// The largest payload dictionary per column chunk (a Parquet page: readers
/// hold it in memory while reading the chunk).
const PAYLOAD_DICTIONARY_BYTES: usize = 32 << 20;

/// Integer and time columns written with DELTA_BINARY_PACKED.
fn delta_columns(table: Table) -> &'static [&'static str] {
    use chaperone_schemas::tables::{frames, sessions, statements};
    match table {
        Table::Frames => &[frames::SEQ, frames::COMMAND_INDEX, frames::TIME],
        Table::Statements => &[statements::COMMAND_INDEX, statements::STARTED_AT],
        Table::Sessions => &[sessions::TIME],
    }
}

/// Writes one Parquet file durably (synced); returns its SHA-256 (hex) and size.
pub fn write_parquet(
    path: &Path,
    table: Table,
    batch: &RecordBatch,
    zstd_level: i32,
) -> Result<(String, u64), EncodeError> {
    let file = std::fs::File::create(path)?;
    let out = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, file));
    let mut writer = ArrowWriter::try_new(
        out,
        table.schema(),
        Some(writer_properties(table, zstd_level)),
    )?;
    writer.write(batch)?;
    let mut out = writer.into_inner()?;
    out.flush()?;
    let file = out
        .inner
        .into_inner()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    file.sync_all()?;
    Ok((hex::encode(out.hasher.finalize()), out.bytes))
}

/// One Parquet file in memory, written as sealing writes it (compaction).
pub fn parquet_bytes(
    table: Table,
    batch: &RecordBatch,
    zstd_level: i32,
) -> Result<Vec<u8>, EncodeError> {
    let mut writer = ArrowWriter::try_new(
        Vec::new(),
        table.schema(),
        Some(writer_properties(table, zstd_level)),
    )?;
    writer.write(batch)?;
    Ok(writer.into_inner()?)
}

/// Passes writes through to `inner` while hashing them (SHA-256) and counting
/// their bytes: a file's digest without reading it back.
pub struct HashingWriter<W: Write> {
    pub inner: W,
    pub hasher: Sha256,
    pub bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// SHA-256 (hex) of a file.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    Ok(sha256_hex(&std::fs::read(path)?))
}
