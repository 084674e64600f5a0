//! Requests serialized by botocore itself (captured once by
//! `fixtures/capture.py` with the pinned botocore) decode into the generated
//! types, and what they decode to is exactly the input botocore was given;
//! outputs written as XML match the golden files that the end-to-end suite
//! parses with botocore's own query parser.

use flotilla_aws as aws;
use flotilla_protocol::{form, query, xml, ServiceModel};
use serde_json::Value;

const REQUESTS: &str = include_str!("fixtures/requests.json");
const RESPONSES: &str = include_str!("fixtures/responses.json");

fn model(service: &str) -> &'static ServiceModel {
    match service {
        "sts" => &aws::sts::MODEL,
        "elbv2" => &aws::elbv2::MODEL,
        "iam" => &aws::iam::MODEL,
        "logs" => &aws::logs::MODEL,
        "cloudwatch" => &aws::monitoring::MODEL,
        "application-autoscaling" => &aws::application_autoscaling::MODEL,
        "secretsmanager" => &aws::secretsmanager::MODEL,
        "ssm" => &aws::ssm::MODEL,
        "events" => &aws::events::MODEL,
        "servicediscovery" => &aws::servicediscovery::MODEL,
        other => panic!("no model for {other}"),
    }
}

fn typed<T: serde::Serialize, E: std::fmt::Debug>(
    decoded: Option<Result<T, E>>,
    operation: &str,
) -> Value {
    let request = decoded
        .unwrap_or_else(|| panic!("{operation} is not an operation of its service"))
        .unwrap_or_else(|error| panic!("{operation} did not decode: {error:?}"));
    serde_json::to_value(request).expect("request serializes")
}

/// The generated request a fixture's body decodes into, as a value.
fn decode(service: &str, operation: &str, body: &str) -> Value {
    let model = model(service);
    if model.protocol == flotilla_protocol::Protocol::Query {
        let parsed = form::Form::parse(body.as_bytes(), &form::LIMITS).expect("form parses");
        let (found, value) = query::decode(model, &parsed, &form::LIMITS).expect("form decodes");
        assert_eq!(found.name, operation);
        return match service {
            "sts" => typed(
                aws::sts::StsRequest::from_value(operation, value),
                operation,
            ),
            "elbv2" => typed(
                aws::elbv2::Elbv2Request::from_value(operation, value),
                operation,
            ),
            "iam" => typed(
                aws::iam::IamRequest::from_value(operation, value),
                operation,
            ),
            other => panic!("{other} is not a Query service"),
        };
    }
    let body = body.as_bytes();
    match service {
        "logs" => typed(aws::logs::LogsRequest::decode(operation, body), operation),
        "cloudwatch" => typed(
            aws::monitoring::MonitoringRequest::decode(operation, body),
            operation,
        ),
        "application-autoscaling" => typed(
            aws::application_autoscaling::ApplicationAutoscalingRequest::decode(operation, body),
            operation,
        ),
        "secretsmanager" => typed(
            aws::secretsmanager::SecretsmanagerRequest::decode(operation, body),
            operation,
        ),
        "ssm" => typed(aws::ssm::SsmRequest::decode(operation, body), operation),
        "events" => typed(
            aws::events::EventsRequest::decode(operation, body),
            operation,
        ),
        "servicediscovery" => typed(
            aws::servicediscovery::ServicediscoveryRequest::decode(operation, body),
            operation,
        ),
        other => panic!("no types for {other}"),
    }
}

/// Values equal as botocore and serde see them: numbers by their value
/// (botocore's 900 is the generated f64 900.0 of a timestamp).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, value)| y.get(key).is_some_and(|other| same(value, other)))
        }
        _ => a == b,
    }
}

#[test]
fn botocore_requests_decode_into_the_generated_types() {
    let fixtures: Value = serde_json::from_str(REQUESTS).expect("requests.json");
    let cases = fixtures["cases"].as_array().expect("cases");
    assert!(cases.len() >= 10);
    for case in cases {
        let service = case["service"].as_str().expect("service");
        let operation = case["operation"].as_str().expect("operation");
        let body = case["body"].as_str().expect("body");
        let decoded = decode(service, operation, body);
        assert!(
            same(&decoded, &case["input"]),
            "{service} {operation}:\n decoded  {decoded}\n botocore {}",
            case["input"]
        );
    }
}

#[test]
fn outputs_write_the_golden_xml_botocore_parses() {
    let fixtures: Value = serde_json::from_str(RESPONSES).expect("responses.json");
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let update = std::env::var_os("UPDATE_FIXTURES").is_some();
    for case in fixtures["cases"].as_array().expect("cases") {
        let service = case["service"].as_str().expect("service");
        let name = case["operation"].as_str().expect("operation");
        let model = model(service);
        let operation = model.operation(name).expect("operation in model");
        let written = xml::response(
            model,
            operation,
            &case["output"],
            "7f1d6e7a-0000-4000-8000-000000000001",
        );
        let golden = directory.join(format!("{service}.{name}.xml"));
        if update {
            std::fs::write(&golden, &written).expect("write golden");
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_else(|_| {
            panic!(
                "{} is missing: run with UPDATE_FIXTURES=1",
                golden.display()
            )
        });
        assert_eq!(written, expected, "{service} {name}");
    }
}

#[test]
fn errors_carry_the_models_code_and_namespace() {
    let model = &aws::elbv2::MODEL;
    assert_eq!(
        model.wire_code("LoadBalancerNotFoundException"),
        "LoadBalancerNotFound"
    );
    assert_eq!(model.wire_code("NoSuchShape"), "NoSuchShape");
    let body = xml::error(
        Some(model),
        xml::Fault::Sender,
        "LoadBalancerNotFound",
        "no <such> balancer",
        "r-1",
    );
    assert_eq!(
        body,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\"><Error><Type>Sender</Type><Code>LoadBalancerNotFound</Code><Message>no &lt;such&gt; balancer</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"
    );
}
