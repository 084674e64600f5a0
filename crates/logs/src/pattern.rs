//! CloudWatch Logs filter patterns: parsed once, then matched against each
//! event's message.
//!
//! Supported forms, as CloudWatch Logs documents them:
//! - terms and quoted phrases, all of which must appear (`ERROR "timed out"`),
//!   case-sensitively;
//! - `?` alternatives, any of which must appear (`?ERROR ?WARN`);
//! - `-` exclusions, none of which may appear (`ERROR -healthcheck`);
//! - JSON selectors in braces over messages that are JSON objects:
//!   `{ $.level = "error" }`, `{ $.latency_ms > 250 }`, `!=`, `<`, `<=`, `>`,
//!   `>=`, `*` wildcards in string values, `IS NULL`, `IS TRUE`, `IS FALSE`,
//!   `NOT EXISTS`, array indexes (`$.items[0].id`), combined with `&&`, `||`
//!   and parentheses.
//!
//! Space-delimited patterns (`[ip, user, ...]`) are refused with a message
//! naming them rather than matched loosely.

use serde_json::Value;

/// Longest pattern the model allows.
pub const PATTERN_MAX_CHARS: usize = 1024;
/// Deepest nesting of parentheses in a JSON pattern.
const NESTING_MAX: usize = 32;

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{reason} at position {position}")]
pub struct PatternError {
    pub position: usize,
    pub reason: String,
}

/// A parsed filter pattern.
#[derive(Clone, Debug, PartialEq)]
pub enum Pattern {
    /// The empty pattern: every event matches.
    All,
    Terms(TermPattern),
    Json(JsonExpr),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TermPattern {
    pub required: Vec<String>,
    pub any_of: Vec<String>,
    pub excluded: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum JsonExpr {
    And(Box<JsonExpr>, Box<JsonExpr>),
    Or(Box<JsonExpr>, Box<JsonExpr>),
    Compare {
        path: Vec<PathStep>,
        op: CompareOp,
        value: Literal,
    },
    IsNull(Vec<PathStep>),
    IsBool(Vec<PathStep>, bool),
    NotExists(Vec<PathStep>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum PathStep {
    Key(String),
    Index(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    Number(f64),
    Text(String),
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        if text.chars().count() > PATTERN_MAX_CHARS {
            return Err(PatternError {
                position: PATTERN_MAX_CHARS,
                reason: format!("a filter pattern is at most {PATTERN_MAX_CHARS} characters"),
            });
        }
        let trimmed = text.trim_start();
        let offset = text.len() - trimmed.len();
        if trimmed.trim_end().is_empty() {
            return Ok(Pattern::All);
        }
        if trimmed.starts_with('{') {
            let mut parser = JsonParser {
                text,
                at: offset + 1,
                depth: 0,
            };
            let expr = parser.expr()?;
            parser.skip_spaces();
            if !parser.eat("}") {
                return Err(parser.error("expected '}' to close the JSON pattern"));
            }
            parser.skip_spaces();
            if parser.at < text.len() {
                return Err(parser.error("unexpected text after the JSON pattern"));
            }
            return Ok(Pattern::Json(expr));
        }
        if trimmed.starts_with('[') {
            return Err(PatternError {
                position: offset,
                reason: "space-delimited filter patterns ([...]) are not supported".to_owned(),
            });
        }
        parse_terms(text).map(Pattern::Terms)
    }

    /// Whether `message` matches.
    pub fn matches(&self, message: &str) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Terms(terms) => {
                terms.required.iter().all(|t| message.contains(t.as_str()))
                    && (terms.any_of.is_empty()
                        || terms.any_of.iter().any(|t| message.contains(t.as_str())))
                    && !terms.excluded.iter().any(|t| message.contains(t.as_str()))
            }
            Pattern::Json(expr) => {
                let trimmed = message.trim_start();
                if !trimmed.starts_with('{') {
                    return false;
                }
                match serde_json::from_str::<Value>(trimmed) {
                    Ok(value) => expr.eval(&value),
                    Err(_) => false,
                }
            }
        }
    }
}

fn parse_terms(text: &str) -> Result<TermPattern, PatternError> {
    let mut pattern = TermPattern::default();
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at].is_ascii_whitespace() {
            at += 1;
            continue;
        }
        let start = at;
        let kind = bytes[at];
        if kind == b'?' || kind == b'-' {
            at += 1;
        }
        let term = if bytes.get(at) == Some(&b'"') {
            let (term, end) = quoted(text, at)?;
            at = end;
            term
        } else {
            let end = text[at..]
                .find(|c: char| c.is_whitespace())
                .map_or(text.len(), |i| at + i);
            let term = text[at..end].to_owned();
            at = end;
            term
        };
        if term.is_empty() {
            return Err(PatternError {
                position: start,
                reason: "an empty term".to_owned(),
            });
        }
        match kind {
            b'?' => pattern.any_of.push(term),
            b'-' => pattern.excluded.push(term),
            _ => pattern.required.push(term),
        }
    }
    Ok(pattern)
}

/// A double-quoted string starting at `start`, with `\"` and `\\` escapes;
/// returns it and the position after the closing quote.
fn quoted(text: &str, start: usize) -> Result<(String, usize), PatternError> {
    let mut value = String::new();
    let mut chars = text[start + 1..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, start + 1 + i + 1)),
            '\\' => match chars.next() {
                Some((_, escaped)) => value.push(escaped),
                None => break,
            },
            other => value.push(other),
        }
    }
    Err(PatternError {
        position: start,
        reason: "unterminated quoted string".to_owned(),
    })
}

struct JsonParser<'a> {
    text: &'a str,
    at: usize,
    depth: usize,
}

impl JsonParser<'_> {
    fn error(&self, reason: &str) -> PatternError {
        PatternError {
            position: self.at,
            reason: reason.to_owned(),
        }
    }

    fn rest(&self) -> &str {
        &self.text[self.at..]
    }

    fn skip_spaces(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, token: &str) -> bool {
        if self.rest().starts_with(token) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Result<JsonExpr, PatternError> {
        let mut left = self.and()?;
        loop {
            self.skip_spaces();
            if self.eat("||") {
                let right = self.and()?;
                left = JsonExpr::Or(Box::new(left), Box::new(right));
            } else {
                return Ok(left);
            }
        }
    }

    fn and(&mut self) -> Result<JsonExpr, PatternError> {
        let mut left = self.unary()?;
        loop {
            self.skip_spaces();
            if self.eat("&&") {
                let right = self.unary()?;
                left = JsonExpr::And(Box::new(left), Box::new(right));
            } else {
                return Ok(left);
            }
        }
    }

    fn unary(&mut self) -> Result<JsonExpr, PatternError> {
        self.skip_spaces();
        if self.eat("(") {
            self.depth += 1;
            if self.depth > NESTING_MAX {
                return Err(self.error("parentheses nest too deeply"));
            }
            let inner = self.expr()?;
            self.skip_spaces();
            if !self.eat(")") {
                return Err(self.error("expected ')'"));
            }
            self.depth -= 1;
            return Ok(inner);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<JsonExpr, PatternError> {
        let path = self.selector()?;
        self.skip_spaces();
        if self.eat("IS") {
            self.skip_spaces();
            return if self.eat("NULL") {
                Ok(JsonExpr::IsNull(path))
            } else if self.eat("TRUE") {
                Ok(JsonExpr::IsBool(path, true))
            } else if self.eat("FALSE") {
                Ok(JsonExpr::IsBool(path, false))
            } else {
                Err(self.error("expected NULL, TRUE or FALSE after IS"))
            };
        }
        if self.eat("NOT") {
            self.skip_spaces();
            return if self.eat("EXISTS") {
                Ok(JsonExpr::NotExists(path))
            } else {
                Err(self.error("expected EXISTS after NOT"))
            };
        }
        let op = if self.eat("!=") {
            CompareOp::Ne
        } else if self.eat("<=") {
            CompareOp::Le
        } else if self.eat(">=") {
            CompareOp::Ge
        } else if self.eat("=") {
            CompareOp::Eq
        } else if self.eat("<") {
            CompareOp::Lt
        } else if self.eat(">") {
            CompareOp::Gt
        } else {
            return Err(self.error("expected a comparison operator (=, !=, <, <=, >, >=)"));
        };
        self.skip_spaces();
        let value = self.literal()?;
        if matches!(value, Literal::Text(_)) && !matches!(op, CompareOp::Eq | CompareOp::Ne) {
            return Err(self.error("only = and != compare strings"));
        }
        Ok(JsonExpr::Compare { path, op, value })
    }

    fn selector(&mut self) -> Result<Vec<PathStep>, PatternError> {
        self.skip_spaces();
        if !self.eat("$") {
            return Err(self.error("expected a selector starting with '$'"));
        }
        let mut path = Vec::new();
        loop {
            if self.eat(".") {
                let rest = self.rest();
                let length = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '@'))
                    .unwrap_or(rest.len());
                if length == 0 {
                    return Err(self.error("expected a member name after '.'"));
                }
                path.push(PathStep::Key(rest[..length].to_owned()));
                self.at += length;
            } else if self.eat("[") {
                let rest = self.rest();
                let length = rest
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(rest.len());
                let index = rest[..length]
                    .parse::<usize>()
                    .map_err(|_| self.error("expected an array index"))?;
                self.at += length;
                if !self.eat("]") {
                    return Err(self.error("expected ']'"));
                }
                path.push(PathStep::Index(index));
            } else {
                break;
            }
        }
        if path.is_empty() {
            return Err(self.error("a selector names a member, as in $.level"));
        }
        Ok(path)
    }

    fn literal(&mut self) -> Result<Literal, PatternError> {
        if self.rest().starts_with('"') {
            let (text, end) = quoted(self.text, self.at)?;
            self.at = end;
            return Ok(Literal::Text(text));
        }
        let rest = self.rest();
        let length = rest
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '}' | '&' | '|'))
            .unwrap_or(rest.len());
        if length == 0 {
            return Err(self.error("expected a value"));
        }
        let word = rest[..length].to_owned();
        self.at += length;
        Ok(match word.parse::<f64>() {
            Ok(number) if number.is_finite() => Literal::Number(number),
            _ => Literal::Text(word),
        })
    }
}

fn lookup<'v>(value: &'v Value, path: &[PathStep]) -> Option<&'v Value> {
    let mut current = value;
    for step in path {
        current = match step {
            PathStep::Key(key) => current.get(key.as_str())?,
            PathStep::Index(index) => current.get(*index)?,
        };
    }
    Some(current)
}

/// `*` in `pattern` matches any run of characters.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let pieces: Vec<&str> = pattern.split('*').collect();
    if pieces.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, piece) in pieces.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(piece) {
                Some(after) => rest = after,
                None => return false,
            }
        } else if i == pieces.len() - 1 {
            return rest.ends_with(piece);
        } else {
            match rest.find(piece) {
                Some(found) => rest = &rest[found + piece.len()..],
                None => return false,
            }
        }
    }
    true
}

impl JsonExpr {
    pub fn eval(&self, message: &Value) -> bool {
        match self {
            JsonExpr::And(left, right) => left.eval(message) && right.eval(message),
            JsonExpr::Or(left, right) => left.eval(message) || right.eval(message),
            JsonExpr::IsNull(path) => matches!(lookup(message, path), Some(Value::Null)),
            JsonExpr::IsBool(path, wanted) => {
                matches!(lookup(message, path), Some(Value::Bool(b)) if b == wanted)
            }
            JsonExpr::NotExists(path) => lookup(message, path).is_none(),
            JsonExpr::Compare { path, op, value } => {
                let Some(found) = lookup(message, path) else {
                    return false;
                };
                match value {
                    Literal::Number(wanted) => {
                        let Some(actual) = found.as_f64() else {
                            return false;
                        };
                        match op {
                            CompareOp::Eq => actual == *wanted,
                            CompareOp::Ne => actual != *wanted,
                            CompareOp::Lt => actual < *wanted,
                            CompareOp::Le => actual <= *wanted,
                            CompareOp::Gt => actual > *wanted,
                            CompareOp::Ge => actual >= *wanted,
                        }
                    }
                    Literal::Text(wanted) => {
                        let actual = match found {
                            Value::String(text) => text.clone(),
                            Value::Bool(b) => b.to_string(),
                            Value::Number(n) => n.to_string(),
                            _ => return false,
                        };
                        let equal = wildcard_match(wanted, &actual);
                        match op {
                            CompareOp::Ne => !equal,
                            _ => equal,
                        }
                    }
                }
            }
        }
    }
}
