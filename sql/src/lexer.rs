//! MySQL's lexical structure, as far as the gateway needs it: where strings,
//! quoted identifiers, comments and executable comments begin and end, so that
//! the SQL text can be split into statements, have its executable comments
//! opened, and be normalised into a digest, without ever being confused by a
//! `;` or a `/*!` inside a string literal.
//!
//! Spec: <https://dev.mysql.com/doc/refman/8.4/en/lexical-structure.html>,
//! comments <https://dev.mysql.com/doc/refman/8.4/en/comments.html>,
//! MariaDB's `/*M! */` <https://mariadb.com/kb/en/comment-syntax/>.
//!
//! Backslash escapes in strings are assumed on (the server default; with
//! `NO_BACKSLASH_ESCAPES` a string ending in `\` would be read one token too far,
//! which only ever makes a statement unparsed, never misattributed).

use std::borrow::Cow;

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// An unquoted identifier or keyword.
    Word,
    /// A `` `quoted` `` identifier.
    QuotedIdent,
    /// `'...'`, `"..."` or `N'...'`.
    String,
    /// `1`, `1.5`, `.5`, `1e-3`.
    Number,
    /// `0x1F`, `X'1F'`, `0b01`, `B'01'`.
    HexOrBit,
    /// A `?` parameter marker.
    Placeholder,
    /// `@user_var`, `@'user var'`, `@@system_var`, `@@session.var`.
    Variable,
    Semicolon,
    LParen,
    RParen,
    Comma,
    Dot,
    /// Any other operator or punctuation (`=`, `<=>`, `->>`, `*`, ...).
    Operator,
    /// The opening of an executable comment: `/*!`, `/*!50001`, `/*M!`, `/*M!100100`.
    ExecOpen,
    /// The `*/` that closes an executable comment.
    ExecClose,
}

impl TokenKind {
    /// Is the token a literal value (replaced by `?` in a digest)?
    pub fn is_literal(self) -> bool {
        matches!(
            self,
            TokenKind::String | TokenKind::Number | TokenKind::HexOrBit | TokenKind::Placeholder
        )
    }
}

/// A token: its kind and its byte range in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub start: usize,
    pub end: usize,
}

/// The SQL text cannot be split into tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} starting at byte {at}")]
pub struct LexError {
    pub what: &'static str,
    pub at: usize,
}

/// The tokens of a SQL text, comments and whitespace skipped. Executable
/// comments yield [`TokenKind::ExecOpen`] / [`TokenKind::ExecClose`] around
/// their content, which is lexed as code.
#[derive(Debug, Clone)]
pub struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    in_exec: bool,
    prev: Option<TokenKind>,
    failed: bool,
    /// Does `\` escape the next byte in `'...'` / in `"..."`? Both by default;
    /// `NO_BACKSLASH_ESCAPES` turns both off, `ANSI_QUOTES` makes `"..."` an
    /// identifier (no escapes).
    escapes: (bool, bool),
}

impl<'a> Lexer<'a> {
    pub fn new(sql: &'a str) -> Self {
        Self::with_escapes(sql, true, true)
    }

    /// A lexer for a server whose `sql_mode` changes how backslashes are read:
    /// `single` and `double` say whether `\` escapes in `'...'` and `"..."`.
    pub fn with_escapes(sql: &'a str, single: bool, double: bool) -> Self {
        Lexer {
            src: sql.as_bytes(),
            pos: 0,
            in_exec: false,
            prev: None,
            failed: false,
            escapes: (single, double),
        }
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.src.get(self.pos + ahead).copied()
    }

    /// Skips whitespace and ordinary comments.
    fn skip_trivia(&mut self) -> Result<(), LexError> {
        loop {
            let Some(b) = self.peek(0) else {
                return Ok(());
            };
            match b {
                b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => self.pos += 1,
                b'#' => self.skip_line(),
                b'-' if self.peek(1) == Some(b'-')
                    && self.peek(2).is_none_or(|c| c <= b' ' || c == 0x7f) =>
                {
                    self.skip_line()
                }
                b'/' if self.peek(1) == Some(b'*') => {
                    let executable = self.peek(2) == Some(b'!')
                        || (self.peek(2) == Some(b'M') && self.peek(3) == Some(b'!'));
                    if executable {
                        return Ok(());
                    }
                    let start = self.pos;
                    match find(&self.src[self.pos + 2..], b"*/") {
                        Some(i) => self.pos += 2 + i + 2,
                        None => {
                            return Err(LexError {
                                what: "unterminated comment",
                                at: start,
                            })
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn skip_line(&mut self) {
        match self.src[self.pos..].iter().position(|&c| c == b'\n') {
            Some(i) => self.pos += i + 1,
            None => self.pos = self.src.len(),
        }
    }

    /// Consumes a quoted run starting at the opening quote; `backslash` says
    /// whether `\` escapes the next byte. A doubled quote is part of the run.
    fn quoted(&mut self, quote: u8, backslash: bool, what: &'static str) -> Result<(), LexError> {
        let start = self.pos;
        self.pos += 1;
        while let Some(b) = self.peek(0) {
            if backslash && b == b'\\' {
                self.pos += 2;
                continue;
            }
            self.pos += 1;
            if b == quote {
                if self.peek(0) == Some(quote) {
                    self.pos += 1;
                    continue;
                }
                return Ok(());
            }
        }
        Err(LexError { what, at: start })
    }

    fn word(&mut self) {
        while self.peek(0).is_some_and(is_ident_byte) {
            self.pos += 1;
        }
    }

    fn digits(&mut self, valid: impl Fn(u8) -> bool) -> usize {
        let start = self.pos;
        while self.peek(0).is_some_and(&valid) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// A number, or an identifier that starts with digits (`1st_table`).
    fn number(&mut self) -> TokenKind {
        let start = self.pos;
        if self.peek(0) == Some(b'0') && matches!(self.peek(1), Some(b'x' | b'b')) {
            let hex = self.peek(1) == Some(b'x');
            self.pos += 2;
            let n = self.digits(|c| {
                if hex {
                    c.is_ascii_hexdigit()
                } else {
                    c == b'0' || c == b'1'
                }
            });
            if n > 0 && !self.peek(0).is_some_and(is_ident_byte) {
                return TokenKind::HexOrBit;
            }
            self.pos = start;
        }
        self.digits(|c| c.is_ascii_digit());
        if self
            .peek(0)
            .is_some_and(|c| is_ident_byte(c) && !matches!(c, b'e' | b'E'))
        {
            self.word();
            return TokenKind::Word;
        }
        if self.peek(0) == Some(b'.') {
            self.pos += 1;
            self.digits(|c| c.is_ascii_digit());
        }
        if matches!(self.peek(0), Some(b'e' | b'E')) {
            let mark = self.pos;
            self.pos += 1;
            if matches!(self.peek(0), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits(|c| c.is_ascii_digit()) == 0 {
                // `1e` / `1ea`: an identifier in MySQL when no fraction was read.
                self.pos = mark;
                if !self.src[start..mark].contains(&b'.') {
                    self.word();
                    return TokenKind::Word;
                }
            }
        }
        TokenKind::Number
    }

    fn operator(&mut self) {
        const LONG: [&[u8]; 12] = [
            b"<=>", b"->>", b"<=", b">=", b"<>", b"!=", b":=", b"||", b"&&", b"<<", b">>", b"->",
        ];
        let rest = &self.src[self.pos..];
        let len = LONG
            .iter()
            .find(|op| rest.starts_with(op))
            .map_or(1, |op| op.len());
        // Never split a multi-byte UTF-8 character.
        let mut end = self.pos + len;
        while end < self.src.len() && (self.src[end] & 0xC0) == 0x80 {
            end += 1;
        }
        self.pos = end;
    }

    fn next_token(&mut self) -> Result<Option<Token>, LexError> {
        self.skip_trivia()?;
        let start = self.pos;
        let Some(b) = self.peek(0) else {
            return Ok(None);
        };
        let kind = match b {
            b'/' if self.peek(1) == Some(b'*') => {
                // An executable comment (ordinary ones were skipped).
                self.pos += if self.peek(2) == Some(b'M') { 4 } else { 3 };
                self.digits(|c| c.is_ascii_digit());
                self.in_exec = true;
                TokenKind::ExecOpen
            }
            b'*' if self.in_exec && self.peek(1) == Some(b'/') => {
                self.pos += 2;
                self.in_exec = false;
                TokenKind::ExecClose
            }
            b'\'' | b'"' => {
                let escapes = if b == b'"' {
                    self.escapes.1
                } else {
                    self.escapes.0
                };
                self.quoted(b, escapes, "unterminated string literal")?;
                TokenKind::String
            }
            b'`' => {
                self.quoted(b'`', false, "unterminated quoted identifier")?;
                TokenKind::QuotedIdent
            }
            b'x' | b'X' | b'b' | b'B' if self.peek(1) == Some(b'\'') => {
                self.pos += 1;
                self.quoted(b'\'', false, "unterminated hex or bit literal")?;
                TokenKind::HexOrBit
            }
            b'n' | b'N' if self.peek(1) == Some(b'\'') => {
                self.pos += 1;
                self.quoted(b'\'', self.escapes.0, "unterminated string literal")?;
                TokenKind::String
            }
            b'@' => {
                self.pos += 1;
                if self.peek(0) == Some(b'@') {
                    self.pos += 1;
                    // @@session.var, @@global.var, @@var
                    while self.peek(0).is_some_and(|c| is_ident_byte(c) || c == b'.') {
                        self.pos += 1;
                    }
                } else if let Some(q @ (b'\'' | b'"' | b'`')) = self.peek(0) {
                    let escapes = match q {
                        b'`' => false,
                        b'"' => self.escapes.1,
                        _ => self.escapes.0,
                    };
                    self.quoted(q, escapes, "unterminated variable name")?;
                } else {
                    self.word();
                }
                TokenKind::Variable
            }
            b'?' => {
                self.pos += 1;
                TokenKind::Placeholder
            }
            b';' => {
                self.pos += 1;
                TokenKind::Semicolon
            }
            b'(' => {
                self.pos += 1;
                TokenKind::LParen
            }
            b')' => {
                self.pos += 1;
                TokenKind::RParen
            }
            b',' => {
                self.pos += 1;
                TokenKind::Comma
            }
            b'.' if self.peek(1).is_some_and(|c| c.is_ascii_digit())
                && !matches!(
                    self.prev,
                    Some(TokenKind::Word | TokenKind::QuotedIdent | TokenKind::RParen)
                ) =>
            {
                self.pos += 1;
                self.digits(|c| c.is_ascii_digit());
                if matches!(self.peek(0), Some(b'e' | b'E')) {
                    self.pos += 1;
                    if matches!(self.peek(0), Some(b'+' | b'-')) {
                        self.pos += 1;
                    }
                    self.digits(|c| c.is_ascii_digit());
                }
                TokenKind::Number
            }
            b'.' => {
                self.pos += 1;
                TokenKind::Dot
            }
            b'0'..=b'9' => {
                // After a dot, digits are an identifier part (`db.1t`).
                if self.prev == Some(TokenKind::Dot) {
                    self.word();
                    TokenKind::Word
                } else {
                    self.number()
                }
            }
            c if is_ident_byte(c) => {
                self.word();
                TokenKind::Word
            }
            _ => {
                self.operator();
                TokenKind::Operator
            }
        };
        self.prev = Some(kind);
        Ok(Some(Token {
            kind,
            start,
            end: self.pos,
        }))
    }
}

impl Iterator for Lexer<'_> {
    type Item = Result<Token, LexError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_token() {
            Ok(t) => t.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Bytes that may appear in an unquoted identifier (any non-ASCII byte too).
pub fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The SQL text with the markers of its executable comments (`/*!`, `/*!50001`,
/// `/*M!`, `/*M!100100` and their `*/`) blanked out, so that their content is
/// read as the code MySQL runs. Versions are ignored: content is always code,
/// whatever the server's version (a guardrail must not be bypassed by a
/// version number). Text that cannot be lexed is returned unchanged.
pub fn open_executable_comments(sql: &str) -> Cow<'_, str> {
    let bytes = sql.as_bytes();
    if find(bytes, b"/*!").is_none() && find(bytes, b"/*M!").is_none() {
        return Cow::Borrowed(sql);
    }
    let mut out = bytes.to_vec();
    for token in Lexer::new(sql) {
        let Ok(token) = token else {
            return Cow::Borrowed(sql);
        };
        if matches!(token.kind, TokenKind::ExecOpen | TokenKind::ExecClose) {
            out[token.start..token.end].fill(b' ');
        }
    }
    // Only ASCII bytes were replaced by ASCII spaces: still UTF-8.
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(_) => Cow::Borrowed(sql),
    }
}

/// The byte ranges of the statements of a multi-statement text, split at the
/// `;` that are outside strings, comments and parentheses. Empty statements
/// (only whitespace and comments) are left out.
pub fn split_statements(sql: &str) -> Result<Vec<(usize, usize)>, LexError> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut current: Option<(usize, usize)> = None;
    for token in Lexer::new(sql) {
        let token = token?;
        match token.kind {
            TokenKind::Semicolon if depth == 0 => {
                parts.extend(current.take());
                continue;
            }
            TokenKind::LParen => depth += 1,
            TokenKind::RParen => depth = depth.saturating_sub(1),
            _ => {}
        }
        current = Some(match current {
            Some((s, _)) => (s, token.end),
            None => (token.start, token.end),
        });
    }
    parts.extend(current);
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<TokenKind> {
        Lexer::new(sql).map(|t| t.unwrap().kind).collect()
    }

    #[test]
    fn tokens() {
        use TokenKind::*;
        assert_eq!(
            kinds("SELECT `a``b`, 'it''s', \"x\\\"y\", 1.5e3, .5, 0x1F, x'1f', b'01', ? FROM t;"),
            vec![
                Word,
                QuotedIdent,
                Comma,
                String,
                Comma,
                String,
                Comma,
                Number,
                Comma,
                Number,
                Comma,
                HexOrBit,
                Comma,
                HexOrBit,
                Comma,
                HexOrBit,
                Comma,
                Placeholder,
                Word,
                Word,
                Semicolon
            ]
        );
        assert_eq!(
            kinds("a<=>b->>'$.x' @v @@session.sql_mode @'q v' 1st db.1t"),
            vec![
                Word, Operator, Word, Operator, String, Variable, Variable, Variable, Word, Word,
                Dot, Word
            ]
        );
        assert_eq!(kinds("1-- c\n2 # c\n3 /* c */ 4--5"), {
            vec![Number, Number, Number, Number, Operator, Operator, Number]
        });
    }

    #[test]
    fn errors() {
        assert_eq!(
            Lexer::new("SELECT 'abc").last().unwrap().unwrap_err().what,
            "unterminated string literal"
        );
        assert!(Lexer::new("SELECT /* x").any(|t| t.is_err()));
        assert!(Lexer::new("SELECT `x").any(|t| t.is_err()));
    }

    #[test]
    fn executable_comments_are_opened() {
        let opened =
            open_executable_comments("SELECT 1 /*!50000 , 2 */ /*M!100100 , 3*/ /*!, 4 */");
        assert_eq!(
            opened.split_whitespace().collect::<Vec<_>>().join(" "),
            "SELECT 1 , 2 , 3 , 4"
        );
        // Markers inside strings and ordinary comments are left alone.
        let s = "SELECT '/*!x*/' /* /*! */";
        assert_eq!(open_executable_comments(s), s);
        assert!(matches!(
            open_executable_comments("SELECT 1"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn splitting() {
        let sql = "SELECT ';'; UPDATE t SET a = (SELECT 1; ) ;; -- x\n /* y */ ; DELETE FROM t";
        let parts: Vec<&str> = split_statements(sql)
            .unwrap()
            .into_iter()
            .map(|(s, e)| &sql[s..e])
            .collect();
        assert_eq!(
            parts,
            vec![
                "SELECT ';'",
                "UPDATE t SET a = (SELECT 1; )",
                "DELETE FROM t"
            ]
        );
    }
}
