//! The differential test: the project's HTTP/1.1 client and hyper's are given
//! the same bytes over real loopback sockets and must agree on what they make
//! of them. Answers: status, fields, body and trailers, or that the answer
//! was refused (and whether as malformed). Requests: the exact bytes each
//! writes for the same head and body. Cases are the framing rules of the
//! hostile-mirror table, and generated answers besides.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::encode;
use super::session::{self, Connection, Reading};
use crate::transport::Stream;
use crate::upstream::gauges::{Counted, Gauge};

/// An answer's body and trailers, as read to its end; `Err`: it broke.
type Read = Result<(Vec<u8>, Option<Vec<(String, Vec<u8>)>>), ()>;

/// What a client made of an answer.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The head was refused; `protocol`: as malformed, not as a closed connection.
    Refused { protocol: bool },
    Answer {
        status: u16,
        fields: Vec<(String, Vec<u8>)>,
        body: Read,
    },
}

/// The fields as they would reach a client: hop-by-hop ones are the
/// proxy's to drop either way (ours drops some as it parses). Ordered by
/// name, each name's values in their order: the strip's removals move other
/// fields (`HeaderMap` swaps), and only a name's own order has meaning.
fn fields(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    let mut headers = headers.clone();
    crate::http::headers::strip_hop_by_hop(&mut headers);
    let mut fields: Vec<_> = headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    fields
}

/// A server that reads a request head, writes `answer` and closes.
async fn answering(answer: &'static [u8]) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = socket.write_all(answer).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    address
}

async fn collect<B>(mut body: B) -> Read
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ())?;
        if let Some(d) = frame.data_ref() {
            data.extend_from_slice(d);
        } else if let Some(t) = frame.trailers_ref() {
            trailers = Some(fields(t));
        }
    }
    Ok((data, trailers))
}

async fn with_hyper(address: std::net::SocketAddr, method: Method) -> Outcome {
    let tcp = TcpStream::connect(address).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = Request::builder()
        .method(method)
        .uri("/")
        .header("host", "test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    match sender.send_request(request).await {
        Err(e) => Outcome::Refused {
            protocol: e.is_parse(),
        },
        Ok(response) => {
            let (parts, body) = response.into_parts();
            Outcome::Answer {
                status: parts.status.as_u16(),
                fields: fields(&parts.headers),
                body: collect(body).await,
            }
        }
    }
}

async fn with_ours(address: std::net::SocketAddr, method: Method) -> Outcome {
    let tcp = TcpStream::connect(address).await.unwrap();
    let io = Counted::new(TokioIo::new(Stream::tcp(tcp)), Arc::new(Gauge::default()));
    let mut conn = Connection::new(io);
    let (mut parts, ()) = Request::builder()
        .method(method.clone())
        .uri("/")
        .header("host", "test")
        .body(())
        .unwrap()
        .into_parts();
    encode::framing(&mut parts, true, Some(0));
    let head = encode::head(&parts);
    let exchanged = session::exchange::<Full<Bytes>>(
        &mut conn,
        head,
        &method,
        None,
        super::MAX_HEAD_BYTES,
        false,
    )
    .await;
    match exchanged {
        Err(failed) => Outcome::Refused {
            protocol: failed.error.is_protocol(),
        },
        Ok((answer, sending)) => {
            let reading = Reading::new(conn, answer.decoder, answer.keep_alive, sending);
            Outcome::Answer {
                status: answer.status.as_u16(),
                fields: fields(&answer.headers),
                body: collect(ReadingBody(reading)).await,
            }
        }
    }
}

struct ReadingBody<B>(Reading<B>);

impl<B> Body for ReadingBody<B>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = super::WireError;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_frame(cx)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn both(answer: &'static [u8], method: Method) -> (Outcome, Outcome) {
    let address = answering(answer).await;
    let limit = Duration::from_secs(10);
    let theirs = tokio::time::timeout(limit, with_hyper(address, method.clone()));
    let ours = tokio::time::timeout(limit, with_ours(address, method));
    (theirs.await.unwrap(), ours.await.unwrap())
}

/// The framing table: every rule of RFC 9112 6.3 a hostile upstream may try.
const ANSWERS: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabcdef",
    b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\ncontent-length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd",
    b"HTTP/1.1 200 OK\r\ncontent-length: +3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\ncontent-length: 0x3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\ncontent-length:\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 1\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: identity\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: x\r\n\r\nabc",
    b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;ext=1;b\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3 \t;x\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;a\nb\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n 3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10000000000000000\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\nabc",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\ngrpc-status: 0\r\nx-b: 1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nbad trailer\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\nuntil the end",
    b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\nhello",
    b"HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 Fine Thanks\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 599 Odd\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 099 Low\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 1000 High\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/2.0 200 OK\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-folded: a\r\n b\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-space : a\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-nul: a\0b\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-high: caf\xc3\xa9\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx(bad): a\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\ncontent-length: 2\n\nok",
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n",
    b"HTTP/1.1 200 OK\r\n",
    b"",
    b"garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nset-cookie: b=2\r\nContent-Length: 2\r\n\r\nok",
];

#[test]
fn both_clients_make_the_same_of_every_answer_in_the_table() {
    let rt = runtime();
    for answer in ANSWERS {
        for method in [Method::GET, Method::HEAD] {
            let (theirs, ours) = rt.block_on(both(answer, method.clone()));
            assert_eq!(
                theirs,
                ours,
                "{method} answered {:?}",
                String::from_utf8_lossy(answer)
            );
        }
    }
}

#[test]
fn more_header_fields_than_allowed_are_refused_by_both() {
    let mut answer = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..101 {
        answer.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
    }
    answer.extend_from_slice(b"content-length: 0\r\n\r\n");
    let answer: &'static [u8] = answer.leak();
    let (theirs, ours) = runtime().block_on(both(answer, Method::GET));
    assert_eq!(theirs, Outcome::Refused { protocol: true });
    assert_eq!(ours, theirs);
}

/// The one rule where the two differ, on purpose: hyper hands a 101 to a
/// request that asked for no upgrade up as an answer with no body; here it
/// is refused as malformed (only upgrade requests may get one, and those go
/// upstream on connections of their own), so no user is sent a 101 that
/// switches to nothing.
#[test]
fn an_unasked_for_101_is_refused_as_malformed() {
    let answer = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\nrest";
    let (theirs, ours) = runtime().block_on(both(answer, Method::GET));
    assert!(
        matches!(theirs, Outcome::Answer { status: 101, .. }),
        "{theirs:?}"
    );
    assert_eq!(ours, Outcome::Refused { protocol: true });
}

fn answer_strategy() -> impl Strategy<Value = Vec<u8>> {
    let status = prop::sample::select(vec!["200 OK", "204 X", "304 X", "404 Y", "100 C", "500 Z"]);
    let field = prop::sample::select(vec![
        "content-length: 3",
        "content-length: 0",
        "content-length: 3, 3",
        "content-length: 3,4",
        "content-length: -1",
        "transfer-encoding: chunked",
        "transfer-encoding: gzip",
        "transfer-encoding: chunked, identity",
        "connection: close",
        "connection: keep-alive",
        "x-a: b",
        "x-a:b",
        " x-lead: ws",
        "x-obs: a\r\n b",
    ]);
    let body = prop::sample::select(vec![
        "abc",
        "3\r\nabc\r\n0\r\n\r\n",
        "3;e\r\nabc\r\n0\r\nt: 1\r\n\r\n",
        "3\r\nab",
        "0\r\n\r\n",
        "z\r\n",
        "",
    ]);
    let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0"]);
    (version, status, prop::collection::vec(field, 0..4), body).prop_map(|(v, s, f, b)| {
        let mut out = format!("{v} {s}\r\n");
        for line in f {
            out.push_str(line);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.push_str(b);
        out.into_bytes()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]
    #[test]
    fn both_clients_make_the_same_of_generated_answers(answer in answer_strategy()) {
        let answer: &'static [u8] = answer.leak();
        let (theirs, ours) = runtime().block_on(both(answer, Method::GET));
        prop_assert_eq!(theirs, ours, "{:?}", String::from_utf8_lossy(answer));
    }
}

// === requests ===

/// A server that records what it is sent until the sender has been quiet
/// for a moment, then answers and closes.
async fn recording() -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Receiver<Vec<u8>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let quiet = Duration::from_millis(150);
            match tokio::time::timeout(quiet, socket.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        let _ = socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await;
        let _ = tx.send(seen);
    });
    (address, rx)
}

/// A request body of frames as they come, its size unknown (a client's
/// chunked body), or known (`sized`: one whose length the client gave).
#[derive(Debug)]
struct Frames {
    frames: std::collections::VecDeque<Frame<Bytes>>,
    sized: Option<u64>,
}

impl Frames {
    fn new(frames: Vec<Frame<Bytes>>, sized: bool) -> Self {
        let length = frames
            .iter()
            .filter_map(|f| f.data_ref())
            .map(|d| d.len() as u64)
            .sum();
        Self {
            frames: frames.into(),
            sized: sized.then_some(length),
        }
    }
}

impl Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = self.frames.pop_front();
        if let (Some(left), Some(d)) = (
            self.sized.as_mut(),
            frame.as_ref().and_then(|f| f.data_ref()),
        ) {
            *left -= d.len() as u64;
        }
        std::task::Poll::Ready(frame.map(Ok))
    }
    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() || self.sized == Some(0)
    }
    fn size_hint(&self) -> http_body::SizeHint {
        match self.sized {
            Some(n) => http_body::SizeHint::with_exact(n),
            None => http_body::SizeHint::default(),
        }
    }
}

fn copy(frame: &Frame<Bytes>) -> Frame<Bytes> {
    match frame.data_ref() {
        Some(d) => Frame::data(d.clone()),
        None => Frame::trailers(frame.trailers_ref().cloned().unwrap_or_default()),
    }
}

async fn sent_by_hyper(request: Request<Frames>) -> Vec<u8> {
    let (address, seen) = recording().await;
    let tcp = TcpStream::connect(address).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let _ = sender.send_request(request).await;
    seen.await.unwrap()
}

async fn sent_by_ours(request: Request<Frames>) -> Vec<u8> {
    let (address, seen) = recording().await;
    let tcp = TcpStream::connect(address).await.unwrap();
    let io = Counted::new(TokioIo::new(Stream::tcp(tcp)), Arc::new(Gauge::default()));
    let mut conn = Connection::new(io);
    let (mut parts, body) = request.into_parts();
    let empty = body.is_end_stream();
    let framing = encode::framing(&mut parts, empty, body.size_hint().exact());
    let head = encode::head(&parts);
    let body = (!empty).then_some((body, framing));
    let max = super::MAX_HEAD_BYTES;
    let exchanged = session::exchange(&mut conn, head, &parts.method, body, max, false).await;
    if let Ok((answer, sending)) = exchanged {
        let reading = Reading::new(conn, answer.decoder, answer.keep_alive, sending);
        let _ = collect(ReadingBody(reading)).await;
    }
    seen.await.unwrap()
}

fn trailers(fields: &[(&'static str, &'static str)]) -> Frame<Bytes> {
    let mut map = HeaderMap::new();
    for (name, value) in fields {
        map.append(*name, http::HeaderValue::from_static(value));
    }
    Frame::trailers(map)
}

fn data(bytes: &'static str) -> Frame<Bytes> {
    Frame::data(Bytes::from_static(bytes.as_bytes()))
}

#[test]
fn both_clients_write_the_same_bytes_for_every_request_in_the_table() {
    type Case = (
        Method,
        &'static [(&'static str, &'static str)],
        Vec<Frame<Bytes>>,
        bool,
    );
    let cases: Vec<Case> = vec![
        (Method::GET, &[], vec![], true),
        (Method::GET, &[("x-a", "1"), ("x-a", "2")], vec![], false),
        (Method::POST, &[], vec![data("hello")], true),
        (
            Method::POST,
            &[("content-length", "5")],
            vec![data("hel"), data("lo")],
            false,
        ),
        (Method::POST, &[], vec![data("hel"), data("lo")], false),
        (
            Method::PUT,
            &[("transfer-encoding", "chunked")],
            vec![data("abc"), data("")],
            false,
        ),
        (
            Method::POST,
            &[("transfer-encoding", "gzip")],
            vec![data("abc")],
            false,
        ),
        (
            Method::POST,
            &[("trailer", "x-t, grpc-status")],
            vec![
                data("abc"),
                trailers(&[
                    ("x-t", "1"),
                    ("host", "no"),
                    ("x-u", "no"),
                    ("grpc-status", "0"),
                ]),
            ],
            false,
        ),
        (
            Method::POST,
            &[],
            vec![data("abc"), trailers(&[("x-t", "1")])],
            false,
        ),
        (Method::GET, &[], vec![data("a body on a GET")], false),
        (
            Method::GET,
            &[("transfer-encoding", "chunked")],
            vec![data("a body on a GET")],
            false,
        ),
        (Method::DELETE, &[], vec![data("gone")], true),
        (
            Method::POST,
            &[("content-length", "x")],
            vec![data("abc")],
            false,
        ),
        (
            Method::POST,
            &[("content-length", "x")],
            vec![data("abc")],
            true,
        ),
        (Method::OPTIONS, &[("content-length", "0")], vec![], true),
    ];
    let rt = runtime();
    for (method, headers, frames, sized) in cases {
        let make = || {
            let mut builder = Request::builder().method(method.clone()).uri("/p?q=1");
            builder = builder.header("host", "h");
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            builder
                .body(Frames::new(frames.iter().map(copy).collect(), sized))
                .unwrap()
        };
        let theirs = rt.block_on(sent_by_hyper(make()));
        let ours = rt.block_on(sent_by_ours(make()));
        assert_eq!(
            String::from_utf8_lossy(&theirs),
            String::from_utf8_lossy(&ours),
            "{method} {headers:?}"
        );
    }
}

// === a borrowed head ===

fn field_strategy() -> impl Strategy<Value = (&'static str, &'static str)> {
    prop::sample::select(vec![
        ("content-length", "5"),
        ("content-length", "x"),
        ("content-length", "5, 5"),
        ("transfer-encoding", "chunked"),
        ("transfer-encoding", "gzip"),
        ("grpc-timeout", "5S"),
        ("trailer", "x-t"),
        ("x-a", "1"),
        ("x-a", "2"),
        ("host", "h"),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    /// What a try writes from the head the tries keep (`plan`, `head_borrowed`)
    /// is byte for byte what it wrote from an edited copy (`copy_of`, the
    /// try's `grpc-timeout` inserted, `for_upstream`, `framing`, `head`); and
    /// a head `plan` declines is one whose own fields the copy's framing changes.
    #[test]
    fn a_borrowed_head_is_written_as_its_edited_copy(
        method in prop::sample::select(vec![Method::GET, Method::POST, Method::HEAD, Method::PUT]),
        target in prop::sample::select(vec!["/p?q=1", "http://a.example/x", "*"]),
        fields in prop::collection::vec(field_strategy(), 0..6),
        empty in any::<bool>(),
        exact in prop::option::of(0u64..10),
        timeout in prop::option::of(prop::sample::select(vec!["1u", "20m"])),
    ) {
        let mut builder = Request::builder().method(method).uri(target);
        for (name, value) in &fields {
            builder = builder.header(*name, *value);
        }
        let Ok(request) = builder.body(()) else { return Ok(()) };
        let (parts, ()) = request.into_parts();
        let replace = timeout.map(|t| {
            (http::HeaderName::from_static("grpc-timeout"), http::HeaderValue::from_static(t))
        });
        let exact = if empty { Some(0) } else { exact };
        let mut copy = crate::http::request_head::copy_of(&parts);
        if let Some((name, value)) = replace.clone() {
            copy.headers.insert(name, value);
        }
        crate::upstream::protocol::for_upstream(&mut copy);
        let before: Vec<_> = copy.headers.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        let framing = encode::framing(&mut copy, empty, exact);
        let written = encode::head(&copy);
        match encode::plan(&parts, empty, exact) {
            Some((planned, append)) => {
                prop_assert_eq!(planned, framing);
                let borrowed = encode::head_borrowed(&parts, replace.as_ref(), append.as_ref());
                prop_assert_eq!(String::from_utf8_lossy(&borrowed), String::from_utf8_lossy(&written));
            }
            None => {
                // Declined: framing removed or rewrote a field the head had.
                let after: Vec<_> = copy.headers.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
                prop_assert!(!after.starts_with(&before), "{before:?} -> {after:?}");
            }
        }
    }
}
