//! The live sessions of this gateway, by the connection id shown to clients, so
//! that `KILL [QUERY] <id>` reaches the right upstream connection.

use std::collections::HashMap;
use std::sync::Mutex;

use chaperone_sql::{Analysis, Features};

/// What KILL needs to know about a live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSession {
    pub upstream_connection_id: u32,
    /// `issuer` + `subject` of the identity: only the same identity may kill it.
    pub owner: (String, String),
    pub target: String,
}

#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<u32, LiveSession>>,
}

impl Registry {
    pub fn insert(&self, connection_id: u32, session: LiveSession) {
        self.sessions
            .lock()
            .expect("registry lock")
            .insert(connection_id, session);
    }

    pub fn remove(&self, connection_id: u32) {
        self.sessions
            .lock()
            .expect("registry lock")
            .remove(&connection_id);
    }

    pub fn get(&self, connection_id: u32) -> Option<LiveSession> {
        self.sessions
            .lock()
            .expect("registry lock")
            .get(&connection_id)
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.sessions.lock().expect("registry lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `KILL [HARD|SOFT] [CONNECTION|QUERY [ID]] <id>` as the gateway understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    pub query_only: bool,
    pub id: u64,
}

/// Does this SQL start with the KILL keyword (after whitespace and comments)?
pub fn is_kill(sql: &[u8]) -> bool {
    let s = skip_comments(sql);
    s.len() >= 4
        && s[..4].eq_ignore_ascii_case(b"kill")
        && s.get(4)
            .is_none_or(|b| !b.is_ascii_alphanumeric() && *b != b'_')
}

fn skip_comments(mut s: &[u8]) -> &[u8] {
    loop {
        let trimmed = s.trim_ascii_start();
        if let Some(rest) = trimmed.strip_prefix(b"/*") {
            if let Some(code) = rest.strip_prefix(b"!").or_else(|| rest.strip_prefix(b"M!")) {
                // An executable comment is code: read on inside it, after the
                // optional version number.
                s = code.trim_ascii_start();
                s = &s[s.iter().take_while(|b| b.is_ascii_digit()).count()..];
                continue;
            }
            match rest.windows(2).position(|w| w == b"*/") {
                Some(i) => s = &rest[i + 2..],
                None => return b"",
            }
        } else if trimmed.starts_with(b"#") || trimmed.starts_with(b"-- ") {
            match trimmed.iter().position(|b| *b == b'\n') {
                Some(i) => s = &trimmed[i + 1..],
                None => return b"",
            }
        } else {
            return trimmed;
        }
    }
}

/// Where KILL appears in a SQL text sent as COM_QUERY or COM_STMT_PREPARE.
///
/// Clients see the gateway's connection ids, the server its own, and every
/// session of a target shares the gateway's upstream user, which may kill its
/// own connections. So a KILL must never reach the server unrewritten: it
/// would name some other session's upstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillInText {
    /// No KILL: forward the text as it is.
    Absent,
    /// The text is one KILL statement: rewritten when it is a form the gateway
    /// relays (`Some`), refused otherwise.
    Alone(Option<Kill>),
    /// KILL among other statements, as dynamic SQL in a string
    /// (`PREPARE s FROM 'KILL 5'`, `EXECUTE IMMEDIATE`), or in a text the
    /// gateway cannot read: it cannot be rewritten in place, so it is refused.
    Embedded,
}

/// Finds KILL in a SQL text, with the text's [`Analysis`] (which splits
/// statements as the server does and opens executable comments).
pub fn find_kill(sql: &[u8], analysis: &Analysis) -> KillInText {
    let readable = analysis.normalized.is_some();
    let features = analysis.features();
    if !readable || features.contains(Features::DYNAMIC_SQL) {
        // What the gateway cannot read, and statements whose SQL is in a
        // string, are judged by the bytes: any KILL word is suspect.
        return if is_kill(sql) && analysis.statements.len() <= 1 && readable {
            KillInText::Alone(parse_kill(sql))
        } else if mentions_kill(sql) {
            KillInText::Embedded
        } else {
            KillInText::Absent
        };
    }
    if !features.contains(Features::KILL) && !is_kill(sql) {
        KillInText::Absent
    } else if analysis.statements.len() > 1 {
        KillInText::Embedded
    } else {
        KillInText::Alone(parse_kill(sql))
    }
}

/// Does the word KILL (case-insensitive, not part of a longer name) appear
/// anywhere in the bytes, strings and comments included?
fn mentions_kill(sql: &[u8]) -> bool {
    let ident = |b: Option<&u8>| b.is_some_and(|b| chaperone_sql::lexer::is_ident_byte(*b));
    sql.windows(4).enumerate().any(|(i, w)| {
        w.eq_ignore_ascii_case(b"kill")
            && !ident(i.checked_sub(1).and_then(|j| sql.get(j)))
            && !ident(sql.get(i + 4))
    })
}

/// Parses a KILL statement; None when it is a form the gateway does not relay
/// (`KILL USER`, expressions, executable comments, ...).
pub fn parse_kill(sql: &[u8]) -> Option<Kill> {
    let s = std::str::from_utf8(skip_comments(sql)).ok()?;
    let s = s.trim_end().trim_end_matches(';');
    let mut words = s
        .split_ascii_whitespace()
        .map(str::to_ascii_lowercase)
        .peekable();
    if words.next()? != "kill" {
        return None;
    }
    if matches!(words.peek().map(String::as_str), Some("hard" | "soft")) {
        words.next();
    }
    let mut query_only = false;
    match words.peek().map(String::as_str) {
        Some("connection") => {
            words.next();
        }
        Some("query") => {
            query_only = true;
            words.next();
            if words.peek().map(String::as_str) == Some("id") {
                // MariaDB's KILL QUERY ID <query id> names a query, not a connection.
                return None;
            }
        }
        _ => {}
    }
    let id = words.next()?.parse().ok()?;
    if words.next().is_some() {
        return None;
    }
    Some(Kill { query_only, id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_forms() {
        assert_eq!(
            parse_kill(b"KILL 5"),
            Some(Kill {
                query_only: false,
                id: 5
            })
        );
        assert_eq!(
            parse_kill(b" kill query 12;"),
            Some(Kill {
                query_only: true,
                id: 12
            })
        );
        assert_eq!(
            parse_kill(b"/* x */ KILL HARD CONNECTION 7"),
            Some(Kill {
                query_only: false,
                id: 7
            })
        );
        assert_eq!(parse_kill(b"KILL USER bob"), None);
        assert_eq!(parse_kill(b"KILL QUERY ID 3"), None);
        assert_eq!(parse_kill(b"KILL 1+1"), None);
        assert!(is_kill(b"-- c\nKILL 1"));
        assert!(is_kill(b"kill"));
        assert!(!is_kill(b"killer()"));
        assert!(!is_kill(b"SELECT 'KILL 1'"));
        assert!(is_kill(b"/*!50000 KILL 1*/"));
        assert!(is_kill(b"/*M!KILL 1*/"));
        assert_eq!(parse_kill(b"/*!KILL 1*/"), None);
    }

    fn find(sql: &str) -> KillInText {
        find_kill(sql.as_bytes(), &chaperone_sql::analyze(sql))
    }

    #[test]
    fn kill_is_found_wherever_it_runs() {
        let alone = |id| {
            KillInText::Alone(Some(Kill {
                query_only: false,
                id,
            }))
        };
        assert_eq!(find("KILL 5"), alone(5));
        assert_eq!(find("KILL 5;"), alone(5));
        assert_eq!(find("/*!50000 KILL 5 */"), KillInText::Alone(None));
        assert_eq!(find("KILL USER bob"), KillInText::Alone(None));
        for embedded in [
            "SELECT 1; KILL 5",
            "SELECT 1;KILL QUERY 5;",
            "SELECT 1; /*!KILL 5*/",
            "DO 1; /*M! KILL 5 */",
            "SELECT 1; KILL 5; SELECT 'unterminated",
            "PREPARE s FROM 'KILL 5'",
            "EXECUTE IMMEDIATE 'KILL 5'",
            "EXECUTE IMMEDIATE CONCAT('KI', 'LL 5')",
        ] {
            // The last one names no KILL the gateway can see; it is judged
            // by the guardrails' dynamic-SQL rule, see docs/security.md.
            if embedded.contains("CONCAT") {
                assert_eq!(find(embedded), KillInText::Absent, "{embedded}");
            } else {
                assert_eq!(find(embedded), KillInText::Embedded, "{embedded}");
            }
        }
        for absent in [
            "SELECT 1",
            "SELECT 'KILL 5'",
            "SELECT 1; SELECT 'kill me'",
            "CALL kill_old_jobs()",
            "SELECT skill FROM t",
        ] {
            assert_eq!(find(absent), KillInText::Absent, "{absent}");
        }
    }
}
