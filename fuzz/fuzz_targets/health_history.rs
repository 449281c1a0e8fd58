//! Fuzz target `health_history`: what it checks, and why, is in `fuzz/checks/health_history.rs`,
//! which `tests/fuzz_regressions.rs` also replays on stable.

#![no_main]

#[path = "../checks/health_history.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|input: checks::Input| checks::check(input));
