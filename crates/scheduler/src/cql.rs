//! ECS's Cluster Query Language: parsing into an [`Expression`].
//!
//! ```text
//! expression := or
//! or         := and ( ("or" | "||") and )*
//! and        := unary ( ("and" | "&&") unary )*
//! unary      := ("not" | "!") unary | "(" expression ")" | clause
//! clause     := subject operator [argument]
//! subject    := "attribute:" NAME | "ec2InstanceId" | "registeredAt" | "task:group"
//!             | "agentConnected" | "agentVersion" | "runningTasksCount"
//! operator   := "==" | "equals" | "!=" | "not_equals" | ">" | "greater_than"
//!             | ">=" | "greater_than_equal" | "<" | "less_than" | "<=" | "less_than_equal"
//!             | "exists" | "!exists" | "not_exists" | "in" | "!in" | "not_in"
//!             | "=~" | "matches" | "!~" | "not_matches"
//! argument   := VALUE | "[" VALUE ("," VALUE)* "]"        (VALUE: a word or 'quoted' / "quoted")
//! ```
//!
//! Case rules: keywords, operators and subject names are case-insensitive
//! (`AND`, `Not`, `EC2INSTANCEID`); attribute names, values and patterns are
//! compared exactly, as ECS stores them.
//!
//! `=~` takes a Java-style regular expression that must match the whole
//! value (Java's `Pattern.matches`), so `t2.*` selects `t2.micro` but not
//! `mt2.micro`. `registeredAt` takes the dates ECS documents:
//! `2018-06-18T22:28:28+00:00`, `2018-06-18T22:28:28Z`, `2018-06-18T22:28:28`
//! (UTC) and `2018-06-18` (midnight UTC). `agentVersion` compares dotted
//! numbers (`1.14.5`), `runningTasksCount` integers; `attribute:` compares
//! numerically when both sides are numbers and as strings otherwise.
//!
//! `task:group` is existential: an instance matches `task:group OP ARG` when
//! one of the task groups running on it does, so `task:group == db` is
//! affinity and `not(task:group == db)` anti-affinity (as AWS writes it);
//! `task:group exists` means "runs any task".

use std::fmt;

/// Longest expression accepted, in characters (ECS bounds an expression at 2,000).
pub const EXPRESSION_LENGTH_MAX: usize = 2_000;
/// Deepest nesting of `not` and parentheses, so that parsing a hostile
/// expression cannot exhaust the stack.
pub const NESTING_MAX: usize = 32;
/// Most values in one `in [...]` list.
pub const LIST_LENGTH_MAX: usize = 100;
/// Compiled size limit of one `=~` pattern, in bytes of the regex program.
pub const PATTERN_SIZE_MAX: usize = 1 << 20;

/// A syntax error: where (0-based character position) and what was expected.
/// The control plane answers it with InvalidParameterException.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid expression at character {position}: expected {expected}, found {found}")]
pub struct ParseError {
    pub position: usize,
    pub expected: String,
    pub found: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expression {
    And(Vec<Expression>),
    Or(Vec<Expression>),
    Not(Box<Expression>),
    Clause(Clause),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Clause {
    pub subject: Subject,
    pub operator: Operator,
    pub argument: Argument,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    Attribute(String),
    Ec2InstanceId,
    RegisteredAt,
    TaskGroup,
    AgentConnected,
    AgentVersion,
    RunningTasksCount,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    Equals,
    NotEquals,
    GreaterThan,
    GreaterThanEqual,
    LessThan,
    LessThanEqual,
    Exists,
    NotExists,
    In,
    NotIn,
    Matches,
    NotMatches,
}

/// What an operator compares against, typed at parse time so that a bad
/// date or pattern is a syntax error with a position, not a runtime surprise.
#[derive(Clone, Debug, PartialEq)]
pub enum Argument {
    None,
    Value(String),
    List(Vec<String>),
    Pattern(Pattern),
    /// `registeredAt`: milliseconds since the Unix epoch.
    TimeMs(i64),
    /// `runningTasksCount`.
    Count(i64),
    /// `agentVersion`: dotted numbers.
    Version(Vec<u64>),
}

/// A `=~` argument. Most patterns in the wild are a literal or a literal
/// followed by `.*`; those are compared without a regex engine.
#[derive(Clone, Debug)]
pub enum Pattern {
    Exact(String),
    Prefix { source: String, prefix: String },
    Regex(regex::Regex),
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source() == other.source()
    }
}

impl Pattern {
    pub fn source(&self) -> &str {
        match self {
            Pattern::Exact(text) => text,
            Pattern::Prefix { source, .. } => source,
            Pattern::Regex(regex) => {
                let anchored = regex.as_str();
                anchored
                    .strip_prefix("^(?:")
                    .and_then(|rest| rest.strip_suffix(")$"))
                    .unwrap_or(anchored)
            }
        }
    }

    pub fn is_match(&self, value: &str) -> bool {
        match self {
            Pattern::Exact(text) => value == text,
            Pattern::Prefix { prefix, .. } => value.starts_with(prefix.as_str()),
            Pattern::Regex(regex) => regex.is_match(value),
        }
    }

    fn compile(source: &str) -> Result<Pattern, String> {
        const META: &[char] = &[
            '.', '*', '+', '?', '(', ')', '[', ']', '{', '}', '|', '^', '$', '\\',
        ];
        if !source.contains(META) {
            return Ok(Pattern::Exact(source.to_owned()));
        }
        if let Some(prefix) = source.strip_suffix(".*") {
            if !prefix.contains(META) {
                return Ok(Pattern::Prefix {
                    source: source.to_owned(),
                    prefix: prefix.to_owned(),
                });
            }
        }
        regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(PATTERN_SIZE_MAX)
            .build()
            .map(Pattern::Regex)
            .map_err(|error| error.to_string())
    }
}

impl Operator {
    pub fn symbol(self) -> &'static str {
        match self {
            Operator::Equals => "==",
            Operator::NotEquals => "!=",
            Operator::GreaterThan => ">",
            Operator::GreaterThanEqual => ">=",
            Operator::LessThan => "<",
            Operator::LessThanEqual => "<=",
            Operator::Exists => "exists",
            Operator::NotExists => "!exists",
            Operator::In => "in",
            Operator::NotIn => "not_in",
            Operator::Matches => "=~",
            Operator::NotMatches => "!~",
        }
    }

    fn from_word(word: &str) -> Option<Operator> {
        Some(match word.to_ascii_lowercase().as_str() {
            "equals" => Operator::Equals,
            "not_equals" => Operator::NotEquals,
            "greater_than" => Operator::GreaterThan,
            "greater_than_equal" => Operator::GreaterThanEqual,
            "less_than" => Operator::LessThan,
            "less_than_equal" => Operator::LessThanEqual,
            "exists" => Operator::Exists,
            "not_exists" => Operator::NotExists,
            "in" => Operator::In,
            "not_in" => Operator::NotIn,
            "matches" => Operator::Matches,
            "not_matches" => Operator::NotMatches,
            _ => return None,
        })
    }

    fn is_ordering(self) -> bool {
        matches!(
            self,
            Operator::GreaterThan
                | Operator::GreaterThanEqual
                | Operator::LessThan
                | Operator::LessThanEqual
        )
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Attribute(name) => write!(f, "attribute:{name}"),
            Subject::Ec2InstanceId => f.write_str("ec2InstanceId"),
            Subject::RegisteredAt => f.write_str("registeredAt"),
            Subject::TaskGroup => f.write_str("task:group"),
            Subject::AgentConnected => f.write_str("agentConnected"),
            Subject::AgentVersion => f.write_str("agentVersion"),
            Subject::RunningTasksCount => f.write_str("runningTasksCount"),
        }
    }
}

impl fmt::Display for Argument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Argument::None => Ok(()),
            Argument::Value(value) => f.write_str(value),
            Argument::List(values) => write!(f, "[{}]", values.join(", ")),
            Argument::Pattern(pattern) => f.write_str(pattern.source()),
            Argument::TimeMs(ms) => write!(f, "{ms} ms"),
            Argument::Count(count) => write!(f, "{count}"),
            Argument::Version(parts) => {
                let parts: Vec<String> = parts.iter().map(u64::to_string).collect();
                f.write_str(&parts.join("."))
            }
        }
    }
}

impl fmt::Display for Clause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.argument {
            Argument::None => write!(f, "{} {}", self.subject, self.operator.symbol()),
            _ => write!(
                f,
                "{} {} {}",
                self.subject,
                self.operator.symbol(),
                self.argument
            ),
        }
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |f: &mut fmt::Formatter<'_>, parts: &[Expression], word: &str| {
            for (index, part) in parts.iter().enumerate() {
                if index > 0 {
                    write!(f, " {word} ")?;
                }
                match part {
                    Expression::And(_) | Expression::Or(_) => write!(f, "({part})")?,
                    _ => write!(f, "{part}")?,
                }
            }
            Ok(())
        };
        match self {
            Expression::And(parts) => join(f, parts, "and"),
            Expression::Or(parts) => join(f, parts, "or"),
            Expression::Not(inner) => write!(f, "not({inner})"),
            Expression::Clause(clause) => write!(f, "{clause}"),
        }
    }
}

impl Expression {
    /// Parses one expression. Pure; never panics on any input.
    pub fn parse(text: &str) -> Result<Expression, ParseError> {
        let chars: Vec<char> = text.chars().collect();
        if chars.len() > EXPRESSION_LENGTH_MAX {
            return Err(ParseError {
                position: EXPRESSION_LENGTH_MAX,
                expected: format!("at most {EXPRESSION_LENGTH_MAX} characters"),
                found: format!("{} characters", chars.len()),
            });
        }
        let mut parser = Parser {
            chars,
            at: 0,
            depth: 0,
        };
        let expression = parser.or()?;
        parser.skip_space();
        if parser.at < parser.chars.len() {
            return Err(parser.error("\"and\", \"or\" or the end of the expression"));
        }
        Ok(expression)
    }

    /// Each clause of the expression, depth first.
    pub fn clauses(&self) -> Vec<&Clause> {
        let mut out = Vec::new();
        fn walk<'a>(expression: &'a Expression, out: &mut Vec<&'a Clause>) {
            match expression {
                Expression::And(parts) | Expression::Or(parts) => {
                    parts.iter().for_each(|part| walk(part, out))
                }
                Expression::Not(inner) => walk(inner, out),
                Expression::Clause(clause) => out.push(clause),
            }
        }
        walk(self, &mut out);
        out
    }
}

struct Parser {
    chars: Vec<char>,
    /// Character position of the next unread character.
    at: usize,
    depth: usize,
}

/// Characters that end a bare word.
fn ends_word(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '(' | ')' | '[' | ']' | ',' | '=' | '!' | '<' | '>' | '&' | '|'
        )
}

impl Parser {
    fn skip_space(&mut self) {
        while self.at < self.chars.len() && self.chars[self.at].is_whitespace() {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn rest_starts_with(&self, text: &str) -> bool {
        let mut at = self.at;
        for expected in text.chars() {
            match self.chars.get(at) {
                Some(c) if c.eq_ignore_ascii_case(&expected) => at += 1,
                _ => return false,
            }
        }
        true
    }

    /// The next bare word without consuming it (after skipping spaces).
    fn peek_word(&mut self) -> String {
        self.skip_space();
        self.chars[self.at..]
            .iter()
            .take_while(|c| !ends_word(**c))
            .collect()
    }

    /// Whether the next thing is the keyword `word` (case-insensitive, whole word).
    fn at_keyword(&mut self, word: &str) -> bool {
        self.peek_word().eq_ignore_ascii_case(word)
    }

    fn found(&self) -> String {
        if self.at >= self.chars.len() {
            return "the end of the expression".to_owned();
        }
        let token: String = self.chars[self.at..]
            .iter()
            .take_while(|c| !c.is_whitespace())
            .take(40)
            .collect();
        format!("{token:?}")
    }

    fn error(&self, expected: &str) -> ParseError {
        ParseError {
            position: self.at,
            expected: expected.to_owned(),
            found: self.found(),
        }
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > NESTING_MAX {
            return Err(ParseError {
                position: self.at,
                expected: format!("at most {NESTING_MAX} levels of nesting"),
                found: "deeper nesting".to_owned(),
            });
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expression, ParseError> {
        let mut parts = vec![self.and()?];
        loop {
            self.skip_space();
            // `||` and `or` are both two characters long.
            if self.rest_starts_with("||") || self.at_keyword("or") {
                self.at += 2;
            } else {
                break;
            }
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expression::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Expression, ParseError> {
        let mut parts = vec![self.unary()?];
        loop {
            self.skip_space();
            if self.rest_starts_with("&&") {
                self.at += 2;
            } else if self.at_keyword("and") {
                self.at += 3;
            } else {
                break;
            }
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expression::And(parts)
        })
    }

    fn unary(&mut self) -> Result<Expression, ParseError> {
        self.skip_space();
        if self.at_keyword("not") {
            self.at += 3;
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expression::Not(Box::new(inner)));
        }
        if self.peek() == Some('!') {
            self.at += 1;
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expression::Not(Box::new(inner)));
        }
        if self.peek() == Some('(') {
            self.at += 1;
            self.enter()?;
            let inner = self.or()?;
            self.skip_space();
            if self.peek() != Some(')') {
                return Err(self.error("\")\""));
            }
            self.at += 1;
            self.depth -= 1;
            return Ok(inner);
        }
        self.clause().map(Expression::Clause)
    }

    fn clause(&mut self) -> Result<Clause, ParseError> {
        const SUBJECTS: &str =
            "a subject (attribute:NAME, ec2InstanceId, registeredAt, task:group, \
                                agentConnected, agentVersion, runningTasksCount), \"not\" or \"(\"";
        let start = self.at;
        let word = self.peek_word();
        let lower = word.to_ascii_lowercase();
        let subject = if lower.starts_with("attribute:") {
            let name = &word["attribute:".len()..];
            if name.is_empty() {
                self.at += word.chars().count();
                return Err(self.error("an attribute name after \"attribute:\""));
            }
            Subject::Attribute(name.to_owned())
        } else {
            match lower.as_str() {
                "ec2instanceid" => Subject::Ec2InstanceId,
                "registeredat" => Subject::RegisteredAt,
                "task:group" => Subject::TaskGroup,
                "agentconnected" => Subject::AgentConnected,
                "agentversion" => Subject::AgentVersion,
                "runningtaskscount" => Subject::RunningTasksCount,
                _ => return Err(self.error(SUBJECTS)),
            }
        };
        self.at = start + word.chars().count();
        let operator_at = {
            self.skip_space();
            self.at
        };
        let operator = self.operator()?;
        let allowed = match subject {
            Subject::Attribute(_) => true,
            Subject::Ec2InstanceId | Subject::AgentConnected | Subject::TaskGroup => {
                !operator.is_ordering()
            }
            Subject::RegisteredAt | Subject::AgentVersion | Subject::RunningTasksCount => {
                matches!(operator, Operator::Equals | Operator::NotEquals) || operator.is_ordering()
            }
        };
        if !allowed {
            return Err(ParseError {
                position: operator_at,
                expected: format!("an operator that {subject} takes"),
                found: format!("{:?}", operator.symbol()),
            });
        }
        let argument = match operator {
            Operator::Exists | Operator::NotExists => Argument::None,
            Operator::In | Operator::NotIn => Argument::List(self.list()?),
            Operator::Matches | Operator::NotMatches => {
                self.skip_space();
                let at = self.at;
                let source = self.pattern_text()?;
                match Pattern::compile(&source) {
                    Ok(pattern) => Argument::Pattern(pattern),
                    Err(message) => {
                        return Err(ParseError {
                            position: at,
                            expected: "a regular expression".to_owned(),
                            found: format!("{source:?} ({})", first_line(&message)),
                        })
                    }
                }
            }
            _ => {
                self.skip_space();
                let at = self.at;
                let value = self.value()?;
                let typed = |expected: &str| ParseError {
                    position: at,
                    expected: expected.to_owned(),
                    found: format!("{value:?}"),
                };
                match subject {
                    Subject::RegisteredAt => Argument::TimeMs(parse_date_ms(&value).ok_or_else(|| {
                        typed("a date like 2018-06-18T22:28:28Z, 2018-06-18T22:28:28+00:00, 2018-06-18T22:28:28 or 2018-06-18")
                    })?),
                    Subject::RunningTasksCount => Argument::Count(
                        value.parse().map_err(|_| typed("a whole number"))?,
                    ),
                    Subject::AgentVersion => Argument::Version(
                        parse_version(&value).ok_or_else(|| typed("a version like 1.14.5"))?,
                    ),
                    _ => Argument::Value(value),
                }
            }
        };
        Ok(Clause {
            subject,
            operator,
            argument,
        })
    }

    fn operator(&mut self) -> Result<Operator, ParseError> {
        const EXPECTED: &str =
            "an operator (==, !=, >, >=, <, <=, exists, !exists, in, not_in, =~, !~)";
        self.skip_space();
        let symbols: [(&str, Operator); 8] = [
            ("==", Operator::Equals),
            ("!=", Operator::NotEquals),
            (">=", Operator::GreaterThanEqual),
            ("<=", Operator::LessThanEqual),
            ("=~", Operator::Matches),
            ("!~", Operator::NotMatches),
            (">", Operator::GreaterThan),
            ("<", Operator::LessThan),
        ];
        if self.peek() == Some('!') {
            // `!exists` and `!in` are words after a bang.
            self.at += 1;
            if self.peek().is_some_and(|c| !c.is_whitespace()) {
                let word = self.peek_word();
                let operator = match word.to_ascii_lowercase().as_str() {
                    "exists" => Some(Operator::NotExists),
                    "in" => Some(Operator::NotIn),
                    _ => None,
                };
                if let Some(operator) = operator {
                    self.at += word.chars().count();
                    return Ok(operator);
                }
            }
            self.at -= 1;
        }
        for (symbol, operator) in symbols {
            if self.rest_starts_with(symbol) {
                self.at += symbol.len();
                return Ok(operator);
            }
        }
        let word = self.peek_word();
        match Operator::from_word(&word) {
            Some(operator) => {
                self.at += word.chars().count();
                Ok(operator)
            }
            None => Err(self.error(EXPECTED)),
        }
    }

    fn value(&mut self) -> Result<String, ParseError> {
        self.skip_space();
        match self.peek() {
            Some(quote @ ('\'' | '"')) => {
                let start = self.at;
                self.at += 1;
                let mut value = String::new();
                loop {
                    match self.peek() {
                        Some(c) if c == quote => {
                            self.at += 1;
                            return Ok(value);
                        }
                        Some(c) => {
                            value.push(c);
                            self.at += 1;
                        }
                        None => {
                            return Err(ParseError {
                                position: start,
                                expected: format!("a closing {quote}"),
                                found: "the end of the expression".to_owned(),
                            })
                        }
                    }
                }
            }
            _ => {
                let word = self.peek_word();
                if word.is_empty() {
                    return Err(self.error("a value"));
                }
                self.at += word.chars().count();
                Ok(word)
            }
        }
    }

    fn list(&mut self) -> Result<Vec<String>, ParseError> {
        self.skip_space();
        if self.peek() != Some('[') {
            return Err(self.error("\"[\" starting a list of values"));
        }
        self.at += 1;
        let mut values = Vec::new();
        loop {
            values.push(self.value()?);
            if values.len() > LIST_LENGTH_MAX {
                return Err(self.error(&format!("at most {LIST_LENGTH_MAX} values in a list")));
            }
            self.skip_space();
            match self.peek() {
                Some(',') => self.at += 1,
                Some(']') => {
                    self.at += 1;
                    return Ok(values);
                }
                _ => return Err(self.error("\",\" or \"]\"")),
            }
        }
    }

    /// A pattern: quoted, or a run of characters up to a space outside
    /// brackets or a `)` that closes nothing opened inside the pattern.
    fn pattern_text(&mut self) -> Result<String, ParseError> {
        if matches!(self.peek(), Some('\'' | '"')) {
            return self.value();
        }
        let mut depth = 0usize;
        let mut in_class = false;
        let mut escaped = false;
        let mut text = String::new();
        while let Some(c) = self.peek() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if in_class {
                in_class = c != ']';
            } else if c == '[' {
                in_class = true;
            } else if c == '(' {
                depth += 1;
            } else if c == ')' {
                if depth == 0 {
                    break;
                }
                depth -= 1;
            } else if c.is_whitespace() && depth == 0 {
                break;
            }
            text.push(c);
            self.at += 1;
        }
        if text.is_empty() {
            return Err(self.error("a pattern"));
        }
        Ok(text)
    }
}

fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|line| line.starts_with("error:"))
        .unwrap_or_else(|| text.lines().next().unwrap_or(text))
}

/// Dotted version numbers: `1.14.5` → [1, 14, 5]. A leading `v` is allowed.
pub fn parse_version(text: &str) -> Option<Vec<u64>> {
    let text = text.strip_prefix('v').unwrap_or(text);
    let parts: Option<Vec<u64>> = text.split('.').map(|part| part.parse().ok()).collect();
    parts.filter(|parts| !parts.is_empty() && parts.len() <= 8)
}

/// Milliseconds since the epoch for the date forms ECS documents.
pub fn parse_date_ms(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        if part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    if bytes.len() < 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let mut seconds = days_from_civil(year, month, day) * 86_400;
    if bytes.len() == 10 {
        return Some(seconds * 1000);
    }
    if bytes.len() < 19 || bytes[10] != b'T' || bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    seconds += hour * 3600 + minute * 60 + second;
    let zone = &text[19..];
    let offset_seconds = match zone {
        "" | "Z" => 0,
        _ => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let zone_bytes = zone.as_bytes();
            if zone_bytes.len() != 6 || zone_bytes[3] != b':' {
                return None;
            }
            let hours = number(20..22)?;
            let minutes = number(23..25)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            sign * (hours * 3600 + minutes * 60)
        }
    };
    Some((seconds - offset_seconds) * 1000)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Whether `value` satisfies `operator argument` for a string-valued subject.
/// `present` is false when the subject is absent (an attribute the instance
/// lacks); `value` is `None` for an attribute without a value.
pub(crate) fn string_test(
    operator: Operator,
    argument: &Argument,
    present: bool,
    value: Option<&str>,
) -> bool {
    let equals = |expected: &str| value == Some(expected);
    match operator {
        Operator::Exists => present,
        Operator::NotExists => !present,
        Operator::Equals => matches!(argument, Argument::Value(v) if equals(v)),
        Operator::NotEquals => !matches!(argument, Argument::Value(v) if equals(v)),
        Operator::In => matches!(argument, Argument::List(vs) if vs.iter().any(|v| equals(v))),
        Operator::NotIn => !matches!(argument, Argument::List(vs) if vs.iter().any(|v| equals(v))),
        Operator::Matches => {
            matches!((argument, value), (Argument::Pattern(p), Some(v)) if p.is_match(v))
        }
        Operator::NotMatches => {
            !matches!((argument, value), (Argument::Pattern(p), Some(v)) if p.is_match(v))
        }
        Operator::GreaterThan
        | Operator::GreaterThanEqual
        | Operator::LessThan
        | Operator::LessThanEqual => match (argument, value) {
            (Argument::Value(expected), Some(found)) => {
                let ordering = match (found.parse::<f64>(), expected.parse::<f64>()) {
                    (Ok(a), Ok(b)) => a.partial_cmp(&b),
                    _ => Some(found.cmp(expected.as_str())),
                };
                ordering.is_some_and(|ordering| ordering_holds(operator, ordering))
            }
            _ => false,
        },
    }
}

pub(crate) fn ordering_holds(operator: Operator, ordering: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match operator {
        Operator::Equals => ordering == Equal,
        Operator::NotEquals => ordering != Equal,
        Operator::GreaterThan => ordering == Greater,
        Operator::GreaterThanEqual => ordering != Less,
        Operator::LessThan => ordering == Less,
        Operator::LessThanEqual => ordering != Greater,
        _ => false,
    }
}

/// The fields of one instance a clause reads; the slow, obviously correct
/// evaluation that `explain` and the tests use (placement uses the compiled form).
pub struct Facts<'a> {
    pub instance: &'a crate::Instance,
    /// Task groups running on it, counts above zero.
    pub groups: &'a [(String, u32)],
}

impl Clause {
    pub fn matches(&self, facts: &Facts<'_>) -> bool {
        let instance = facts.instance;
        match &self.subject {
            Subject::Attribute(name) => {
                let found = instance.attribute(name);
                string_test(
                    self.operator,
                    &self.argument,
                    found.is_some(),
                    found.flatten(),
                )
            }
            Subject::Ec2InstanceId => string_test(
                self.operator,
                &self.argument,
                true,
                Some(&instance.ec2_instance_id),
            ),
            Subject::AgentConnected => string_test(
                self.operator,
                &self.argument,
                true,
                Some(if instance.agent_connected {
                    "true"
                } else {
                    "false"
                }),
            ),
            Subject::TaskGroup => {
                let mut running = facts.groups.iter().filter(|(_, count)| *count > 0);
                match self.operator {
                    Operator::Exists => running.next().is_some(),
                    Operator::NotExists => running.next().is_none(),
                    _ => running.any(|(name, _)| {
                        string_test(self.operator, &self.argument, true, Some(name))
                    }),
                }
            }
            Subject::RegisteredAt => match self.argument {
                Argument::TimeMs(ms) => {
                    ordering_holds(self.operator, instance.registered_at_ms.cmp(&ms))
                }
                _ => false,
            },
            Subject::RunningTasksCount => match self.argument {
                Argument::Count(count) => {
                    let running: i64 = facts.groups.iter().map(|(_, c)| i64::from(*c)).sum();
                    ordering_holds(self.operator, running.cmp(&count))
                }
                _ => false,
            },
            Subject::AgentVersion => match (&self.argument, instance.agent_version.as_deref()) {
                (Argument::Version(expected), Some(found)) => parse_version(found)
                    .is_some_and(|found| ordering_holds(self.operator, found.cmp(expected))),
                _ => false,
            },
        }
    }
}

impl Expression {
    pub fn matches(&self, facts: &Facts<'_>) -> bool {
        match self {
            Expression::And(parts) => parts.iter().all(|part| part.matches(facts)),
            Expression::Or(parts) => parts.iter().any(|part| part.matches(facts)),
            Expression::Not(inner) => !inner.matches(facts),
            Expression::Clause(clause) => clause.matches(facts),
        }
    }

    /// Why `facts` do not match, in words, naming the clause that decided it.
    pub fn why_not(&self, facts: &Facts<'_>) -> String {
        match self {
            Expression::And(parts) => parts
                .iter()
                .find(|part| !part.matches(facts))
                .map(|part| part.why_not(facts))
                .unwrap_or_default(),
            Expression::Or(parts) => {
                let reasons: Vec<String> = parts.iter().map(|part| part.why_not(facts)).collect();
                reasons.join("; and ")
            }
            Expression::Not(inner) => format!("{inner} holds"),
            Expression::Clause(clause) => {
                let actual = match &clause.subject {
                    Subject::Attribute(name) => match facts.instance.attribute(name) {
                        None => "absent".to_owned(),
                        Some(None) => "present without a value".to_owned(),
                        Some(Some(value)) => value.to_owned(),
                    },
                    Subject::Ec2InstanceId => facts.instance.ec2_instance_id.clone(),
                    Subject::AgentConnected => facts.instance.agent_connected.to_string(),
                    Subject::TaskGroup => {
                        let names: Vec<&str> =
                            facts.groups.iter().map(|(name, _)| name.as_str()).collect();
                        format!("[{}]", names.join(", "))
                    }
                    Subject::RegisteredAt => format!("{} ms", facts.instance.registered_at_ms),
                    Subject::RunningTasksCount => facts
                        .groups
                        .iter()
                        .map(|(_, c)| u64::from(*c))
                        .sum::<u64>()
                        .to_string(),
                    Subject::AgentVersion => facts
                        .instance
                        .agent_version
                        .clone()
                        .unwrap_or_else(|| "unknown".to_owned()),
                };
                let wanted = match clause.operator {
                    Operator::Exists => "must exist".to_owned(),
                    Operator::NotExists => "must not exist".to_owned(),
                    Operator::In => format!("not in {}", clause.argument),
                    Operator::NotIn => format!("in {}", clause.argument),
                    operator => format!("not {} {}", operator.symbol(), clause.argument),
                };
                format!("{} is {actual}, {wanted}", clause.subject)
            }
        }
    }
}
