//! The hash chain: how a record's line is built and hashed.
//!
//! A line is one JSON object, members in this order:
//!
//! ```text
//! {"seq":N,"ts":"<RFC 3339 UTC, ms>","event":"<kind>",<fields…>,"prev":"<64 hex>","hash":"<64 hex>"}
//! ```
//!
//! `hash` is always the last member. Its value is
//! `H(prev ‖ body)` in lowercase hex, where
//! - `H` is SHA-256, or HMAC-SHA256 keyed with the UTF-8 bytes of
//!   `audit.hmac_key` when one is configured;
//! - `prev` is the 64 ASCII hex characters of the previous line's `hash`
//!   (64 `0`s for the first line of a file);
//! - `body` is the line's bytes exactly as written, with the final member
//!   `,"hash":"…"` taken out: everything before `,"hash":` followed by `}`.
//!
//! Hashing the bytes as written (not a re-serialization) means a verifier
//! needs no canonical JSON: any change to any byte of a line changes its
//! hash, and any removed, inserted or reordered line breaks `seq` or `prev`.
//! One line can be checked by hand:
//! `printf '%s%s' "$prev" "$body" | sha256sum`.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// `prev` of the first record of a file.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The member that ends every line, up to the hash value.
pub(crate) const HASH_MEMBER: &[u8] = b",\"hash\":\"";

/// SHA-256, or HMAC-SHA256 under a key.
#[derive(Clone)]
pub(crate) enum Hasher {
    Plain,
    Keyed(Hmac<Sha256>),
}

impl Hasher {
    pub(crate) fn new(key: Option<&[u8]>) -> Hasher {
        match key {
            None => Hasher::Plain,
            Some(k) => {
                Hasher::Keyed(Hmac::<Sha256>::new_from_slice(k).expect("HMAC takes any key length"))
            }
        }
    }

    /// `H(prev ‖ body)` as 64 lowercase hex characters.
    pub(crate) fn hash(&self, prev: &[u8], body: &[u8]) -> String {
        let digest: [u8; 32] = match self {
            Hasher::Plain => {
                let mut h = Sha256::new();
                h.update(prev);
                h.update(body);
                h.finalize().into()
            }
            Hasher::Keyed(mac) => {
                let mut m = mac.clone();
                m.update(prev);
                m.update(body);
                m.finalize().into_bytes().into()
            }
        };
        hex(&digest)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

pub(crate) fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Splits a line (without its newline) into `body` (the line without its
/// `hash` member) and the hash it states; `None` when the line does not end
/// with a `hash` member.
pub(crate) fn split_hash(line: &[u8]) -> Option<(Vec<u8>, &str)> {
    // `,"hash":"` + 64 hex + `"}`
    let tail = HASH_MEMBER.len() + 64 + 2;
    if line.len() < tail + 1 || !line.ends_with(b"\"}") {
        return None;
    }
    let start = line.len() - tail;
    if &line[start..start + HASH_MEMBER.len()] != HASH_MEMBER {
        return None;
    }
    let hash = std::str::from_utf8(&line[start + HASH_MEMBER.len()..line.len() - 2]).ok()?;
    if !is_hash(hash) {
        return None;
    }
    let mut body = Vec::with_capacity(start + 1);
    body.extend_from_slice(&line[..start]);
    body.push(b'}');
    Some((body, hash))
}

/// Builds one line: the caller writes the fields between [`Line::start`]
/// and [`Line::finish`].
pub(crate) struct Line<'a> {
    pub buf: &'a mut Vec<u8>,
    start: usize,
}

impl<'a> Line<'a> {
    /// Opens the object with `seq`, `ts` and `event`.
    pub(crate) fn start(buf: &'a mut Vec<u8>, seq: u64, ts: &str, event: &str) -> Line<'a> {
        let start = buf.len();
        buf.extend_from_slice(b"{\"seq\":");
        buf.extend_from_slice(seq.to_string().as_bytes());
        buf.extend_from_slice(b",\"ts\":\"");
        buf.extend_from_slice(ts.as_bytes());
        buf.extend_from_slice(b"\",\"event\":");
        json_str(buf, event);
        Line { buf, start }
    }

    /// A member whose value is JSON text already.
    pub(crate) fn raw(&mut self, key: &str, json: &[u8]) {
        self.buf.extend_from_slice(b",\"");
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"\":");
        self.buf.extend_from_slice(json);
    }

    pub(crate) fn str(&mut self, key: &str, value: &str) {
        self.raw(key, b"");
        json_str(self.buf, value);
    }

    pub(crate) fn opt_str(&mut self, key: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.str(key, v);
        }
    }

    pub(crate) fn num(&mut self, key: &str, value: i64) {
        self.raw(key, value.to_string().as_bytes());
    }

    pub(crate) fn value<T: serde::Serialize + ?Sized>(&mut self, key: &str, value: &T) {
        self.raw(key, b"");
        serde_json::to_writer(&mut *self.buf, value).expect("plain data serializes");
    }

    /// Closes the object with `prev` and `hash` and a newline; returns the hash.
    pub(crate) fn finish(self, prev: &str, hasher: &Hasher) -> String {
        self.buf.extend_from_slice(b",\"prev\":\"");
        self.buf.extend_from_slice(prev.as_bytes());
        self.buf.extend_from_slice(b"\"}");
        let hash = hasher.hash(prev.as_bytes(), &self.buf[self.start..]);
        self.buf.pop();
        self.buf.extend_from_slice(HASH_MEMBER);
        self.buf.extend_from_slice(hash.as_bytes());
        self.buf.extend_from_slice(b"\"}\n");
        hash
    }
}

fn json_str(buf: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(buf, s).expect("a string serializes");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_hashes_its_body_after_prev() {
        let mut buf = Vec::new();
        let mut line = Line::start(&mut buf, 1, "2026-01-01T00:00:00.000Z", "x");
        line.str("tool", "a\"b");
        let hash = line.finish(GENESIS, &Hasher::Plain);
        let text = std::str::from_utf8(&buf).unwrap();
        assert!(
            text.ends_with(&format!(",\"hash\":\"{hash}\"}}\n")),
            "{text}"
        );
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["tool"], "a\"b");
        let (body, stated) = split_hash(text.trim_end().as_bytes()).unwrap();
        assert_eq!(stated, hash);
        assert!(!String::from_utf8_lossy(&body).contains("\"hash\""));
        let mut h = Sha256::new();
        h.update(GENESIS.as_bytes());
        h.update(&body);
        assert_eq!(hex(&h.finalize()), hash);
        assert_ne!(
            Hasher::new(Some(b"key")).hash(GENESIS.as_bytes(), &body),
            hash
        );
    }
}
