//! Every peer-protocol message parser (frames and bodies): never panics; accepted bodies
//! re-encode to the same bytes.
#![no_main]

use dw_keys::peer::proto::{Message, read_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Message::decode(data) {
        assert_eq!(msg.encode(), data, "decode/encode is not canonical");
    }
    let mut r = data;
    // A stream of frames, as a server reads them (bounded by the input).
    for _ in 0..8 {
        if read_frame(&mut r).is_err() {
            break;
        }
    }
});
