//! io_uring with the interfaces tokio-uring does not use: one multishot
//! receive per socket that draws from a ring of provided buffers (no
//! submission per read, no poll armed by a read that finds nothing), sends
//! straight from those buffers, and a ring set up `SINGLE_ISSUER` +
//! `DEFER_TASKRUN` + `COOP_TASKRUN` (completions run when the loop asks for
//! them, in its own context, not by interrupting it).
//!
//! A byte relay: whatever one side of a pair sends goes to the other, chunk by
//! chunk. With one request or answer in flight per connection (wrk's keep-alive
//! GETs), that is the same traffic as the message relays, and at most one send
//! per direction is outstanding, so sends cannot overtake each other. This
//! measures, it does not serve: a pair that fails is closed, and what is in
//! flight for it dropped.

use std::alloc::{alloc_zeroed, Layout};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// Buffers in the provided ring (a power of two) and the size of each.
const BUFFERS: u16 = 1024;
const BUFFER: usize = 16 * 1024;
const GROUP: u16 = 0;

const ACCEPT: u64 = 1;
const RECV: u64 = 2;
const SEND: u64 = 3;

fn data(kind: u64, fd: RawFd, bid: u16) -> u64 {
    kind << 56 | u64::from(bid) << 32 | fd as u32 as u64
}

fn kind_fd_bid(user_data: u64) -> (u64, RawFd, u16) {
    (
        user_data >> 56,
        user_data as u32 as RawFd,
        (user_data >> 32) as u16,
    )
}

/// The provided buffers: their memory, and the ring of entries the kernel
/// takes them from.
struct Buffers {
    memory: *mut u8,
    ring: *mut types::BufRingEntry,
    tail: u16,
}

impl Buffers {
    fn new() -> Self {
        // SAFETY: non-zero sizes; the ring is page aligned as the kernel asks.
        let (memory, ring) = unsafe {
            (
                alloc_zeroed(Layout::from_size_align(BUFFER * BUFFERS as usize, 64).unwrap()),
                alloc_zeroed(Layout::from_size_align(16 * BUFFERS as usize, 4096).unwrap())
                    .cast::<types::BufRingEntry>(),
            )
        };
        let mut buffers = Buffers {
            memory,
            ring,
            tail: 0,
        };
        for bid in 0..BUFFERS {
            buffers.give_back(bid);
        }
        buffers
    }

    fn address(&self, bid: u16) -> *mut u8 {
        // SAFETY: bid < BUFFERS.
        unsafe { self.memory.add(usize::from(bid) * BUFFER) }
    }

    /// Puts buffer `bid` back in the ring for the kernel to fill again.
    fn give_back(&mut self, bid: u16) {
        // SAFETY: the entry at the tail is the application's until the tail
        // moves past it; the tail field overlays the first entry's `resv`.
        unsafe {
            let entry = &mut *self.ring.add(usize::from(self.tail & (BUFFERS - 1)));
            entry.set_addr(self.address(bid) as u64);
            entry.set_len(BUFFER as u32);
            entry.set_bid(bid);
            self.tail = self.tail.wrapping_add(1);
            let tail = types::BufRingEntry::tail(self.ring).cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

pub fn run(listen: SocketAddr, upstream: SocketAddr) {
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .build(4096)
        .expect("io_uring with SINGLE_ISSUER and DEFER_TASKRUN (Linux 6.1)");
    let mut buffers = Buffers::new();
    // SAFETY: the ring's memory lives as long as the process.
    unsafe {
        ring.submitter()
            .register_buf_ring(buffers.ring as u64, BUFFERS, GROUP)
    }
    .expect("a provided buffer ring (Linux 5.19)");
    let listener = TcpListener::bind(listen).expect("LISTEN");
    let mut peer: Vec<RawFd> = Vec::new();
    // Per buffer: the socket it is being sent to, its length, how much is sent.
    let mut sending: Vec<(RawFd, usize, usize)> = vec![(0, 0, 0); usize::from(BUFFERS)];
    let mut pending: Vec<squeue::Entry> = vec![accept(listener.as_raw_fd())];
    let mut done: Vec<cqueue::Entry> = Vec::new();
    loop {
        // SAFETY: every entry points at memory that outlives its operation.
        for entry in pending.drain(..) {
            unsafe { ring.submission().push(&entry) }.expect("submission queue room");
        }
        match ring.submit_and_wait(1) {
            // A tracer attaching (strace, for the call counts) interrupts the wait.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            done => {
                done.expect("io_uring_enter");
            }
        }
        done.extend(ring.completion());
        for cqe in done.drain(..) {
            let (kind, fd, _) = kind_fd_bid(cqe.user_data());
            let (result, flags) = (cqe.result(), cqe.flags());
            match kind {
                ACCEPT => {
                    assert!(result >= 0, "accept: {result}");
                    let client = result;
                    let up = TcpStream::connect(upstream).expect("UPSTREAM");
                    up.set_nodelay(true).unwrap();
                    let up = up.into_raw_fd();
                    set_nodelay(client);
                    let most = client.max(up) as usize;
                    if peer.len() <= most {
                        peer.resize(most + 1, -1);
                    }
                    peer[client as usize] = up;
                    peer[up as usize] = client;
                    pending.extend([receive(client), receive(up)]);
                    if !cqueue::more(flags) {
                        pending.push(accept(listener.as_raw_fd()));
                    }
                }
                RECV if result == -libc::ENOBUFS => pending.push(receive(fd)),
                RECV if result <= 0 => {
                    // Closed (or failed): close both sides of the pair, once.
                    let other = std::mem::replace(&mut peer[fd as usize], -1);
                    if other >= 0 {
                        peer[other as usize] = -1;
                        // SAFETY: both are this relay's sockets.
                        unsafe {
                            libc::close(fd);
                            libc::close(other);
                        }
                    }
                }
                RECV => {
                    let bid = cqueue::buffer_select(flags).expect("a provided buffer");
                    let to = peer[fd as usize];
                    if to < 0 {
                        // Its pair closed while this was in flight.
                        buffers.give_back(bid);
                        continue;
                    }
                    sending[usize::from(bid)] = (to, result as usize, 0);
                    pending.push(send(to, buffers.address(bid), result as usize, bid));
                    if !cqueue::more(flags) {
                        pending.push(receive(fd));
                    }
                }
                SEND => {
                    let (_, _, bid) = kind_fd_bid(cqe.user_data());
                    let (to, len, sent) = &mut sending[usize::from(bid)];
                    if result <= 0 {
                        // The pair closed under it (connections end between runs).
                        buffers.give_back(bid);
                        continue;
                    }
                    *sent += result as usize;
                    if *sent < *len {
                        // SAFETY: within buffer `bid`.
                        let rest = unsafe { buffers.address(bid).add(*sent) };
                        pending.push(send(*to, rest, *len - *sent, bid));
                    } else {
                        buffers.give_back(bid);
                    }
                }
                _ => unreachable!("user data {:#x}", cqe.user_data()),
            }
        }
    }
}

fn accept(listener: RawFd) -> squeue::Entry {
    opcode::AcceptMulti::new(types::Fd(listener))
        .build()
        .user_data(data(ACCEPT, listener, 0))
}

fn receive(fd: RawFd) -> squeue::Entry {
    opcode::RecvMulti::new(types::Fd(fd), GROUP)
        .build()
        .user_data(data(RECV, fd, 0))
}

fn send(to: RawFd, from: *const u8, len: usize, bid: u16) -> squeue::Entry {
    opcode::Send::new(types::Fd(to), from, len as u32)
        .build()
        .user_data(data(SEND, to, bid))
}

fn set_nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket and option.
    let done = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(done, 0, "TCP_NODELAY");
}
