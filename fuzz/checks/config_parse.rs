//! Fuzz target: `parse_config` on arbitrary text.
//!
//! Asserted: it never panics; an error always carries a message and names
//! the file (and, for syntax and value errors, a line ≥ 1 and a key path);
//! a configuration that parses builds both state machines' settings without
//! complaint, and rendered back to JSON (`render_json`, the format
//! `warden config` prints) parses to the same configuration.

use std::path::Path;

use warden::breaker::CircuitBreaker;
use warden::config::{ConfigError, parse_config, render_json};
use warden::escalation::GradedRecoveryStrategy;

const FILE: &str = "/fuzz/socketio-config.json";

/// One fuzz input, checked: the body of the fuzz target, shared with
/// `tests/fuzz_regressions.rs`, which replays the saved inputs on stable.
pub fn check_bytes(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new(FILE);
    match parse_config(text, path) {
        Err(e) => {
            let rendered = e.to_string();
            assert!(
                rendered.contains(FILE),
                "error does not name the file: {rendered}"
            );
            match &e {
                ConfigError::Syntax { line, message, .. } => {
                    assert!(*line >= 1, "syntax error without a line: {rendered}");
                    assert!(!message.trim().is_empty(), "empty message: {rendered}");
                }
                ConfigError::Invalid { line, message, .. } => {
                    // The key path may be empty: an unknown key spelled `""` at the top level.
                    assert!(*line >= 1, "invalid value without a line: {rendered}");
                    assert!(!message.trim().is_empty(), "empty message: {rendered}");
                }
                ConfigError::Inconsistent { key, message, .. } => {
                    assert!(
                        !key.trim().is_empty() && !message.trim().is_empty(),
                        "{rendered}"
                    );
                }
                ConfigError::Override { .. } => {
                    panic!("parse_config reported a CLI flag: {rendered}")
                }
            }
        }
        Ok(cfg) => {
            if let Err(e) = CircuitBreaker::new(cfg.recovery.breaker_settings()) {
                panic!("a parsed config gives invalid breaker settings: {e}");
            }
            if let Err(e) = GradedRecoveryStrategy::new(cfg.recovery.strategy_settings()) {
                panic!("a parsed config gives invalid strategy settings: {e}");
            }
            let json = render_json(&cfg);
            match parse_config(&json, path) {
                Ok(again) => assert_eq!(again, cfg, "round trip through\n{json}"),
                Err(e) => panic!("the rendered config does not parse back: {e}\n{json}"),
            }
        }
    }
}
