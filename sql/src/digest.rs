//! The digest of a SQL text: the statement with its literals replaced by `?`,
//! its whitespace and comments folded, its keywords upper-cased, its IN-lists
//! and VALUES rows collapsed to `(...)`; and a hash of that text. Two runs of the
//! same statement with different values get the same digest, on any gateway,
//! in any release that keeps this normalisation.
//!
//! Normalisation is lexical (like MySQL's own `performance_schema` digests), so
//! a statement the parser does not understand still gets a digest.

use std::sync::OnceLock;

use sha2::{Digest as _, Sha256};

use super::lexer::{is_ident_byte, LexError, Lexer, TokenKind};

/// The hex digest of a normalised text: the first 128 bits of its SHA-256.
pub fn digest_of(normalized: &str) -> String {
    let hash = Sha256::digest(normalized.as_bytes());
    hex::encode(&hash[..16])
}

/// The normalised text of `sql` (see the module documentation).
pub fn normalize(sql: &str) -> Result<String, LexError> {
    normalize_with_literals(sql).map(|(text, _)| text)
}

/// The normalised text, and the kinds of the literals it replaced, in order
/// (`s` string, `n` number, `x` hex or bit, `?` parameter marker). Two texts
/// with the same of both differ only in literal values, whitespace, comments
/// and spelling, so they parse alike: the analysis cache shares their facts.
pub fn normalize_with_literals(sql: &str) -> Result<(String, Vec<u8>), LexError> {
    let mut n = Normalizer {
        out: String::with_capacity(sql.len().min(64 * 1024)),
        last: Last::START,
        before_last: Last::START,
        parens: Vec::new(),
        values_end: None,
        literals: Vec::new(),
    };
    let mut tokens = Lexer::new(sql).peekable();
    while let Some(token) = tokens.next() {
        let token = token?;
        let text = &sql[token.start..token.end];
        match token.kind {
            TokenKind::ExecOpen | TokenKind::ExecClose => {}
            TokenKind::Word => {
                // A character set introducer (`_utf8mb4'x'`) belongs to its literal.
                let introduces_literal = text.starts_with('_')
                    && is_charset(&text[1..])
                    && matches!(
                        tokens.peek(),
                        Some(Ok(t)) if matches!(t.kind, TokenKind::String | TokenKind::HexOrBit)
                    );
                if !introduces_literal {
                    n.word(text);
                }
            }
            TokenKind::QuotedIdent => n.quoted_ident(text),
            TokenKind::String => n.literal(b's'),
            TokenKind::Number => n.literal(b'n'),
            TokenKind::HexOrBit => n.literal(b'x'),
            TokenKind::Placeholder => n.literal(b'?'),
            TokenKind::Variable => n.emit(Kind::Variable, text),
            TokenKind::Semicolon => {
                if !matches!(n.last.kind, Kind::Start | Kind::Semicolon) {
                    n.parens.clear();
                    n.emit(Kind::Semicolon, ";");
                }
            }
            TokenKind::LParen => n.open(),
            TokenKind::RParen => n.close(),
            TokenKind::Comma => n.emit(Kind::Comma, ","),
            TokenKind::Dot => n.emit(Kind::Dot, "."),
            TokenKind::Operator => n.emit(Kind::Operator, text),
        }
    }
    let mut out = n.out;
    while out.ends_with(';') || out.ends_with(' ') {
        out.pop();
    }
    Ok((out, n.literals))
}

/// What was last written to the normalised text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Start,
    /// A keyword; `spaced` when a `(` after it gets a space (`IN (`, not `COUNT(`).
    Keyword {
        spaced: bool,
    },
    /// `NULL`, `TRUE`, `FALSE`, `DEFAULT`: words that stand for a value.
    ValueWord,
    Ident,
    /// `?`.
    Literal,
    Variable,
    Open,
    Close,
    Comma,
    Dot,
    Operator,
    Semicolon,
}

#[derive(Debug, Clone, Copy)]
struct Last {
    kind: Kind,
    /// Length of the output before this token and its separating space.
    at: usize,
    /// A `+` or `-` in a position where it can only be a sign.
    sign: bool,
}

impl Last {
    const START: Last = Last {
        kind: Kind::Start,
        at: 0,
        sign: false,
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParenKind {
    /// `IN (...)`.
    InList,
    /// The first row after `VALUES`.
    Values,
    /// A further row after a collapsed one: removed when it collapses too.
    MoreValues {
        back_to: usize,
    },
    Other,
}

#[derive(Debug)]
struct Paren {
    kind: ParenKind,
    /// Position of the `(` in the output.
    open: usize,
    /// Only literals and commas inside so far.
    literal_only: bool,
    empty: bool,
}

struct Normalizer {
    out: String,
    last: Last,
    before_last: Last,
    parens: Vec<Paren>,
    /// Output length right after a collapsed VALUES row.
    values_end: Option<usize>,
    /// The kind of every literal replaced, in order.
    literals: Vec<u8>,
}

impl Normalizer {
    fn space_before(&self, kind: Kind) -> bool {
        !matches!(
            (self.last.kind, kind),
            (Kind::Start | Kind::Open | Kind::Dot, _)
                | (_, Kind::Close | Kind::Comma | Kind::Dot | Kind::Semicolon)
                | (Kind::Ident | Kind::Keyword { spaced: false }, Kind::Open)
        )
    }

    fn emit(&mut self, kind: Kind, text: &str) {
        let at = self.out.len();
        if self.space_before(kind) {
            self.out.push(' ');
        }
        self.out.push_str(text);
        let sign = kind == Kind::Operator
            && (text == "-" || text == "+")
            && matches!(
                self.last.kind,
                Kind::Start
                    | Kind::Keyword { .. }
                    | Kind::Open
                    | Kind::Comma
                    | Kind::Operator
                    | Kind::Semicolon
            );
        self.mark(kind, sign);
        self.before_last = self.last;
        self.last = Last { kind, at, sign };
    }

    /// Keeps the innermost parenthesis informed of what it contains.
    fn mark(&mut self, kind: Kind, sign: bool) {
        let Some(p) = self.parens.last_mut() else {
            return;
        };
        p.empty = false;
        let value = match kind {
            Kind::Literal | Kind::Comma => true,
            Kind::ValueWord => true,
            Kind::Operator => sign,
            _ => false,
        };
        if !value {
            p.literal_only = false;
        }
    }

    fn literal(&mut self, kind: u8) {
        self.literals.push(kind);
        if self.last.sign {
            // `-5` is one value: drop the sign.
            self.out.truncate(self.last.at);
            self.last = self.before_last;
        }
        self.emit(Kind::Literal, "?");
    }

    fn word(&mut self, text: &str) {
        let mut upper = [0u8; 32];
        let keyword = text.len() <= upper.len() && {
            let upper = &mut upper[..text.len()];
            upper.copy_from_slice(text.as_bytes());
            upper.make_ascii_uppercase();
            is_keyword(upper)
        };
        if !keyword {
            self.emit(Kind::Ident, text);
            return;
        }
        let upper = std::str::from_utf8(&upper[..text.len()]).unwrap_or(text);
        let kind = match upper {
            "NULL" | "TRUE" | "FALSE" | "DEFAULT" => Kind::ValueWord,
            _ => Kind::Keyword {
                spaced: SPACED_BEFORE_PAREN.contains(&upper),
            },
        };
        self.emit(kind, upper);
    }

    fn quoted_ident(&mut self, text: &str) {
        let inner = &text[1..text.len() - 1];
        let plain = !inner.is_empty()
            && inner.bytes().all(is_ident_byte)
            && !inner.bytes().all(|b| b.is_ascii_digit())
            && !inner.contains("``");
        let keyword = inner.len() <= 32 && is_keyword(inner.to_ascii_uppercase().as_bytes());
        if plain && !keyword {
            self.emit(Kind::Ident, inner);
        } else {
            self.emit(Kind::Ident, text);
        }
    }

    fn open(&mut self) {
        let kind = match self.last.kind {
            Kind::Keyword { .. } => {
                let word = self.out[self.last.at..].trim_start();
                match word {
                    "IN" => ParenKind::InList,
                    "VALUES" | "VALUE" => ParenKind::Values,
                    _ => ParenKind::Other,
                }
            }
            Kind::Comma if self.values_end == Some(self.last.at) => ParenKind::MoreValues {
                back_to: self.last.at,
            },
            _ => ParenKind::Other,
        };
        self.emit(Kind::Open, "(");
        self.parens.push(Paren {
            kind,
            open: self.out.len() - 1,
            literal_only: true,
            empty: true,
        });
    }

    fn close(&mut self) {
        let paren = self.parens.pop();
        self.emit(Kind::Close, ")");
        let Some(p) = paren else {
            return;
        };
        if !p.literal_only || p.empty || p.kind == ParenKind::Other {
            return;
        }
        self.out.truncate(p.open);
        self.out.push_str("(...)");
        if let ParenKind::MoreValues { back_to } = p.kind {
            self.out.truncate(back_to);
        }
        if p.kind != ParenKind::InList {
            self.values_end = Some(self.out.len());
        }
        // The collapsed group counts as one value in an enclosing parenthesis.
        if let Some(outer) = self.parens.last_mut() {
            outer.literal_only = false;
        }
    }
}

/// Keywords after which `(` is written with a space: clauses and operators,
/// as opposed to functions (`COUNT(`, `MAX(`).
const SPACED_BEFORE_PAREN: &[&str] = &[
    "ALL",
    "AND",
    "ANY",
    "AS",
    "BETWEEN",
    "BY",
    "ELSE",
    "EXISTS",
    "FROM",
    "HAVING",
    "IN",
    "INTO",
    "IS",
    "JOIN",
    "KEY",
    "LIKE",
    "LIMIT",
    "NOT",
    "ON",
    "OR",
    "RETURNING",
    "SELECT",
    "SET",
    "SOME",
    "TABLE",
    "THEN",
    "UNION",
    "USING",
    "VALUE",
    "VALUES",
    "WHEN",
    "WHERE",
    "WITH",
    "XOR",
];

/// MySQL's character set names, for `_charset'literal'` introducers.
fn is_charset(name: &str) -> bool {
    const CHARSETS: &[&str] = &[
        "armscii8", "ascii", "big5", "binary", "cp1250", "cp1251", "cp1256", "cp1257", "cp850",
        "cp852", "cp866", "cp932", "dec8", "eucjpms", "euckr", "filename", "gb18030", "gb2312",
        "gbk", "geostd8", "greek", "hebrew", "hp8", "keybcs2", "koi8r", "koi8u", "latin1",
        "latin2", "latin5", "latin7", "macce", "macroman", "sjis", "swe7", "tis620", "ucs2",
        "ujis", "utf16", "utf16le", "utf32", "utf8", "utf8mb3", "utf8mb4",
    ];
    CHARSETS.iter().any(|c| c.eq_ignore_ascii_case(name))
}

/// Is `upper` (an upper-cased word) in [`KEYWORDS`]? Words of up to 16 bytes
/// (nearly all) are compared as integers: this runs for every word of every
/// statement on the data path.
fn is_keyword(upper: &[u8]) -> bool {
    static PACKED: OnceLock<Vec<u128>> = OnceLock::new();
    if upper.len() > 16 {
        return std::str::from_utf8(upper).is_ok_and(|u| KEYWORDS.binary_search(&u).is_ok());
    }
    let packed = PACKED.get_or_init(|| {
        let mut v: Vec<u128> = KEYWORDS
            .iter()
            .filter(|k| k.len() <= 16)
            .map(|k| pack(k.as_bytes()))
            .collect();
        v.sort_unstable();
        v
    });
    packed.binary_search(&pack(upper)).is_ok()
}

fn pack(word: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    b[..word.len()].copy_from_slice(word);
    u128::from_le_bytes(b)
}

/// The words written in upper case: MySQL 8.4's reserved words, and the
/// non-reserved keywords that lead or shape statements (`BEGIN`, `COMMIT`,
/// `TRUNCATE`, `ISOLATION`, ...). Other words are kept as written: they are
/// often column names (`status`, `name`, `id`). Sorted, for binary search.
const KEYWORDS: &[&str] = &[
    "ACCESSIBLE",
    "ACTION",
    "ADD",
    "AFTER",
    "AGAINST",
    "ALGORITHM",
    "ALL",
    "ALTER",
    "ANALYZE",
    "AND",
    "ANY",
    "AS",
    "ASC",
    "ASENSITIVE",
    "AUTO_INCREMENT",
    "BEFORE",
    "BEGIN",
    "BETWEEN",
    "BIGINT",
    "BINARY",
    "BLOB",
    "BOOL",
    "BOOLEAN",
    "BOTH",
    "BTREE",
    "BY",
    "CALL",
    "CASCADE",
    "CASE",
    "CHANGE",
    "CHAR",
    "CHARACTER",
    "CHARSET",
    "CHECK",
    "CLOSE",
    "COLLATE",
    "COLUMN",
    "COLUMNS",
    "COMMIT",
    "COMMITTED",
    "CONDITION",
    "CONSISTENT",
    "CONSTRAINT",
    "CONTINUE",
    "CONVERT",
    "CREATE",
    "CROSS",
    "CUBE",
    "CUME_DIST",
    "CURRENT_DATE",
    "CURRENT_TIME",
    "CURRENT_TIMESTAMP",
    "CURRENT_USER",
    "CURSOR",
    "DATABASE",
    "DATABASES",
    "DAY_HOUR",
    "DAY_MICROSECOND",
    "DAY_MINUTE",
    "DAY_SECOND",
    "DEALLOCATE",
    "DEC",
    "DECIMAL",
    "DECLARE",
    "DEFAULT",
    "DEFINER",
    "DELAYED",
    "DELETE",
    "DENSE_RANK",
    "DESC",
    "DESCRIBE",
    "DETERMINISTIC",
    "DISTINCT",
    "DISTINCTROW",
    "DIV",
    "DO",
    "DOUBLE",
    "DROP",
    "DUAL",
    "DUPLICATE",
    "EACH",
    "ELSE",
    "ELSEIF",
    "EMPTY",
    "ENCLOSED",
    "END",
    "ENGINE",
    "ENUM",
    "ESCAPE",
    "ESCAPED",
    "EXCEPT",
    "EXECUTE",
    "EXISTS",
    "EXIT",
    "EXPLAIN",
    "FALSE",
    "FETCH",
    "FIELDS",
    "FIRST",
    "FIRST_VALUE",
    "FLOAT",
    "FLOAT4",
    "FLOAT8",
    "FLUSH",
    "FOLLOWING",
    "FOR",
    "FORCE",
    "FOREIGN",
    "FROM",
    "FULL",
    "FULLTEXT",
    "FUNCTION",
    "GENERATED",
    "GET",
    "GLOBAL",
    "GRANT",
    "GRANTS",
    "GROUP",
    "GROUPING",
    "GROUPS",
    "HANDLER",
    "HASH",
    "HAVING",
    "HIGH_PRIORITY",
    "HOUR_MICROSECOND",
    "HOUR_MINUTE",
    "HOUR_SECOND",
    "IDENTIFIED",
    "IF",
    "IGNORE",
    "IN",
    "INDEX",
    "INFILE",
    "INNER",
    "INOUT",
    "INSENSITIVE",
    "INSERT",
    "INT",
    "INT1",
    "INT2",
    "INT3",
    "INT4",
    "INT8",
    "INTEGER",
    "INTERSECT",
    "INTERVAL",
    "INTO",
    "INVOKER",
    "IO_AFTER_GTIDS",
    "IO_BEFORE_GTIDS",
    "IS",
    "ISOLATION",
    "ITERATE",
    "JOIN",
    "JSON_TABLE",
    "KEY",
    "KEYS",
    "KILL",
    "LAG",
    "LAST",
    "LAST_VALUE",
    "LATERAL",
    "LEAD",
    "LEADING",
    "LEAVE",
    "LEFT",
    "LEVEL",
    "LIKE",
    "LIMIT",
    "LINEAR",
    "LINES",
    "LOAD",
    "LOCALTIME",
    "LOCALTIMESTAMP",
    "LOCK",
    "LOCKED",
    "LONG",
    "LONGBLOB",
    "LONGTEXT",
    "LOOP",
    "LOW_PRIORITY",
    "MASTER_BIND",
    "MASTER_SSL_VERIFY_SERVER_CERT",
    "MATCH",
    "MAXVALUE",
    "MEDIUMBLOB",
    "MEDIUMINT",
    "MEDIUMTEXT",
    "MIDDLEINT",
    "MINUTE_MICROSECOND",
    "MINUTE_SECOND",
    "MOD",
    "MODE",
    "MODIFIES",
    "MODIFY",
    "NAMES",
    "NATURAL",
    "NEXT",
    "NO",
    "NOT",
    "NOWAIT",
    "NO_WRITE_TO_BINLOG",
    "NTH_VALUE",
    "NTILE",
    "NULL",
    "NUMERIC",
    "OF",
    "OFFSET",
    "ON",
    "ONLY",
    "OPEN",
    "OPTIMIZE",
    "OPTIMIZER_COSTS",
    "OPTION",
    "OPTIONALLY",
    "OR",
    "ORDER",
    "OUT",
    "OUTER",
    "OUTFILE",
    "OVER",
    "PARTITION",
    "PERCENT_RANK",
    "PERSIST",
    "PERSIST_ONLY",
    "PRECEDING",
    "PRECISION",
    "PREPARE",
    "PRIMARY",
    "PRIVILEGES",
    "PROCEDURE",
    "PROCESSLIST",
    "PURGE",
    "QUICK",
    "RANGE",
    "RANK",
    "READ",
    "READS",
    "READ_WRITE",
    "REAL",
    "RECURSIVE",
    "REFERENCES",
    "REGEXP",
    "RELEASE",
    "RENAME",
    "REPEAT",
    "REPEATABLE",
    "REPLACE",
    "REQUIRE",
    "RESIGNAL",
    "RESTRICT",
    "RETURN",
    "RETURNING",
    "REVOKE",
    "RIGHT",
    "RLIKE",
    "ROLLBACK",
    "ROLLUP",
    "ROW",
    "ROWS",
    "ROW_NUMBER",
    "SAVEPOINT",
    "SCHEMA",
    "SCHEMAS",
    "SECOND_MICROSECOND",
    "SECURITY",
    "SELECT",
    "SENSITIVE",
    "SEPARATOR",
    "SERIALIZABLE",
    "SESSION",
    "SET",
    "SHARE",
    "SHOW",
    "SIGNAL",
    "SIGNED",
    "SKIP",
    "SMALLINT",
    "SNAPSHOT",
    "SOME",
    "SPATIAL",
    "SPECIFIC",
    "SQL",
    "SQLEXCEPTION",
    "SQLSTATE",
    "SQLWARNING",
    "SQL_BIG_RESULT",
    "SQL_BUFFER_RESULT",
    "SQL_CACHE",
    "SQL_CALC_FOUND_ROWS",
    "SQL_NO_CACHE",
    "SQL_SMALL_RESULT",
    "SSL",
    "START",
    "STARTING",
    "STORED",
    "STRAIGHT_JOIN",
    "SYSTEM",
    "TABLE",
    "TABLES",
    "TEMPORARY",
    "TERMINATED",
    "THEN",
    "TINYBLOB",
    "TINYINT",
    "TINYTEXT",
    "TO",
    "TRAILING",
    "TRANSACTION",
    "TRIGGER",
    "TRUE",
    "TRUNCATE",
    "UNBOUNDED",
    "UNCOMMITTED",
    "UNDO",
    "UNION",
    "UNIQUE",
    "UNLOCK",
    "UNSIGNED",
    "UPDATE",
    "USAGE",
    "USE",
    "USING",
    "UTC_DATE",
    "UTC_TIME",
    "UTC_TIMESTAMP",
    "VALUES",
    "VARBINARY",
    "VARCHAR",
    "VARCHARACTER",
    "VARIABLES",
    "VARYING",
    "VIEW",
    "VIRTUAL",
    "WARNINGS",
    "WHEN",
    "WHERE",
    "WHILE",
    "WINDOW",
    "WITH",
    "WORK",
    "WRITE",
    "XA",
    "XOR",
    "YEAR_MONTH",
    "ZEROFILL",
];

#[cfg(test)]
pub(super) fn keywords() -> &'static [&'static str] {
    KEYWORDS
}
