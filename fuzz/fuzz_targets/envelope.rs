//! Any bytes on an input topic: decoded as a protobuf envelope, then folded
//! (refused bytes as a dead letter) into the example day's state.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let decoded = overlay_proto::decode_envelope(data);
    if let Ok(env) = &decoded {
        // What decodes re-encodes to an envelope that decodes to the same event.
        let again = overlay_proto::decode_envelope(&overlay_proto::encode_envelope(env)).expect("a re-encoded event decodes");
        assert_eq!(&again, env);
    }
    common::fold_checked(decoded.as_ref());
});
