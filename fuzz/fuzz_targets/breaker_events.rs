//! Fuzz target `breaker_events`: what it checks, and why, is in `fuzz/checks/breaker_events.rs`,
//! which `tests/fuzz_regressions.rs` also replays on stable.

#![no_main]

#[path = "../checks/breaker_events.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|input: checks::Input| checks::check(input));
