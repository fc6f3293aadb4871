//! Any bytes given to `overlay propose` or `overlay transition plan`: decoded
//! as a household snapshot, then proposed on (refused with a reason, or a
//! proposal; never a panic).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(snapshot) = overlay_core::snapshot::HouseholdSnapshot::from_json(data) {
        if let Err(e) = snapshot.propose() {
            assert!(!e.message.is_empty(), "a refusal says why");
        }
    }
});
