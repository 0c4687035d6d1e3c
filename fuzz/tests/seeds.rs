//! Replays every committed seed (and every reproducer kept under `seeds/<target>/`) through its
//! target's check on stable Rust, so a regression of a fixed crash fails `scripts/test`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

#[test]
fn every_seed_passes_its_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (name, check) in bistream_fuzz::targets() {
        let dir = root.join(name);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let run = std::panic::catch_unwind(|| check(&data));
            assert!(
                run.is_ok(),
                "{name}: seed {} fails its check",
                path.display()
            );
            n += 1;
        }
        assert!(n > 0, "{name} has no seeds");
    }
}
