//! `--map-database a=b`: the same job run on two differently named databases
//! (a migration on `shop_staging` and on `shop`) differs in every qualified
//! name. Mapping A's names to B's before comparing (`diff`) or before sending
//! (`replay --against`) leaves only the differences that matter.

/// Database name pairs, A's name to B's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseMap {
    pairs: Vec<(String, String)>,
}

/// A `--map-database` value is not `from=to`.
#[derive(Debug, thiserror::Error)]
#[error("--map-database {0:?}: expected FROM=TO (two database names)")]
pub struct BadMapping(String);

impl DatabaseMap {
    /// Parses `from=to` pairs.
    pub fn parse(items: &[String]) -> Result<DatabaseMap, BadMapping> {
        let pairs = items
            .iter()
            .map(|item| {
                let (from, to) = item
                    .split_once('=')
                    .ok_or_else(|| BadMapping(item.clone()))?;
                let (from, to) = (from.trim(), to.trim());
                if from.is_empty() || to.is_empty() {
                    return Err(BadMapping(item.clone()));
                }
                Ok((from.to_string(), to.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(DatabaseMap { pairs })
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// B's name for A's database `name`, if it is mapped.
    pub fn database(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(from, _)| from == name)
            .map(|(_, to)| to.as_str())
    }

    /// SQL with every identifier that names a mapped database renamed: bare
    /// (`shop.orders`, `USE shop`) or backquoted. String literals are left
    /// alone; a column or a comment word with a database's name is renamed too.
    pub fn sql(&self, sql: &str) -> String {
        if self.is_empty() {
            return sql.to_string();
        }
        let mut out = String::with_capacity(sql.len());
        let mut rest = sql;
        while let Some(c) = rest.chars().next() {
            let token_len = match c {
                '\'' | '"' => quoted_len(rest, c),
                '`' => {
                    let n = quoted_len(rest, '`');
                    let inner = &rest[1..n.saturating_sub(1).max(1)];
                    match self.database(inner) {
                        Some(to) if n >= 2 => {
                            out.push('`');
                            out.push_str(to);
                            out.push('`');
                            rest = &rest[n..];
                            continue;
                        }
                        _ => n,
                    }
                }
                c if is_ident(c) => {
                    let n = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
                    if let Some(to) = self.database(&rest[..n]) {
                        out.push_str(to);
                        rest = &rest[n..];
                        continue;
                    }
                    n
                }
                _ => c.len_utf8(),
            };
            out.push_str(&rest[..token_len]);
            rest = &rest[token_len..];
        }
        out
    }

    /// A recorded statement of A as it would read on B.
    pub fn apply(&self, st: &crate::model::Statement) -> crate::model::Statement {
        let mut st = st.clone();
        let table = |t: &String| match t.split_once('.') {
            Some((db, name)) => match self.database(db) {
                Some(to) => format!("{to}.{name}"),
                None => t.clone(),
            },
            None => t.clone(),
        };
        st.tables_read = st.tables_read.iter().map(table).collect();
        st.tables_written = st.tables_written.iter().map(table).collect();
        if let Some(db) = st.database.as_deref().and_then(|d| self.database(d)) {
            st.database = Some(db.to_string());
        }
        st.sql = st.sql.as_deref().map(|s| self.sql(s));
        st.normalized_sql = st.normalized_sql.as_deref().map(|s| self.sql(s));
        st
    }

    /// A statement aligned by its (mapped) normalized text instead of its
    /// digest: the digest hashes the database names the mapping removes.
    pub fn comparable(&self, mut st: crate::model::Statement) -> crate::model::Statement {
        if let Some(n) = &st.normalized_sql {
            st.digest = Some(n.clone());
        }
        st
    }
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// The length of a quoted token starting at `text[0] == quote` (doubled
/// quotes and backslash escapes inside), or the rest of the text if unclosed.
fn quoted_len(text: &str, quote: char) -> usize {
    let bytes = text.as_bytes();
    let q = quote as u8;
    let mut i = 1;
    while i < bytes.len() {
        if bytes[i] == b'\\' && quote != '`' {
            i += 2;
            continue;
        }
        if bytes[i] == q {
            if bytes.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_database_identifiers_only() {
        let m = DatabaseMap::parse(&["shop_a=shop_b".into()]).unwrap();
        assert_eq!(
            m.sql("INSERT INTO shop_a.t SELECT * FROM `shop_a`.`u` WHERE x = 'shop_a' -- shop_ax"),
            "INSERT INTO shop_b.t SELECT * FROM `shop_b`.`u` WHERE x = 'shop_a' -- shop_ax"
        );
        assert_eq!(m.sql("USE shop_a"), "USE shop_b");
        assert_eq!(m.sql("SELECT shop_abc FROM t"), "SELECT shop_abc FROM t");
        assert!(DatabaseMap::parse(&["nope".into()]).is_err());
        assert!(DatabaseMap::parse(&["=b".into()]).is_err());
    }
}
