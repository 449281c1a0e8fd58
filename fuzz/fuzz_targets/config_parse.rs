//! Fuzz target `config_parse`: what it checks, and why, is in `fuzz/checks/config_parse.rs`,
//! which `tests/fuzz_regressions.rs` also replays on stable.

#![no_main]

#[path = "../checks/config_parse.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_bytes(data));
