//! The gRPC backend of pymirror's benchmark: `grpc-backend ADDRESS NAME` serves, on h2c
//! (HTTP/2 with prior knowledge, as gRPC clients speak it in plaintext):
//!
//! - `/bench.Echo/Unary`: answers `Reply { message: NAME }` whatever it is sent, so a
//!   caller can tell v1 from v2, and counts the call;
//! - `/bench.Echo/Count`: answers `Calls { calls }`, the `Unary` calls served so far, so
//!   the bench knows how many copies reached a mirror.
//!
//! No protoc on the machine: the messages are derived by hand and the service routes by
//! path as tonic-build's generated code does. One thread (`current_thread`), like the
//! nginx backends' one worker: a backend cheap enough never to be the bottleneck's cause.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tonic::codegen::{http, BoxFuture, Context, Poll, Service};
use tonic::server::{Grpc, UnaryService};
use tonic_prost::ProstCodec;

/// `message Request { string message = 1; }`: `Unary`'s argument, ignored.
#[derive(Clone, PartialEq, prost::Message)]
struct Request {
    #[prost(string, tag = "1")]
    message: String,
}

/// `message Reply { string message = 1; }`: the backend's name.
#[derive(Clone, PartialEq, prost::Message)]
struct Reply {
    #[prost(string, tag = "1")]
    message: String,
}

/// `message Empty {}`: `Count`'s argument.
#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

/// `message Calls { uint64 calls = 1; }`: `Count`'s answer.
#[derive(Clone, PartialEq, prost::Message)]
struct Calls {
    #[prost(uint64, tag = "1")]
    calls: u64,
}

/// What every connection's service shares: the fixed reply and the call count.
struct State {
    reply: Reply,
    calls: AtomicU64,
}

/// `/bench.Echo/Unary`.
struct Unary(Arc<State>);

impl UnaryService<Request> for Unary {
    type Response = Reply;
    type Future = BoxFuture<tonic::Response<Reply>, tonic::Status>;

    fn call(&mut self, _: tonic::Request<Request>) -> Self::Future {
        // Counted before the answer is sent: once a caller has its answer, the count
        // holds its call.
        self.0.calls.fetch_add(1, Ordering::Relaxed);
        let reply = self.0.reply.clone();
        Box::pin(async move { Ok(tonic::Response::new(reply)) })
    }
}

/// `/bench.Echo/Count`.
struct Count(Arc<State>);

impl UnaryService<Empty> for Count {
    type Response = Calls;
    type Future = BoxFuture<tonic::Response<Calls>, tonic::Status>;

    fn call(&mut self, _: tonic::Request<Empty>) -> Self::Future {
        let calls = self.0.calls.load(Ordering::Relaxed);
        Box::pin(async move { Ok(tonic::Response::new(Calls { calls })) })
    }
}

/// The `bench.Echo` service: routes a call by its path, as generated servers do.
#[derive(Clone)]
struct Echo(Arc<State>);

impl Service<http::Request<tonic::body::Body>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let state = self.0.clone();
        match request.uri().path() {
            "/bench.Echo/Unary" => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::default());
                Ok(grpc.unary(Unary(state), request).await)
            }),
            "/bench.Echo/Count" => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::default());
                Ok(grpc.unary(Count(state), request).await)
            }),
            // An unknown method is a gRPC error (HTTP 200), never an HTTP one.
            _ => Box::pin(async { Ok(tonic::Status::unimplemented("").into_http()) }),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(address), Some(name), None) = (args.next(), args.next(), args.next()) else {
        return Err("usage: grpc-backend ADDRESS NAME".into());
    };
    let address: SocketAddr = address.parse()?;
    let state = State {
        reply: Reply { message: name },
        calls: AtomicU64::new(0),
    };
    tonic::transport::Server::builder()
        .serve(address, Echo(Arc::new(state)))
        .await?;
    Ok(())
}
