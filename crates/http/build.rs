//! Embeds the web UI (`ui/`, plain HTML, CSS and JavaScript modules: nothing to build)
//! into the binary: every file becomes an entry of `ASSETS` with its content type and a
//! content hash for its ETag.

use std::fmt::Write;
use std::path::{Path, PathBuf};

fn files(dir: &Path, found: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files(&path, found);
        } else {
            found.push(path);
        }
    }
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        other => panic!("ui/ has a file of unknown type: {other:?}"),
    }
}

/// FNV-1a: enough to tell one build's file from another's.
fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut found = Vec::new();
    files(&root, &mut found);
    let mut out = String::from("pub static ASSETS: &[Asset] = &[\n");
    for path in &found {
        println!("cargo:rerun-if-changed={}", path.display());
        let relative = path.strip_prefix(&root).expect("under ui/");
        let url = relative.to_str().expect("UTF-8 path").replace('\\', "/");
        let bytes = std::fs::read(path).expect("read a UI file");
        writeln!(
            out,
            "    Asset {{ path: {url:?}, content_type: {:?}, etag: \"\\\"{:016x}\\\"\", body: include_bytes!({:?}) }},",
            content_type(path),
            hash(&bytes),
            path.display().to_string(),
        )
        .expect("write to a string");
    }
    out.push_str("];\n");
    let target = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("ui_assets.rs");
    std::fs::write(target, out).expect("write ui_assets.rs");
}
