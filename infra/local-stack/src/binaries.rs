//! Builds the function binaries the stack names (`Metadata.BuildProperties.Binary`).
//!
//! One `cargo build --bin a --bin b` in the workspace, reading each executable's path
//! from cargo's JSON messages rather than guessing the target directory.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Stdio,
};

use tokio::process::Command;

/// Why the binaries could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("could not run cargo: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("cargo build failed ({status}); its errors are above")]
    Failed { status: String },
    #[error("cargo built no executable named {0}")]
    Missing(String),
}

/// Cargo profile to build with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// Fast to build; what the tests use.
    #[default]
    Debug,
    /// What Lambda runs (`[profile.release]`): slow to build, right for measurements.
    Release,
}

/// Builds `binaries` and returns binary name → executable path. Cargo's progress and
/// diagnostics go to our stderr.
pub async fn build(
    root: &Path,
    binaries: &BTreeSet<String>,
    profile: Profile,
) -> Result<BTreeMap<String, PathBuf>, BuildError> {
    if binaries.is_empty() {
        return Ok(BTreeMap::new());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .args(["build", "--message-format=json-render-diagnostics"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if profile == Profile::Release {
        command.arg("--release");
    }
    for binary in binaries {
        command.arg("--bin").arg(binary);
    }
    let output = command.output().await.map_err(BuildError::Spawn)?;
    if !output.status.success() {
        return Err(BuildError::Failed {
            status: output.status.to_string(),
        });
    }
    let built = executables(&String::from_utf8_lossy(&output.stdout));
    binaries
        .iter()
        .map(|name| {
            built
                .get(name)
                .map(|path| (name.clone(), path.clone()))
                .ok_or_else(|| BuildError::Missing(name.clone()))
        })
        .collect()
}

/// Binary name → executable from cargo's `compiler-artifact` messages.
fn executables(messages: &str) -> BTreeMap<String, PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter_map(|message| {
            let executable = message["executable"].as_str()?;
            let name = message["target"]["name"].as_str()?;
            Some((name.to_owned(), PathBuf::from(executable)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_are_read_from_cargo_messages() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","target":{"name":"shared"},"executable":null}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"webhook-ingress"},"executable":"/t/debug/webhook-ingress"}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
        );
        let built = executables(messages);
        assert_eq!(built.len(), 1);
        assert_eq!(
            built["webhook-ingress"],
            PathBuf::from("/t/debug/webhook-ingress")
        );
    }
}
