//! Fuzzing, replayed on stable: every committed seed (`fuzz/corpus/<target>/`) and every input
//! a fuzzer found (`fuzz/regressions/<target>/`) goes through the target's harness in
//! `tidings::fuzzing`, which panics on a crash or a broken oracle. See `fuzz/README.md`.

use std::path::Path;

/// Runs every file under `dir/<target>/` through that target's harness; returns how many.
fn replay(dir: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(dir);
    let mut n = 0;
    for entry in std::fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display())) {
        let target_dir = entry.expect("a directory entry").path();
        let name = target_dir
            .file_name()
            .and_then(|s| s.to_str())
            .expect("a target name");
        let harness = tidings::fuzzing::target(name)
            .unwrap_or_else(|| panic!("{}: no fuzz target {name:?}", root.display()));
        let mut files: Vec<_> = std::fs::read_dir(&target_dir)
            .expect("a target directory")
            .map(|e| e.expect("a directory entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).expect("a readable input");
            let outcome = std::panic::catch_unwind(|| harness(&data));
            assert!(outcome.is_ok(), "{} fails", file.display());
            n += 1;
        }
    }
    n
}

#[test]
fn every_input_a_fuzzer_found_passes() {
    assert!(replay("regressions") > 0);
}

#[test]
fn every_seed_of_the_committed_corpora_passes() {
    let n = replay("corpus");
    assert!(n >= tidings::fuzzing::TARGETS.len(), "{n} seeds");
}

#[test]
fn every_target_has_a_seed_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, _) in tidings::fuzzing::TARGETS {
        let dir = root.join(name);
        let seeds = std::fs::read_dir(&dir).map_or(0, |d| d.count());
        assert!(seeds > 0, "{} has no seeds", dir.display());
    }
}
