//! Task subnets: every container instance gets its own /24 out of
//! [`TASK_SUBNETS_CIDR`] for its awsvpc tasks, taken from the
//! [`SubnetPool`] record in the registration transaction; `.1` is the
//! instance's gateway and tasks get `.2` to `.254`.
//!
//! Hosts share container engines with other software, earlier
//! installations and other Flotilla control planes, whose networks may
//! already hold part of the range. The agent says which subnets its engine's
//! networks hold (the identity document's
//! [`SUBNETS_IN_USE_MEMBER`](conventions::SUBNETS_IN_USE_MEMBER)), and the
//! pool hands out only /24s clear of them. The agent then creates its task
//! network at once, which claims the subnet on the engine; if another
//! control plane's host got there first, it registers again naming that
//! subnet too, and the instance is moved to another (it has no tasks yet).

use std::collections::BTreeSet;
use std::ops::RangeInclusive;

use flotilla_types::acs::conventions;
use flotilla_types::ecs::{Attachment, KeyValuePair};
use flotilla_types::ApiError;
use serde::{Deserialize, Serialize};

use super::InstanceRecord;

pub use conventions::TASK_SUBNETS_CIDR;

/// How many /24 task subnets the pool holds, hence how many instances may
/// be registered (ACTIVE, DRAINING or not yet forgotten) at once.
pub const TASK_SUBNETS_MAX: u32 = 16_384;
/// First address of [`TASK_SUBNETS_CIDR`], 100.64.0.0.
const TASK_SUBNETS_FIRST_ADDRESS: u32 = 100 << 24 | 64 << 16;

/// Which task subnets are taken. Written in the same transaction as the
/// instance that takes or frees one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SubnetPool {
    pub in_use: BTreeSet<u32>,
    /// Where the search for a free subnet starts, so that a freed subnet is
    /// not handed out again at once.
    pub next: u32,
}

impl SubnetPool {
    /// Takes the next free subnet that none of `blocked` overlaps.
    pub fn take(&mut self, blocked: &BlockedSubnets) -> Option<u32> {
        let free = (0..TASK_SUBNETS_MAX)
            .map(|offset| (self.next + offset) % TASK_SUBNETS_MAX)
            .find(|index| !self.in_use.contains(index) && !blocked.contains(*index))?;
        self.in_use.insert(free);
        self.next = (free + 1) % TASK_SUBNETS_MAX;
        Some(free)
    }

    /// Why [`SubnetPool::take`] found nothing, in words for the host's operator.
    pub fn exhausted_message(&self, blocked: &BlockedSubnets) -> String {
        let held_by_instances = self.in_use.len();
        let blocked_by_engine = (0..TASK_SUBNETS_MAX)
            .filter(|index| !self.in_use.contains(index) && blocked.contains(*index))
            .count();
        format!(
            "No task subnet is free for this container instance: of the {TASK_SUBNETS_MAX} /24 subnets of {TASK_SUBNETS_CIDR}, \
             {held_by_instances} are held by registered container instances and {blocked_by_engine} overlap networks of the instance's container engine ({}). \
             Remove those networks from the engine, or deregister instances, and register again",
            blocked.describe()
        )
    }
}

/// The pool indices that networks of an instance's container engine
/// overlap, as ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockedSubnets {
    ranges: Vec<RangeInclusive<u32>>,
    /// The subnets as the agent named them, for messages.
    given: Vec<String>,
}

impl BlockedSubnets {
    /// From the subnets the agent named; each must be an IPv4 CIDR block.
    pub fn parse(given: &[String]) -> Result<BlockedSubnets, ApiError> {
        if given.len() > conventions::SUBNETS_IN_USE_MAX {
            return Err(ApiError::invalid_parameter(format!(
                "instanceIdentityDocument.{} may name at most {} subnets, got {}",
                conventions::SUBNETS_IN_USE_MEMBER,
                conventions::SUBNETS_IN_USE_MAX,
                given.len()
            )));
        }
        let mut ranges = Vec::with_capacity(given.len());
        for text in given {
            let (first, last) = parse_cidr(text).ok_or_else(|| {
                ApiError::invalid_parameter(format!(
                    "instanceIdentityDocument.{}: {text:?} is not an IPv4 CIDR block such as 100.64.0.0/24",
                    conventions::SUBNETS_IN_USE_MEMBER
                ))
            })?;
            if let Some(range) = pool_indices_between(first, last) {
                ranges.push(range);
            }
        }
        Ok(BlockedSubnets {
            ranges,
            given: given.to_vec(),
        })
    }

    pub fn contains(&self, index: u32) -> bool {
        self.ranges.iter().any(|range| range.contains(&index))
    }

    fn describe(&self) -> String {
        if self.given.is_empty() {
            "it reported none".to_owned()
        } else {
            format!("it reported {}", self.given.join(", "))
        }
    }
}

/// First and last address of an IPv4 CIDR block.
fn parse_cidr(text: &str) -> Option<(u32, u32)> {
    let (address, prefix_len) = text.split_once('/')?;
    let address: std::net::Ipv4Addr = address.parse().ok()?;
    let prefix_len: u32 = prefix_len.parse().ok()?;
    if prefix_len > 32 {
        return None;
    }
    let mask = u32::MAX.checked_shl(32 - prefix_len).unwrap_or(0);
    let first = u32::from(address) & mask;
    Some((first, first | !mask))
}

/// The pool indices whose /24s hold any address from `first` to `last`.
fn pool_indices_between(first: u32, last: u32) -> Option<RangeInclusive<u32>> {
    let pool_last = TASK_SUBNETS_FIRST_ADDRESS + (TASK_SUBNETS_MAX << 8) - 1;
    if last < TASK_SUBNETS_FIRST_ADDRESS || first > pool_last {
        return None;
    }
    let start = first.max(TASK_SUBNETS_FIRST_ADDRESS) - TASK_SUBNETS_FIRST_ADDRESS;
    let end = last.min(pool_last) - TASK_SUBNETS_FIRST_ADDRESS;
    Some((start >> 8)..=(end >> 8))
}

/// The first three octets of task subnet `index`, e.g. `100.64.3`.
pub fn subnet_prefix(index: u32) -> String {
    format!("100.{}.{}", 64 + index / 256, index % 256)
}

/// Task subnet `index` in CIDR form, e.g. `100.64.3.0/24`.
pub fn subnet_cidr(index: u32) -> String {
    format!("{}.0/24", subnet_prefix(index))
}

/// The instance's task subnet as ECS shows a trunk network interface: a
/// container-instance attachment, with the subnet's CIDR block as an extra
/// detail (its agent reads it from the registration's answer). Computed
/// from the record, so it never disagrees with it.
pub fn attachment(record: &InstanceRecord) -> Attachment {
    let detail = |name: &str, value: String| KeyValuePair {
        name: Some(name.to_owned()),
        value: Some(value),
    };
    let hex = &record.instance_id;
    let uuid = if hex.len() == 32 {
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    } else {
        hex.clone()
    };
    let index = record.task_subnet_index;
    Attachment {
        id: Some(uuid),
        r#type: Some(conventions::TASK_SUBNET_ATTACHMENT_TYPE.to_owned()),
        status: Some("ATTACHED".to_owned()),
        details: Some(vec![
            detail("subnetId", format!("subnet-{index:017x}")),
            detail(
                "networkInterfaceId",
                format!("eni-{}", &hex[hex.len().saturating_sub(17)..]),
            ),
            detail("macAddress", format!("02:00:0a:c8:{:02x}:01", index & 0xff)),
            detail("privateIPv4Address", format!("{}.1", subnet_prefix(index))),
            detail(
                conventions::TASK_SUBNET_CIDR_DETAIL,
                record.task_subnet_cidr.clone(),
            ),
        ]),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn blocked(given: &[&str]) -> BlockedSubnets {
        let given: Vec<String> = given.iter().map(|s| (*s).to_owned()).collect();
        BlockedSubnets::parse(&given).unwrap()
    }

    #[test]
    fn subnets_name_their_pool_index() {
        assert_eq!(subnet_cidr(0), "100.64.0.0/24");
        assert_eq!(subnet_cidr(259), "100.65.3.0/24");
        assert_eq!(subnet_cidr(TASK_SUBNETS_MAX - 1), "100.127.255.0/24");
    }

    #[test]
    fn engine_networks_block_the_indices_they_overlap() {
        let cases: &[(&str, Option<RangeInclusive<u32>>)] = &[
            ("100.64.0.0/24", Some(0..=0)),
            ("100.64.1.128/25", Some(1..=1)),
            ("100.64.2.7/32", Some(2..=2)),
            ("100.64.4.0/22", Some(4..=7)),
            ("100.65.0.0/16", Some(256..=511)),
            ("100.64.0.0/10", Some(0..=TASK_SUBNETS_MAX - 1)),
            ("100.0.0.0/8", Some(0..=TASK_SUBNETS_MAX - 1)),
            ("0.0.0.0/0", Some(0..=TASK_SUBNETS_MAX - 1)),
            // Host bits are ignored, as the engine ignores them.
            ("100.64.9.77/24", Some(9..=9)),
            ("172.17.0.0/16", None),
            ("100.128.0.0/24", None),
            ("100.63.255.0/24", None),
        ];
        for (cidr, expected) in cases {
            let (first, last) = parse_cidr(cidr).unwrap();
            assert_eq!(&pool_indices_between(first, last), expected, "{cidr}");
        }
    }

    #[test]
    fn malformed_or_too_many_subnets_are_refused() {
        for bad in [
            "100.64.0.0",
            "100.64.0.0/33",
            "fd00::/64",
            "100.64.0/24",
            "",
        ] {
            let error = BlockedSubnets::parse(&[bad.to_owned()]).unwrap_err();
            assert_eq!(error.code, "InvalidParameterException", "{bad}");
            assert!(error.message.contains("subnetsInUse"), "{}", error.message);
        }
        let many = vec!["10.0.0.0/24".to_owned(); conventions::SUBNETS_IN_USE_MAX + 1];
        let error = BlockedSubnets::parse(&many).unwrap_err();
        assert!(error.message.contains("at most 256"), "{}", error.message);
    }

    #[test]
    fn the_pool_skips_what_instances_hold_and_what_engines_use() {
        let mut pool = SubnetPool::default();
        assert_eq!(pool.take(&BlockedSubnets::default()), Some(0));
        let engine = blocked(&["100.64.1.0/24", "100.64.2.0/23", "172.17.0.0/16"]);
        assert_eq!(pool.take(&engine), Some(4));
        assert_eq!(pool.take(&engine), Some(5));
        // Another host's engine without those networks gets what is left
        // before them, once the search wraps around.
        pool.next = 0;
        assert_eq!(pool.take(&BlockedSubnets::default()), Some(1));
    }

    #[test]
    fn a_full_pool_says_why() {
        let mut pool = SubnetPool::default();
        for index in 0..10 {
            pool.in_use.insert(index);
        }
        let engine = blocked(&["100.64.0.0/10"]);
        assert_eq!(pool.take(&engine), None);
        let message = pool.exhausted_message(&engine);
        assert!(message.starts_with("No task subnet is free for this container instance: of the 16384 /24 subnets of 100.64.0.0/10, 10 are held by registered container instances and 16374 overlap networks of the instance's container engine (it reported 100.64.0.0/10)"), "{message}");
    }
}
