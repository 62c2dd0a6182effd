"""Backends that are never the bottleneck: nginx answering a fixed body, one worker
each (with `size`, an answer of that many bytes from a file: the primary `v1-64kib` of
the large-answer scenario). v2 flavours: healthy, slow (answers after 200 ms, on an
echo_sleep timer, no CPU held) and dead (a port nothing listens on).
Backends that log count what reached them, and over which protocol. HTTP/2 backends
(`http2=True`) serve h2c with prior knowledge on a plaintext `listen ... http2` and name
the protocol each answer was served over in a header, so a check can tell that a proxy
really spoke HTTP/2 to them."""

from __future__ import annotations

import getpass
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from peers.process import Process, free_port, start
from peers.tls import TlsFiles

ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")
#: An HTTPS backend's (and nginx peer's) certificate and session cache, TLS 1.3 (nginx
#: before 1.23.4 offers up to 1.2 unless told) choosing AES-128-GCM first, as pymirror's
#: listener does and Envoy's BoringSSL by default: every peer runs the same protocol and
#: suite.
SERVER_SSL = """        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:tls:10m;
        ssl_prefer_server_ciphers on;
        ssl_conf_command Ciphersuites {suites};""".replace(
    "{suites}", "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
)
#: The response header an HTTP/2 backend names its protocol in (`HTTP/2.0`).
SERVED_OVER = "x-served-over"

_CONF = """
{load_module}
user {user};
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log crit;
events {{ worker_connections 16384; }}
http {{
    log_format counted '$request_length $status $server_protocol';
    access_log {access_log};
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_max_body_size 0;
    client_body_buffer_size 2m;
    server {{
        listen {address}{http2}{ssl} backlog=4096;
{ssl_lines}
        location / {{ {location} }}
    }}
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(found).exists():
        raise RuntimeError("nginx is not installed (Debian package nginx-light)")
    return found


def nginx_http2_missing() -> str | None:
    """Why nginx cannot serve HTTP/2 here, or None when it can (`nginx -V` lists the
    configure flags, on stderr)."""
    try:
        argv = [nginx_binary(), "-V"]
        flags = subprocess.run(argv, capture_output=True, text=True, timeout=10).stderr
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if "--with-http_v2_module" not in flags:
        return "nginx was built without HTTP/2 (no --with-http_v2_module in `nginx -V`)"
    return None


@dataclass
class Backend:
    """A backend's address and, if it logs, what reached it."""

    name: str
    address: str
    process: Process | None = None
    answer: bytes = b""
    """What it answers every request with (empty: not an nginx answering a fixed body)."""
    _offset: int = field(default=0, repr=False)
    _count: int = field(default=0, repr=False)

    @property
    def _log(self) -> Path | None:
        return self.process.workdir / "access.log" if self.process else None

    def lines(self) -> list[bytes]:
        log = self._log
        return log.read_bytes().splitlines() if log and log.exists() else []

    def seen(self) -> int:
        """Requests logged so far (a copy is logged once its answer is sent). Reads only
        what was appended since the last call: the log grows by the million lines."""
        log = self._log
        if log is None or not log.exists():
            return 0
        with log.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1  # a line still being written counts once whole
        self._offset += end
        self._count += chunk.count(b"\n", 0, end)
        return self._count

    def settled(self, timeout: float = 3.0) -> int:
        """The count once it stops growing: copies still in flight get their line."""
        deadline = time.monotonic() + timeout
        last = self.seen()
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = self.seen()
            if now == last:
                return now
            last = now
        return last

    def request_lengths(self, since: int) -> list[int]:
        """Request sizes (head and body, bytes) of the requests logged after the first
        `since` (a whole read of the log: for the single-request checks)."""
        return [int(line.split()[0]) for line in self.lines()[since:]]

    def protocols(self, since: int) -> list[str]:
        """The protocols (`HTTP/1.1`, `HTTP/2.0`) of the requests logged after the first
        `since`."""
        return [line.split()[2].decode() for line in self.lines()[since:]]

    def stop(self) -> None:
        if self.process:
            self.process.stop()


def nginx_backend(
    name: str,
    workdir: Path,
    *,
    body: str,
    delay: float = 0.0,
    log: bool = False,
    http2: bool = False,
    tls: TlsFiles | None = None,
    size: int = 0,
) -> Backend:
    """nginx answering 200 and `body` to every request, after `delay` seconds if set.
    `size`: a `size`-byte answer instead, `body` then filler, served from a file (nginx's
    `return` takes no text over its 4 KiB parameter buffer), to GETs (a POST gets nginx's
    405 for a static file); not with `log`.
    A logging backend (a v2) reads the whole request body before it answers (echo module).
    `http2`: HTTP/2 with prior knowledge (h2c) on its plaintext port; nginx before 1.25.1
    speaks nothing else there, later ones HTTP/1.1 too, hence the SERVED_OVER header.
    `tls`: HTTPS with that certificate (sessions cached and ticketed, as nginx would be
    deployed)."""
    workdir.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    answer = f"{body}\n".encode()
    if size:
        if log or delay:
            raise ValueError("a sized answer is served from a file: no log, no delay")
        answer = sized_answer(body, size)
        (workdir / "answer").write_bytes(answer)
        location = f"root {workdir}; try_files /answer =404;"
    elif log:  # read the whole body first, so that $request_length counts it
        sleep = f"echo_sleep {delay}; " if delay else ""
        location = f'echo_read_request_body; {sleep}echo "{body}";'
    else:
        location = f'return 200 "{body}\\n";'
    if http2:
        location = f"add_header {SERVED_OVER} $server_protocol; {location}"
    conf = workdir / "nginx.conf"
    conf.write_text(
        _CONF.format(
            user=getpass.getuser(),
            dir=workdir,
            address=address,
            http2=" http2" if http2 else "",
            ssl=" ssl" if tls else "",
            ssl_lines=SERVER_SSL.format(cert=tls.cert, key=tls.key) if tls else "",
            location=location,
            load_module=f"load_module {ECHO_MODULE};" if log else "",
            access_log=f"{workdir}/access.log counted" if log else "off",
        )
    )
    argv = [nginx_binary(), "-p", str(workdir), "-c", str(conf)]
    return Backend(name, address, start(argv, address, workdir), answer)


def sized_answer(body: str, size: int) -> bytes:
    """`size` bytes: `body`, dots, a newline."""
    head = body.encode()
    if size <= len(head):
        raise ValueError(f"{size} bytes cannot hold {body!r} and a newline")
    return head + b"." * (size - len(head) - 1) + b"\n"


def dead_backend() -> Backend:
    """A loopback port nothing listens on: connections are refused at once."""
    return Backend("v2-dead", f"127.0.0.1:{free_port()}")
