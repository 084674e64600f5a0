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

use flotilla_store::Txn;
use flotilla_types::ecs::TaskDefinition;
use flotilla_types::ApiError;

use super::{FamilyRecord, TaskDefinitionRecord, REVISIONS_PER_FAMILY_MAX};
use crate::combine::Combiner;
use crate::records::{self, keys, Attempt};
use crate::Ecs;

/// Operations the store's transaction limits are divided by for one
/// registration: each is one put, the family's counter one more, with room.
const OPS_PER_REGISTRATION: usize = 2;

/// Registrations waiting for their family's leader, by family.
pub(crate) type RegistrationQueues =
    Combiner<TaskDefinitionRecord, Result<TaskDefinition, ApiError>>;

impl Ecs {
    /// Gives `record` the family's next revision and stores it.
    pub(super) async fn store_new_revision(
        &self,
        record: TaskDefinitionRecord,
    ) -> Result<TaskDefinition, ApiError> {
        let family = record.definition.family.clone().unwrap_or_default();
        let registrations_per_commit_max = self.store.limits().items_per_txn(OPS_PER_REGISTRATION);
        self.registrations
            .submit(&family, record, registrations_per_commit_max, |batch| {
                self.commit_registrations(&family, batch)
            })
            .await
            .unwrap_or_else(|| Err(ApiError::server("registration was abandoned; try again")))
    }

    async fn commit_registrations(
        &self,
        family: &str,
        batch: Vec<TaskDefinitionRecord>,
    ) -> Vec<Result<TaskDefinition, ApiError>> {
        let records: Vec<&TaskDefinitionRecord> = batch.iter().collect();
        match self.commit_revisions(family, &records).await {
            Ok(stored) => stored.into_iter().map(Ok).collect(),
            Err(error) => batch.iter().map(|_| Err(error.clone())).collect(),
        }
    }

    /// One transaction: the counter advanced by `records.len()` and each record
    /// stored under its new revision.
    async fn commit_revisions(
        &self,
        family: &str,
        records: &[&TaskDefinitionRecord],
    ) -> Result<Vec<TaskDefinition>, ApiError> {
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
