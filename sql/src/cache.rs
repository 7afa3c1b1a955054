//! A small bounded cache of analyses, by exact SQL text and by shape.
//!
//! OLTP traffic repeats statements. Prepared statements and ORM-generated text
//! repeat exactly: a lookup by exact text answers them. Clients that
//! interpolate values (most Python and Node drivers) send the same statement
//! with other literals every time: their texts differ, but their *shape* (the
//! normalised text plus the kinds of the literals it replaced, see
//! [`super::digest::normalize_with_literals`]) is the same, and so is their
//! analysis, since literals name no table and change no statement's class. A
//! miss by text is therefore normalised (cheap, lexical) and looked up by
//! shape before the statement is parsed. Only analyses that parsed are shared
//! by shape: an unparsable statement is never taken for a parsable one.
//!
//! Each map keeps two generations per shard: lookups hit the young one, then
//! the old one (promoting the entry); when the young generation is full it
//! becomes the old one and the previous old one is dropped. That is LRU-like
//! (an entry used in the last generation survives) with O(1) work and no
//! per-entry links. Texts longer than [`MAX_CACHED_LEN`] are analysed every
//! time: they rarely repeat, and they would crowd the cache.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::{analyze_normalized, digest, unreadable, Analysis};

/// Longest SQL text kept in the cache, in bytes.
pub const MAX_CACHED_LEN: usize = 8 * 1024;

/// Entries of the process-wide cache used by the gateway's sessions.
pub const DEFAULT_CAPACITY: usize = 8192;

const SHARDS: usize = 8;

#[derive(Default)]
struct Generations {
    young: HashMap<Box<str>, Arc<Analysis>, FastHash>,
    old: HashMap<Box<str>, Arc<Analysis>, FastHash>,
}

/// A fast multiplicative hash (FxHash's), seeded per process. It is not
/// collision-resistant against crafted texts, but a generation holds at most
/// `capacity / 16` entries, so crafted collisions can slow lookups in one
/// shard only by a bounded factor; SipHash cost more than the rest of a
/// cache hit.
#[derive(Clone, Copy)]
struct FastHash(u64);

impl Default for FastHash {
    fn default() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        FastHash(*SEED.get_or_init(|| {
            use std::hash::{BuildHasher as _, Hasher as _};
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        }))
    }
}

impl BuildHasher for FastHash {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.0)
    }
}

struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl Generations {
    fn get(&mut self, key: &str, generation: usize) -> Option<Arc<Analysis>> {
        if let Some(a) = self.young.get(key) {
            return Some(a.clone());
        }
        let (k, a) = self.old.remove_entry(key)?;
        self.insert(k, a.clone(), generation);
        Some(a)
    }

    fn insert(&mut self, key: Box<str>, analysis: Arc<Analysis>, generation: usize) {
        if self.young.len() >= generation {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, analysis);
    }

    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

/// A sharded map of generations.
struct Map {
    shards: Vec<Mutex<Generations>>,
    /// Entries per generation per shard.
    generation: usize,
}

impl Map {
    fn new(capacity: usize) -> Self {
        Map {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            generation: (capacity / 2 / SHARDS).max(1),
        }
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Generations> {
        self.shards[shard_of(key)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &str) -> Option<Arc<Analysis>> {
        self.shard(key).get(key, self.generation)
    }

    fn insert(&self, key: &str, analysis: Arc<Analysis>) {
        self.shard(key)
            .insert(key.into(), analysis, self.generation);
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// Analyses by exact SQL text and by shape, bounded.
pub struct AnalysisCache {
    texts: Map,
    shapes: Map,
    hits: AtomicU64,
    shape_hits: AtomicU64,
    misses: AtomicU64,
}

/// How many lookups were answered, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Answered by exact text.
    pub hits: u64,
    /// Answered by shape (same statement, other literals).
    pub shape_hits: u64,
    /// Parsed.
    pub misses: u64,
}

impl AnalysisCache {
    /// A cache holding up to `capacity` texts and as many shapes.
    pub fn new(capacity: usize) -> Self {
        AnalysisCache {
            texts: Map::new(capacity),
            shapes: Map::new(capacity),
            hits: AtomicU64::new(0),
            shape_hits: AtomicU64::new(0),
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
        if sql.len() <= MAX_CACHED_LEN {
            if let Some(a) = self.texts.get(sql) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return a;
            }
        }
        let (normalized, literals) = match digest::normalize_with_literals(sql) {
            Ok(n) => n,
            Err(e) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                return Arc::new(unreadable(&e));
            }
        };
        if sql.len() > MAX_CACHED_LEN {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return Arc::new(analyze_normalized(sql, normalized));
        }
        let mut shape = normalized.clone();
        shape.push('\0');
        // The kinds are ASCII letters and `?`.
        shape.extend(literals.iter().map(|&b| b as char));
        if let Some(a) = self.shapes.get(&shape) {
            self.shape_hits.fetch_add(1, Ordering::Relaxed);
            self.texts.insert(sql, a.clone());
            return a;
        }
        // Analyse outside the locks: another session may do the same work for
        // the same text at the same time, which is harmless.
        self.misses.fetch_add(1, Ordering::Relaxed);
        let analysis = Arc::new(analyze_normalized(sql, normalized));
        self.texts.insert(sql, analysis.clone());
        if analysis.parse_error.is_none() {
            self.shapes.insert(&shape, analysis.clone());
        }
        analysis
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            shape_hits: self.shape_hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// Texts held now.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A cheap spread of keys over shards (the maps hash properly afterwards).
fn shard_of(key: &str) -> usize {
    let b = key.as_bytes();
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
    use super::super::{analyze, StatementClass};
    use super::*;

    #[test]
    fn repeated_texts_hit_and_the_cache_stays_bounded() {
        let cache = AnalysisCache::new(64);
        let a = cache.analyze("SELECT * FROM t WHERE id = 1");
        let b = cache.analyze("SELECT * FROM t WHERE id = 1");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.stats().hits, 1);
        for i in 0..1000 {
            cache.analyze(&format!("SELECT * FROM t{i} WHERE id = {i}"));
        }
        assert!(cache.len() <= 64, "{} entries", cache.len());
        // A text used in every generation survives.
        let hot = "SELECT c FROM hot";
        let first = cache.analyze(hot);
        for i in 0..1000 {
            cache.analyze(&format!("SELECT * FROM u{i}"));
            if i % 3 == 0 {
                assert!(Arc::ptr_eq(&first, &cache.analyze(hot)));
            }
        }
        // Long texts are analysed, not kept.
        let long = format!("SELECT '{}'", "x".repeat(MAX_CACHED_LEN));
        let before = cache.len();
        assert_eq!(cache.analyze(&long).class, StatementClass::Read);
        assert_eq!(cache.len(), before);
    }

    #[test]
    fn other_literals_share_the_analysis_of_their_shape() {
        let cache = AnalysisCache::new(64);
        let a = cache.analyze("SELECT c FROM sbtest1 WHERE id = 1");
        let b = cache.analyze("select c from sbtest1 where id=2 -- again");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 0,
                shape_hits: 1,
                misses: 1
            }
        );
        // What is shared is exactly what a fresh analysis says.
        assert_eq!(*b, analyze("select c from sbtest1 where id=2 -- again"));
        // Another kind of literal is another shape.
        cache.analyze("SELECT c FROM sbtest1 WHERE id = 'x'");
        assert_eq!(cache.stats().misses, 2);
        // Unparsed statements are never shared by shape.
        cache.analyze("SELECT c FROM sbtest1 INTO OUTFILE '/tmp/a'");
        cache.analyze("SELECT c FROM sbtest1 INTO OUTFILE '/tmp/b'");
        assert_eq!(cache.stats().misses, 4);
    }
}
