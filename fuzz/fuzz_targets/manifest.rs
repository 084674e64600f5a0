//! The registry's manifest parser on arbitrary bytes: the first byte picks
//! the content type the manifest is sent with; it must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: &[&str] = &[
    "",
    "application/json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.example+json",
];

fuzz_target!(|data: &[u8]| {
    let Some((first, body)) = data.split_first() else { return };
    let content_type = CONTENT_TYPES[usize::from(*first) % CONTENT_TYPES.len()];
    let _ = flotilla_registry::manifest::parse(body, content_type);
});
