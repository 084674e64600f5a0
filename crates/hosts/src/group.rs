//! Host groups: Flotilla's stand-in for EC2 Auto Scaling groups.
//!
//! An operator declares them when starting the control plane:
//!
//! ```text
//! flotilla server --host-group name=web,provider=command,command=./examples/host-provider.sh,min=0,max=4
//! ```
//!
//! A capacity provider uses a group when its `autoScalingGroupArn` ends in
//! the group's name (`arn:aws:autoscaling:REGION:ACCOUNT:autoScalingGroup:UUID:autoScalingGroupName/web`,
//! or simply `web`).

use std::path::PathBuf;

/// Default size of one host, for estimating how many hosts waiting tasks need.
const HOST_CPU_UNITS_DEFAULT: u64 = 2048;
const HOST_MEMORY_MIB_DEFAULT: u64 = 4096;
/// Longest group name an Auto Scaling group may have.
const NAME_LENGTH_MAX: usize = 255;
/// Most hosts one group may hold: a bound on what one mistake can launch.
pub const HOSTS_PER_GROUP_MAX: u32 = 10_000;

/// Which [`crate::HostProvider`] launches a group's hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderKind {
    /// Each host a container running `flotilla agent`.
    Docker {
        image: String,
        /// The agent inside runs one simulated instance (fake runtime)
        /// instead of sharing the machine's Docker engine.
        simulated: bool,
    },
    /// The operator's executable, called with `launch` or `terminate`.
    Command { program: PathBuf },
    /// Hosts that exist only in the control plane's process: each a
    /// simulated agent started in it. For tests, benchmarks and demos.
    Simulated,
}

/// One host group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostGroup {
    pub name: String,
    pub provider: ProviderKind,
    pub min: u32,
    pub max: u32,
    /// The size it starts at, and is kept at while no capacity provider
    /// with managed scaling ENABLED names it.
    pub desired: u32,
    pub cpu_units: u64,
    pub memory_mib: u64,
}

/// Why a `--host-group` is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostGroupError {
    #[error("host group {text:?}: expected KEY=VALUE pairs separated by commas")]
    Syntax { text: String },
    #[error("host group: unknown setting {key:?} (name, provider, min, max, desired, cpu, memory, image, simulated, command)")]
    UnknownKey { key: String },
    #[error("host group: {key} must be a whole number, got {value:?}")]
    NotANumber { key: String, value: String },
    #[error("host group: name is required: up to {NAME_LENGTH_MAX} letters, numbers, hyphens, underscores and dots")]
    Name,
    #[error("host group {group}: provider must be docker, command or simulated, got {given:?}")]
    Provider { group: String, given: String },
    #[error("host group {group}: provider=command needs command=PATH")]
    CommandMissing { group: String },
    // Auto Scaling's own wording for these two.
    #[error(
        "host group {group}: Max bound, {max}, must be greater than or equal to min bound, {min}"
    )]
    MinAboveMax { group: String, min: u32, max: u32 },
    #[error("host group {group}: Desired capacity:{desired} must be between the specified min size:{min} and max size:{max}")]
    DesiredOutOfBounds {
        group: String,
        desired: u32,
        min: u32,
        max: u32,
    },
    #[error("host group {group}: max may be at most {HOSTS_PER_GROUP_MAX}")]
    TooLarge { group: String },
    #[error("host group {group} is declared twice")]
    Duplicate { group: String },
}

impl std::str::FromStr for HostGroup {
    type Err = HostGroupError;

    /// `name=NAME,provider=docker|command|simulated,min=N,max=N[,desired=N][,cpu=UNITS][,memory=MIB][,image=IMAGE][,simulated=true][,command=PATH]`.
    fn from_str(text: &str) -> Result<Self, HostGroupError> {
        let mut name = None;
        let mut provider = None;
        let (mut min, mut max, mut desired) = (0, 0, None);
        let mut cpu_units = HOST_CPU_UNITS_DEFAULT;
        let mut memory_mib = HOST_MEMORY_MIB_DEFAULT;
        let mut image = None;
        let mut simulated = false;
        let mut command = None;
        for pair in text.split(',') {
            let (key, value) = pair.split_once('=').ok_or_else(|| HostGroupError::Syntax {
                text: text.to_owned(),
            })?;
            let number = |value: &str| {
                value
                    .parse::<u64>()
                    .map_err(|_| HostGroupError::NotANumber {
                        key: key.to_owned(),
                        value: value.to_owned(),
                    })
            };
            let count = |value: &str| number(value).map(|n| u32::try_from(n).unwrap_or(u32::MAX));
            match key.trim() {
                "name" => name = Some(value.trim().to_owned()),
                "provider" => provider = Some(value.trim().to_owned()),
                "min" => min = count(value)?,
                "max" => max = count(value)?,
                "desired" => desired = Some(count(value)?),
                "cpu" => cpu_units = number(value)?,
                "memory" => memory_mib = number(value)?,
                "image" => image = Some(value.to_owned()),
                "simulated" => simulated = matches!(value, "true" | "1" | "yes"),
                "command" => command = Some(PathBuf::from(value)),
                other => {
                    return Err(HostGroupError::UnknownKey {
                        key: other.to_owned(),
                    })
                }
            }
        }
        let name = name.filter(|n| valid_name(n)).ok_or(HostGroupError::Name)?;
        let provider = match provider.as_deref().unwrap_or("") {
            "docker" => ProviderKind::Docker {
                image: image.unwrap_or_else(|| crate::provider::docker::IMAGE_DEFAULT.to_owned()),
                simulated,
            },
            "command" => ProviderKind::Command {
                program: command.ok_or_else(|| HostGroupError::CommandMissing {
                    group: name.clone(),
                })?,
            },
            "simulated" => ProviderKind::Simulated,
            given => {
                return Err(HostGroupError::Provider {
                    group: name,
                    given: given.to_owned(),
                })
            }
        };
        let group = HostGroup {
            desired: desired.unwrap_or(min),
            name,
            provider,
            min,
            max,
            cpu_units,
            memory_mib,
        };
        group.check()?;
        Ok(group)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_LENGTH_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl HostGroup {
    /// Refuses bounds an Auto Scaling group would refuse.
    pub fn check(&self) -> Result<(), HostGroupError> {
        let group = self.name.clone();
        if self.min > self.max {
            return Err(HostGroupError::MinAboveMax {
                group,
                min: self.min,
                max: self.max,
            });
        }
        if self.max > HOSTS_PER_GROUP_MAX {
            return Err(HostGroupError::TooLarge { group });
        }
        if !(self.min..=self.max).contains(&self.desired) {
            return Err(HostGroupError::DesiredOutOfBounds {
                group,
                desired: self.desired,
                min: self.min,
                max: self.max,
            });
        }
        Ok(())
    }

    /// The group an `autoScalingGroupArn` names: its last `/`- or
    /// `:`-separated part, so both a full ARN and a bare name work.
    pub fn name_in_arn(arn: &str) -> &str {
        arn.rsplit(['/', ':']).next().unwrap_or(arn)
    }
}

/// Checks a whole set of groups: each alone, and no name twice.
pub fn check_all(groups: &[HostGroup]) -> Result<(), HostGroupError> {
    let mut seen = std::collections::BTreeSet::new();
    for group in groups {
        group.check()?;
        if !seen.insert(group.name.as_str()) {
            return Err(HostGroupError::Duplicate {
                group: group.name.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_parsed_from_its_settings() {
        let group: HostGroup = "name=web,provider=command,command=/bin/hosts,min=1,max=4,cpu=1024"
            .parse()
            .expect("valid");
        assert_eq!(group.name, "web");
        assert_eq!((group.min, group.max, group.desired), (1, 4, 1));
        assert_eq!(group.cpu_units, 1024);
        assert_eq!(
            group.provider,
            ProviderKind::Command {
                program: "/bin/hosts".into()
            }
        );
        let group: HostGroup = "name=d,provider=docker,max=2,simulated=true"
            .parse()
            .expect("valid");
        assert!(matches!(
            group.provider,
            ProviderKind::Docker {
                simulated: true,
                ..
            }
        ));
    }

    #[test]
    fn bad_groups_are_refused_with_a_message_naming_the_fault() {
        let table = [
            (
                "name=web,provider=simulated,min=3,max=2",
                "Max bound, 2, must be greater than or equal to min bound, 3",
            ),
            (
                "name=web,provider=simulated,min=0,max=2,desired=5",
                "Desired capacity:5 must be between the specified min size:0 and max size:2",
            ),
            (
                "name=web,provider=ec2,max=2",
                "provider must be docker, command or simulated",
            ),
            ("name=web,provider=command,max=2", "needs command=PATH"),
            ("provider=simulated,max=2", "name is required"),
            (
                "name=web,provider=simulated,max=two",
                "max must be a whole number",
            ),
            (
                "name=web,provider=simulated,colour=red",
                "unknown setting \"colour\"",
            ),
            (
                "name=web,provider=simulated,max=20000",
                "max may be at most 10000",
            ),
            ("web", "expected KEY=VALUE"),
        ];
        for (text, message) in table {
            let error = text.parse::<HostGroup>().expect_err(text).to_string();
            assert!(error.contains(message), "{text}: {error}");
        }
    }

    #[test]
    fn the_group_name_is_the_end_of_the_arn() {
        let arn = "arn:aws:autoscaling:us-east-1:000000000000:autoScalingGroup:0d1e:autoScalingGroupName/web";
        assert_eq!(HostGroup::name_in_arn(arn), "web");
        assert_eq!(HostGroup::name_in_arn("web"), "web");
    }
}
