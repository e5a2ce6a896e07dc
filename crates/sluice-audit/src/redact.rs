//! What a `tool_call` record keeps of the arguments: secrets redacted, size capped.
//!
//! A key is secret when, split into words (at `_`, `-`, `.`, spaces and
//! lower-to-upper case changes, compared lowercase), one word is
//! `password`, `passwd`, `pwd`, `passphrase`, `secret`, `secrets`, `token`,
//! `cookie`, `cookies`, `authorization`, `auth`, `credential`,
//! `credentials`, `apikey`, `privatekey`, `bearer` or `jwt`, or two adjacent
//! words are `api key`, `private key`, `access key`, `signing key` or
//! `encryption key`. So `api_key`, `apiKey`, `X-Api-Key`, `github_token`,
//! `client_secret` and `refreshToken` are redacted, while `max_tokens`,
//! `key` and `sort_key` are kept. `audit.redact_keys` adds whole keys,
//! compared lowercase with `-` and `_` ignored.
//!
//! A string value is secret, whatever its key, when it starts with
//! `Bearer ` or `Basic `, or holds a PEM private key.
//!
//! Redaction walks nested objects and arrays; a secret's value (whatever its
//! type) becomes `"[redacted]"`. Then, when the arguments serialize to more
//! than `audit.max_argument_bytes`, they are recorded as a string: the
//! first bytes of their JSON text followed by `…[truncated: N bytes]`.

use serde_json::Value;
use sluice_config::AuditArguments;

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

const SECRET_WORDS: [&str; 17] = [
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "secrets",
    "token",
    "cookie",
    "cookies",
    "authorization",
    "auth",
    "credential",
    "credentials",
    "apikey",
    "privatekey",
    "bearer",
    "jwt",
];

const KEY_QUALIFIERS: [&str; 5] = ["api", "private", "access", "signing", "encryption"];

/// The arguments policy of one audit log.
#[derive(Debug, Clone)]
pub struct Arguments {
    policy: AuditArguments,
    extra: Vec<String>,
    max_bytes: usize,
}

impl Arguments {
    /// The policy `audit.arguments`, with `audit.redact_keys` added to the built-in
    /// secret key names and each kept argument object capped at `max_bytes`.
    pub fn new(policy: AuditArguments, extra_keys: &[String], max_bytes: usize) -> Arguments {
        Arguments {
            policy,
            extra: extra_keys.iter().map(|k| squash(k)).collect(),
            max_bytes,
        }
    }

    /// Whether arguments are recorded at all.
    pub fn kept(&self) -> bool {
        self.policy != AuditArguments::Omit
    }

    /// Whether `key` names a secret.
    pub fn is_secret_key(&self, key: &str) -> bool {
        let is = |w: &str, list: &[&str]| list.iter().any(|s| w.eq_ignore_ascii_case(s));
        let mut prev = "";
        for w in Words(key) {
            if is(w, &SECRET_WORDS) || (w.eq_ignore_ascii_case("key") && is(prev, &KEY_QUALIFIERS))
            {
                return true;
            }
            prev = w;
        }
        !self.extra.is_empty() && self.extra.contains(&squash(key))
    }

    /// Replaces secret values in place.
    pub fn redact(&self, v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, val) in map.iter_mut() {
                    if self.is_secret_key(k) {
                        *val = Value::String(REDACTED.into());
                    } else {
                        self.redact(val);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.redact(i)),
            Value::String(s) if secret_value(s) => *s = REDACTED.into(),
            _ => {}
        }
    }

    /// The JSON text recorded for `args`: redacted in place (per policy), then capped.
    pub fn render(&self, args: &mut Value) -> Vec<u8> {
        if self.policy == AuditArguments::Redacted {
            self.redact(args);
        }
        let text = serde_json::to_vec(args).expect("a JSON value serializes");
        if text.len() <= self.max_bytes {
            return text;
        }
        let mut end = self.max_bytes;
        while end > 0 && (text[end] & 0xc0) == 0x80 {
            end -= 1;
        }
        let cut = format!(
            "{}…[truncated: {} bytes]",
            String::from_utf8_lossy(&text[..end]),
            text.len()
        );
        serde_json::to_vec(&cut).expect("a string serializes")
    }
}

/// Lowercase, without `-` and `_`.
fn squash(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// The words of an identifier: split at non-alphanumerics and where a
/// lowercase letter or digit is followed by an uppercase one.
struct Words<'a>(&'a str);

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.0.trim_start_matches(|c: char| !c.is_alphanumeric());
        if s.is_empty() {
            self.0 = s;
            return None;
        }
        let mut end = s.len();
        let mut prev_lower = false;
        for (i, c) in s.char_indices() {
            if !c.is_alphanumeric() || (c.is_uppercase() && prev_lower) {
                end = i;
                break;
            }
            prev_lower = c.is_lowercase() || c.is_ascii_digit();
        }
        self.0 = &s[end..];
        Some(&s[..end])
    }
}

fn secret_value(s: &str) -> bool {
    let head = s.get(..7).unwrap_or(s);
    head.eq_ignore_ascii_case("bearer ")
        || head
            .get(..6)
            .is_some_and(|h| h.eq_ignore_ascii_case("basic "))
        || (s.contains("-----BEGIN") && s.contains("PRIVATE KEY"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn redacted() -> Arguments {
        Arguments::new(AuditArguments::Redacted, &["ssn".into()], 4096)
    }

    #[test]
    fn words_split_like_identifiers() {
        let w = |k| Words(k).collect::<Vec<_>>();
        assert_eq!(w("X-Api-Key"), ["X", "Api", "Key"]);
        assert_eq!(w("refreshToken2fa"), ["refresh", "Token2fa"]);
        assert_eq!(w("APIKey"), ["APIKey"]);
        assert_eq!(w("__a.b c__"), ["a", "b", "c"]);
        assert!(w("").is_empty() && w("--").is_empty());
    }

    #[test]
    fn secret_keys_by_word() {
        let a = redacted();
        for k in [
            "password",
            "PASSWD",
            "api_key",
            "apiKey",
            "apikey",
            "X-Api-Key",
            "github_token",
            "access_token",
            "refreshToken",
            "Authorization",
            "auth",
            "cookie",
            "private_key",
            "privateKey",
            "credentials",
            "client_secret",
            "SSN",
            "s-s_n",
        ] {
            assert!(a.is_secret_key(k), "{k} is secret");
        }
        for k in [
            "text",
            "max_tokens",
            "key",
            "sort_key",
            "author",
            "monkey",
            "path",
        ] {
            assert!(!a.is_secret_key(k), "{k} is not secret");
        }
    }

    #[test]
    fn nested_values_are_redacted() {
        let a = redacted();
        let args = json!({
            "text": "hello",
            "api_key": "sk-123",
            "config": {"db": {"password": {"nested": "deep"}, "host": "h"}},
            "list": [{"token": 5}, {"name": "n"}, "Bearer abc.def"],
            "note": "-----BEGIN RSA PRIVATE KEY-----\nMII...",
            "max_tokens": 100
        });
        let out: Value = serde_json::from_slice(&a.render(&mut args.clone())).unwrap();
        assert_eq!(
            out,
            json!({
                "text": "hello",
                "api_key": REDACTED,
                "config": {"db": {"password": REDACTED, "host": "h"}},
                "list": [{"token": REDACTED}, {"name": "n"}, REDACTED],
                "note": REDACTED,
                "max_tokens": 100
            })
        );
        let full = Arguments::new(AuditArguments::Full, &[], 4096);
        let out: Value = serde_json::from_slice(&full.render(&mut args.clone())).unwrap();
        assert_eq!(out, args, "full keeps everything");
        assert!(!Arguments::new(AuditArguments::Omit, &[], 1).kept());
    }

    #[test]
    fn long_arguments_are_cut_with_a_marker_after_redaction() {
        let a = Arguments::new(AuditArguments::Redacted, &[], 64);
        let args = json!({"password": "p".repeat(50), "text": "é".repeat(500)});
        let out = a.render(&mut args.clone());
        let s: String = serde_json::from_slice(&out).expect("a string");
        assert!(s.contains("…[truncated: "), "{s}");
        let whole = serde_json::to_vec(&json!({"password": REDACTED, "text": "é".repeat(500)}));
        assert!(
            s.ends_with(&format!("{} bytes]", whole.unwrap().len())),
            "{s}"
        );
        assert!(!s.contains("ppp"), "redacted before the cut: {s}");
        assert!(out.len() < 64 + 64, "{}", out.len());
        let small = json!({"text": "hi"});
        assert_eq!(a.render(&mut small.clone()), br#"{"text":"hi"}"#);
    }
}
