"""`pymirror check`: one block per virtual service, warnings beside it, errors on stderr
with exit 1; `--format json` says the same for machines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pymirror.cli import main

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "config" / "reviews.yaml"

ISTIO = """\
apiVersion: pymirror.dev/v1alpha1
kind: MirrorProxy
metadata: {name: proxy}
spec:
  listeners: [{address: 127.0.0.1:8080, host: reviews}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v2}, weight: 20}
    mirror: {host: reviews, subset: v2}
    mirrorPercent: 5
  - route: [{destination: {host: reviews, subset: v1}}]
    timeout: 2s
    retries: {attempts: 0}
  tcp:
  - route: [{destination: {host: db}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  ports: [{number: 9080, name: http}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: 9081}, labels: {version: v1}}
  - {address: 127.0.0.1, ports: {http: 9082}, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec: {}
"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["check", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_text_has_one_block_per_virtual_service(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "istio.yaml"
    path.write_text(ISTIO)
    code, out, err = run(capsys, str(path))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "listener 127.0.0.1:8080 (default host reviews)",
        "  serves HTTP/1.1 and HTTP/2 (h2c prior knowledge)",
        "upstream reviews v1 (127.0.0.1:9081): http1 (default)",
        "upstream reviews v2 (127.0.0.1:9082): http1 (default)",
        "",
        f"VirtualService default/reviews ({path}:9)",
        "  hosts: reviews (also reviews.default, reviews.default.svc, "
        "reviews.default.svc.cluster.local)",
        "  route 0: end-user=jason",
        "    -> reviews v1 (127.0.0.1:9081) weight 80 (80%)",
        "    -> reviews v2 (127.0.0.1:9082) weight 20 (20%)",
        "    mirror 5% -> reviews v2 (127.0.0.1:9082)",
        "    retries 2 on connect-failure,refused-stream,unavailable,cancelled,"
        "retriable-status-codes,503",
        "  route 1: *",
        "    -> reviews v1 (127.0.0.1:9081)",
        "    timeout 2s",
        "  1 tcp route(s), not served: no listener is tcp",
        f"  {path}:18:5: warning: spec.http[0].mirrorPercent: `mirrorPercent` is deprecated "
        "(by Istio); use `mirrorPercentage: {value: ...}`",
        f"  {path}:22:3: warning: spec.tcp: `tcp` routes serve connections on listeners with "
        "`protocol: tcp` (written, or from a service port declared TCP), and no listener "
        "has it: these routes take no connection",
        f"  {path}:23:34: warning: spec.tcp[0].route[0].destination.host: host `db` is "
        "declared by no ServiceEntry or Service visible from namespace `default` (in a route "
        "not served)",
        "",
        "warnings:",
        f"  {path}:44:7: warning: kind: `Sidecar` skipped: pymirror reads VirtualService, "
        "DestinationRule, ServiceEntry and Gateway (networking.istio.io) and MirrorProxy",
        "",
        out.splitlines()[-1],
    ]
    assert out.splitlines()[-1].startswith("ok: config version ")
    assert out.splitlines()[-1].endswith(" (4 warnings)")


def test_json_says_the_same(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "istio.yaml"
    path.write_text(ISTIO)
    code, out, _ = run(capsys, "--format", "json", str(path))
    report = json.loads(out)
    assert (code, report["ok"]) == (0, True)
    (vs,) = report["virtualServices"]
    assert (vs["subject"], vs["namespace"], vs["hosts"]) == (
        "VirtualService default/reviews",
        "default",
        ["reviews"],
    )
    first = vs["routes"][0]
    assert [
        (d["subset"], d["weight"], d["percent"], d["endpoints"]) for d in first["destinations"]
    ] == [
        ("v1", 80, 80.0, ["127.0.0.1:9081"]),
        ("v2", 20, 20.0, ["127.0.0.1:9082"]),
    ]
    assert first["mirrors"] == [
        {"host": "reviews", "subset": "v2", "endpoints": ["127.0.0.1:9082"], "percent": 5.0}
    ]
    assert vs["routes"][1]["retries"] is None and vs["routes"][1]["timeout_ms"] == 2000
    assert [p["code"] for p in vs["problems"]] == ["deprecated", "not-served", "unknown-host"]
    assert {p["code"] for p in report["problems"]} == {
        "deprecated",
        "not-served",
        "unknown-host",
        "skipped",
    }


def test_the_seed_lone_mirror_entry_is_rejected_naming_file_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "vs.yaml"
    path.write_text(
        "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\n"
        "metadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n"
        "  - mirror:\n      host: reviews\n      subset: v2\n    mirrorPercent: 20\n"
    )
    code, _, err = run(capsys, str(path))
    assert code == 1
    assert err.splitlines() == [
        "pymirror: configuration error",
        f"{path}:7:5: spec.http[0]: an http entry needs `route`, `redirect` or "
        "`directResponse`; a mirror only copies what a `route` serves",
    ]


def test_a_misspelt_field_is_rejected_naming_field_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "istio.yaml"
    path.write_text(ISTIO.replace("mirrorPercent: 5", "mirrorPercnt: 5"))
    code, out, err = run(capsys, "--format", "text", str(path))
    assert code == 1
    assert f"{path}:18:5: spec.http[0].mirrorPercnt: unknown field `mirrorPercnt`" in err
    # The broken resource is left out; the rest is still reported.
    assert "warning: kind: `Sidecar` skipped" in out
    code, out, _ = run(capsys, "--format", "json", str(path))
    report = json.loads(out)
    assert (code, report["ok"]) == (1, False)
    [error] = [p for p in report["problems"] if p["severity"] == "error"]
    assert (error["line"], error["column"], error["path"]) == (18, 5, "spec.http[0].mirrorPercnt")


def test_the_native_seed_checks_as_before(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(SEED))
    assert code == 0
    assert "    mirror 20% -> reviews v2 (127.0.0.1:9082)" in out.splitlines()


def test_missing_files_are_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, str(tmp_path / "nope.yaml"))
    assert code == 1
    assert f"{tmp_path / 'nope.yaml'}: no such file or folder" in err


def test_a_connect_route_says_what_its_tunnels_get(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(
        """\
listeners: [{address: 127.0.0.1:8080}]
services:
  reviews: {endpoints: [{address: 127.0.0.1:9080}]}
virtualServices:
  - name: reviews
    hosts: [reviews]
    http:
      - name: tunnel
        match: [{method: {exact: CONNECT}}]
        route: [{destination: {host: reviews}}]
      - name: plain
        route: [{destination: {host: reviews}}]
"""
    )
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    tunnel, plain = out.split("route tunnel: CONNECT\n")[1].split("route plain: *\n")
    assert "CONNECT tunnels: bytes spliced to the destination, no retries or rewrites" in tunnel
    assert "CONNECT" not in plain


def test_tcp_routes_are_shown_with_their_mirrors_however_declared(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(
        """\
listeners: [{address: 127.0.0.1:6380, protocol: tcp}]
services:
  redis: {endpoints: [{address: 127.0.0.1:6379}]}
  redis-next: {endpoints: [{address: 127.0.0.1:6381}]}
virtualServices:
  - name: redis
    hosts: [redis]
    tcp:
      - match: [{port: 6380}]
        route: [{destination: {host: redis}}]
      - route: [{destination: {host: redis-next}}]
tcpMirrors:
  - {virtualService: redis, route: 0, mirror: {host: redis-next}, mirrorPercentage: {value: 25}}
"""
    )
    code, out, _ = run(capsys, str(path))
    assert code == 0
    assert [line for line in out.splitlines() if "tcp route" in line] == [
        "  tcp route 0: tcp port 6380 -> redis (127.0.0.1:6379); "
        "mirror 25% -> redis-next (127.0.0.1:6381)",
        "  tcp route 1: tcp * -> redis-next (127.0.0.1:6381)",
    ]
