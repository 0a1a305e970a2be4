//! One request through the edge. SKELETON: owned by the proxy helper.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;

use super::{ConnInfo, Shared};
use crate::config::L7Config;

/// Response body of the proxy (a backend's streamed body or a short local answer).
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Backend connection pools and the settings of the request path.
pub struct Proxy {}

impl Proxy {
    pub fn new(l7: &L7Config) -> Proxy {
        let _ = l7;
        Proxy {}
    }
}

/// Serves one request that a listener accepted on `conn`.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let _ = (shared, conn, req);
    unimplemented!()
}
