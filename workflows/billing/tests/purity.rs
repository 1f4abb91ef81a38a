//! The billing core must stay pure: no floating point, no clock, no I/O.
//! This test reads the crate's own sources (it lives outside `src/`, so its
//! own string literals are not scanned).

use std::path::{Path, PathBuf};

const FORBIDDEN: &[&str] = &[
    "f64",
    "f32",
    "Utc::now",
    "Local::now",
    "SystemTime",
    "Instant::now",
    "std::fs",
    "std::net",
    "std::env",
    "std::process",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).expect("read src dir");
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn sources_use_no_floats_clock_or_io() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() >= 8,
        "expected the crate's modules, found {files:?}"
    );
    let mut offences = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read source");
        for (number, line) in text.lines().enumerate() {
            for token in FORBIDDEN {
                if line.contains(token) {
                    offences.push(format!(
                        "{}:{}: {token}: {}",
                        file.display(),
                        number + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "forbidden tokens in billing sources:\n{}",
        offences.join("\n")
    );
}
