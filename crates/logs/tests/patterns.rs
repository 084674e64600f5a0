//! Filter patterns, table-driven: each case is a pattern, a message, and
//! whether it matches.

use flotilla_logs::Pattern;

const JSON_ERROR: &str = r#"{"level":"error","latency_ms":312,"user":{"id":"u-7","admin":false},"items":[{"id":3}],"note":null}"#;
const JSON_INFO: &str =
    r#"{"level":"info","latency_ms":12,"user":{"id":"u-8","admin":true},"items":[]}"#;

#[test]
fn patterns_match_as_cloudwatch_logs_documents() {
    let cases: &[(&str, &str, bool)] = &[
        ("", "anything", true),
        ("   ", "anything", true),
        ("ERROR", "[ERROR] disk full", true),
        ("ERROR", "[error] disk full", false),
        ("ERROR disk", "[ERROR] disk full", true),
        ("ERROR memory", "[ERROR] disk full", false),
        ("\"disk full\"", "[ERROR] disk full", true),
        ("\"full disk\"", "[ERROR] disk full", false),
        ("?ERROR ?WARN", "WARN low space", true),
        ("?ERROR ?WARN", "INFO fine", false),
        ("ERROR -disk", "[ERROR] disk full", false),
        ("ERROR -memory", "[ERROR] disk full", true),
        ("-\"disk full\"", "disk is full", true),
        ("{ $.level = \"error\" }", JSON_ERROR, true),
        ("{ $.level = \"error\" }", JSON_INFO, false),
        ("{$.level=error}", JSON_ERROR, true),
        ("{ $.level = \"err*\" }", JSON_ERROR, true),
        ("{ $.level != \"error\" }", JSON_INFO, true),
        ("{ $.latency_ms > 100 }", JSON_ERROR, true),
        ("{ $.latency_ms > 100 }", JSON_INFO, false),
        ("{ $.latency_ms <= 12 }", JSON_INFO, true),
        ("{ $.user.id = \"u-7\" }", JSON_ERROR, true),
        ("{ $.items[0].id = 3 }", JSON_ERROR, true),
        ("{ $.items[0].id = 3 }", JSON_INFO, false),
        ("{ $.user.admin IS FALSE }", JSON_ERROR, true),
        ("{ $.user.admin IS TRUE }", JSON_ERROR, false),
        ("{ $.note IS NULL }", JSON_ERROR, true),
        ("{ $.note NOT EXISTS }", JSON_INFO, true),
        ("{ $.note NOT EXISTS }", JSON_ERROR, false),
        (
            "{ $.level = \"error\" && $.latency_ms > 300 }",
            JSON_ERROR,
            true,
        ),
        (
            "{ $.level = \"error\" && $.latency_ms > 400 }",
            JSON_ERROR,
            false,
        ),
        (
            "{ $.level = \"info\" || $.latency_ms > 300 }",
            JSON_ERROR,
            true,
        ),
        (
            "{ ($.level = \"info\" || $.level = \"error\") && $.user.id = \"u-8\" }",
            JSON_INFO,
            true,
        ),
        (
            "{ ($.level = \"info\" || $.level = \"error\") && $.user.id = \"u-8\" }",
            JSON_ERROR,
            false,
        ),
        ("{ $.missing = 1 }", JSON_ERROR, false),
        ("{ $.level = \"error\" }", "not json at all", false),
    ];
    for (pattern, message, expected) in cases {
        let parsed = Pattern::parse(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
        assert_eq!(
            parsed.matches(message),
            *expected,
            "pattern {pattern:?} on {message:?}"
        );
    }
}

#[test]
fn bad_patterns_are_refused_with_a_position() {
    let cases: &[(&str, &str)] = &[
        ("{ $.level = \"error\" ", "expected '}'"),
        ("{ level = 1 }", "expected a selector"),
        ("{ $.a ~ 1 }", "comparison operator"),
        ("{ $.a > \"x\" }", "only = and != compare strings"),
        ("\"unterminated", "unterminated quoted string"),
        ("[ip, user]", "space-delimited"),
        ("{ $.a = 1 } trailing", "unexpected text"),
        ("{ $. = 1 }", "member name"),
        ("{ $.a[x] = 1 }", "array index"),
    ];
    for (pattern, reason) in cases {
        match Pattern::parse(pattern) {
            Ok(parsed) => panic!("{pattern} parsed as {parsed:?}"),
            Err(error) => assert!(
                error.to_string().contains(reason),
                "{pattern}: {error} does not say {reason}"
            ),
        }
    }
    let deep = format!("{{ {}$.a = 1{} }}", "(".repeat(40), ")".repeat(40));
    assert!(Pattern::parse(&deep).is_err());
    assert!(Pattern::parse(&"a".repeat(1025)).is_err());
}

/// The fuzz target's stable counterpart: every sequence of up to four
/// fragments parses or is refused, and what parses matches without panicking.
#[test]
fn never_panics_on_fragments() {
    let fragments = [
        "{", "}", "(", ")", "$", "$.", "$.a", "[", "]", "[0]", "=", "!=", "<=", ">", "&&", "||",
        "\"", "\"x y\"", "?", "-", "IS", "NULL", "NOT", "EXISTS", "1", "-2.5e3", "*", " ", "é",
        "\\",
    ];
    let messages = [
        "",
        "plain text",
        r#"{"a":1,"b":[{"c":"x"}]}"#,
        r#"{"a":null}"#,
        "[1,2]",
    ];
    let count = fragments.len();
    let mut parsed = 0;
    for n in 0..count.pow(4) {
        let mut text = String::new();
        let mut rest = n;
        for _ in 0..4 {
            text.push_str(fragments[rest % count]);
            rest /= count;
        }
        if let Ok(pattern) = Pattern::parse(&text) {
            parsed += 1;
            for message in messages {
                let _ = pattern.matches(message);
            }
        }
    }
    assert!(parsed > 1000, "only {parsed} fragment sequences parsed");
}
