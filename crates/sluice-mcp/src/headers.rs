//! Header values of the 2026-07-28 revision: `Mcp-Name` and the
//! `Mcp-Param-{Name}` headers that mirror tool arguments annotated with
//! `x-mcp-header`.
//!
//! One implementation for both directions: the gateway encodes with it when it
//! calls a 2026 upstream and checks with it what a 2026 client sent, so the two
//! cannot drift apart. The rules are the transport's "Value Encoding" and
//! "Server Validation" sections: a string as it is, an integer in decimal, a
//! boolean as `true`/`false`; a value that is not plain visible ASCII (or
//! looks like the sentinel itself) travels as `=?base64?{UTF-8 as Base64}?=`;
//! integers compare numerically, so `42.0` and `42` agree.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Number, Value};
use std::borrow::Cow;

const PREFIX: &str = "=?base64?";
const SUFFIX: &str = "?=";

/// The largest integer a header may carry exactly (2^53 − 1, JavaScript's
/// safe range, which the revision requires of annotated integers).
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// An argument as header text, before encoding; `None` for values no header
/// carries (null, arrays, objects).
///
/// Integers are written in decimal, also when the JSON spells them as a float
/// (`3.0` is `3`): the revision converts an integer "to decimal string
/// representation", and a JSON parser may hand an integer over as a float.
/// A number that is not an integer in the safe range (the revision does not
/// allow `number` parameters, but servers declare them) keeps its JSON text,
/// so it still compares equal numerically.
pub fn param_value(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(number_text(n)),
        _ => None,
    }
}

fn number_text(n: &Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    match n.as_f64() {
        // Exact: every integer in the safe range is a float and an i64.
        Some(f) if f.fract() == 0.0 && f.abs() <= MAX_SAFE_INTEGER as f64 => (f as i64).to_string(),
        _ => n.to_string(),
    }
}

/// The encoded header value of an argument (what a client sends), or `None`
/// when the header is omitted (see [`param_value`]).
pub fn param_header(v: &Value) -> Option<String> {
    param_value(v).map(|text| encode(&text))
}

/// Plain visible ASCII (inner spaces allowed) as it is; anything else as
/// `=?base64?…?=`: non-ASCII, control characters (tab included), leading or
/// trailing whitespace, the empty string, and values that look like the
/// sentinel, so that decoding is never ambiguous.
pub fn encode(v: &str) -> String {
    let printable = v.bytes().all(|b| (0x20..=0x7e).contains(&b));
    let padded = v.starts_with(' ') || v.ends_with(' ');
    let plain = !v.is_empty() && printable && !padded && !looks_encoded(v);
    if plain {
        v.to_string()
    } else {
        format!("{PREFIX}{}{SUFFIX}", STANDARD.encode(v.as_bytes()))
    }
}

fn looks_encoded(v: &str) -> bool {
    v.starts_with(PREFIX) && v.ends_with(SUFFIX) && v.len() >= PREFIX.len() + SUFFIX.len()
}

/// Why a `=?base64?…?=` value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadSentinel {
    /// The payload is not standard Base64 with canonical padding.
    NotBase64,
    /// The decoded bytes are not UTF-8.
    NotUtf8,
}

impl std::fmt::Display for BadSentinel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BadSentinel::NotBase64 => "its payload is not canonical padded Base64",
            BadSentinel::NotUtf8 => "its payload is not UTF-8 text",
        })
    }
}

impl std::error::Error for BadSentinel {}

/// A received header value (already trimmed of surrounding whitespace) as the
/// text it stands for: `=?base64?…?=` decoded strictly (standard alphabet,
/// canonical padding, UTF-8); any other value is literal.
pub fn decode(v: &str) -> Result<Cow<'_, str>, BadSentinel> {
    if !looks_encoded(v) {
        return Ok(Cow::Borrowed(v));
    }
    let b64 = &v[PREFIX.len()..v.len() - SUFFIX.len()];
    let bytes = STANDARD.decode(b64).map_err(|_| BadSentinel::NotBase64)?;
    // The engine already refuses other paddings and trailing bits; re-encoding
    // makes "one text, one spelling" explicit.
    if STANDARD.encode(&bytes) != b64 {
        return Err(BadSentinel::NotBase64);
    }
    String::from_utf8(bytes)
        .map(Cow::Owned)
        .map_err(|_| BadSentinel::NotUtf8)
}

/// Whether a decoded header value matches the argument in the body: strings
/// and booleans exactly, numbers numerically (`42.0` and `42` agree; integers
/// beyond a float's precision compare exactly). Values no header carries
/// (arrays, objects) are not compared and match.
pub fn matches(decoded: &str, v: &Value) -> bool {
    match v {
        Value::String(s) => decoded == s,
        Value::Bool(b) => decoded == if *b { "true" } else { "false" },
        Value::Number(n) => {
            if decoded == number_text(n) {
                return true;
            }
            // Only JSON's number syntax (no `+1`, `inf`, `0x10`).
            let Ok(sent) = serde_json::from_str::<Number>(decoded) else {
                return false;
            };
            match (integer(&sent), integer(n)) {
                (Some(a), Some(b)) => a == b,
                // The standard parser rounds correctly; serde_json's default
                // one can miss by an ulp near 2^53.
                _ => decoded
                    .parse::<f64>()
                    .ok()
                    .zip(n.as_f64())
                    .is_some_and(|(a, b)| a == b),
            }
        }
        _ => true,
    }
}

fn integer(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_as_the_revision_shows() {
        assert_eq!(encode("us-west1"), "us-west1");
        assert_eq!(encode("a b"), "a b");
        assert_eq!(encode("Hello, 世界"), "=?base64?SGVsbG8sIOS4lueVjA==?=");
        assert_eq!(encode(" padded "), "=?base64?IHBhZGRlZCA=?=");
        assert_eq!(encode("line1\nline2"), "=?base64?bGluZTEKbGluZTI=?=");
        assert_eq!(
            encode("=?base64?literal?="),
            "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="
        );
        assert_eq!(encode("a\tb"), "=?base64?YQli?=");
        assert_eq!(encode(""), "=?base64??=");
    }

    #[test]
    fn header_values_decode_strictly() {
        assert_eq!(decode("echo").as_deref(), Ok("echo"));
        assert_eq!(
            decode("=?base64?SGVsbG8sIOS4lueVjA==?=").as_deref(),
            Ok("Hello, 世界")
        );
        assert_eq!(
            decode("=?base64?SGVsbG8?="),
            Err(BadSentinel::NotBase64),
            "missing padding"
        );
        assert_eq!(
            decode("=?base64?SGVs!!!bG8=?="),
            Err(BadSentinel::NotBase64)
        );
        assert_eq!(
            decode("=?base64?SGVsbG9=?="),
            Err(BadSentinel::NotBase64),
            "non-zero trailing bits"
        );
        assert_eq!(decode("=?base64?/w==?="), Err(BadSentinel::NotUtf8));
        assert_eq!(
            decode("=?base64?abc").as_deref(),
            Ok("=?base64?abc"),
            "literal"
        );
        assert_eq!(decode("=?base64?=").as_deref(), Ok("=?base64?="), "literal");
        assert_eq!(decode("=?base64??=").as_deref(), Ok(""));
    }

    /// The gateway used to send `3.0` for the float 3.0 while its own check
    /// expected `3`; both sides now use [`param_value`].
    #[test]
    fn an_integral_float_is_an_integer_on_both_sides() {
        assert_eq!(param_header(&json!(3.0)).as_deref(), Some("3"));
        assert_eq!(param_header(&json!(-7.0)).as_deref(), Some("-7"));
        assert_eq!(param_header(&json!(42)).as_deref(), Some("42"));
        assert!(matches("3", &json!(3.0)));
        assert!(matches("3.0", &json!(3)), "numerically equal");
        assert!(matches("42.0", &json!(42)));
        assert!(
            matches("7217669807414825.0", &json!(7217669807414825_i64)),
            "parsed exactly near 2^53"
        );
        assert!(!matches("3.5", &json!(3)));
        assert!(!matches("+3", &json!(3)), "not a JSON number");
        assert!(!matches("three", &json!(3)));
    }

    #[test]
    fn other_numbers_keep_their_json_text() {
        assert_eq!(param_value(&json!(2.5)).as_deref(), Some("2.5"));
        assert!(matches("2.5", &json!(2.5)));
        // Outside the safe range the float's own text, not a saturated i64.
        assert_eq!(param_value(&json!(1e20)).as_deref(), Some("1e+20"));
        assert!(matches("100000000000000000000", &json!(1e20)));
        assert_eq!(
            param_value(&json!(u64::MAX)).as_deref(),
            Some("18446744073709551615")
        );
        assert!(matches("9007199254740993", &json!(9007199254740993_u64)));
        assert!(
            !matches("9007199254740992", &json!(9007199254740993_u64)),
            "integers compare exactly, not as floats"
        );
    }

    #[test]
    fn strings_booleans_and_the_rest() {
        assert_eq!(param_value(&json!(true)).as_deref(), Some("true"));
        assert!(matches("false", &json!(false)));
        assert!(!matches("False", &json!(false)));
        assert!(matches("Hello, 世界", &json!("Hello, 世界")));
        assert!(!matches("3", &json!("3.0")), "strings compare as text");
        assert_eq!(param_value(&Value::Null), None);
        assert_eq!(param_header(&json!([1])), None);
        assert_eq!(param_header(&json!({"a": 1})), None);
    }
}

/// Property tests: arbitrary strings through the codec.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        // Each property takes well under a second in a debug build.
        #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

        /// Whatever a client sends, decoding returns a value or a reason; it never panics.
        #[test]
        fn decoding_any_string_never_panics(s in any::<String>()) {
            let _ = decode(&s);
        }

        /// Sentinel-shaped input with an arbitrary payload: decoded or refused, never a panic,
        /// and a decoded payload is the one spelling of its text.
        #[test]
        fn decoding_any_sentinel_never_panics(payload in "[A-Za-z0-9+/=?!\\-_ ]{0,40}") {
            let v = format!("=?base64?{payload}?=");
            if let Ok(text) = decode(&v) {
                prop_assert_eq!(STANDARD.encode(text.as_bytes()), payload);
            }
        }

        /// encode→decode gives back any string, and what encode produces is a
        /// safe header value: visible ASCII and inner spaces, never empty.
        #[test]
        fn encoding_round_trips_any_string(s in any::<String>()) {
            let e = encode(&s);
            prop_assert!(!e.is_empty());
            prop_assert!(e.bytes().all(|b| (0x20..=0x7e).contains(&b)), "unsafe bytes in {:?}", e);
            prop_assert!(!e.starts_with(' ') && !e.ends_with(' '));
            let back = decode(&e);
            prop_assert_eq!(back.as_deref(), Ok(s.as_str()));
        }

        /// What the gateway sends for an argument is what its own check accepts.
        #[test]
        fn a_sent_value_matches_its_argument(
            v in prop_oneof![
                any::<String>().prop_map(Value::from),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).prop_map(|i| json!(i as f64)),
                any::<f64>().prop_filter("JSON has no NaN or infinities", |f| f.is_finite()).prop_map(|f| json!(f)),
            ]
        ) {
            let header = param_header(&v).expect("a primitive is carried");
            let decoded = decode(&header).expect("what we encode decodes");
            prop_assert!(matches(&decoded, &v), "{:?} sent as {:?}", v, header);
        }

        /// An integer spelled as a float and as an integer is one value on both sides.
        #[test]
        fn integral_floats_and_integers_agree(i in -MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER) {
            prop_assert_eq!(param_value(&json!(i as f64)), param_value(&json!(i)));
            let spelled = format!("{i}.0");
            prop_assert!(matches(&spelled, &json!(i)));
            prop_assert!(matches(&i.to_string(), &json!(i as f64)));
            prop_assert!(!matches(&(i as i128 + 1).to_string(), &json!(i)));
        }
    }
}
