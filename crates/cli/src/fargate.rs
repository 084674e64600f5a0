//! `flotilla fargate reclaim-spot`: takes a cluster's FARGATE_SPOT capacity
//! back through the control plane's ReclaimSpotCapacity, as AWS does when it
//! needs Spot capacity, and prints the tasks interrupted.

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use flotilla_agent::api::{AgentCredentials, ApiClient, Endpoint};
use flotilla_types::flotilla::{
    ReclaimSpotCapacityRequest, ReclaimSpotCapacityResponse, TARGET_PREFIX,
};

#[derive(Subcommand)]
pub enum FargateCommand {
    /// Interrupt a cluster's FARGATE_SPOT tasks: each gets Spot's warning
    /// (SIGTERM, then its containers' stopTimeout) and stops with stop code
    /// SpotInterruption; services replace them.
    ReclaimSpot(ReclaimArgs),
}

#[derive(Args)]
pub struct ReclaimArgs {
    /// The control plane's API.
    #[arg(long, default_value = "http://127.0.0.1:8440")]
    endpoint: String,
    /// Region to sign requests for [default: as the AWS CLI finds it].
    #[arg(long)]
    region: Option<String>,
    /// Cluster (name or ARN).
    #[arg(long, default_value = "default")]
    cluster: String,
    /// How many FARGATE_SPOT tasks to interrupt [default: all].
    #[arg(long)]
    count: Option<i32>,
}

pub async fn run(command: FargateCommand) -> Result<()> {
    let FargateCommand::ReclaimSpot(args) = command;
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
    let request = ReclaimSpotCapacityRequest {
        cluster: Some(args.cluster),
        count: args.count,
    };
    let response: ReclaimSpotCapacityResponse = client
        .call_target(TARGET_PREFIX, "ReclaimSpotCapacity", &request)
        .await
        .context("reclaiming Spot capacity")?;
    for arn in &response.interrupted_tasks {
        println!("{arn}");
    }
    Ok(())
}
