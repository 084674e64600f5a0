//! `cargo xtask test`: installs what the tests need, then runs the checks
//! (`cargo fmt --check`, `cargo xtask tidy`, clippy with warnings denied)
//! and every test: the Rust suites under nextest and the end-to-end suite
//! that drives a real `flotilla` process with the AWS CLI and boto3.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::root;

/// Debian packages the tests call directly: busybox-static provides the test images (FROM scratch) and the awsvpc pause image;
/// skopeo is the registry's second client; wrk loads the load balancer; awscli is the AWS CLI v2
/// (`aws logs tail` exists only there; the venv holds the pinned v1 and boto3).
const APT_PACKAGES: &[&str] = &[
    "curl",
    "busybox-static",
    "skopeo",
    "wrk",
    "awscli",
    // openssl makes the certificates HTTPS listeners are tested with.
    "openssl",
    // `protoc`, which the etcd client's build needs, and the `etcd` the
    // etcd backend's tests start.
    "protobuf-compiler",
    "etcd-server",
];

pub fn run(args: &[String]) -> Result<()> {
    let root = root();
    ensure_apt_packages(APT_PACKAGES)?;
    let python = ensure_venv(&root)?;
    // The cheap checks first, so that a formatting slip fails in seconds.
    run_checked(
        Command::new("cargo")
            .current_dir(&root)
            .args(["fmt", "--all", "--check"]),
    )?;
    crate::tidy::run()?;
    run_checked(Command::new("cargo").current_dir(&root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run_checked(Command::new("cargo").current_dir(&root).args([
        "nextest",
        "run",
        "--workspace",
        "--no-fail-fast",
    ]))?;
    run_checked(
        Command::new("cargo")
            .current_dir(&root)
            .args(["build", "-p", "flotilla"]),
    )?;
    let binary = root.join("target/debug/flotilla");
    run_checked(
        Command::new(&python)
            .current_dir(&root)
            .env("FLOTILLA_BIN", &binary)
            .args(["-m", "pytest", "tests/e2e", "-q", "-p", "no:cacheprovider"])
            .args(args),
    )
}

fn run_checked(command: &mut Command) -> Result<()> {
    eprintln!("+ {command:?}");
    let status = command
        .status()
        .with_context(|| format!("starting {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

pub(crate) fn ensure_apt_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|package| {
            let installed = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", package])
                .output()
                .map(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"));
            !installed.unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    run_checked(Command::new("apt-get").args(["update", "-q"]))?;
    run_checked(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )
}

/// Creates `.venv` with the pinned clients, reinstalling when the pins change.
/// Returns the venv's python.
pub fn ensure_venv(root: &Path) -> Result<std::path::PathBuf> {
    let venv = root.join(".venv");
    let python = venv.join("bin/python");
    let requirements = root.join("tests/e2e/requirements.txt");
    let wanted =
        std::fs::read_to_string(&requirements).context("reading tests/e2e/requirements.txt")?;
    let stamp = venv.join("requirements.installed");
    if python.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(python);
    }
    run_checked(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run_checked(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--upgrade",
        "pip",
    ]))?;
    run_checked(
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "-r"])
            .arg(&requirements),
    )?;
    std::fs::write(&stamp, wanted)?;
    Ok(python)
}
