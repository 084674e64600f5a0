//! Metric math: a parser with positioned errors and an evaluator over time
//! series, for GetMetricData and metric-math alarms.
//!
//! Grammar (lowest precedence first):
//! ```text
//! expr    := or
//! or      := and (("OR" | "||") and)*
//! and     := cmp (("AND" | "&&") cmp)*
//! cmp     := sum (("==" | "!=" | "<=" | ">=" | "<" | ">") sum)?
//! sum     := product (("+" | "-") product)*
//! product := unary (("*" | "/") unary)*
//! unary   := "-" unary | power
//! power   := primary ("^" unary)?
//! primary := number | string | id | NAME "(" args ")" | "[" args "]" | "(" expr ")"
//! ```
//! Arithmetic treats a missing value as 0 and drops a point divided by
//! zero, as CloudWatch does.

use std::collections::BTreeMap;

/// Longest expression CloudWatch accepts.
pub const EXPRESSION_LENGTH_MAX: usize = 2_048;
/// Nesting depth the parser accepts, so that a hostile expression cannot
/// exhaust the stack.
pub const NESTING_MAX: usize = 64;

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Number(f64),
    Text(String),
    /// A query id, with its position.
    Id(String, usize),
    /// A bare word that is an argument keyword (REPEAT, LINEAR, AVG, ASC, ...).
    Word(String),
    Negate(Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    Call(String, Vec<Expr>, usize),
    Array(Vec<Expr>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Subtract,
    Multiply,
    Divide,
    Power,
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    And,
    Or,
}

/// A parse or evaluation error, with the 1-based character position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MathError {
    pub position: usize,
    pub message: String,
}

impl MathError {
    pub fn at(position: usize, message: impl Into<String>) -> Self {
        MathError {
            position,
            message: message.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Number(f64),
    Text(String),
    Name(String),
    Symbol(&'static str),
}

fn tokenize(text: &str) -> Result<Vec<(Token, usize)>, MathError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < chars.len() {
        let c = chars[at];
        let position = at + 1;
        if c.is_whitespace() {
            at += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(at + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let start = at;
            while at < chars.len() && (chars[at].is_ascii_digit() || chars[at] == '.') {
                at += 1;
            }
            if at < chars.len() && (chars[at] == 'e' || chars[at] == 'E') {
                let mut end = at + 1;
                if end < chars.len() && (chars[end] == '+' || chars[end] == '-') {
                    end += 1;
                }
                if end < chars.len() && chars[end].is_ascii_digit() {
                    at = end;
                    while at < chars.len() && chars[at].is_ascii_digit() {
                        at += 1;
                    }
                }
            }
            let literal: String = chars[start..at].iter().collect();
            let value: f64 = literal
                .parse()
                .map_err(|_| MathError::at(position, format!("Invalid number {literal}")))?;
            tokens.push((Token::Number(value), position));
        } else if c.is_alphabetic() || c == '_' {
            let start = at;
            while at < chars.len() && (chars[at].is_alphanumeric() || chars[at] == '_') {
                at += 1;
            }
            tokens.push((Token::Name(chars[start..at].iter().collect()), position));
        } else if c == '"' || c == '\'' || c == '\u{201c}' {
            let close = if c == '\u{201c}' { '\u{201d}' } else { c };
            let start = at + 1;
            at += 1;
            while at < chars.len() && chars[at] != close {
                at += 1;
            }
            if at >= chars.len() {
                return Err(MathError::at(position, "Unterminated string"));
            }
            tokens.push((Token::Text(chars[start..at].iter().collect()), position));
            at += 1;
        } else {
            let two: String = chars[at..(at + 2).min(chars.len())].iter().collect();
            let symbol = match two.as_str() {
                "==" => Some("=="),
                "!=" => Some("!="),
                "<=" => Some("<="),
                ">=" => Some(">="),
                "&&" => Some("&&"),
                "||" => Some("||"),
                _ => None,
            };
            if let Some(symbol) = symbol {
                tokens.push((Token::Symbol(symbol), position));
                at += 2;
                continue;
            }
            let symbol = match c {
                '+' => "+",
                '-' => "-",
                '*' => "*",
                '/' => "/",
                '^' => "^",
                '<' => "<",
                '>' => ">",
                '(' => "(",
                ')' => ")",
                '[' => "[",
                ']' => "]",
                ',' => ",",
                other => {
                    return Err(MathError::at(
                        position,
                        format!("Unexpected character '{other}'"),
                    ))
                }
            };
            tokens.push((Token::Symbol(symbol), position));
            at += 1;
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    at: usize,
    end_position: usize,
    depth: usize,
}

/// Parses an expression.
pub fn parse(text: &str) -> Result<Expr, MathError> {
    if text.chars().count() > EXPRESSION_LENGTH_MAX {
        return Err(MathError::at(
            EXPRESSION_LENGTH_MAX + 1,
            format!("Expression is longer than {EXPRESSION_LENGTH_MAX} characters"),
        ));
    }
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        tokens,
        at: 0,
        end_position: text.chars().count() + 1,
        depth: 0,
    };
    if parser.tokens.is_empty() {
        return Err(MathError::at(1, "Expression is empty"));
    }
    let expr = parser.or()?;
    if let Some((token, position)) = parser.tokens.get(parser.at) {
        return Err(MathError::at(
            *position,
            format!("Unexpected {}", describe(token)),
        ));
    }
    Ok(expr)
}

fn describe(token: &Token) -> String {
    match token {
        Token::Number(n) => format!("number {n}"),
        Token::Text(t) => format!("string \"{t}\""),
        Token::Name(n) => format!("'{n}'"),
        Token::Symbol(s) => format!("'{s}'"),
    }
}

impl Parser {
    fn peek_symbol(&self) -> Option<&'static str> {
        match self.tokens.get(self.at) {
            Some((Token::Symbol(s), _)) => Some(s),
            Some((Token::Name(n), _)) if n == "AND" => Some("&&"),
            Some((Token::Name(n), _)) if n == "OR" => Some("||"),
            _ => None,
        }
    }

    fn position(&self) -> usize {
        self.tokens
            .get(self.at)
            .map_or(self.end_position, |(_, p)| *p)
    }

    fn expect(&mut self, symbol: &'static str) -> Result<(), MathError> {
        if self.peek_symbol() == Some(symbol) {
            self.at += 1;
            return Ok(());
        }
        Err(match self.tokens.get(self.at) {
            Some((token, position)) => MathError::at(
                *position,
                format!("Expected '{symbol}' but found {}", describe(token)),
            ),
            None => MathError::at(
                self.end_position,
                format!("Expected '{symbol}' at the end of the expression"),
            ),
        })
    }

    fn binary_level(
        &mut self,
        operators: &[(&'static str, BinaryOp)],
        next: fn(&mut Parser) -> Result<Expr, MathError>,
        once: bool,
    ) -> Result<Expr, MathError> {
        let mut left = next(self)?;
        while let Some(symbol) = self.peek_symbol() {
            let Some((_, op)) = operators.iter().find(|(s, _)| *s == symbol) else {
                break;
            };
            self.at += 1;
            let right = next(self)?;
            left = Expr::Binary(*op, Box::new(left), Box::new(right));
            if once {
                break;
            }
        }
        Ok(left)
    }

    fn or(&mut self) -> Result<Expr, MathError> {
        self.depth += 1;
        if self.depth > NESTING_MAX {
            return Err(MathError::at(
                self.position(),
                "Expression is nested too deeply",
            ));
        }
        let result = self.binary_level(&[("||", BinaryOp::Or)], Parser::and, false);
        self.depth -= 1;
        result
    }

    fn and(&mut self) -> Result<Expr, MathError> {
        self.binary_level(&[("&&", BinaryOp::And)], Parser::comparison, false)
    }

    fn comparison(&mut self) -> Result<Expr, MathError> {
        self.binary_level(
            &[
                ("==", BinaryOp::Equal),
                ("!=", BinaryOp::NotEqual),
                ("<=", BinaryOp::LessOrEqual),
                (">=", BinaryOp::GreaterOrEqual),
                ("<", BinaryOp::Less),
                (">", BinaryOp::Greater),
            ],
            Parser::sum,
            true,
        )
    }

    fn sum(&mut self) -> Result<Expr, MathError> {
        self.binary_level(
            &[("+", BinaryOp::Add), ("-", BinaryOp::Subtract)],
            Parser::product,
            false,
        )
    }

    fn product(&mut self) -> Result<Expr, MathError> {
        self.binary_level(
            &[("*", BinaryOp::Multiply), ("/", BinaryOp::Divide)],
            Parser::unary,
            false,
        )
    }

    fn power(&mut self) -> Result<Expr, MathError> {
        let base = self.primary()?;
        if self.peek_symbol() == Some("^") {
            self.at += 1;
            self.depth += 1;
            if self.depth > NESTING_MAX {
                return Err(MathError::at(
                    self.position(),
                    "Expression is nested too deeply",
                ));
            }
            let exponent = self.unary();
            self.depth -= 1;
            return Ok(Expr::Binary(
                BinaryOp::Power,
                Box::new(base),
                Box::new(exponent?),
            ));
        }
        Ok(base)
    }

    fn unary(&mut self) -> Result<Expr, MathError> {
        if self.peek_symbol() == Some("-") {
            self.at += 1;
            self.depth += 1;
            if self.depth > NESTING_MAX {
                return Err(MathError::at(
                    self.position(),
                    "Expression is nested too deeply",
                ));
            }
            let inner = self.unary();
            self.depth -= 1;
            return Ok(Expr::Negate(Box::new(inner?)));
        }
        self.power()
    }

    fn arguments(&mut self, close: &'static str) -> Result<Vec<Expr>, MathError> {
        let mut arguments = Vec::new();
        if self.peek_symbol() == Some(close) {
            self.at += 1;
            return Ok(arguments);
        }
        loop {
            arguments.push(self.or()?);
            match self.peek_symbol() {
                Some(",") => self.at += 1,
                _ => {
                    self.expect(close)?;
                    return Ok(arguments);
                }
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, MathError> {
        let position = self.position();
        let Some((token, _)) = self.tokens.get(self.at).cloned() else {
            return Err(MathError::at(
                self.end_position,
                "Unexpected end of the expression",
            ));
        };
        self.at += 1;
        match token {
            Token::Number(value) => Ok(Expr::Number(value)),
            Token::Text(text) => Ok(Expr::Text(text)),
            Token::Symbol("(") => {
                let inner = self.or()?;
                self.expect(")")?;
                Ok(inner)
            }
            Token::Symbol("[") => Ok(Expr::Array(self.arguments("]")?)),
            Token::Name(name) => {
                if self.peek_symbol() == Some("(") {
                    self.at += 1;
                    Ok(Expr::Call(name, self.arguments(")")?, position))
                } else if name.starts_with(|c: char| c.is_ascii_lowercase()) {
                    Ok(Expr::Id(name, position))
                } else {
                    Ok(Expr::Word(name))
                }
            }
            other => Err(MathError::at(
                position,
                format!("Unexpected {}", describe(&other)),
            )),
        }
    }
}

/// Every query id an expression refers to.
pub fn references(expr: &Expr, out: &mut Vec<String>) {
    match expr {
        Expr::Id(id, _) => out.push(id.clone()),
        Expr::Negate(inner) => references(inner, out),
        Expr::Binary(_, left, right) => {
            references(left, out);
            references(right, out);
        }
        Expr::Call(_, arguments, _) | Expr::Array(arguments) => {
            for argument in arguments {
                references(argument, out);
            }
        }
        Expr::Number(_) | Expr::Text(_) | Expr::Word(_) => {}
    }
}

/// Whether an expression uses METRICS() (it then depends on every metric).
pub fn uses_metrics_function(expr: &Expr) -> bool {
    match expr {
        Expr::Call(name, arguments, _) => {
            name == "METRICS" || arguments.iter().any(uses_metrics_function)
        }
        Expr::Negate(inner) => uses_metrics_function(inner),
        Expr::Binary(_, left, right) => uses_metrics_function(left) || uses_metrics_function(right),
        Expr::Array(items) => items.iter().any(uses_metrics_function),
        _ => false,
    }
}

/// A time series: values by timestamp (sparse), with its label.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: BTreeMap<i64, f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar(f64),
    Series(Series),
    Array(Vec<Series>),
}

/// What an evaluation needs from outside: query results by id, the
/// metrics (for METRICS()), the time grid, and SEARCH.
pub trait Context {
    fn value_of(&mut self, id: &str) -> Option<Value>;
    /// (id, series) of every MetricStat query, in request order.
    fn metrics(&mut self) -> Vec<(String, Series)>;
    /// Timestamps of the query's grid (for FILL and TIME_SERIES).
    fn grid(&self) -> Vec<i64>;
    fn period_s(&self) -> i64;
    fn search(
        &mut self,
        expression: &str,
        statistic: &str,
        period_s: i64,
        position: usize,
    ) -> Result<Vec<Series>, MathError>;
}

fn binary_scalar(op: BinaryOp, a: f64, b: f64) -> Option<f64> {
    let truth = |x: bool| if x { 1.0 } else { 0.0 };
    Some(match op {
        BinaryOp::Add => a + b,
        BinaryOp::Subtract => a - b,
        BinaryOp::Multiply => a * b,
        BinaryOp::Divide => {
            if b == 0.0 {
                return None;
            }
            a / b
        }
        BinaryOp::Power => a.powf(b),
        BinaryOp::Equal => truth(a == b),
        BinaryOp::NotEqual => truth(a != b),
        BinaryOp::Less => truth(a < b),
        BinaryOp::LessOrEqual => truth(a <= b),
        BinaryOp::Greater => truth(a > b),
        BinaryOp::GreaterOrEqual => truth(a >= b),
        BinaryOp::And => truth(a != 0.0 && b != 0.0),
        BinaryOp::Or => truth(a != 0.0 || b != 0.0),
    })
    .filter(|v| v.is_finite())
}

fn combine_series(op: BinaryOp, a: &Series, b: &Series, label: String) -> Series {
    let mut points = BTreeMap::new();
    for time in a.points.keys().chain(b.points.keys()) {
        if points.contains_key(time) {
            continue;
        }
        let x = a.points.get(time).copied().unwrap_or(0.0);
        let y = b.points.get(time).copied().unwrap_or(0.0);
        if let Some(value) = binary_scalar(op, x, y) {
            points.insert(*time, value);
        }
    }
    Series { label, points }
}

fn map_series(series: &Series, f: impl Fn(f64) -> Option<f64>) -> Series {
    Series {
        label: series.label.clone(),
        points: series
            .points
            .iter()
            .filter_map(|(t, v)| f(*v).filter(|v| v.is_finite()).map(|v| (*t, v)))
            .collect(),
    }
}

fn binary(op: BinaryOp, left: Value, right: Value, position: usize) -> Result<Value, MathError> {
    Ok(match (left, right) {
        (Value::Scalar(a), Value::Scalar(b)) => match binary_scalar(op, a, b) {
            Some(v) => Value::Scalar(v),
            None => return Err(MathError::at(position, "Division by zero")),
        },
        (Value::Series(a), Value::Scalar(b)) => {
            Value::Series(map_series(&a, |x| binary_scalar(op, x, b)))
        }
        (Value::Scalar(a), Value::Series(b)) => {
            Value::Series(map_series(&b, |y| binary_scalar(op, a, y)))
        }
        (Value::Series(a), Value::Series(b)) => {
            let label = a.label.clone();
            Value::Series(combine_series(op, &a, &b, label))
        }
        (Value::Array(items), Value::Scalar(b)) => Value::Array(
            items
                .iter()
                .map(|a| map_series(a, |x| binary_scalar(op, x, b)))
                .collect(),
        ),
        (Value::Scalar(a), Value::Array(items)) => Value::Array(
            items
                .iter()
                .map(|b| map_series(b, |y| binary_scalar(op, a, y)))
                .collect(),
        ),
        (Value::Array(items), Value::Series(b)) => Value::Array(
            items
                .iter()
                .map(|a| combine_series(op, a, &b, a.label.clone()))
                .collect(),
        ),
        (Value::Series(a), Value::Array(items)) => Value::Array(
            items
                .iter()
                .map(|b| combine_series(op, &a, b, b.label.clone()))
                .collect(),
        ),
        (Value::Array(_), Value::Array(_)) => {
            return Err(MathError::at(
                position,
                "An operator cannot combine two arrays of time series",
            ))
        }
    })
}

fn each_series(
    value: Value,
    position: usize,
    name: &str,
    f: impl Fn(&Series) -> Series,
) -> Result<Value, MathError> {
    match value {
        Value::Series(series) => Ok(Value::Series(f(&series))),
        Value::Array(items) => Ok(Value::Array(items.iter().map(f).collect())),
        Value::Scalar(_) => Err(MathError::at(
            position,
            format!("{name} expects a time series or an array of time series"),
        )),
    }
}

#[derive(Clone, Copy)]
enum Reduce {
    Sum,
    Average,
    Minimum,
    Maximum,
    StandardDeviation,
    Count,
}

fn reduce_values(values: &[f64], how: Reduce) -> Option<f64> {
    if values.is_empty() {
        return match how {
            Reduce::Count | Reduce::Sum => Some(0.0),
            _ => None,
        };
    }
    let n = values.len() as f64;
    let sum: f64 = values.iter().sum();
    Some(match how {
        Reduce::Sum => sum,
        Reduce::Average => sum / n,
        Reduce::Minimum => values.iter().copied().fold(f64::INFINITY, f64::min),
        Reduce::Maximum => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Reduce::Count => n,
        Reduce::StandardDeviation => {
            let mean = sum / n;
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt()
        }
    })
}

fn reduce(value: Value, how: Reduce, name: &str, position: usize) -> Result<Value, MathError> {
    match value {
        Value::Series(series) => {
            let values: Vec<f64> = series.points.values().copied().collect();
            reduce_values(&values, how)
                .map(Value::Scalar)
                .ok_or_else(|| {
                    MathError::at(
                        position,
                        format!("{name} of a time series with no data points has no value"),
                    )
                })
        }
        Value::Array(items) => {
            let mut times: Vec<i64> = items
                .iter()
                .flat_map(|s| s.points.keys().copied())
                .collect();
            times.sort_unstable();
            times.dedup();
            let mut points = BTreeMap::new();
            for time in times {
                let values: Vec<f64> = match how {
                    // Missing values count as 0 in SUM and AVG of an array.
                    Reduce::Sum | Reduce::Average => items
                        .iter()
                        .map(|s| s.points.get(&time).copied().unwrap_or(0.0))
                        .collect(),
                    _ => items
                        .iter()
                        .filter_map(|s| s.points.get(&time).copied())
                        .collect(),
                };
                if let Some(value) = reduce_values(&values, how) {
                    points.insert(time, value);
                }
            }
            Ok(Value::Series(Series {
                label: name.to_string(),
                points,
            }))
        }
        Value::Scalar(_) => Err(MathError::at(
            position,
            format!("{name} expects a time series or an array of time series"),
        )),
    }
}

fn as_array(value: Value, name: &str, position: usize) -> Result<Vec<Series>, MathError> {
    match value {
        Value::Array(items) => Ok(items),
        Value::Series(series) => Ok(vec![series]),
        Value::Scalar(_) => Err(MathError::at(
            position,
            format!("{name} expects an array of time series"),
        )),
    }
}

fn scalar_argument(value: Value, name: &str, position: usize) -> Result<f64, MathError> {
    match value {
        Value::Scalar(v) => Ok(v),
        _ => Err(MathError::at(
            position,
            format!("{name} expects a number here"),
        )),
    }
}

/// Functions CloudWatch has that Flotilla does not compute; named in the
/// error so that a user knows it is not a typo.
const UNSUPPORTED_FUNCTIONS: &[&str] = &[
    "ANOMALY_DETECTION_BAND",
    "INSIGHT_RULE_METRIC",
    "SERVICE_QUOTA",
    "MINUTE",
    "HOUR",
    "DAY",
    "DATE",
    "MONTH",
    "YEAR",
    "EPOCH",
    "LAMBDA",
];

/// Evaluates an expression.
pub fn evaluate(expr: &Expr, context: &mut dyn Context) -> Result<Value, MathError> {
    match expr {
        Expr::Number(value) => Ok(Value::Scalar(*value)),
        Expr::Text(_) | Expr::Word(_) => Err(MathError::at(
            1,
            "A string or keyword is only allowed as a function argument",
        )),
        Expr::Id(id, position) => context.value_of(id).ok_or_else(|| {
            MathError::at(*position, format!("Unknown metric or expression id {id}"))
        }),
        Expr::Negate(inner) => binary(
            BinaryOp::Multiply,
            Value::Scalar(-1.0),
            evaluate(inner, context)?,
            1,
        ),
        Expr::Binary(op, left, right) => {
            let left = evaluate(left, context)?;
            let right = evaluate(right, context)?;
            binary(*op, left, right, 1)
        }
        Expr::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                match evaluate(item, context)? {
                    Value::Series(series) => out.push(series),
                    Value::Array(more) => out.extend(more),
                    Value::Scalar(_) => {
                        return Err(MathError::at(1, "An array may hold only time series"))
                    }
                }
            }
            Ok(Value::Array(out))
        }
        Expr::Call(name, arguments, position) => call(name, arguments, *position, context),
    }
}

fn call(
    name: &str,
    arguments: &[Expr],
    position: usize,
    context: &mut dyn Context,
) -> Result<Value, MathError> {
    let arity = |min: usize, max: usize| -> Result<(), MathError> {
        if arguments.len() < min || arguments.len() > max {
            return Err(MathError::at(
                position,
                format!(
                    "{name} takes {} arguments, not {}",
                    if min == max {
                        min.to_string()
                    } else {
                        format!("{min} to {max}")
                    },
                    arguments.len()
                ),
            ));
        }
        Ok(())
    };
    let argument = |index: usize, context: &mut dyn Context| evaluate(&arguments[index], context);
    match name {
        "METRICS" => {
            arity(0, 1)?;
            let filter = match arguments.first() {
                None => None,
                Some(Expr::Text(text)) => Some(text.clone()),
                Some(_) => return Err(MathError::at(position, "METRICS takes an optional string")),
            };
            Ok(Value::Array(
                context
                    .metrics()
                    .into_iter()
                    .filter(|(id, _)| filter.as_ref().is_none_or(|f| id.contains(f.as_str())))
                    .map(|(_, series)| series)
                    .collect(),
            ))
        }
        "SUM" | "AVG" | "MIN" | "MAX" | "STDDEV" | "DATAPOINT_COUNT" => {
            arity(1, 1)?;
            let how = match name {
                "SUM" => Reduce::Sum,
                "AVG" => Reduce::Average,
                "MIN" => Reduce::Minimum,
                "MAX" => Reduce::Maximum,
                "STDDEV" => Reduce::StandardDeviation,
                _ => Reduce::Count,
            };
            reduce(argument(0, context)?, how, name, position)
        }
        "METRIC_COUNT" => {
            arity(1, 1)?;
            Ok(Value::Scalar(
                as_array(argument(0, context)?, name, position)?.len() as f64,
            ))
        }
        "ABS" | "CEIL" | "FLOOR" | "LOG" | "LOG10" => {
            arity(1, 1)?;
            let f: fn(f64) -> f64 = match name {
                "ABS" => f64::abs,
                "CEIL" => f64::ceil,
                "FLOOR" => f64::floor,
                "LOG" => f64::ln,
                _ => f64::log10,
            };
            match argument(0, context)? {
                Value::Scalar(v) => Ok(Value::Scalar(f(v))),
                other => each_series(other, position, name, |s| map_series(s, |v| Some(f(v)))),
            }
        }
        "DIFF" | "RATE" | "DIFF_TIME" | "RUNNING_SUM" => {
            arity(1, 1)?;
            let kind = name.to_string();
            each_series(argument(0, context)?, position, name, move |series| {
                let mut points = BTreeMap::new();
                let mut previous: Option<(i64, f64)> = None;
                let mut running = 0.0;
                for (time, value) in &series.points {
                    match kind.as_str() {
                        "RUNNING_SUM" => {
                            running += value;
                            points.insert(*time, running);
                        }
                        _ => {
                            if let Some((t0, v0)) = previous {
                                let seconds = (time - t0) as f64 / 1_000.0;
                                let out = match kind.as_str() {
                                    "DIFF" => value - v0,
                                    "RATE" => (value - v0) / seconds,
                                    _ => seconds,
                                };
                                points.insert(*time, out);
                            }
                        }
                    }
                    previous = Some((*time, *value));
                }
                Series {
                    label: series.label.clone(),
                    points,
                }
            })
        }
        "FILL" => {
            arity(2, 2)?;
            let target = argument(0, context)?;
            let grid = context.grid();
            let how =
                match &arguments[1] {
                    Expr::Word(word) if word == "REPEAT" || word == "LINEAR" => {
                        Fill::Word(word.clone())
                    }
                    other => match evaluate(other, context)? {
                        Value::Scalar(v) => Fill::Scalar(v),
                        Value::Series(s) => Fill::Series(s),
                        Value::Array(_) => return Err(MathError::at(
                            position,
                            "FILL's second argument is a number, a time series, REPEAT or LINEAR",
                        )),
                    },
                };
            each_series(target, position, name, |series| fill(series, &how, &grid))
        }
        "IF" => {
            arity(2, 3)?;
            let condition = argument(0, context)?;
            let yes = argument(1, context)?;
            let no = if arguments.len() == 3 {
                Some(argument(2, context)?)
            } else {
                None
            };
            if_function(condition, yes, no, &context.grid(), position)
        }
        "TIME_SERIES" => {
            arity(1, 1)?;
            let value = scalar_argument(argument(0, context)?, name, position)?;
            Ok(Value::Series(Series {
                label: name.to_string(),
                points: context.grid().into_iter().map(|t| (t, value)).collect(),
            }))
        }
        "PERIOD" => {
            arity(1, 1)?;
            argument(0, context)?;
            Ok(Value::Scalar(context.period_s() as f64))
        }
        "REMOVE_EMPTY" => {
            arity(1, 1)?;
            Ok(Value::Array(
                as_array(argument(0, context)?, name, position)?
                    .into_iter()
                    .filter(|s| !s.points.is_empty())
                    .collect(),
            ))
        }
        "FIRST" | "LAST" => {
            arity(1, 1)?;
            let items = as_array(argument(0, context)?, name, position)?;
            let chosen = if name == "FIRST" {
                items.into_iter().next()
            } else {
                items.into_iter().last()
            };
            chosen
                .map(Value::Series)
                .ok_or_else(|| MathError::at(position, format!("{name} of an empty array")))
        }
        "SORT" => {
            arity(3, 4)?;
            let mut items = as_array(argument(0, context)?, name, position)?;
            let how = match &arguments[1] {
                Expr::Word(w) if w == "AVG" => Reduce::Average,
                Expr::Word(w) if w == "MIN" => Reduce::Minimum,
                Expr::Word(w) if w == "MAX" => Reduce::Maximum,
                Expr::Word(w) if w == "SUM" => Reduce::Sum,
                _ => {
                    return Err(MathError::at(
                        position,
                        "SORT's second argument is AVG, MIN, MAX or SUM",
                    ))
                }
            };
            let descending = match &arguments[2] {
                Expr::Word(w) if w == "ASC" => false,
                Expr::Word(w) if w == "DESC" => true,
                _ => {
                    return Err(MathError::at(
                        position,
                        "SORT's third argument is ASC or DESC",
                    ))
                }
            };
            let key = |s: &Series| {
                reduce_values(&s.points.values().copied().collect::<Vec<_>>(), how)
                    .unwrap_or(f64::NEG_INFINITY)
            };
            items.sort_by(|a, b| key(a).total_cmp(&key(b)));
            if descending {
                items.reverse();
            }
            if arguments.len() == 4 {
                let limit = scalar_argument(argument(3, context)?, name, position)?;
                items.truncate(limit.max(0.0) as usize);
            }
            Ok(Value::Array(items))
        }
        "SLICE" => {
            arity(2, 3)?;
            let items = as_array(argument(0, context)?, name, position)?;
            let start = scalar_argument(argument(1, context)?, name, position)?.max(0.0) as usize;
            let end = if arguments.len() == 3 {
                scalar_argument(argument(2, context)?, name, position)?.max(0.0) as usize
            } else {
                items.len()
            };
            Ok(Value::Array(
                items.into_iter().take(end).skip(start).collect(),
            ))
        }
        "SEARCH" => {
            arity(3, 3)?;
            let (Expr::Text(search), Expr::Text(statistic)) = (&arguments[0], &arguments[1]) else {
                return Err(MathError::at(
                    position,
                    "SEARCH takes a search expression and a statistic, both quoted, and a period",
                ));
            };
            let period = scalar_argument(argument(2, context)?, name, position)?;
            Ok(Value::Array(context.search(
                search,
                statistic,
                period as i64,
                position,
            )?))
        }
        other if UNSUPPORTED_FUNCTIONS.contains(&other) => Err(MathError::at(
            position,
            format!("The function {other} is not supported"),
        )),
        other => Err(MathError::at(position, format!("Unknown function {other}"))),
    }
}

enum Fill {
    Scalar(f64),
    Series(Series),
    Word(String),
}

fn fill(series: &Series, how: &Fill, grid: &[i64]) -> Series {
    let mut points = BTreeMap::new();
    let known: Vec<(i64, f64)> = series.points.iter().map(|(t, v)| (*t, *v)).collect();
    for time in grid {
        if let Some(value) = series.points.get(time) {
            points.insert(*time, *value);
            continue;
        }
        let before = known.iter().rev().find(|(t, _)| t < time);
        let after = known.iter().find(|(t, _)| t > time);
        let value = match how {
            Fill::Scalar(v) => Some(*v),
            Fill::Series(s) => s.points.get(time).copied(),
            Fill::Word(word) if word == "REPEAT" => before.or(after).map(|(_, v)| *v),
            Fill::Word(_) => match (before, after) {
                (Some((t0, v0)), Some((t1, v1))) => {
                    Some(v0 + (v1 - v0) * (time - t0) as f64 / (t1 - t0) as f64)
                }
                (Some((_, v)), None) | (None, Some((_, v))) => Some(*v),
                (None, None) => None,
            },
        };
        if let Some(value) = value {
            points.insert(*time, value);
        }
    }
    Series {
        label: series.label.clone(),
        points,
    }
}

fn if_function(
    condition: Value,
    yes: Value,
    no: Option<Value>,
    grid: &[i64],
    position: usize,
) -> Result<Value, MathError> {
    let at = |value: &Value, time: i64| -> Option<f64> {
        match value {
            Value::Scalar(v) => Some(*v),
            Value::Series(s) => s.points.get(&time).copied(),
            Value::Array(_) => None,
        }
    };
    if matches!(condition, Value::Array(_))
        || matches!(yes, Value::Array(_))
        || matches!(no, Some(Value::Array(_)))
    {
        return Err(MathError::at(
            position,
            "IF takes time series or numbers, not arrays",
        ));
    }
    let label = match (&condition, &yes) {
        (_, Value::Series(s)) => s.label.clone(),
        (Value::Series(s), _) => s.label.clone(),
        _ => "IF".to_string(),
    };
    let times: Vec<i64> = match &condition {
        Value::Series(s) => s.points.keys().copied().collect(),
        _ => grid.to_vec(),
    };
    let mut points = BTreeMap::new();
    for time in times {
        let Some(test) = at(&condition, time) else {
            continue;
        };
        let chosen = if test != 0.0 {
            at(&yes, time)
        } else {
            no.as_ref().and_then(|no| at(no, time))
        };
        if let Some(value) = chosen {
            points.insert(time, value);
        }
    }
    Ok(Value::Series(Series { label, points }))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(BTreeMap<String, Series>);

    impl Context for Fixed {
        fn value_of(&mut self, id: &str) -> Option<Value> {
            self.0.get(id).cloned().map(Value::Series)
        }
        fn metrics(&mut self) -> Vec<(String, Series)> {
            self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        }
        fn grid(&self) -> Vec<i64> {
            vec![0, 60_000, 120_000, 180_000]
        }
        fn period_s(&self) -> i64 {
            60
        }
        fn search(&mut self, _: &str, _: &str, _: i64, p: usize) -> Result<Vec<Series>, MathError> {
            Err(MathError::at(p, "no search here"))
        }
    }

    /// Times in the fixtures are seconds; series hold milliseconds.
    fn series(points: &[(i64, f64)]) -> Series {
        Series {
            label: "s".into(),
            points: points.iter().map(|(t, v)| (t * 1_000, *v)).collect(),
        }
    }

    fn run(text: &str) -> Result<Value, MathError> {
        let mut context = Fixed(BTreeMap::from([
            (
                "m1".to_string(),
                series(&[(0, 30.0), (60, 20.0), (120, 0.0), (180, 0.0)]),
            ),
            ("m2".to_string(), series(&[(0, 20.0), (120, 20.0)])),
        ]));
        evaluate(&parse(text)?, &mut context)
    }

    fn points(value: Value) -> Vec<(i64, f64)> {
        match value {
            Value::Series(s) => s.points.into_iter().map(|(t, v)| (t / 1_000, v)).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_documented_comparison_examples() {
        assert_eq!(
            points(run("(m1 < m2)").unwrap()),
            vec![(0, 0.0), (60, 0.0), (120, 1.0), (180, 0.0)]
        );
        assert_eq!(
            points(run("(m1 >= 30)").unwrap()),
            vec![(0, 1.0), (60, 0.0), (120, 0.0), (180, 0.0)]
        );
        assert_eq!(
            points(run("m1 > 15 AND m2 > 15").unwrap()),
            vec![(0, 1.0), (60, 0.0), (120, 0.0), (180, 0.0)]
        );
    }

    #[test]
    fn arithmetic_functions_and_precedence() {
        assert_eq!(run("2 + 3 * 4 ^ 2").unwrap(), Value::Scalar(50.0));
        assert_eq!(run("-2 ^ 2").unwrap(), Value::Scalar(-4.0));
        assert_eq!(
            points(run("m1 / m2").unwrap()),
            vec![(0, 1.5), (120, 0.0)],
            "division by a missing (0) value drops the point"
        );
        assert_eq!(
            points(run("SUM([m1, m2])").unwrap()),
            vec![(0, 50.0), (60, 20.0), (120, 20.0), (180, 0.0)]
        );
        assert_eq!(
            points(run("AVG(METRICS())").unwrap()),
            vec![(0, 25.0), (60, 10.0), (120, 10.0), (180, 0.0)]
        );
        assert_eq!(run("MAX(m1)").unwrap(), Value::Scalar(30.0));
        assert_eq!(points(run("m1 - AVG(m1)").unwrap())[0], (0, 17.5));
        assert_eq!(
            points(run("RATE(m1)").unwrap()),
            vec![(60, -10.0 / 60.0), (120, -20.0 / 60.0), (180, 0.0)]
        );
        assert_eq!(points(run("DIFF(m1)").unwrap())[0], (60, -10.0));
        assert_eq!(
            points(run("FILL(m2, 5)").unwrap()),
            vec![(0, 20.0), (60, 5.0), (120, 20.0), (180, 5.0)]
        );
        assert_eq!(
            points(run("FILL(m2, REPEAT)").unwrap()),
            vec![(0, 20.0), (60, 20.0), (120, 20.0), (180, 20.0)]
        );
        assert_eq!(points(run("FILL(m2, LINEAR)").unwrap())[1], (60, 20.0));
        assert_eq!(
            points(run("IF(m1 > 10, m1, 0)").unwrap()),
            vec![(0, 30.0), (60, 20.0), (120, 0.0), (180, 0.0)]
        );
        assert_eq!(points(run("IF(m1 > 25, m1)").unwrap()), vec![(0, 30.0)]);
        assert_eq!(
            run("METRIC_COUNT(METRICS(\"m\"))").unwrap(),
            Value::Scalar(2.0)
        );
        assert_eq!(points(run("ABS(m2 - m1)").unwrap())[0], (0, 10.0));
        assert_eq!(points(run("TIME_SERIES(7)").unwrap()).len(), 4);
        assert!(
            matches!(run("SORT(METRICS(), MAX, DESC, 1)").unwrap(), Value::Array(items) if items.len() == 1 && items[0].points[&0] == 30.0)
        );
    }

    #[test]
    fn errors_carry_positions() {
        let cases = [
            ("m1 +", 5, "Unexpected end of the expression"),
            ("m1 + )", 6, "Unexpected ')'"),
            ("SUM(m1", 7, "Expected ')' at the end of the expression"),
            ("m1 $ 2", 4, "Unexpected character '$'"),
            ("FOO(m1)", 1, "Unknown function FOO"),
            (
                "m1 + ANOMALY_DETECTION_BAND(m1)",
                6,
                "The function ANOMALY_DETECTION_BAND is not supported",
            ),
            ("SUM(m1, m2)", 1, "SUM takes 1 arguments, not 2"),
            ("'abc", 1, "Unterminated string"),
            ("m1 m2", 4, "Unexpected 'm2'"),
        ];
        for (text, position, message) in cases {
            let error = run(text).unwrap_err();
            assert_eq!(
                (error.position, error.message.as_str()),
                (position, message),
                "{text}"
            );
        }
        let deep = format!("{}m1{}", "(".repeat(200), ")".repeat(200));
        assert_eq!(
            parse(&deep).unwrap_err().message,
            "Expression is nested too deeply"
        );
        let long = "1+".repeat(1_100) + "1";
        assert!(parse(&long).is_err());
    }
}
