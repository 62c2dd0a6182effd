"""A mirror on one loopback port whose behaviour changes on command, and which records,
for every answer it writes, how soon after its user's request was sent it wrote it.

One thread serves every connection from one selector: accepting a connection costs no
thread, so the mirror keeps up with a proxy that opens hundreds of connections a second
(a thread per connection fell seconds behind on a loaded 2-core machine, and every copy
timed out before its connection was even accepted). All its sockets are opened, used and
closed by that thread; `stop()` ends it, and it closes them all on its way out, whatever
happened.
"""

from __future__ import annotations

import contextlib
import heapq
import queue
import random
import selectors
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

#: Modes: ok and 500 answer at once, slow after `SLOW_DELAY`, garbage reads the head and
#: answers random bytes, stall accepts and never reads, refuse refuses connections.
MODES = ("ok", "stall", "slow", "500", "garbage", "refuse")
SLOW_DELAY = 0.3
#: A keep-alive connection idle this long is closed, as real servers do (seconds).
IDLE_TIMEOUT = 2.0
#: The request header that carries `time.monotonic()` of when the user sent the request
#: (the proxy copies it to the mirror as it is).
SENT_HEADER = "x-soak-sent"
_SENT_PREFIX = b"\r\n" + SENT_HEADER.encode() + b":"


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    mode: str
    accepted_at: float
    last_active: float
    buffer: bytearray = field(default_factory=bytearray)
    out: bytearray = field(default_factory=bytearray)
    #: What is being written: (mode, when its user sent the request); None: garbage.
    answer: tuple[str, float | None] | None = None
    waiting: bool = False  # a slow answer is due
    close_after_write: bool = False
    registered: int = 0  # the selector events it is registered for
    closed: bool = False
    #: stall: a request was seen waiting on it once it had been held `hold` seconds.
    held: bool = False


class FaultyMirror:
    """`FaultyMirror()` serves at once in mode "ok"; `set_mode(m)` switches (and closes
    every connection of the previous mode), `stop()` ends it.

    The port is held for the mirror's whole life by a socket bound with SO_REUSEPORT that
    never listens: while "refuse" has closed the listener, connections to the port are
    refused (ECONNREFUSED, as on a port where nothing listens), and neither another socket
    nor the kernel (for an outgoing connection's source port) can take the port, so the
    next mode's listener always binds it again.
    """

    def __init__(self, *, stall_hold: float = 1.5) -> None:
        #: A stall connection counts in `stalled_copies` once held this long with a request.
        self.stall_hold = stall_hold
        self.mode = "ok"
        self.accepted: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._answers: list[tuple[str, float | None, float]] = []
        self._stalled_copies = 0
        self._conns: set[_Conn] = set()
        self._timers: list[tuple[float, int, _Conn, bytes]] = []
        self._seq = 0
        self._commands: queue.SimpleQueue[tuple[str, threading.Event]] = queue.SimpleQueue()
        self._failure: BaseException | None = None
        self._listener: socket.socket | None = None
        self._selector = selectors.DefaultSelector()
        self._reserve = _port_socket()
        self._wake_r, self._wake_w = socket.socketpair()
        try:
            self._reserve.bind(("127.0.0.1", 0))
            self.port: int = self._reserve.getsockname()[1]
            self._wake_r.setblocking(False)
            self._selector.register(self._wake_r, selectors.EVENT_READ)
            self._listen()
        except BaseException:
            self._close_everything()
            self._wake_w.close()
            raise
        self._thread = threading.Thread(target=self._run, name="faulty-mirror", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # --- commands (any thread) ---

    def set_mode(self, mode: str) -> None:
        assert mode in MODES, mode
        self._command(mode)

    def stop(self) -> None:
        try:
            if self._thread.is_alive():
                self._command("stop")
                self._thread.join(timeout=10)
        finally:
            self._wake_w.close()

    def _command(self, command: str) -> None:
        done = threading.Event()
        self._commands.put((command, done))
        with contextlib.suppress(OSError):  # full of wake-ups already: it will wake
            self._wake_w.send(b"!")
        if not done.wait(timeout=10):
            raise AssertionError(f"the mirror did not take {command!r}: {self._failure!r}")

    # --- what it recorded (any thread) ---

    def answered(self, *modes: str) -> int:
        """Answers written in full in these modes."""
        with self._lock:
            return sum(1 for mode, _, _ in self._answers if mode in modes)

    def prompt(self, *modes: str, within: float) -> int:
        """Answers in these modes written in full at most `within` seconds after their
        user sent the request."""
        with self._lock:
            return sum(
                1
                for mode, sent, at in self._answers
                if mode in modes and sent is not None and at - sent <= within
            )

    @property
    def stalled_copies(self) -> int:
        """Stall connections on which a request was waiting, unread, `stall_hold` seconds
        after the connection was accepted (and so after its copy started)."""
        with self._lock:
            return self._stalled_copies

    # --- the mirror's thread ---

    def _run(self) -> None:
        try:
            next_sweep = 0.0
            while True:
                now = time.monotonic()
                wait = 0.05 if not self._timers else min(0.05, self._timers[0][0] - now)
                for key, events in self._selector.select(max(0.0, wait)):
                    # Keys of this batch may be stale: a command met earlier in it may
                    # have closed their connection or listener.
                    conn: _Conn | None = key.data
                    if key.fileobj is self._wake_r:
                        if not self._take_commands():
                            return
                    elif conn is None:
                        if key.fileobj is self._listener:
                            self._accept()
                    else:
                        if events & selectors.EVENT_WRITE and not conn.closed:
                            self._write(conn)
                        if events & selectors.EVENT_READ and not conn.closed:
                            self._read(conn)
                self._fire_timers()
                if time.monotonic() >= next_sweep:
                    self._sweep()
                    next_sweep = time.monotonic() + 0.1
        except BaseException as exc:  # recorded for the commands that wait on this thread
            self._failure = exc
        finally:
            self._close_everything()

    def _take_commands(self) -> bool:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        while True:
            try:
                command, done = self._commands.get_nowait()
            except queue.Empty:
                return True
            if command == "stop":
                self._close_everything()
                done.set()
                return False
            old, self.mode = self.mode, command
            for conn in list(self._conns):
                self._close(conn)
            if command == "refuse":
                self._stop_listening()
            elif old == "refuse":
                self._listen()
            done.set()

    def _listen(self) -> None:
        listener = _port_socket()
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Small: a stalled connection's writer blocks at once.
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(1024)
            listener.setblocking(False)
            self._selector.register(listener, selectors.EVENT_READ)
        except BaseException:
            listener.close()
            raise
        self._listener = listener

    def _stop_listening(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            self._selector.unregister(listener)
            listener.close()  # connections not yet accepted are reset

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(256):
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. the connection was reset before it was accepted
            sock.setblocking(False)
            now = time.monotonic()
            conn = _Conn(sock, self.mode, now, now)
            self._conns.add(conn)
            with self._lock:
                self.accepted[self.mode] += 1
            if conn.mode != "stall":  # stall: accepted, and never read
                self._register(conn, selectors.EVENT_READ)

    def _register(self, conn: _Conn, events: int) -> None:
        if conn.registered == events:
            return
        if conn.registered:
            self._selector.modify(conn.sock, events, conn)
        else:
            self._selector.register(conn.sock, events, conn)
        conn.registered = events

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        conn.buffer += data
        conn.last_active = time.monotonic()
        self._serve(conn)

    def _serve(self, conn: _Conn) -> None:
        """Answers the requests buffered on `conn`, one at a time."""
        while not conn.closed and not conn.waiting and not conn.out:
            try:
                taken = _take_request(conn.buffer, body=conn.mode != "garbage")
            except ValueError:
                self._close(conn)
                return
            if taken is None:
                return
            head, used = taken
            del conn.buffer[:used]
            sent = _sent_at(head)
            with self._lock:
                self.requests[conn.mode] += 1
            if conn.mode == "garbage":
                conn.out += random.Random(len(head)).randbytes(64) + b"\r\n\r\n"
                conn.answer = ("garbage", sent)
                conn.close_after_write = True
                self._write(conn)
                return
            status = b"500 Internal Server Error" if conn.mode == "500" else b"200 OK"
            answer = b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nv2"
            if conn.mode == "slow":
                conn.waiting = True
                self._seq += 1
                due = time.monotonic() + SLOW_DELAY
                heapq.heappush(self._timers, (due, self._seq, conn, answer))
                conn.answer = ("slow", sent)
                return
            conn.out += answer
            conn.answer = (conn.mode, sent)
            self._write(conn)

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, conn, answer = heapq.heappop(self._timers)
            if conn.closed:
                continue
            conn.waiting = False
            conn.out += answer
            self._write(conn)

    def _write(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(conn)
            return
        del conn.out[:sent]
        conn.last_active = time.monotonic()
        if conn.out:
            self._register(conn, selectors.EVENT_READ | selectors.EVENT_WRITE)
            return
        if conn.answer is not None:
            mode, sent_at = conn.answer
            conn.answer = None
            with self._lock:
                self._answers.append((mode, sent_at, time.monotonic()))
        if conn.close_after_write:
            self._close(conn)
            return
        self._register(conn, selectors.EVENT_READ)
        self._serve(conn)

    def _sweep(self) -> None:
        now = time.monotonic()
        for conn in list(self._conns):
            if conn.mode == "stall":
                if not conn.held and now - conn.accepted_at >= self.stall_hold:
                    conn.held = True
                    if _has_data(conn.sock):
                        with self._lock:
                            self._stalled_copies += 1
            elif not conn.waiting and not conn.out and now - conn.last_active > IDLE_TIMEOUT:
                self._close(conn)

    def _close(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._conns.discard(conn)
        if conn.registered:
            self._selector.unregister(conn.sock)
            conn.registered = 0
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_RDWR)
        conn.sock.close()

    def _close_everything(self) -> None:
        """Closes every socket the mirror opened but the waker's sending end (`stop`)."""
        for conn in list(self._conns):
            with contextlib.suppress(Exception):
                self._close(conn)
        self._timers.clear()
        with contextlib.suppress(Exception):
            self._stop_listening()
        with contextlib.suppress(Exception):
            self._selector.close()
        self._reserve.close()
        self._wake_r.close()


def _port_socket() -> socket.socket:
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except BaseException:
        sock.close()
        raise
    return sock


def _has_data(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except OSError:  # nothing there yet (BlockingIOError), or reset
        return False


def _sent_at(head: bytes) -> float | None:
    lower = head.lower()
    at = lower.find(_SENT_PREFIX)
    if at < 0:
        return None
    end = lower.find(b"\r\n", at + 2)
    value = head[at + len(_SENT_PREFIX) : end if end >= 0 else len(head)]
    try:
        return float(value)
    except ValueError:
        return None


def _take_request(buffer: bytearray, *, body: bool) -> tuple[bytes, int] | None:
    """The head of the first whole request in `buffer` and the bytes it takes (with its
    body, when `body`); None while it is incomplete. Raises ValueError when malformed."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end])
    at = end + 4
    if not body:
        return head, at
    lower = head.lower()
    if b"\r\ntransfer-encoding: chunked" in lower:
        while True:
            eol = buffer.find(b"\r\n", at)
            if eol < 0:
                return None
            size = int(bytes(buffer[at:eol]).split(b";")[0], 16)
            at = eol + 2 + size + 2  # trailers are not expected
            if len(buffer) < at:
                return None
            if size == 0:
                return head, at
    length = 0
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if len(buffer) < at + length:
        return None
    return head, at + length
