//! Normalization benchmarks: `junction_pipeline::normalize::normalize` per adapter, over the
//! adapter's snapshot fixtures in `tests/fixtures/<provider>/` (the documented payload
//! shapes the fixture tests check).
//!
//! Every verified event goes through exactly one adapter in the consumer, so an
//! adapter's cost per payload is part of every message's latency; a regression in one
//! mapping shows up here by name. One benchmark per adapter in `ADAPTERS`, named after
//! it; each iteration normalizes all of the adapter's fixtures that map to items
//! (fixtures that fail on purpose, and heartbeats without items, exercise error and
//! early-return paths and are left out). `generic.event` has no fixture: it runs on the
//! GitHub fixture's payload under an unknown provider id, which is what it would see.
//!
//! `cargo bench -p shared --bench normalize`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    hint::black_box,
    path::{Path, PathBuf},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use junction_pipeline::normalize::{ADAPTERS, RawEvent, normalize};
use serde::Deserialize;

/// A snapshot fixture: the `RawEvent` fields and the payload (see the fixture tests).
#[derive(Debug, Clone, Deserialize)]
struct Fixture {
    provider: String,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    pinned_api_version: Option<String>,
    #[serde(default)]
    body: Option<serde_json::Value>,
    #[serde(default)]
    body_text: Option<String>,
}

/// A fixture ready to normalize: the body as the consumer would hand it over.
#[derive(Debug)]
struct Case {
    fixture: Fixture,
    body: Vec<u8>,
}

impl Case {
    fn load(path: &Path) -> Case {
        let text = fs::read_to_string(path).expect("readable fixture");
        let fixture: Fixture = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("{}: not a fixture: {err}", path.display()));
        let body = match (&fixture.body, &fixture.body_text) {
            (Some(body), None) => serde_json::to_vec(body).expect("serializable"),
            (None, Some(text)) => text.as_bytes().to_vec(),
            _ => panic!("{}: exactly one of body/body_text", path.display()),
        };
        Case { fixture, body }
    }

    /// A fixture made in code (its payload must be JSON).
    fn load_from(fixture: Fixture) -> Case {
        let body =
            serde_json::to_vec(fixture.body.as_ref().expect("a JSON body")).expect("serializable");
        Case { fixture, body }
    }

    fn raw(&self) -> RawEvent<'_> {
        RawEvent {
            provider: &self.fixture.provider,
            resource: self.fixture.resource.as_deref(),
            event_type: self.fixture.event_type.as_deref(),
            event_id: self.fixture.event_id.as_deref(),
            headers: &self.fixture.headers,
            body: &self.body,
            pinned_api_version: self.fixture.pinned_api_version.as_deref(),
        }
    }

    /// The one adapter that mapped this fixture to items, or `None` when it fails or
    /// yields nothing.
    fn adapter(&self) -> Option<&'static str> {
        let normalization = normalize(&self.raw()).ok()?;
        let adapters: BTreeSet<&'static str> = normalization
            .items
            .iter()
            .map(|item| item.meta().adapter)
            .collect();
        assert!(
            adapters.len() <= 1,
            "{}: one fixture, several adapters: {adapters:?}",
            self.fixture.provider
        );
        adapters.into_iter().next()
    }
}

fn fixture_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let mut files = Vec::new();
    for provider in fs::read_dir(root)
        .expect("tests/fixtures must exist")
        .flatten()
    {
        let Ok(entries) = fs::read_dir(provider.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.ends_with(".json") && !name.ends_with(".expected.json") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The fixtures of every adapter, by adapter name.
fn cases_by_adapter() -> BTreeMap<&'static str, Vec<Case>> {
    let mut by_adapter: BTreeMap<&'static str, Vec<Case>> = BTreeMap::new();
    let mut github_payload = None;
    for path in fixture_files() {
        let case = Case::load(&path);
        if case.fixture.provider == "github" && github_payload.is_none() {
            github_payload = Some(case.fixture.clone());
        }
        if let Some(adapter) = case.adapter() {
            by_adapter.entry(adapter).or_default().push(case);
        }
    }
    let mut generic = github_payload.expect("a GitHub fixture");
    generic.provider = "acme".into();
    let generic = Case::load_from(generic);
    assert_eq!(generic.adapter(), Some("generic.event"));
    by_adapter.entry("generic.event").or_default().push(generic);

    let missing: Vec<_> = ADAPTERS
        .iter()
        .map(|a| a.name)
        .filter(|name| !by_adapter.contains_key(name))
        .collect();
    assert!(
        missing.is_empty(),
        "adapters without a fixture: {missing:?}"
    );
    by_adapter
}

fn adapters(c: &mut Criterion) {
    let by_adapter = cases_by_adapter();
    let mut group = c.benchmark_group("normalize");
    // In `ADAPTERS` order, so the report reads like the dispatch table.
    for adapter in ADAPTERS {
        let cases = &by_adapter[adapter.name];
        let raws: Vec<RawEvent<'_>> = cases.iter().map(Case::raw).collect();
        let bytes: usize = cases.iter().map(|case| case.body.len()).sum();
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(adapter.name, |b| {
            b.iter(|| {
                for raw in &raws {
                    let _ = black_box(normalize(black_box(raw)));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, adapters);
criterion_main!(benches);
