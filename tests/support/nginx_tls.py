"""Real nginx as an HTTPS upstream: `listen ... ssl` (HTTP/2 by ALPN too), optionally
asking for a client certificate (MUTUAL). Every request is answered with its name and
logged with what the TLS session was: the SNI it was sent, whether the session was
resumed, the client certificate's subject, and the connection it came on."""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

_CONF = """
user {user};
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    log_format tls escape=json '{{"sni":"$ssl_server_name","reused":"$ssl_session_reused",'
        '"client":"$ssl_client_s_dn","verify":"$ssl_client_verify","connection":$connection,'
        '"protocol":"$server_protocol","host":"$http_host","uri":"$request_uri"}}';
    access_log {dir}/access.log tls;
    keepalive_requests 10000;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_session_cache shared:tls:1m;
        ssl_session_tickets on;
{mutual}
        location / {{ return 200 "{name}\\n"; }}
    }}
}}
"""

_MUTUAL = """        ssl_verify_client on;
        ssl_client_certificate {ca};"""


@dataclass
class Logged:
    sni: str
    reused: str
    client: str
    verify: str
    connection: int
    protocol: str
    host: str
    uri: str


class NginxTls:
    """nginx serving HTTPS on a free loopback port as ``name``."""

    def __init__(self, name: str, cert: Path, key: Path, client_ca: Path | None = None):
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"nginx-{name}-"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        mutual = _MUTUAL.format(ca=client_ca) if client_ca is not None else ""
        conf = _CONF.format(user=getpass.getuser(), dir=self.dir, port=self.port, cert=cert,
                            key=key, mutual=mutual, name=name)  # fmt: skip
        (self.dir / "nginx.conf").write_text(conf)
        (self.dir / "logs").mkdir()  # nginx opens its default log before reading the config
        self.process = subprocess.Popen(
            ["nginx", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"nginx exited: {self.process.stderr.read()!r}") from None
                time.sleep(0.05)
        raise RuntimeError("nginx did not start listening")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def logged(self) -> list[Logged]:
        """The requests served so far (nginx writes its log line as each ends)."""
        path = self.dir / "access.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [Logged(**json.loads(line)) for line in lines]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Logged]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(found := self.logged()) >= count:
                return found
            time.sleep(0.02)
        return self.logged()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)
