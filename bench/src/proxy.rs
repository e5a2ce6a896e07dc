//! The floor: a bare HTTP/1.1 reverse-proxy hop. Each request is forwarded
//! with headers and body untouched (only `Host` and hop-by-hop headers
//! dropped) over a pooled keep-alive client; no parsing, no routing.
//! A gateway cannot do less work per call than this.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HOST, HeaderName};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, hyper::Error>;

const HOP_BY_HOP: [&str; 7] = [
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

struct Proxy {
    client: Client<HttpConnector, Full<Bytes>>,
    /// `http://host:port` of the upstream.
    base: String,
}

/// Serves until the process ends. Prints `listening on http://ADDR/mcp`.
pub(crate) async fn serve(listen: SocketAddr, upstream: &str) -> anyhow::Result<()> {
    let uri: Uri = upstream.parse()?;
    let base = format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("http"),
        uri.authority()
            .ok_or_else(|| anyhow::anyhow!("no authority in {upstream}"))?
    );
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let proxy = Arc::new(Proxy { client, base });

    let listener = TcpListener::bind(listen).await?;
    let local = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{local}{}", uri.path())?;
        out.flush()?;
    }
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, hyper::Error>(proxy.forward(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

impl Proxy {
    async fn forward(&self, mut req: Request<Incoming>) -> Response<Body> {
        let pq = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let uri: Uri = match format!("{}{pq}", self.base).parse() {
            Ok(u) => u,
            Err(_) => return status(StatusCode::BAD_REQUEST),
        };
        *req.uri_mut() = uri;
        strip(req.headers_mut());
        req.headers_mut().remove(HOST);
        let (parts, body) = req.into_parts();
        // Bodies are buffered (MCP messages are small; a gateway must read a
        // request whole to route it), so each leaves in one write.
        let Ok(body) = body.collect().await else {
            return status(StatusCode::BAD_REQUEST);
        };
        let req = Request::from_parts(parts, Full::new(body.to_bytes()));
        match self.client.request(req).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip(&mut parts.headers);
                if is_sse(&parts.headers) {
                    // Streams are relayed as they come.
                    return Response::from_parts(parts, body.boxed());
                }
                match body.collect().await {
                    Ok(b) => Response::from_parts(
                        parts,
                        Full::new(b.to_bytes())
                            .map_err(|never| match never {})
                            .boxed(),
                    ),
                    Err(_) => status(StatusCode::BAD_GATEWAY),
                }
            }
            Err(_) => status(StatusCode::BAD_GATEWAY),
        }
    }
}

fn is_sse(h: &hyper::HeaderMap) -> bool {
    h.get(hyper::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

fn strip(h: &mut hyper::HeaderMap) {
    h.remove(CONNECTION);
    for name in HOP_BY_HOP {
        h.remove(HeaderName::from_static(name));
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = code;
    r
}
