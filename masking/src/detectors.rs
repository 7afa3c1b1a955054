//! Content detectors: find regulated values (e-mail addresses, card numbers,
//! national ids, secrets...) inside any string, whatever column or expression
//! produced it.
//!
//! Each detector has a cheap prefilter (a byte scan) that rejects most values
//! before its regular expression runs, and, where the format has one, a
//! checksum (Luhn for cards, mod-97 for IBANs) that keeps false positives down.
//! Detectors work on bytes (`regex::bytes`): values need not be UTF-8.

use std::ops::Range;

use regex::bytes::Regex;

use super::MaskingError;

/// A detector's name as written in the config (`detectors = ["email", ...]`).
pub const BUILTIN: &[&str] = &[
    "email", "card", "iban", "us_ssn", "uk_nino", "phone", "ip", "jwt", "api_key",
];

/// How a value is pre-screened before the regular expression runs.
#[derive(Debug, Clone)]
enum Prefilter {
    /// Always run the expression.
    None,
    /// The value contains this byte.
    Byte(u8),
    /// The value contains at least this many ASCII digits.
    Digits(usize),
    /// The value contains one of these substrings (one pass for all of them).
    AnyOf(aho_corasick::AhoCorasick),
    /// IBAN: two upper-case letters followed by two digits somewhere.
    CountryCheck,
    /// IP addresses: a '.' between digits, or a ':' between hex digits.
    Ip,
}

impl Prefilter {
    fn admits(&self, v: &[u8]) -> bool {
        match self {
            Prefilter::None => true,
            Prefilter::Byte(b) => memchr(*b, v),
            Prefilter::Digits(n) => {
                let mut count = 0;
                for b in v {
                    if b.is_ascii_digit() {
                        count += 1;
                        if count >= *n {
                            return true;
                        }
                    }
                }
                false
            }
            Prefilter::AnyOf(needles) => needles.is_match(v),
            Prefilter::CountryCheck => v.windows(4).any(|w| {
                w[0].is_ascii_uppercase()
                    && w[1].is_ascii_uppercase()
                    && w[2].is_ascii_digit()
                    && w[3].is_ascii_digit()
            }),
            Prefilter::Ip => v.windows(3).any(|w| {
                (w[1] == b'.' && w[0].is_ascii_digit() && w[2].is_ascii_digit())
                    || (w[1] == b':' && w[0].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
                    || (w[0] == b':' && w[1] == b':')
            }),
        }
    }
}

fn memchr(b: u8, v: &[u8]) -> bool {
    memchr::memchr(b, v).is_some()
}

/// A prefilter for values holding one of `needles`.
fn any_of(needles: &[&str]) -> Prefilter {
    Prefilter::AnyOf(aho_corasick::AhoCorasick::new(needles).expect("a handful of literal needles"))
}

/// An extra check on a match (a checksum, or its context).
#[derive(Debug, Clone, Copy)]
enum Check {
    None,
    Luhn,
    Iban,
    Ssn,
    /// An international number's `+` starts a word: `1.0+20150825-2` (a
    /// Debian version), `abc+1234567890` are not phone numbers. (The regex
    /// crate has no look-behind.)
    Phone,
}

impl Check {
    /// Does the match `range` of `value` hold?
    fn holds(self, value: &[u8], range: std::ops::Range<usize>) -> bool {
        let m = &value[range.clone()];
        match self {
            Check::None => true,
            Check::Luhn => luhn(m),
            Check::Iban => iban_mod97(m),
            Check::Ssn => ssn_valid(m),
            Check::Phone => {
                m.first() != Some(&b'+')
                    || range.start == 0
                    || !matches!(value[range.start - 1], b'.' | b'_' | b'~' | b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z')
            }
        }
    }
}

/// One detector: a name, a prefilter, an expression, a check.
#[derive(Debug, Clone)]
pub struct Detector {
    pub name: String,
    prefilter: Prefilter,
    regex: Regex,
    check: Check,
}

/// A span of a value that a detector matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub detector: usize,
    pub range: Range<usize>,
}

impl Detector {
    /// A built-in detector by name.
    pub fn builtin(name: &str) -> Result<Self, MaskingError> {
        let (prefilter, pattern, check) = match name {
            "email" => (
                Prefilter::Byte(b'@'),
                r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}",
                Check::None,
            ),
            "card" => (
                Prefilter::Digits(13),
                // Contiguous, or grouped as cards are printed (4-4-4-4..., Amex 4-6-5).
                r"\b(?:\d{13,19}|\d{4}[ \-]\d{4}[ \-]\d{4}[ \-]\d{1,7}|\d{4}[ \-]\d{6}[ \-]\d{4,5})\b",
                Check::Luhn,
            ),
            "iban" => (
                Prefilter::CountryCheck,
                r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
                Check::Iban,
            ),
            "us_ssn" => (Prefilter::Byte(b'-'), r"\b\d{3}-\d{2}-\d{4}\b", Check::Ssn),
            // UK National Insurance number.
            "uk_nino" => (
                Prefilter::Digits(6),
                r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b",
                Check::None,
            ),
            // E.164-style international numbers and North American numbers
            // written with separators; bare digit runs are not phones (ids).
            "phone" => (
                Prefilter::Digits(10),
                r"(?:\+\d{1,3}[ .\-]?(?:\(\d{1,4}\)[ .\-]?)?\d{1,4}(?:[ .\-]?\d{2,4}){2,4}\b|\(?\b\d{3}\)?[ .\-]\d{3}[ .\-]\d{4}\b)",
                Check::Phone,
            ),
            "ip" => (
                Prefilter::Ip,
                r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b|\b(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}\b|\b(?:[0-9A-Fa-f]{1,4}:){1,6}:(?:[0-9A-Fa-f]{1,4}:){0,5}[0-9A-Fa-f]{1,4}\b",
                Check::None,
            ),
            "jwt" => (
                any_of(&["eyJ"]),
                r"eyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*",
                Check::None,
            ),
            "api_key" => (
                any_of(&[
                    "AKIA",
                    "ASIA",
                    "ghp_",
                    "gho_",
                    "ghu_",
                    "ghs_",
                    "ghr_",
                    "github_pat_",
                    "xox",
                    "sk_live_",
                    "sk_test_",
                    "rk_live_",
                ]),
                r"\b(?:A[KS]IA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}|xox[abposr]-[A-Za-z0-9\-]{10,}|[sr]k_(?:live|test)_[A-Za-z0-9]{16,})",
                Check::None,
            ),
            other => {
                return Err(MaskingError::Config(format!(
                    "unknown detector {other:?}; built-in detectors are {}",
                    BUILTIN.join(", ")
                )))
            }
        };
        Ok(Detector {
            name: name.to_string(),
            prefilter,
            // ASCII classes and word boundaries (`(?-u)`): what the patterns
            // mean, and several times faster than Unicode `\d` / `\b` on
            // every string of every result.
            regex: Regex::new(&format!("(?-u){pattern}"))
                .map_err(|e| MaskingError::Config(e.to_string()))?,
            check,
        })
    }

    /// A custom detector from the config: a regular expression.
    pub fn custom(name: &str, pattern: &str) -> Result<Self, MaskingError> {
        Ok(Detector {
            name: name.to_string(),
            prefilter: Prefilter::None,
            regex: Regex::new(pattern).map_err(|e| {
                MaskingError::Config(format!("detector {name:?}: bad regular expression: {e}"))
            })?,
            check: Check::None,
        })
    }

    /// A deny list: any of these literal values (case-insensitive).
    pub fn deny_list(name: &str, values: &[String]) -> Result<Self, MaskingError> {
        let alternatives: Vec<String> = values
            .iter()
            .filter(|v| !v.is_empty())
            .map(|v| regex::escape(v))
            .collect();
        if alternatives.is_empty() {
            return Err(MaskingError::Config(format!(
                "deny list {name:?} has no values"
            )));
        }
        let pattern = format!("(?i)(?:{})", alternatives.join("|"));
        Ok(Detector {
            name: name.to_string(),
            prefilter: Prefilter::None,
            regex: Regex::new(&pattern).map_err(|e| MaskingError::Config(e.to_string()))?,
            check: Check::None,
        })
    }

    fn find(&self, index: usize, value: &[u8], hits: &mut Vec<Hit>) {
        if !self.prefilter.admits(value) {
            return;
        }
        for m in self.regex.find_iter(value) {
            if self.check.holds(value, m.range()) {
                hits.push(Hit {
                    detector: index,
                    range: m.range(),
                });
            }
        }
    }
}

/// A profile's detectors.
#[derive(Debug, Clone, Default)]
pub struct Detectors {
    pub list: Vec<Detector>,
}

impl Detectors {
    /// Every span of `value` some detector matched, sorted, overlaps merged
    /// (the first detector of an overlap names the merged span).
    pub fn scan(&self, value: &[u8]) -> Vec<Hit> {
        let mut hits = Vec::new();
        if value.len() < 6 {
            // Nothing any detector looks for fits in fewer bytes.
            return hits;
        }
        for (i, d) in self.list.iter().enumerate() {
            d.find(i, value, &mut hits);
        }
        if hits.len() > 1 {
            hits.sort_by_key(|h| (h.range.start, std::cmp::Reverse(h.range.end)));
            let mut merged: Vec<Hit> = Vec::with_capacity(hits.len());
            for h in hits {
                match merged.last_mut() {
                    Some(last) if h.range.start < last.range.end => {
                        last.range.end = last.range.end.max(h.range.end);
                    }
                    _ => merged.push(h),
                }
            }
            return merged;
        }
        hits
    }

    pub fn name(&self, index: usize) -> &str {
        &self.list[index].name
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

fn digits(m: &[u8]) -> Vec<u8> {
    m.iter()
        .filter(|b| b.is_ascii_digit())
        .map(|b| b - b'0')
        .collect()
}

/// The Luhn checksum of a card number (separators ignored).
pub fn luhn(m: &[u8]) -> bool {
    let d = digits(m);
    if !(13..=19).contains(&d.len()) {
        return false;
    }
    // ISBN-13 (978/979 prefix) is not a card number.
    if d.len() == 13 && d[..2] == [9, 7] && (d[2] == 8 || d[2] == 9) {
        return false;
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = x as u32;
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 {
                    y - 9
                } else {
                    y
                }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The ISO 13616 mod-97 check of an IBAN (spaces ignored).
pub fn iban_mod97(m: &[u8]) -> bool {
    let s: Vec<u8> = m.iter().copied().filter(|b| *b != b' ').collect();
    if s.len() < 15 || s.len() > 34 {
        return false;
    }
    let rearranged = s[4..].iter().chain(&s[..4]);
    let mut rem: u32 = 0;
    for &c in rearranged {
        let v = match c {
            b'0'..=b'9' => (c - b'0') as u32,
            b'A'..=b'Z' => (c - b'A') as u32 + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// US SSN structure: area not 000, 666 or 9xx; group not 00; serial not 0000.
fn ssn_valid(m: &[u8]) -> bool {
    let d = digits(m);
    if d.len() != 9 {
        return false;
    }
    let area = d[0] as u32 * 100 + d[1] as u32 * 10 + d[2] as u32;
    let group = d[3] * 10 + d[4];
    let serial = d[5..].iter().all(|&x| x == 0);
    area != 0 && area != 666 && area < 900 && group != 0 && !serial
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Detectors {
        Detectors {
            list: BUILTIN
                .iter()
                .map(|n| Detector::builtin(n).unwrap())
                .collect(),
        }
    }

    fn detected(v: &str) -> Vec<String> {
        let d = all();
        d.scan(v.as_bytes())
            .iter()
            .map(|h| format!("{}={}", d.name(h.detector), &v[h.range.clone()]))
            .collect()
    }

    #[test]
    fn finds_each_kind() {
        assert_eq!(
            detected("mail ana.lopez+x@example.co.uk now"),
            ["email=ana.lopez+x@example.co.uk"]
        );
        assert_eq!(
            detected("4111 1111 1111 1111"),
            ["card=4111 1111 1111 1111"]
        );
        assert!(detected("4111 1111 1111 1112").is_empty(), "Luhn");
        assert_eq!(
            detected("GB82 WEST 1234 5698 7654 32"),
            ["iban=GB82 WEST 1234 5698 7654 32"]
        );
        assert_eq!(
            detected("DE89370400440532013000"),
            ["iban=DE89370400440532013000"]
        );
        assert_eq!(detected("ssn 123-45-6789"), ["us_ssn=123-45-6789"]);
        assert!(detected("000-12-3456").is_empty());
        assert_eq!(detected("AB 12 34 56 C"), ["uk_nino=AB 12 34 56 C"]);
        assert_eq!(
            detected("call +44 20 7946 0958"),
            ["phone=+44 20 7946 0958"]
        );
        assert_eq!(detected("(415) 555-0132"), ["phone=(415) 555-0132"]);
        assert_eq!(detected("tel:+4420794609"), ["phone=+4420794609"]);
        // Package versions (seen in a Debian package index): not phones.
        assert!(detected("1.0+20150825-2").is_empty());
        assert!(detected("0.0~git20200416+ds-1").is_empty());
        assert_eq!(detected("from 192.168.10.7"), ["ip=192.168.10.7"]);
        assert_eq!(
            detected("2001:db8::8a2e:370:7334"),
            ["ip=2001:db8::8a2e:370:7334"]
        );
        assert_eq!(
            detected("AKIAIOSFODNN7EXAMPLE"),
            ["api_key=AKIAIOSFODNN7EXAMPLE"]
        );
        assert_eq!(
            detected("ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
            ["api_key=ghp_abcdefghijklmnopqrstuvwxyz0123456789"]
        );
        assert_eq!(
            detected("xoxb-1234567890-abcdef"),
            ["api_key=xoxb-1234567890-abcdef"]
        );
        assert_eq!(
            detected("sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
            ["api_key=sk_live_4eC39HqLyjWDarjtT1zdp7dc"]
        );
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(detected(jwt), [format!("jwt={jwt}")]);
    }

    #[test]
    fn ordinary_values_are_left_alone() {
        for v in [
            "2024-03-01 12:30:45",
            "ORD-2024-000123",
            "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
            "Stainless steel water bottle 750 ml",
            "12 Market Street, Springfield",
            "1234567890123",
            "v1.2.3",
            "SKU 88-123-4",
        ] {
            assert!(detected(v).is_empty(), "{v}: {:?}", detected(v));
        }
    }

    /// A realistic corpus without PII: product names, addresses without names,
    /// order ids, timestamps, UUIDs, prices, SKUs, ISBNs, versions, colours,
    /// paths. Prints the false-positive rate (docs/masking.md reports it).
    #[test]
    fn false_positive_rate_on_a_non_pii_corpus() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let adjectives = [
            "Stainless",
            "Organic",
            "Wireless",
            "Compact",
            "Deluxe",
            "Eco",
            "Vintage",
            "Smart",
        ];
        let nouns = [
            "water bottle",
            "headphones",
            "desk lamp",
            "backpack",
            "coffee grinder",
            "yoga mat",
            "charger",
        ];
        let streets = [
            "Market Street",
            "Oak Avenue",
            "Station Road",
            "High Street",
            "Rue de la Paix",
            "Hauptstrasse",
        ];
        let cities = ["Springfield", "Lyon", "Leeds", "Berlin", "Austin", "Porto"];
        let d = Detectors {
            list: BUILTIN
                .iter()
                .map(|n| Detector::builtin(n).unwrap())
                .collect(),
        };
        let (mut total, mut flagged) = (0u64, Vec::new());
        for i in 0..20_000u64 {
            let v = match i % 12 {
                0 => format!(
                    "{} {} {} ml",
                    adjectives[next(8) as usize],
                    nouns[next(7) as usize],
                    250 + next(750)
                ),
                1 => format!(
                    "{} {}, {} {:05}",
                    1 + next(300),
                    streets[next(6) as usize],
                    cities[next(6) as usize],
                    next(99999)
                ),
                2 => format!("ORD-{}-{:06}", 2019 + next(6), next(1_000_000)),
                3 => format!(
                    "2024-{:02}-{:02} {:02}:{:02}:{:02}",
                    1 + next(12),
                    1 + next(28),
                    next(24),
                    next(60),
                    next(60)
                ),
                4 => format!(
                    "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
                    next(u32::MAX as u64),
                    next(65536),
                    next(4096),
                    next(65536),
                    next(1 << 48)
                ),
                5 => format!("{}.{:02}", next(5000), next(100)),
                6 => format!("SKU-{:05}-{}", next(100_000), next(10)),
                7 => format!(
                    "978-{}-{:02}-{:06}-{}",
                    next(10),
                    next(100),
                    next(1_000_000),
                    next(10)
                ),
                8 => format!("v{}.{}.{}", next(10), next(30), next(100)),
                9 => format!(
                    "#{:06X} / rgb({}, {}, {})",
                    next(1 << 24),
                    next(256),
                    next(256),
                    next(256)
                ),
                10 => format!(
                    "/var/data/exports/{}/part-{:05}.parquet",
                    2020 + next(6),
                    next(100_000)
                ),
                _ => format!(
                    "Invoice INV/{}/{:05} paid by card ending {:04}",
                    2020 + next(6),
                    next(100_000),
                    next(10_000)
                ),
            };
            total += 1;
            if !d.scan(v.as_bytes()).is_empty() {
                flagged.push(v);
            }
        }
        let rate = flagged.len() as f64 / total as f64;
        println!(
            "false positives: {} of {total} ({:.3}%); e.g. {:?}",
            flagged.len(),
            rate * 100.0,
            flagged.iter().take(5).collect::<Vec<_>>()
        );
        assert!(
            rate < 0.01,
            "false-positive rate {rate}: {:?}",
            &flagged[..flagged.len().min(10)]
        );
    }

    #[test]
    fn custom_and_deny_list() {
        let d = Detectors {
            list: vec![
                Detector::custom("employee_id", r"\bEMP-\d{6}\b").unwrap(),
                Detector::deny_list("codenames", &["Project Falcon".into()]).unwrap(),
            ],
        };
        let v = b"EMP-123456 works on project falcon";
        let hits = d.scan(v);
        assert_eq!(hits.len(), 2);
        assert_eq!(&v[hits[1].range.clone()], b"project falcon");
    }
}
