"""HTTP/1.1 fuzzing of a running proxy over raw loopback sockets.

A seeded generator writes raw requests: valid ones (random methods, targets, headers,
bodies framed by Content-Length or chunks, sometimes two pipelined) and hostile ones (the
smuggling vectors: CL+TE, duplicate Content-Length, bad chunk sizes; obs-fold, bare LF,
NUL and control bytes in values, absolute-form targets naming other hosts, oversized
heads, truncated heads and bodies, garbage, a TLS ClientHello, byte flips in headers).
They go to a `pymirror.Proxy` mirroring 100% in front of two recording backends.

The promise checked, case by case and at the end:
- the proxy never crashes: a health request after every case is answered 200;
- every answer is a well-formed HTTP/1.1 response, or the connection closes;
- a valid request is answered by the primary, and reaches primary and mirror once;
- no backend ever receives a request the client did not send: every request a backend
  saw (method, path, query, body) is one the case sent whole, and nothing of a case whose
  bytes were refused (answered 4xx by the proxy, or cut) reaches either backend.

`PYMIRROR_FUZZ_SEED` and `PYMIRROR_FUZZ_CASES` vary the run (default seed 6, 1000 cases).

Chunked bodies go with any method (a GET's too) and sometimes end with trailer fields;
both once broke the promise (issue 6: a chunked GET arrived without its body, and the
copy of a body with trailers was dropped). `test_request_bodies.py` pins them down.
"""

from __future__ import annotations

import os
import random
import re
import socket
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
from conftest import seed_config, settle

from pymirror import Proxy

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("PYMIRROR_FUZZ_SEED", "6"))
CASES = int(os.environ.get("PYMIRROR_FUZZ_CASES", "1000"))

#: (method, path, query, body) as a backend records it.
Key = tuple[str, str, str, bytes]

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]
PCHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$'()*+,;=:@"
HEADER_NAMES = ["accept", "user-agent", "x-fuzz", "x-request-id", "cookie", "end-user", "x-a_b"]
VALUE_CHARS = "".join(chr(c) for c in range(0x21, 0x7F)) + " \t"
TLS_CLIENT_HELLO = bytes.fromhex(
    "16030100a5010000a10303" + "00" * 32 + "000020c02bc02fc02cc030cca9cca8c013c014009c009d"
    "002f0035000a0100005800000014001200000f7777772e6578616d706c652e636f6d"
)


@dataclass
class Case:
    """One fuzz input: the bytes sent, and what backends may and must receive."""

    index: int
    kind: str
    raw: bytes
    #: Requests a backend may receive for this case (the ones the client sent whole).
    allowed: list[Key] = field(default_factory=list)
    #: Of those, the ones that are valid for certain: answered 200 by the primary.
    valid: bool = False
    #: Answers expected before the connection may be left (pipelined valid requests).
    answers: int = 1
    #: Close our side right after sending (the request is cut on purpose).
    cut: bool = False


class Generator:
    """Seeded: the same seed writes the same cases."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def token(self, alphabet: str, low: int, high: int) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(low, high)))

    def target(self, i: int, n: int = 0) -> tuple[str, str]:
        path = f"/fuzz/{i}/{n}/" + self.token(PCHARS, 0, 12)
        if self.rng.random() < 0.2:
            path += "%" + self.rng.choice("0123456789ABCDEF") + self.rng.choice("0123456789abcdef")
        query = ""
        if self.rng.random() < 0.5:
            query = "&".join(
                f"{self.token('abcxyz', 1, 4)}={self.token(PCHARS.replace('&', ''), 0, 6)}"
                for _ in range(self.rng.randint(1, 3))
            )
        return path, query

    def headers(self) -> list[tuple[str, str]]:
        out = []
        for _ in range(self.rng.randint(0, 6)):
            name = self.rng.choice([*HEADER_NAMES, "x-" + self.token("abcdefghij-", 1, 10)])
            value = self.token(VALUE_CHARS, 0, 40).strip(" \t")
            out.append((name, value))
        return out

    def body(self) -> bytes:
        size = self.rng.choice([0, 1, 10, 100, 1000, self.rng.randint(0, 70_000)])
        return self.rng.randbytes(size)

    def chunked(self, body: bytes) -> bytes:
        out = b""
        at = 0
        while at < len(body):
            n = self.rng.randint(1, max(1, min(len(body) - at, 20_000)))
            ext = b";ext=1" if self.rng.random() < 0.1 else b""
            out += b"%x%s\r\n%s\r\n" % (n, ext, body[at : at + n])
            at += n
        trailers = b""
        if self.rng.random() < 0.2:
            trailers = b"".join(
                b"x-trailer-%d: %s\r\n" % (n, self.token("abc123", 0, 8).encode())
                for n in range(self.rng.randint(1, 3))
            )
        return out + b"0\r\n" + trailers + b"\r\n"

    def valid(self, i: int, n: int = 0, *, close: bool = False) -> tuple[bytes, Key]:
        method = self.rng.choice(METHODS)
        path, query = self.target(i, n)
        target = path + ("?" + query if query else "")
        headers = [("Host", self.rng.choice(["reviews", "reviews:80", "REVIEWS"])), *self.headers()]
        body = self.body() if method in ("POST", "PUT", "PATCH") or self.rng.random() < 0.1 else b""
        # Chunked with any method, empty bodies too (then less often).
        chunked = self.rng.random() < (0.4 if body else 0.1)
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
            payload = self.chunked(body)
        else:
            if body or method in ("POST", "PUT", "PATCH"):
                headers.append(("Content-Length", str(len(body))))
            payload = body
        if close:
            headers.append(("Connection", "close"))
        self.rng.shuffle(headers)
        head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        return head.encode("latin-1") + b"\r\n" + payload, (method, path, query, body)

    def case(self, i: int) -> Case:
        kind = self.rng.choices(list(MUTATIONS), weights=[w for w, _ in MUTATIONS.values()], k=1)[0]
        return MUTATIONS[kind][1](self, i)


def _valid(g: Generator, i: int) -> Case:
    raw, key = g.valid(i)
    return Case(i, "valid", raw, [key], valid=True)


def _pipelined(g: Generator, i: int) -> Case:
    first, a = g.valid(i, 0)
    second, b = g.valid(i, 1)
    return Case(i, "pipelined", first + second, [a, b], valid=True, answers=2)


def _cl_te(g: Generator, i: int) -> Case:
    """CL and TE together, a request smuggled behind the chunked body."""
    smuggled = f"GET /fuzz/{i}/smuggled HTTP/1.1\r\nHost: reviews\r\n\r\n".encode()
    body = b"hello"
    framed = b"5\r\nhello\r\n0\r\n\r\n"
    te = g.rng.choice(["chunked", "Chunked", "chunked, chunked", "gzip, chunked"])
    cl = g.rng.choice([len(framed), 4, 0, len(framed) + len(smuggled)])
    order = [f"Content-Length: {cl}", f"Transfer-Encoding: {te}"]
    g.rng.shuffle(order)
    head = f"POST /fuzz/{i}/front HTTP/1.1\r\nHost: reviews\r\n" + "\r\n".join(order) + "\r\n\r\n"
    # Framed by the chunks alone (RFC 9112 6.1), or refused: the front request may pass,
    # with the chunked body; the smuggled one never.
    return Case(
        i, "cl+te", head.encode() + framed + smuggled, [("POST", f"/fuzz/{i}/front", "", body)]
    )


def _duplicate_cl(g: Generator, i: int) -> Case:
    a, b = g.rng.sample([0, 3, 5, 6, 10], 2)
    body = b"x" * max(a, b)
    head = f"POST /fuzz/{i}/dup HTTP/1.1\r\nHost: reviews\r\nContent-Length: {a}\r\n"
    head += f"Content-Length: {b}\r\n\r\n"
    return Case(i, "duplicate cl", head.encode() + body)


def _bad_chunk(g: Generator, i: int) -> Case:
    size = g.rng.choice(
        [b"0x10", b"-1", b"zz", b"ffffffffffffffffffff", b"1 0", b"+5", b"5\x00", b""]
    )
    prefix = b"3\r\nabc\r\n" if g.rng.random() < 0.5 else b""
    raw = (
        (
            f"POST /fuzz/{i}/chunk HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
        + prefix
        + size
        + b"\r\n"
        + b"x" * 16
        + b"\r\n0\r\n\r\n"
    )
    return Case(i, "bad chunk size", raw)


def _chunk_without_crlf(g: Generator, i: int) -> Case:
    raw = (
        f"POST /fuzz/{i}/crlf HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5\r\nhelloXX0\r\n\r\n"
    ).encode()
    return Case(i, "chunk data without CRLF", raw)


def _obs_fold(g: Generator, i: int) -> Case:
    fold = g.rng.choice([" ", "\t"])
    raw = f"GET /fuzz/{i}/fold HTTP/1.1\r\nHost: reviews\r\nX-A: a\r\n{fold}b\r\n\r\n"
    return Case(i, "obs-fold", raw.encode())


def _bare_lf(g: Generator, i: int) -> Case:
    """Bare LF line ends: tolerated by some parsers (RFC 9112 2.2 allows it); either
    way, only the request as sent may go on."""
    raw, key = g.valid(i)
    head, _, body = raw.partition(b"\r\n\r\n")
    return Case(i, "bare LF", head.replace(b"\r\n", b"\n") + b"\n\n" + body, [key])


def _control_in_value(g: Generator, i: int) -> Case:
    bad = g.rng.choice(["\x00", "\x01", "\x7f", "\r", "\x0b"])
    raw = f"GET /fuzz/{i}/ctl HTTP/1.1\r\nHost: reviews\r\nX-Bad: a{bad}b\r\n\r\n"
    return Case(i, "control byte in a value", raw.encode())


def _absolute_form(g: Generator, i: int) -> Case:
    """A target naming another host: only its path is ever forwarded, to the configured
    destination (never an open proxy)."""
    path, query = g.target(i)
    other = g.rng.choice(["evil.example", "127.0.0.1:1", "[::1]:22", "reviews"])
    host = g.rng.choice([other, "reviews"])
    target = f"http://{other}{path}" + (f"?{query}" if query else "")
    raw = f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n"
    return Case(i, "absolute-form", raw.encode(), [("GET", path, query, b"")])


def _oversized_head(g: Generator, i: int) -> Case:
    size = g.rng.choice([70_000, 100_000, 300_000])
    where = g.rng.choice(["header", "target", "many"])
    if where == "header":
        raw = f"GET /fuzz/{i}/big HTTP/1.1\r\nHost: reviews\r\nX-Big: {'a' * size}\r\n\r\n"
    elif where == "target":
        raw = f"GET /fuzz/{i}/{'a' * size} HTTP/1.1\r\nHost: reviews\r\n\r\n"
    else:
        lines = "".join(f"X-H{n}: v\r\n" for n in range(size // 10))
        raw = f"GET /fuzz/{i}/many HTTP/1.1\r\nHost: reviews\r\n{lines}\r\n"
    return Case(i, "oversized head", raw.encode())


def _garbage(g: Generator, i: int) -> Case:
    return Case(i, "garbage", g.rng.randbytes(g.rng.randint(1, 2000)) + b"\r\n\r\n")


def _tls(g: Generator, i: int) -> Case:
    return Case(i, "TLS ClientHello", TLS_CLIENT_HELLO)


def _truncated_head(g: Generator, i: int) -> Case:
    raw, _ = g.valid(i)
    head = raw.partition(b"\r\n\r\n")[0]
    return Case(i, "truncated head", head[: g.rng.randint(1, len(head))], cut=True)


def _short_body(g: Generator, i: int) -> Case:
    """Content-Length promises more than is sent: the request is never complete."""
    body = g.rng.randbytes(g.rng.randint(1, 5000))
    head = f"POST /fuzz/{i}/short HTTP/1.1\r\nHost: reviews\r\n"
    raw = head + f"Content-Length: {len(body) + 10}\r\n\r\n"
    return Case(i, "short body", raw.encode() + body, cut=True)


def _cut_chunks(g: Generator, i: int) -> Case:
    """A chunked body that stops before its last chunk."""
    body = g.rng.randbytes(g.rng.randint(1, 5000))
    framed = g.chunked(body)
    raw = f"PUT /fuzz/{i}/cut HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\r\n"
    return Case(i, "cut chunks", raw.encode() + framed[: -g.rng.randint(1, 5)], cut=True)


def _bad_request_line(g: Generator, i: int) -> Case:
    line = g.rng.choice(
        [
            f"GET /fuzz/{i}/ HTTP/1.1 extra",
            f"GET  /fuzz/{i}/ HTTP/1.1",
            f"GET /fuzz/{i}/ x HTTP/1.1",
            f"GET /fuzz/{i}/\x7f HTTP/1.1",
            f"GET fuzz/{i}/ HTTP/1.1",
            f"GET /fuzz/{i}/ HTTP/9.9",
            f"G\x00T /fuzz/{i}/ HTTP/1.1",
            f"GET /fuzz/{i}/ HTTP/1.1\x00",
            f"/fuzz/{i}/ HTTP/1.1",
            f"GET /fuzz/{i}/#frag HTTP/1.1",
        ]
    )
    # A fragment is no part of an origin-form target; hyper drops it, which forwards
    # what the client asked for: tolerated.
    allowed = [("GET", f"/fuzz/{i}/", "", b"")] if "#" in line else []
    return Case(i, "bad request line", f"{line}\r\nHost: reviews\r\n\r\n".encode(), allowed)


def _bad_header_line(g: Generator, i: int) -> Case:
    line = g.rng.choice(
        ["X-A : a", "X A: a", ": a", "X-A", "X-\x00: a", "X-A:\x00", "(x): a", "X-é: a"]
    )
    raw = f"GET /fuzz/{i}/hdr HTTP/1.1\r\nHost: reviews\r\n{line}\r\n\r\n"
    return Case(i, "bad header line", raw.encode("utf-8"))


def _flip(g: Generator, i: int) -> Case:
    """A valid request with random bytes of one non-framing header line replaced: the
    request line and body stay as sent, so only that request may pass."""
    raw, key = g.valid(i)
    head, _, payload = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    free = [
        n
        for n, line in enumerate(lines[1:], 1)
        if not line.lower().startswith((b"content-length", b"transfer-encoding", b"host"))
    ]
    if not free:
        lines.append(b"x-extra: 1")
        free = [len(lines) - 1]
    n = g.rng.choice(free)
    line = bytearray(lines[n])
    for _ in range(g.rng.randint(1, 3)):
        line[g.rng.randrange(len(line))] = g.rng.randrange(256)
    lines[n] = bytes(line)
    return Case(i, "byte flip in a header", b"\r\n".join(lines) + b"\r\n\r\n" + payload, [key])


def _connect(g: Generator, i: int) -> Case:
    return Case(
        i, "CONNECT", b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n"
    )


def _upgrade(g: Generator, i: int) -> Case:
    raw = (
        f"GET /fuzz/{i}/ws HTTP/1.1\r\nHost: reviews\r\nConnection: Upgrade\r\n"
        "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n\r\n"
    )
    return Case(i, "upgrade", raw.encode(), [("GET", f"/fuzz/{i}/ws", "", b"")])


#: kind -> (weight, writer)
MUTATIONS = {
    "valid": (30, _valid),
    "pipelined": (6, _pipelined),
    "cl+te": (5, _cl_te),
    "duplicate cl": (4, _duplicate_cl),
    "bad chunk size": (5, _bad_chunk),
    "chunk data without CRLF": (2, _chunk_without_crlf),
    "obs-fold": (3, _obs_fold),
    "bare LF": (3, _bare_lf),
    "control byte in a value": (4, _control_in_value),
    "absolute-form": (4, _absolute_form),
    "oversized head": (2, _oversized_head),
    "garbage": (4, _garbage),
    "TLS ClientHello": (2, _tls),
    "truncated head": (3, _truncated_head),
    "short body": (3, _short_body),
    "cut chunks": (3, _cut_chunks),
    "bad request line": (5, _bad_request_line),
    "bad header line": (4, _bad_header_line),
    "byte flip in a header": (6, _flip),
    "CONNECT": (1, _connect),
    "upgrade": (1, _upgrade),
}

# ------------------------------------------------------------ reading answers

_STATUS = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9]) [^\r\n]*\r\n")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class Malformed(AssertionError):
    pass


def parse(buffer: bytes, eof: bool) -> tuple[list[Answer], bool]:
    """The complete responses at the start of `buffer`, and whether the rest is empty.
    Raises `Malformed` on bytes that cannot begin an HTTP/1.1 response."""
    answers: list[Answer] = []
    at = 0
    while at < len(buffer):
        status = _STATUS.match(buffer, at)
        if status is None:
            prefix = buffer[at : at + 12]
            if eof or not b"HTTP/1.1 ".startswith(prefix[:9]) or len(prefix) >= 12:
                raise Malformed(f"not an HTTP/1.1 status line: {buffer[at : at + 80]!r}")
            return answers, False
        end = buffer.find(b"\r\n\r\n", status.end() - 2)
        if end < 0:
            if eof:
                raise Malformed(f"response head cut: {buffer[at : at + 200]!r}")
            return answers, False
        headers: dict[str, str] = {}
        for line in buffer[status.end() : end].split(b"\r\n"):
            if not line:
                continue
            name, colon, value = line.partition(b":")
            if not colon or not re.fullmatch(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name):
                raise Malformed(f"bad response header line {line!r}")
            headers[name.decode().lower()] = value.strip().decode("latin-1")
        code = int(status.group(1))
        body_at = end + 4
        if code < 200 or code in (204, 304):
            answers.append(Answer(code, headers, b""))
            at = body_at
        elif "chunked" in headers.get("transfer-encoding", ""):
            body = b""
            pos = body_at
            while True:
                line_end = buffer.find(b"\r\n", pos)
                if line_end < 0:
                    if eof:
                        raise Malformed("chunked response cut")
                    return answers, False
                size = int(buffer[pos:line_end].split(b";")[0], 16)
                if size == 0:
                    trailer_end = buffer.find(b"\r\n", line_end + 2)
                    if trailer_end < 0:
                        if eof:
                            raise Malformed("chunked response cut")
                        return answers, False
                    at = trailer_end + 2
                    break
                if len(buffer) < line_end + 2 + size + 2:
                    if eof:
                        raise Malformed("chunked response cut")
                    return answers, False
                body += buffer[line_end + 2 : line_end + 2 + size]
                pos = line_end + 2 + size + 2
            answers.append(Answer(code, headers, body))
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if len(buffer) < body_at + length:
                if eof:
                    raise Malformed("response body shorter than its Content-Length")
                return answers, False
            answers.append(Answer(code, headers, buffer[body_at : body_at + length]))
            at = body_at + length
        else:
            if not eof:
                return answers, False
            answers.append(Answer(code, headers, buffer[body_at:]))
            at = len(buffer)
    return answers, True


def exchange(address: str, case: Case, timeout: float = 5.0) -> tuple[list[Answer], bool]:
    """Sends the case; returns the complete answers and whether the proxy closed."""
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        try:
            s.sendall(case.raw)
            if case.cut:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the proxy refused early and closed: what it answered is still read
        buffer = b""
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"case {case.index} ({case.kind}): no answer nor close"
            s.settimeout(remaining)
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                chunk = b""
            answers, clean = parse(buffer + chunk, eof=not chunk)
            if not chunk:
                return answers, True
            buffer += chunk
            if clean and len(answers) >= case.answers:
                return answers, False


def health(address: str, n: int) -> None:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(
            f"GET /health/{n} HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n".encode()
        )
        buffer = b""
        while chunk := s.recv(65536):
            buffer += chunk
    answers, _ = parse(buffer, eof=True)
    assert [a.status for a in answers] == [200], f"health check after case {n}: {buffer[:200]!r}"


# ---------------------------------------------------------------------- the test


def test_fuzzed_requests_never_crash_nor_leak_to_backends(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    generator = Generator(SEED)
    cases = [generator.case(i) for i in range(CASES)]
    allowed: Counter[Key] = Counter()
    required: Counter[Key] = Counter()
    refused: set[int] = set()
    kinds: Counter[str] = Counter()
    started = time.monotonic()
    with Proxy(seed_config(v1.address, v2.address)) as proxy:
        address = proxy.addresses[0]
        for case in cases:
            kinds[case.kind] += 1
            answers, _closed = exchange(address, case)
            statuses = [a.status for a in answers]
            context = (
                f"case {case.index} ({case.kind}, seed {SEED}): {case.raw[:200]!r} -> {statuses}"
            )
            if case.valid:
                assert statuses == [200] * case.answers, context
                assert all(a.body == b"v1" for a in answers), context
                required.update(case.allowed)
            if not answers or any(a.status >= 400 for a in answers[:1]):
                # Refused (or cut) before a backend answered: nothing of it may arrive.
                refused.add(case.index)
            else:
                allowed.update(case.allowed)
            health(address, case.index)
            allowed[("GET", f"/health/{case.index}", "", b"")] += 1
            required[("GET", f"/health/{case.index}", "", b"")] += 1
        total = sum(required.values())
        v1.wait_for(total, timeout=15)
        copies = settle(proxy)  # no copy in flight: what reached the mirror is all there is
    elapsed = time.monotonic() - started

    for name, b in (("primary", v1), ("mirror", v2)):
        seen = Counter((s.method, s.path, s.query, s.body) for s in b.seen)
        for key, count in seen.items():
            case_id = _case_id(key[1])
            assert case_id not in refused, f"{name} received {key[:3]} of refused case {case_id}"
            assert count <= allowed[key], (
                f"{name} received a request never sent whole: {key!r:.300}"
            )
        missing = required - seen
        assert not missing, f"{name} never received: {list(missing)[:3]!r:.300}; copies {copies}"

    print(
        f"\nfuzz: seed {SEED}, {len(cases)} inputs in {elapsed:.1f} s, {len(refused)} refused; "
        f"copies {copies['answered']} answered, dropped {copies['dropped']}; kinds {dict(kinds)}"
    )


def _case_id(path: str) -> int | None:
    parts = path.split("/")
    if len(parts) > 2 and parts[1] == "fuzz" and parts[2].isdigit():
        return int(parts[2])
    return None
