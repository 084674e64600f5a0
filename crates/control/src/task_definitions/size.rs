//! Task-level CPU and memory: the notations ECS accepts ("1024", "1 vCPU",
//! "0.25 vcpu"; "2048", "2 GB", "512 MiB"), their ranges, and the CPU and
//! memory pairs Fargate offers.

use flotilla_types::ApiError;

pub const CPU_UNITS_PER_VCPU: u64 = 1024;
pub const MIB_PER_GB: u64 = 1024;

/// ECS's bounds on task-level CPU: 0.125 to 192 vCPUs.
pub const TASK_CPU_UNITS_MIN: u32 = 128;
pub const TASK_CPU_UNITS_MAX: u32 = 196_608;

/// The smallest memory a container can run in: the Docker daemon reserves
/// 6 MiB, and ECS refuses less. A task cannot hold less than one container.
pub const CONTAINER_MEMORY_MIB_MIN: i32 = 6;
pub const TASK_MEMORY_MIB_MIN: u32 = CONTAINER_MEMORY_MIB_MIN as u32;
/// The memory of the largest EC2 instance (24 TiB); no task can use more.
pub const TASK_MEMORY_MIB_MAX: u32 = 24 * 1024 * 1024;

/// Most decimal places a "0.25 vCPU" or "0.5 GB" value may carry. Enough
/// for every size ECS documents, few enough that scaling cannot overflow.
const DECIMAL_PLACES_MAX: usize = 4;

/// Parses task-level `cpu` into CPU units.
pub fn parse_task_cpu(text: &str) -> Result<u32, ApiError> {
    let invalid = || {
        ApiError::client(format!(
            "Invalid 'cpu' setting for task. {text:?} is not between {TASK_CPU_UNITS_MIN} and \
             {TASK_CPU_UNITS_MAX} CPU units (for example 1024) or vCPUs (for example 1 vCPU)."
        ))
    };
    let lower = text.trim().to_ascii_lowercase();
    let units = match lower.strip_suffix("vcpu") {
        Some(number) => scaled(number.trim_end(), CPU_UNITS_PER_VCPU),
        None => scaled(&lower, 1),
    };
    units
        .and_then(|units| u32::try_from(units).ok())
        .filter(|units| (TASK_CPU_UNITS_MIN..=TASK_CPU_UNITS_MAX).contains(units))
        .ok_or_else(invalid)
}

/// Parses task-level `memory` into MiB.
pub fn parse_task_memory(text: &str) -> Result<u32, ApiError> {
    let invalid = || {
        ApiError::client(format!(
            "Invalid 'memory' setting for task. {text:?} is not between {TASK_MEMORY_MIB_MIN} and \
             {TASK_MEMORY_MIB_MAX} MiB (for example 2048) or a size in GB (for example 2 GB)."
        ))
    };
    let lower = text.trim().to_ascii_lowercase();
    let (number, mib_per_unit) = [
        ("gib", MIB_PER_GB),
        ("gb", MIB_PER_GB),
        ("mib", 1),
        ("mb", 1),
    ]
    .into_iter()
    .find_map(|(suffix, scale)| lower.strip_suffix(suffix).map(|n| (n.trim_end(), scale)))
    .unwrap_or((lower.as_str(), 1));
    scaled(number, mib_per_unit)
        .and_then(|mib| u32::try_from(mib).ok())
        .filter(|mib| (TASK_MEMORY_MIB_MIN..=TASK_MEMORY_MIB_MAX).contains(mib))
        .ok_or_else(invalid)
}

/// `number` (digits, optionally with a decimal point) times `scale`, when
/// that is a whole number. Exact decimal arithmetic: "0.1 vCPU" is 102.4
/// units and so is refused rather than rounded.
fn scaled(number: &str, scale: u64) -> Option<u64> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !all_digits(whole)
        || !all_digits(fraction)
        || fraction.len() > DECIMAL_PLACES_MAX
    {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let denominator = 10u64.pow(fraction.len() as u32);
    let numerator: u64 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    let fraction_scaled = numerator.checked_mul(scale)?;
    if fraction_scaled % denominator != 0 {
        return None;
    }
    whole
        .checked_mul(scale)?
        .checked_add(fraction_scaled / denominator)
}

/// The memory sizes Fargate pairs with one CPU size.
enum MemoryChoices {
    Listed(&'static [u32]),
    Stepped {
        min_mib: u32,
        max_mib: u32,
        step_mib: u32,
    },
}

struct FargateSize {
    cpu_units: u32,
    memory: MemoryChoices,
    /// Windows containers on Fargate need at least 1 vCPU, and the largest
    /// sizes need Linux platform 1.4.0.
    windows: bool,
}

/// Fargate's CPU and memory pairs, as the ECS developer guide lists them.
const FARGATE_SIZES: &[FargateSize] = &[
    FargateSize {
        cpu_units: 256,
        memory: MemoryChoices::Listed(&[512, 1024, 2048]),
        windows: false,
    },
    FargateSize {
        cpu_units: 512,
        memory: MemoryChoices::Stepped {
            min_mib: 1024,
            max_mib: 4096,
            step_mib: 1024,
        },
        windows: false,
    },
    FargateSize {
        cpu_units: 1024,
        memory: MemoryChoices::Stepped {
            min_mib: 2048,
            max_mib: 8192,
            step_mib: 1024,
        },
        windows: true,
    },
    FargateSize {
        cpu_units: 2048,
        memory: MemoryChoices::Stepped {
            min_mib: 4096,
            max_mib: 16384,
            step_mib: 1024,
        },
        windows: true,
    },
    FargateSize {
        cpu_units: 4096,
        memory: MemoryChoices::Stepped {
            min_mib: 8192,
            max_mib: 30720,
            step_mib: 1024,
        },
        windows: true,
    },
    FargateSize {
        cpu_units: 8192,
        memory: MemoryChoices::Stepped {
            min_mib: 16384,
            max_mib: 61440,
            step_mib: 4096,
        },
        windows: false,
    },
    FargateSize {
        cpu_units: 16384,
        memory: MemoryChoices::Stepped {
            min_mib: 32768,
            max_mib: 122880,
            step_mib: 8192,
        },
        windows: false,
    },
];

impl MemoryChoices {
    fn allows(&self, memory_mib: u32) -> bool {
        match *self {
            MemoryChoices::Listed(sizes) => sizes.contains(&memory_mib),
            MemoryChoices::Stepped {
                min_mib,
                max_mib,
                step_mib,
            } => {
                (min_mib..=max_mib).contains(&memory_mib)
                    && (memory_mib - min_mib).is_multiple_of(step_mib)
            }
        }
    }

    fn describe(&self) -> String {
        match *self {
            MemoryChoices::Listed(sizes) => {
                let sizes: Vec<String> = sizes.iter().map(u32::to_string).collect();
                format!("{} MiB", sizes.join(", "))
            }
            MemoryChoices::Stepped {
                min_mib,
                max_mib,
                step_mib,
            } => {
                format!("{min_mib} to {max_mib} MiB in steps of {step_mib} MiB")
            }
        }
    }
}

/// Why Fargate cannot run a task of this size, if it cannot.
pub fn fargate_size_problem(cpu_units: u32, memory_mib: u32, windows: bool) -> Option<String> {
    const NO_CONFIGURATION: &str = "No Fargate configuration exists for given values.";
    let Some(size) = FARGATE_SIZES
        .iter()
        .find(|size| size.cpu_units == cpu_units)
    else {
        let cpus: Vec<String> = FARGATE_SIZES
            .iter()
            .map(|size| size.cpu_units.to_string())
            .collect();
        return Some(format!(
            "{NO_CONFIGURATION} Task cpu {cpu_units} is not a Fargate size; use one of {}.",
            cpus.join(", ")
        ));
    };
    if windows && !size.windows {
        return Some(format!(
            "{NO_CONFIGURATION} Windows tasks on Fargate need a task cpu of 1024, 2048 or 4096, not {cpu_units}."
        ));
    }
    if !size.memory.allows(memory_mib) {
        return Some(format!(
            "{NO_CONFIGURATION} Task cpu {cpu_units} allows a task memory of {}, not {memory_mib} MiB.",
            size.memory.describe()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_notations() {
        let cases = [
            ("1024", Some(1024)),
            ("1 vCPU", Some(1024)),
            ("1vcpu", Some(1024)),
            ("0.25 vCPU", Some(256)),
            (" 2 VCPU ", Some(2048)),
            ("0.125 vcpu", Some(128)),
            ("192 vCPU", Some(196_608)),
            ("127", None),
            ("196609", None),
            ("0.1 vCPU", None),
            ("", None),
            ("vCPU", None),
            ("-1", None),
            ("1.5.0", None),
            ("99999999999999999999", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_task_cpu(text).ok(), expected, "{text:?}");
        }
    }

    #[test]
    fn memory_notations() {
        let cases = [
            ("2048", Some(2048)),
            ("2 GB", Some(2048)),
            ("2GB", Some(2048)),
            ("0.5 GB", Some(512)),
            ("1 GiB", Some(1024)),
            ("512 MiB", Some(512)),
            ("512mb", Some(512)),
            ("5", None),
            ("0", None),
            ("1.3 GB", None),
            ("lots", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_task_memory(text).ok(), expected, "{text:?}");
        }
    }

    #[test]
    fn fargate_pairs() {
        let cases = [
            (256, 512, true),
            (256, 1536, false),
            (256, 2048, true),
            (512, 4096, true),
            (512, 5120, false),
            (1024, 8192, true),
            (2048, 4096, true),
            (2048, 16384, true),
            (2048, 17408, false),
            (4096, 30720, true),
            (8192, 20480, true),
            (8192, 17408, false),
            (16384, 122880, true),
            (16384, 36864, false),
            (384, 1024, false),
        ];
        for (cpu, memory, valid) in cases {
            assert_eq!(
                fargate_size_problem(cpu, memory, false).is_none(),
                valid,
                "{cpu}/{memory}"
            );
        }
        assert!(
            fargate_size_problem(512, 1024, true).is_some(),
            "windows needs 1 vCPU"
        );
    }
}
