//! MCP protocol revisions the gateway speaks.

/// The newest session-based revision; offered when a client asks for one we do not know.
pub const LATEST: &str = "2025-11-25";

/// Session-based revisions accepted from clients and upstreams, newest first.
pub const SUPPORTED: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// Returns the static form of `v` when it is a supported revision.
pub fn supported(v: &str) -> Option<&'static str> {
    SUPPORTED.iter().copied().find(|s| *s == v)
}

/// The stateless revision: no sessions, every request self-contained.
pub const MODERN: &str = "2026-07-28";

/// Revisions served statelessly, newest first.
pub const MODERN_SUPPORTED: &[&str] = &[MODERN];

/// True for a session-based (handshake) revision.
pub fn is_legacy(v: &str) -> bool {
    SUPPORTED.contains(&v)
}

/// Revision assumed when a request carries no `MCP-Protocol-Version` header (spec: 2025-03-26).
pub const DEFAULT_WITHOUT_HEADER: &str = "2025-03-26";

/// Header names used on the wire.
pub mod header {
    /// The session a session-era Streamable HTTP request belongs to; the server sets it at initialize.
    pub const SESSION_ID: &str = "mcp-session-id";
    /// The revision a request speaks: on every request after initialize, and every 2026-07-28 one.
    pub const PROTOCOL_VERSION: &str = "mcp-protocol-version";
    /// The last SSE event a reconnecting client saw; the stream resumes after it.
    pub const LAST_EVENT_ID: &str = "last-event-id";
    /// 2026-07-28: the request's method, mirrored so proxies can route without the body.
    pub const METHOD: &str = "mcp-method";
    /// 2026-07-28: the tool, prompt or resource named by the request, mirrored likewise.
    pub const NAME: &str = "mcp-name";
}
