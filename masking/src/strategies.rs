//! What a masked value becomes: full redaction, partial, keyed hash, NULL, a
//! fixed value; for numbers and dates also zero and bucketing.
//!
//! Strategies work on the value's text form (the text protocol's form; binary
//! values are converted by [`super::rewrite`]). The keyed hash is HMAC-SHA256:
//! the same value always gives the same output under one key, so joins and
//! GROUP BY over masked values still work, and without the key the output
//! cannot be reversed by hashing guesses.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::MaskingError;

/// A strategy, as configured (`strategy = "partial"`, ...).
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// The whole value replaced by `[redacted]` (numbers and dates: NULL).
    Redact,
    /// Keep `keep_prefix` leading and `keep_suffix` trailing characters; with
    /// `keep_domain`, an e-mail address keeps its domain.
    Partial {
        keep_prefix: usize,
        keep_suffix: usize,
        keep_domain: bool,
    },
    /// HMAC-SHA256 of the value, hex, cut to fit the column.
    Hash,
    Null,
    Fixed(String),
    /// Numbers: 0; dates: 1970-01-01; strings: empty.
    Zero,
    /// Numbers: rounded down to a multiple of the size; dates: cut to the year
    /// (`size` 0) or month (any other size); strings: redacted.
    Bucket {
        size: f64,
        months: bool,
    },
}

impl Strategy {
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Redact => "redact",
            Strategy::Partial { .. } => "partial",
            Strategy::Hash => "hash",
            Strategy::Null => "null",
            Strategy::Fixed(_) => "fixed",
            Strategy::Zero => "zero",
            Strategy::Bucket { .. } => "bucket",
        }
    }

    /// Parses a strategy from its config fields.
    pub fn from_config(
        name: &str,
        keep_prefix: usize,
        keep_suffix: usize,
        keep_domain: bool,
        value: Option<&str>,
        bucket: Option<f64>,
        date_bucket: Option<&str>,
    ) -> Result<Self, MaskingError> {
        Ok(match name {
            "redact" => Strategy::Redact,
            "partial" => Strategy::Partial {
                keep_prefix,
                keep_suffix,
                keep_domain,
            },
            "hash" => Strategy::Hash,
            "null" => Strategy::Null,
            "fixed" => Strategy::Fixed(
                value
                    .ok_or_else(|| {
                        MaskingError::Config("strategy \"fixed\" needs `value = \"...\"`".into())
                    })?
                    .to_string(),
            ),
            "zero" => Strategy::Zero,
            "bucket" => {
                let size = bucket.unwrap_or(10.0);
                if size <= 0.0 || !size.is_finite() {
                    return Err(MaskingError::Config(
                        "strategy \"bucket\": `bucket` must be a positive number".into(),
                    ));
                }
                let months = match date_bucket.unwrap_or("year") {
                    "year" => false,
                    "month" => true,
                    other => {
                        return Err(MaskingError::Config(format!(
                            "date_bucket {other:?}: use \"year\" or \"month\""
                        )))
                    }
                };
                Strategy::Bucket { size, months }
            }
            other => {
                return Err(MaskingError::Config(format!(
                    "unknown masking strategy {other:?}; use redact, partial, hash, null, fixed, zero or bucket"
                )))
            }
        })
    }
}

/// What kind of value a column holds, for strategies that depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Text,
    Integer,
    Real,
    Date,
    DateTime,
    Time,
}

impl ValueKind {
    /// The kind of a column of this MySQL type.
    pub fn of_type(t: u8) -> Self {
        match t {
            1 | 2 | 3 | 8 | 9 | 13 | 16 => ValueKind::Integer,
            0 | 4 | 5 | 246 => ValueKind::Real,
            10 | 14 => ValueKind::Date,
            7 | 12 | 17 | 18 => ValueKind::DateTime,
            11 | 19 => ValueKind::Time,
            _ => ValueKind::Text,
        }
    }
}

/// The column's size, for shaping hashes and redactions.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub kind: ValueKind,
    /// Characters the column holds; None: unknown or large.
    pub max_chars: Option<usize>,
}

impl Shape {
    pub fn new(column_type: u8, column_length: u32, character_set: u16) -> Self {
        let per_char = match character_set {
            45 | 46 | 224..=247 | 255..=323 => 4,
            33 | 83 | 192..=215 | 76 => 3,
            _ => 1,
        };
        let chars = column_length as usize / per_char;
        Shape {
            kind: ValueKind::of_type(column_type),
            max_chars: (chars > 0 && chars < 1 << 20).then_some(chars),
        }
    }
}

/// The key of the keyed hash: the HMAC state after the key, kept so that each
/// value costs only its own blocks (not the key's two).
#[derive(Clone)]
pub struct HashKey(Hmac<Sha256>);

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(..)")
    }
}

impl HashKey {
    pub fn new(key: impl AsRef<[u8]>) -> Self {
        HashKey(
            <Hmac<Sha256> as Mac>::new_from_slice(key.as_ref()).expect("HMAC takes any key length"),
        )
    }

    pub fn mac(&self, value: &[u8]) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(value);
        mac.finalize().into_bytes().into()
    }

    /// Hex of the HMAC, `len` characters (at most 64).
    pub fn hex(&self, value: &[u8], len: usize) -> String {
        let mut h = hex::encode(self.mac(value));
        h.truncate(len.clamp(1, 64));
        h
    }
}

/// Cuts a string to at most `n` characters.
fn fit(s: String, n: Option<usize>) -> String {
    match n {
        Some(n) if s.chars().count() > n => s.chars().take(n).collect(),
        _ => s,
    }
}

/// Applies a strategy to one value (text form). None: the value becomes NULL.
pub fn apply(strategy: &Strategy, value: &[u8], shape: Shape, key: &HashKey) -> Option<Vec<u8>> {
    let numeric = matches!(shape.kind, ValueKind::Integer | ValueKind::Real);
    let dated = matches!(shape.kind, ValueKind::Date | ValueKind::DateTime);
    match strategy {
        Strategy::Null => None,
        Strategy::Redact | Strategy::Partial { .. }
            if numeric || dated || shape.kind == ValueKind::Time =>
        {
            None
        }
        Strategy::Redact => Some(fit("[redacted]".into(), shape.max_chars).into_bytes()),
        Strategy::Partial {
            keep_prefix,
            keep_suffix,
            keep_domain,
        } => Some(partial(value, *keep_prefix, *keep_suffix, *keep_domain).into_bytes()),
        Strategy::Hash if numeric => {
            let mac = key.mac(value);
            let n = u64::from_le_bytes(mac[..8].try_into().expect("8 bytes"));
            // Fits a signed INT whatever the column: deterministic, not reversible.
            Some(((n % 1_000_000_000) as i64).to_string().into_bytes())
        }
        Strategy::Hash if dated => None,
        Strategy::Hash => Some(key.hex(value, shape.max_chars.unwrap_or(64)).into_bytes()),
        Strategy::Fixed(v) => Some(v.clone().into_bytes()),
        Strategy::Zero => Some(
            match shape.kind {
                ValueKind::Integer | ValueKind::Real => "0",
                ValueKind::Date => "1970-01-01",
                ValueKind::DateTime => "1970-01-01 00:00:00",
                ValueKind::Time => "00:00:00",
                ValueKind::Text => "",
            }
            .as_bytes()
            .to_vec(),
        ),
        Strategy::Bucket { size, months } => match shape.kind {
            ValueKind::Integer | ValueKind::Real => {
                let v: f64 = std::str::from_utf8(value).ok()?.trim().parse().ok()?;
                let b = (v / size).floor() * size;
                Some(
                    if shape.kind == ValueKind::Integer || b.fract() == 0.0 {
                        format!("{}", b as i64)
                    } else {
                        format!("{b}")
                    }
                    .into_bytes(),
                )
            }
            ValueKind::Date | ValueKind::DateTime => {
                let s = std::str::from_utf8(value).ok()?;
                let year = s.get(..4)?;
                let month = if *months { s.get(5..7)? } else { "01" };
                let mut out = format!("{year}-{month}-01");
                if shape.kind == ValueKind::DateTime {
                    out += " 00:00:00";
                }
                Some(out.into_bytes())
            }
            ValueKind::Time => Some(b"00:00:00".to_vec()),
            ValueKind::Text => Some(fit("[redacted]".into(), shape.max_chars).into_bytes()),
        },
    }
}

/// Partial masking: `a***z`, or `a***@example.com` for e-mail addresses.
pub fn partial(value: &[u8], keep_prefix: usize, keep_suffix: usize, keep_domain: bool) -> String {
    let s = String::from_utf8_lossy(value);
    if keep_domain {
        if let Some(at) = s.rfind('@') {
            let local: String = s[..at].chars().take(keep_prefix).collect();
            return format!("{local}***{}", &s[at..]);
        }
    }
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= keep_prefix + keep_suffix {
        return "***".into();
    }
    let head: String = chars[..keep_prefix].iter().collect();
    let tail: String = chars[chars.len() - keep_suffix..].iter().collect();
    format!("{head}***{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: Option<usize>) -> Shape {
        Shape {
            kind: ValueKind::Text,
            max_chars: n,
        }
    }

    #[test]
    fn strategies() {
        let key = HashKey::new(b"k");
        let s = |st: Strategy, v: &str, shape: Shape| {
            apply(&st, v.as_bytes(), shape, &key).map(|b| String::from_utf8(b).unwrap())
        };
        assert_eq!(
            s(Strategy::Redact, "x@y.com", text(None)).unwrap(),
            "[redacted]"
        );
        assert_eq!(
            s(Strategy::Redact, "x@y.com", text(Some(4))).unwrap(),
            "[red"
        );
        let p = Strategy::Partial {
            keep_prefix: 1,
            keep_suffix: 0,
            keep_domain: true,
        };
        assert_eq!(
            s(p, "ana.lopez@example.com", text(None)).unwrap(),
            "a***@example.com"
        );
        let p = Strategy::Partial {
            keep_prefix: 0,
            keep_suffix: 4,
            keep_domain: false,
        };
        assert_eq!(s(p, "4111111111111111", text(None)).unwrap(), "***1111");
        let h1 = s(Strategy::Hash, "ana", text(Some(12))).unwrap();
        assert_eq!(h1.len(), 12);
        assert_eq!(h1, s(Strategy::Hash, "ana", text(Some(12))).unwrap());
        assert_ne!(h1, s(Strategy::Hash, "anb", text(Some(12))).unwrap());
        let int = Shape {
            kind: ValueKind::Integer,
            max_chars: None,
        };
        let b = Strategy::Bucket {
            size: 1000.0,
            months: false,
        };
        assert_eq!(s(b.clone(), "123456", int).unwrap(), "123000");
        let date = Shape {
            kind: ValueKind::Date,
            max_chars: None,
        };
        assert_eq!(s(b, "1984-07-19", date).unwrap(), "1984-01-01");
        assert_eq!(s(Strategy::Redact, "1984-07-19", date), None);
        assert_eq!(s(Strategy::Zero, "17", int).unwrap(), "0");
    }
}
