"""`pymirror check`: what a configuration would run (listeners and what they serve, each
upstream's protocol and why), one block per virtual service (routes, weights, mirrors and
their rates, resolved endpoints, its warnings), and every problem with its file:line:col.
Text for people, JSON for machines."""

from __future__ import annotations

import concurrent.futures
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TextIO

from . import snapshot as snap
from .config import Loaded, Problem, Source, load
from .config.errors import ConfigError, render_path
from .config.model import Config, VirtualService
from .config.regexes import refused
from .config.types import format_duration
from .config.upstreams import UpstreamChoice
from .config.validate import locate, vs_subject
from .errors import PymirrorError
from .resolve import listener_specs, resolve
from .resolve.describe import (
    cluster_label,
    describe_route,
    describe_tcp_route,
    listener_serves,
    mirror_guards_text,
    tcp_note,
    upstream_lines,
)
from .resolve.misroutes import misroutes, unresolved


@dataclass
class Report:
    """The outcome of checking: the config (if any loaded), its snapshot, all problems."""

    loaded: Loaded
    snapshot: snap.Snapshot | None = None
    problems: list[Problem] = field(default_factory=list)
    #: `--listen` addresses, which replace the configured listeners' addresses.
    listen: Sequence[str] = ()
    #: How each cluster of the snapshot is reached upstream, and why (see `Resolved`).
    upstreams: Sequence[UpstreamChoice | None] = ()

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


def check(sources: Sequence[Source], *, listen: Sequence[str] | None = None) -> Report:
    """Load leniently (a rule in a file not given is a warning) and resolve what loads;
    the core compiles the snapshot too, as `run` would."""
    from .engine import regex_problem, validate  # the compiled core, where it is needed

    loaded = load(*sources, strict=False)
    report = Report(loaded, problems=list(loaded.problems), listen=tuple(listen or ()))
    if loaded.config is None:
        return report
    if not (listen or loaded.config.listeners):
        report.problems.append(
            Problem(
                "<config>",
                None,
                None,
                ("listeners",),
                "no listener: `run` needs `--listen` or `listeners` (native format or a "
                "MirrorProxy resource)",
                "warning",
                "no-listener",
            )
        )
    try:
        resolved = resolve(loaded.config, listen=listen, strict=False)
        report.snapshot, report.upstreams = resolved.snapshot, resolved.upstreams
        findings = misroutes(loaded.config) + unresolved(loaded.config, dns_failure)
        bad_regexes = refused(loaded.config, regex_problem)
        report.problems += locate(loaded.config, findings + bad_regexes)
        if not bad_regexes:  # they say, with their places, what the core would refuse
            validate(report.snapshot)
    except ConfigError as exc:
        # The load already reported the reference errors that resolution refuses.
        report.problems += [p for p in exc.problems if p not in report.problems]
    except PymirrorError as exc:
        report.problems.append(Problem("<snapshot>", None, None, (), f"the core refuses: {exc}"))
    return report


#: How long `check` waits for a DNS answer; a slow resolver is no evidence of a typo.
DNS_TIMEOUT_SECONDS = 2.0


def dns_failure(host: str) -> str | None:
    """Why ``host`` does not resolve (None: it does, or DNS did not answer in time)."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    lookup = pool.submit(socket.getaddrinfo, host, None)
    pool.shutdown(wait=False)
    try:
        lookup.result(timeout=DNS_TIMEOUT_SECONDS)
    except socket.gaierror as exc:
        return exc.strerror or str(exc)
    except (OSError, concurrent.futures.TimeoutError, UnicodeError):
        return None
    return None


def run_check(
    sources: Sequence[Source],
    *,
    listen: Sequence[str] | None = None,
    fmt: str = "text",
    strict: bool = False,
    out: TextIO,
    err: TextIO,
) -> int:
    """What the command does: print the report; 1 when there is any error (or, with
    ``strict``, any warning), else 0."""
    report = check(sources, listen=listen)
    if fmt == "json":
        json.dump(as_json(report), out, indent=2)
        out.write("\n")
    else:
        out.writelines(f"{line}\n" for line in as_text(report))
        if report.errors:
            err.write("pymirror: configuration error\n")
            err.writelines(f"{p}\n" for p in report.errors)
    warned = any(p.severity == "warning" for p in report.problems)
    if strict and warned and report.ok:
        err.write("pymirror: warnings fail the check (--strict)\n")
    return 0 if report.ok and not (strict and warned) else 1


# === text ===


def as_text(report: Report) -> list[str]:
    config, s = report.loaded.config, report.snapshot
    lines: list[str] = []
    shown: set[str] = set()
    if config is not None and s is not None:
        lines += _listeners(config, s, report.listen)
        lines += upstream_lines(s, report.upstreams)
        for i, vs in enumerate(config.virtual_services):
            subject = vs_subject(vs)
            shown.add(subject)
            lines += ["", f"{subject} ({_where(config, i)})"]
            lines += ["  " + line for line in _block(config, s, vs, i)]
            lines += [
                f"  {p}"
                for p in report.problems
                if p.subject == subject and p.severity == "warning"
            ]
    lines += _loose_warnings(report, shown)
    errors = len(report.errors)
    warnings = len([p for p in report.problems if p.severity == "warning"])
    summary = f"{warnings} warning{'s' * (warnings != 1)}"
    if errors or s is None:
        return [*lines, "", f"{errors} error{'s' * (errors != 1)}, {summary}"]
    return [*lines, "", f"ok: config version {s['version']} ({summary})"]


def _listeners(config: Config, s: snap.Snapshot, listen: Sequence[str]) -> list[str]:
    lines = []
    for spec, listener in zip(listener_specs(config, listen), s["listeners"], strict=True):
        default = listener.get("default_virtual_host")
        extra = (
            f" (default host {s['virtual_hosts'][default]['name']})"
            if default is not None and not spec.https_redirect
            else ""
        )
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
    return lines


def _where(config: Config, index: int) -> str:
    path = ("virtualServices", index, "name")
    p = config._origin.problem(path, "") if config._origin else None
    return f"{p.file}:{p.line}" if p is not None and p.line else "built in code"


def _virtual_host(config: Config, s: snap.Snapshot, index: int) -> snap.VirtualHost | None:
    served = [i for i, vs in enumerate(config.virtual_services) if vs.serves_http]
    return s["virtual_hosts"][served.index(index)] if index in served else None


def _block(config: Config, s: snap.Snapshot, vs: VirtualService, index: int) -> list[str]:
    vh = _virtual_host(config, s, index)
    if vh is None and vs.is_delegate:
        return ["delegate (no hosts): served only where a `delegate` names it"]
    if vh is None:
        return [
            "hosts: " + ", ".join(vs.hosts),
            "no HTTP route" + ("; tls routes are not served yet" if vs.tls else ""),
            *_tcp_lines(s, vs),
        ]
    extra = [d for d in vh["domains"] if d not in vs.hosts]
    lines = ["hosts: " + ", ".join(vs.hosts) + (f" (also {', '.join(extra)})" if extra else "")]
    for route in vh["routes"]:
        lines.append(f"route {route['name']}: {describe_route(s, route).split(' -> ')[0]}")
        lines += ["  " + line for line in _route_lines(s, route)]
    if not vh["routes"]:
        lines.append("no HTTP route served")
    return lines + _tcp_lines(s, vs) + _tls_lines(s, vs)


def _tcp_lines(s: snap.Snapshot, vs: VirtualService) -> list[str]:
    """The virtual service's tcp routes as served (their mirrors included, whether written
    on the route or given by `tcpMirrors`), or why they are not."""
    if not vs.tcp:
        return []
    served = [t for t in s.get("tcp_routes", []) if t["virtual_service"] == vs.name]
    if not served or not any(lst.get("protocol") == "tcp" for lst in s["listeners"]):
        return [f"{len(vs.tcp)} tcp route(s), not served: no listener is tcp"]
    return [f"tcp route {t['name']}: {describe_tcp_route(s, t)}" for t in served]


def _tls_lines(s: snap.Snapshot, vs: VirtualService) -> list[str]:
    """The virtual service's tls (passthrough) routes, or why they are not served."""
    if not vs.tls:
        return []
    if not any(lst.get("protocol") == "tls" for lst in s["listeners"]):
        return [f"{len(vs.tls)} tls route(s), not served: no listener passes TLS through"]
    served = [t for t in s.get("tls_routes", []) if t["virtual_service"] == vs.name]
    return [f"tls route {t['name'][4:]}: {describe_tcp_route(s, t)}" for t in served]


_NO_OPS: snap.HeaderOps = {"set": [], "add": [], "remove": []}


def _route_lines(s: snap.Snapshot, route: snap.Route) -> list[str]:
    dests = route.get("destinations", [])
    total = sum(d["weight"] for d in dests) or 1
    lines = [
        f"-> {cluster_label(s, d['cluster'])}"
        + (f" weight {d['weight']} ({d['weight'] * 100 / total:.4g}%)" if len(dests) > 1 else "")
        for d in dests
    ]
    if not dests:
        lines.append(describe_route(s, route).split(" -> ", 1)[1].split("; ")[0])
    lines += [
        f"mirror {m['per_million'] / 10_000:g}% -> {cluster_label(s, m['cluster'])}"
        + mirror_guards_text(m)
        for m in route.get("mirrors", [])
    ]
    if any((m.get("method") or {}).get("exact") == "CONNECT" for m in route.get("matches", [])):
        # What the core does with a CONNECT this route takes: none of the HTTP extras apply.
        lines.append("CONNECT tunnels: bytes spliced to the destination, no retries or rewrites")
    extras = []
    if timeout := route.get("timeout_ms"):
        extras.append(f"timeout {format_duration(timedelta(milliseconds=timeout))}")
    if retries := route.get("retries"):
        on = ",".join(retries.get("retry_on", []))
        extras.append(f"retries {retries['attempts']} on {on or 'nothing'}")
    if fault := route.get("fault"):
        if delay := fault.get("delay"):
            extras.append(
                f"delay {delay['fixed_delay_ms']}ms on {delay['per_million'] / 10_000:g}%"
            )
        if abort := fault.get("abort"):
            extras.append(f"abort {abort['status']} on {abort['per_million'] / 10_000:g}%")
    if rewrite := route.get("rewrite"):
        parts = [f"{k} {v}" for k, v in rewrite.items() if isinstance(v, str)]
        if regex := rewrite.get("uri_regex"):
            parts.append(f"uri ~{regex['pattern']} -> {regex['substitution']}")
        extras.append("rewrite " + ", ".join(parts))
    return lines + ([", ".join(extras)] if extras else [])


def _loose_warnings(report: Report, shown: set[str]) -> list[str]:
    rest = [p for p in report.problems if p.severity == "warning" and p.subject not in shown]
    return ["", "warnings:", *(f"  {p}" for p in rest)] if rest else []


# === json ===


def problem_json(p: Problem) -> dict[str, Any]:
    return {
        "severity": p.severity,
        "code": p.code,
        "file": p.file,
        "line": p.line,
        "column": p.column,
        "path": render_path(p.path),
        "message": p.message,
        "subject": p.subject,
    }


def as_json(report: Report) -> dict[str, Any]:
    config, s = report.loaded.config, report.snapshot
    result: dict[str, Any] = {
        "ok": report.ok,
        "version": s["version"] if s else None,
        "listeners": [],
        "upstreams": [],
        "admin": config.admin.address if config and config.admin else None,
        "virtualServices": [],
        "problems": [problem_json(p) for p in report.problems],
    }
    if config is None or s is None:
        return result
    result["listeners"] = [
        {
            "address": lst["address"],
            "defaultVirtualHost": lst.get("default_virtual_host"),
            "protocol": lst.get("protocol", "http"),
            "tls": "tls" in lst,
        }
        for lst in s["listeners"]
    ]
    result["upstreams"] = [
        {**_cluster_json(s, i), "protocol": choice.protocol, "why": choice.why}
        for i, choice in enumerate(report.upstreams)
        if choice is not None
    ]
    for i, vs in enumerate(config.virtual_services):
        vh = _virtual_host(config, s, i)
        subject = vs_subject(vs)
        result["virtualServices"].append(
            {
                "subject": subject,
                "name": vs.name,
                "namespace": vs.namespace,
                "hosts": list(vs.hosts),
                "domains": vh["domains"] if vh else [],
                "delegate": vs.is_delegate,
                "routes": [_route_json(s, r) for r in vh["routes"]] if vh else [],
                "problems": [problem_json(p) for p in report.problems if p.subject == subject],
            }
        )
    return result


def _cluster_json(s: snap.Snapshot, index: int) -> dict[str, Any]:
    c = s["clusters"][index]
    return {"host": c["host"], "subset": c.get("subset"), "endpoints": c["endpoints"]}


def _route_json(s: snap.Snapshot, route: snap.Route) -> dict[str, Any]:
    dests = route.get("destinations", [])
    total = sum(d["weight"] for d in dests) or 1
    return {
        "name": route["name"],
        "matches": route.get("matches", []),
        "destinations": [
            {
                **_cluster_json(s, d["cluster"]),
                "weight": d["weight"],
                "percent": d["weight"] * 100 / total,
            }
            for d in dests
        ],
        "mirrors": [
            {
                **_cluster_json(s, m["cluster"]),
                "percent": m["per_million"] / 10_000,
                # The guards and copy-only header operations, only where set.
                **{
                    key: value
                    for key in ("only_idempotent", "after_primary_success", "request_headers")
                    if (value := m.get(key)) and value != _NO_OPS
                },
            }
            for m in route.get("mirrors", [])
        ],
        **{
            key: route.get(key)
            for key in ("redirect", "direct_response", "timeout_ms", "retries", "rewrite", "fault")
        },
    }
