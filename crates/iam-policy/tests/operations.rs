//! The authorization table: which checks each operation yields, and those
//! checks decided against real policies as the edge will decide them.

mod support;

use std::sync::Arc;

use flotilla_iam_policy::operations::{
    checks, operations, registry_check, Check, RegistryOperation, RequestFacts, Service,
};
use flotilla_iam_policy::{
    denial_message, evaluate, CompiledPolicy, Decision, PolicyKind, PrincipalPolicies,
    RequestContext,
};
use support::{principal, ACCOUNT};

const CLUSTER: &str = "arn:aws:ecs:us-east-1:123456789012:cluster/dev";
const TASK_DEFINITION: &str = "arn:aws:ecs:us-east-1:123456789012:task-definition/web:3";
const TASK_ROLE: &str = "arn:aws:iam::123456789012:role/web-task";
const EXECUTION_ROLE: &str = "arn:aws:iam::123456789012:role/ecsTaskExecutionRole";

fn facts() -> RequestFacts {
    RequestFacts {
        region: "us-east-1".into(),
        account: ACCOUNT.into(),
        ..RequestFacts::default()
    }
}

fn keys(check: &Check) -> Vec<(&str, Vec<&str>)> {
    check
        .condition_keys
        .iter()
        .map(|(k, v)| (k.as_str(), v.iter().map(String::as_str).collect()))
        .collect()
}

#[test]
fn run_task_is_authorized_on_the_task_definition_with_the_cluster() {
    let facts = RequestFacts {
        clusters: vec![CLUSTER.into()],
        task_definitions: vec![TASK_DEFINITION.into()],
        capacity_providers: vec!["arn:aws:ecs:us-east-1:123456789012:capacity-provider/spot".into()],
        request_tags: vec![("env".into(), "dev".into())],
        task_roles: vec![TASK_ROLE.into(), EXECUTION_ROLE.into()],
        resource_tags: vec![("team".into(), "web".into())],
        service_keys: vec![("ecs:enable-execute-command".into(), vec!["false".into()])],
        ..facts()
    };
    let got = checks(Service::Ecs, "RunTask", &facts).expect("a rule");
    assert_eq!(got.len(), 4, "{got:#?}");
    assert_eq!(got[0].action, "ecs:RunTask");
    assert_eq!(got[0].resource, TASK_DEFINITION);
    assert_eq!(
        keys(&got[0]),
        vec![
            ("ecs:cluster", vec![CLUSTER]),
            (
                "ecs:capacity-provider",
                vec!["arn:aws:ecs:us-east-1:123456789012:capacity-provider/spot"]
            ),
            ("aws:RequestTag/env", vec!["dev"]),
            ("aws:TagKeys", vec!["env"]),
            ("aws:ResourceTag/team", vec!["web"]),
            ("ecs:enable-execute-command", vec!["false"]),
        ]
    );
    assert_eq!(got[1].action, "ecs:TagResource");
    assert_eq!(keys(&got[1])[0], ("ecs:CreateAction", vec!["RunTask"]));
    assert_eq!(
        (got[2].action.as_str(), got[2].resource.as_str()),
        ("iam:PassRole", TASK_ROLE)
    );
    assert_eq!(
        keys(&got[2]),
        vec![("iam:PassedToService", vec!["ecs-tasks.amazonaws.com"])]
    );
    assert_eq!(got[3].resource, EXECUTION_ROLE);
}

/// An operation, its facts, and the (action, resource) checks expected.
type Row<'a> = (Service, &'a str, RequestFacts, Vec<(&'a str, &'a str)>);

#[test]
fn table_rows() {
    let task = "arn:aws:ecs:us-east-1:123456789012:task/dev/0123";
    let service = "arn:aws:ecs:us-east-1:123456789012:service/dev/web";
    let repository = "arn:aws:ecr:us-east-1:123456789012:repository/app";
    let rows: Vec<Row> = vec![
        (
            Service::Ecs,
            "StopTask",
            RequestFacts {
                clusters: vec![CLUSTER.into()],
                tasks: vec![task.into()],
                ..facts()
            },
            vec![("ecs:StopTask", task)],
        ),
        (
            Service::Ecs,
            "DescribeTasks",
            RequestFacts {
                tasks: vec![task.into(), format!("{task}9")],
                ..facts()
            },
            vec![
                ("ecs:DescribeTasks", task),
                (
                    "ecs:DescribeTasks",
                    "arn:aws:ecs:us-east-1:123456789012:task/dev/01239",
                ),
            ],
        ),
        (
            Service::Ecs,
            "DescribeTaskDefinition",
            RequestFacts {
                task_definitions: vec![TASK_DEFINITION.into()],
                ..facts()
            },
            vec![("ecs:DescribeTaskDefinition", "*")],
        ),
        (
            Service::Ecs,
            "ListTaskDefinitions",
            facts(),
            vec![("ecs:ListTaskDefinitions", "*")],
        ),
        (
            Service::Ecs,
            "ListTaskDefinitionFamilies",
            facts(),
            vec![("ecs:ListTaskDefinitionFamilies", "*")],
        ),
        (
            Service::Ecs,
            "DeregisterTaskDefinition",
            RequestFacts {
                task_definitions: vec![TASK_DEFINITION.into()],
                ..facts()
            },
            vec![("ecs:DeregisterTaskDefinition", TASK_DEFINITION)],
        ),
        (
            Service::Ecs,
            "UpdateService",
            RequestFacts {
                services: vec![service.into()],
                clusters: vec![CLUSTER.into()],
                ..facts()
            },
            vec![("ecs:UpdateService", service)],
        ),
        (
            Service::Ecs,
            "DeleteService",
            RequestFacts {
                services: vec![service.into()],
                ..facts()
            },
            vec![("ecs:DeleteService", service)],
        ),
        (
            Service::Ecs,
            "DescribeServices",
            RequestFacts {
                services: vec![service.into()],
                ..facts()
            },
            vec![("ecs:DescribeServices", service)],
        ),
        (
            Service::Ecs,
            "ListServices",
            RequestFacts {
                clusters: vec![CLUSTER.into()],
                ..facts()
            },
            vec![("ecs:ListServices", "*")],
        ),
        (
            Service::Ecs,
            "CreateCluster",
            RequestFacts {
                clusters: vec![CLUSTER.into()],
                ..facts()
            },
            vec![("ecs:CreateCluster", CLUSTER)],
        ),
        (
            Service::Ecs,
            "DescribeClusters",
            facts(),
            vec![("ecs:DescribeClusters", "*")],
        ),
        (
            Service::Ecs,
            "ListClusters",
            facts(),
            vec![("ecs:ListClusters", "*")],
        ),
        (
            Service::Ecs,
            "SubmitTaskStateChange",
            RequestFacts {
                clusters: vec![CLUSTER.into()],
                ..facts()
            },
            vec![("ecs:SubmitTaskStateChange", CLUSTER)],
        ),
        (
            Service::Ecs,
            "ExplainPlacement",
            RequestFacts {
                clusters: vec![CLUSTER.into()],
                ..facts()
            },
            vec![("ecs:DescribeClusters", CLUSTER)],
        ),
        (
            Service::Ecs,
            "RegisterTaskDefinition",
            RequestFacts {
                task_roles: vec![TASK_ROLE.into()],
                ..facts()
            },
            vec![
                ("ecs:RegisterTaskDefinition", "*"),
                ("iam:PassRole", TASK_ROLE),
            ],
        ),
        (
            Service::Ecs,
            "CreateService",
            RequestFacts {
                services: vec![service.into()],
                service_roles: vec!["arn:aws:iam::123456789012:role/ecsServiceRole".into()],
                ..facts()
            },
            vec![
                ("ecs:CreateService", service),
                (
                    "iam:PassRole",
                    "arn:aws:iam::123456789012:role/ecsServiceRole",
                ),
            ],
        ),
        (
            Service::Ecs,
            "TagResource",
            RequestFacts {
                tagged_resource: Some(service.into()),
                request_tags: vec![("a".into(), "b".into())],
                ..facts()
            },
            vec![("ecs:TagResource", service)],
        ),
        (
            Service::Ecr,
            "DescribeRepositories",
            facts(),
            vec![(
                "ecr:DescribeRepositories",
                "arn:aws:ecr:us-east-1:123456789012:repository/*",
            )],
        ),
        (
            Service::Ecr,
            "BatchGetImage",
            RequestFacts {
                repositories: vec![repository.into()],
                ..facts()
            },
            vec![("ecr:BatchGetImage", repository)],
        ),
        (
            Service::Ecr,
            "GetAuthorizationToken",
            facts(),
            vec![("ecr:GetAuthorizationToken", "*")],
        ),
        (
            Service::Ecr,
            "SetRepositoryPolicy",
            RequestFacts {
                repositories: vec![repository.into()],
                ..facts()
            },
            vec![("ecr:SetRepositoryPolicy", repository)],
        ),
    ];
    for (service_name, operation, facts, expected) in rows {
        let got = checks(service_name, operation, &facts).unwrap_or_else(|e| panic!("{e}"));
        let got: Vec<(&str, &str)> = got
            .iter()
            .map(|c| (c.action.as_str(), c.resource.as_str()))
            .collect();
        assert_eq!(got, expected, "{operation}");
    }
}

#[test]
fn every_operation_flotilla_answers_has_a_rule() {
    // The operations the control plane and the registry dispatch.
    let ecs = [
        "CreateCluster",
        "DescribeClusters",
        "ListClusters",
        "DeleteCluster",
        "UpdateCluster",
        "UpdateClusterSettings",
        "PutClusterCapacityProviders",
        "CreateCapacityProvider",
        "DescribeCapacityProviders",
        "UpdateCapacityProvider",
        "DeleteCapacityProvider",
        "RegisterTaskDefinition",
        "DescribeTaskDefinition",
        "ListTaskDefinitions",
        "ListTaskDefinitionFamilies",
        "DeregisterTaskDefinition",
        "DeleteTaskDefinitions",
        "RegisterContainerInstance",
        "DeregisterContainerInstance",
        "DescribeContainerInstances",
        "ListContainerInstances",
        "UpdateContainerInstancesState",
        "DiscoverPollEndpoint",
        "RunTask",
        "StartTask",
        "StopTask",
        "DescribeTasks",
        "ListTasks",
        "SubmitTaskStateChange",
        "SubmitContainerStateChange",
        "TagResource",
        "UntagResource",
        "ListTagsForResource",
        "PutAccountSetting",
        "PutAccountSettingDefault",
        "ListAccountSettings",
        "DeleteAccountSetting",
        "PutAttributes",
        "DeleteAttributes",
        "ListAttributes",
        "CreateService",
        "UpdateService",
        "DeleteService",
        "DescribeServices",
        "ListServices",
        "ListServiceDeployments",
        "DescribeServiceDeployments",
        "StopServiceDeployment",
        "ContinueServiceDeployment",
        "UpdateTaskProtection",
        "GetTaskProtection",
        "CreateTaskSet",
        "DescribeTaskSets",
        "ExplainPlacement",
        "ReclaimSpotCapacity",
    ];
    let ecr = [
        "CreateRepository",
        "DescribeRepositories",
        "DeleteRepository",
        "ListImages",
        "DescribeImages",
        "BatchGetImage",
        "BatchDeleteImage",
        "PutImage",
        "BatchCheckLayerAvailability",
        "InitiateLayerUpload",
        "UploadLayerPart",
        "CompleteLayerUpload",
        "GetDownloadUrlForLayer",
        "GetAuthorizationToken",
        "PutImageTagMutability",
        "PutLifecyclePolicy",
        "GetLifecyclePolicy",
        "DeleteLifecyclePolicy",
        "StartLifecyclePolicyPreview",
        "GetLifecyclePolicyPreview",
        "SetRepositoryPolicy",
        "GetRepositoryPolicy",
        "DeleteRepositoryPolicy",
        "TagResource",
        "UntagResource",
        "ListTagsForResource",
    ];
    for (service, names) in [(Service::Ecs, &ecs[..]), (Service::Ecr, &ecr[..])] {
        let listed: Vec<&str> = operations(service).collect();
        for name in names {
            assert!(listed.contains(name), "{service:?} {name} has no rule");
            let got = checks(service, name, &facts()).expect("a rule");
            assert!(!got.is_empty(), "{name} yields no check");
        }
    }
    let error = checks(Service::Ecs, "LaunchRocket", &facts()).expect_err("unknown");
    assert_eq!(
        error.to_string(),
        "no authorization rule for operation LaunchRocket"
    );
}

#[test]
fn registry_protocol_uses_ecr_actions() {
    let repository = "arn:aws:ecr:us-east-1:123456789012:repository/app";
    for (operation, action) in [
        (RegistryOperation::PullManifest, "ecr:BatchGetImage"),
        (RegistryOperation::PullBlob, "ecr:GetDownloadUrlForLayer"),
        (RegistryOperation::PushManifest, "ecr:PutImage"),
        (RegistryOperation::CompleteUpload, "ecr:CompleteLayerUpload"),
    ] {
        assert_eq!(
            registry_check(operation, repository),
            Check {
                action: action.into(),
                resource: repository.into(),
                condition_keys: vec![]
            }
        );
    }
}

/// A user allowed to run tasks only in the `dev` cluster, and to pass only
/// the task role: what the edge does with the table and the evaluator.
#[test]
fn a_user_limited_to_one_cluster() {
    let policy = r#"{"Version": "2012-10-17", "Statement": [
        {"Sid": "RunInDev", "Effect": "Allow", "Action": "ecs:RunTask", "Resource": "arn:aws:ecs:us-east-1:123456789012:task-definition/*",
         "Condition": {"ArnEquals": {"ecs:cluster": "arn:aws:ecs:us-east-1:123456789012:cluster/dev"}}},
        {"Sid": "PassTaskRole", "Effect": "Allow", "Action": "iam:PassRole", "Resource": "arn:aws:iam::123456789012:role/web-task",
         "Condition": {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}}]}"#;
    let policies = PrincipalPolicies {
        identity: vec![Arc::new(
            CompiledPolicy::parse("dev-runner", policy, PolicyKind::Managed).expect("valid"),
        )],
        ..PrincipalPolicies::default()
    };
    let decide = |cluster: &str, roles: Vec<String>| -> Result<(), String> {
        let facts = RequestFacts {
            clusters: vec![cluster.into()],
            task_definitions: vec![TASK_DEFINITION.into()],
            task_roles: roles,
            ..facts()
        };
        for check in checks(Service::Ecs, "RunTask", &facts).expect("a rule") {
            let mut context = RequestContext::new(
                principal(None),
                &check.action,
                &check.resource,
                1_714_564_800_000,
            );
            for (key, values) in &check.condition_keys {
                context.set(key, values.clone());
            }
            if let Decision::Deny(denied) = evaluate(&context, &policies, None) {
                return Err(denial_message(&context, &denied));
            }
        }
        Ok(())
    };
    assert_eq!(decide(CLUSTER, vec![TASK_ROLE.into()]), Ok(()));
    assert_eq!(
        decide("arn:aws:ecs:us-east-1:123456789012:cluster/prod", vec![]),
        Err("User: arn:aws:iam::123456789012:user/alice is not authorized to perform: ecs:RunTask on resource: arn:aws:ecs:us-east-1:123456789012:task-definition/web:3 because no identity-based policy allows the ecs:RunTask action".into())
    );
    assert_eq!(
        decide(CLUSTER, vec![EXECUTION_ROLE.into()]),
        Err("User: arn:aws:iam::123456789012:user/alice is not authorized to perform: iam:PassRole on resource: arn:aws:iam::123456789012:role/ecsTaskExecutionRole because no identity-based policy allows the iam:PassRole action".into())
    );
}
