//! Helpers for tests that run against a real Docker engine (feature
//! `testing`). No image registry is reachable from the build machines, so
//! tests run a small image built here from Debian's static busybox.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

/// The local test image: a `FROM scratch` image holding a static busybox
/// with its applets linked into `/bin`, a page for `httpd` under `/www`, and
/// `root` and `nobody` users.
pub const TEST_IMAGE: &str = "flotilla-test/busybox:latest";
/// Where `apt-get install busybox-static` puts the binary.
const BUSYBOX_PATH: &str = "/bin/busybox";
/// What `httpd -f -p PORT -h /www` serves at `/`.
pub const TEST_PAGE: &str = "flotilla test page\n";

const DOCKERFILE: &str = "FROM scratch
COPY busybox /bin/busybox
RUN [\"/bin/busybox\", \"mkdir\", \"-p\", \"/tmp\", \"/www\", \"/etc\", \"/usr/bin\", \"/sbin\", \"/usr/sbin\"]
RUN [\"/bin/busybox\", \"--install\", \"-s\"]
COPY passwd /etc/passwd
COPY group /etc/group
COPY index.html /www/index.html
CMD [\"sh\"]
";
const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

#[derive(Debug, thiserror::Error)]
pub enum TestImageError {
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("cannot prepare the build context in {path}: {source}")]
    Context {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// True when a Docker engine socket exists on this machine.
pub fn docker_available() -> bool {
    Path::new(crate::DEFAULT_SOCKET_PATH).exists()
}

/// Whether the tests that need Docker must run: under CI (the environment
/// variable `CI` set, as CI services set it, and not to `false` or `0`) a
/// missing engine fails them instead of skipping them, so that CI cannot
/// pass without having run them.
pub fn docker_required() -> bool {
    docker_required_by(std::env::var("CI").ok().as_deref())
}

fn docker_required_by(ci: Option<&str>) -> bool {
    ci.is_some_and(|value| !matches!(value.trim(), "" | "0" | "false" | "FALSE" | "False"))
}

/// `false` (after saying why) when `test` must be skipped for want of a
/// Docker engine; panics instead when [`docker_required`].
pub fn docker_or_skip(test: &str) -> bool {
    if docker_available() {
        return true;
    }
    assert!(
        !docker_required(),
        "{test}: CI is set but there is no Docker engine socket at {}; the tests that need Docker must run in CI",
        crate::DEFAULT_SOCKET_PATH
    );
    eprintln!(
        "skipping {test}: no Docker socket at {} (under CI this fails)",
        crate::DEFAULT_SOCKET_PATH
    );
    false
}

/// Builds [`TEST_IMAGE`] unless it exists, installing `busybox-static`
/// first when `/bin/busybox` is missing. Idempotent and safe to call from
/// many tests at once (the work is done once per process; concurrent
/// processes at worst build the same image twice).
pub fn ensure_test_image() -> Result<(), TestImageError> {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if *built {
        return Ok(());
    }
    if run(Command::new("docker").args(["image", "inspect", TEST_IMAGE])).is_ok() {
        *built = true;
        return Ok(());
    }
    if !Path::new(BUSYBOX_PATH).exists() {
        install_busybox()?;
    }
    let context = std::env::temp_dir().join(format!("flotilla-test-image-{}", std::process::id()));
    let prepare = || -> std::io::Result<()> {
        std::fs::create_dir_all(&context)?;
        std::fs::copy(BUSYBOX_PATH, context.join("busybox"))?;
        std::fs::write(context.join("Dockerfile"), DOCKERFILE)?;
        std::fs::write(context.join("passwd"), PASSWD)?;
        std::fs::write(context.join("group"), GROUP)?;
        std::fs::write(context.join("index.html"), TEST_PAGE)?;
        Ok(())
    };
    prepare().map_err(|source| TestImageError::Context {
        path: context.clone(),
        source,
    })?;
    // The classic builder needs no base image and no buildx plugin.
    let result = run(Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "--quiet", "--tag", TEST_IMAGE])
        .arg(&context));
    // Leaving the directory behind would only waste a few MiB of /tmp.
    let _ = std::fs::remove_dir_all(&context);
    result?;
    *built = true;
    Ok(())
}

fn install_busybox() -> Result<(), TestImageError> {
    let install = || {
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "busybox-static"])
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    if install().is_ok() {
        return Ok(());
    }
    // A fresh machine has no package lists yet.
    run(Command::new("apt-get").args(["update", "-q"]))?;
    install().map(|_| ())
}

fn run(command: &mut Command) -> Result<Output, TestImageError> {
    let described = format!("{command:?}");
    let output = command.output().map_err(|source| TestImageError::Spawn {
        command: described.clone(),
        source,
    })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(TestImageError::Failed {
            command: described,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::docker_required_by;

    #[test]
    fn ci_requires_docker_unless_unset_or_false() {
        for (ci, required) in [
            (None, false),
            (Some(""), false),
            (Some("false"), false),
            (Some("0"), false),
            (Some("true"), true),
            (Some("1"), true),
            (Some("yes"), true),
        ] {
            assert_eq!(docker_required_by(ci), required, "CI={ci:?}");
        }
    }
}
