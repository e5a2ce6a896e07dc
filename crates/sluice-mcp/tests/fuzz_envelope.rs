//! Property tests of the JSON-RPC envelope parser (`Message::parse`), the
//! first code every byte from a client or an upstream reaches.
//!
//! - Arbitrary bytes and JSON-ish token soup never panic, and every failure
//!   is -32700 exactly when the input is not JSON (-32600 otherwise), so the
//!   gateway's error reply can always be built.
//! - Well-formed requests, notifications and responses, written with any
//!   key order, whitespace and unknown fields, round-trip their id and
//!   method, and keep `params`, `result` and `error` byte for byte.
//!
//! Cases are bounded so each property takes about a second in a debug build.

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::Value;
use serde_json::value::RawValue;
use sluice_mcp::jsonrpc::{self, Id, Message, code};

/// A run of `cases` with no regression files written into the source tree:
/// a case that fails is kept as a unit test instead.
fn cases(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Whether `bytes` is one JSON value (what -32700 must mean).
fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Box<RawValue>>(bytes).is_ok()
}

/// The invariants of any parse: no panic (the caller is the proptest
/// runner), the right code for a failure, and an error reply that is JSON.
fn check_any(bytes: &[u8]) -> Result<(), TestCaseError> {
    match Message::parse(bytes) {
        Ok(_) => prop_assert!(is_json(bytes), "accepted non-JSON: {:?}", bytes),
        Err(f) => {
            let want = if is_json(bytes) {
                code::INVALID_REQUEST
            } else {
                code::PARSE_ERROR
            };
            prop_assert_eq!(f.error.code, want, "{:?} for {:?}", f.error, bytes);
            prop_assert!(!f.error.message.is_empty());
            let reply = jsonrpc::response_err(f.id.as_ref(), &f.error.to_json());
            prop_assert!(
                serde_json::from_str::<Value>(&reply).is_ok(),
                "error reply is not JSON: {}",
                reply
            );
        }
    }
    Ok(())
}

/// Pieces of JSON-RPC messages, put together in any order.
fn token() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        " ",
        "\n",
        "\t",
        "\"",
        "\\",
        "null",
        "true",
        "false",
        "0",
        "-1",
        "1.5",
        "1e999",
        "-0",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775809",
        "\"jsonrpc\"",
        "\"2.0\"",
        "\"1.0\"",
        "\"id\"",
        "\"method\"",
        "\"params\"",
        "\"result\"",
        "\"error\"",
        "\"ping\"",
        "\"tools/call\"",
        "\"\"",
        "\"\\u0000\"",
        "\"\\ud800\"",
        "\"\\n\"",
        "\u{feff}",
        "\u{0}",
        "é",
    ])
    .prop_map(str::to_string);
    prop_oneof![
        4 => fixed,
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
    ]
}

/// Token soup that starts like an envelope more often than not.
fn jsonish() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["", "{", "{\"jsonrpc\":\"2.0\",", " ["]),
        prop::collection::vec(token(), 0..24),
    )
        .prop_map(|(start, tokens)| format!("{start}{}", tokens.concat()))
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Params as the sender wrote them: an object or an array, compact or
/// pretty-printed (so the raw text has whitespace of its own).
fn params_text() -> impl Strategy<Value = String> {
    let container = prop_oneof![
        prop::collection::vec((any::<String>(), json_value()), 0..4)
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        prop::collection::vec(json_value(), 0..4).prop_map(Value::Array),
    ];
    (container, any::<bool>()).prop_map(|(v, pretty)| {
        if pretty {
            serde_json::to_string_pretty(&v).unwrap()
        } else {
            v.to_string()
        }
    })
}

fn id() -> impl Strategy<Value = Id> {
    prop_oneof![
        any::<i64>().prop_map(Id::Num),
        any::<String>().prop_map(Id::Str)
    ]
}

/// Writes an object from `(key, raw JSON text)` members in the order given,
/// with `ws` around every token.
fn object(members: &[(String, String)], ws: &str) -> String {
    let body: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("{ws}{}{ws}:{ws}{v}{ws}", serde_json::to_string(k).unwrap()))
        .collect();
    format!("{ws}{{{}}}{ws}", body.join(","))
}

/// An envelope's members plus unknown ones, shuffled, and the whitespace to write it with.
fn layout() -> impl Strategy<Value = (Vec<(String, String)>, Vec<u32>, &'static str)> {
    (
        prop::collection::vec(
            (
                any::<String>().prop_filter("not an envelope key", |k| {
                    !["jsonrpc", "id", "method", "params", "result", "error"].contains(&k.as_str())
                }),
                json_value().prop_map(|v| v.to_string()),
            ),
            0..3,
        ),
        prop::collection::vec(any::<u32>(), 8),
        prop::sample::select(vec!["", " ", "\n  ", "\t"]),
    )
}

/// `members` in an order drawn from `keys`.
fn shuffled(mut members: Vec<(String, String)>, keys: &[u32]) -> Vec<(String, String)> {
    let mut order: Vec<(u32, (String, String))> = members
        .drain(..)
        .enumerate()
        .map(|(i, m)| (keys[i % keys.len()].wrapping_add(i as u32), m))
        .collect();
    order.sort_by_key(|(k, _)| *k);
    order.into_iter().map(|(_, m)| m).collect()
}

proptest! {
    #![proptest_config(cases(3000))]

    /// Arbitrary bytes: no panic; -32700 exactly when they are not JSON.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_any(&bytes)?;
    }
}

proptest! {
    #![proptest_config(cases(600))]

    /// JSON-ish token soup (mostly near-envelopes): the same invariants.
    #[test]
    fn jsonish_text_never_panics(text in jsonish()) {
        check_any(text.as_bytes())?;
    }
}

proptest! {
    #![proptest_config(cases(300))]

    /// A request, however it is laid out, keeps its id and method, and its
    /// params are the very bytes that were sent.
    #[test]
    fn requests_round_trip_with_raw_params(
        id in id(),
        method in any::<String>(),
        params in proptest::option::of(params_text()),
        (extra, keys, ws) in layout(),
    ) {
        let mut members = extra;
        members.push(("jsonrpc".into(), "\"2.0\"".into()));
        members.push(("id".into(), id.to_json()));
        members.push(("method".into(), serde_json::to_string(&method).unwrap()));
        if let Some(p) = &params {
            members.push(("params".into(), p.clone()));
        }
        let text = object(&shuffled(members, &keys), ws);
        match Message::parse(text.as_bytes()) {
            Ok(Message::Request(r)) => {
                prop_assert_eq!(&r.id, &id);
                prop_assert_eq!(&r.method, &method);
                prop_assert_eq!(r.params.as_ref().map(|p| p.get()), params.as_deref());
            }
            other => prop_assert!(false, "{:?} for {}", other, text),
        }
        // The gateway's own serializer writes what the parser reads back.
        let again = jsonrpc::request(&id, &method, params.as_deref());
        match Message::parse(again.as_bytes()) {
            Ok(Message::Request(r)) => {
                prop_assert_eq!(&r.id, &id);
                prop_assert_eq!(&r.method, &method);
                prop_assert_eq!(r.params.as_ref().map(|p| p.get()), params.as_deref());
            }
            other => prop_assert!(false, "{:?} for {}", other, again),
        }
    }
}

proptest! {
    #![proptest_config(cases(300))]

    /// A notification keeps its method and raw params.
    #[test]
    fn notifications_round_trip_with_raw_params(
        method in any::<String>(),
        params in proptest::option::of(params_text()),
        (extra, keys, ws) in layout(),
    ) {
        let mut members = extra;
        members.push(("jsonrpc".into(), "\"2.0\"".into()));
        members.push(("method".into(), serde_json::to_string(&method).unwrap()));
        if let Some(p) = &params {
            members.push(("params".into(), p.clone()));
        }
        let text = object(&shuffled(members, &keys), ws);
        match Message::parse(text.as_bytes()) {
            Ok(Message::Notification(n)) => {
                prop_assert_eq!(&n.method, &method);
                prop_assert_eq!(n.params.as_ref().map(|p| p.get()), params.as_deref());
            }
            other => prop_assert!(false, "{:?} for {}", other, text),
        }
        let again = jsonrpc::notification(&method, params.as_deref());
        match Message::parse(again.as_bytes()) {
            Ok(Message::Notification(n)) => {
                prop_assert_eq!(&n.method, &method);
                prop_assert_eq!(n.params.as_ref().map(|p| p.get()), params.as_deref());
            }
            other => prop_assert!(false, "{:?} for {}", other, again),
        }
    }
}

proptest! {
    #![proptest_config(cases(250))]

    /// A response keeps its id, and its result (any JSON, null included) or
    /// error object byte for byte.
    #[test]
    fn responses_round_trip_with_raw_outcome(
        id in id(),
        (is_error, outcome) in prop_oneof![
            json_value().prop_map(|v| (false, v.to_string())),
            (any::<i64>(), any::<String>(), proptest::option::of(json_value())).prop_map(
                |(code, message, data)| {
                    let mut e = serde_json::json!({"code": code, "message": message});
                    if let Some(d) = data {
                        e["data"] = d;
                    }
                    (true, e.to_string())
                }
            ),
        ],
        (extra, keys, ws) in layout(),
    ) {
        let mut members = extra;
        members.push(("jsonrpc".into(), "\"2.0\"".into()));
        members.push(("id".into(), id.to_json()));
        members.push((if is_error { "error" } else { "result" }.into(), outcome.clone()));
        let text = object(&shuffled(members, &keys), ws);
        match Message::parse(text.as_bytes()) {
            Ok(Message::Response(r)) => {
                prop_assert_eq!(&r.id, &id);
                let (got, was_error) = match &r.outcome {
                    Ok(v) => (v.get(), false),
                    Err(e) => (e.get(), true),
                };
                prop_assert_eq!(got, outcome.as_str());
                prop_assert_eq!(was_error, is_error);
            }
            other => prop_assert!(false, "{:?} for {}", other, text),
        }
        if !is_error {
            let again = jsonrpc::response_ok(&id, &outcome);
            match Message::parse(again.as_bytes()) {
                Ok(Message::Response(r)) => {
                    prop_assert_eq!(&r.id, &id);
                    prop_assert_eq!(r.outcome.as_ref().map(|v| v.get()).ok(), Some(outcome.as_str()));
                }
                other => prop_assert!(false, "{:?} for {}", other, again),
            }
        }
    }
}
