//! Builds the function binaries the stack names (`Metadata.BuildProperties.Binary`).
//!
//! One `cargo build --bin a --bin b` in the workspace, reading each executable's path
//! from cargo's JSON messages rather than guessing the target directory. A debug build
//! names `--workspace`, so cargo resolves the libraries' features for every member, as
//! `cargo test --workspace` does: the two share one build of each library (the
//! `tests` crate names what only tests would otherwise enable). A release build is per
//! package, as `sam build` builds what Lambda runs.

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
    #[error("cargo build failed ({status}); its last lines:\n{tail}")]
    Failed { status: String, tail: String },
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
/// diagnostics go to our stderr as they come, and the last lines are kept in the error
/// too: under `cargo test` the failing test's panic may be all a CI log keeps.
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
        .stderr(Stdio::piped());
    match profile {
        Profile::Release => command.arg("--release"),
        Profile::Debug => command.arg("--workspace"),
    };
    for binary in binaries {
        command.arg("--bin").arg(binary);
    }
    let mut child = command.spawn().map_err(BuildError::Spawn)?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let echo = tokio::spawn(echo_keeping_tail(stderr));
    let output = child.wait_with_output().await.map_err(BuildError::Spawn)?;
    let tail = echo.await.unwrap_or_default();
    if !output.status.success() {
        return Err(BuildError::Failed {
            status: output.status.to_string(),
            tail,
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

/// How many of cargo's last stderr lines a failure carries.
const TAIL_LINES: usize = 20;

/// Copies cargo's stderr to ours line by line and returns the last [`TAIL_LINES`].
async fn echo_keeping_tail(stderr: impl tokio::io::AsyncRead + Unpin) -> String {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut tail = std::collections::VecDeque::with_capacity(TAIL_LINES);
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("{line}");
        crate::runtime::keep_newest(&mut tail, line, TAIL_LINES);
    }
    Vec::from(tail).join("\n")
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

    #[tokio::test]
    async fn a_failed_build_carries_cargos_last_lines() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let binaries = BTreeSet::from(["no-such-function".to_owned()]);
        let error = build(&root, &binaries, Profile::Debug)
            .await
            .expect_err("there is no such binary");
        let BuildError::Failed { tail, .. } = &error else {
            panic!("expected a failed build, got {error:?}");
        };
        assert!(tail.contains("no-such-function"), "{tail}");
        assert!(error.to_string().contains("no-such-function"), "{error}");
    }

    #[tokio::test]
    async fn the_tail_keeps_the_last_lines() {
        let text: String = (1..=30).map(|n| format!("line {n}\n")).collect();
        let tail = echo_keeping_tail(text.as_bytes()).await;
        let expected: Vec<String> = (11..=30).map(|n| format!("line {n}")).collect();
        assert_eq!(tail, expected.join("\n"));
    }

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
