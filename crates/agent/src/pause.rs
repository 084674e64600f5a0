//! The pause container's image: tiny, local, and made on demand.
//!
//! An awsvpc task's network namespace is held by a pause container that
//! does nothing. Its image (default `flotilla/pause:latest`) is used when the
//! engine has it; otherwise, when the host has a statically linked busybox,
//! the agent makes the image itself from a one-file tar (`/bin/busybox`),
//! because a host without a registry could not pull one.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use flotilla_runtime::{ContainerRuntime, PullPolicy};
use tokio::sync::Mutex;

pub const DEFAULT_PAUSE_IMAGE: &str = "flotilla/pause:latest";
/// Where a static busybox may live on the host.
pub const BUSYBOX_PATHS: [&str; 2] = ["/bin/busybox", "/usr/bin/busybox"];
/// A busybox larger than this is not the small static binary we want.
pub const BUSYBOX_MAX_BYTES: u64 = 16 * 1024 * 1024;

pub type ImportFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Makes an image from a root filesystem tar (`docker import`). The
/// runtime's trait has no such call yet; until it does, this is the one
/// place outside the runtime crate that reaches the engine.
pub trait ImageImporter: Send + Sync + 'static {
    fn import<'a>(&'a self, root_filesystem_tar: Vec<u8>, reference: &'a str) -> ImportFuture<'a>;
}

/// Imports through the `docker` command-line client.
#[derive(Debug, Default)]
pub struct DockerCliImporter;

/// Bound on one `docker import`.
const IMPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

impl ImageImporter for DockerCliImporter {
    fn import<'a>(&'a self, root_filesystem_tar: Vec<u8>, reference: &'a str) -> ImportFuture<'a> {
        Box::pin(async move {
            use tokio::io::AsyncWriteExt;
            let mut child = tokio::process::Command::new("docker")
                .args(["import", "-", reference])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|error| format!("cannot run docker import: {error}"))?;
            let run = async {
                if let Some(mut stdin) = child.stdin.take() {
                    stdin
                        .write_all(&root_filesystem_tar)
                        .await
                        .map_err(|error| format!("docker import: {error}"))?;
                    drop(stdin);
                }
                child
                    .wait_with_output()
                    .await
                    .map_err(|error| format!("docker import: {error}"))
            };
            let output = tokio::time::timeout(IMPORT_TIMEOUT, run)
                .await
                .map_err(|_| "docker import timed out".to_owned())??;
            if output.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "docker import failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ))
            }
        })
    }
}

/// Makes sure the pause image exists, once per process.
pub struct PauseImage {
    pub reference: String,
    importer: Option<Arc<dyn ImageImporter>>,
    ready: Mutex<bool>,
}

impl std::fmt::Debug for PauseImage {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PauseImage")
            .field("reference", &self.reference)
            .finish_non_exhaustive()
    }
}

impl PauseImage {
    pub fn new(reference: String, importer: Option<Arc<dyn ImageImporter>>) -> Self {
        Self {
            reference,
            importer,
            ready: Mutex::new(false),
        }
    }

    pub async fn ensure(&self, runtime: &dyn ContainerRuntime) -> Result<(), String> {
        let mut ready = self.ready.lock().await;
        if *ready {
            return Ok(());
        }
        let local = runtime
            .pull_image(&self.reference, PullPolicy::IfNotPresent, None)
            .await;
        if let Err(error) = local {
            let Some(importer) = &self.importer else {
                return Err(format!(
                    "pause image {} is not available: {error}",
                    self.reference
                ));
            };
            let busybox = find_static_busybox().ok_or_else(|| {
                format!("pause image {} is not available ({error}) and the host has no static busybox to make it from", self.reference)
            })?;
            tracing::info!(image = %self.reference, busybox = %busybox.0, "making the pause image from the host's busybox");
            importer
                .import(
                    single_file_tar("bin/busybox", &busybox.1, 0o755),
                    &self.reference,
                )
                .await?;
            runtime
                .pull_image(&self.reference, PullPolicy::Never, None)
                .await
                .map_err(|error| {
                    format!(
                        "pause image {} still missing after import: {error}",
                        self.reference
                    )
                })?;
        }
        *ready = true;
        Ok(())
    }
}

/// The first statically linked busybox on the host, with its bytes.
fn find_static_busybox() -> Option<(String, Vec<u8>)> {
    BUSYBOX_PATHS.iter().find_map(|path| {
        let metadata = std::fs::metadata(Path::new(path)).ok()?;
        if metadata.len() > BUSYBOX_MAX_BYTES {
            return None;
        }
        let bytes = std::fs::read(path).ok()?;
        is_static_elf(&bytes).then(|| ((*path).to_owned(), bytes))
    })
}

/// Whether `bytes` is a 64-bit little-endian ELF executable without a
/// program interpreter (PT_INTERP), i.e. one that runs in an empty root.
pub fn is_static_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let read_u16 = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let read_u32 = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let read_u64 = |at: usize| {
        bytes
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    };
    if bytes.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1]) {
        return false;
    }
    let (Some(program_headers), Some(entry_size), Some(count)) =
        (read_u64(0x20), read_u16(0x36), read_u16(0x38))
    else {
        return false;
    };
    let Ok(program_headers) = usize::try_from(program_headers) else {
        return false;
    };
    (0..usize::from(count)).all(|index| {
        let at = program_headers + index * usize::from(entry_size);
        read_u32(at).is_some_and(|kind| kind != PT_INTERP)
    })
}

/// A POSIX ustar archive holding the directories of `path` and one file.
pub fn single_file_tar(path: &str, contents: &[u8], mode: u32) -> Vec<u8> {
    let mut archive = Vec::with_capacity(contents.len() + 4096);
    let mut directory = String::new();
    for part in path
        .split('/')
        .collect::<Vec<_>>()
        .split_last()
        .map(|(_, dirs)| dirs.to_vec())
        .unwrap_or_default()
    {
        directory.push_str(part);
        directory.push('/');
        archive.extend_from_slice(&tar_header(&directory, 0, 0o755, b'5'));
    }
    archive.extend_from_slice(&tar_header(path, contents.len() as u64, mode, b'0'));
    archive.extend_from_slice(contents);
    archive.resize(archive.len().div_ceil(512) * 512, 0);
    // Two zero blocks end the archive.
    archive.resize(archive.len() + 1024, 0);
    archive
}

fn tar_header(name: &str, size: u64, mode: u32, kind: u8) -> [u8; 512] {
    let mut header = [0u8; 512];
    let put = |header: &mut [u8; 512], at: usize, value: &[u8]| {
        header[at..at + value.len()].copy_from_slice(value)
    };
    put(&mut header, 0, &name.as_bytes()[..name.len().min(100)]);
    put(&mut header, 100, format!("{mode:07o}\0").as_bytes());
    put(&mut header, 108, b"0000000\0");
    put(&mut header, 116, b"0000000\0");
    put(&mut header, 124, format!("{size:011o}\0").as_bytes());
    put(&mut header, 136, b"00000000000\0");
    header[156] = kind;
    put(&mut header, 257, b"ustar\x0000");
    // The checksum is computed with its own field as spaces.
    put(&mut header, 148, b"        ");
    let checksum: u32 = header.iter().map(|byte| u32::from(*byte)).sum();
    put(&mut header, 148, format!("{checksum:06o}\0 ").as_bytes());
    header
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tar_has_directory_file_and_padding() {
        let archive = single_file_tar("bin/busybox", b"hello", 0o755);
        assert_eq!(archive.len(), 512 * 3 + 1024);
        assert_eq!(&archive[..4], b"bin/");
        assert_eq!(archive[156], b'5');
        assert_eq!(&archive[512..523], b"bin/busybox");
        assert_eq!(archive[512 + 156], b'0');
        assert_eq!(&archive[1024..1029], b"hello");
        let header = &archive[512..1024];
        let stored =
            u32::from_str_radix(std::str::from_utf8(&header[148..154]).unwrap(), 8).unwrap();
        let computed: u32 = header
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(*b)
                }
            })
            .sum();
        assert_eq!(stored, computed);
    }

    #[test]
    fn static_elf_detection() {
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        // This test binary itself is dynamically linked.
        let own = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(!is_static_elf(&own));
        if let Some((_, busybox)) = find_static_busybox() {
            assert!(is_static_elf(&busybox));
        }
    }
}
