//! Repository names and image tags: what ECR and the OCI distribution
//! specification accept. A name that passes here is also a safe store key
//! segment and never a path outside the registry's directory.

/// ECR's bounds on a repository name.
pub const REPOSITORY_NAME_MIN_CHARS: usize = 2;
pub const REPOSITORY_NAME_MAX_CHARS: usize = 256;
/// The distribution specification's bound on a tag.
pub const TAG_MAX_CHARS: usize = 128;

/// Whether `name` is a repository name ECR accepts:
/// `(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*`,
/// 2 to 256 characters. Components can be neither empty, `.` nor `..`.
pub fn valid_repository_name(name: &str) -> bool {
    if !(REPOSITORY_NAME_MIN_CHARS..=REPOSITORY_NAME_MAX_CHARS).contains(&name.len()) {
        return false;
    }
    name.split('/').all(valid_component)
}

fn valid_component(component: &str) -> bool {
    // Alphanumeric runs joined by `.`, `_`, `__` or a run of `-`: every
    // maximal run of other characters must be one of those.
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let separators: Vec<&str> = component
        .split(alphanumeric)
        .filter(|s| !s.is_empty())
        .collect();
    let starts_and_ends_alphanumeric =
        component.starts_with(alphanumeric) && component.ends_with(alphanumeric);
    starts_and_ends_alphanumeric
        && separators
            .iter()
            .all(|s| matches!(*s, "." | "_" | "__") || s.bytes().all(|b| b == b'-'))
}

/// Whether `tag` is a tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    let Some(first) = bytes.first() else {
        return false;
    };
    bytes.len() <= TAG_MAX_CHARS
        && (first.is_ascii_alphanumeric() || *first == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        for good in [
            "ab",
            "web",
            "team/web",
            "a/b/c",
            "my-app_1.2",
            "a0/b-c.d_e",
            "a__b",
            "a---b",
        ] {
            assert!(valid_repository_name(good), "{good}");
        }
        let long = "a".repeat(257);
        for bad in [
            "", "a", "Web", "../etc", "a/../b", "a//b", "/ab", "ab/", "a..b", "a-", "-a", "a b",
            "a\\b", "a%2fb", "a/./b", ".", "ab\n", "a___b", "a._b", "a-.b", &long,
        ] {
            assert!(!valid_repository_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn tags() {
        for good in ["latest", "v1.2.3", "_x", "A-b_c.d", &"t".repeat(128)] {
            assert!(valid_tag(good), "{good}");
        }
        for bad in [
            "",
            ".x",
            "-x",
            "a/b",
            "a:b",
            "sha256:abc",
            &"t".repeat(129),
            "ü",
        ] {
            assert!(!valid_tag(bad), "{bad:?}");
        }
    }
}
