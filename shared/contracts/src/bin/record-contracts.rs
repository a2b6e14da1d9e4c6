//! Records the contract schemas (`contracts/<provider>/<version>/<resource>.json`).
//!
//! ```text
//! cargo run -p junction-contracts --bin record-contracts                 # all, from tests/fixtures
//! cargo run -p junction-contracts --bin record-contracts -- hubspot      # one provider
//! cargo run -p junction-contracts --bin record-contracts -- hubspot deal --from answer.json
//! ```
//!
//! `--from` records from a saved sandbox response to the resource's contract read (the
//! record at the read's pointer). Files go under the pinned version the catalog names
//! now: after moving a pin, re-record and review the diff (docs/contracts.md).

use std::path::PathBuf;

use anyhow::{Context, bail};
use junction_catalog::{CONTRACT_READS, Catalog};
use junction_contracts::recorded::{record_from_fixture, record_from_response, repo_root};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut positional = Vec::new();
    let mut from: Option<PathBuf> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--from" => from = Some(args.next().context("--from needs a file")?.into()),
            "-h" | "--help" => {
                println!("record-contracts [PROVIDER [RESOURCE --from RESPONSE.json]]");
                return Ok(());
            }
            _ => positional.push(arg),
        }
    }
    let catalog = Catalog::embedded()?;
    let root = repo_root();
    let provider = positional.first().map(String::as_str);
    let resource = positional.get(1).map(String::as_str);
    if from.is_some() && resource.is_none() {
        bail!("--from names one resource: give the provider and the resource");
    }
    let mut written = 0;
    for (id, reads) in CONTRACT_READS {
        if provider.is_some_and(|p| p != *id) {
            continue;
        }
        for read in *reads {
            if resource.is_some_and(|r| r != read.resource) {
                continue;
            }
            let schema = match &from {
                Some(file) => record_from_response(catalog, file, id, read.resource, read.record)?,
                None => record_from_fixture(catalog, &root, id, read.resource)?,
            };
            let path = root.join("contracts").join(schema.relative_path());
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
            }
            std::fs::write(&path, schema.to_file())
                .with_context(|| format!("{}", path.display()))?;
            println!(
                "contracts/{} ({} paths, {})",
                schema.relative_path(),
                schema.shape.len(),
                schema.recorded_from
            );
            written += 1;
        }
    }
    if written == 0 {
        bail!("nothing recorded: no contract read matches {positional:?}");
    }
    Ok(())
}
