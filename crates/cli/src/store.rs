//! `--store`: which backend holds the control plane's state, the embedded
//! redb file in the data directory (the default) or an etcd cluster.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use flotilla_store::etcd::{EtcdPassword, EtcdPrivateKey, EtcdTls};
use flotilla_store::{EtcdOptions, EtcdStore, RedbStore, Store};

/// Not `Debug`: it holds the etcd password.
#[derive(Args)]
pub struct StoreArgs {
    /// Where the state lives: `etcd://HOST:PORT[,HOST:PORT...]` for an etcd
    /// v3 cluster (any of its members' client addresses) [default: the
    /// embedded store, state.redb in --data-dir].
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Prefix of every key in etcd, so that one etcd can hold several
    /// control planes or other data.
    #[arg(long, value_name = "PREFIX", default_value = flotilla_store::etcd::DEFAULT_NAMESPACE)]
    etcd_namespace: String,
    /// PEM file of the authorities that sign etcd's server certificates;
    /// connects with TLS (as `etcdctl --cacert`).
    #[arg(long, value_name = "FILE")]
    etcd_cacert: Option<PathBuf>,
    /// PEM client certificate for etcd's `--client-cert-auth` (with --etcd-key).
    #[arg(long, value_name = "FILE", requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,
    /// PEM private key of --etcd-cert.
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// User for etcd's authentication; the password comes from
    /// FLOTILLA_ETCD_PASSWORD.
    #[arg(long, value_name = "NAME")]
    etcd_user: Option<String>,
    #[arg(
        long,
        env = "FLOTILLA_ETCD_PASSWORD",
        hide = true,
        hide_env_values = true
    )]
    etcd_password: Option<String>,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// Opens the store `args` name; the embedded one at `data_dir/state.redb`
/// without `--store`.
pub async fn open(args: &StoreArgs, data_dir: &Path) -> Result<Arc<dyn Store>> {
    let Some(url) = &args.store else {
        let etcd_flags =
            args.etcd_cacert.is_some() || args.etcd_cert.is_some() || args.etcd_user.is_some();
        if etcd_flags {
            bail!("--etcd-cacert, --etcd-cert and --etcd-user need --store etcd://...");
        }
        let path = data_dir.join("state.redb");
        let store =
            RedbStore::open(&path).with_context(|| format!("opening store {}", path.display()))?;
        return Ok(Arc::new(store));
    };
    let mut options = EtcdOptions::from_url(url)?;
    options.namespace = args.etcd_namespace.clone();
    if let Some(user) = &args.etcd_user {
        let Some(password) = &args.etcd_password else {
            bail!("--etcd-user {user} needs its password in FLOTILLA_ETCD_PASSWORD");
        };
        options.user = Some((user.clone(), EtcdPassword::new(password.clone())));
    }
    let identity = match (&args.etcd_cert, &args.etcd_key) {
        (Some(cert), Some(key)) => Some((
            read(cert, "etcd client certificate")?,
            EtcdPrivateKey::from_pem(read(key, "etcd client key")?),
        )),
        _ => None,
    };
    if args.etcd_cacert.is_some() || identity.is_some() {
        options.tls = Some(EtcdTls {
            ca_pem: match &args.etcd_cacert {
                Some(path) => Some(read(path, "etcd CA certificate")?),
                None => None,
            },
            client_identity: identity,
            domain_name: None,
        });
    }
    let store = EtcdStore::connect(options)
        .await
        .with_context(|| format!("opening store {url}"))?;
    Ok(Arc::new(store))
}
