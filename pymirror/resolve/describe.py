"""The text of what a configuration runs: one line per listener (and what it serves),
upstream cluster (its protocol and why) and route, for `pymirror check`, the startup log
and the admin's `/config`, read from its Snapshot."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from .. import defaults
from .. import snapshot as snap
from ..config.listeners import port_origin
from ..config.model import Config
from ..config.types import format_duration, split_host_port
from ..config.upstreams import UpstreamChoice
from .build import resolve
from .listeners import listener_specs

#: What an `http` listener serves: the connection preface tells the two apart on one port.
HTTP_LISTENER_SERVES = "serves HTTP/1.1 and HTTP/2 (h2c prior knowledge)"
#: What an `http` listener with TLS serves: ALPN chooses.
HTTPS_LISTENER_SERVES = "serves HTTPS: TLS 1.{v}+ with {cert}, HTTP/2 or HTTP/1.1 by ALPN"


def describe(config: Config, *, listen: Sequence[str] | None = None) -> list[str]:
    """Readable lines saying what would run, for ``pymirror check`` and startup logs."""
    resolved = resolve(config, listen=listen)
    s = resolved.snapshot
    lines = []
    specs = listener_specs(config, listen)
    for spec, listener in zip(specs, s["listeners"], strict=True):
        extra = f" (default host {spec.host})" if spec.host else ""
        if listener.get("protocol") == "tcp":
            extra = tcp_note(config, listener["address"], spec.written)
        elif listener.get("protocol") == "tls":
            extra = " (tls passthrough)"
        if spec.gateway is not None:
            extra += f" (gateway {spec.gateway.name})"
        lines.append(f"listener {listener['address']}{extra}")
        if spec.https_redirect:
            lines.append("  redirects every request to HTTPS (301)")
        else:
            lines += listener_serves(listener)
    if config.admin is not None:
        lines.append(f"admin {config.admin.address}")
    lines += upstream_lines(s, resolved.upstreams)
    for vh in s["virtual_hosts"]:
        for route in vh["routes"]:
            lines.append(f"{vh['name']}/{route['name']}: {describe_route(s, route)}")
    for tcp in s.get("tcp_routes", []):
        lines.append(f"{tcp['virtual_service']}/tcp/{tcp['name']}: {describe_tcp_route(s, tcp)}")
    for tls in s.get("tls_routes", []):
        lines.append(f"{tls['virtual_service']}/{tls['name']}: {describe_tcp_route(s, tls)}")
    return lines


def listener_serves(listener: snap.Listener) -> list[str]:
    """The line under an `http` listener saying what it serves (a tcp one's says `tcp`)."""
    if listener.get("protocol") == "tcp":
        return []
    if listener.get("protocol") == "tls":
        return ["  passes TLS through unterminated, routed by SNI (`tls` routes)"]
    if (tls := listener.get("tls")) is not None:
        version = tls["min_protocol_version"].removeprefix("1.")
        files = ", ".join(c["certificate_file"] for c in tls["certificates"])
        line = f"  {HTTPS_LISTENER_SERVES.format(v=version, cert=files)}"
        if (ca := tls.get("client_ca_file")) is not None:
            line += f"; MUTUAL: client certificates signed by {ca}"
        return [line]
    return [f"  {HTTP_LISTENER_SERVES}"]


def upstream_lines(s: snap.Snapshot, upstreams: Sequence[UpstreamChoice | None]) -> list[str]:
    """`upstream reviews v1 (127.0.0.1:9081): http1 (default)`: how each cluster that http
    routes use is reached, and why that protocol."""
    return [
        f"upstream {cluster_label(s, i)}: {choice}"
        for i, choice in enumerate(upstreams)
        if choice is not None
    ]


def tcp_note(config: Config, address: str, written: str | None) -> str:
    """How a tcp listener is labelled: ` (tcp)`, with the service port that made it tcp
    when it writes no `protocol`."""
    if written is not None:
        return " (tcp)"
    return f" (tcp: {port_origin(config, split_host_port(address)[1])})"


def describe_tcp_route(s: snap.Snapshot, route: snap.TcpRoute) -> str:
    """One line: conditions -> destinations; mirrors."""
    conditions = []
    for match in route.get("matches", []):
        parts = [f"port {match['port']}"] if match.get("port") else []
        if subnets := match.get("destination_subnets"):
            parts.append(f"to {', '.join(subnets)}")
        if sni := match.get("sni_hosts"):
            parts.append(f"sni {', '.join(sni)}")
        conditions.append(" ".join(parts) or "*")
    dests = route["destinations"]
    total = sum(d["weight"] for d in dests)
    answer = ", ".join(
        cluster_label(s, d["cluster"])
        + (f" {d['weight'] * 100 / total:.4g}%" if len(dests) > 1 else "")
        for d in dests
    )
    kind = "tls" if route["name"].startswith("tls/") else "tcp"
    text = f"{kind} {' | '.join(conditions) or '*'} -> {answer}"
    for m in route.get("mirrors", []):
        text += f"; mirror {m['per_million'] / 10_000:g}% -> {cluster_label(s, m['cluster'])}"
    return text


def cluster_label(s: snap.Snapshot, index: int) -> str:
    """`reviews v1 (127.0.0.1:9081)`: a cluster as `check` and the logs name it."""
    c = s["clusters"][index]
    name = f"{c['host']} {c['subset']}" if c.get("subset") else c["host"]
    return f"{name} ({', '.join(c['endpoints']) or 'no endpoint'})"


def describe_route(s: snap.Snapshot, route: snap.Route) -> str:
    """One line: matches -> what answers; timeout; mirrors."""
    dests = route.get("destinations", [])
    total = sum(d["weight"] for d in dests)
    if dests:
        answer = ", ".join(
            cluster_label(s, d["cluster"])
            + (f" {d['weight'] * 100 / total:.4g}%" if len(dests) > 1 else "")
            for d in dests
        )
    elif redirect := route.get("redirect"):
        target = (redirect.get("authority") or "") + (redirect.get("uri") or "")
        answer = f"redirect {redirect.get('code', defaults.REDIRECT_CODE)} {target}"
    elif direct := route.get("direct_response"):
        answer = f"direct response {direct['status']}"
    else:
        answer = "nothing"
    text = f"{_describe_matches(route)} -> {answer.rstrip()}"
    if timeout_ms := route.get("timeout_ms"):
        text += f"; timeout {format_duration(timedelta(milliseconds=timeout_ms))}"
    for m in route.get("mirrors", []):
        text += f"; mirror {m['per_million'] / 10_000:g}% -> {cluster_label(s, m['cluster'])}"
        text += mirror_guards_text(m)
    return text


def mirror_guards_text(m: snap.Mirror) -> str:
    """` (only idempotent, after primary success, headers -authorization)`, or nothing."""
    parts = []
    if m.get("only_idempotent"):
        grpc = m.get("grpc_methods") or []
        parts.append("only idempotent" + (f" and gRPC {' '.join(grpc)}" if grpc else ""))
    if m.get("after_primary_success"):
        parts.append("after primary success")
    ops = m.get("request_headers") or {}
    changes = [f"-{n}" for n in ops.get("remove", [])]
    changes += [f"={h['name']}" for h in ops.get("set", [])]
    changes += [f"+{h['name']}" for h in ops.get("add", [])]
    if changes:
        parts.append("headers " + " ".join(changes))
    compare = m.get("compare")
    if compare and (parent := compare.get("noise_for")) is not None:
        parts.append(f"second primary beside mirror {parent + 1}, every compared request")
    elif compare:
        parts.append(f"compare {compare['per_million'] / 10_000:g}%")
    return f" ({', '.join(parts)})" if parts else ""


def _describe_matches(route: snap.Route) -> str:
    alternatives = []
    for m in route.get("matches", []):
        parts = []
        if method := m.get("method"):
            parts.append(_describe_string("method", method, bare=True))
        if uri := m.get("uri"):
            parts.append(_describe_string("uri", uri, bare=True))
        if scheme := m.get("scheme"):
            parts.append(_describe_string("scheme", scheme))
        if authority := m.get("authority"):
            parts.append(_describe_string("authority", authority))
        parts += [_describe_string(h["name"], h.get("value")) for h in m.get("headers", [])]
        parts += [
            f"!{_describe_string(h['name'], h.get('value'))}" for h in m.get("without_headers", [])
        ]
        parts += [
            f"?{_describe_string(q['name'], q.get('value'))}" for q in m.get("query_params", [])
        ]
        if m.get("port"):
            parts.append(f"port={m.get('port')}")
        alternatives.append(" ".join(parts) or "*")
    return " or ".join(alternatives) or "*"


def _describe_string(name: str, m: snap.StringMatch | None, *, bare: bool = False) -> str:
    if m is None:
        return name  # a presence test
    if "exact" in m:
        return m["exact"] if bare else f"{name}={m['exact']}"
    if "prefix" in m:
        return f"{m['prefix']}*" if bare else f"{name}={m['prefix']}*"
    return f"{name}~{m['regex']}"
