//! Snapshot tests: every fixture in `tests/fixtures/<provider>/*.json` is normalized and
//! the result compared with the `*.expected.json` next to it.
//!
//! A fixture is a JSON object: `source` (where the payload's shape comes from: the
//! provider's doc page or SDK file), the [`RawEvent`] fields (`provider`, `resource`,
//! `event_type`, `event_id`, `headers`, `pinned_api_version`) and the payload as `body`
//! (JSON, re-serialized to bytes) or `body_text` (sent verbatim, for form posts). The
//! expected file holds `{"ok": <Normalization>}` or `{"error": "<message>"}`.
//!
//! To (re)write the expected files after an intended mapping change, run
//! `JUNCTION_UPDATE_SNAPSHOTS=1 cargo test -p shared normalize::fixture_tests`, then
//! review the diff: a changed mapping also needs its adapter's `mapping_version` bumped.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use serde_json::{Value, json};

use super::{ADAPTERS, Model, RawEvent, normalize};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    source: String,
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
    body: Option<Value>,
    #[serde(default)]
    body_text: Option<String>,
}

fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn fixture_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let providers = fs::read_dir(fixtures_root()).expect("tests/fixtures must exist");
    for provider in providers.flatten() {
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

/// Runs one fixture; returns the outcome as JSON and the adapters that produced items.
fn run(path: &Path) -> (Value, BTreeSet<String>) {
    let text = fs::read_to_string(path).expect("readable fixture");
    let fixture: Fixture = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("{}: not a fixture: {err}", path.display()));
    assert!(
        fixture.source.starts_with("https://"),
        "{}: `source` must link the documented shape",
        path.display()
    );
    let dir = path
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    assert_eq!(
        dir,
        fixture.provider,
        "{}: fixture lives under the wrong provider directory",
        path.display()
    );
    let body = match (&fixture.body, &fixture.body_text) {
        (Some(body), None) => serde_json::to_vec(body).expect("serializable"),
        (None, Some(text)) => text.as_bytes().to_vec(),
        _ => panic!("{}: exactly one of body/body_text", path.display()),
    };
    let raw = RawEvent {
        provider: &fixture.provider,
        resource: fixture.resource.as_deref(),
        event_type: fixture.event_type.as_deref(),
        event_id: fixture.event_id.as_deref(),
        headers: &fixture.headers,
        body: &body,
        pinned_api_version: fixture.pinned_api_version.as_deref(),
    };
    match normalize(&raw) {
        Ok(normalization) => {
            let adapters = normalization
                .items
                .iter()
                .map(|item| item.meta().adapter.to_owned())
                .collect();
            (json!({ "ok": normalization }), adapters)
        }
        Err(err) => (json!({ "error": err.to_string() }), BTreeSet::new()),
    }
}

#[test]
fn fixtures_match_their_expected_output() {
    let update = std::env::var_os("JUNCTION_UPDATE_SNAPSHOTS").is_some();
    let files = fixture_files();
    assert!(files.len() >= 20, "fixtures went missing: {}", files.len());
    let mut failures = Vec::new();
    let mut covered = BTreeSet::new();
    let mut errors = 0;
    for path in &files {
        let (actual, adapters) = run(path);
        covered.extend(adapters);
        if actual.get("error").is_some() {
            errors += 1;
        }
        let expected_path = path.with_extension("expected.json");
        let pretty = serde_json::to_string_pretty(&actual).expect("serializable") + "\n";
        if update {
            fs::write(&expected_path, pretty).expect("writable expected file");
            continue;
        }
        match fs::read_to_string(&expected_path) {
            Err(_) => failures.push(format!(
                "{}: no expected file (run with JUNCTION_UPDATE_SNAPSHOTS=1 and review it)",
                path.display()
            )),
            Ok(text) => {
                let expected: Value = serde_json::from_str(&text).unwrap_or_else(|err| {
                    panic!("{}: invalid JSON: {err}", expected_path.display())
                });
                if expected != actual {
                    failures.push(format!(
                        "{}:\n--- expected\n{text}\n+++ actual\n{pretty}",
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(errors >= 5, "unmappable-payload fixtures went missing");
    let missing: Vec<_> = ADAPTERS
        .iter()
        .map(|a| a.name)
        .filter(|name| *name != "generic.event" && !covered.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "adapters without a fixture: {missing:?}"
    );
}

/// `Model::fields` (what source-of-truth rules may name) lists exactly the fields the
/// models serialize: every key of every fixture's records besides the meta fields.
#[test]
fn model_field_lists_match_the_serialized_records() {
    let meta_keys = [
        "provider",
        "id",
        "adapter",
        "mapping_version",
        "change",
        "source_timestamp",
        "complete",
        "cleared_fields",
        "provider_event_id",
        "item",
    ];
    let mut seen: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    for path in fixture_files() {
        let (actual, _) = run(&path);
        let Some(items) = actual.pointer("/ok/items").and_then(Value::as_array) else {
            continue;
        };
        for item in items {
            let Some(object) = item.as_object() else {
                continue;
            };
            let Some(model) = object
                .get("item")
                .and_then(Value::as_str)
                .and_then(Model::from_name)
            else {
                continue;
            };
            seen.entry(model.as_str()).or_default().extend(
                object
                    .keys()
                    .filter(|k| !meta_keys.contains(&k.as_str()))
                    .cloned(),
            );
        }
    }
    for model in Model::RECORDS {
        let listed: BTreeSet<String> = model.fields().iter().map(|f| (*f).to_owned()).collect();
        let serialized = seen.get(model.as_str()).cloned().unwrap_or_default();
        assert_eq!(listed, serialized, "Model::fields() for {}", model.as_str());
    }
}
