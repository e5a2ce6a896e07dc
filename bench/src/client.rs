//! A minimal MCP Streamable HTTP client on one keep-alive HTTP/1.1
//! connection, cheap enough that the load generator is not what gets
//! measured: a 2025-11-25 session, or stateless 2026-07-28 requests.

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::net::TcpStream;

pub(crate) const PROTOCOL_VERSION: &str = "2025-11-25";
/// The stateless revision: no handshake, every request carries its envelope.
pub(crate) const STATELESS_VERSION: &str = "2026-07-28";

/// Which protocol era a client speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Era {
    /// 2025-11-25: `initialize`, `notifications/initialized`, then calls in
    /// the session (`Mcp-Session-Id`).
    #[default]
    Session,
    /// 2026-07-28: no session; each `tools/call` carries `params._meta` and
    /// the `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers.
    Stateless,
}

impl Era {
    pub fn parse(s: &str) -> anyhow::Result<Era> {
        match s {
            "session" | PROTOCOL_VERSION => Ok(Era::Session),
            "stateless" | STATELESS_VERSION => Ok(Era::Stateless),
            _ => bail!("unknown era `{s}` (session, stateless)"),
        }
    }

    /// How rows name it.
    pub fn describe(self) -> &'static str {
        match self {
            Era::Session => "session era (2025-11-25)",
            Era::Stateless => "stateless era (2026-07-28)",
        }
    }
}

/// The envelope of a stateless request (`params._meta`), as JSON text.
const STATELESS_META: &str = concat!(
    r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","#,
    r#""io.modelcontextprotocol/clientCapabilities":{},"#,
    r#""io.modelcontextprotocol/clientInfo":{"name":"sluice-bench","version":""#,
    env!("CARGO_PKG_VERSION"),
    r#""}}"#
);

/// Where the clients go: an `http://host:port/path` URL plus extra headers.
#[derive(Debug)]
pub(crate) struct Target {
    /// `host:port`, for connecting and for the Host header.
    pub authority: String,
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Target {
    pub(crate) fn parse(url: &str, headers: &[String]) -> anyhow::Result<Target> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("only http:// URLs are supported: {url}"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            bail!("no host in {url}");
        }
        let headers = headers
            .iter()
            .map(|h| {
                let (k, v) = h
                    .split_once(':')
                    .ok_or_else(|| anyhow!("header `{h}` is not `Name: value`"))?;
                Ok((
                    HeaderName::from_bytes(k.trim().as_bytes())?,
                    HeaderValue::from_str(v.trim())?,
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Target {
            authority: authority.to_string(),
            path: path.to_string(),
            headers,
        })
    }
}

/// One answer: status, content type, body.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub session: Option<HeaderValue>,
    pub sse: bool,
    pub body: Bytes,
}

/// One MCP client: a connection (re-opened on failure) and a session.
pub(crate) struct Client {
    target: Arc<Target>,
    era: Era,
    conn: Option<SendRequest<Full<Bytes>>>,
    session: Option<HeaderValue>,
    next_id: u64,
}

impl Client {
    /// A session-era client.
    pub(crate) fn new(target: Arc<Target>) -> Client {
        Client::with_era(target, Era::Session)
    }

    pub(crate) fn with_era(target: Arc<Target>, era: Era) -> Client {
        Client {
            target,
            era,
            conn: None,
            session: None,
            next_id: 1,
        }
    }

    async fn connect(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        if self.conn.as_ref().is_some_and(|c| c.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let tcp = TcpStream::connect(&self.target.authority)
                .await
                .with_context(|| format!("connecting to {}", self.target.authority))?;
            tcp.set_nodelay(true)?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.conn = Some(sender);
        }
        Ok(self.conn.as_mut().expect("connected"))
    }

    /// `routing`: the `Mcp-Method` and `Mcp-Name` of a stateless request.
    fn request(
        &self,
        method: Method,
        body: Bytes,
        routing: Option<(&str, &str)>,
    ) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut b = Request::builder()
            .method(method)
            .uri(&self.target.path)
            .header(hyper::header::HOST, &self.target.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::ACCEPT, "application/json, text/event-stream");
        if let Some(s) = &self.session {
            b = b
                .header("mcp-session-id", s.clone())
                .header("mcp-protocol-version", PROTOCOL_VERSION);
        }
        if let Some((m, name)) = routing {
            b = b
                .header("mcp-protocol-version", STATELESS_VERSION)
                .header("mcp-method", m)
                .header("mcp-name", name);
        }
        for (k, v) in &self.target.headers {
            b = b.header(k, v);
        }
        Ok(b.body(Full::new(body))?)
    }

    /// Sends one request on the connection and reads the whole answer.
    pub(crate) async fn send(&mut self, method: Method, body: Bytes) -> anyhow::Result<Answer> {
        let req = self.request(method, body, None)?;
        self.send_request(req).await
    }

    async fn send_request(&mut self, req: Request<Full<Bytes>>) -> anyhow::Result<Answer> {
        let conn = self.connect().await?;
        conn.ready().await?;
        let result = async {
            let resp = conn.send_request(req).await?;
            let status = resp.status();
            let session = resp.headers().get("mcp-session-id").cloned();
            let sse = resp
                .headers()
                .get(hyper::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok(Answer {
                status,
                session,
                sse,
                body,
            })
        }
        .await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn post(&mut self, body: Bytes) -> anyhow::Result<Answer> {
        self.send(Method::POST, body).await
    }

    /// initialize, then notifications/initialized (nothing for a stateless client).
    pub(crate) async fn initialize(&mut self) -> anyhow::Result<()> {
        self.session = None;
        if self.era == Era::Stateless {
            return Ok(());
        }
        let init = serde_json::json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "sluice-bench", "version": env!("CARGO_PKG_VERSION")}
            }
        });
        let a = self.post(Bytes::from(init.to_string())).await?;
        if a.status != StatusCode::OK {
            bail!(
                "initialize: HTTP {}: {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            );
        }
        let msg = response_message(&a).context("initialize: no JSON-RPC response")?;
        if msg.get("result").is_none() {
            bail!("initialize failed: {msg}");
        }
        self.session = a.session;
        let a = self
            .post(Bytes::from_static(
                br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            ))
            .await?;
        if !a.status.is_success() {
            bail!("notifications/initialized: HTTP {}", a.status);
        }
        Ok(())
    }

    /// The body of a `tools/call` with the next request id.
    pub(crate) fn call_body(&mut self, tool: &str, args: &str) -> Bytes {
        let id = self.next_id;
        self.next_id += 1;
        match self.era {
            Era::Session => Bytes::from(format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
            )),
            Era::Stateless => Bytes::from(format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{args},"_meta":{STATELESS_META}}}}}"#
            )),
        }
    }

    /// One `tools/call`; an error unless it returns a result without `isError`.
    /// `verify` parses the answer fully (used on each client's first call);
    /// otherwise the check is a byte search.
    pub(crate) async fn call(
        &mut self,
        tool: &str,
        args: &str,
        verify: bool,
    ) -> anyhow::Result<()> {
        let body = self.call_body(tool, args);
        let routing = (self.era == Era::Stateless).then_some(("tools/call", tool));
        let req = self.request(Method::POST, body, routing)?;
        let a = self.send_request(req).await?;
        if a.status != StatusCode::OK {
            if a.status == StatusCode::NOT_FOUND {
                // The session is gone: start a new one before the next call.
                self.session = None;
            }
            bail!(
                "tools/call: HTTP {}: {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            );
        }
        if verify {
            let msg = response_message(&a).context("tools/call: no JSON-RPC response")?;
            let result = msg
                .get("result")
                .ok_or_else(|| anyhow!("tools/call failed: {msg}"))?;
            if result.get("isError") == Some(&serde_json::Value::Bool(true)) {
                bail!("tools/call returned isError: {result}");
            }
            if result.get("content").is_none() {
                bail!("tools/call result has no content: {result}");
            }
        } else if !contains(&a.body, b"\"result\"") || contains(&a.body, b"\"isError\":true") {
            bail!("tools/call failed: {}", String::from_utf8_lossy(&a.body));
        }
        Ok(())
    }

    /// Forgets the connection (the next request opens a new one).
    pub(crate) fn drop_connection(&mut self) {
        self.conn = None;
    }

    /// Whether calls can be made (a stateless client needs no session).
    pub(crate) fn has_session(&self) -> bool {
        self.era == Era::Stateless || self.session.is_some()
    }

    /// Ends the session (best effort).
    pub(crate) async fn delete(&mut self) {
        if self.session.is_some() {
            let _ = self.send(Method::DELETE, Bytes::new()).await;
            self.session = None;
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The JSON-RPC response in an answer: the JSON body, or the SSE `data:`
/// event that carries an `id` and a `result` or `error`.
pub(crate) fn response_message(a: &Answer) -> Option<serde_json::Value> {
    if !a.sse {
        return serde_json::from_slice(&a.body).ok();
    }
    let text = std::str::from_utf8(&a.body).ok()?;
    sse_messages(text)
        .into_iter()
        .find(|m| m.get("id").is_some() && (m.get("result").is_some() || m.get("error").is_some()))
}

/// The JSON messages of an SSE body (multi-line `data:` fields joined).
pub(crate) fn sse_messages(text: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut data = String::new();
    for line in text.lines().chain(std::iter::once("")) {
        if line.is_empty() {
            if !data.is_empty() {
                if let Ok(v) = serde_json::from_str(&data) {
                    out.push(v);
                }
                data.clear();
            }
        } else if let Some(d) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(d.strip_prefix(' ').unwrap_or(d));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t = Target::parse(
            "http://127.0.0.1:4444/servers/abc/mcp",
            &["Authorization: Bearer x.y".into()],
        )
        .unwrap();
        assert_eq!(t.authority, "127.0.0.1:4444");
        assert_eq!(t.path, "/servers/abc/mcp");
        assert_eq!(t.headers[0].0, "authorization");
        assert_eq!(t.headers[0].1, "Bearer x.y");
        assert!(Target::parse("https://x/mcp", &[]).is_err());
        assert_eq!(Target::parse("http://h:1", &[]).unwrap().path, "/");
    }

    #[test]
    fn stateless_calls_carry_the_envelope_and_routing_headers() {
        let t = Arc::new(Target::parse("http://127.0.0.1:9/mcp", &[]).unwrap());
        let mut c = Client::with_era(t, Era::Stateless);
        assert!(c.has_session());
        let body = c.call_body("fx__noop", "{}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["params"]["name"], "fx__noop");
        assert_eq!(
            v["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
            STATELESS_VERSION
        );
        let req = c
            .request(Method::POST, body, Some(("tools/call", "fx__noop")))
            .unwrap();
        let h = req.headers();
        assert_eq!(h["mcp-protocol-version"], STATELESS_VERSION);
        assert_eq!(h["mcp-method"], "tools/call");
        assert_eq!(h["mcp-name"], "fx__noop");
        assert!(h.get("mcp-session-id").is_none());
        assert_eq!(Era::parse("stateless").unwrap(), Era::Stateless);
        assert_eq!(Era::parse("2025-11-25").unwrap(), Era::Session);
        assert!(Era::parse("x").is_err());
    }

    #[test]
    fn finds_the_response_in_sse() {
        let body = "id: 1\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n\
                    data: {\"jsonrpc\":\"2.0\",\"id\":3,\r\ndata: \"result\":{}}\n\n";
        let a = Answer {
            status: StatusCode::OK,
            session: None,
            sse: true,
            body: Bytes::from(body.replace("\r\n", "\n")),
        };
        let m = response_message(&a).unwrap();
        assert_eq!(m["id"], 3);
    }
}
