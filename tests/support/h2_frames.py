"""HTTP/2 frames as exact bytes (RFC 9113 4.1, 6), for peers and clients that must send
what a library would refuse to: the preface, a frame's bytes, and frames read back."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Frame types.
DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY, CONTINUATION = 0x0, 0x1, 0x3, 0x4, 0x7, 0x9
# Flags.
ACK = END_STREAM = 0x1
END_HEADERS = 0x4
# Error codes.
INTERNAL_ERROR, CANCEL = 0x2, 0x8


@dataclass(frozen=True)
class Frame:
    kind: int
    flags: int
    stream: int
    payload: bytes


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    head = struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream)
    return head + payload


def frames_in(sock: socket.socket, buffer: bytes = b"") -> Iterator[Frame]:
    """Frames as they arrive on `sock` (after whatever `buffer` holds), until it closes or
    fails (a timeout included)."""
    while True:
        while len(buffer) >= 9:
            length = int.from_bytes(buffer[:3], "big")
            if len(buffer) < 9 + length:
                break
            stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
            yield Frame(buffer[3], buffer[4], stream, buffer[9 : 9 + length])
            buffer = buffer[9 + length :]
        try:
            chunk = sock.recv(65536)
        except OSError:
            return
        if not chunk:
            return
        buffer += chunk
