//! Which region a command serves or signs for when `--region` is not
//! given: the one the user's AWS configuration names, found as the AWS CLI
//! finds it, so that a server and the AWS CLI on the same machine agree.
//!
//! Order: `--region`, `AWS_REGION`, `AWS_DEFAULT_REGION`, the `region` of
//! the profile `AWS_PROFILE` (or `AWS_DEFAULT_PROFILE`, or `default`) names
//! in the AWS config file (`AWS_CONFIG_FILE`, or `~/.aws/config`), and last
//! [`FALLBACK_REGION`].

use std::fmt;
use std::path::{Path, PathBuf};

/// The region when nothing names one, as the AWS SDKs' examples assume.
pub const FALLBACK_REGION: &str = "us-east-1";
/// Longest region name accepted; AWS's longest today is 14 characters.
const REGION_NAME_LENGTH_MAX: usize = 32;
/// Largest AWS config file read; a real one is a few kilobytes.
const CONFIG_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// A region and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub name: String,
    pub source: RegionSource,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionSource {
    Flag,
    Environment(&'static str),
    ConfigFile { path: PathBuf, profile: String },
    Fallback,
}

impl fmt::Display for RegionSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionSource::Flag => write!(f, "--region"),
            RegionSource::Environment(name) => write!(f, "{name}"),
            RegionSource::ConfigFile { path, profile } => {
                write!(f, "profile {profile} in {}", path.display())
            }
            RegionSource::Fallback => write!(
                f,
                "no region configured; --region, AWS_REGION or a profile's region would name one"
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    #[error("region {name:?} (from {origin}) is not a region name such as eu-west-1")]
    Invalid { name: String, origin: RegionSource },
}

/// Where [`resolve`] looks: the process environment and the file system.
pub struct Surroundings<'a> {
    pub variable: &'a dyn Fn(&str) -> Option<String>,
    pub read_file: &'a dyn Fn(&Path) -> Option<String>,
}

impl Surroundings<'_> {
    /// The process's own environment and files.
    pub fn process() -> Surroundings<'static> {
        Surroundings {
            variable: &|name| std::env::var(name).ok(),
            read_file: &|path| {
                use std::io::Read;
                let mut text = String::new();
                std::fs::File::open(path)
                    .ok()?
                    .take(CONFIG_FILE_BYTES_MAX)
                    .read_to_string(&mut text)
                    .ok()?;
                Some(text)
            },
        }
    }

    /// An environment variable, unless unset or empty (as the AWS CLI reads them).
    fn non_empty(&self, name: &str) -> Option<String> {
        (self.variable)(name).filter(|value| !value.trim().is_empty())
    }
}

/// The region for a command given `flag` (`--region`, if any).
pub fn resolve(flag: Option<&str>, around: &Surroundings<'_>) -> Result<Region, RegionError> {
    let found = flag
        .map(|name| (name.to_owned(), RegionSource::Flag))
        .or_else(|| {
            ["AWS_REGION", "AWS_DEFAULT_REGION"]
                .into_iter()
                .find_map(|variable| {
                    around
                        .non_empty(variable)
                        .map(|name| (name, RegionSource::Environment(variable)))
                })
        })
        .or_else(|| from_config_file(around))
        .unwrap_or_else(|| (FALLBACK_REGION.to_owned(), RegionSource::Fallback));
    let (name, source) = found;
    let name = name.trim().to_owned();
    let valid = !name.is_empty()
        && name.len() <= REGION_NAME_LENGTH_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(RegionError::Invalid {
            name,
            origin: source,
        });
    }
    Ok(Region { name, source })
}

fn from_config_file(around: &Surroundings<'_>) -> Option<(String, RegionSource)> {
    let path = match around.non_empty("AWS_CONFIG_FILE") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(around.non_empty("HOME")?).join(".aws/config"),
    };
    let profile = around
        .non_empty("AWS_PROFILE")
        .or_else(|| around.non_empty("AWS_DEFAULT_PROFILE"))
        .unwrap_or_else(|| "default".to_owned());
    let text = (around.read_file)(&path)?;
    let name = profile_region(&text, &profile)?;
    Some((name, RegionSource::ConfigFile { path, profile }))
}

/// The `region` of `profile` in an AWS config file's text: section
/// `[profile NAME]`, or `[default]` for the default profile.
fn profile_region(text: &str, profile: &str) -> Option<String> {
    let mut in_profile = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(section) = trimmed
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            let section = section.trim();
            let named = section
                .strip_prefix("profile ")
                .map(str::trim)
                .unwrap_or(section);
            // Other profiles are `[profile NAME]`; a bare `[NAME]` is only
            // the default one.
            in_profile =
                named == profile && (section.starts_with("profile ") || named == "default");
            continue;
        }
        // Indented lines belong to a nested setting (`s3 =` and its keys).
        if !in_profile || line.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((key, value)) = trimmed.split_once('=') {
            if key.trim() == "region" {
                let value = value.trim();
                return (!value.is_empty()).then(|| value.to_owned());
            }
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const CONFIG: &str = "\
# the user's own
[default]
region = eu-west-1
output = json

[profile work]
s3 =
  region = us-west-2
region=ap-southeast-2

[profile empty]
output = text

[work]
region = sa-east-1
";

    fn resolve_with(
        flag: Option<&str>,
        variables: &[(&str, &str)],
        files: &[(&str, &str)],
    ) -> Region {
        try_resolve(flag, variables, files).unwrap()
    }

    fn try_resolve(
        flag: Option<&str>,
        variables: &[(&str, &str)],
        files: &[(&str, &str)],
    ) -> Result<Region, RegionError> {
        let variables: HashMap<String, String> = variables
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let files: HashMap<PathBuf, String> = files
            .iter()
            .map(|(k, v)| (PathBuf::from(k), (*v).to_owned()))
            .collect();
        let variable = move |name: &str| variables.get(name).cloned();
        let read_file = move |path: &Path| files.get(path).cloned();
        resolve(
            flag,
            &Surroundings {
                variable: &variable,
                read_file: &read_file,
            },
        )
    }

    fn config_file(path: &str, profile: &str) -> RegionSource {
        RegionSource::ConfigFile {
            path: PathBuf::from(path),
            profile: profile.to_owned(),
        }
    }

    #[test]
    fn the_flag_wins_then_the_environment_then_the_config_file() {
        let home = [("HOME", "/home/u")];
        let files = [("/home/u/.aws/config", CONFIG)];
        let all = [
            ("HOME", "/home/u"),
            ("AWS_REGION", "eu-central-1"),
            ("AWS_DEFAULT_REGION", "eu-north-1"),
        ];
        assert_eq!(
            resolve_with(Some("ca-central-1"), &all, &files),
            Region {
                name: "ca-central-1".into(),
                source: RegionSource::Flag
            }
        );
        assert_eq!(
            resolve_with(None, &all, &files).source,
            RegionSource::Environment("AWS_REGION")
        );
        assert_eq!(
            resolve_with(None, &[all[0], all[2]], &files),
            Region {
                name: "eu-north-1".into(),
                source: RegionSource::Environment("AWS_DEFAULT_REGION")
            }
        );
        assert_eq!(
            resolve_with(None, &home, &files),
            Region {
                name: "eu-west-1".into(),
                source: config_file("/home/u/.aws/config", "default")
            }
        );
        assert_eq!(
            resolve_with(None, &[("HOME", "/home/u")], &[]),
            Region {
                name: "us-east-1".into(),
                source: RegionSource::Fallback
            }
        );
        // Empty variables count as unset.
        assert_eq!(
            resolve_with(None, &[("HOME", "/home/u"), ("AWS_REGION", "")], &files).name,
            "eu-west-1"
        );
    }

    #[test]
    fn profiles_and_config_file_locations() {
        let files = [("/etc/aws.conf", CONFIG)];
        let elsewhere = ("AWS_CONFIG_FILE", "/etc/aws.conf");
        assert_eq!(
            resolve_with(None, &[elsewhere], &files),
            Region {
                name: "eu-west-1".into(),
                source: config_file("/etc/aws.conf", "default")
            }
        );
        // A nested setting's region is not the profile's; `[work]` is not
        // profile work.
        assert_eq!(
            resolve_with(None, &[elsewhere, ("AWS_PROFILE", "work")], &files),
            Region {
                name: "ap-southeast-2".into(),
                source: config_file("/etc/aws.conf", "work")
            }
        );
        assert_eq!(
            resolve_with(None, &[elsewhere, ("AWS_DEFAULT_PROFILE", "work")], &files).name,
            "ap-southeast-2"
        );
        // A profile without a region names none.
        assert_eq!(
            resolve_with(None, &[elsewhere, ("AWS_PROFILE", "empty")], &files).source,
            RegionSource::Fallback
        );
        assert_eq!(
            resolve_with(
                None,
                &[elsewhere],
                &[("/etc/aws.conf", "[profile default]\nregion = me-south-1\n")]
            )
            .name,
            "me-south-1"
        );
    }

    #[test]
    fn a_malformed_region_is_refused_with_its_source() {
        let error = try_resolve(None, &[("AWS_REGION", "Europe (Ireland)")], &[]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "region \"Europe (Ireland)\" (from AWS_REGION) is not a region name such as eu-west-1"
        );
        assert!(try_resolve(Some(""), &[], &[]).is_err());
    }
}
