//! Any text -> `ipxe_script::parse`; whatever parses must render without
//! panicking, and what renders must parse back to the same model.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(script) = ipxe_script::parse(text) {
        if let Ok(rendered) = script.render() {
            let again = ipxe_script::parse(&rendered).expect("our own output parses");
            // The typed model is a fixed point after one normalisation.
            assert_eq!(again.render().expect("renders again"), rendered);
        }
    }
});
