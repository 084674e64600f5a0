//! `flotilla placement explain`: asks the control plane's ExplainPlacement
//! where RunTask would place a task and why every other instance was left
//! out, and prints one line per instance.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use flotilla_agent::api::{AgentCredentials, ApiClient, Endpoint};
use flotilla_types::ecs::{
    LaunchType, PlacementConstraint, PlacementConstraintType, PlacementStrategy,
    PlacementStrategyType,
};
use flotilla_types::flotilla::{
    ExplainPlacementRequest, ExplainPlacementResponse, PlacementOutcome, TARGET_PREFIX,
};

#[derive(Subcommand)]
pub enum PlacementCommand {
    /// Where RunTask would place a task, and why each instance would or would not take it.
    Explain(ExplainArgs),
}

#[derive(Args)]
pub struct ExplainArgs {
    /// The control plane's API.
    #[arg(long, default_value = "http://127.0.0.1:8440")]
    endpoint: String,
    /// Region to sign requests for [default: as the AWS CLI finds it].
    #[arg(long)]
    region: Option<String>,
    /// Cluster (name or ARN).
    #[arg(long, default_value = "default")]
    cluster: String,
    /// Task definition (family, family:revision or ARN).
    #[arg(long)]
    task_definition: String,
    /// How many tasks RunTask would start.
    #[arg(long, default_value_t = 1)]
    count: i32,
    /// A placement strategy, `type=spread,field=attribute:ecs.availability-zone`; repeat to chain.
    #[arg(long = "strategy", value_parser = parse_strategy)]
    strategies: Vec<PlacementStrategy>,
    /// A placement constraint, `memberOf:EXPRESSION` or `distinctInstance`; repeat for more.
    #[arg(long = "constraint", value_parser = parse_constraint)]
    constraints: Vec<PlacementConstraint>,
    /// EC2 or EXTERNAL.
    #[arg(long, default_value = "EC2", value_parser = parse_launch_type)]
    launch_type: LaunchType,
    /// Task group [default: family:FAMILY].
    #[arg(long)]
    group: Option<String>,
}

/// `type=T[,field=F]`, as the AWS CLI's shorthand writes a strategy.
fn parse_strategy(text: &str) -> Result<PlacementStrategy, String> {
    let mut strategy = PlacementStrategy::default();
    for pair in text.split(',') {
        // Only the first `=` separates: a field may hold none, but a value might.
        match pair.split_once('=') {
            Some(("type", kind)) => {
                strategy.r#type = Some(match kind.to_ascii_lowercase().as_str() {
                    "spread" => PlacementStrategyType::Spread,
                    "binpack" => PlacementStrategyType::Binpack,
                    "random" => PlacementStrategyType::Random,
                    other => {
                        return Err(format!(
                            "unknown strategy type {other:?}: spread, binpack or random"
                        ))
                    }
                })
            }
            Some(("field", field)) => strategy.field = Some(field.to_owned()),
            _ => {
                return Err(format!(
                    "{pair:?}: write type=spread|binpack|random[,field=FIELD]"
                ))
            }
        }
    }
    if strategy.r#type.is_none() {
        return Err("a strategy needs type=...".to_owned());
    }
    Ok(strategy)
}

/// `distinctInstance` or `memberOf:EXPRESSION`.
fn parse_constraint(text: &str) -> Result<PlacementConstraint, String> {
    if text.trim() == "distinctInstance" {
        return Ok(PlacementConstraint {
            r#type: Some(PlacementConstraintType::DistinctInstance),
            expression: None,
        });
    }
    match text.split_once(':') {
        Some(("memberOf", expression)) => Ok(PlacementConstraint {
            r#type: Some(PlacementConstraintType::MemberOf),
            expression: Some(expression.to_owned()),
        }),
        _ => Err(format!(
            "{text:?}: write distinctInstance or memberOf:EXPRESSION"
        )),
    }
}

fn parse_launch_type(text: &str) -> Result<LaunchType, String> {
    match text.to_ascii_uppercase().as_str() {
        "EC2" => Ok(LaunchType::Ec2),
        "EXTERNAL" => Ok(LaunchType::External),
        other => Err(format!("launch type {other:?}: EC2 or EXTERNAL")),
    }
}

pub async fn run(command: PlacementCommand) -> Result<()> {
    let PlacementCommand::Explain(args) = command;
    let endpoint = Endpoint::parse(&args.endpoint)?;
    let credentials = AgentCredentials {
        access_key_id: std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".to_owned()),
        secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY")
            .unwrap_or_else(|_| "test".to_owned()),
    };
    let client = ApiClient::new(
        endpoint,
        credentials,
        crate::resolve_region(args.region.as_deref())?.name,
        Arc::new(flotilla_agent::clock::SystemClock),
    );
    let request = ExplainPlacementRequest {
        cluster: Some(args.cluster.clone()),
        task_definition: Some(args.task_definition.clone()),
        count: Some(args.count),
        launch_type: Some(args.launch_type),
        placement_strategy: Some(args.strategies),
        placement_constraints: Some(args.constraints),
        group: args.group,
    };
    let response: ExplainPlacementResponse = client
        .call_target(TARGET_PREFIX, "ExplainPlacement", &request)
        .await
        .context("explaining placement")?;
    print!("{}", table(&response, args.count));
    if response.instances.is_empty() {
        bail!("cluster {} has no container instances", args.cluster);
    }
    Ok(())
}

/// One line per instance: its id, the verdict, the step and why.
fn table(response: &ExplainPlacementResponse, count: i32) -> String {
    let mut text = format!(
        "{:<36}  {:<13}  {:<11}  WHY\n",
        "INSTANCE", "OUTCOME", "STEP"
    );
    let id_of = |arn: &str| arn.rsplit('/').next().unwrap_or(arn).to_owned();
    for verdict in &response.instances {
        let outcome = match verdict.outcome {
            PlacementOutcome::Chosen => "CHOSEN",
            PlacementOutcome::NotPreferred => "NOT_PREFERRED",
            PlacementOutcome::Excluded => "EXCLUDED",
        };
        let why = match (&verdict.reason, &verdict.detail) {
            (Some(reason), Some(detail)) if !detail.is_empty() => format!("{reason}: {detail}"),
            (Some(reason), _) => reason.clone(),
            (None, _) if verdict.outcome == PlacementOutcome::Chosen => {
                "the first task goes here".to_owned()
            }
            (None, _) => "fits; the strategies preferred another".to_owned(),
        };
        text.push_str(&format!(
            "{:<36}  {outcome:<13}  {:<11}  {why}\n",
            id_of(&verdict.container_instance_arn),
            verdict.step
        ));
    }
    let placed: Vec<String> = response.placements.iter().map(|arn| id_of(arn)).collect();
    text.push_str(&format!(
        "{} of {count} task(s) placed: {}\n",
        placed.len(),
        if placed.is_empty() {
            "none".to_owned()
        } else {
            placed.join(", ")
        }
    ));
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn strategies_and_constraints_parse_from_the_shorthand() {
        let strategy = parse_strategy("type=spread,field=attribute:ecs.availability-zone").unwrap();
        assert_eq!(strategy.r#type, Some(PlacementStrategyType::Spread));
        assert_eq!(
            strategy.field.as_deref(),
            Some("attribute:ecs.availability-zone")
        );
        assert!(parse_strategy("field=cpu").is_err());
        let constraint = parse_constraint("memberOf:attribute:ecs.availability-zone != a").unwrap();
        assert_eq!(
            constraint.expression.as_deref(),
            Some("attribute:ecs.availability-zone != a")
        );
        assert_eq!(
            parse_constraint("distinctInstance").unwrap().r#type,
            Some(PlacementConstraintType::DistinctInstance)
        );
        assert!(parse_constraint("sameZone").is_err());
    }
}
