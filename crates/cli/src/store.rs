//! `--store`: which backend holds the control plane's state, the embedded
//! redb file in the data directory (the default) or an etcd cluster.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use flotilla_store::etcd::{EtcdPassword, EtcdPrivateKey, EtcdTls};
use flotilla_store::{
    Election, EtcdOptions, EtcdStore, FencedStore, RedbStore, SoleReplica, Store,
};

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
    /// How long a replica's etcd lease lasts without a keep-alive: how
    /// long the loops a dead replica led stay unled before another replica
    /// takes them over, and how soon a replica cut off from etcd stops
    /// leading and writing.
    #[arg(long, value_name = "SECONDS", default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..=60))]
    leader_lease_seconds: u64,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// Opens the store `args` name; the embedded one at `data_dir/state.redb`
/// without `--store`.
/// The store and the election among the replicas sharing it: the embedded
/// store has one replica, which leads everything; on etcd, replicas elect
/// a leader for each loop with leases of `--leader-lease-seconds`.
pub struct Opened {
    pub store: Arc<dyn Store>,
    pub election: Arc<dyn Election>,
}

/// Opens the store `args` name (see [`open`]) with its election, this
/// replica announcing itself as `replica_id`, reachable at `endpoint`.
pub async fn open_replica(
    args: &StoreArgs,
    data_dir: &Path,
    replica_id: String,
    endpoint: String,
) -> Result<Opened> {
    match &args.store {
        // One replica leads every loop for good: nothing to fence, and the
        // embedded store's commits stay as they were.
        None => Ok(Opened {
            store: open(args, data_dir).await?,
            election: Arc::new(SoleReplica::new(replica_id)),
        }),
        Some(_) => {
            let store = connect_etcd(args).await?;
            let election: Arc<dyn Election> = Arc::new(store.election(
                replica_id,
                endpoint,
                std::time::Duration::from_secs(args.leader_lease_seconds),
            ));
            Ok(Opened {
                store: Arc::new(FencedStore::new(Arc::new(store), Arc::clone(&election))),
                election,
            })
        }
    }
}

pub async fn open(args: &StoreArgs, data_dir: &Path) -> Result<Arc<dyn Store>> {
    let Some(_) = &args.store else {
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
    Ok(Arc::new(connect_etcd(args).await?))
}

/// Connects to the etcd `--store` names.
pub async fn connect_etcd(args: &StoreArgs) -> Result<EtcdStore> {
    let Some(url) = &args.store else {
        bail!("no --store etcd://... given");
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
    EtcdStore::connect(options)
        .await
        .with_context(|| format!("opening store {url}"))
}

/// `flotilla store migrate`: copies the embedded store of a data directory
/// into an empty etcd namespace.
#[derive(Args)]
pub struct MigrateArgs {
    /// The data directory whose embedded store (state.redb) to copy. Stop
    /// the server that uses it first.
    #[arg(long, value_name = "DIR")]
    from: PathBuf,
    /// The etcd to copy into (`--store etcd://HOST:PORT[,...]` and the
    /// other etcd options, as `flotilla server` takes them).
    #[command(flatten)]
    store: StoreArgs,
}

/// How many entries of the embedded store are read at once.
const MIGRATE_PAGE_ENTRIES: usize = 1_000;

/// Copies every entry, in transactions within etcd's limits, each key
/// required absent, so that a migration never overwrites a control plane's
/// state already in etcd. Revisions are etcd's afterwards: nothing stored
/// refers to a revision, which only conditions and watches use.
pub async fn migrate(args: MigrateArgs) -> Result<()> {
    if args.store.store.is_none() {
        bail!("give the etcd to migrate into with --store etcd://HOST:PORT[,HOST:PORT...]");
    }
    let path = args.from.join("state.redb");
    if !path.exists() {
        bail!("{} has no embedded store (state.redb)", args.from.display());
    }
    let source =
        RedbStore::open(&path).with_context(|| format!("opening store {}", path.display()))?;
    let target = connect_etcd(&args.store).await?;
    if !target.list("", None, 1)?.entries.is_empty() {
        bail!(
            "etcd namespace {} already holds state; migrate only into an empty one",
            args.store.etcd_namespace
        );
    }
    let limits = target.limits();
    let mut copied = 0usize;
    let mut after: Option<String> = None;
    loop {
        let page = source.list("", after.as_deref(), MIGRATE_PAGE_ENTRIES)?;
        let mut txn = flotilla_store::Txn::new();
        for entry in &page.entries {
            let candidate = txn
                .clone()
                .expect(&entry.key, 0)
                .put(&entry.key, entry.value.clone());
            if limits.check(&candidate).is_err() && !txn.ops.is_empty() {
                copied += txn.ops.len();
                target.commit(txn).await?;
                txn = flotilla_store::Txn::new()
                    .expect(&entry.key, 0)
                    .put(&entry.key, entry.value.clone());
            } else {
                txn = candidate;
            }
        }
        if !txn.ops.is_empty() {
            copied += txn.ops.len();
            target.commit(txn).await?;
        }
        after = page.entries.last().map(|entry| entry.key.clone());
        if !page.more {
            break;
        }
    }
    println!(
        "Copied {copied} entries from {} into {}",
        path.display(),
        args.store.store.as_deref().unwrap_or_default()
    );
    Ok(())
}
