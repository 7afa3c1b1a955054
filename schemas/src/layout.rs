//! Where the archive's objects live in the store.
//!
//! ```text
//! <prefix>/v1/<table>/date=YYYY-MM-DD/hour=HH/<gateway>-<segment>.parquet
//! <prefix>/v1/manifests/<gateway>/<segment>.json
//! ```
//!
//! `<segment>` is the gateway's segment number, zero-padded to
//! [`SEGMENT_DIGITS`] digits so that names sort in segment order. A segment whose
//! rows span several hours has one file per hour and table, all with the same name
//! in different partitions. Partition values are in UTC.

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::tables::Table;
use crate::FORMAT_VERSION;

/// Digits of a segment number in object names.
pub const SEGMENT_DIGITS: usize = 10;
/// The folder of manifests, beside the tables.
pub const MANIFESTS_DIR: &str = "manifests";
/// The folder of lifecycle records (retention, compaction), beside the manifests.
pub const LIFECYCLE_DIR: &str = "lifecycle";
/// Extension of data files.
pub const DATA_FILE_EXTENSION: &str = "parquet";
/// Extension of manifests.
pub const MANIFEST_EXTENSION: &str = "json";

/// A `date=YYYY-MM-DD/hour=HH` partition (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Partition {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
}

impl Partition {
    /// The partition of a time in nanoseconds since the Unix epoch.
    pub fn of_ns(time_ns: i64) -> Partition {
        Self::of_us(time_ns.div_euclid(1000))
    }

    /// The partition of a time in microseconds since the Unix epoch.
    pub fn of_us(time_us: i64) -> Partition {
        let t = DateTime::<Utc>::from_timestamp_micros(time_us).unwrap_or_default();
        Partition {
            year: t.year(),
            month: t.month(),
            day: t.day(),
            hour: t.hour(),
        }
    }

    /// `YYYY-MM-DD`, the value of the `date` partition column.
    pub fn date(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// `date=YYYY-MM-DD/hour=HH`.
    pub fn path(&self) -> String {
        format!("date={}/hour={:02}", self.date(), self.hour)
    }
}

/// Is `id` usable as a gateway id in object names? Letters, digits, `.`, `_`, `-`.
pub fn valid_gateway_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The segment number as it appears in object names.
pub fn segment_name(segment: u64) -> String {
    format!("{segment:0width$}", width = SEGMENT_DIGITS)
}

/// Object paths of one archive, under a prefix of the store (may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
}

impl Layout {
    /// `prefix` is a path inside the store (`""`, `"audit"`, `"audit/prod"`).
    pub fn new(prefix: &str) -> Self {
        Layout {
            prefix: prefix.trim_matches('/').to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>/v1`.
    pub fn root(&self) -> String {
        if self.prefix.is_empty() {
            FORMAT_VERSION.to_string()
        } else {
            format!("{}/{FORMAT_VERSION}", self.prefix)
        }
    }

    /// `<prefix>/v1/<table>`: the folder a reader registers as the table.
    pub fn table_root(&self, table: Table) -> String {
        format!("{}/{}", self.root(), table.name())
    }

    /// `<prefix>/v1/<table>/date=YYYY-MM-DD/hour=HH/<gateway>-<segment>.parquet`.
    pub fn data_file(
        &self,
        table: Table,
        partition: Partition,
        gateway_id: &str,
        segment: u64,
    ) -> String {
        format!(
            "{}/{}/{gateway_id}-{}.{DATA_FILE_EXTENSION}",
            self.table_root(table),
            partition.path(),
            segment_name(segment)
        )
    }

    /// `<prefix>/v1/<table>/date=YYYY-MM-DD/hour=HH/<gateway>-<first>_<last>.parquet`:
    /// a compacted file holding the rows of segments `first..=last`.
    pub fn compacted_data_file(
        &self,
        table: Table,
        partition: Partition,
        gateway_id: &str,
        first: u64,
        last: u64,
    ) -> String {
        format!(
            "{}/{}/{gateway_id}-{}_{}.{DATA_FILE_EXTENSION}",
            self.table_root(table),
            partition.path(),
            segment_name(first),
            segment_name(last)
        )
    }

    /// `<prefix>/v1/lifecycle/<gateway>`.
    pub fn gateway_lifecycle(&self, gateway_id: &str) -> String {
        format!("{}/{LIFECYCLE_DIR}/{gateway_id}", self.root())
    }

    /// `<prefix>/v1/lifecycle`.
    pub fn lifecycle_root(&self) -> String {
        format!("{}/{LIFECYCLE_DIR}", self.root())
    }

    /// `<prefix>/v1/lifecycle/<gateway>/<sequence>.json`.
    pub fn lifecycle_record(&self, gateway_id: &str, sequence: u64) -> String {
        format!(
            "{}/{}.{MANIFEST_EXTENSION}",
            self.gateway_lifecycle(gateway_id),
            segment_name(sequence)
        )
    }

    /// Reads `(gateway, sequence)` back from a lifecycle record path.
    pub fn parse_lifecycle_record(&self, path: &str) -> Option<(String, u64)> {
        let rest = path
            .strip_prefix(&self.lifecycle_root())?
            .strip_prefix('/')?;
        let (gateway, file) = rest.split_once('/')?;
        let number = file.strip_suffix(&format!(".{MANIFEST_EXTENSION}"))?;
        if !valid_gateway_id(gateway)
            || number.is_empty()
            || !number.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        Some((gateway.to_string(), number.parse().ok()?))
    }

    /// `<prefix>/v1/heads`.
    pub fn heads_root(&self) -> String {
        format!("{}/{}", self.root(), crate::head::HEADS_DIR)
    }

    /// `<prefix>/v1/heads/<gateway>.json`.
    pub fn head(&self, gateway_id: &str) -> String {
        format!("{}/{gateway_id}.{MANIFEST_EXTENSION}", self.heads_root())
    }

    /// Reads the gateway back from a head path of this layout.
    pub fn parse_head(&self, path: &str) -> Option<String> {
        let rest = path.strip_prefix(&self.heads_root())?.strip_prefix('/')?;
        let gateway = rest.strip_suffix(&format!(".{MANIFEST_EXTENSION}"))?;
        valid_gateway_id(gateway).then(|| gateway.to_string())
    }

    /// `<prefix>/v1/manifests`.
    pub fn manifests_root(&self) -> String {
        format!("{}/{MANIFESTS_DIR}", self.root())
    }

    /// `<prefix>/v1/manifests/<gateway>`.
    pub fn gateway_manifests(&self, gateway_id: &str) -> String {
        format!("{}/{gateway_id}", self.manifests_root())
    }

    /// `<prefix>/v1/manifests/<gateway>/<segment>.json`.
    pub fn manifest(&self, gateway_id: &str, segment: u64) -> String {
        format!(
            "{}/{}.{MANIFEST_EXTENSION}",
            self.gateway_manifests(gateway_id),
            segment_name(segment)
        )
    }

    /// Reads `(gateway, segment)` back from a manifest path of this layout.
    pub fn parse_manifest(&self, path: &str) -> Option<(String, u64)> {
        let rest = path
            .strip_prefix(&self.manifests_root())?
            .strip_prefix('/')?;
        let (gateway, file) = rest.split_once('/')?;
        let number = file.strip_suffix(&format!(".{MANIFEST_EXTENSION}"))?;
        if !valid_gateway_id(gateway) || number.is_empty() {
            return None;
        }
        if !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((gateway.to_string(), number.parse().ok()?))
    }

    /// Reads `(table, gateway, segment)` back from a data file path of this layout.
    pub fn parse_data_file(&self, path: &str) -> Option<(Table, String, u64)> {
        let rest = path.strip_prefix(&self.root())?.strip_prefix('/')?;
        let mut parts = rest.split('/');
        let table = Table::from_name(parts.next()?)?;
        let _date = parts.next()?.strip_prefix("date=")?;
        let _hour = parts.next()?.strip_prefix("hour=")?;
        let file = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let stem = file.strip_suffix(&format!(".{DATA_FILE_EXTENSION}"))?;
        let (gateway, number) = stem.rsplit_once('-')?;
        if number.len() < SEGMENT_DIGITS || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((table, gateway.to_string(), number.parse().ok()?))
    }

    /// Reads `(table, gateway, first, last)` back from a compacted data file path.
    pub fn parse_compacted_data_file(&self, path: &str) -> Option<(Table, String, u64, u64)> {
        let rest = path.strip_prefix(&self.root())?.strip_prefix('/')?;
        let mut parts = rest.split('/');
        let table = Table::from_name(parts.next()?)?;
        parts.next()?.strip_prefix("date=")?;
        parts.next()?.strip_prefix("hour=")?;
        let file = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let stem = file.strip_suffix(&format!(".{DATA_FILE_EXTENSION}"))?;
        let (gateway, range) = stem.rsplit_once('-')?;
        let (first, last) = range.split_once('_')?;
        let digits = |n: &str| n.len() >= SEGMENT_DIGITS && n.bytes().all(|b| b.is_ascii_digit());
        if !digits(first) || !digits(last) || !valid_gateway_id(gateway) {
            return None;
        }
        Some((
            table,
            gateway.to_string(),
            first.parse().ok()?,
            last.parse().ok()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_documented_layout() {
        let layout = Layout::new("/audit/prod/");
        // 2024-03-05T07:08:09Z
        let p = Partition::of_ns(1_709_622_489_000_000_000);
        assert_eq!(p.path(), "date=2024-03-05/hour=07");
        let path = layout.data_file(Table::Frames, p, "gateway-1", 42);
        assert_eq!(
            path,
            "audit/prod/v1/frames/date=2024-03-05/hour=07/gateway-1-0000000042.parquet"
        );
        assert_eq!(
            layout.parse_data_file(&path),
            Some((Table::Frames, "gateway-1".to_string(), 42))
        );
        let m = layout.manifest("gateway-1", 42);
        assert_eq!(m, "audit/prod/v1/manifests/gateway-1/0000000042.json");
        assert_eq!(layout.parse_manifest(&m), Some(("gateway-1".into(), 42)));
        assert_eq!(
            Layout::new("").manifest("g", 1),
            "v1/manifests/g/0000000001.json"
        );
        let compacted = layout.compacted_data_file(Table::Frames, p, "gateway-1", 3, 9);
        assert_eq!(
            compacted,
            "audit/prod/v1/frames/date=2024-03-05/hour=07/gateway-1-0000000003_0000000009.parquet"
        );
        assert_eq!(layout.parse_data_file(&compacted), None);
        assert_eq!(
            layout.parse_compacted_data_file(&compacted),
            Some((Table::Frames, "gateway-1".to_string(), 3, 9))
        );
        assert_eq!(layout.parse_compacted_data_file(&path), None);
        let record = layout.lifecycle_record("gateway-1", 2);
        assert_eq!(record, "audit/prod/v1/lifecycle/gateway-1/0000000002.json");
        assert_eq!(
            layout.parse_lifecycle_record(&record),
            Some(("gateway-1".into(), 2))
        );
    }

    #[test]
    fn gateway_ids_must_be_path_safe() {
        assert!(valid_gateway_id("gateway-1"));
        assert!(valid_gateway_id("eu.west_2"));
        assert!(!valid_gateway_id("a/b"));
        assert!(!valid_gateway_id(""));
        assert!(!valid_gateway_id(".."));
        assert!(!valid_gateway_id("a b"));
    }
}
