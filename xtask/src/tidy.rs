//! `cargo xtask tidy`: the project's rules that neither rustc nor clippy
//! checks, as rust-analyzer's `tidy.rs` keeps its own. Each rule is a pure
//! function from a file's path and text to its violations, so that its tests
//! show it failing on a bad example.
//!
//! - **Clock**: no wall clock (`SystemTime::now`, `Instant::now`, `Utc::now`)
//!   outside the clock sources and the places listed in [`CLOCK_ALLOWED`].
//! - **Randomness**: no random ids or seeds (`Uuid::new_v4`, `rand::`, ...)
//!   outside the id sources listed in [`RANDOMNESS_ALLOWED`].
//! - **Docker**: no Docker engine client (`bollard`, the engine's socket)
//!   outside `crates/runtime`.
//! - **Supervision**: no bare `tokio::spawn` in the control plane, the
//!   edge, the binary or the registry outside the supervisor and the places
//!   listed in [`SPAWN_ALLOWED`]: background loops run under
//!   `flotilla_control::Supervisor`, which restarts them when they panic.
//! - **Status strings**: no comparison of a status with a string literal in
//!   `crates/control` (`== "RUNNING"`, `"STOPPED" =>`); statuses are enums.
//!   The comparisons that predate the rule are counted per file in
//!   [`STATUS_STRING_BASELINE`], which may only go down.
//!
//! Tests (`tests/`, `tests.rs`, inline `#[cfg(test)] mod`), examples,
//! benches, `xtask` itself and `fuzz` are outside the rules: they measure
//! real time and make test data as they please.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::root;

/// Files that may read the wall clock, and why.
const CLOCK_ALLOWED: &[(&str, &str)] = &[
    (
        "crates/store/src/etcd/election.rs",
        "etcd's leases run on real time: a replica stops leading when its lease may have lapsed",
    ),
    (
        "crates/cli/src/main.rs",
        "how long a starting replica waits for its etcd lease",
    ),
    (
        "crates/edge/src/lib.rs",
        "SystemClock: the control plane's clock",
    ),
    ("crates/agent/src/clock.rs", "the agent's clock"),
    ("crates/lb/src/edge.rs", "the load balancer's clock"),
    (
        "crates/edge/src/api.rs",
        "request latency for /metrics: a measurement, never state",
    ),
    (
        "crates/edge/src/s3.rs",
        "S3 request latency for /metrics: a measurement, never state",
    ),
    (
        "crates/edge/src/agent_ws.rs",
        "the agent channel's heartbeat deadline: connection I/O timing",
    ),
    (
        "crates/agent/src/channel.rs",
        "the agent channel's heartbeat deadline: connection I/O timing",
    ),
    (
        "crates/lb/src/listener.rs",
        "a client connection's idle timeout: data plane I/O timing",
    ),
    (
        "crates/lb/src/checker.rs",
        "the pace of health checks: data plane I/O timing",
    ),
    (
        "crates/lb/src/target.rs",
        "the idle age of pooled target connections: data plane I/O timing",
    ),
    (
        "crates/lb/src/plane.rs",
        "a draining target's deregistration delay: data plane I/O timing",
    ),
    (
        "crates/lb/src/proxy.rs",
        "request latency for the load balancer's metrics",
    ),
    (
        "crates/cli/src/service.rs",
        "the binary: `flotilla service deploy` gives up after --timeout-seconds",
    ),
];

/// Files that may draw random values, and why.
const RANDOMNESS_ALLOWED: &[(&str, &str)] = &[
    (
        "crates/edge/src/lib.rs",
        "RandomIds: the control plane's id source",
    ),
    ("crates/agent/src/clock.rs", "the agent's id source"),
    (
        "crates/lb/src/edge.rs",
        "the load balancer's randomness (trace ids, random balancing)",
    ),
    (
        "crates/secrets/src/seal.rs",
        "the key and nonces that seal secret values: secrecy, not state",
    ),
];

/// Crates whose tasks must be started by the supervisor.
const SUPERVISED_CRATES: &[&str] = &[
    "crates/control/src/",
    "crates/edge/src/",
    "crates/cli/src/",
    "crates/registry/src/",
];

/// Files there that may spawn a task themselves, and why.
const SPAWN_ALLOWED: &[(&str, &str)] = &[
    (
        "crates/cli/src/hosts.rs",
        "simulated hosts' agents, which live and die with their host record, not restarted",
    ),
    (
        "crates/control/src/supervisor.rs",
        "the supervisor, which runs every loop",
    ),
    (
        "crates/edge/src/api.rs",
        "one task per request, so that a panic answers a ServerException; not a loop",
    ),
    (
        "crates/registry/src/lib.rs",
        "a pull's time recorded after the answer, once; not a loop",
    ),
];

const SPAWN_CALLS: &[&str] = &["tokio::spawn(", "tokio::task::spawn(", "handle.spawn("];

/// String status comparisons in `crates/control` that predate the rule, per
/// file. They go as the control plane's statuses become enums; a count may
/// only go down (lower it here when it does), and a file not listed has none.
const STATUS_STRING_BASELINE: &[(&str, usize)] = &[
    ("crates/control/src/host_groups.rs", 3),
    ("crates/control/src/services/balancing.rs", 9),
    ("crates/control/src/spot.rs", 2),
    ("crates/control/src/agent_channel.rs", 7),
    ("crates/control/src/capacity_providers.rs", 1),
    ("crates/control/src/clusters.rs", 6),
    ("crates/control/src/instances.rs", 6),
    ("crates/control/src/placement.rs", 2),
    ("crates/control/src/services.rs", 5),
    ("crates/control/src/services/reconcile.rs", 16),
    ("crates/control/src/tags.rs", 1),
    ("crates/control/src/tasks.rs", 12),
];

const CLOCK_CALLS: &[&str] = &["SystemTime::now", "Instant::now", "Utc::now", "Local::now"];
const RANDOMNESS_CALLS: &[&str] = &[
    "Uuid::new_v4",
    "rand::",
    "thread_rng",
    "RandomState::new",
    "getrandom",
    "fastrand::",
    "OsRng",
];
const DOCKER_MARKERS: &[&str] = &["bollard", "docker.sock"];
/// Status values of ECS's tasks, containers, instances, services,
/// deployments, clusters and capacity providers.
const STATUSES: &[&str] = &[
    "PROVISIONING",
    "PENDING",
    "ACTIVATING",
    "RUNNING",
    "DEACTIVATING",
    "STOPPING",
    "DEPROVISIONING",
    "STOPPED",
    "DELETED",
    "ACTIVE",
    "INACTIVE",
    "DRAINING",
    "REGISTERING",
    "DEREGISTERING",
    "REGISTRATION_FAILED",
    "PRIMARY",
    "COMPLETED",
    "FAILED",
    "IN_PROGRESS",
    "ROLLBACK_IN_PROGRESS",
    "ROLLBACK_SUCCESSFUL",
    "ROLLBACK_FAILED",
    "HEALTHY",
    "UNHEALTHY",
    "UNKNOWN",
    "DELETE_IN_PROGRESS",
    "UPDATE_IN_PROGRESS",
    "UPDATE_COMPLETE",
    "UPDATE_FAILED",
];

/// One broken rule at one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub line: usize,
    pub rule: Rule,
    pub text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    Clock,
    Randomness,
    Docker,
    UnsupervisedSpawn,
    StatusString,
}

impl Rule {
    fn explain(self) -> &'static str {
        match self {
            Rule::Clock => "reads the wall clock: take a Clock parameter (or list the file in CLOCK_ALLOWED with a reason)",
            Rule::Randomness => "draws randomness: take an IdSource parameter (or list the file in RANDOMNESS_ALLOWED with a reason)",
            Rule::Docker => "talks to Docker: only crates/runtime knows Docker",
            Rule::UnsupervisedSpawn => "spawns a task outside the supervisor: use Supervisor::spawn (or list the file in SPAWN_ALLOWED with a reason)",
            Rule::StatusString => "compares a status with a string: use the status enum",
        }
    }
}

pub fn run() -> Result<()> {
    let root = root();
    let mut files = Vec::new();
    collect_files(&root.join("crates"), &mut files)?;
    let mut violations = Vec::new();
    for file in &files {
        let relative = file
            .strip_prefix(&root)
            .context("a file outside the workspace")?
            .to_string_lossy()
            .replace('\\', "/");
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        violations.extend(check_file(&relative, &text));
    }
    let mut failures = Vec::new();
    let status_counts = count_by_file(&violations, Rule::StatusString);
    for violation in &violations {
        if violation.rule == Rule::StatusString {
            continue;
        }
        failures.push(format!(
            "{}:{}: {}\n    {}",
            violation.path,
            violation.line,
            violation.rule.explain(),
            violation.text.trim()
        ));
    }
    failures.extend(check_status_baseline(&status_counts, &violations));
    failures.extend(stale_allowances(&root));
    if failures.is_empty() {
        eprintln!("tidy: {} files checked, all rules hold", files.len());
        return Ok(());
    }
    for failure in &failures {
        eprintln!("{failure}");
    }
    bail!("tidy: {} problems", failures.len())
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                collect_files(&path, files)?;
            }
        } else if name.ends_with(".rs") || name == "Cargo.toml" {
            files.push(path);
        }
    }
    Ok(())
}

/// Whether `path` holds tests, examples or benches, which the rules leave alone.
fn is_test_or_tool(path: &str) -> bool {
    path.starts_with("xtask/")
        || path.starts_with("fuzz/")
        || path.ends_with("/tests.rs")
        || path
            .split('/')
            .any(|part| matches!(part, "tests" | "examples" | "benches"))
}

fn allowed(list: &[(&str, &str)], path: &str) -> bool {
    list.iter().any(|(allowed, _)| *allowed == path)
}

/// Every violation in one file, the status-string ones included (the caller
/// weighs those against the baseline).
pub fn check_file(path: &str, text: &str) -> Vec<Violation> {
    if is_test_or_tool(path) {
        return Vec::new();
    }
    let mut violations = Vec::new();
    let manifest = path.ends_with("Cargo.toml");
    let in_runtime = path.starts_with("crates/runtime/");
    let in_control = path.starts_with("crates/control/src/");
    for (index, line) in code_lines(text) {
        let mut found = |rule: Rule| {
            violations.push(Violation {
                path: path.to_owned(),
                line: index + 1,
                rule,
                text: line.to_owned(),
            })
        };
        if !in_runtime && DOCKER_MARKERS.iter().any(|marker| line.contains(marker)) {
            found(Rule::Docker);
        }
        if manifest {
            continue;
        }
        if !allowed(CLOCK_ALLOWED, path) && CLOCK_CALLS.iter().any(|call| contains_path(line, call))
        {
            found(Rule::Clock);
        }
        if !allowed(RANDOMNESS_ALLOWED, path)
            && RANDOMNESS_CALLS
                .iter()
                .any(|call| contains_path(line, call))
        {
            found(Rule::Randomness);
        }
        if SUPERVISED_CRATES
            .iter()
            .any(|prefix| path.starts_with(prefix))
            && !allowed(SPAWN_ALLOWED, path)
            && SPAWN_CALLS.iter().any(|call| contains_path(line, call))
        {
            found(Rule::UnsupervisedSpawn);
        }
        if in_control {
            for _ in 0..status_comparisons(line) {
                found(Rule::StatusString);
            }
        }
    }
    violations
}

/// The lines that are code: not comments, not inside an inline
/// `#[cfg(test)] mod ... { ... }`.
fn code_lines(text: &str) -> Vec<(usize, &str)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut code = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let line = lines[index];
        let trimmed = line.trim();
        if trimmed == "#[cfg(test)]" {
            let next = lines.get(index + 1).map_or("", |next| next.trim());
            let is_module = next.starts_with("mod ")
                || next.starts_with("pub mod ")
                || next.starts_with("pub(crate) mod ");
            if is_module && next.ends_with('{') {
                index = end_of_block(&lines, index + 1);
                continue;
            }
        }
        if !trimmed.starts_with("//") {
            code.push((index, line));
        }
        index += 1;
    }
    code
}

/// The index after the block that opens on `lines[start]`, by counting
/// braces (to the end of the file if they never balance).
fn end_of_block(lines: &[&str], start: usize) -> usize {
    let mut depth: i64 = 0;
    for (index, line) in lines.iter().enumerate().skip(start) {
        for character in line.chars() {
            match character {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
        }
        if depth <= 0 {
            return index + 1;
        }
    }
    lines.len()
}

/// Whether `line` names `path` as a whole path segment (`rand::` but not
/// `operand::`).
fn contains_path(line: &str, path: &str) -> bool {
    line.match_indices(path).any(|(at, _)| {
        !line[..at]
            .chars()
            .next_back()
            .is_some_and(|before| before.is_alphanumeric() || before == '_')
    })
}

/// How many status literals `line` compares against.
fn status_comparisons(line: &str) -> usize {
    let mut count = 0;
    for status in STATUSES {
        let quoted = format!("\"{status}\"");
        for (at, _) in line.match_indices(&quoted) {
            let before = line[..at].trim_end();
            let after = line[at + quoted.len()..].trim_start();
            let before_some = before.strip_suffix("Some(").map(str::trim_end);
            let compared_before = [Some(before), before_some]
                .into_iter()
                .flatten()
                .any(|b| b.ends_with("==") || b.ends_with("!="))
                || before.ends_with(".eq(")
                || before.ends_with('|');
            let compared_after = after.starts_with("==")
                || after.starts_with("!=")
                || after.starts_with("=>")
                || after.starts_with('|')
                || after.starts_with(") =>")
                || after.starts_with(") |");
            let in_matches = line.contains("matches!(");
            if compared_before || compared_after || in_matches {
                count += 1;
            }
        }
    }
    count
}

fn count_by_file(violations: &[Violation], rule: Rule) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for violation in violations.iter().filter(|v| v.rule == rule) {
        *counts.entry(violation.path.clone()).or_insert(0) += 1;
    }
    counts
}

/// Files with more string status comparisons than their baseline allows.
fn check_status_baseline(
    counts: &BTreeMap<String, usize>,
    violations: &[Violation],
) -> Vec<String> {
    let mut failures = Vec::new();
    for (path, count) in counts {
        let baseline = STATUS_STRING_BASELINE
            .iter()
            .find(|(listed, _)| listed == path)
            .map_or(0, |(_, baseline)| *baseline);
        if *count > baseline {
            let lines: Vec<String> = violations
                .iter()
                .filter(|v| v.rule == Rule::StatusString && &v.path == path)
                .map(|v| format!("    {}: {}", v.line, v.text.trim()))
                .collect();
            failures.push(format!(
                "{path}: {count} string status comparisons, {baseline} allowed: {}\n{}",
                Rule::StatusString.explain(),
                lines.join("\n")
            ));
        } else if *count < baseline {
            eprintln!("tidy: {path} has {count} string status comparisons, fewer than its baseline {baseline}: lower STATUS_STRING_BASELINE");
        }
    }
    failures
}

/// Allow-list entries naming files that no longer exist.
fn stale_allowances(root: &Path) -> Vec<String> {
    CLOCK_ALLOWED
        .iter()
        .chain(RANDOMNESS_ALLOWED)
        .chain(SPAWN_ALLOWED)
        .map(|(path, _)| *path)
        .chain(STATUS_STRING_BASELINE.iter().map(|(path, _)| *path))
        .filter(|path| !root.join(path).exists())
        .map(|path| format!("{path}: listed in tidy's allow-lists but gone; remove it there"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(path: &str, text: &str) -> Vec<Rule> {
        check_file(path, text).into_iter().map(|v| v.rule).collect()
    }

    #[test]
    fn the_wall_clock_outside_its_sources_fails() {
        let bad = "fn f() -> u64 {\n    let now = std::time::SystemTime::now();\n    0\n}\n";
        assert_eq!(rules("crates/control/src/tasks.rs", bad), [Rule::Clock]);
        let instant = "let started = Instant::now();";
        assert_eq!(rules("crates/scheduler/src/lib.rs", instant), [Rule::Clock]);
        let chrono = "let at = chrono::Utc::now();";
        assert_eq!(rules("crates/registry/src/gc.rs", chrono), [Rule::Clock]);
        // The sources themselves, tests and benches may.
        assert!(rules("crates/edge/src/lib.rs", bad).is_empty());
        assert!(rules("crates/control/tests/service_sim.rs", bad).is_empty());
        assert!(rules("crates/edge/src/loops/tests.rs", bad).is_empty());
        assert!(rules("crates/store/examples/commit_throughput.rs", bad).is_empty());
        assert!(rules("xtask/src/bench.rs", bad).is_empty());
    }

    #[test]
    fn randomness_outside_the_id_sources_fails() {
        for bad in [
            "let id = uuid::Uuid::new_v4();",
            "let n: u32 = rand::random();",
            "let mut rng = thread_rng();",
            "let seed = RandomState::new();",
        ] {
            assert_eq!(
                rules("crates/control/src/services.rs", bad),
                [Rule::Randomness],
                "{bad}"
            );
        }
        assert!(rules("crates/edge/src/lib.rs", "uuid::Uuid::new_v4()").is_empty());
        assert!(rules("crates/control/src/x.rs", "let operand::x = 1;").is_empty());
    }

    #[test]
    fn docker_outside_the_runtime_fails() {
        let client = "use bollard::Docker;";
        assert_eq!(
            rules("crates/agent/src/engine/mod.rs", client),
            [Rule::Docker]
        );
        let socket = "let path = \"/var/run/docker.sock\";";
        assert_eq!(rules("crates/cli/src/main.rs", socket), [Rule::Docker]);
        let manifest = "[dependencies]\nbollard = \"0.19\"\n";
        assert_eq!(rules("crates/agent/Cargo.toml", manifest), [Rule::Docker]);
        assert!(rules("crates/runtime/src/docker.rs", client).is_empty());
        assert!(rules("crates/runtime/Cargo.toml", manifest).is_empty());
    }

    #[test]
    fn a_bare_spawn_outside_the_supervisor_fails() {
        let bad = "    tokio::spawn(collect_periodically(Arc::clone(&ecs)));";
        assert_eq!(
            rules("crates/cli/src/main.rs", bad),
            [Rule::UnsupervisedSpawn]
        );
        assert_eq!(
            rules("crates/control/src/agent_router.rs", bad),
            [Rule::UnsupervisedSpawn]
        );
        let handle = "handle.spawn(async move { loop {} });";
        assert_eq!(
            rules("crates/registry/src/gc.rs", handle),
            [Rule::UnsupervisedSpawn]
        );
        assert!(rules("crates/control/src/supervisor.rs", bad).is_empty());
        assert!(rules("crates/agent/src/engine/mod.rs", bad).is_empty());
        let supervised = "supervisor.spawn(\"collect\", move || collect(Arc::clone(&ecs)));";
        assert!(rules("crates/cli/src/main.rs", supervised).is_empty());
    }

    #[test]
    fn string_status_comparisons_in_control_fail() {
        for bad in [
            "if task.last_status == \"RUNNING\" {",
            "if \"STOPPED\" != status {",
            "    \"STOPPED\" => return,",
            "    \"PENDING\" | \"RUNNING\" => true,",
            "if status.as_deref() == Some(\"ACTIVE\") {",
            "    Some(\"DRAINING\") => {}",
            "matches!(status, \"PROVISIONING\")",
            "if status.eq(\"INACTIVE\") {",
        ] {
            let found = rules("crates/control/src/tasks.rs", bad);
            assert!(
                !found.is_empty() && found.iter().all(|rule| *rule == Rule::StatusString),
                "{bad}: {found:?}"
            );
        }
        assert_eq!(
            rules(
                "crates/control/src/tasks.rs",
                "    \"PENDING\" | \"RUNNING\" => true,"
            )
            .len(),
            2
        );
        // Setting a status, or a status outside control, is not a comparison.
        assert!(rules("crates/control/src/tasks.rs", "status: \"RUNNING\".into(),").is_empty());
        assert!(rules("crates/control/src/tasks.rs", "// if s == \"RUNNING\"").is_empty());
        assert!(rules("crates/agent/src/engine/mod.rs", "if s == \"RUNNING\" {").is_empty());
    }

    #[test]
    fn a_file_over_its_status_baseline_fails() {
        let path = "crates/control/src/new_module.rs";
        let violations = check_file(path, "if s == \"RUNNING\" {}\n");
        let failures =
            check_status_baseline(&count_by_file(&violations, Rule::StatusString), &violations);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].contains("1 string status comparisons, 0 allowed"));
        let listed = "crates/control/src/placement.rs";
        let text = "a == \"RUNNING\"\nb == \"STOPPED\"\nc == \"PENDING\"\n";
        let violations = check_file(listed, text);
        let failures =
            check_status_baseline(&count_by_file(&violations, Rule::StatusString), &violations);
        assert_eq!(
            failures.len(),
            1,
            "3 is over placement.rs's 2: {failures:?}"
        );
    }

    #[test]
    fn inline_test_modules_are_left_alone() {
        let text = "fn f() {}\n#[cfg(test)]\nmod tests {\n    fn g() { let _ = std::time::Instant::now(); }\n}\nfn h() { let _ = std::time::Instant::now(); }\n";
        let found = check_file("crates/control/src/x.rs", text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].line, 6);
    }

    #[test]
    fn allow_lists_name_existing_files() {
        let root = root();
        assert!(
            stale_allowances(&root).is_empty(),
            "{:?}",
            stale_allowances(&root)
        );
    }
}
