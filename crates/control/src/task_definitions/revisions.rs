//! Revision numbers for concurrent registrations of one family.
//!
//! Every registration of a family must advance the family's revision
//! counter, so concurrent registrations of one family all want the same key.
//! Committed one by one they would serialize on the store's flush, one
//! registration per fsync. Instead they queue per family: the first to arrive
//! leads, takes everything queued behind it and commits it as one transaction
//! (counter + n revisions), then hands each waiter its own revision. One flush
//! then serves the whole queue. The transaction is still conditional on the
//! counter it read, so writers in other processes are never overwritten.

use std::collections::HashMap;
use std::sync::Mutex;

use flotilla_store::{Txn, TXN_OPS_MAX};
use flotilla_types::ecs::TaskDefinition;
use flotilla_types::ApiError;
use tokio::sync::oneshot;

use super::{FamilyRecord, TaskDefinitionRecord, REVISIONS_PER_FAMILY_MAX};
use crate::records::{self, keys, Attempt};
use crate::Ecs;

/// Most registrations one transaction carries: each is one put, and the
/// counter is one more.
const REGISTRATIONS_PER_COMMIT_MAX: usize = TXN_OPS_MAX / 2;

type Reply = oneshot::Sender<Result<TaskDefinition, ApiError>>;

/// Registrations waiting for their family's leader, by family. A family
/// present in the map has a leader at work.
#[derive(Default)]
pub struct RegistrationQueues {
    waiting: Mutex<HashMap<String, Vec<(TaskDefinitionRecord, Reply)>>>,
}

impl RegistrationQueues {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<(TaskDefinitionRecord, Reply)>>> {
        self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Ecs {
    /// Gives `record` the family's next revision and stores it.
    pub(super) async fn store_new_revision(&self, record: TaskDefinitionRecord) -> Result<TaskDefinition, ApiError> {
        let family = record.definition.family.clone().unwrap_or_default();
        let (reply, answer) = oneshot::channel();
        let mut own = Some((record, reply));
        {
            let mut waiting = self.registrations.lock();
            if let Some(queue) = waiting.get_mut(&family) {
                queue.extend(own.take());
            } else {
                waiting.insert(family.clone(), Vec::new());
            }
        }
        if let Some(own) = own {
            // No leader was at work: this registration leads, and its own
            // record is its first batch.
            self.commit_registrations(&family, vec![own]).await;
            self.lead_registrations(&family).await;
        }
        answer.await.unwrap_or_else(|_| Err(ApiError::server("registration was abandoned; try again")))
    }

    /// Commits what queued behind the leader until the queue is empty.
    async fn lead_registrations(&self, family: &str) {
        loop {
            let batch = {
                let mut waiting = self.registrations.lock();
                let queue = waiting.entry(family.to_owned()).or_default();
                if queue.is_empty() {
                    waiting.remove(family);
                    return;
                }
                let take = queue.len().min(REGISTRATIONS_PER_COMMIT_MAX);
                queue.drain(..take).collect::<Vec<_>>()
            };
            self.commit_registrations(family, batch).await;
        }
    }

    async fn commit_registrations(&self, family: &str, batch: Vec<(TaskDefinitionRecord, Reply)>) {
        let records: Vec<&TaskDefinitionRecord> = batch.iter().map(|(record, _)| record).collect();
        let result = self.commit_revisions(family, &records).await;
        for (index, (_, reply)) in batch.into_iter().enumerate() {
            let answer = match &result {
                Ok(stored) => Ok(stored[index].clone()),
                Err(error) => Err(error.clone()),
            };
            // A caller that went away no longer needs its answer.
            let _ = reply.send(answer);
        }
    }

    /// One transaction: the counter advanced by `records.len()` and each record
    /// stored under its new revision.
    async fn commit_revisions(&self, family: &str, records: &[&TaskDefinitionRecord]) -> Result<Vec<TaskDefinition>, ApiError> {
        let family_key = keys::family(family);
        records::mutate(self.store.as_ref(), || {
            let (counter, counter_revision) = match records::get::<FamilyRecord>(self.store.as_ref(), &family_key)? {
                Some(found) => (found.value, found.revision),
                None => (FamilyRecord::default(), 0),
            };
            let count = records.len() as i32;
            if counter.latest_revision + count > REVISIONS_PER_FAMILY_MAX {
                return Err(ApiError::client(format!(
                    "Family '{family}' already has {} revisions; ECS allows at most {REVISIONS_PER_FAMILY_MAX}.",
                    counter.latest_revision
                )));
            }
            let next = FamilyRecord {
                latest_revision: counter.latest_revision + count,
                active_revisions: counter.active_revisions + count,
            };
            let mut txn = Txn::new().expect(&family_key, counter_revision).put(&family_key, records::encode(&next));
            let mut stored = Vec::with_capacity(records.len());
            for (offset, record) in records.iter().enumerate() {
                let revision = counter.latest_revision + 1 + offset as i32;
                let mut record = (*record).clone();
                record.definition.revision = Some(revision);
                record.definition.task_definition_arn = Some(self.task_definition_arn(family, revision));
                let key = keys::task_definition(family, revision);
                txn = txn.expect(&key, 0).put(&key, records::encode(&record));
                stored.push(record.definition);
            }
            Ok(Attempt::Commit(txn, stored))
        })
        .await
    }
}
