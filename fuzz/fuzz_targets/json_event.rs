//! Any bytes given to `overlay publish`: decoded as a JSON event, then
//! folded (refused bytes as a dead letter) into the example day's state.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let decoded = overlay_core::event::decode_json(data);
    if let Ok(env) = &decoded {
        // A valid JSON event has a protobuf form that decodes to the same event.
        let pb = overlay_proto::decode_envelope(&overlay_proto::encode_envelope(env)).expect("its protobuf decodes");
        assert_eq!(&pb, env);
    }
    common::fold_checked(decoded.as_ref());
});
