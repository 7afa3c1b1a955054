//! The commit watermark of a spool log: how many of its bytes an fsync made
//! durable, kept in a small side file `<spool>/commit/<log>.commit` (beside the
//! log directory, so that nothing that lists logs sees it).
//!
//! ```text
//! MAGIC(8) synced:u64le boot_id[16] flags:u32le crc:u32le   (40 bytes)
//! flags bit 0: the log was written with durability = "sync"
//! ```
//!
//! The writer updates it after a group commit (the log's fsync first, then
//! the side file's own), so the value on disk never exceeds what the log had
//! made durable. At recovery a log that ends (or is damaged) before its
//! watermark has lost records that were fsync'd, so acknowledged: declared as
//! a loss, never guessed to be an unacknowledged write. The boot id tells a
//! process crash (the page cache, and so every written byte, survived) from a
//! host crash (only what was fsync'd survived).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use chaperone_schemas::manifest::SpoolLoss;

const MAGIC: &[u8; 8] = b"CHPCMT1\n";
const LEN: usize = 40;
/// Suffix of the side file, after the log's own name.
pub const SUFFIX: &str = ".commit";
const FLAG_SYNC: u32 = 1;

/// What a side file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    /// Bytes of the log (from its start) known fsync'd.
    pub synced: u64,
    /// The kernel boot the log was written under.
    pub boot_id: [u8; 16],
    /// Written with durability = "sync": every acknowledged request was
    /// fsync'd before it was acknowledged.
    pub sync_mode: bool,
}

impl Watermark {
    /// Whether the machine rebooted since the log was written: a host crash.
    pub fn host_crashed(&self) -> bool {
        self.boot_id != boot_id()
    }
}

/// The side file of `log` (`<spool>/log/<name>` -> `<spool>/commit/<name>.commit`).
pub fn path_of(log: &Path) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_os_string();
    name.push(SUFFIX);
    commit_dir(log.parent().unwrap_or(Path::new("."))).join(name)
}

/// Where the side files of the logs in `log_dir` are.
fn commit_dir(log_dir: &Path) -> PathBuf {
    log_dir.parent().unwrap_or(Path::new(".")).join(COMMIT_DIR)
}

const COMMIT_DIR: &str = "commit";

/// This boot's id (`/proc/sys/kernel/random/boot_id`), as 16 bytes; zeros
/// where the kernel does not say (then every crash looks like a process crash
/// and only the watermark itself is checked).
pub fn boot_id() -> [u8; 16] {
    static ID: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
    *ID.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let hex: String = text.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        let mut out = [0u8; 16];
        if let Ok(bytes) = hex::decode(&hex) {
            if bytes.len() == 16 {
                out.copy_from_slice(&bytes);
            }
        }
        out
    })
}

fn encode(w: &Watermark) -> [u8; LEN] {
    let mut out = [0u8; LEN];
    out[..8].copy_from_slice(MAGIC);
    out[8..16].copy_from_slice(&w.synced.to_le_bytes());
    out[16..32].copy_from_slice(&w.boot_id);
    let flags = if w.sync_mode { FLAG_SYNC } else { 0 };
    out[32..36].copy_from_slice(&flags.to_le_bytes());
    let crc = crc32fast::hash(&out[..36]);
    out[36..40].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Reads the watermark of `log`: None when there is no side file (a log of
/// the previous version) or it is damaged.
pub fn read(log: &Path) -> Option<Watermark> {
    let mut buf = Vec::with_capacity(LEN);
    File::open(path_of(log))
        .ok()?
        .take(LEN as u64)
        .read_to_end(&mut buf)
        .ok()?;
    if buf.len() != LEN || &buf[..8] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(buf[36..40].try_into().expect("4 bytes"));
    if crc32fast::hash(&buf[..36]) != crc {
        return None;
    }
    Some(Watermark {
        synced: u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes")),
        boot_id: buf[16..32].try_into().expect("16 bytes"),
        sync_mode: u32::from_le_bytes(buf[32..36].try_into().expect("4 bytes")) & FLAG_SYNC != 0,
    })
}

/// Records that the first `synced` bytes of `log` are durable (call after the
/// log's fsync). Never lowers the watermark: a group commit that finishes late
/// must not undo a later one (or the rotation's final one).
pub fn mark(log: &Path, synced: u64, sync_mode: bool) -> std::io::Result<()> {
    if read(log).is_some_and(|w| w.synced >= synced) {
        return Ok(());
    }
    let path = path_of(log);
    let open = || {
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
    };
    let file = match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            open()?
        }
        other => other?,
    };
    let bytes = encode(&Watermark {
        synced,
        boot_id: boot_id(),
        sync_mode,
    });
    // 40 bytes at offset 0: one sector, written whole or not at all on the
    // devices we run on; a torn one fails its CRC and reads as "no watermark".
    file.write_all_at(&bytes, 0)?;
    file.sync_data()
}

/// Removes side files whose log is gone (sealed and deleted).
pub fn remove_orphans(log_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(commit_dir(log_dir)) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(log) = name.strip_suffix(SUFFIX) {
            if !log_dir.join(log).exists() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// For crash tests: makes `log`'s watermark look written under another boot,
/// as a host crash leaves it.
pub fn simulate_reboot(log: &Path) -> std::io::Result<()> {
    let mut w = read(log).ok_or_else(|| std::io::Error::other("no commit watermark"))?;
    w.boot_id = [0xAB; 16];
    std::fs::write(path_of(log), encode(&w))
}

/// The spool losses to declare in the manifest of `log` (`file_len` bytes):
/// the damage the reader skipped, judged against the log's commit watermark.
/// `interrupted`: the log a stopped gateway was writing (only it can end in a
/// write cut short).
pub fn declare(
    log: &Path,
    losses: &[crate::spool::Torn],
    file_len: u64,
    interrupted: bool,
) -> Vec<SpoolLoss> {
    let name = log
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let w = read(log);
    let now = chaperone_schemas::event::now_ns();
    let mut out = Vec::new();
    for t in losses {
        let mut reason = t.reason.clone();
        let mut cut_write = t.cut_write && interrupted;
        if let Some(w) = w {
            if t.offset < w.synced {
                // Fsync'd bytes are gone: acknowledged records, not a cut write.
                cut_write = false;
                reason.push_str(&format!(
                    "; the log's commit watermark says {} bytes were fsync'd: acknowledged records lost",
                    w.synced
                ));
            } else if cut_write && w.host_crashed() && !w.sync_mode {
                cut_write = false;
                reason.push_str(&format!(
                    "; after a host crash with durability = \"group\", statements acknowledged after the last group commit (offset {}) may be in it",
                    w.synced
                ));
            }
        }
        out.push(loss(&name, t.offset, t.bytes_lost, reason, cut_write, now));
    }
    if let Some(w) = w {
        if file_len < w.synced {
            out.push(loss(
                &name,
                file_len,
                w.synced - file_len,
                format!(
                    "the log ends at {file_len} bytes but its commit watermark says {} were fsync'd: acknowledged records lost (a cut at a record boundary)",
                    w.synced
                ),
                false,
                now,
            ));
        } else if interrupted
            && w.host_crashed()
            && !w.sync_mode
            && losses.iter().all(|t| t.offset + t.bytes_lost < file_len)
        {
            // Whole records after the watermark may be gone without a trace.
            out.push(loss(
                &name,
                file_len,
                0,
                format!(
                    "host crash with durability = \"group\": statements acknowledged after the last group commit (offset {}) and not fsync'd may be missing",
                    w.synced
                ),
                false,
                now,
            ));
        }
    }
    for l in &out {
        if l.cut_write {
            tracing::warn!(log = %name, offset = l.offset, bytes_lost = l.bytes_lost, reason = %l.reason,
                "spool log ends in a write cut short by a process crash: nothing in it was acknowledged; noted in the manifest");
        } else {
            tracing::error!(log = %name, offset = l.offset, bytes_lost = l.bytes_lost, reason = %l.reason,
                "spool log damaged: the damaged records are skipped and the loss recorded in the manifest");
        }
    }
    out
}

fn loss(
    name: &str,
    offset: u64,
    bytes_lost: u64,
    reason: String,
    cut_write: bool,
    now: i64,
) -> SpoolLoss {
    SpoolLoss {
        spool_file: name.to_string(),
        offset,
        bytes_lost,
        reason,
        detected_at_ns: now,
        cut_write,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_and_never_go_down() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("log")).unwrap();
        let log = dir.path().join("log/1.spool");
        std::fs::write(&log, b"x").unwrap();
        assert_eq!(read(&log), None);
        mark(&log, 100, false).unwrap();
        mark(&log, 50, false).unwrap();
        let w = read(&log).unwrap();
        assert_eq!(
            (w.synced, w.sync_mode, w.host_crashed()),
            (100, false, false)
        );
        simulate_reboot(&log).unwrap();
        assert!(read(&log).unwrap().host_crashed());
        std::fs::remove_file(&log).unwrap();
        remove_orphans(&dir.path().join("log"));
        assert!(!path_of(&log).exists());
    }
}
