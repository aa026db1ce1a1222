//! Replays the fuzz corpus (fuzz/corpus/) and any recorded crash: none may panic.

use std::fs;
use std::path::Path;

use govbus_native::fuzzing;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for dir in [root.join("corpus").join(target), root.join("crashes").join(target)] {
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                out.push((e.path().display().to_string(), fs::read(e.path()).expect("readable")));
            }
        }
    }
    out
}

#[test]
fn decode_corpus_replays_without_panics() {
    let schemas = fuzzing::schemas();
    let found = inputs("decode");
    assert!(found.len() >= 10, "the decode corpus is missing");
    for (name, input) in found {
        assert!(std::panic::catch_unwind(|| fuzzing::decode(&input, &schemas)).is_ok(), "{name} panics");
    }
}

#[test]
fn verify_corpus_replays_without_panics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("corpus");
    let key = fs::read(root.join("verify.pub")).expect("fuzz/corpus/verify.pub");
    let found = inputs("verify");
    assert!(found.len() >= 10, "the verify corpus is missing");
    let mut authentic = 0;
    for (name, input) in found {
        let mut checker = fuzzing::checker(&key);
        let label = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fuzzing::verify(&input, &mut checker)));
        assert!(label.is_ok(), "{name} panics");
        authentic += label.unwrap().starts_with("authentic") as usize;
    }
    assert!(authentic > 0, "no seed verifies: the corpus and verify.pub disagree");
}
