//! One live connection to an upstream, whatever its transport.

use crate::duplex::Duplex;
use crate::http::HttpConn;
use crate::{CallCtx, UpstreamError};
use serde_json::value::RawValue;
use std::sync::Arc;

#[derive(Clone)]
pub(crate) enum Conn {
    /// Stdio child or legacy HTTP+SSE: one ordered inbound stream.
    Duplex(Arc<Duplex>),
    /// Streamable HTTP: a POST per message.
    Http(Arc<HttpConn>),
}

impl Conn {
    pub(crate) async fn request(
        &self,
        method: &str,
        params: Option<&str>,
        ctx: CallCtx,
    ) -> Result<Box<RawValue>, UpstreamError> {
        match self {
            Conn::Duplex(d) => d.request(method, params, ctx).await,
            Conn::Http(h) => h.request(method, params, ctx).await,
        }
    }

    pub(crate) async fn notify(
        &self,
        method: &str,
        params: Option<&str>,
    ) -> Result<(), UpstreamError> {
        match self {
            Conn::Duplex(d) => d.notify(method, params),
            Conn::Http(h) => h.notify(method, params).await,
        }
    }

    /// Calls awaiting an answer (duplex connections; HTTP calls are independent).
    pub(crate) fn in_flight(&self) -> usize {
        match self {
            Conn::Duplex(d) => d.in_flight(),
            Conn::Http(_) => 0,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Conn::Duplex(d) => d.is_closed(),
            Conn::Http(_) => false,
        }
    }
}
