//! Fuzz target `hub_requests`: what it checks, and why, is in `fuzz/checks/hub_requests.rs`,
//! which `tests/fuzz_regressions.rs` also replays on stable.

#![no_main]

#[path = "../checks/hub_requests.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|input: checks::Input| checks::check(input));
