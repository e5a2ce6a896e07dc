//! Exposed names for aggregated tools and prompts.
//!
//! Model APIs accept tool names matching `^[a-zA-Z0-9_-]{1,64}$`. The gateway
//! exposes `{prefix}{SEP}{name}`; when that does not fit, it is shortened
//! deterministically (sanitised, truncated, and suffixed with a stable hash of
//! the server and original name), so the same upstream name always maps to the
//! same exposed name, across restarts and replicas.

/// Separator between the server prefix and the upstream's own name.
pub const SEP: &str = "__";

/// Longest name the big model APIs accept.
pub const MAX_LEN: usize = 64;

/// True when `s` matches `^[a-zA-Z0-9_-]{1,64}$`.
pub fn is_valid(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_LEN && s.bytes().all(valid_byte)
}

fn valid_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// The exposed name of upstream item `name` served under `prefix` ("" = unprefixed).
pub fn expose(prefix: &str, name: &str) -> String {
    let joined = if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}{SEP}{name}")
    };
    if is_valid(&joined) {
        return joined;
    }
    // 1 separator + 8 hex digits of hash.
    let keep = MAX_LEN - 9;
    let mut out: String = joined
        .chars()
        .map(|c| {
            if c.is_ascii() && valid_byte(c as u8) {
                c
            } else {
                '_'
            }
        })
        .take(keep)
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out.push('_');
    out.push_str(&format!("{:08x}", fnv1a(joined.as_bytes()) as u32));
    out
}

/// FNV-1a, 64 bit. Hand-written because the hash must never change across
/// Rust or crate releases (std's hashers make no such promise) and this one is
/// five lines.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_keeps_valid_names() {
        assert_eq!(expose("github", "create_issue"), "github__create_issue");
        assert_eq!(expose("", "test_simple_text"), "test_simple_text");
    }

    #[test]
    fn shortens_long_and_invalid_names_stably() {
        let long = "a".repeat(100);
        let a = expose("srv", &long);
        assert!(is_valid(&a), "{a}");
        assert_eq!(a.len(), 64);
        assert_eq!(a, expose("srv", &long));
        assert_ne!(a, expose("srv", &"a".repeat(99)));
        let dotted = expose("fs", "read.file/v2");
        assert!(is_valid(&dotted), "{dotted}");
        assert!(dotted.starts_with("fs__read_file_v2_"));
        assert_ne!(dotted, expose("fs", "read_file_v2"));
        // Pinned value: must never change across releases.
        assert_eq!(fnv1a(b"abc"), 0xe71fa2190541574b);
    }
}
