//! The API key format and its keyed hash, without I/O.
//!
//! A key reads `slk_<id>_<secret>_<check>`: `id` (16 characters, 80 random
//! bits) is the public lookup index, `secret` (52 characters, 256 random bits
//! from the OS's CSPRNG) is what proves possession, both in lowercase base32
//! (RFC 4648 alphabet: `a-z2-7`), and `check` is the CRC-32 of everything
//! before it in 8 hex digits. The prefix lets secret scanners find leaked
//! keys; the checksum lets them (and the gateway) tell a real key from a
//! random string, and refuse a mistyped one before any lookup.
//!
//! Only `HMAC-SHA-256(pepper, "slk:" id ":" secret)` is stored: a stolen key
//! database does not give working keys without the pepper.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use subtle::ConstantTimeEq;

/// The prefix of every Sluice API key.
pub const PREFIX: &str = "slk_";
const ID_BYTES: usize = 10;
const SECRET_BYTES: usize = 32;
const ID_LEN: usize = 16;
const SECRET_LEN: usize = 52;
const CHECK_LEN: usize = 8;

/// A whole API key, as shown once at creation. `Debug` shows only its id.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    id: String,
    secret: String,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({PREFIX}{}_<redacted>)", self.id)
    }
}

/// Why a string is not an API key (decided without any lookup).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Not the shape of a key.
    #[error("the token is not a Sluice API key (expected slk_<id>_<secret>_<checksum>)")]
    Malformed,
    /// The shape of a key, but its checksum does not match.
    #[error("the API key's checksum does not match: it was mistyped, cut short or altered")]
    Checksum,
}

impl ApiKey {
    /// A new key from the operating system's CSPRNG.
    pub fn generate() -> Result<ApiKey, getrandom::Error> {
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        getrandom::getrandom(&mut id)?;
        getrandom::getrandom(&mut secret)?;
        Ok(ApiKey {
            id: base32(&id),
            secret: base32(&secret),
        })
    }

    /// The same id with a new secret (rotation keeps the id, so sessions and
    /// audit records keep naming the same principal).
    pub fn regenerate(id: &str) -> Result<ApiKey, getrandom::Error> {
        let mut secret = [0u8; SECRET_BYTES];
        getrandom::getrandom(&mut secret)?;
        Ok(ApiKey {
            id: id.to_string(),
            secret: base32(&secret),
        })
    }

    /// Reads a presented key: its shape, then its checksum.
    pub fn parse(token: &str) -> Result<ApiKey, FormatError> {
        let rest = token.strip_prefix(PREFIX).ok_or(FormatError::Malformed)?;
        let mut parts = rest.split('_');
        let (Some(id), Some(secret), Some(check), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(FormatError::Malformed);
        };
        let b32 = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        };
        if id.len() != ID_LEN
            || secret.len() != SECRET_LEN
            || check.len() != CHECK_LEN
            || !b32(id)
            || !b32(secret)
            || !check
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(FormatError::Malformed);
        }
        let body = &token[..token.len() - CHECK_LEN - 1];
        if format!("{:08x}", crc32(body.as_bytes())) != check {
            return Err(FormatError::Checksum);
        }
        Ok(ApiKey {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// The public id (the store's index, and the principal's id).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The whole key, to show once: never log it.
    pub fn expose(&self) -> String {
        let body = format!("{PREFIX}{}_{}", self.id, self.secret);
        let check = crc32(body.as_bytes());
        format!("{body}_{check:08x}")
    }

    /// The keyed hash that is stored (hex).
    pub fn hash(&self, pepper: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(pepper).expect("HMAC takes any key length");
        mac.update(b"slk:");
        mac.update(self.id.as_bytes());
        mac.update(b":");
        mac.update(self.secret.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// True if `stored` is this key's hash, compared in constant time.
    pub fn matches(&self, pepper: &[u8], stored: &str) -> bool {
        let mine = self.hash(pepper);
        mine.len() == stored.len() && bool::from(mine.as_bytes().ct_eq(stored.as_bytes()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lowercase RFC 4648 base32 without padding.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// CRC-32 (IEEE 802.3, as in zlib), bitwise: keys are short.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_and_base32_match_their_standards() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(base32(b"foobar"), "mzxw6ytboi");
        assert_eq!(base32(&[0u8; 10]).len(), ID_LEN);
        assert_eq!(base32(&[0xffu8; 32]).len(), SECRET_LEN);
    }

    #[test]
    fn a_generated_key_parses_back_and_hashes_alike() {
        let k = ApiKey::generate().unwrap();
        let text = k.expose();
        assert!(text.starts_with("slk_"), "{text}");
        assert_eq!(text.len(), 4 + ID_LEN + 1 + SECRET_LEN + 1 + CHECK_LEN);
        let back = ApiKey::parse(&text).unwrap();
        assert_eq!(back, k);
        let pepper = [7u8; 32];
        let h = k.hash(&pepper);
        assert_eq!(h.len(), 64);
        assert!(back.matches(&pepper, &h));
        assert!(
            !back.matches(&[8u8; 32], &h),
            "another pepper gives another hash"
        );
        assert_ne!(ApiKey::generate().unwrap().id(), k.id());
        let debug = format!("{k:?}");
        assert!(!debug.contains(&k.secret), "{debug}");
    }

    #[test]
    fn a_rotated_key_keeps_its_id_but_not_its_secret() {
        let k = ApiKey::generate().unwrap();
        let r = ApiKey::regenerate(k.id()).unwrap();
        assert_eq!(r.id(), k.id());
        assert!(!r.matches(&[1u8; 32], &k.hash(&[1u8; 32])));
    }

    #[test]
    fn typos_and_other_strings_are_refused_before_any_lookup() {
        let text = ApiKey::generate().unwrap().expose();
        // One character of the secret changed: the checksum catches it.
        let i = 4 + ID_LEN + 1 + 10;
        let c = text.as_bytes()[i];
        let other = if c == b'a' { 'b' } else { 'a' };
        let typo = format!("{}{other}{}", &text[..i], &text[i + 1..]);
        assert_eq!(ApiKey::parse(&typo), Err(FormatError::Checksum));
        for bad in [
            "",
            "slk_",
            "Bearer",
            &text[..text.len() - 1],
            &text.to_uppercase(),
            &text.replacen("slk_", "sk_", 1),
            &format!("{text}_x"),
            &text.replace('_', "-"),
        ] {
            assert_eq!(ApiKey::parse(bad), Err(FormatError::Malformed), "{bad}");
        }
    }
}
