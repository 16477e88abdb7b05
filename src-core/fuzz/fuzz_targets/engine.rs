//! Fuzz the detection engine: arbitrary bytes in, findings must lie inside the input on char
//! boundaries and the engine must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static ENGINE: OnceLock<airlock::inspect::Engine> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let engine = ENGINE.get_or_init(|| match airlock::inspect::Engine::new() {
        Ok(e) => e,
        Err(e) => panic!("embedded rules: {e}"),
    });
    engine.scan_bytes(data, |f| {
        assert!(f.span.start < f.span.end && f.span.end <= data.len());
        let text = &data[f.span.clone()];
        // Every span is a whole UTF-8 stretch: it was reported from valid text.
        assert!(std::str::from_utf8(text).is_ok());
        assert!(f.preview().chars().count() <= 8);
        true
    });
    if let Ok(s) = std::str::from_utf8(data) {
        for f in engine.find_all(s) {
            assert!(s.is_char_boundary(f.span.start) && s.is_char_boundary(f.span.end));
        }
    }
});
