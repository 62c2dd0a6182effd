"""What a copy's exchange costs the kernel when copies share system calls (issue 19).

A measurement, not part of pymirror. A copy of pymirror's is one HTTP/1.1 exchange on a
kept-alive mirror connection: one `sendto` of its head, one `recvfrom` of the answer.
Pinned, that is about 6 us of system time per copy on this machine (bench/analysis.md),
most of the 10% row's cost. Copies could share those calls only by going several at a
time on one connection (HTTP/1.1 pipelining, or HTTP/2 streams), which a proxy can do
only by waiting for a batch to gather. This measures what the sharing would save, and
nothing of the wait. A readiness loop keeps 16 copies outstanding to an nginx backend
(`bench/peers/backends.py`'s: one worker, a 3-byte answer): `k` to a connection, written in one
`send` and read back in as few `recv` as they arrive in; `k` = 1 is pymirror's way
today. The sender's system time per copy is read from `getrusage`. The sender and nginx
are pinned to one core each, as a proxy and its mirror would be.

    python3 bench/prototypes/batched_copies/measure.py [--copies 200000] [--rounds 3]

Result on this machine: in README.md here.
"""

from __future__ import annotations

import argparse
import os
import resource
import selectors
import socket
import statistics
import sys
import tempfile
from pathlib import Path

# The bench's own backend and pinning (bench/peers/).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from peers.backends import nginx_backend
from peers.cpus import pin

REQUEST = b"GET /reviews/1 HTTP/1.1\r\nHost: reviews-shadow\r\nx-request-id: 0\r\n\r\n"
#: Copies outstanding at any time, and how many go to a connection per `send`.
IN_FLIGHT = 16
BATCHES = (1, 2, 4, 8, 16)


def answer_length(sock: socket.socket) -> int:
    """One exchange, to learn the backend's answer length (fixed for a fixed body)."""
    sock.sendall(REQUEST)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))  # fmt: skip
    while len(body) < length:
        body += sock.recv(65536)
    return len(head) + 4 + length


def run(port: int, copies: int, k: int) -> tuple[float, float]:
    """System and user us per copy: `IN_FLIGHT` copies always outstanding, `k` to a
    connection (`IN_FLIGHT // k` connections), each connection's `k` written in one
    `send` once its previous `k` answers are read. A readiness loop, as a proxy's."""
    selector = selectors.EpollSelector()
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(IN_FLIGHT // k)]
    size = 0
    for sock in conns:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        size = answer_length(sock)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    batch, due = REQUEST * k, size * k
    left = dict.fromkeys(conns, due)
    sent = 0
    before = resource.getrusage(resource.RUSAGE_SELF)
    for sock in conns:
        sock.send(batch)
        sent += k
    done = 0
    while done < sent:
        for key, _ in selector.select():
            sock = key.fileobj
            left[sock] -= len(sock.recv(65536))
            if left[sock] == 0:
                done += k
                left[sock] = due
                if sent < copies:
                    sock.send(batch)
                    sent += k
    after = resource.getrusage(resource.RUSAGE_SELF)
    for sock in conns:
        sock.close()
    system = (after.ru_stime - before.ru_stime) / done * 1e6
    return system, (after.ru_utime - before.ru_utime) / done * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        backend = nginx_backend("v2", Path(tmp) / "v2", body="v2")
        assert backend.process is not None
        port = int(backend.address.rsplit(":", 1)[1])
        try:
            if len(cores) >= 2:
                pin(backend.process.pid, {cores[0]})
                os.sched_setaffinity(0, {cores[-1]})
            samples: dict[int, list[tuple[float, float]]] = {k: [] for k in BATCHES}
            for r in range(args.rounds):
                for k in BATCHES if r % 2 == 0 else reversed(BATCHES):
                    samples[k].append(run(port, args.copies, k))
        finally:
            backend.process.stop()
    print(
        "| copies per send | system us per copy | each round | sender's user us per copy (Python) |"
    )
    print("|---:|---:|---|---:|")
    for k, rows in samples.items():
        system = statistics.median(s for s, _ in rows)
        user = statistics.median(u for _, u in rows)
        each = ", ".join(f"{s:.2f}" for s, _ in rows)
        print(f"| {k} | {system:.2f} | {each} | {user:.2f} |")


if __name__ == "__main__":
    main()
