//! Embeds every recorded schema under the repository's `contracts/` into the library,
//! so the contract-check Lambda compares responses without reading the repository. A new
//! recorded schema (`record-contracts`) is picked up at the next build.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "json") {
            files.push(path);
        }
    }
}

fn main() {
    let root = Path::new(&env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("../../contracts");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    let mut out = String::from(
        "/// Recorded schemas from `contracts/`: (path under it, JSON), sorted by path.\npub(crate) const FILES: &[(&str, &str)] = &[\n",
    );
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        if let Some(parent) = path.parent() {
            println!("cargo:rerun-if-changed={}", parent.display());
        }
        let relative = path
            .strip_prefix(&root)
            .expect("under contracts/")
            .to_string_lossy()
            .replace('\\', "/");
        let text = fs::read_to_string(path).expect("readable recorded schema");
        out.push_str(&format!("    ({relative:?}, {text:?}),\n"));
    }
    out.push_str("];\n");
    let dest = Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("contracts.rs");
    fs::write(dest, out).expect("write contracts.rs");
}
