//! Ring-buffer records as the kernel (or a corrupt buffer) could hand them over: decoding
//! never panics, and whatever decodes can be shown as text and as JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use observer::{
    events::Event,
    views::event_line::{text_line, EventJson},
};

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = Event::decode(data) {
        let _ = text_line(&ev);
        let _ = serde_json::to_vec(&EventJson::new(&ev)).expect("an event always serialises");
    }
});
