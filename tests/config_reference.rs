//! `docs/config-reference.md` (`warden config reference`) cannot drift from
//! the parser: every key of the default configuration has an entry, every
//! entry names a key the parser accepts, each range's ends are accepted and
//! the values just beyond them refused, and the committed file is what the
//! binary prints (`scripts/generate-docs` rewrites it).

use std::path::Path;

use serde_json::{Map, Value, json};
use warden::config::{WardenConfig, parse_config};
use warden::config_reference::{ENTRIES, Range, lookup, render};

fn leaves(prefix: &str, value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&path, v, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

/// A config file setting only `path` to `value`.
fn with(path: &str, value: Value) -> String {
    let mut doc = value;
    for part in path.rsplit('.') {
        let mut map = Map::new();
        map.insert(part.to_string(), doc);
        doc = Value::Object(map);
    }
    doc.to_string()
}

fn accepts(path: &str, value: Value) -> Result<(), String> {
    parse_config(&with(path, value.clone()), Path::new("reference.json"))
        .map(|_| ())
        .map_err(|e| format!("{path} = {value}: {e}"))
}

fn defaults() -> Value {
    serde_json::to_value(WardenConfig::default()).unwrap()
}

#[test]
fn every_key_of_the_configuration_has_an_entry_and_every_entry_a_key() {
    let mut keys = Vec::new();
    leaves("", &defaults(), &mut keys);
    let listed: Vec<&str> = ENTRIES.iter().map(|e| e.key).collect();
    for key in &keys {
        assert!(
            listed.contains(&key.as_str()),
            "{key} has no entry in config_reference::ENTRIES"
        );
    }
    for entry in ENTRIES {
        let value = match entry.example.or(entry.unlisted_default) {
            Some(example) => serde_json::from_str(example).unwrap(),
            None => lookup(&defaults(), entry.key).cloned().unwrap_or_else(|| {
                panic!(
                    "{} is not in the default configuration and has no example",
                    entry.key
                )
            }),
        };
        accepts(entry.key, value).unwrap();
        let mut dup = listed.clone();
        dup.retain(|k| *k == entry.key);
        assert_eq!(dup.len(), 1, "{} is listed twice", entry.key);
    }
}

/// A key `config show` leaves out while it holds its default (the seed's
/// `use_psutil`): the default the reference prints is the parser's, and any
/// other value is listed.
#[test]
fn an_unlisted_default_is_the_default() {
    let mut seen = 0;
    for entry in ENTRIES {
        let Some(default) = entry.unlisted_default else {
            continue;
        };
        seen += 1;
        assert!(
            lookup(&defaults(), entry.key).is_none(),
            "{} is listed",
            entry.key
        );
        let file = with(entry.key, serde_json::from_str(default).unwrap());
        let parsed = parse_config(&file, Path::new("reference.json")).unwrap();
        assert_eq!(parsed, WardenConfig::default(), "{} = {default}", entry.key);
        let other = match serde_json::from_str::<Value>(default).unwrap() {
            Value::Bool(b) => json!(!b),
            v => panic!("{}: no other value for {v}", entry.key),
        };
        let parsed = parse_config(&with(entry.key, other.clone()), Path::new("r.json")).unwrap();
        let shown = serde_json::to_value(&parsed).unwrap();
        assert_eq!(lookup(&shown, entry.key), Some(&other), "{}", entry.key);
    }
    assert!(seen > 0, "pid_validation.use_psutil is unlisted by default");
}

#[test]
fn each_range_is_the_parsers() {
    for entry in ENTRIES {
        let Some(range) = entry.range else { continue };
        let (inside, outside): (Vec<Value>, Vec<Value>) = match range {
            Range::Int(lo, hi) => {
                let mut out = vec![json!(hi + 1)];
                if lo > 0 {
                    out.push(json!(lo - 1));
                }
                (vec![json!(lo), json!(hi)], out)
            }
            Range::Secs(lo, hi) => {
                let mut out = vec![json!(hi + 0.001)];
                if lo > 0.0 {
                    out.push(json!(lo - 0.001));
                }
                (vec![json!(lo), json!(hi)], out)
            }
            Range::Float(lo, hi) => {
                let below = if lo == f64::MIN_POSITIVE {
                    0.0
                } else {
                    lo - lo.abs() * 1e-6 - 1e-9
                };
                (
                    vec![json!(lo), json!(hi)],
                    vec![json!(hi + hi.abs() * 1e-6 + 1e-9), json!(below)],
                )
            }
        };
        // A cross-field rule (a threshold above `server.max_clients`, a
        // window shorter than the check interval) is not this key's range:
        // a range refusal names the key and says "invalid value".
        let own = format!("`{}`: invalid value", entry.key);
        for v in inside {
            if let Err(e) = accepts(entry.key, v) {
                assert!(!e.contains(&own), "{e}");
            }
        }
        for v in outside {
            match accepts(entry.key, v.clone()) {
                Err(e) if e.contains(&own) => {}
                other => panic!(
                    "{} accepts {v}, outside its documented range: {other:?}",
                    entry.key
                ),
            }
        }
    }
}

#[test]
fn the_committed_reference_is_what_the_binary_prints() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["config", "reference"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(printed, render(&WardenConfig::default()));
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/config-reference.md"),
    )
    .unwrap();
    assert!(
        printed == committed,
        "docs/config-reference.md differs from `warden config reference`: run scripts/generate-docs"
    );
}
