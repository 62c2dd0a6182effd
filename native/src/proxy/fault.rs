//! A route's fault injection (Istio's `fault`), applied before forwarding.

use bytes::Bytes;
use http::Response;

use crate::body::ResponseBody;
use crate::http::fault::Abort;
use crate::http::grpc;
use crate::http::local_reply::{plain_response, ResponseFlag};
use crate::route::Route;

/// Applies the route's fault: holds the request back if it is sampled for a
/// delay, and answers it instead of forwarding if it is sampled for an abort.
pub async fn apply(route: &Route) -> Option<Response<ResponseBody>> {
    let fault = route.fault.as_ref()?;
    if let Some(delay) = fault.delay() {
        tokio::time::sleep(delay).await;
    }
    let mut response = match fault.abort()? {
        Abort::Http(status) => plain_response(status, Bytes::from_static(b"fault filter abort\n")),
        Abort::Grpc(code) => grpc::answer(code, "fault filter abort"),
    };
    // Envoy's flag for an injected abort.
    response.extensions_mut().insert(ResponseFlag("FI"));
    Some(response)
}
