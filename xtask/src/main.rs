//! Project automation: `cargo xtask <command>`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

mod bench;
mod codegen;
mod test;
mod tidy;

/// The botocore release whose models the generated wire types follow.
const BOTOCORE_VERSION: &str = "1.44.5";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("codegen") => run_codegen(),
        Some("test") => test::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("tidy") => tidy::run(),
        Some("up") => run_up(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <up [FLOTILLA UP ARGS] | codegen | test [PYTEST ARGS] | tidy | bench api [OPTIONS] | bench tasks [--runs N] | bench placement [--instances N] [--tasks T] | bench registry [--runs N] | bench logs [--seconds N] [--events M]>");
            bail!("unknown command");
        }
    }
}

/// What building the `flotilla` binary needs from the system: `protoc`, for
/// the etcd client's generated code.
const BUILD_APT_PACKAGES: &[&str] = &["protobuf-compiler"];

/// `flotilla up` on a fresh machine: installs what the build needs, then
/// builds and runs it.
fn run_up(args: &[String]) -> Result<()> {
    test::ensure_apt_packages(BUILD_APT_PACKAGES)?;
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root())
        .args(["run", "--release", "-p", "flotilla", "--", "up"])
        .args(args)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("flotilla up ended with {status}");
    }
    Ok(())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .into()
}

/// Downloads the pinned botocore wheel and returns the directory of its models.
fn botocore_models() -> Result<PathBuf> {
    let dir = root().join("target/botocore");
    let data = dir.join("botocore/data");
    if !data.exists() {
        std::fs::create_dir_all(&dir)?;
        let status = Command::new("python3")
            .args(["-m", "pip", "download", "--quiet", "--no-deps", "--dest"])
            .arg(&dir)
            .arg(format!("botocore=={BOTOCORE_VERSION}"))
            .status()?;
        if !status.success() {
            bail!("pip download botocore failed");
        }
        let unzip = "import glob,sys,zipfile; zipfile.ZipFile(glob.glob(sys.argv[1]+'/botocore-*.whl')[0]).extractall(sys.argv[1])";
        let status = Command::new("python3")
            .args(["-c", unzip])
            .arg(&dir)
            .status()?;
        if !status.success() {
            bail!("unpacking botocore failed");
        }
    }
    Ok(data)
}

fn read_model(data: &Path, service: &str, version: &str) -> Result<serde_json::Value> {
    let path = data.join(service).join(version).join("service-2.json.gz");
    let script = "import gzip,sys; sys.stdout.buffer.write(gzip.open(sys.argv[1]).read())";
    let output = Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .output()?;
    if !output.status.success() {
        bail!("reading {} failed", path.display());
    }
    serde_json::from_slice(&output.stdout).with_context(|| format!("parsing {}", path.display()))
}

/// Services whose wire types live in flotilla-aws, one module and one cargo
/// feature each: (botocore's directory, module and feature, type prefix).
/// A module's `MODEL` (operations, errors, Query shapes) is always built; its
/// serde types only with its feature, so a crate that handles one service
/// compiles only that service's types.
const AWS_SERVICES: &[(&str, &str, &str)] = &[
    ("sts", "sts", "Sts"),
    ("elbv2", "elbv2", "Elbv2"),
    ("iam", "iam", "Iam"),
    ("logs", "logs", "Logs"),
    ("cloudwatch", "monitoring", "Monitoring"),
    (
        "application-autoscaling",
        "application_autoscaling",
        "ApplicationAutoscaling",
    ),
    ("secretsmanager", "secretsmanager", "Secretsmanager"),
    ("ssm", "ssm", "Ssm"),
    ("events", "events", "Events"),
    ("servicediscovery", "servicediscovery", "Servicediscovery"),
];

fn run_codegen() -> Result<()> {
    let data = botocore_models()?;
    let services: &[(&str, &str, &str, &str)] = &[
        ("ecs", "2014-11-13", "Ecs", "ecs"),
        ("ecr", "2015-09-21", "Ecr", "ecr"),
    ];
    for &(service, version, prefix, module) in services {
        let model = read_model(&data, service, version)?;
        let code = codegen::generate(&codegen::Service {
            prefix,
            model: &model,
            types_crate: "crate",
        })?;
        write_formatted(
            &root().join(format!("crates/types/src/{module}/generated.rs")),
            &code,
        )?;
    }
    for &(service, module, prefix) in AWS_SERVICES {
        let version = latest_version(&data, service)?;
        let model = read_model(&data, service, &version)?;
        let dir = root().join(format!("crates/aws/src/{module}"));
        std::fs::create_dir_all(&dir)?;
        write_formatted(
            &dir.join("model.rs"),
            &codegen::generate_model(module, &model)?,
        )?;
        let types = codegen::generate(&codegen::Service {
            prefix,
            model: &model,
            types_crate: "flotilla_types",
        })?;
        write_formatted(&dir.join("types.rs"), &types)?;
    }
    Ok(())
}

/// botocore keeps one API version per service directory in practice; the
/// newest is the one its clients use.
fn latest_version(data: &Path, service: &str) -> Result<String> {
    let mut versions: Vec<String> = std::fs::read_dir(data.join(service))
        .with_context(|| format!("botocore has no model for {service}"))?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join("service-2.json.gz").exists())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    versions.sort();
    versions
        .pop()
        .with_context(|| format!("no model version for {service}"))
}

fn write_formatted(path: &Path, code: &str) -> Result<()> {
    std::fs::write(path, code)?;
    let status = Command::new("rustfmt")
        .args(["--edition", "2021"])
        .arg(path)
        .status()?;
    if !status.success() {
        bail!("rustfmt failed on {}", path.display());
    }
    println!("wrote {}", path.display());
    Ok(())
}
