//! Replays the fuzz seeds (and any crash files saved beside them) under
//! `cargo test`: `fuzz/corpus/ipxe_parse/*` must parse or fail cleanly, and
//! whatever parses must render to a fixed point.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

#[test]
fn parse_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/ipxe_parse");
    let mut seen = 0;
    let mut parsed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        seen += 1;
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        if let Ok(script) = ipxe_script::parse(text) {
            parsed += 1;
            if let Ok(rendered) = script.render() {
                let again = ipxe_script::parse(&rendered).expect("our output parses");
                assert_eq!(again, script, "{}", path.display());
                assert_eq!(again.render().unwrap(), rendered);
            }
        }
    }
    assert!(
        seen >= 5 && parsed >= 5,
        "seeds missing in {}",
        dir.display()
    );
}
