//! Manifests are a trust boundary: anyone with a push token sends them. The
//! parser must answer `Ok` or `Err` for every input and content type, never
//! panic, and accept nothing malformed. The stable counterpart of the
//! `manifest` cargo-fuzz target: valid manifests of every kind are mutated
//! by a seeded xorshift generator (byte flips, truncations, splices, edge
//! values, deep nesting) and each mutant is parsed under every content type.
//!
//! `MANIFEST_FUZZ_SEED=<u64>` and `MANIFEST_FUZZ_ROUNDS=<n>` run it longer.

use std::panic::{catch_unwind, AssertUnwindSafe};

use flotilla_registry::manifest::{
    self, ManifestKind, DOCKER_CONFIG, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST,
};

const DEFAULT_SEED: u64 = 0x5eed_0c10_0000_0001;
const DEFAULT_ROUNDS: usize = 2_000;
const NESTING_DEPTH: usize = 10_000;
const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }
}

fn seeds() -> Vec<String> {
    vec![
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{A}","size":10}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{B}","size":20}}]}}"#
        ),
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/x.a","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{A}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{B}","size":1}},"annotations":{{"k":"v"}}}}"#
        ),
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{A}","size":7,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        ),
    ]
}

const SPLICES: &[&str] = &[
    "null",
    "-1",
    "18446744073709551616",
    "1e999",
    "\"\"",
    "[]",
    "{}",
    "\"sha256:\"",
    "\"\\ud800\"",
    "\"a/b c\"",
    "2",
    "true",
    "\"application/vnd.docker.distribution.manifest.list.v2+json\"",
];

fn mutate(rng: &mut XorShift, input: &str) -> Vec<u8> {
    let mut bytes = input.as_bytes().to_vec();
    match rng.below(6) {
        0 => {
            for _ in 0..=rng.below(8) {
                let at = rng.below(bytes.len());
                bytes[at] = rng.next() as u8;
            }
        }
        1 => bytes.truncate(rng.below(bytes.len())),
        2 => {
            // Replace a value after a colon with an edge case.
            let colons: Vec<usize> = bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b':')
                .map(|(i, _)| i)
                .collect();
            if let Some(&at) = colons.get(rng.below(colons.len())) {
                let end = bytes[at + 1..]
                    .iter()
                    .position(|b| *b == b',' || *b == b'}')
                    .map_or(bytes.len(), |p| at + 1 + p);
                let splice = SPLICES[rng.below(SPLICES.len())].as_bytes();
                bytes.splice(at + 1..end, splice.iter().copied());
            }
        }
        3 => {
            let at = rng.below(bytes.len());
            let copy: Vec<u8> = bytes[at..].to_vec();
            bytes.extend_from_slice(&copy);
        }
        4 => {
            let depth = rng.below(NESTING_DEPTH);
            let mut deep = "[".repeat(depth).into_bytes();
            deep.extend(std::iter::repeat_n(b']', depth));
            bytes = deep;
        }
        _ => bytes = (0..rng.below(256)).map(|_| rng.next() as u8).collect(),
    }
    bytes
}

#[test]
fn parsing_never_panics_and_accepts_only_well_formed_manifests() {
    let seed = std::env::var("MANIFEST_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let rounds = std::env::var("MANIFEST_FUZZ_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS);
    let mut rng = XorShift(seed | 1);
    let content_types: Vec<&str> = ManifestKind::ALL
        .iter()
        .map(|k| k.media_type())
        .chain([
            "",
            "application/json",
            "application/vnd.example+json; charset=utf-8",
            "\u{0}",
        ])
        .collect();
    for body in seeds() {
        for round in 0..rounds {
            let mutant = mutate(&mut rng, &body);
            for content_type in &content_types {
                let outcome =
                    catch_unwind(AssertUnwindSafe(|| manifest::parse(&mutant, content_type)));
                let shown = String::from_utf8_lossy(&mutant[..mutant.len().min(600)]).into_owned();
                let Ok(result) = outcome else {
                    panic!("seed {seed} round {round}: parse panicked on {content_type:?} {shown}");
                };
                if let Ok(parsed) = result {
                    // What is accepted is a JSON object with schemaVersion 2
                    // and descriptors whose digests parse.
                    let value: serde_json::Value =
                        serde_json::from_slice(&mutant).expect("accepted input is JSON");
                    assert_eq!(
                        value["schemaVersion"], 2,
                        "seed {seed} round {round}: {shown}"
                    );
                    for descriptor in parsed.blobs().chain(parsed.manifests.iter()) {
                        assert!(descriptor.digest.to_string().starts_with("sha256:"));
                    }
                }
            }
        }
    }
}
