//! ELBv2's records in the store, and the state every operation reads and
//! changes.
//!
//! | key | value |
//! |---|---|
//! | `elbv2/generation` | the number of committed changes (a `u64`) |
//! | `elbv2/load-balancers/{name}` | [`LoadBalancerRecord`]: its listeners and their rules inside |
//! | `elbv2/target-groups/{name}` | [`TargetGroupRecord`]: its registered targets inside |
//!
//! *Architecture invariant:* every change is conditional on the revision of
//! `elbv2/generation` it read and writes it, so ELBv2's changes are applied
//! one after another, each against the whole state it decided on. Checks
//! that span resources (a listener port taken by another load balancer, a
//! target group in use) need that, and ELBv2's write rate is an operator's,
//! not a request path's. The generation key's revision versions the data
//! plane's snapshots.

use std::collections::BTreeMap;

use flotilla_aws::elbv2::{
    Action, Listener, LoadBalancer, LoadBalancerTypeEnum, RuleCondition, Tag, TargetGroup,
};
use flotilla_records::{decode, encode, store_error, Attempt};
use flotilla_store::{Revision, Store, Txn};
use flotilla_types::ApiError;
use serde::{Deserialize, Serialize};

pub const GENERATION_KEY: &str = "elbv2/generation";
pub const LOAD_BALANCERS_PREFIX: &str = "elbv2/load-balancers/";
pub const TARGET_GROUPS_PREFIX: &str = "elbv2/target-groups/";

/// Entries read per store listing while loading the state.
const LIST_PAGE_ENTRIES: usize = 1_000;

/// A load balancer, its attributes and tags, and its listeners.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadBalancerRecord {
    /// The 16 hexadecimal digits that end its ARN.
    pub id: String,
    pub kind: LoadBalancerTypeEnum,
    /// The description DescribeLoadBalancers answers, state aside.
    pub description: LoadBalancer,
    pub attributes: BTreeMap<String, String>,
    pub tags: Vec<Tag>,
    pub listeners: Vec<ListenerRecord>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListenerRecord {
    pub id: String,
    /// The id in the ARN of the listener's default rule.
    pub default_rule_id: String,
    pub description: Listener,
    pub tags: Vec<Tag>,
    /// Every rule but the default one, whose actions are the listener's.
    pub rules: Vec<RuleRecord>,
    /// HTTPS: the certificate chain and key its certificate ARN named when
    /// it was set, as the data plane serves them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub served: Vec<flotilla_lb::config::Certificate>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleRecord {
    pub id: String,
    pub priority: u32,
    pub conditions: Vec<RuleCondition>,
    pub actions: Vec<Action>,
    pub tags: Vec<Tag>,
}

/// A target group, its attributes, tags and targets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetGroupRecord {
    pub id: String,
    /// The description DescribeTargetGroups answers, `LoadBalancerArns` aside
    /// (derived from the listeners that forward to it).
    pub description: TargetGroup,
    pub attributes: BTreeMap<String, String>,
    pub tags: Vec<Tag>,
    pub targets: Vec<TargetRecord>,
    /// Deregistered targets until their deregistration delay ends, for
    /// DescribeTargetHealth when no data plane reports them.
    #[serde(default)]
    pub draining: Vec<DrainingTarget>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRecord {
    pub id: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainingTarget {
    pub target: TargetRecord,
    pub until_ms: u64,
}

/// Everything ELBv2 keeps, as read at one generation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    /// The revision of the generation key (0: nothing was ever written).
    pub generation_revision: Revision,
    pub generation: u64,
    pub load_balancers: BTreeMap<String, LoadBalancerRecord>,
    pub target_groups: BTreeMap<String, TargetGroupRecord>,
}

fn list_all<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    prefix: &str,
) -> Result<BTreeMap<String, T>, ApiError> {
    let mut all = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list(prefix, after.as_deref(), LIST_PAGE_ENTRIES)
            .map_err(store_error)?;
        for entry in &page.entries {
            let name = entry.key[prefix.len()..].to_owned();
            all.insert(name, decode(entry)?);
        }
        after = page.entries.last().map(|entry| entry.key.clone());
        if !page.more || after.is_none() {
            return Ok(all);
        }
    }
}

impl State {
    /// Reads the whole state. The store's reads are local, and a state read
    /// between two commits is consistent since each commit is atomic.
    pub fn read(store: &dyn Store) -> Result<State, ApiError> {
        // Read the generation last-writer-wins: a commit that lands between
        // the listings and this read fails the caller's condition.
        let generation = store.get(GENERATION_KEY).map_err(store_error)?;
        let (generation_revision, count) = match &generation {
            Some(entry) => (entry.mod_revision, decode::<u64>(entry)?),
            None => (0, 0),
        };
        Ok(State {
            generation_revision,
            generation: count,
            load_balancers: list_all(store, LOAD_BALANCERS_PREFIX)?,
            target_groups: list_all(store, TARGET_GROUPS_PREFIX)?,
        })
    }

    /// The transaction that turns `before` into `self`: puts of what changed,
    /// deletes of what went, conditional on `before`'s generation. `None`
    /// when nothing changed.
    pub fn commit_from(&self, before: &State) -> Option<Txn> {
        let mut txn = Txn::new()
            .expect(GENERATION_KEY, before.generation_revision)
            .put(GENERATION_KEY, encode(&(before.generation + 1)));
        let mut changed = false;
        for (name, record) in &self.load_balancers {
            if before.load_balancers.get(name) != Some(record) {
                txn = txn.put(format!("{LOAD_BALANCERS_PREFIX}{name}"), encode(record));
                changed = true;
            }
        }
        for name in before.load_balancers.keys() {
            if !self.load_balancers.contains_key(name) {
                txn = txn.delete(format!("{LOAD_BALANCERS_PREFIX}{name}"));
                changed = true;
            }
        }
        for (name, record) in &self.target_groups {
            if before.target_groups.get(name) != Some(record) {
                txn = txn.put(format!("{TARGET_GROUPS_PREFIX}{name}"), encode(record));
                changed = true;
            }
        }
        for name in before.target_groups.keys() {
            if !self.target_groups.contains_key(name) {
                txn = txn.delete(format!("{TARGET_GROUPS_PREFIX}{name}"));
                changed = true;
            }
        }
        changed.then_some(txn)
    }
}

/// Runs `change` on a fresh read of the state and commits what it changed,
/// re-running it when another change committed first. `check` sees the
/// changed state before it is committed and may refuse it.
pub async fn change<T>(
    store: &dyn Store,
    mut change: impl FnMut(&mut State) -> Result<T, ApiError>,
    check: impl Fn(&State) -> Result<(), ApiError>,
) -> Result<T, ApiError> {
    flotilla_records::mutate(store, || {
        let before = State::read(store)?;
        let mut after = before.clone();
        let answer = change(&mut after)?;
        match after.commit_from(&before) {
            None => Ok(Attempt::Done(answer)),
            Some(txn) => {
                check(&after)?;
                Ok(Attempt::Commit(txn, answer))
            }
        }
    })
    .await
}
