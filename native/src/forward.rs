//! Primary forwarding: send to the chosen endpoint within the route timeout,
//! and turn upstream failures into the proxy's own 502 / 504.

use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::RequestBody;
use crate::error::LocalReply;
use crate::headers::strip_hop_by_hop;
use crate::upstream::PrimaryClient;

pub async fn send(
    client: &PrimaryClient,
    request: Request<RequestBody>,
    timeout: Option<Duration>,
) -> Result<Response<Incoming>, LocalReply> {
    let exchange = client.request(request);
    let result = match timeout {
        Some(limit) => tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| LocalReply::UpstreamTimeout)?,
        None => exchange.await,
    };
    let mut response = result.map_err(|e| {
        if e.is_connect() {
            LocalReply::UpstreamConnect
        } else {
            LocalReply::UpstreamReset
        }
    })?;
    strip_hop_by_hop(response.headers_mut());
    Ok(response)
}
