"""Bulk TCP transfer: a client and a counting sink, each in its own Python process so
that neither shares a GIL with the measuring session or with the other.

The sink accepts any number of connections, reads each with `recv_into` into a 4 MiB
buffer (a thread per connection; the GIL is released in the call, so connections read in
parallel), and when a connection ends prints its byte count on a line and closes it.
The client opens `connections` connections at once, sends its share of `total` bytes on
each with `sendall` of 4 MiB slices, half-closes, and waits for the far side to close:
through a proxy that is the sink's close passed back, so the clock stops only once every
byte reached the sink. It prints `{"bytes": ..., "seconds": ...}`.

`python bulk.py sink` / `python bulk.py send HOST:PORT TOTAL CONNECTIONS TIMEOUT`; the
session uses `Sink` and `send`. Every loop is bounded: the client by `total` and its
timeout, the sink's connections by the client's close and a socket timeout."""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

CHUNK = 4 << 20
#: A sink connection silent this long is dropped (and counted as it stands).
IDLE_SECONDS = 60.0


def _sink_main() -> None:
    server = socket.create_server(("127.0.0.1", 0), backlog=256)
    print(server.getsockname()[1], flush=True)
    lock = threading.Lock()

    def drain(conn: socket.socket) -> None:
        buf = memoryview(bytearray(CHUNK))
        count = 0
        conn.settimeout(IDLE_SECONDS)
        try:
            while n := conn.recv_into(buf):
                count += n
        except OSError:
            pass
        finally:
            conn.close()
        with lock:
            print(count, flush=True)

    while True:  # ends when the session terminates the process
        conn, _ = server.accept()
        threading.Thread(target=drain, args=(conn,), daemon=True).start()


def _send_main(address: str, total: int, connections: int, timeout: float) -> None:
    host, port = address.rsplit(":", 1)
    data = memoryview(bytes(CHUNK))
    shares = [
        total // connections + (1 if i < total % connections else 0) for i in range(connections)
    ]
    socks = [socket.create_connection((host, int(port)), timeout=timeout) for _ in shares]
    errors: list[BaseException] = []
    sent = [0] * connections

    def run(i: int) -> None:
        sock, left = socks[i], shares[i]
        try:
            while left > 0:
                n = min(left, CHUNK)
                sock.sendall(data[:n])
                left -= n
                sent[i] += n
            sock.shutdown(socket.SHUT_WR)
            # The far side closes once it has read everything; it sends nothing back.
            while sock.recv(65536):
                pass
        except BaseException as exc:  # reported below, the process exits non-zero
            errors.append(exc)
        finally:
            sock.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    print(json.dumps({"bytes": sum(sent), "seconds": elapsed, "errors": [repr(e) for e in errors]}))
    sys.exit(1 if errors else 0)


@dataclass
class BulkResult:
    bytes: int
    seconds: float

    @property
    def gb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e9


class Sink:
    """A counting sink process on a loopback port."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "sink"],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        self._lines: queue.Queue[str] = queue.Queue()
        port = self.proc.stdout.readline().strip()
        if not port:
            self.proc.kill()
            self.proc.wait(timeout=5)
            self.proc.stdout.close()
            raise RuntimeError("the bulk sink did not start")
        self.address = f"127.0.0.1:{port}"
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def drain(self) -> None:
        """Forget the counts of connections ended so far (a peer's start-up probes)."""
        while True:
            try:
                self._lines.get_nowait()
            except queue.Empty:
                return

    def received(self, expected: int, timeout: float) -> int:
        """Bytes of the connections that end from now on, summed until `expected` or
        until `timeout` seconds pass (then less)."""
        deadline = time.monotonic() + timeout
        total = 0
        while total < expected:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                total += int(self._lines.get(timeout=left))
            except queue.Empty:
                break
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._reader.join(timeout=5)  # ends at the pipe's end, once the process is gone
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def send(address: str, total: int, connections: int, timeout: float) -> BulkResult:
    """Send `total` bytes to `address` over `connections` parallel connections."""
    argv = [sys.executable, str(Path(__file__).resolve()), "send"]
    argv += [address, str(total), str(connections), str(timeout)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 10)
    if out.returncode != 0:
        raise RuntimeError(f"bulk client failed ({out.returncode}): {out.stdout}{out.stderr}")
    result = json.loads(out.stdout)
    return BulkResult(result["bytes"], result["seconds"])


if __name__ == "__main__":
    if sys.argv[1] == "sink":
        _sink_main()
    else:
        _send_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
