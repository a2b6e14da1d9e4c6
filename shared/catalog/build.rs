//! Embeds every provider file under `providers/` into the library at build time, so a
//! Lambda never reads the catalog from disk and a new provider is one new file.
//!
//! Each file is embedded as JSON, converted from its TOML here: every function parses
//! the whole catalog at cold start, and serde_json reads the same data several times
//! faster than the TOML parser (1.3 ms of TOML for 59 providers, a fifth of the
//! ingress's init). A file that is not TOML fails the build, naming the file; whether
//! it fits the catalog's types is checked when the catalog loads (its tests).

use std::{env, fs, path::Path};

fn main() {
    let dir = Path::new(&env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("providers");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = fs::read_dir(&dir)
        .expect("shared/catalog/providers exists")
        .map(|entry| entry.expect("readable catalog entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    let mut out = String::from(
        "/// Provider files from `shared/catalog/providers/`, sorted by name, as JSON.\npub(crate) const FILES: &[(&str, &str)] = &[\n",
    );
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path.file_name().expect("file name").to_string_lossy();
        let text = fs::read_to_string(path).expect("readable catalog file");
        let value: toml::Value = toml::from_str(&text)
            .unwrap_or_else(|err| panic!("shared/catalog/providers/{name} is not TOML: {err}"));
        let json = serde_json::to_string(&value).expect("TOML values are JSON values");
        out.push_str(&format!("    ({name:?}, {json:?}),\n"));
    }
    out.push_str("];\n");
    let dest =
        Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("catalog_files.rs");
    fs::write(dest, out).expect("write catalog_files.rs");
}
