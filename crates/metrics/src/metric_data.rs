//! GetMetricData: MetricStat queries and math expressions over their ids,
//! with ReturnData, Label, ScanBy, MaxDatapoints and NextToken paging.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::error::{CloudWatchError, ErrorCode};
use crate::math::{self, Context, Expr, MathError, Series, Value};
use crate::names::{check_metric_name, check_namespace, checked_dimensions, Dimension, MetricKey};
use crate::query::{check_period, round_start};
use crate::statistic::Statistic;
use crate::store::MetricStore;
use crate::time::SECOND_MS;
use crate::units::Unit;

/// Queries in one GetMetricData.
pub const QUERIES_MAX: usize = 500;
/// Default and largest MaxDatapoints.
pub const DATAPOINTS_DEFAULT: usize = 100_800;
/// Time series one SEARCH may return.
pub const SEARCH_RESULTS_MAX: usize = 500;

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MetricStat {
    pub namespace: String,
    pub metric_name: String,
    pub dimensions: Vec<Dimension>,
    pub period_s: i64,
    pub stat: String,
    pub unit: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MetricDataQuery {
    pub id: String,
    pub metric_stat: Option<MetricStat>,
    pub expression: Option<String>,
    pub label: Option<String>,
    pub return_data: Option<bool>,
    pub period_s: Option<i64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScanBy {
    #[default]
    TimestampDescending,
    TimestampAscending,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct GetMetricDataInput {
    pub queries: Vec<MetricDataQuery>,
    pub start_time_ms: i64,
    pub end_time_ms: i64,
    pub next_token: Option<String>,
    pub scan_by: ScanBy,
    pub max_datapoints: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusCode {
    Complete,
    PartialData,
}

impl StatusCode {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusCode::Complete => "Complete",
            StatusCode::PartialData => "PartialData",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct MetricDataResult {
    pub id: String,
    pub label: String,
    pub timestamps_ms: Vec<i64>,
    pub values: Vec<f64>,
    pub status_code: StatusCode,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct GetMetricDataOutput {
    pub results: Vec<MetricDataResult>,
    pub next_token: Option<String>,
}

fn is_valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && id.len() <= 255
}

/// A checked query, ready to evaluate.
#[derive(Clone, Debug)]
pub enum Checked {
    Metric {
        key: MetricKey,
        statistic: Statistic,
        period_s: i64,
        unit: Option<Unit>,
    },
    Expression(Expr),
}

/// Checks the queries as CloudWatch does (ids, exactly one of MetricStat and
/// Expression, statistics, periods, expressions' syntax and references,
/// cycles). `member` names the list in messages (`MetricDataQueries` or
/// `Metrics` for alarms).
pub fn check_queries(
    queries: &[MetricDataQuery],
    member: &str,
) -> Result<Vec<Checked>, CloudWatchError> {
    if queries.is_empty() {
        return Err(CloudWatchError::missing(member));
    }
    if queries.len() > QUERIES_MAX {
        return Err(CloudWatchError::validation(format!(
            "The collection {member} must not have a size greater than {QUERIES_MAX}."
        )));
    }
    let mut ids = HashSet::new();
    let mut checked = Vec::with_capacity(queries.len());
    for (index, query) in queries.iter().enumerate() {
        let path = format!("{member}.member.{}", index + 1);
        if !is_valid_id(&query.id) {
            return Err(CloudWatchError::validation(format!(
                "The value {} for parameter {path}.Id is invalid. Ids start with a lowercase letter and contain only letters, numbers and underscores.",
                query.id
            )));
        }
        if !ids.insert(query.id.clone()) {
            return Err(CloudWatchError::validation(format!(
                "The value {} for parameter {path}.Id is not unique.",
                query.id
            )));
        }
        checked.push(match (&query.metric_stat, &query.expression) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(CloudWatchError::validation(format!(
                    "Exactly one of {path}.MetricStat and {path}.Expression must be specified."
                )))
            }
            (Some(stat), None) => {
                check_namespace(&stat.namespace, &format!("{path}.MetricStat.Metric.Namespace"), true)?;
                check_metric_name(&stat.metric_name, &format!("{path}.MetricStat.Metric.MetricName"))?;
                let dimensions = checked_dimensions(&stat.dimensions, &format!("{path}.MetricStat.Metric.Dimensions"))?;
                check_period(stat.period_s, &format!("{path}.MetricStat.Period"))?;
                let statistic = Statistic::parse(&stat.stat).ok_or_else(|| {
                    CloudWatchError::validation(format!(
                        "The value {} for parameter {path}.MetricStat.Stat is not a valid statistic.",
                        stat.stat
                    ))
                })?;
                let unit = match &stat.unit {
                    None => None,
                    Some(text) => Some(Unit::parse(text).ok_or_else(|| {
                        CloudWatchError::invalid_value(text, &format!("{path}.MetricStat.Unit"))
                    })?),
                };
                Checked::Metric {
                    key: MetricKey { namespace: stat.namespace.clone(), name: stat.metric_name.clone(), dimensions },
                    statistic,
                    period_s: stat.period_s,
                    unit,
                }
            }
            (None, Some(text)) => {
                if let Some(period) = query.period_s {
                    check_period(period, &format!("{path}.Period"))?;
                }
                Checked::Expression(math::parse(text).map_err(|e| expression_error(&query.id, text, &e))?)
            }
        });
    }
    // References and cycles.
    let known: HashMap<&str, usize> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| (q.id.as_str(), i))
        .collect();
    for (index, item) in checked.iter().enumerate() {
        if let Checked::Expression(expr) = item {
            let mut references = Vec::new();
            math::references(expr, &mut references);
            for reference in references {
                if !known.contains_key(reference.as_str()) {
                    let query = &queries[index];
                    return Err(CloudWatchError::validation(format!(
                        "Error in expression {}: Unrecognized metric or expression id {reference}",
                        query.id
                    )));
                }
            }
        }
    }
    let mut state = vec![0u8; checked.len()];
    for start in 0..checked.len() {
        visit(start, &checked, queries, &known, &mut state)?;
    }
    Ok(checked)
}

fn dependencies(
    expr: &Expr,
    queries: &[MetricDataQuery],
    known: &HashMap<&str, usize>,
) -> Vec<usize> {
    let mut references = Vec::new();
    math::references(expr, &mut references);
    let mut out: Vec<usize> = references
        .iter()
        .filter_map(|r| known.get(r.as_str()).copied())
        .collect();
    if math::uses_metrics_function(expr) {
        out.extend(
            queries
                .iter()
                .enumerate()
                .filter(|(_, q)| q.metric_stat.is_some())
                .map(|(i, _)| i),
        );
    }
    out
}

fn visit(
    node: usize,
    checked: &[Checked],
    queries: &[MetricDataQuery],
    known: &HashMap<&str, usize>,
    state: &mut [u8],
) -> Result<(), CloudWatchError> {
    match state[node] {
        2 => return Ok(()),
        1 => {
            return Err(CloudWatchError::validation(format!(
                "Error in expression {}: Circular dependency between expressions",
                queries[node].id
            )))
        }
        _ => {}
    }
    state[node] = 1;
    if let Checked::Expression(expr) = &checked[node] {
        for next in dependencies(expr, queries, known) {
            visit(next, checked, queries, known, state)?;
        }
    }
    state[node] = 2;
    Ok(())
}

fn expression_error(id: &str, text: &str, error: &MathError) -> CloudWatchError {
    CloudWatchError::validation(format!(
        "Error in expression {id} [{text}]: {} at position {}",
        error.message, error.position
    ))
}

/// Evaluates checked queries over [start, end) (start already rounded).
pub struct Evaluation<'a> {
    store: &'a MetricStore,
    queries: &'a [MetricDataQuery],
    checked: &'a [Checked],
    start_ms: i64,
    end_ms: i64,
    now_ms: i64,
    done: HashMap<String, Value>,
    in_progress: HashSet<String>,
    error: Option<CloudWatchError>,
}

impl<'a> Evaluation<'a> {
    pub fn new(
        store: &'a MetricStore,
        queries: &'a [MetricDataQuery],
        checked: &'a [Checked],
        start_ms: i64,
        end_ms: i64,
        now_ms: i64,
    ) -> Self {
        Evaluation {
            store,
            queries,
            checked,
            start_ms,
            end_ms,
            now_ms,
            done: HashMap::new(),
            in_progress: HashSet::new(),
            error: None,
        }
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        self.queries.iter().position(|q| q.id == id)
    }

    fn label_of(&self, index: usize) -> String {
        let query = &self.queries[index];
        if let Some(label) = &query.label {
            return label.clone();
        }
        match &self.checked[index] {
            Checked::Metric { key, .. } => key.name.clone(),
            Checked::Expression(_) => query.id.clone(),
        }
    }

    fn metric_series(
        &self,
        key: &MetricKey,
        statistic: Statistic,
        period_s: i64,
        unit: Option<Unit>,
        label: String,
    ) -> Result<Series, CloudWatchError> {
        let ids = self.store.series_of(key, unit);
        let periods = self
            .store
            .period_aggregates(&ids, self.start_ms, self.end_ms, period_s, self.now_ms)
            .map_err(|e| CloudWatchError::new(ErrorCode::InternalServiceFault, e.to_string()))?;
        Ok(Series {
            label,
            points: periods
                .iter()
                .filter_map(|(t, a)| statistic.of(a).map(|v| (*t, v)))
                .collect(),
        })
    }

    /// The value of one query, computed once.
    pub fn value(&mut self, index: usize) -> Result<Value, CloudWatchError> {
        let id = self.queries[index].id.clone();
        if let Some(value) = self.done.get(&id) {
            return Ok(value.clone());
        }
        let label = self.label_of(index);
        let value = match &self.checked[index] {
            Checked::Metric {
                key,
                statistic,
                period_s,
                unit,
            } => Value::Series(self.metric_series(key, *statistic, *period_s, *unit, label)?),
            Checked::Expression(expr) => {
                self.in_progress.insert(id.clone());
                let expr = expr.clone();
                let result = math::evaluate(&expr, self);
                self.in_progress.remove(&id);
                if let Some(error) = self.error.take() {
                    return Err(error);
                }
                let text = self.queries[index].expression.clone().unwrap_or_default();
                match result.map_err(|e| expression_error(&id, &text, &e))? {
                    Value::Series(mut series) => {
                        series.label = label;
                        Value::Series(series)
                    }
                    Value::Array(items) if self.queries[index].label.is_some() => Value::Array(
                        items
                            .into_iter()
                            .map(|mut s| {
                                s.label = format!("{label} {}", s.label);
                                s
                            })
                            .collect(),
                    ),
                    other => other,
                }
            }
        };
        self.done.insert(id, value.clone());
        Ok(value)
    }

    fn period_s(&self) -> i64 {
        self.checked
            .iter()
            .find_map(|c| match c {
                Checked::Metric { period_s, .. } => Some(*period_s),
                Checked::Expression(_) => None,
            })
            .or_else(|| self.queries.iter().find_map(|q| q.period_s))
            .unwrap_or(60)
    }
}

impl Context for Evaluation<'_> {
    fn value_of(&mut self, id: &str) -> Option<Value> {
        let index = self.index_of(id)?;
        if self.in_progress.contains(id) {
            return None;
        }
        match self.value(index) {
            Ok(value) => Some(value),
            Err(error) => {
                self.error.get_or_insert(error);
                Some(Value::Array(Vec::new()))
            }
        }
    }

    fn metrics(&mut self) -> Vec<(String, Series)> {
        let indices: Vec<usize> = (0..self.queries.len())
            .filter(|i| matches!(self.checked[*i], Checked::Metric { .. }))
            .collect();
        let mut out = Vec::new();
        for index in indices {
            if let Ok(Value::Series(series)) = self.value(index) {
                out.push((self.queries[index].id.clone(), series));
            }
        }
        out
    }

    fn grid(&self) -> Vec<i64> {
        let period_ms = self.period_s() * SECOND_MS;
        (0..)
            .map(|i| self.start_ms + i * period_ms)
            .take_while(|t| *t < self.end_ms)
            .take(DATAPOINTS_DEFAULT)
            .collect()
    }

    fn period_s(&self) -> i64 {
        Evaluation::period_s(self)
    }

    fn search(
        &mut self,
        expression: &str,
        statistic: &str,
        period_s: i64,
        position: usize,
    ) -> Result<Vec<Series>, MathError> {
        let statistic = Statistic::parse(statistic).ok_or_else(|| {
            MathError::at(position, format!("Invalid statistic {statistic} in SEARCH"))
        })?;
        check_period(period_s, "Period").map_err(|e| MathError::at(position, e.message))?;
        let search =
            parse_search(expression).map_err(|message| MathError::at(position, message))?;
        let keys: Vec<MetricKey> = match &search.namespace {
            Some(namespace) => self
                .store
                .metrics_in_namespace(namespace)
                .filter(|k| search.matches(k))
                .take(SEARCH_RESULTS_MAX)
                .cloned()
                .collect(),
            None => self
                .store
                .metrics(None, i64::MIN, SEARCH_RESULTS_MAX, |k| search.matches(k)),
        };
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let label = std::iter::once(key.name.clone())
                .chain(key.dimensions.iter().map(|d| d.value.clone()))
                .collect::<Vec<_>>()
                .join(" ");
            out.push(
                self.metric_series(&key, statistic, period_s, None, label)
                    .map_err(|e| MathError::at(position, e.message))?,
            );
        }
        Ok(out)
    }
}

/// `{Namespace,DimensionName,...} Name="value" term ...`: the schema (the
/// metric must have exactly those dimensions), exact property matches and
/// bare terms matched against the metric's name and dimension values.
struct Search {
    namespace: Option<String>,
    schema_dimensions: Option<Vec<String>>,
    properties: Vec<(String, String)>,
    terms: Vec<String>,
}

impl Search {
    fn matches(&self, key: &MetricKey) -> bool {
        if self.namespace.as_ref().is_some_and(|n| *n != key.namespace) {
            return false;
        }
        if let Some(names) = &self.schema_dimensions {
            if key.dimensions.len() != names.len()
                || !names.iter().all(|n| key.dimension(n).is_some())
            {
                return false;
            }
        }
        let property_ok = self
            .properties
            .iter()
            .all(|(name, value)| match name.as_str() {
                "MetricName" => key.name == *value,
                "Namespace" => key.namespace == *value,
                other => key.dimension(other) == Some(value.as_str()),
            });
        property_ok
            && self.terms.iter().all(|term| {
                key.name.contains(term.as_str())
                    || key
                        .dimensions
                        .iter()
                        .any(|d| d.value.contains(term.as_str()) || d.name.contains(term.as_str()))
            })
    }
}

fn unquote(text: &str) -> String {
    text.trim().trim_matches('"').to_string()
}

fn parse_search(text: &str) -> Result<Search, String> {
    let mut rest = text.trim();
    let mut search = Search {
        namespace: None,
        schema_dimensions: None,
        properties: Vec::new(),
        terms: Vec::new(),
    };
    if let Some(after) = rest.strip_prefix('{') {
        let (schema, tail) = after
            .split_once('}')
            .ok_or("Unterminated schema in SEARCH: missing '}'")?;
        let mut parts = schema.split(',').map(unquote);
        search.namespace = parts.next().filter(|n| !n.is_empty());
        search.schema_dimensions = Some(parts.filter(|p| !p.is_empty()).collect());
        rest = tail;
    }
    for word in split_words(rest)? {
        if ["OR", "NOT", "AND"].contains(&word.as_str()) {
            return Err(format!("The SEARCH operator {word} is not supported"));
        }
        match word.split_once('=') {
            Some((name, value)) => search.properties.push((unquote(name), unquote(value))),
            None => search.terms.push(unquote(&word)),
        }
    }
    Ok(search)
}

fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if quoted {
        return Err("Unterminated quote in SEARCH".into());
    }
    if !current.is_empty() {
        words.push(current);
    }
    Ok(words)
}

/// A page token: a digest of the request and where the page stopped.
fn token(digest: u64, position: usize) -> String {
    format!("{digest:016x}{position:016x}")
}

fn request_digest(input: &GetMetricDataInput) -> u64 {
    let text = format!(
        "{:?}{}{}{:?}",
        input.queries, input.start_time_ms, input.end_time_ms, input.scan_by
    );
    crate::disk::crc32(text.as_bytes()) as u64 | ((text.len() as u64) << 32)
}

pub fn get_metric_data(
    store: &MetricStore,
    input: &GetMetricDataInput,
    now_ms: i64,
) -> Result<GetMetricDataOutput, CloudWatchError> {
    let checked = check_queries(&input.queries, "MetricDataQueries")?;
    if input.start_time_ms >= input.end_time_ms {
        return Err(CloudWatchError::validation(
            "The parameter StartTime must be less than the parameter EndTime.",
        ));
    }
    let max_datapoints = match input.max_datapoints {
        None => DATAPOINTS_DEFAULT,
        Some(n) if n >= 1 => (n as usize).min(DATAPOINTS_DEFAULT),
        Some(n) => {
            return Err(CloudWatchError::validation(format!(
                "The value {n} for parameter MaxDatapoints is invalid."
            )))
        }
    };
    let digest = request_digest(input);
    let skip = match &input.next_token {
        None => 0,
        Some(text) => {
            let parsed = (text.len() == 32)
                .then(|| {
                    Some((
                        u64::from_str_radix(&text[..16], 16).ok()?,
                        usize::from_str_radix(&text[16..], 16).ok()?,
                    ))
                })
                .flatten();
            match parsed {
                Some((d, position)) if d == digest => position,
                _ => {
                    return Err(CloudWatchError::new(
                        ErrorCode::InvalidNextToken,
                        "The service found the NextToken invalid.",
                    ))
                }
            }
        }
    };
    // The smallest period among the queries decides the rounding of StartTime.
    let period_s = checked
        .iter()
        .filter_map(|c| match c {
            Checked::Metric { period_s, .. } => Some(*period_s),
            Checked::Expression(_) => None,
        })
        .min()
        .unwrap_or(60);
    let start = round_start(input.start_time_ms, period_s, now_ms);
    let mut evaluation = Evaluation::new(
        store,
        &input.queries,
        &checked,
        start,
        input.end_time_ms,
        now_ms,
    );
    let mut series: Vec<(String, Series)> = Vec::new();
    for (index, query) in input.queries.iter().enumerate() {
        if query.return_data == Some(false) {
            continue;
        }
        match evaluation.value(index)? {
            Value::Series(s) => series.push((query.id.clone(), s)),
            Value::Array(items) => series.extend(items.into_iter().map(|s| (query.id.clone(), s))),
            Value::Scalar(_) => {
                return Err(CloudWatchError::validation(format!(
                    "Error in expression {}: The expression must return a time series or an array of time series, not a single number",
                    query.id
                )))
            }
        }
    }
    let mut results = Vec::with_capacity(series.len());
    let mut position = 0usize;
    let mut budget = max_datapoints;
    let mut next_token = None;
    for (id, s) in series {
        let mut points: Vec<(i64, f64)> = s
            .points
            .into_iter()
            .filter(|(t, _)| *t >= start && *t < input.end_time_ms)
            .collect();
        if input.scan_by == ScanBy::TimestampDescending {
            points.reverse();
        }
        let total = points.len();
        let already = skip.saturating_sub(position).min(total);
        let take = (total - already).min(budget);
        let page: Vec<(i64, f64)> = points[already..already + take].to_vec();
        budget -= take;
        position += total;
        let complete = already + take == total;
        if !complete && next_token.is_none() {
            next_token = Some(token(digest, position - total + already + take));
        }
        results.push(MetricDataResult {
            id,
            label: s.label,
            timestamps_ms: page.iter().map(|(t, _)| *t).collect(),
            values: page.iter().map(|(_, v)| *v).collect(),
            status_code: if complete {
                StatusCode::Complete
            } else {
                StatusCode::PartialData
            },
        });
    }
    Ok(GetMetricDataOutput {
        results,
        next_token,
    })
}

/// The values of one expression or metric for alarms: evaluates `queries`
/// over [start, end) and returns the series of the one with ReturnData.
pub fn evaluate_for_alarm(
    store: &MetricStore,
    queries: &[MetricDataQuery],
    checked: &[Checked],
    start_ms: i64,
    end_ms: i64,
    now_ms: i64,
) -> Result<BTreeMap<i64, f64>, CloudWatchError> {
    let index = queries
        .iter()
        .position(|q| q.return_data.unwrap_or(true))
        .unwrap_or(0);
    let mut evaluation = Evaluation::new(store, queries, checked, start_ms, end_ms, now_ms);
    match evaluation.value(index)? {
        Value::Series(series) => Ok(series.points),
        _ => Err(CloudWatchError::validation(format!(
            "Error in expression {}: An alarm's expression must return a single time series",
            queries[index].id
        ))),
    }
}
