//! Recorded schemas: the shape of each normalized resource's record as the pinned API
//! version returns it, one file per provider, version and resource
//! (`contracts/<provider>/<version>/<resource>.json`, `version` from
//! [`junction_catalog::version_dir`]).
//!
//! A file is a path → type shape rather than a JSON Schema: it is what the drift check
//! compares, so "fields added, removed, changed in type" is a map difference rather than
//! an interpretation of validator errors, and a re-recorded file's diff in review reads
//! as the provider's change. Each file names where it was recorded from: the fixture in
//! `tests/fixtures/` taken from the provider's documentation (the default), or a sandbox
//! response (`record-contracts --from`).

use std::path::{Path, PathBuf};

use junction_catalog::Catalog;
use junction_pipeline::drift::{Fingerprint, Shape};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/contracts.rs"));
}

/// Where each normalized resource's schema is recorded from by default: the fixture
/// (under `tests/fixtures/`) and the JSON pointer of the record in its `body`.
pub const FIXTURES: &[(&str, &str, &str, &str)] = &[
    ("gmail", "thread", "gmail/thread.json", ""),
    (
        "slack",
        "conversation",
        "slack/conversations-info.json",
        "/channel",
    ),
    ("hubspot", "deal", "hubspot/deal.json", ""),
    (
        "salesforce",
        "opportunity",
        "salesforce/opportunity.json",
        "",
    ),
    ("asana", "task", "asana/task.json", "/data"),
    ("linear", "issue", "linear/issue-node.json", ""),
    ("microsoft", "message", "microsoft/message.json", ""),
];

/// One recorded schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedSchema {
    pub provider: String,
    /// The pinned API version it was recorded for (none: the API has none).
    pub api_version: Option<String>,
    pub resource: String,
    /// Where it was recorded from (a fixture path, or `sandbox response <file>`).
    pub recorded_from: String,
    /// The shape's fingerprint, for a glance at whether two files agree.
    pub fingerprint: Fingerprint,
    pub shape: Shape,
}

impl RecordedSchema {
    /// The schema of `record` (a provider's record as the adapter maps it).
    pub fn of(
        provider: &str,
        api_version: Option<&str>,
        resource: &str,
        recorded_from: &str,
        record: &Value,
    ) -> Self {
        let shape = Shape::of(record);
        RecordedSchema {
            provider: provider.to_owned(),
            api_version: api_version.map(str::to_owned),
            resource: resource.to_owned(),
            recorded_from: recorded_from.to_owned(),
            fingerprint: shape.fingerprint(),
            shape,
        }
    }

    /// Its path under `contracts/`.
    pub fn relative_path(&self) -> String {
        relative_path(&self.provider, self.api_version.as_deref(), &self.resource)
    }

    /// The file's text: pretty JSON, a final newline.
    pub fn to_file(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// `<provider>/<version>/<resource>.json`.
pub fn relative_path(provider: &str, api_version: Option<&str>, resource: &str) -> String {
    format!(
        "{provider}/{}/{resource}.json",
        junction_catalog::version_dir(api_version)
    )
}

/// A recorded schema could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("no fixture records {provider} {resource} (FIXTURES)")]
    UnknownResource { provider: String, resource: String },
    #[error("{path}: cannot be read")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not JSON")]
    NotJson {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: no record at `{pointer}`")]
    NoRecord { path: String, pointer: String },
}

/// The recorded schemas built into this binary.
pub fn embedded() -> Vec<RecordedSchema> {
    embedded::FILES
        .iter()
        .filter_map(|(_, text)| serde_json::from_str(text).ok())
        .collect()
}

/// The recorded schema of `provider`'s `resource` for its pinned version, if recorded.
pub fn recorded(catalog: &Catalog, provider: &str, resource: &str) -> Option<RecordedSchema> {
    let pinned = catalog.get(provider).and_then(|p| p.api_version.as_deref());
    let path = relative_path(provider, pinned, resource);
    embedded::FILES
        .iter()
        .find(|(file, _)| *file == path)
        .and_then(|(_, text)| serde_json::from_str(text).ok())
}

/// The repository's root, from this crate's manifest directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Records `provider`'s `resource` from its fixture ([`FIXTURES`]) for the catalog's
/// pinned version.
pub fn record_from_fixture(
    catalog: &Catalog,
    root: &Path,
    provider: &str,
    resource: &str,
) -> Result<RecordedSchema, RecordError> {
    let (_, _, fixture, pointer) = FIXTURES
        .iter()
        .find(|(p, r, ..)| *p == provider && *r == resource)
        .ok_or_else(|| RecordError::UnknownResource {
            provider: provider.to_owned(),
            resource: resource.to_owned(),
        })?;
    let path = format!("tests/fixtures/{fixture}");
    let value = read_json(&root.join(&path), &path)?;
    let body_pointer = format!("/body{pointer}");
    let record = value
        .pointer(&body_pointer)
        .ok_or_else(|| RecordError::NoRecord {
            path: path.clone(),
            pointer: body_pointer.clone(),
        })?;
    let pinned = catalog.get(provider).and_then(|p| p.api_version.as_deref());
    Ok(RecordedSchema::of(
        provider, pinned, resource, &path, record,
    ))
}

/// Records `provider`'s `resource` from a saved response (a sandbox's answer to the
/// resource's contract read), the record at `pointer` in it.
pub fn record_from_response(
    catalog: &Catalog,
    file: &Path,
    provider: &str,
    resource: &str,
    pointer: &str,
) -> Result<RecordedSchema, RecordError> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let value = read_json(file, &name)?;
    let record = value
        .pointer(pointer)
        .ok_or_else(|| RecordError::NoRecord {
            path: name.clone(),
            pointer: pointer.to_owned(),
        })?;
    let pinned = catalog.get(provider).and_then(|p| p.api_version.as_deref());
    Ok(RecordedSchema::of(
        provider,
        pinned,
        resource,
        &format!("sandbox response {name}"),
        record,
    ))
}

fn read_json(path: &Path, shown: &str) -> Result<Value, RecordError> {
    let text = std::fs::read_to_string(path).map_err(|source| RecordError::Read {
        path: shown.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| RecordError::NotJson {
        path: shown.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> &'static Catalog {
        Catalog::embedded().expect("catalog")
    }

    /// Every normalized resource has its recorded schema for the pinned version, and it
    /// is what its fixture records today: a fixture or pin that moved without a
    /// re-record fails here (run `cargo run -p junction-contracts --bin record-contracts`).
    #[test]
    fn every_normalized_resource_has_its_schema_recorded_for_the_pinned_version() {
        let root = repo_root();
        for (provider, reads) in junction_catalog::CONTRACT_READS {
            for read in *reads {
                let embedded = recorded(catalog(), provider, read.resource).unwrap_or_else(|| {
                    panic!(
                        "contracts/{} is missing: run record-contracts",
                        relative_path(
                            provider,
                            catalog()
                                .get(provider)
                                .and_then(|p| p.api_version.as_deref()),
                            read.resource
                        )
                    )
                });
                let fresh = record_from_fixture(catalog(), &root, provider, read.resource)
                    .expect("recordable");
                if embedded.recorded_from.starts_with("tests/fixtures/") {
                    assert_eq!(embedded, fresh, "{provider} {}: re-record", read.resource);
                }
                assert_eq!(embedded.fingerprint, embedded.shape.fingerprint());
                assert!(embedded.shape.len() > 3, "{provider}: a real record");
            }
        }
        assert_eq!(
            FIXTURES.len(),
            junction_catalog::CONTRACT_READS
                .iter()
                .map(|(_, reads)| reads.len())
                .sum::<usize>()
        );
        assert_eq!(embedded().len(), FIXTURES.len(), "no stray recorded schema");
    }

    #[test]
    fn seven_providers_are_recorded() {
        let mut providers: Vec<_> = embedded().into_iter().map(|s| s.provider).collect();
        providers.dedup();
        assert_eq!(
            providers,
            [
                "asana",
                "gmail",
                "hubspot",
                "linear",
                "microsoft",
                "salesforce",
                "slack"
            ]
        );
    }
}
