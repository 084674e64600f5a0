//! The `awslogs` log driver's options as a task definition names them: which
//! ECS accepts, what their values mean, and the log stream a container's
//! lines go to. Shared by the control plane, which checks a definition at
//! registration, and the agent, which ships the lines.

/// Options ECS accepts for the awslogs driver; any other is refused at
/// registration ("Log driver awslogs disallows options: ...").
pub const OPTIONS: &[&str] = &[
    GROUP,
    REGION,
    STREAM_PREFIX,
    CREATE_GROUP,
    DATETIME_FORMAT,
    MULTILINE_PATTERN,
    MODE,
    MAX_BUFFER_SIZE,
];

pub const GROUP: &str = "awslogs-group";
pub const REGION: &str = "awslogs-region";
pub const STREAM_PREFIX: &str = "awslogs-stream-prefix";
pub const CREATE_GROUP: &str = "awslogs-create-group";
pub const DATETIME_FORMAT: &str = "awslogs-datetime-format";
pub const MULTILINE_PATTERN: &str = "awslogs-multiline-pattern";
/// Docker's generic delivery mode option: `blocking` (the default) or `non-blocking`.
pub const MODE: &str = "mode";
/// Docker's generic buffer bound for `non-blocking` mode, e.g. `4m`.
pub const MAX_BUFFER_SIZE: &str = "max-buffer-size";

/// Docker's default buffer for `non-blocking` mode: 1 MiB.
pub const DEFAULT_MAX_BUFFER_BYTES: u64 = 1 << 20;

/// How a container's lines wait when they cannot be sent at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Nothing is dropped: reading stops while the buffer is full.
    Blocking,
    /// Reading goes on; the oldest buffered lines are dropped when the buffer
    /// would exceed its bound.
    NonBlocking,
}

impl Mode {
    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "blocking" => Some(Mode::Blocking),
            "non-blocking" => Some(Mode::NonBlocking),
            _ => None,
        }
    }
}

/// A boolean option as Docker reads it (Go's `strconv.ParseBool`).
pub fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A size as Docker's `max-buffer-size` takes it: a number with an optional
/// binary unit (`b`, `k`, `m`, `g`, `t`, optionally followed by `b` or `ib`),
/// case-insensitive: `4m` is 4 MiB.
pub fn parse_size_bytes(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let digits_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let number: f64 = number.parse().ok()?;
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b').filter(|rest| !rest.is_empty()))
        .unwrap_or(unit);
    let multiplier: u64 = match unit {
        "" | "b" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return None,
    };
    let bytes = number * multiplier as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// The log stream of a container's lines, as ECS names it:
/// `PREFIX/CONTAINER/TASK_ID` with a prefix, the container's engine id without.
pub fn stream_name(
    prefix: Option<&str>,
    container_name: &str,
    task_id: &str,
    engine_id: &str,
) -> String {
    match prefix.filter(|prefix| !prefix.is_empty()) {
        Some(prefix) => format!("{prefix}/{container_name}/{task_id}"),
        None => engine_id.to_owned(),
    }
}

/// The regular expression (source text) that `awslogs-datetime-format`'s
/// strftime-like format stands for, anchored at the start of a line: a line
/// that matches starts a new event. Err names the first directive that has no
/// meaning here (`%Q`).
pub fn datetime_format_pattern(format: &str) -> Result<String, String> {
    let mut pattern = String::from("^");
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            push_literal(&mut pattern, c);
            continue;
        }
        let Some(directive) = chars.next() else {
            return Err("%".to_owned());
        };
        let piece = match directive {
            'a' => "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)",
            'A' => "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)",
            'b' => "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)",
            'B' => "(?:January|February|March|April|May|June|July|August|September|October|November|December)",
            'd' => "(?:0[1-9]|[12][0-9]|3[01])",
            'f' => "[0-9]{6}",
            'H' => "(?:[01][0-9]|2[0-3])",
            'I' => "(?:0[0-9]|1[0-2])",
            'j' => "(?:[0-2][0-9][0-9]|3[0-5][0-9]|36[0-6])",
            'L' => "\\.[0-9]{3}",
            'm' => "(?:0[1-9]|1[0-2])",
            'M' => "[0-5][0-9]",
            'p' => "[AP]M",
            'S' => "(?:[0-5][0-9]|60)",
            'y' => "[0-9]{2}",
            'Y' => "[0-9]{4}",
            'z' => "[+-][0-9]{4}",
            'Z' => "[A-Z]{1,4}T",
            '%' => "%",
            other => return Err(format!("%{other}")),
        };
        pattern.push_str(piece);
    }
    Ok(pattern)
}

fn push_literal(pattern: &mut String, c: char) {
    if "\\.+*?()|[]{}^$#&-~".contains(c) {
        pattern.push('\\');
    }
    pattern.push(c);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_docker_reads_them() {
        assert_eq!(parse_size_bytes("4m"), Some(4 << 20));
        assert_eq!(parse_size_bytes("25MB"), Some(25 << 20));
        assert_eq!(parse_size_bytes("512k"), Some(512 << 10));
        assert_eq!(parse_size_bytes("1GiB"), Some(1 << 30));
        assert_eq!(parse_size_bytes("100"), Some(100));
        assert_eq!(parse_size_bytes("lots"), None);
        assert_eq!(parse_size_bytes("4q"), None);
    }

    #[test]
    fn streams_are_named_as_ecs_names_them() {
        assert_eq!(
            stream_name(Some("ecs"), "web", "abc123", "f00d"),
            "ecs/web/abc123"
        );
        assert_eq!(stream_name(None, "web", "abc123", "f00d"), "f00d");
        assert_eq!(stream_name(Some(""), "web", "abc123", "f00d"), "f00d");
    }

    #[test]
    fn datetime_formats_become_anchored_patterns() {
        assert_eq!(
            datetime_format_pattern("%Y-%m-%d").unwrap(),
            "^[0-9]{4}\\-(?:0[1-9]|1[0-2])\\-(?:0[1-9]|[12][0-9]|3[01])"
        );
        assert!(datetime_format_pattern("[%H]").unwrap().starts_with("^\\["));
        assert_eq!(datetime_format_pattern("%Y %Q"), Err("%Q".to_owned()));
        assert_eq!(datetime_format_pattern("100%"), Err("%".to_owned()));
        assert_eq!(Mode::parse("non-blocking"), Some(Mode::NonBlocking));
        assert_eq!(Mode::parse("lossy"), None);
        assert_eq!(parse_bool("True"), Some(true));
        assert_eq!(parse_bool("yes"), None);
    }
}
