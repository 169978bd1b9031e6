//! Tidy checks over the whole workspace's Rust sources: no ignored tests and no placeholder
//! macros (todo, dbg, unimplemented) in committed code.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_ignored_tests_or_placeholders_in_the_workspace() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&crates, &mut files);
    assert!(files.len() > 10, "tidy found too few files under {}", crates.display());
    // Built from pieces so this file does not trip its own check.
    let banned = [
        ["#[", "ignore"].concat(),
        ["todo", "!("].concat(),
        ["dbg", "!("].concat(),
        ["unimplemented", "!("].concat(),
    ];
    let mut offences = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if banned.iter().any(|b| line.contains(b.as_str())) {
                offences.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offences.is_empty(),
        "placeholders or ignored tests:\n{}",
        offences.join("\n")
    );
}
