//! `flotilla`: the one binary. Each subcommand wires the library crates
//! together; no logic of its own lives here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use flotilla_control::{Caller, Ecs};
use flotilla_edge::{Edge, Metrics, RandomIds, SystemClock};
use flotilla_sigv4::Credentials;
use flotilla_store::{RedbStore, Store};
use flotilla_types::arn::Scope;

const DEFAULT_LISTEN: &str = "127.0.0.1:8440";

#[derive(Parser)]
#[command(name = "flotilla", version, about = "A self-hosted container orchestrator that speaks the Amazon ECS API")]
struct Cli {
    /// Log format: `text` for people, `json` for machines.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane alone: the API edge on its embedded store.
    Server(ServerArgs),
    /// Run the control plane plus every local part, for one machine.
    Up(ServerArgs),
}

#[derive(Args)]
struct ServerArgs {
    /// Address the API listens on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Directory of the embedded store [default: $HOME/.local/share/flotilla].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Region every ARN names and every signature must be scoped to.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Account id every ARN names.
    #[arg(long, default_value = "000000000000")]
    account_id: String,
    /// JSON file of accepted credentials:
    /// {"credentials": [{"accessKeyId": "...", "secretAccessKey": "...", "principalArn": "..."}]}.
    /// Without it, the local pair test/test is accepted.
    #[arg(long)]
    credentials_file: Option<PathBuf>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Server(args) => serve(args, false).await,
            Command::Up(args) => serve(args, true).await,
        }
    })
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn default_data_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/flotilla")
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct CredentialsFile {
    credentials: Vec<CredentialEntry>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct CredentialEntry {
    access_key_id: String,
    secret_access_key: String,
    principal_arn: Option<String>,
}

/// The accepted credentials and the principal each acts as.
fn load_credentials(path: Option<&Path>) -> Result<(Credentials, HashMap<String, String>)> {
    let entries = match path {
        None => vec![CredentialEntry {
            access_key_id: flotilla_edge::DEFAULT_ACCESS_KEY_ID.to_owned(),
            secret_access_key: flotilla_edge::DEFAULT_SECRET_ACCESS_KEY.to_owned(),
            principal_arn: None,
        }],
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading credentials file {}", path.display()))?;
            let file: CredentialsFile = serde_json::from_str(&text)
                .with_context(|| format!("parsing credentials file {}", path.display()))?;
            file.credentials
        }
    };
    let principals = entries
        .iter()
        .filter_map(|e| e.principal_arn.clone().map(|arn| (e.access_key_id.clone(), arn)))
        .collect();
    let pairs = entries.into_iter().map(|e| (e.access_key_id, e.secret_access_key));
    let credentials = Credentials::from_pairs(pairs).context("loading credentials")?;
    Ok((credentials, principals))
}

async fn serve(args: ServerArgs, local_parts: bool) -> Result<()> {
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let store_path = data_dir.join("state.redb");
    let store: Arc<dyn Store> = Arc::new(
        RedbStore::open(&store_path).with_context(|| format!("opening store {}", store_path.display()))?,
    );
    let scope = Scope::new(&args.region, &args.account_id);
    let ecs = Arc::new(Ecs::new(Arc::clone(&store), scope, Arc::new(SystemClock), Arc::new(RandomIds)));
    let (credentials, principals) = load_credentials(args.credentials_file.as_deref())?;
    if local_parts {
        ensure_default_cluster(&ecs).await?;
    }
    let edge = Arc::new(Edge {
        ecs,
        credentials: Arc::new(credentials),
        clock: Arc::new(SystemClock),
        ids: Arc::new(RandomIds),
        metrics: Metrics::default(),
        principals,
        store: Arc::clone(&store),
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, data_dir = %data_dir.display(), region = %args.region, "flotilla is serving");
    println!("Flotilla is serving the ECS API at http://{address}");
    if args.credentials_file.is_none() {
        println!("Point the AWS CLI at it:");
        println!("  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION={}", args.region);
        println!("  aws --endpoint-url http://{address} ecs list-clusters");
    }
    axum::serve(listener, flotilla_edge::router(edge))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving the API")?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// The local machine gets the cluster ECS users expect to find.
async fn ensure_default_cluster(ecs: &Ecs) -> Result<()> {
    let local = Caller {
        access_key_id: flotilla_edge::DEFAULT_ACCESS_KEY_ID.to_owned(),
        principal_arn: format!("arn:aws:iam::{}:root", ecs.scope().account_id),
    };
    let request = flotilla_types::ecs::EcsRequest::CreateCluster(Default::default());
    ecs.handle(&local, request).await.map_err(|error| anyhow::anyhow!("creating the default cluster: {error}"))?;
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
}
