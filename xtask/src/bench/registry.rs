//! `cargo xtask bench registry [--runs N] [--mib M] [--layers L] [--pulls P]`:
//! push and pull throughput of Flotilla's registry against Debian's
//! `docker-registry` (the CNCF distribution registry) on the same machine in
//! the same run, with the same client (skopeo), and concurrent pulls.
//!
//! ```text
//! an OCI layout in a temp dir: L layers of incompressible data, M MiB in all
//! flotilla server (release, fresh data dir)   docker-registry (fresh dir, no auth)
//! run i = 1..N, the side going first alternating:
//!   push: skopeo copy oci:LAYOUT docker://HOST/bench-i:v1        (timed)
//!   pull: skopeo copy docker://HOST/bench-i:v1 oci:OUT           (timed)
//! → {"bench":"registry","server":…,"op":"push"|"pull","median_mb_per_s":…,"runs":[…]}
//! → {"bench":"registry","op":…,"ratio_flotilla_over_docker_registry":…}
//! then P pulls at once of the same image from each server:
//! → {"bench":"registry","server":…,"op":"concurrent_pull","clients":P,"errors":…,"aggregate_mb_per_s":…}
//! ```
//!
//! Flotilla is driven as a user would: the repository is made with
//! `aws ecr create-repository` and skopeo logs in with the token of
//! `aws ecr get-login-password` (the pinned CLI of `tests/e2e`). The peer
//! runs without authentication, which only flatters the peer. Flotilla
//! flushes every blob to disk before acknowledging it; the peer does not.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::servers::{self, Server, TempDir};

pub const USAGE: &str =
    "usage: cargo xtask bench registry [--runs N] [--mib M] [--layers L] [--pulls P]";
const DEFAULT_RUNS: usize = 3;
const DEFAULT_MIB: usize = 200;
const DEFAULT_LAYERS: usize = 4;
const DEFAULT_PULLS: usize = 10;
const RUNS_MAX: usize = 50;
const MIB_MAX: usize = 4_096;
const LAYERS_MAX: usize = 64;
const PULLS_MAX: usize = 64;
const DOCKER_REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const REGION: &str = "us-east-1";

pub struct Options {
    runs: usize,
    mib: usize,
    layers: usize,
    pulls: usize,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Options {
            runs: DEFAULT_RUNS,
            mib: DEFAULT_MIB,
            layers: DEFAULT_LAYERS,
            pulls: DEFAULT_PULLS,
        };
        let mut rest = args.iter();
        while let Some(flag) = rest.next() {
            let value = rest
                .next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
            match flag.as_str() {
                "--runs" => options.runs = super::bounded(flag, value, 1, RUNS_MAX)?,
                "--mib" => options.mib = super::bounded(flag, value, 1, MIB_MAX)?,
                "--layers" => options.layers = super::bounded(flag, value, 1, LAYERS_MAX)?,
                "--pulls" => options.pulls = super::bounded(flag, value, 1, PULLS_MAX)?,
                _ => bail!("unknown option {flag}\n{USAGE}"),
            }
        }
        Ok(options)
    }
}

/// One server under test and how skopeo reaches it.
struct Side {
    server: Server,
    /// `host:port` as image references name it.
    host: String,
    /// `--creds` for skopeo, when the server wants them.
    creds: Option<String>,
}

pub fn run(root: &Path, target_dir: &Path, options: &Options) -> Result<()> {
    for tool in ["skopeo", DOCKER_REGISTRY_BIN] {
        if Command::new(tool).arg("--version").output().is_err() {
            bail!("{tool} is missing: apt-get install skopeo docker-registry");
        }
    }
    let python = crate::test::ensure_venv(root)?;
    let aws = python.with_file_name("aws");
    let log_dir = target_dir.join("bench");
    let work = TempDir::new("registry-bench")?;
    // Each run pushes an image of its own: skopeo remembers where it saw a
    // blob and would mount it from an earlier run's repository instead.
    let layout_of = |run: usize| work.path().join(format!("layout-{run}"));
    let total_bytes = make_layout(&layout_of(0), options.mib, options.layers, 0)?;
    let megabytes = total_bytes as f64 / 1_000_000.0;
    eprintln!("image: {} layers, {total_bytes} bytes", options.layers);

    let flotilla = servers::start_flotilla(&target_dir.join("release/flotilla"), &log_dir)?;
    let endpoint = format!("http://{}", flotilla.address);
    let password = aws_cli(&aws, &endpoint, &["get-login-password"])?;
    let sides = [
        Side {
            host: format!("localhost:{}", flotilla.address.port()),
            creds: Some(format!("AWS:{}", password.trim())),
            server: flotilla,
        },
        {
            let server = servers::start_docker_registry(Path::new(DOCKER_REGISTRY_BIN), &log_dir)?;
            Side {
                host: format!("localhost:{}", server.address.port()),
                creds: None,
                server,
            }
        },
    ];
    let mut times: Vec<[Vec<f64>; 2]> = vec![[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    for run in 0..options.runs {
        let layout = layout_of(run);
        if run > 0 {
            make_layout(&layout, options.mib, options.layers, run as u64)?;
        }
        let order: [usize; 2] = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        for &which in &order {
            let side = &sides[which];
            let repository = format!("bench-{run}");
            if which == 0 {
                aws_cli(
                    &aws,
                    &endpoint,
                    &["create-repository", "--repository-name", &repository],
                )?;
            }
            let reference = format!("docker://{}/{repository}:v1", side.host);
            let started = Instant::now();
            skopeo_copy(
                side,
                &format!("oci:{}:v1", layout.display()),
                &reference,
                true,
            )?;
            let push_s = started.elapsed().as_secs_f64();
            let out = work.path().join(format!("pull-{which}-{run}"));
            let started = Instant::now();
            skopeo_copy(
                side,
                &reference,
                &format!("oci:{}:v1", out.display()),
                false,
            )?;
            let pull_s = started.elapsed().as_secs_f64();
            let _ = std::fs::remove_dir_all(&out);
            eprintln!(
                "run {run} {}: push {push_s:.2} s, pull {pull_s:.2} s",
                side.server.name
            );
            times[which][0].push(push_s);
            times[which][1].push(pull_s);
        }
        let _ = std::fs::remove_dir_all(&layout);
    }
    let mut medians = [[0.0; 2]; 2];
    for (which, side) in sides.iter().enumerate() {
        for (op_index, op) in ["push", "pull"].into_iter().enumerate() {
            let rates: Vec<f64> = times[which][op_index]
                .iter()
                .map(|s| round(megabytes / s))
                .collect();
            medians[which][op_index] = median(&rates);
            println!(
                "{}",
                json!({"bench": "registry", "server": side.server.name, "op": op, "client": "skopeo",
                       "image_mb": round(megabytes), "layers": options.layers,
                       "median_mb_per_s": medians[which][op_index], "runs_mb_per_s": rates})
            );
        }
    }
    for (op_index, op) in ["push", "pull"].into_iter().enumerate() {
        println!(
            "{}",
            json!({"bench": "registry", "op": op,
                   "ratio_flotilla_over_docker_registry": round(medians[0][op_index] / medians[1][op_index])})
        );
    }
    for side in &sides {
        concurrent_pulls(side, work.path(), options.pulls, megabytes)?;
    }
    Ok(())
}

fn concurrent_pulls(side: &Side, work: &Path, clients: usize, megabytes: f64) -> Result<()> {
    let reference = format!("docker://{}/bench-0:v1", side.host);
    let started = Instant::now();
    let children: Vec<(PathBuf, std::process::Child)> = (0..clients)
        .map(|client| {
            let out = work.join(format!("concurrent-{}-{client}", side.server.name));
            let child = skopeo_command(
                side,
                &reference,
                &format!("oci:{}:v1", out.display()),
                false,
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("starting skopeo")?;
            Ok((out, child))
        })
        .collect::<Result<_>>()?;
    let mut errors = 0;
    for (out, child) in children {
        let output = child.wait_with_output()?;
        if !output.status.success() {
            errors += 1;
            eprintln!(
                "{} pull failed: {}",
                side.server.name,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let _ = std::fs::remove_dir_all(out);
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"bench": "registry", "server": side.server.name, "op": "concurrent_pull", "clients": clients,
               "errors": errors, "seconds": round(seconds),
               "aggregate_mb_per_s": round(megabytes * clients as f64 / seconds)})
    );
    Ok(())
}

fn skopeo_command(side: &Side, source: &str, destination: &str, push: bool) -> Command {
    let mut command = Command::new("skopeo");
    command.arg("copy").arg("--quiet");
    let (tls, creds) = if push {
        ("--dest-tls-verify=false", "--dest-creds")
    } else {
        ("--src-tls-verify=false", "--src-creds")
    };
    command.arg(tls);
    if let Some(value) = &side.creds {
        command.args([creds, value]);
    }
    command.args([source, destination]);
    command
}

fn skopeo_copy(side: &Side, source: &str, destination: &str, push: bool) -> Result<()> {
    let output = skopeo_command(side, source, destination, push)
        .output()
        .context("running skopeo")?;
    if !output.status.success() {
        bail!(
            "skopeo copy {source} {destination} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn aws_cli(aws: &Path, endpoint: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(aws)
        .args(["--endpoint-url", endpoint, "--region", REGION, "ecr"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .with_context(|| format!("running {}", aws.display()))?;
    if !output.status.success() {
        bail!(
            "aws ecr {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Writes an OCI image layout of `layers` uncompressed layers of
/// pseudo-random (incompressible) bytes drawn from `seed`, `mib` MiB in all;
/// returns the bytes a copy moves (layers and config).
fn make_layout(dir: &Path, mib: usize, layers: usize, seed: u64) -> Result<u64> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let write_blob = |bytes: &[u8]| -> Result<String> {
        let hex = flotilla_sigv4::sha256_hex(bytes);
        std::fs::write(blobs.join(hex.as_str()), bytes)?;
        Ok(format!("sha256:{}", hex.as_str()))
    };
    let layer_bytes = mib * 1024 * 1024 / layers;
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut descriptors = Vec::new();
    let mut total = 0u64;
    for _ in 0..layers {
        let mut data = Vec::with_capacity(layer_bytes);
        while data.len() < layer_bytes {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            data.extend_from_slice(&state.to_le_bytes());
        }
        data.truncate(layer_bytes);
        let digest = write_blob(&data)?;
        total += data.len() as u64;
        descriptors.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": data.len()}));
    }
    let diff_ids: Vec<_> = descriptors.iter().map(|d| d["digest"].clone()).collect();
    let config = json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}).to_string();
    let config_digest = write_blob(config.as_bytes())?;
    total += config.len() as u64;
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": descriptors,
    })
    .to_string();
    let manifest_digest = write_blob(manifest.as_bytes())?;
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": "v1"}}]});
    std::fs::write(dir.join("index.json"), index.to_string())?;
    Ok(total)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}
