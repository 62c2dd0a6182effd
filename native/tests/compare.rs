//! Capture for comparison through a running engine: real sockets, a v1 and a
//! v2 backend, the pair read off the queue as the control plane would.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use pymirror_native::Snapshot;
use pymirror_native::{Engine, EngineOptions};

/// Answers every request on `listener` with `status` and `body`, forever.
fn backend(status: u16, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes());
            });
        }
    });
    address
}

fn snapshot(v1: &str, v2: &str, compare_per_million: u32, max_body: u64) -> Snapshot {
    Snapshot::from_json(&format!(
        r#"{{"schema": 1, "version": "t",
            "listeners": [{{"address": "127.0.0.1:0", "default_virtual_host": 0}}],
            "virtual_hosts": [{{"name": "vs", "domains": ["*"], "routes": [{{
                "name": "r0",
                "destinations": [{{"cluster": 0, "weight": 1}}],
                "mirrors": [{{"cluster": 1, "per_million": 1000000,
                              "compare": {{"per_million": {compare_per_million}, "max_body_bytes": {max_body}}}}}]
            }}]}}],
            "clusters": [{{"host": "a", "endpoints": ["{v1}"]}}, {{"host": "b", "endpoints": ["{v2}"]}}]}}"#
    ))
    .unwrap()
}

fn get(address: &str, path: &str) -> String {
    let mut s = TcpStream::connect(address).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn engine(snapshot: &Snapshot) -> Engine {
    let options = EngineOptions {
        worker_threads: 1,
        compare_queue_capacity: 4,
        ..EngineOptions::default()
    };
    Engine::start(snapshot, options).unwrap()
}

fn drain_until(engine: &Engine, n: usize) -> Vec<pymirror_native::ComparedPair> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        got.extend(engine.drain_compared(100));
        thread::sleep(Duration::from_millis(10));
    }
    got
}

#[test]
fn a_compared_copy_queues_both_answers() {
    let v1 = backend(200, r#"{"price": 10}"#);
    let v2 = backend(201, r#"{"price": 11}"#);
    let engine = engine(&snapshot(&v1, &v2, 1_000_000, 1024));
    let reply = get(&engine.addresses()[0].to_string(), "/items/7?x=1");
    assert!(reply.ends_with(r#"{"price": 10}"#), "{reply}");
    let pairs = drain_until(&engine, 1);
    assert_eq!(pairs.len(), 1);
    let p = &pairs[0];
    assert_eq!(
        (p.key.virtual_service.as_str(), p.key.route.as_str()),
        ("vs", "r0")
    );
    assert_eq!(
        (p.method.as_str(), p.path.as_str()),
        ("GET", "/items/7?x=1")
    );
    assert_eq!(p.primary.status, 200);
    assert_eq!(p.mirror.status, 201);
    assert_eq!(p.primary.body_bytes(), br#"{"price": 10}"#);
    assert_eq!(p.mirror.body_bytes(), br#"{"price": 11}"#);
    assert!(!p.primary.truncated && !p.mirror.truncated);
    assert!(p.primary.latency > Duration::ZERO && p.mirror.latency > Duration::ZERO);
    let stats = engine.stats();
    assert_eq!(stats.mirrors[0].compare.queued, 1);
    assert_eq!(stats.compare_queue_depth, 0);
    engine.shutdown(Duration::from_secs(1));
}

#[test]
fn past_the_bound_only_length_and_hash_are_kept() {
    let v1 = backend(200, "abcdefgh");
    let v2 = backend(200, "abcdefgh");
    let engine = engine(&snapshot(&v1, &v2, 1_000_000, 3));
    get(&engine.addresses()[0].to_string(), "/");
    let pairs = drain_until(&engine, 1);
    let p = &pairs[0];
    assert!(p.primary.truncated && p.mirror.truncated);
    assert_eq!(p.primary.body_bytes(), b"abc");
    assert_eq!(p.primary.body_len, 8);
    assert_eq!(p.primary.body_hash, p.mirror.body_hash);
    engine.shutdown(Duration::from_secs(1));
}

#[test]
fn a_full_queue_skips_and_counts_and_compare_rate_zero_keeps_nothing() {
    let v1 = backend(200, "x");
    let v2 = backend(200, "x");
    let engine = engine(&snapshot(&v1, &v2, 1_000_000, 16));
    let address = engine.addresses()[0].to_string();
    for _ in 0..10 {
        get(&address, "/");
    }
    // Copies finish on their own tasks: wait until all ten are accounted for.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = &engine.stats().mirrors[0].compare;
        if c.queued + c.skipped["queue_full"] == 10 || Instant::now() > deadline {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let stats = engine.stats();
    let c = &stats.mirrors[0].compare;
    assert_eq!(c.sampled, 10);
    assert_eq!(c.queued, 4, "the queue holds four");
    assert_eq!(c.skipped["queue_full"], 6);
    assert_eq!(engine.drain_compared(100).len(), 4);
    engine.shutdown(Duration::from_secs(1));

    let engine = engine_with_rate_zero(&v1, &v2);
    get(&engine.addresses()[0].to_string(), "/");
    thread::sleep(Duration::from_millis(200));
    assert!(engine.drain_compared(100).is_empty());
    assert_eq!(engine.stats().mirrors[0].compare.sampled, 0);
    engine.shutdown(Duration::from_secs(1));
}

fn engine_with_rate_zero(v1: &str, v2: &str) -> Engine {
    engine(&snapshot(v1, v2, 0, 16))
}
