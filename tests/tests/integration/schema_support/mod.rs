//! What the schema tests share: the repository's schemas (`docs/schemas/**/*.json`, or
//! `docs/api/openapi.yaml`) in a JSON Schema registry, and YAML read as JSON.
//!
//! Every schema is registered under its file's URL before anything is compiled, so
//! relative `$ref`s (`../models/work_item.schema.json`) resolve as they would for a
//! reader loading the files from a checkout, and nothing is ever retrieved: a `$ref`
//! to a file that does not exist fails the build of the validator.

#![allow(dead_code)] // Each test binary uses its part.

use std::{
    fs,
    path::{Path, PathBuf},
};

use jsonschema::{Draft, Registry, Validator};
use serde_json::{Map, Number, Value};
use yaml_rust2::{Yaml, YamlLoader};

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// `file:///…/path`: the URI a schema is registered (and resolved) under.
pub fn file_uri(path: &Path) -> String {
    url::Url::from_file_path(path)
        .unwrap_or_else(|()| panic!("{} is not an absolute path", path.display()))
        .to_string()
}

/// A YAML document as JSON. Tags (CloudFormation's `!Ref`, `!Sub`) are dropped and
/// their values kept; mapping keys become strings (`"200"`, not 200).
pub fn yaml_to_json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Real(text) => text
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Yaml::Integer(value) => Value::from(*value),
        Yaml::String(text) => Value::String(text.clone()),
        Yaml::Boolean(value) => Value::Bool(*value),
        Yaml::Array(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Yaml::Hash(entries) => Value::Object(
            entries
                .iter()
                .map(|(key, value)| {
                    let key = match yaml_to_json(key) {
                        Value::String(text) => text,
                        other => other.to_string(),
                    };
                    (key, yaml_to_json(value))
                })
                .collect::<Map<String, Value>>(),
        ),
        Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => Value::Null,
    }
}

/// The YAML file at `path` (relative to the repository) as JSON.
pub fn read_yaml(path: &str) -> Value {
    let text = fs::read_to_string(repo().join(path))
        .unwrap_or_else(|err| panic!("{path} is readable: {err}"));
    let documents =
        YamlLoader::load_from_str(&text).unwrap_or_else(|err| panic!("{path} is YAML: {err}"));
    let [document] = documents.as_slice() else {
        panic!("{path} holds one YAML document");
    };
    yaml_to_json(document)
}

/// The JSON files under `dir` (relative to the repository), recursively, sorted.
pub fn json_files(dir: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        let entries =
            fs::read_dir(dir).unwrap_or_else(|err| panic!("{} exists: {err}", dir.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|ext| ext == "json") {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo().join(dir), &mut files);
    files.sort();
    files
}

/// The OpenAPI document's path in the repository.
pub const OPENAPI: &str = "docs/api/openapi.yaml";

/// Schemas of the repository, ready to compile validators from.
pub struct Schemas {
    registry: Registry<'static>,
    /// The OpenAPI document, as JSON (null unless loaded).
    pub openapi: Value,
}

impl Schemas {
    /// The event schemas: `docs/schemas/**/*.json`.
    pub fn events() -> Schemas {
        let mut resources = Vec::new();
        for path in json_files("docs/schemas") {
            let text = fs::read_to_string(&path).expect("readable schema");
            let schema: Value = serde_json::from_str(&text)
                .unwrap_or_else(|err| panic!("{} is JSON: {err}", path.display()));
            assert_eq!(
                schema["$schema"],
                "https://json-schema.org/draft/2020-12/schema",
                "{}: every schema says it is draft 2020-12",
                path.display()
            );
            resources.push((file_uri(&path), schema));
        }
        Schemas::of(resources, Value::Null)
    }

    /// The OpenAPI document, whose schemas are read as draft 2020-12 (its
    /// `jsonSchemaDialect`).
    pub fn api() -> Schemas {
        let openapi = read_yaml(OPENAPI);
        assert_eq!(
            openapi["jsonSchemaDialect"], "https://json-schema.org/draft/2020-12/schema",
            "the OpenAPI document's schemas are plain JSON Schema 2020-12"
        );
        let resources = vec![(file_uri(&repo().join(OPENAPI)), openapi.clone())];
        Schemas::of(resources, openapi)
    }

    fn of(resources: Vec<(String, Value)>, openapi: Value) -> Schemas {
        let registry = Registry::new()
            .draft(Draft::Draft202012)
            .extend(resources)
            .and_then(|builder| builder.prepare())
            .unwrap_or_else(|err| panic!("the schemas form a registry: {err}"));
        Schemas { registry, openapi }
    }

    /// A validator for the schema at `uri` (a file URI, with a `#/…` pointer for a
    /// part of a document). Formats (`date-time`, `uri`) are checked, not just
    /// annotations.
    pub fn validator(&self, uri: &str) -> Validator {
        jsonschema::options()
            .with_draft(Draft::Draft202012)
            .with_registry(&self.registry)
            .offline()
            .should_validate_formats(true)
            .build(&serde_json::json!({ "$ref": uri }))
            .unwrap_or_else(|err| panic!("{uri} compiles: {err}"))
    }
}

/// Every way `instance` fails `validator`, one line each with where, or `Ok`.
pub fn check(validator: &Validator, instance: &Value) -> Result<(), String> {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|err| format!("at {}: {err}", err.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}
