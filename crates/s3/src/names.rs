//! S3's rules for bucket names and object keys.

use crate::S3Error;

/// Longest object key S3 takes, in UTF-8 bytes.
pub const KEY_MAX_BYTES: usize = 1024;

/// Checks a bucket name against S3's general purpose bucket naming rules.
pub fn check_bucket_name(name: &str) -> Result<(), S3Error> {
    let refuse = |reason: &str| S3Error::InvalidBucketName {
        bucket: name.to_owned(),
        reason: reason.to_owned(),
    };
    if !(3..=63).contains(&name.len()) {
        return Err(refuse(
            "Bucket names must be between 3 (min) and 63 (max) characters long.",
        ));
    }
    if !name.bytes().all(|byte| {
        byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'.' | b'-')
    }) {
        return Err(refuse(
            "Bucket names can consist only of lowercase letters, numbers, periods (.), and hyphens (-).",
        ));
    }
    let alphanumeric = |byte: Option<&u8>| {
        byte.is_some_and(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit())
    };
    if !alphanumeric(name.as_bytes().first()) || !alphanumeric(name.as_bytes().last()) {
        return Err(refuse(
            "Bucket names must begin and end with a letter or number.",
        ));
    }
    if name.contains("..") {
        return Err(refuse(
            "Bucket names must not contain two adjacent periods.",
        ));
    }
    let is_ip_address = name.split('.').count() == 4
        && name
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit()));
    if is_ip_address {
        return Err(refuse(
            "Bucket names must not be formatted as an IP address (for example, 192.168.5.4).",
        ));
    }
    for prefix in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if name.starts_with(prefix) {
            return Err(refuse(&format!(
                "Bucket names must not start with the prefix {prefix}."
            )));
        }
    }
    for suffix in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
        if name.ends_with(suffix) {
            return Err(refuse(&format!(
                "Bucket names must not end with the suffix {suffix}."
            )));
        }
    }
    Ok(())
}

/// Checks an object key: not empty, at most [`KEY_MAX_BYTES`].
pub fn check_key(key: &str) -> Result<(), S3Error> {
    if key.is_empty() {
        return Err(S3Error::invalid_argument("Object keys must not be empty."));
    }
    if key.len() > KEY_MAX_BYTES {
        return Err(S3Error::KeyTooLong {
            key_length_bytes: key.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3_rules() {
        for good in ["config", "my.bucket-1", "abc", &"a".repeat(63)] {
            assert!(check_bucket_name(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "v2",
            &"a".repeat(64),
            "Upper",
            "under_score",
            "-start",
            "end-",
            "a..b",
            "192.168.5.4",
            "xn--abc",
            "name-s3alias",
        ] {
            let error = check_bucket_name(bad).expect_err(bad);
            assert_eq!(error.code(), "InvalidBucketName", "{bad}");
        }
    }

    #[test]
    fn keys_are_bounded() {
        assert!(check_key("a/b/c.env").is_ok());
        assert_eq!(check_key("").expect_err("empty").code(), "InvalidArgument");
        assert_eq!(
            check_key(&"k".repeat(KEY_MAX_BYTES + 1))
                .expect_err("long")
                .code(),
            "KeyTooLongError"
        );
    }
}
