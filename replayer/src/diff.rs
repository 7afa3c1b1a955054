//! Two runs of a job, statement by statement: an LCS alignment by digest (so an
//! inserted or removed statement does not shift everything after it), then
//! what differs between aligned statements. One engine for the CLI and query-ui.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::model::Statement;

/// The part of a statement that differs between the two runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    Params {
        a: Vec<String>,
        b: Vec<String>,
    },
    ResultHash {
        a: Option<String>,
        b: Option<String>,
    },
    RowsReturned {
        a: i64,
        b: i64,
    },
    RowsAffected {
        a: i64,
        b: i64,
    },
    Error {
        a: Option<String>,
        b: Option<String>,
    },
    Warnings {
        a: i32,
        b: i32,
    },
    Tables {
        only_a: Vec<String>,
        only_b: Vec<String>,
    },
}

/// One line of the alignment.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    Same {
        a: i64,
        b: i64,
        /// A's statement.
        label: String,
        /// B's statement (the same digest can have other text: literals,
        /// comments, a mapped database name).
        label_b: String,
    },
    Changed {
        a: i64,
        b: i64,
        label: String,
        label_b: String,
        changes: Vec<Change>,
    },
    OnlyA {
        a: i64,
        label: String,
    },
    OnlyB {
        b: i64,
        label: String,
    },
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    pub session_a: String,
    pub session_b: String,
    pub entries: Vec<Entry>,
    pub summary: Summary,
    /// Tables touched by one run only, over the whole session.
    pub tables_only_a: Vec<String>,
    pub tables_only_b: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub same: usize,
    pub changed: usize,
    pub only_a: usize,
    pub only_b: usize,
}

impl Diff {
    pub fn is_different(&self) -> bool {
        self.summary.changed + self.summary.only_a + self.summary.only_b > 0
            || !self.tables_only_a.is_empty()
            || !self.tables_only_b.is_empty()
    }
}

/// Pairs of (index in a, index in b) of a longest common subsequence by key.
pub fn align(a: &[String], b: &[String]) -> Vec<(usize, usize)> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (ma, mb) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let mut pairs: Vec<(usize, usize)> = (0..prefix).map(|i| (i, i)).collect();
    if (ma.len() as u64) * (mb.len() as u64) <= 50_000_000 {
        // Classic DP over the differing middle.
        let (n, m) = (ma.len(), mb.len());
        let mut t = vec![0u32; (n + 1) * (m + 1)];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                t[i * (m + 1) + j] = if ma[i] == mb[j] {
                    t[(i + 1) * (m + 1) + j + 1] + 1
                } else {
                    t[(i + 1) * (m + 1) + j].max(t[i * (m + 1) + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n && j < m {
            if ma[i] == mb[j] {
                pairs.push((prefix + i, prefix + j));
                i += 1;
                j += 1;
            } else if t[(i + 1) * (m + 1) + j] >= t[i * (m + 1) + j + 1] {
                i += 1;
            } else {
                j += 1;
            }
        }
    } else {
        // Too large for the table: greedy forward matching.
        let mut j = 0;
        for (i, k) in ma.iter().enumerate() {
            if let Some(off) = mb[j..].iter().position(|x| x == k) {
                pairs.push((prefix + i, prefix + j + off));
                j += off + 1;
            }
        }
    }
    pairs.extend((0..suffix).map(|k| (a.len() - suffix + k, b.len() - suffix + k)));
    pairs
}

fn tables(s: &Statement) -> BTreeSet<String> {
    s.tables_read
        .iter()
        .chain(&s.tables_written)
        .cloned()
        .collect()
}

fn error_text(s: &Statement) -> Option<String> {
    s.error_code
        .filter(|c| *c != 0)
        .map(|c| format!("{c}: {}", s.error_message.as_deref().unwrap_or("")))
}

/// What differs between two aligned statements.
pub fn changes(a: &Statement, b: &Statement) -> Vec<Change> {
    let mut out = Vec::new();
    if a.params != b.params || (a.digest.is_some() && a.sql != b.sql && a.params.is_empty()) {
        // Same digest, different literals (text protocol) or parameters (binary).
        let (pa, pb) = if a.params.is_empty() && b.params.is_empty() {
            (vec![a.label()], vec![b.label()])
        } else {
            (a.params.clone(), b.params.clone())
        };
        out.push(Change::Params { a: pa, b: pb });
    }
    if error_text(a) != error_text(b) {
        out.push(Change::Error {
            a: error_text(a),
            b: error_text(b),
        });
    }
    if a.result_hash != b.result_hash {
        out.push(Change::ResultHash {
            a: a.result_hash.clone(),
            b: b.result_hash.clone(),
        });
    }
    if a.rows_returned != b.rows_returned {
        out.push(Change::RowsReturned {
            a: a.rows_returned,
            b: b.rows_returned,
        });
    }
    if a.rows_affected != b.rows_affected {
        out.push(Change::RowsAffected {
            a: a.rows_affected,
            b: b.rows_affected,
        });
    }
    if a.warnings != b.warnings {
        out.push(Change::Warnings {
            a: a.warnings,
            b: b.warnings,
        });
    }
    let (ta, tb) = (tables(a), tables(b));
    if ta != tb {
        out.push(Change::Tables {
            only_a: ta.difference(&tb).cloned().collect(),
            only_b: tb.difference(&ta).cloned().collect(),
        });
    }
    out
}

/// Compares two sessions, with A's database names mapped to B's first
/// ([`crate::dbmap::DatabaseMap`]; empty: as recorded).
pub fn diff_mapped(
    a_id: &str,
    a: &[Statement],
    b_id: &str,
    b: &[Statement],
    map: &crate::dbmap::DatabaseMap,
) -> Diff {
    if map.is_empty() {
        return diff(a_id, a, b_id, b);
    }
    let a: Vec<Statement> = a.iter().map(|s| map.comparable(map.apply(s))).collect();
    let b: Vec<Statement> = b.iter().map(|s| map.comparable(s.clone())).collect();
    diff(a_id, &a, b_id, &b)
}

/// Compares two sessions.
pub fn diff(a_id: &str, a: &[Statement], b_id: &str, b: &[Statement]) -> Diff {
    let ka: Vec<String> = a.iter().map(Statement::align_key).collect();
    let kb: Vec<String> = b.iter().map(Statement::align_key).collect();
    let pairs = align(&ka, &kb);
    let mut entries = Vec::new();
    let mut summary = Summary::default();
    let (mut i, mut j) = (0, 0);
    let push_only = |entries: &mut Vec<Entry>, i: &mut usize, j: &mut usize, ui, uj| {
        while *i < ui {
            entries.push(Entry::OnlyA {
                a: a[*i].command_index,
                label: a[*i].label(),
            });
            *i += 1;
        }
        while *j < uj {
            entries.push(Entry::OnlyB {
                b: b[*j].command_index,
                label: b[*j].label(),
            });
            *j += 1;
        }
    };
    for (pi, pj) in pairs {
        push_only(&mut entries, &mut i, &mut j, pi, pj);
        let c = changes(&a[pi], &b[pj]);
        let (label, label_b) = (a[pi].label(), b[pj].label());
        entries.push(if c.is_empty() {
            Entry::Same {
                a: a[pi].command_index,
                b: b[pj].command_index,
                label,
                label_b,
            }
        } else {
            Entry::Changed {
                a: a[pi].command_index,
                b: b[pj].command_index,
                label,
                label_b,
                changes: c,
            }
        });
        i = pi + 1;
        j = pj + 1;
    }
    push_only(&mut entries, &mut i, &mut j, a.len(), b.len());
    for e in &entries {
        match e {
            Entry::Same { .. } => summary.same += 1,
            Entry::Changed { .. } => summary.changed += 1,
            Entry::OnlyA { .. } => summary.only_a += 1,
            Entry::OnlyB { .. } => summary.only_b += 1,
        }
    }
    let all = |s: &[Statement]| s.iter().flat_map(tables).collect::<BTreeSet<_>>();
    let (ta, tb) = (all(a), all(b));
    Diff {
        session_a: a_id.to_string(),
        session_b: b_id.to_string(),
        entries,
        summary,
        tables_only_a: ta.difference(&tb).cloned().collect(),
        tables_only_b: tb.difference(&ta).cloned().collect(),
    }
}

fn short(h: &Option<String>) -> String {
    h.as_deref()
        .map(|h| h.chars().take(12).collect())
        .unwrap_or_else(|| "none".into())
}

/// The diff as text; `colour` adds ANSI colours (for a terminal).
pub fn render(d: &Diff, colour: bool) -> String {
    let paint = |code: &str, s: String| {
        if colour {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s
        }
    };
    let mut out = format!("diff A={} B={}\n", d.session_a, d.session_b);
    for e in &d.entries {
        match e {
            Entry::Same { .. } => {}
            Entry::OnlyA { a, label } => {
                out += &paint(
                    "31",
                    format!(
                        "- A#{a:<4}      only in A: {}",
                        crate::story::truncate(label, 100)
                    ),
                );
                out.push('\n');
            }
            Entry::OnlyB { b, label } => {
                out += &paint(
                    "32",
                    format!(
                        "+      B#{b:<4} only in B: {}",
                        crate::story::truncate(label, 100)
                    ),
                );
                out.push('\n');
            }
            Entry::Changed {
                a,
                b,
                label,
                label_b,
                changes,
            } => {
                out += &paint(
                    "33",
                    format!("~ A#{a:<4} B#{b:<4} {}", crate::story::truncate(label, 100)),
                );
                out.push('\n');
                if label_b != label {
                    out += &format!("      B: {}\n", crate::story::truncate(label_b, 100));
                }
                for c in changes {
                    let line = match c {
                        Change::Params { a, b } => {
                            format!("parameters: {} -> {}", a.join(", "), b.join(", "))
                        }
                        Change::ResultHash { a, b } => {
                            format!("result hash: {} -> {}", short(a), short(b))
                        }
                        Change::RowsReturned { a, b } => format!("rows returned: {a} -> {b}"),
                        Change::RowsAffected { a, b } => format!("rows affected: {a} -> {b}"),
                        Change::Error { a, b } => format!(
                            "error: {} -> {}",
                            a.as_deref().unwrap_or("none"),
                            b.as_deref().unwrap_or("none")
                        ),
                        Change::Warnings { a, b } => format!("warnings: {a} -> {b}"),
                        Change::Tables { only_a, only_b } => {
                            format!("tables: -[{}] +[{}]", only_a.join(", "), only_b.join(", "))
                        }
                    };
                    out += &format!("      {line}\n");
                }
            }
        }
    }
    if !d.tables_only_a.is_empty() || !d.tables_only_b.is_empty() {
        out += &format!(
            "tables touched only by A: [{}], only by B: [{}]\n",
            d.tables_only_a.join(", "),
            d.tables_only_b.join(", ")
        );
    }
    let s = &d.summary;
    out += &format!(
        "{} same, {} changed, {} only in A, {} only in B\n",
        s.same, s.changed, s.only_a, s.only_b
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(s: &str) -> Vec<String> {
        s.chars().map(|c| c.to_string()).collect()
    }

    #[test]
    fn alignment_survives_insertions_and_removals() {
        let p = align(&keys("abcdef"), &keys("abXcdf"));
        assert_eq!(p, vec![(0, 0), (1, 1), (2, 3), (3, 4), (5, 5)]);
        assert_eq!(align(&keys(""), &keys("ab")), vec![]);
        assert_eq!(align(&keys("abc"), &keys("abc")).len(), 3);
    }

    fn st(i: i64, digest: &str, hash: &str) -> Statement {
        Statement {
            command_index: i,
            command: "COM_QUERY".into(),
            sql: Some(format!("SELECT {digest}")),
            digest: Some(digest.into()),
            result_hash: Some(hash.into()),
            ..Default::default()
        }
    }

    #[test]
    fn reports_only_in_and_changed() {
        let a = vec![st(0, "x", "1"), st(1, "y", "2"), st(2, "z", "3")];
        let b = vec![st(0, "x", "1"), st(1, "z", "4"), st(2, "w", "5")];
        let d = diff("A", &a, "B", &b);
        assert_eq!(
            d.summary,
            Summary {
                same: 1,
                changed: 1,
                only_a: 1,
                only_b: 1
            }
        );
        assert!(d.is_different());
        assert!(render(&d, false).contains("result hash: 3 -> 4"));
    }

    #[test]
    fn a_mapped_database_name_is_not_a_change() {
        let run = |db: &str| {
            let mut s = st(0, &format!("digest-{db}"), "1");
            s.sql = Some(format!("ALTER TABLE `{db}`.orders ADD c INT"));
            s.normalized_sql = Some(format!("ALTER TABLE `{db}`.orders ADD c INT"));
            s.database = Some(db.into());
            s.tables_written = vec![format!("{db}.orders")];
            vec![s]
        };
        let (a, b) = (run("shop_a"), run("shop_b"));
        assert_eq!(diff("A", &a, "B", &b).summary.same, 0);
        let map = crate::dbmap::DatabaseMap::parse(&["shop_a=shop_b".to_string()]).unwrap();
        let d = diff_mapped("A", &a, "B", &b, &map);
        assert_eq!(d.summary.same, 1, "{d:?}");
        assert!(!d.is_different());
    }
}
