//! Instances ordered by what they have left of one resource, for binpack.
//!
//! A plain ordered set is not enough: binpack on memory walks upwards from
//! the task's memory, and every instance that has the memory but not the
//! CPU would be stepped over again by every later task — on a busy cluster
//! that is most of them. So entries sit in sorted blocks of at most
//! [`BLOCK_MAX`], each knowing the most any of its entries has of the
//! *other* resource; a walk skips a whole block that cannot fit the task.
//! Updates cost O(blocks + BLOCK_MAX), a few hundred steps at 10,000 instances.

use crate::snapshot::InstanceIndex;

const BLOCK_MAX: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Entry {
    pub key: i64,
    pub instance: InstanceIndex,
    /// What the instance has of the other resource.
    pub other: i64,
}

#[derive(Clone, Debug, Default)]
struct Block {
    entries: Vec<Entry>,
    other_max: i64,
}

impl Block {
    fn refresh(&mut self) {
        self.other_max = self
            .entries
            .iter()
            .map(|e| e.other)
            .max()
            .unwrap_or(i64::MIN);
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct ResourceIndex {
    blocks: Vec<Block>,
}

impl ResourceIndex {
    pub fn build(mut entries: Vec<Entry>) -> ResourceIndex {
        entries.sort_unstable();
        let blocks = entries
            .chunks(BLOCK_MAX / 2)
            .map(|chunk| {
                let mut block = Block {
                    entries: chunk.to_vec(),
                    other_max: 0,
                };
                block.refresh();
                block
            })
            .collect();
        ResourceIndex { blocks }
    }

    /// The block an entry with `(key, instance)` belongs in.
    fn block_of(&self, key: i64, instance: InstanceIndex) -> usize {
        let at = self.blocks.partition_point(|block| {
            block
                .entries
                .last()
                .is_some_and(|last| (last.key, last.instance) < (key, instance))
        });
        at.min(self.blocks.len().saturating_sub(1))
    }

    pub fn remove(&mut self, key: i64, instance: InstanceIndex) {
        if self.blocks.is_empty() {
            return;
        }
        let at = self.block_of(key, instance);
        let block = &mut self.blocks[at];
        if let Some(position) = block
            .entries
            .iter()
            .position(|e| e.key == key && e.instance == instance)
        {
            block.entries.remove(position);
            if block.entries.is_empty() {
                self.blocks.remove(at);
            } else {
                block.refresh();
            }
        }
    }

    pub fn insert(&mut self, entry: Entry) {
        if self.blocks.is_empty() {
            self.blocks.push(Block::default());
        }
        let at = self.block_of(entry.key, entry.instance);
        let block = &mut self.blocks[at];
        let position = block.entries.partition_point(|e| *e < entry);
        block.entries.insert(position, entry);
        block.other_max = block.other_max.max(entry.other);
        if block.entries.len() > BLOCK_MAX {
            let upper = block.entries.split_off(BLOCK_MAX / 2);
            block.refresh();
            let mut upper = Block {
                entries: upper,
                other_max: 0,
            };
            upper.refresh();
            self.blocks.insert(at + 1, upper);
        }
    }

    /// Entries with `key >= key_min` and `other >= other_min`, ascending by
    /// key, until `visit` returns true.
    pub fn walk(&self, key_min: i64, other_min: i64, mut visit: impl FnMut(&Entry) -> bool) {
        let start = self
            .blocks
            .partition_point(|block| block.entries.last().is_some_and(|last| last.key < key_min));
        for block in &self.blocks[start..] {
            if block.other_max < other_min {
                continue;
            }
            for entry in &block.entries {
                if entry.key >= key_min && entry.other >= other_min && visit(entry) {
                    return;
                }
            }
        }
    }

    /// Entries whose key is exactly `key`.
    pub fn equal(&self, key: i64, mut visit: impl FnMut(&Entry) -> bool) {
        let start = self
            .blocks
            .partition_point(|block| block.entries.last().is_some_and(|last| last.key < key));
        for block in &self.blocks[start..] {
            for entry in &block.entries {
                if entry.key > key {
                    return;
                }
                if entry.key == key && visit(entry) {
                    return;
                }
            }
        }
    }

    #[cfg(test)]
    pub fn entries(&self) -> Vec<Entry> {
        self.blocks
            .iter()
            .flat_map(|b| b.entries.iter().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn stays_sorted_and_walks_like_a_filter() {
        let mut rng = Rng::new(7);
        let mut model: Vec<Entry> = (0..1000)
            .map(|i| Entry {
                key: rng.below(500) as i64,
                instance: i,
                other: rng.below(100) as i64,
            })
            .collect();
        let mut index = ResourceIndex::build(model.clone());
        for _ in 0..5000 {
            let at = rng.below(model.len() as u64) as usize;
            let old = model[at];
            index.remove(old.key, old.instance);
            let new = Entry {
                key: rng.below(500) as i64,
                instance: old.instance,
                other: rng.below(100) as i64,
            };
            index.insert(new);
            model[at] = new;
        }
        model.sort_unstable();
        assert_eq!(index.entries(), model);
        for (key_min, other_min) in [(0, 0), (250, 50), (499, 99), (600, 0)] {
            let mut walked = Vec::new();
            index.walk(key_min, other_min, |e| {
                walked.push(*e);
                false
            });
            let expected: Vec<Entry> = model
                .iter()
                .filter(|e| e.key >= key_min && e.other >= other_min)
                .copied()
                .collect();
            assert_eq!(walked, expected);
        }
        let mut equal = Vec::new();
        index.equal(model[10].key, |e| {
            equal.push(*e);
            false
        });
        assert!(equal.iter().all(|e| e.key == model[10].key) && equal.contains(&model[10]));
    }
}
