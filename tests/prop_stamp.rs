//! Stamping in the payload's text (`warden::stamp`) gives the event the
//! tree path gave: for any JSON payload, however formatted, with or without
//! a forged stamp, the stamped bytes parse to the same `Value` (same keys in
//! the same order, same values) as parsing the payload into a `Value`,
//! stamping that and serialising it (the path warden took before). And the
//! text path refuses exactly what the tree path refused.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use warden::stamp::{Payload, Stamp};

const STAMP: Stamp<'static> = Stamp {
    server_id: "socketio-server-8765",
    received_at: "2025-08-06T14:30:00.000Z",
    event_id: "00000000deadbeef-42",
};

/// The tree path, as warden had it: parse, stamp `server_id` and
/// `received_at` (in place if present, else appended), wrap a non-object as
/// `data`, then set `event_id`.
fn stamp_tree(text: &str) -> Result<String, serde_json::Error> {
    let payload: Value = serde_json::from_str(text)?;
    let mut object = match payload {
        Value::Object(map) => map,
        other => {
            let mut map = Map::new();
            map.insert("data".to_owned(), other);
            map
        }
    };
    object.insert("server_id".to_owned(), json!(STAMP.server_id));
    object.insert("received_at".to_owned(), json!(STAMP.received_at));
    object.insert("event_id".to_owned(), json!(STAMP.event_id));
    serde_json::to_string(&Value::Object(object))
}

/// The text path, its result parsed and serialised again (a canonical
/// form that keeps key order).
fn stamp_text(text: &str) -> Result<String, serde_json::Error> {
    let stamped = Payload::check(text)?.stamp(&STAMP);
    let value: Value = serde_json::from_str(&stamped).expect("stamped text is JSON");
    serde_json::to_string(&value)
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z_]{1,8}",
        1 => Just("server_id".to_owned()),
        1 => Just("received_at".to_owned()),
        1 => Just("event_id".to_owned()),
        1 => Just("data".to_owned()),
        1 => "\\PC{0,6}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1e12f64..1e12).prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
        "[\\x00-\\x1f\"\\\\/é\u{1F600}]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// A payload's text: compact or pretty, with surrounding whitespace, or an
/// object written by hand with duplicate keys and escaped key names.
fn payload_text() -> impl Strategy<Value = String> {
    prop_oneof![
        json_value().prop_map(|v| v.to_string()),
        json_value().prop_map(|v| serde_json::to_string_pretty(&v).unwrap()),
        (json_value(), "[ \t\r\n]{0,3}", "[ \t\r\n]{0,3}")
            .prop_map(|(v, a, b)| format!("{a}{v}{b}")),
        prop::collection::vec((key(), json_value(), any::<bool>()), 0..6).prop_map(|members| {
            let body: Vec<String> = members
                .iter()
                .map(|(k, v, escape)| {
                    let k = if *escape {
                        k.chars()
                            .map(|c| format!("\\u{:04x}", c as u32 & 0xffff))
                            .collect()
                    } else {
                        serde_json::to_string(k)
                            .unwrap()
                            .trim_matches('"')
                            .to_owned()
                    };
                    format!("\"{k}\" : {v}")
                })
                .collect();
            format!("{{ {} }}", body.join(" ,\n"))
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn the_text_path_stamps_what_the_tree_path_stamped(text in payload_text()) {
        let tree = stamp_tree(&text);
        let spliced = stamp_text(&text);
        match (tree, spliced) {
            (Ok(tree), Ok(spliced)) => prop_assert_eq!(tree, spliced),
            (Err(_), Err(_)) => {}
            (tree, spliced) => prop_assert!(false, "{text:?}: tree {tree:?}, text {spliced:?}"),
        }
    }

    #[test]
    fn the_text_path_refuses_what_the_tree_path_refused(
        text in payload_text(),
        cut in any::<prop::sample::Index>(),
        junk in "[\\[\\]{}\",:0-9a-z\\\\ -]{0,3}",
    ) {
        // A valid payload with a piece cut out or some junk put in.
        let at = cut.index(text.len() + 1);
        let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        let broken = format!("{}{junk}{}", &text[..at], &text[at..]);
        let tree_ok = serde_json::from_str::<Value>(&broken).is_ok();
        prop_assert_eq!(Payload::check(&broken).is_ok(), tree_ok, "{:?}", broken);
        if tree_ok {
            prop_assert_eq!(stamp_tree(&broken).unwrap(), stamp_text(&broken).unwrap());
        }
    }
}

#[test]
fn compact_objects_are_stamped_to_the_same_bytes() {
    for text in [
        r#"{"type":"hook","data":{"n":1,"s":"é\n"}}"#,
        r#"{"server_id":"forged","x":[1,2.5,null,true]}"#,
        r#"[1,2]"#,
        r#""text""#,
        "{}",
    ] {
        assert_eq!(
            Payload::check(text).unwrap().stamp(&STAMP),
            stamp_tree(text).unwrap(),
            "{text}"
        );
    }
}
