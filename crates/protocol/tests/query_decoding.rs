//! The Query decoder against the STS and ELBv2 models: what each form
//! grammar turns into, and every way a form is refused.

use flotilla_aws as aws;
use flotilla_protocol::form::{Form, Limits, LIMITS};
use flotilla_protocol::query::{self, QueryError};
use serde_json::{json, Value};

fn decode_with(body: &str, limits: &Limits) -> Result<Value, QueryError> {
    let form = Form::parse(body.as_bytes(), limits)?;
    query::decode(&aws::elbv2::MODEL, &form, limits).map(|(_, value)| value)
}

fn decode(body: &str) -> Result<Value, QueryError> {
    decode_with(body, &LIMITS)
}

const HEAD: &str = "Version=2015-12-01&Action=";

#[test]
fn lists_maps_and_nested_structures() {
    let value = decode(&format!(
        "{HEAD}CreateListener&LoadBalancerArn=lb&Port=443\
         &DefaultActions.member.2.Type=forward&DefaultActions.member.2.ForwardConfig.TargetGroups.member.1.Weight=2\
         &DefaultActions.member.1.Type=authenticate-oidc\
         &DefaultActions.member.1.AuthenticateOidcConfig.AuthenticationRequestExtraParams.entry.1.key=display\
         &DefaultActions.member.1.AuthenticateOidcConfig.AuthenticationRequestExtraParams.entry.1.value=page\
         &DefaultActions.member.1.AuthenticateOidcConfig.UseExistingClientSecret=true"
    ))
    .expect("decodes");
    assert_eq!(
        value,
        json!({
            "LoadBalancerArn": "lb",
            "Port": 443,
            "DefaultActions": [
                {"Type": "authenticate-oidc", "AuthenticateOidcConfig": {
                    "AuthenticationRequestExtraParams": {"display": "page"},
                    "UseExistingClientSecret": true}},
                {"Type": "forward", "ForwardConfig": {"TargetGroups": [{"Weight": 2}]}},
            ],
        })
    );
}

#[test]
fn paging_marker_and_empty_list() {
    let value = decode(&format!(
        "{HEAD}DescribeLoadBalancers&Marker=page-2&PageSize=10&Names="
    ))
    .expect("decodes");
    assert_eq!(
        value,
        json!({"Marker": "page-2", "PageSize": 10, "Names": []})
    );
}

#[test]
fn refusals_name_the_problem() {
    let cases: &[(&str, &str, &str)] = &[
        ("Version=2015-12-01", "MissingAction", "The request must contain the parameter Action."),
        ("Action=DescribeLoadBalancers", "MissingParameter", "The request must contain the parameter Version."),
        ("Action=DescribeLoadBalancers&Version=2012-06-01", "InvalidAction",
         "Could not find operation DescribeLoadBalancers for version 2012-06-01. This service speaks version 2015-12-01."),
        ("Action=Nope&Version=2015-12-01", "InvalidAction", "The action Nope is not valid for this web service."),
        ("Action=DescribeLoadBalancers&Version=2015-12-01&PageSize=ten", "ValidationError",
         "Value 'ten' at 'PageSize' failed to satisfy constraint: Member must be an integer"),
        ("Action=DescribeLoadBalancers&Version=2015-12-01&Names.member.1000000000000=a", "ValidationError",
         "list 'Names.member' has an item numbered 1000000000000; a list holds at most 1000 members"),
        ("Action=DescribeLoadBalancers&Version=2015-12-01&Names.member.0=a", "ValidationError",
         "'0' in 'Names.member' is not a list index: items are numbered from 1"),
        ("Action=DescribeLoadBalancers&Version=2015-12-01&Names.member.=a", "ValidationError",
         "'' in 'Names.member' is not a list index: items are numbered from 1"),
        ("Action=DescribeLoadBalancers&Version=2015-12-01&Names.members.1=a", "InvalidParameterValue",
         "Parameter 'Names.members.1' is not a member of DescribeLoadBalancers's input"),
        ("Action=CreateListener&Version=2015-12-01&DefaultActions.member.1.AuthenticateOidcConfig.AuthenticationRequestExtraParams.entry.1.value=v",
         "ValidationError",
         "map entry 'DefaultActions.member.1.AuthenticateOidcConfig.AuthenticationRequestExtraParams.entry.1' has a value but no key"),
        ("Action=DescribeLoadBalancers&Version=2015-12-01&Names.member.1=%ff", "MalformedQueryString",
         "the request body is not valid UTF-8 after percent-decoding parameter 3"),
    ];
    for (body, code, message) in cases {
        let error = decode(body).expect_err(body);
        assert_eq!(
            (error.code(), error.to_string().as_str()),
            (*code, *message),
            "{body}"
        );
    }
}

#[test]
fn ten_thousand_members_are_refused() {
    let members: Vec<String> = (1..=10_000)
        .map(|i| format!("Names.member.{i}=n{i}"))
        .collect();
    let body = format!("{HEAD}DescribeLoadBalancers&{}", members.join("&"));
    let error = decode(&body).expect_err("too many");
    assert_eq!(error.code(), "MalformedQueryString");
    assert_eq!(
        error.to_string(),
        "the request has more than 10000 parameters"
    );
    // Under a higher parameter limit, the list limit speaks.
    let roomy = Limits {
        parameters_max: 20_000,
        ..LIMITS
    };
    let error = decode_with(&body, &roomy).expect_err("too many");
    assert_eq!(
        error.to_string(),
        "list 'Names.member' has an item numbered 10000; a list holds at most 1000 members"
    );
}

#[test]
fn deep_nesting_is_bounded() {
    let shallow = Limits {
        depth_max: 2,
        ..LIMITS
    };
    let body = format!(
        "{HEAD}CreateListener&DefaultActions.member.1.ForwardConfig.TargetGroups.member.1.Weight=2"
    );
    let error = decode_with(&body, &shallow).expect_err("too deep");
    assert_eq!(error.code(), "ValidationError");
    assert!(
        error.to_string().contains("nests deeper than 2 levels"),
        "{error}"
    );
}

#[test]
fn sts_timestamps_and_no_input() {
    let form =
        Form::parse(b"Action=GetCallerIdentity&Version=2011-06-15", &LIMITS).expect("decodes");
    let (operation, value) = query::decode(&aws::sts::MODEL, &form, &LIMITS).expect("decodes");
    assert_eq!(operation.name, "GetCallerIdentity");
    assert_eq!(value, json!({}));
}

/// The stable counterpart of the `query_request` fuzz target: mutations of
/// real forms never panic.
#[test]
fn mutated_forms_never_panic() {
    let seeds = [
        "Action=CreateListener&Version=2015-12-01&DefaultActions.member.1.AuthenticateOidcConfig.AuthenticationRequestExtraParams.entry.1.key=a&DefaultActions.member.1.Type=forward",
        "Action=DescribeLoadBalancers&Version=2015-12-01&Names.member.1=a&PageSize=1&Marker=m",
    ];
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet = b"&=.%+0123456789fFmembrntyk\xff\x00";
    for seed in seeds {
        for _ in 0..2_000 {
            let mut bytes = seed.as_bytes().to_vec();
            for _ in 0..(next() % 6 + 1) {
                let at = (next() as usize) % (bytes.len() + 1);
                match next() % 3 {
                    0 => bytes.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes.truncate(at.max(1)),
                }
            }
            if let Ok(form) = Form::parse(&bytes, &LIMITS) {
                for model in [&aws::elbv2::MODEL, &aws::sts::MODEL, &aws::iam::MODEL] {
                    let _ = query::decode(model, &form, &LIMITS);
                }
            }
        }
    }
}
