#![no_main]

#[path = "../src/kcp_datagram.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    check::kcp_datagram(data);
});
