//! A small bounded cache of analyses by exact SQL text.
//!
//! Each shard keeps two generations: lookups hit the young one, then the old
//! one (promoting the entry); when the young generation is full it becomes the
//! old one and the previous old one is dropped. That is LRU-like (an entry used
//! in the last generation survives) with O(1) work and no per-entry links.
//! Texts longer than [`MAX_CACHED_LEN`] are analysed every time: they rarely
//! repeat, and they would crowd the cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::{analyze, Analysis};

/// Longest SQL text kept in the cache, in bytes.
pub const MAX_CACHED_LEN: usize = 8 * 1024;

/// Entries of the process-wide cache used by the gateway's sessions.
pub const DEFAULT_CAPACITY: usize = 8192;

const SHARDS: usize = 8;

#[derive(Default)]
struct Shard {
    young: HashMap<Box<str>, Arc<Analysis>>,
    old: HashMap<Box<str>, Arc<Analysis>>,
}

/// Analyses by exact SQL text, bounded.
pub struct AnalysisCache {
    shards: Vec<Mutex<Shard>>,
    /// Entries per generation per shard.
    generation: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl AnalysisCache {
    /// A cache holding between `capacity / 2` and `capacity` analyses.
    pub fn new(capacity: usize) -> Self {
        AnalysisCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            generation: (capacity / 2 / SHARDS).max(1),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The cache shared by all sessions of this process.
    pub fn shared() -> &'static AnalysisCache {
        static SHARED: OnceLock<AnalysisCache> = OnceLock::new();
        SHARED.get_or_init(|| AnalysisCache::new(DEFAULT_CAPACITY))
    }

    /// The analysis of `sql`, from the cache when it was seen recently.
    pub fn analyze(&self, sql: &str) -> Arc<Analysis> {
        if sql.len() > MAX_CACHED_LEN {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return Arc::new(analyze(sql));
        }
        let shard = &self.shards[shard_of(sql)];
        {
            let mut s = shard.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(a) = s.young.get(sql) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return a.clone();
            }
            if let Some((k, a)) = s.old.remove_entry(sql) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                let out = a.clone();
                self.insert(&mut s, k, a);
                return out;
            }
        }
        // Analyse outside the lock: another session may do the same work for the
        // same text at the same time, which is harmless.
        self.misses.fetch_add(1, Ordering::Relaxed);
        let analysis = Arc::new(analyze(sql));
        let mut s = shard.lock().unwrap_or_else(|e| e.into_inner());
        self.insert(&mut s, sql.into(), analysis.clone());
        analysis
    }

    fn insert(&self, s: &mut Shard, key: Box<str>, analysis: Arc<Analysis>) {
        if s.young.len() >= self.generation {
            s.old = std::mem::take(&mut s.young);
        }
        s.young.insert(key, analysis);
    }

    /// (hits, misses) since the cache was made.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(|e| e.into_inner());
                s.young.len() + s.old.len()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A cheap spread of texts over shards (the maps hash properly afterwards).
fn shard_of(sql: &str) -> usize {
    let b = sql.as_bytes();
    let mut h = b.len() as u64;
    for chunk in [&b[..b.len().min(8)], &b[b.len().saturating_sub(8)..]] {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    (h >> 32) as usize % SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_texts_hit_and_the_cache_stays_bounded() {
        let cache = AnalysisCache::new(64);
        let a = cache.analyze("SELECT * FROM t WHERE id = 1");
        let b = cache.analyze("SELECT * FROM t WHERE id = 1");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.stats(), (1, 1));
        for i in 0..1000 {
            cache.analyze(&format!("SELECT * FROM t WHERE id = {i}"));
        }
        assert!(cache.len() <= 64, "{} entries", cache.len());
        // A text used in every generation survives.
        let hot = "SELECT c FROM hot";
        let first = cache.analyze(hot);
        for i in 0..1000 {
            cache.analyze(&format!("SELECT * FROM u WHERE id = {i}"));
            if i % 3 == 0 {
                assert!(Arc::ptr_eq(&first, &cache.analyze(hot)));
            }
        }
        // Long texts are analysed, not kept.
        let long = format!("SELECT '{}'", "x".repeat(MAX_CACHED_LEN));
        let before = cache.len();
        assert_eq!(
            cache.analyze(&long).class,
            super::super::StatementClass::Read
        );
        assert_eq!(cache.len(), before);
    }
}
