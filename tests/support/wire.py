"""Reading HTTP/1.1 answers off a raw socket, for tests that assert exact bytes."""

from __future__ import annotations

import socket


def read_answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """One answer framed by Content-Length: its head (up to the blank line) and its body.
    Fails if the connection closes before the answer is whole, or if more bytes than the
    answer's came (a second answer to one request)."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"closed within the head: {buffer!r}"
        buffer += chunk
    head, _, body = buffer.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed within the body"
        body += chunk
    assert len(body) == length, "more bytes than the answer's length"
    return head, body
