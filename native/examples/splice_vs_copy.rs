//! Bulk throughput of a spliced TCP connection over loopback: the core's copy
//! loop (`splice::splice`, userspace buffers growing to 256 KiB) against
//! `tokio::io::copy_bidirectional` (8 KiB buffers) and splice(2) through a pipe
//! (zero copy into userspace), and a direct connection as the floor.
//!
//! `cargo run --release --features internals --example splice_vs_copy -- [GiB]`. Client, proxy and
//! sink run in this one process; the proxy's CPU is the process's CPU minus
//! what the direct run (client and sink alone) took for the same bytes.
//! Measurement only: the core itself stays free of `unsafe`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use pymirror_native::internals::{splice, Stream, TcpStats};

const BLOCK: usize = 1 << 20;

fn cpu_seconds() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

/// A sink that reads to EOF; returns the bytes it got.
fn sink() -> (std::net::SocketAddr, std::thread::JoinHandle<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let task = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; BLOCK];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf).unwrap() {
                0 => return total,
                n => total += n as u64,
            }
        }
    });
    (addr, task)
}

fn send(to: std::net::SocketAddr, bytes: u64) {
    let mut s = TcpStream::connect(to).unwrap();
    let block = vec![0x5au8; BLOCK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        s.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
}

/// One connection proxied on a current-thread runtime, by the core's copy loop
/// or by `tokio::io::copy_bidirectional` (8 KiB buffers, the baseline).
fn tokio_proxy(upstream: std::net::SocketAddr, core_loop: bool) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let (mut client, _) = listener.accept().await.unwrap();
            let mut up = tokio::net::TcpStream::connect(upstream).await.unwrap();
            if core_loop {
                let stats = TcpStats::default();
                let (mut client, mut up) = (Stream::tcp(client), Stream::tcp(up));
                splice(&mut client, &mut up, &mut [], None, &stats).await;
            } else {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
            }
        });
    });
    addr
}

fn copy_proxy(upstream: std::net::SocketAddr) -> std::net::SocketAddr {
    tokio_proxy(upstream, true)
}

fn bidirectional_proxy(upstream: std::net::SocketAddr) -> std::net::SocketAddr {
    tokio_proxy(upstream, false)
}

/// splice(2): socket -> pipe -> socket, one blocking thread per direction.
fn splice_pipe(from: &TcpStream, to: &TcpStream) {
    let mut fds = [0i32; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (r, w) = (fds[0], fds[1]);
    // A larger pipe moves more per call (the default is 64 KiB).
    unsafe { libc::fcntl(w, libc::F_SETPIPE_SZ, BLOCK as i32) };
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE;
    loop {
        let n = unsafe {
            libc::splice(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                w,
                std::ptr::null_mut(),
                BLOCK,
                flags,
            )
        };
        if n <= 0 {
            break;
        }
        let mut left = n as usize;
        while left > 0 {
            let m = unsafe {
                libc::splice(
                    r,
                    std::ptr::null_mut(),
                    to.as_raw_fd(),
                    std::ptr::null_mut(),
                    left,
                    flags,
                )
            };
            assert!(m > 0, "splice out failed");
            left -= m as usize;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
    unsafe {
        libc::close(r);
        libc::close(w);
    }
}

fn pipe_proxy(upstream: std::net::SocketAddr) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (client, _) = listener.accept().unwrap();
        let up = TcpStream::connect(upstream).unwrap();
        let (c2, u2) = (client.try_clone().unwrap(), up.try_clone().unwrap());
        let back = std::thread::spawn(move || splice_pipe(&u2, &c2));
        splice_pipe(&client, &up);
        back.join().unwrap();
    });
    addr
}

fn run(name: &str, bytes: u64, proxy: fn(std::net::SocketAddr) -> std::net::SocketAddr) -> f64 {
    let (sink_addr, got) = sink();
    let target = proxy(sink_addr);
    std::thread::sleep(Duration::from_millis(50));
    let (cpu, start) = (cpu_seconds(), Instant::now());
    send(target, bytes);
    assert_eq!(got.join().unwrap(), bytes);
    let (wall, cpu) = (start.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    let gb = bytes as f64 / 1e9;
    println!(
        "{name:<28} {:>6.2} GB/s   process CPU {:>5.2} s/GB",
        gb / wall,
        cpu / gb
    );
    cpu / gb
}

fn main() {
    let gib: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let bytes = gib << 30;
    println!("{gib} GiB over loopback, client + proxy + sink in one process");
    let direct = run("direct (no proxy)", bytes, |sink| sink);
    let copy = run("copy loop (splice::splice)", bytes, copy_proxy);
    let bidi = run("tokio copy_bidirectional", bytes, bidirectional_proxy);
    let pipe = run("splice(2) through a pipe", bytes, pipe_proxy);
    println!(
        "proxy CPU per GB (minus direct): copy loop {:.2} s, copy_bidirectional {:.2} s, \
         splice(2) {:.2} s",
        copy - direct,
        bidi - direct,
        pipe - direct
    );
}
