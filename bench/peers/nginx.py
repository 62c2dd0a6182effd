"""nginx as the peer proxy: a plain reverse proxy, or with its mirror module configured
as its documentation shows (`mirror /mirror; mirror_request_body on;` and an internal
location proxying to v2). Both upstreams keep connections alive. nginx's mirror has no
percentage; a share below 100% is sampled with `split_clients` on `$request_id` and the
unsampled subrequests end in the internal location with a 204, the usual recipe.
Reload is SIGHUP to the master (what `nginx -s reload` sends). With the route's TLS:
`listen ... ssl` for clients; `proxy_pass https://` upstream, verifying the CA and the
name, with kept-alive connections and reused sessions (`proxy_ssl_session_reuse`)."""

from __future__ import annotations

import getpass
import signal
from pathlib import Path

from peers.backends import SERVER_SSL, nginx_binary
from peers.process import Process, free_port, start
from peers.route import WORKERS, Route

_CONF = """
user {user};
worker_processes {workers};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log crit;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_max_body_size 0;
    upstream v1 {{ server {primary}; keepalive 256; keepalive_requests 1000000; }}
{upstream_ssl}
{mirror_http}
    server {{
        listen {address}{ssl} backlog=4096;
{ssl_lines}
        location / {{
{mirror_location}
            proxy_pass {scheme}://v1;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
{mirror_internal}
    }}
}}
"""

_MIRROR_HTTP = """
    upstream v2 {{ server {mirror}; keepalive 256; keepalive_requests 1000000; }}
{sample}"""

_MIRROR_LOCATION = """
            mirror /mirror;
            mirror_request_body on;"""

_MIRROR_INTERNAL = """
        location = /mirror {{
            internal;
{skip}
            proxy_pass {scheme}://v2$request_uri;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host-shadow;
        }}"""


_UPSTREAM_SSL = """    proxy_ssl_protocols TLSv1.2 TLSv1.3;
    proxy_ssl_trusted_certificate {ca};
    proxy_ssl_verify on;
    proxy_ssl_name reviews;
    proxy_ssl_server_name on;
    proxy_ssl_session_reuse on;"""


def config(route: Route, address: str, workdir: Path, workers: int = WORKERS) -> str:
    mirror_http = mirror_location = mirror_internal = ""
    scheme = "https" if route.tls_out else "http"
    if route.mirror is not None:
        sample = skip = ""
        if route.percent < 100:
            sample = f'    split_clients "$request_id" $mirrored {{ {route.percent:g}% 1; * ""; }}'
            skip = '            if ($mirrored = "") { return 204; }'
        mirror_http = _MIRROR_HTTP.format(mirror=route.mirror, sample=sample)
        mirror_location = _MIRROR_LOCATION
        mirror_internal = _MIRROR_INTERNAL.format(skip=skip, scheme=scheme)
    return _CONF.format(
        user=getpass.getuser(),
        workers=workers,
        dir=workdir,
        address=address,
        primary=route.primary,
        mirror_http=mirror_http,
        mirror_location=mirror_location,
        mirror_internal=mirror_internal,
        scheme=scheme,
        upstream_ssl=_UPSTREAM_SSL.format(ca=route.tls_out.ca) if route.tls_out else "",
        ssl=" ssl" if route.tls_in else "",
        ssl_lines=SERVER_SSL.format(cert=route.tls_in.cert, key=route.tls_in.key)
        if route.tls_in
        else "",
    )


def start_nginx(route: Route, workdir: Path, *, workers: int = WORKERS) -> Process:
    workdir.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    conf = workdir / "nginx.conf"
    conf.write_text(config(route, address, workdir, workers))
    return start([nginx_binary(), "-p", str(workdir), "-c", str(conf)], address, workdir)


def reload_nginx(peer: Process, route: Route) -> None:
    (peer.workdir / "nginx.conf").write_text(config(route, peer.address, peer.workdir))
    peer.signal(signal.SIGHUP)


STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")

_STREAM_CONF = """
load_module {module};
user {user};
worker_processes {workers};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log crit;
events {{ worker_connections 16384; }}
stream {{
    server {{
        listen {address} backlog=4096;
        proxy_pass {primary};{tuning}
    }}
}}
"""
#: The tuned variant: a 1 MiB buffer per direction and connection in place of the 16 KiB
#: default (`proxy_buffer_size`), so each read and write moves 64 times as much.
STREAM_TUNING = "\n        proxy_buffer_size 1m;"
#: nginx's stream module has no mirror: a tcp mirror scenario records this instead.
NO_TCP_MIRROR = "nginx's stream module has no mirror (ngx_stream_proxy copies to one upstream)"


def start_nginx_stream(route: Route, workdir: Path, *, tuned: bool = False) -> Process:
    """nginx `stream { server { listen; proxy_pass; } }`, defaults otherwise
    (proxy_buffer_size 16k; `tuned`: 1m), as many worker processes as pymirror has
    threads."""
    if route.mirror is not None:
        raise ValueError(NO_TCP_MIRROR)
    if not STREAM_MODULE.exists():
        raise RuntimeError("nginx's stream module is not installed (libnginx-mod-stream)")
    workdir.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    conf = workdir / "nginx.conf"
    conf.write_text(
        _STREAM_CONF.format(
            module=STREAM_MODULE,
            user=getpass.getuser(),
            workers=WORKERS,
            dir=workdir,
            address=address,
            primary=route.primary,
            tuning=STREAM_TUNING if tuned else "",
        )
    )
    return start([nginx_binary(), "-p", str(workdir), "-c", str(conf)], address, workdir)
