//! Opaque pagination cursors for merged lists.
//!
//! A merged list is paginated by the gateway itself: the cursor is an offset
//! into the merged list, wrapped so clients treat it as opaque.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const TAG: &str = "sluice:v1:";

/// Encodes an offset into the merged list as an opaque cursor.
pub fn encode(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("{TAG}{offset}"))
}

/// Decodes a cursor produced by [`encode`]; `None` when it is not one of ours.
pub fn decode(cursor: &str) -> Option<usize> {
    let raw = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let s = std::str::from_utf8(&raw).ok()?;
    s.strip_prefix(TAG)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_rejects_foreign() {
        assert_eq!(super::decode(&super::encode(1234)), Some(1234));
        assert_eq!(super::decode("bm9wZQ"), None);
        assert_eq!(super::decode("!!"), None);
    }
}
