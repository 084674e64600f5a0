//! Project automation: `cargo xtask <command>`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

mod bench;
mod codegen;
mod test;

/// The botocore release whose models the generated wire types follow.
const BOTOCORE_VERSION: &str = "1.44.5";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("codegen") => run_codegen(),
        Some("test") => test::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <codegen | test [PYTEST ARGS] | bench api [OPTIONS] | bench tasks [--runs N] | bench placement [--instances N] [--tasks T] | bench registry [--runs N] | bench logs [--seconds N] [--events M]>");
            bail!("unknown command");
        }
    }
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

fn run_codegen() -> Result<()> {
    let data = botocore_models()?;
    let services: &[(&str, &str, &str, &str)] = &[
        ("ecs", "2014-11-13", "Ecs", "ecs"),
        ("ecr", "2015-09-21", "Ecr", "ecr"),
        ("logs", "2014-03-28", "Logs", "logs"),
    ];
    for &(service, version, prefix, module) in services {
        let model = read_model(&data, service, version)?;
        let code = codegen::generate(&codegen::Service {
            prefix,
            model: &model,
        })?;
        let path = root().join(format!("crates/types/src/{module}/generated.rs"));
        std::fs::write(&path, code)?;
        let status = Command::new("rustfmt")
            .args(["--edition", "2021"])
            .arg(&path)
            .status()?;
        if !status.success() {
            bail!("rustfmt failed on {}", path.display());
        }
        println!("wrote {}", path.display());
    }
    Ok(())
}
