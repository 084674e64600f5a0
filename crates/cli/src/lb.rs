//! `flotilla lb --config FILE`: a load balancer data plane serving the
//! snapshot in FILE, re-read when the file changes or on SIGHUP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use flotilla_lb::edge::SystemClock;
use flotilla_lb::DataPlane;

#[derive(Args)]
pub struct LbArgs {
    /// The configuration snapshot, JSON or YAML (`.yaml`/`.yml`).
    #[arg(long)]
    config: PathBuf,
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
    if !flotilla_lb::source::load_and_apply(&plane, &args.config).await {
        bail!("the configuration in {} was refused", args.config.display());
    }
    let admin = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("listening on {}", args.admin_listen))?;
    println!(
        "Flotilla's load balancer is serving {} (metrics at http://{}/metrics)",
        args.config.display(),
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
        () = flotilla_lb::source::follow_file(plane, args.config, reloads) => {}
        () = crate::shutdown_signal() => {}
    }
    Ok(())
}

/// The ELBv2 API over `store`, and a data plane in this process serving
/// what it keeps: `flotilla up` and `flotilla server` carry their load
/// balancers' traffic themselves.
pub fn start_embedded_data_plane(
    supervisor: &flotilla_control::Supervisor,
    store: Arc<dyn flotilla_store::Store>,
    scope: flotilla_types::arn::Scope,
) -> Result<Arc<flotilla_elbv2::Elbv2>> {
    let plane = DataPlane::new(Arc::new(SystemClock))
        .context("starting the load balancer data plane's worker threads")?;
    let health = Arc::new(flotilla_elbv2::plane::HealthCache::default());
    let elbv2 = Arc::new(
        flotilla_elbv2::Elbv2::new(store, scope)
            .with_health(Arc::clone(&health) as Arc<dyn flotilla_elbv2::HealthSource>),
    );
    supervisor.spawn("elbv2_data_plane", {
        let elbv2 = Arc::clone(&elbv2);
        move || flotilla_elbv2::plane::feed(Arc::clone(&elbv2), plane.clone(), Arc::clone(&health))
    });
    Ok(elbv2)
}
