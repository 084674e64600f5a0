//! A listener's rules, compiled once per snapshot and evaluated per request:
//! by priority, lowest first, the first rule whose every condition matches
//! wins, else the default action. Pure: the request is a view of borrowed
//! parts, and the action type is the caller's.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};

use crate::config::{Condition, Rule};
use crate::pattern::{self, Cidr};

/// What conditions look at in a request.
pub struct RequestView<'a> {
    pub method: &'a str,
    /// The Host header (or HTTP/2 `:authority`) with any port removed.
    pub host: &'a str,
    pub path: &'a str,
    /// The query string without `?`; empty when there is none.
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    /// The client's address on the connection (never X-Forwarded-For).
    pub source: IpAddr,
}

/// `host` without its `:port`, IPv6 brackets kept.
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

#[derive(Debug)]
enum Compiled {
    Host(Vec<Vec<u8>>),
    Path(Vec<Vec<u8>>),
    Header(HeaderName, Vec<Vec<u8>>),
    Query(Vec<(Option<Vec<u8>>, Vec<u8>)>),
    Method(Vec<String>),
    Source(Vec<Cidr>),
}

impl Compiled {
    fn from_condition(condition: &Condition) -> Option<Compiled> {
        let bytes = |values: &[String]| values.iter().map(|v| v.as_bytes().to_vec()).collect();
        Some(match condition {
            Condition::HostHeader { config } => Compiled::Host(bytes(&config.values)),
            Condition::PathPattern { config } => Compiled::Path(bytes(&config.values)),
            Condition::HttpHeader { config } => Compiled::Header(
                HeaderName::from_bytes(config.http_header_name.as_bytes()).ok()?,
                bytes(&config.values),
            ),
            Condition::QueryString { config } => Compiled::Query(
                config
                    .values
                    .iter()
                    .map(|pair| {
                        (
                            pair.key.as_ref().map(|key| key.as_bytes().to_vec()),
                            pair.value.as_bytes().to_vec(),
                        )
                    })
                    .collect(),
            ),
            Condition::HttpRequestMethod { config } => Compiled::Method(config.values.clone()),
            Condition::SourceIp { config } => Compiled::Source(
                config
                    .values
                    .iter()
                    .map(|v| v.parse().ok())
                    .collect::<Option<_>>()?,
            ),
        })
    }

    fn matches(&self, request: &RequestView<'_>) -> bool {
        use pattern::wildcard_match as matches;
        match self {
            Compiled::Host(patterns) => patterns
                .iter()
                .any(|p| matches(p, request.host.as_bytes(), true)),
            Compiled::Path(patterns) => patterns
                .iter()
                .any(|p| matches(p, request.path.as_bytes(), false)),
            Compiled::Header(name, patterns) => request
                .headers
                .get_all(name)
                .iter()
                .any(|value| patterns.iter().any(|p| matches(p, value.as_bytes(), true))),
            Compiled::Query(pairs) => {
                if request.query.is_empty() {
                    return false;
                }
                pattern::query_pairs(request.query).any(|(key, value)| {
                    pairs.iter().any(|(want_key, want_value)| {
                        want_key
                            .as_ref()
                            .is_none_or(|want| matches(want, key.as_bytes(), true))
                            && matches(want_value, value.as_bytes(), true)
                    })
                })
            }
            Compiled::Method(methods) => methods.iter().any(|m| m == request.method),
            Compiled::Source(blocks) => blocks.iter().any(|block| block.contains(request.source)),
        }
    }
}

#[derive(Debug)]
struct CompiledRule<A> {
    priority: u32,
    conditions: Vec<Compiled>,
    action: A,
}

/// A listener's rules in evaluation order and its default action.
#[derive(Debug)]
pub struct RuleTable<A> {
    rules: Vec<CompiledRule<A>>,
    default: A,
}

impl<A> RuleTable<A> {
    /// Compiles validated rules; `action_of` resolves each rule's action.
    /// A rule whose conditions cannot compile (only possible for a snapshot
    /// that skipped validation) is dropped rather than matching everything.
    pub fn new(rules: &[Rule], default: A, mut action_of: impl FnMut(&Rule) -> A) -> Self {
        let mut compiled: Vec<CompiledRule<A>> = rules
            .iter()
            .filter_map(|rule| {
                let conditions = rule
                    .conditions
                    .iter()
                    .map(Compiled::from_condition)
                    .collect::<Option<Vec<_>>>()?;
                Some(CompiledRule {
                    priority: rule.priority,
                    conditions,
                    action: action_of(rule),
                })
            })
            .collect();
        compiled.sort_by_key(|rule| rule.priority);
        RuleTable {
            rules: compiled,
            default,
        }
    }

    pub fn evaluate(&self, request: &RequestView<'_>) -> &A {
        self.rules
            .iter()
            .find(|rule| rule.conditions.iter().all(|c| c.matches(request)))
            .map_or(&self.default, |rule| &rule.action)
    }

    /// Whether any rule looks at more than host, path and method; lets the
    /// proxy skip work nobody needs.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Snapshot;

    /// One table of rules, in the snapshot's own JSON, and requests with the
    /// priority of the rule they must land on (0: the default action).
    fn table() -> RuleTable<u32> {
        let rules: Vec<Rule> = serde_json::from_value(serde_json::json!([
            {"Priority": 10, "Conditions": [{"Field": "host-header", "HostHeaderConfig": {"Values": ["*.example.com"]}},
                                            {"Field": "path-pattern", "PathPatternConfig": {"Values": ["/api/*"]}}],
             "Actions": [{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "200"}}]},
            {"Priority": 5, "Conditions": [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/api/admin*"]}}],
             "Actions": [{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "200"}}]},
            {"Priority": 20, "Conditions": [{"Field": "host-header", "HostHeaderConfig": {"Values": ["static?.example.org"]}}],
             "Actions": [{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "200"}}]},
            {"Priority": 30, "Conditions": [{"Field": "http-header", "HttpHeaderConfig": {"HttpHeaderName": "X-Canary", "Values": ["yes", "tr?e"]}}],
             "Actions": [{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "200"}}]},
            {"Priority": 40, "Conditions": [{"Field": "query-string", "QueryStringConfig": {"Values": [{"Key": "version", "Value": "v2*"}, {"Value": "beta"}]}}],
             "Actions": [{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "200"}}]},
            {"Priority": 50, "Conditions": [{"Field": "http-request-method", "HttpRequestMethodConfig": {"Values": ["DELETE", "PATCH"]}}],
             "Actions": [{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "200"}}]},
            {"Priority": 60, "Conditions": [{"Field": "source-ip", "SourceIpConfig": {"Values": ["192.0.2.0/24", "2001:db8::/32"]}}],
             "Actions": [{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "200"}}]},
            {"Priority": 70, "Conditions": [{"Field": "http-header", "HttpHeaderConfig": {"HttpHeaderName": "user-agent", "Values": ["*Mobile*"]}},
                                            {"Field": "http-header", "HttpHeaderConfig": {"HttpHeaderName": "accept-language", "Values": ["fr*"]}}],
             "Actions": [{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "200"}}]},
        ]))
        .expect("rules parse");
        RuleTable::new(&rules, 0, |rule| rule.priority)
    }

    struct Case {
        method: &'static str,
        host: &'static str,
        uri: &'static str,
        headers: &'static [(&'static str, &'static str)],
        source: &'static str,
        expected: u32,
    }

    const fn case(
        method: &'static str,
        host: &'static str,
        uri: &'static str,
        expected: u32,
    ) -> Case {
        Case {
            method,
            host,
            uri,
            headers: &[],
            source: "10.0.0.1",
            expected,
        }
    }

    #[test]
    fn rules_match_by_priority_with_elbv2_semantics() {
        let table = table();
        let cases = [
            // host-header: wildcard, case-insensitive, port ignored
            case("GET", "api.example.com", "/api/users", 10),
            case("GET", "API.EXAMPLE.COM:8080", "/api/users", 10),
            case("GET", "example.com", "/api/users", 0),
            // path-pattern: case-sensitive; the lower priority number wins
            case("GET", "api.example.com", "/API/users", 0),
            case("GET", "api.example.com", "/api/admin/x", 5),
            case("GET", "other.test", "/api/admins", 5),
            // path-pattern ignores the query string
            case("GET", "other.test", "/x?p=/api/admin", 0),
            // `?` is exactly one character
            case("GET", "static1.example.org", "/", 20),
            case("GET", "static.example.org", "/", 0),
            case("GET", "static12.example.org", "/", 0),
            // query-string: key and value wildcards, value-only pairs, no case
            case("GET", "h", "/?version=V2.1", 40),
            case("GET", "h", "/?a=1&version=v2", 40),
            case("GET", "h", "/?other=beta", 40),
            case("GET", "h", "/?version=v3", 0),
            case("GET", "h", "/?v%65rsion=v2", 40),
            case("GET", "h", "/", 0),
            // http-request-method: exact and case-sensitive
            case("DELETE", "h", "/", 50),
            case("PATCH", "h", "/", 50),
            case("delete", "h", "/", 0),
            case("POST", "h", "/", 0),
        ];
        let header_cases = [
            Case {
                headers: &[("x-canary", "YES")],
                ..case("GET", "h", "/", 30)
            },
            Case {
                headers: &[("x-canary", "true")],
                ..case("GET", "h", "/", 30)
            },
            Case {
                headers: &[("x-canary", "no")],
                ..case("GET", "h", "/", 0)
            },
            Case {
                headers: &[("x-canary", "no"), ("x-canary", "yes")],
                ..case("GET", "h", "/", 30)
            },
            // two http-header conditions: both must match
            Case {
                headers: &[("user-agent", "X Mobile Y"), ("accept-language", "fr-FR")],
                ..case("GET", "h", "/", 70)
            },
            Case {
                headers: &[("user-agent", "X Mobile Y")],
                ..case("GET", "h", "/", 0)
            },
            // source-ip
            Case {
                source: "192.0.2.55",
                ..case("GET", "h", "/", 60)
            },
            Case {
                source: "2001:db8::7",
                ..case("GET", "h", "/", 60)
            },
            Case {
                source: "198.51.100.1",
                ..case("GET", "h", "/", 0)
            },
        ];
        for case in cases.iter().chain(&header_cases) {
            let uri: http::Uri = case.uri.parse().expect("uri");
            let mut headers = HeaderMap::new();
            for (name, value) in case.headers {
                headers.append(
                    HeaderName::from_static(name),
                    http::HeaderValue::from_static(value),
                );
            }
            let view = RequestView {
                method: case.method,
                host: host_without_port(case.host),
                path: uri.path(),
                query: uri.query().unwrap_or(""),
                headers: &headers,
                source: case.source.parse().expect("ip"),
            };
            assert_eq!(
                *table.evaluate(&view),
                case.expected,
                "{} {} {} {:?} from {}",
                case.method,
                case.host,
                case.uri,
                case.headers,
                case.source
            );
        }
    }

    #[test]
    fn host_port_is_removed() {
        assert_eq!(host_without_port("a.b:80"), "a.b");
        assert_eq!(host_without_port("a.b"), "a.b");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
    }

    /// Snapshots that ELBv2 would refuse, each with the message that names why.
    #[test]
    fn invalid_rules_are_refused_by_name() {
        let with_rule = |rule: serde_json::Value| -> Snapshot {
            serde_json::from_value(serde_json::json!({
                "LoadBalancers": [{"Name": "web", "Type": "application", "Listeners": [{
                    "Port": 8080, "Protocol": "HTTP",
                    "DefaultActions": [{"Type": "forward", "TargetGroupArn": "tg"}],
                    "Rules": [rule]}]}],
                "TargetGroups": [{"TargetGroupArn": "tg", "Protocol": "HTTP", "Port": 80}]
            }))
            .expect("snapshot parses")
        };
        let fixed = serde_json::json!([{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "200"}}]);
        let cases = [
            (
                serde_json::json!({"Priority": 0, "Conditions": [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/"]}}], "Actions": fixed}),
                "Priority \"0\" is invalid",
            ),
            (
                serde_json::json!({"Priority": 1, "Conditions": [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/a", "/b", "/c", "/d", "/e", "/f"]}}], "Actions": fixed}),
                "6 condition values is more than the limit of 5",
            ),
            (
                serde_json::json!({"Priority": 1, "Conditions": [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/*/*/*/*/*/*"]}}], "Actions": fixed}),
                "6 wildcards is more than the limit of 5",
            ),
            (
                serde_json::json!({"Priority": 1, "Conditions": [{"Field": "host-header", "HostHeaderConfig": {"Values": ["a"]}}, {"Field": "host-header", "HostHeaderConfig": {"Values": ["b"]}}], "Actions": fixed}),
                "Field \"host-header\" is invalid",
            ),
            (
                serde_json::json!({"Priority": 1, "Conditions": [{"Field": "http-request-method", "HttpRequestMethodConfig": {"Values": ["get"]}}], "Actions": fixed}),
                "HttpRequestMethodConfig.Values \"get\" is invalid",
            ),
            (
                serde_json::json!({"Priority": 1, "Conditions": [{"Field": "source-ip", "SourceIpConfig": {"Values": ["10.0.0.0/40"]}}], "Actions": fixed}),
                "SourceIpConfig.Values \"10.0.0.0/40\" is invalid",
            ),
            (
                serde_json::json!({"Priority": 1, "Conditions": [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/".repeat(129)]}}], "Actions": fixed}),
                "values are at most 128 characters",
            ),
            (
                serde_json::json!({"Priority": 1, "Conditions": [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/"]}}], "Actions": [{"Type": "forward", "TargetGroupArn": "missing"}]}),
                "target group \"missing\" is not in the snapshot",
            ),
            (
                serde_json::json!({"Priority": 1, "Conditions": [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/"]}}], "Actions": [{"Type": "redirect", "RedirectConfig": {"StatusCode": "HTTP_301"}}]}),
                "a redirect must change at least one",
            ),
            (
                serde_json::json!({"Priority": 1, "Conditions": [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/"]}}], "Actions": [{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "302"}}]}),
                "a 2XX, 4XX or 5XX status code",
            ),
            (
                serde_json::json!({"Priority": 1, "Conditions": [], "Actions": fixed}),
                "a rule needs at least one condition",
            ),
        ];
        for (rule, expected) in cases {
            let error = with_rule(rule.clone()).validate().expect_err("refused");
            assert!(
                error.to_string().contains(expected),
                "{rule}: {error} does not say {expected:?}"
            );
        }
        let many: Vec<serde_json::Value> = (1..=101)
            .map(|priority| serde_json::json!({"Priority": priority, "Conditions": [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/"]}}], "Actions": fixed}))
            .collect();
        let mut snapshot = with_rule(many[0].clone());
        snapshot.load_balancers[0].listeners[0].rules =
            serde_json::from_value(serde_json::Value::Array(many)).expect("rules");
        assert!(snapshot
            .validate()
            .expect_err("refused")
            .to_string()
            .contains("101 rules is more than the limit of 100"));
        let mut duplicate = with_rule(
            serde_json::json!({"Priority": 3, "Conditions": [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/"]}}], "Actions": fixed}),
        );
        let rule = duplicate.load_balancers[0].listeners[0].rules[0].clone();
        duplicate.load_balancers[0].listeners[0].rules.push(rule);
        assert!(matches!(
            duplicate.validate(),
            Err(crate::config::ConfigError::PriorityInUse { priority: 3, .. })
        ));
    }
}
