//! `flotilla lb --config FILE`: a load balancer data plane serving the
//! snapshot in FILE, re-read when the file changes or on SIGHUP; or
//! `flotilla lb --control URL`: serving the control plane's ELBv2 load
//! balancers, pulled as snapshots, with target health reported back.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use flotilla_agent::api::{AgentCredentials, ApiClient, Endpoint};
use flotilla_elbv2::remote::{
    GetSnapshotRequest, GetSnapshotResponse, ReportTargetHealthRequest, ReportTargetHealthResponse,
    ReportedTarget, TARGET_PREFIX,
};
use flotilla_elbv2::CertificateSource;
use flotilla_lb::edge::SystemClock;
use flotilla_lb::DataPlane;

/// What the data plane operations are signed for, as ELBv2's are.
const SIGNING_NAME: &str = "elasticloadbalancing";

#[derive(Args)]
pub struct LbArgs {
    /// The configuration snapshot, JSON or YAML (`.yaml`/`.yml`).
    #[arg(long, required_unless_present = "control", conflicts_with = "control")]
    config: Option<PathBuf>,
    /// The control plane (e.g. http://10.0.0.1:8440; several replicas'
    /// addresses comma-separated, the next used when one is unreachable)
    /// whose ELBv2 load balancers to serve: snapshots are pulled from it and target health
    /// reported to it, signed with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
    /// (test/test by default). The last snapshot keeps serving while it is
    /// unreachable.
    #[arg(long, value_name = "URL")]
    control: Option<String>,
    /// Region to sign requests to the control plane for [default: as the
    /// AWS CLI finds it].
    #[arg(long)]
    region: Option<String>,
    /// Address of `/metrics` (Prometheus), `/targets` (target health as
    /// JSON) and `/health`.
    #[arg(long, default_value = "127.0.0.1:9464")]
    admin_listen: SocketAddr,
    /// Threads that carry traffic [default: one per core].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=flotilla_lb::WORKERS_MAX as i64))]
    workers: Option<u16>,
}

pub async fn run(args: LbArgs) -> Result<()> {
    let clock = Arc::new(SystemClock);
    let plane = match args.workers {
        Some(workers) => DataPlane::with_workers(clock, usize::from(workers)),
        None => DataPlane::new(clock),
    }
    .context("starting the data plane's worker threads")?;
    if let Some(config) = &args.config {
        if !flotilla_lb::source::load_and_apply(&plane, config).await {
            bail!("the configuration in {} was refused", config.display());
        }
    }
    let admin = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("listening on {}", args.admin_listen))?;
    let source = match (&args.config, &args.control) {
        (Some(config), _) => config.display().to_string(),
        (None, Some(control)) => format!("the load balancers of {control}"),
        (None, None) => bail!("give --config FILE or --control URL"),
    };
    println!(
        "Flotilla's load balancer is serving {source} (metrics at http://{}/metrics)",
        admin.local_addr()?
    );
    let supervisor = flotilla_control::Supervisor::default();
    // A restarted admin server serves the same socket.
    let admin = admin.into_std().context("taking the admin socket")?;
    supervisor.spawn("lb_admin", {
        let plane = plane.clone();
        move || {
            let plane = plane.clone();
            let admin = admin
                .try_clone()
                .and_then(tokio::net::TcpListener::from_std);
            async move {
                match admin {
                    Ok(admin) => flotilla_lb::admin::serve_admin(admin, plane).await,
                    Err(error) => tracing::error!(%error, "the admin socket is gone"),
                }
            }
        }
    });
    let Some(config) = args.config else {
        let control = args.control.unwrap_or_default();
        let client = control_client(&control, args.region.as_deref())?;
        supervisor.spawn("lb_pull_snapshots", {
            let (client, plane) = (client.clone(), plane.clone());
            move || pull_snapshots(client.clone(), plane.clone())
        });
        supervisor.spawn("lb_report_health", {
            let plane = plane.clone();
            move || report_health(client.clone(), plane.clone())
        });
        crate::shutdown_signal().await;
        return Ok(());
    };
    let (reload, reloads) = tokio::sync::mpsc::channel(1);
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP")?;
    let mut first = Some(hangups);
    supervisor.spawn("lb_reload_signal", move || {
        let hangups = first.take().map(Ok).unwrap_or_else(|| {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        });
        let reload = reload.clone();
        async move {
            let mut hangups = match hangups {
                Ok(hangups) => hangups,
                Err(error) => {
                    tracing::error!(%error, "listening for SIGHUP failed");
                    return;
                }
            };
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: re-reading the configuration");
                let _ = reload.try_send(());
            }
        }
    });
    tokio::select! {
        () = flotilla_lb::source::follow_file(plane, config, reloads) => {}
        () = crate::shutdown_signal() => {}
    }
    Ok(())
}

/// How often a `--control` data plane asks for a newer snapshot and
/// reports its targets' health.
const PULL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
const REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

fn control_client(control: &str, region: Option<&str>) -> Result<ApiClient> {
    let endpoints = Endpoint::parse_list(control)?;
    let credentials = AgentCredentials {
        access_key_id: std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".to_owned()),
        secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY")
            .unwrap_or_else(|_| "test".to_owned()),
    };
    Ok(ApiClient::with_endpoints(
        endpoints,
        credentials,
        crate::resolve_region(region)?.name,
        Arc::new(flotilla_agent::clock::SystemClock),
    ))
}

/// Applies every newer snapshot the control plane has; while it cannot be
/// reached, the last one applied keeps serving.
async fn pull_snapshots(client: ApiClient, plane: DataPlane) {
    let mut reachable = true;
    loop {
        let request = GetSnapshotRequest {
            known_version: plane.version(),
        };
        let answer: Result<GetSnapshotResponse, _> = client
            .call_signed(TARGET_PREFIX, SIGNING_NAME, "GetSnapshot", &request)
            .await;
        match answer {
            Ok(response) => {
                if !reachable {
                    tracing::info!("control plane reachable again");
                }
                reachable = true;
                if let Some(snapshot) = response.snapshot {
                    flotilla_elbv2::plane::apply_serving_what_binds(&plane, snapshot).await;
                }
            }
            Err(error) => {
                if reachable {
                    tracing::warn!(%error, "control plane unreachable; serving the last configuration");
                }
                reachable = false;
            }
        }
        tokio::time::sleep(PULL_INTERVAL).await;
    }
}

/// Reports every target's health to the control plane, for DescribeTargetHealth.
async fn report_health(client: ApiClient, plane: DataPlane) {
    loop {
        tokio::time::sleep(REPORT_INTERVAL).await;
        let targets = plane
            .target_health()
            .await
            .into_iter()
            .map(|described| ReportedTarget {
                target_group_arn: described.target_group,
                id: described.target.id,
                port: described.target.port,
                health: serde_json::to_value(&described.health)
                    .ok()
                    .and_then(|value| serde_json::from_value(value).ok())
                    .unwrap_or_default(),
            })
            .collect();
        let request = ReportTargetHealthRequest { targets };
        let answer: Result<ReportTargetHealthResponse, _> = client
            .call_signed(TARGET_PREFIX, SIGNING_NAME, "ReportTargetHealth", &request)
            .await;
        if let Err(error) = answer {
            tracing::debug!(%error, "reporting target health failed");
        }
    }
}

/// HTTPS listeners serve IAM's server certificates.
struct ServerCertificates {
    iam: Arc<flotilla_iam::Iam>,
}

impl CertificateSource for ServerCertificates {
    fn certificate(
        &self,
        arn: &str,
    ) -> Result<Option<flotilla_lb::config::Certificate>, flotilla_types::ApiError> {
        Ok(self
            .iam
            .server_certificate_pem(arn)?
            .map(|pem| flotilla_lb::config::Certificate {
                certificate_pem: pem.certificate_pem,
                private_key_pem: pem.private_key_pem,
            }))
    }
}

/// IAM refuses to delete a server certificate a listener serves.
struct ListenersServing {
    elbv2: std::sync::Weak<flotilla_elbv2::Elbv2>,
}

impl flotilla_iam::CertificateUsers for ListenersServing {
    fn users(&self, arn: &str) -> Result<Vec<String>, flotilla_types::ApiError> {
        match self.elbv2.upgrade() {
            Some(elbv2) => elbv2.listeners_serving(arn),
            None => Ok(Vec::new()),
        }
    }
}

/// The ELBv2 API over `store`, and a data plane in this process serving
/// what it keeps: `flotilla up` and `flotilla server` carry their load
/// balancers' traffic themselves.
pub fn start_embedded_data_plane(
    supervisor: &flotilla_control::Supervisor,
    ecs: &flotilla_control::Ecs,
    iam: Arc<flotilla_iam::Iam>,
    store: Arc<dyn flotilla_store::Store>,
    scope: flotilla_types::arn::Scope,
    embedded: bool,
) -> Result<Arc<flotilla_elbv2::Elbv2>> {
    let certificates = Arc::new(ServerCertificates {
        iam: Arc::clone(&iam),
    }) as Arc<dyn CertificateSource>;
    let serving = |elbv2: &Arc<flotilla_elbv2::Elbv2>| {
        iam.set_certificate_users(Arc::new(ListenersServing {
            elbv2: Arc::downgrade(elbv2),
        }));
    };
    if !embedded {
        let elbv2 =
            Arc::new(flotilla_elbv2::Elbv2::new(store, scope).with_certificates(certificates));
        ecs.set_target_groups(Arc::new(crate::service_targets::ServiceTargetGroups {
            elbv2: Arc::clone(&elbv2),
        }));
        serving(&elbv2);
        return Ok(elbv2);
    }
    let plane = DataPlane::new(Arc::new(SystemClock))
        .context("starting the load balancer data plane's worker threads")?;
    let health = Arc::new(flotilla_elbv2::plane::HealthCache::default());
    let elbv2 = Arc::new(
        flotilla_elbv2::Elbv2::new(store, scope)
            .with_certificates(certificates)
            .with_health(Arc::clone(&health) as Arc<dyn flotilla_elbv2::HealthSource>),
    );
    // What the embedded data plane carries shows in CloudWatch, for alarms
    // and ALBRequestCountPerTarget scaling.
    ecs.add_minute_source(Arc::new(
        flotilla_elbv2::cloudwatch::LoadBalancerMetrics::new(Arc::clone(&elbv2), plane.metrics()),
    ));
    ecs.set_target_groups(Arc::new(crate::service_targets::ServiceTargetGroups {
        elbv2: Arc::clone(&elbv2),
    }));
    supervisor.spawn("elbv2_data_plane", {
        let elbv2 = Arc::clone(&elbv2);
        move || flotilla_elbv2::plane::feed(Arc::clone(&elbv2), plane.clone(), Arc::clone(&health))
    });
    serving(&elbv2);
    Ok(elbv2)
}
