"""Istio's resources (and pymirror's MirrorProxy) load into the same model as the native
format: multi-document streams, files and folders, kinds skipped with a warning,
namespaces, DestinationRule and ServiceEntry semantics, what is reported as not served."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pymirror.config import ConfigError, load, load_config
from pymirror.resolve import build_snapshot

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "config" / "reviews.yaml"

PROXY = """\
apiVersion: pymirror.dev/v1alpha1
kind: MirrorProxy
metadata: {name: proxy}
spec:
  listeners: [{address: 127.0.0.1:8080, host: reviews}]
  admin: {address: 127.0.0.1:9901}
"""
VS = """\
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
    mirror: {host: reviews, subset: v2}
    mirrorPercentage: {value: 20.0}
"""
DR = """\
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""
SE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: reviews
spec:
  hosts: [reviews]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: 9081}, labels: {version: v1}}
  - {address: 127.0.0.1, ports: {http: 9082}, labels: {version: v2}}
"""
SEED_RESOURCES = "---\n".join([PROXY, VS, DR, SE])


def messages(text: str, *, strict: bool = True, severity: str = "error") -> list[str]:
    return [str(p) for p in load(text, strict=strict).problems if p.severity == severity]


def test_the_seed_as_resources_runs_what_the_native_seed_runs() -> None:
    native = build_snapshot(load_config(SEED))
    resources = build_snapshot(load_config(SEED_RESOURCES))
    assert resources["clusters"] == native["clusters"]
    assert resources["listeners"] == native["listeners"]
    [vh], [native_vh] = resources["virtual_hosts"], native["virtual_hosts"]
    assert vh["routes"] == native_vh["routes"]
    # `reviews` in namespace `default` also answers to its Kubernetes names.
    assert vh["domains"] == [
        "reviews",
        "reviews.default",
        "reviews.default.svc",
        "reviews.default.svc.cluster.local",
    ]


def test_files_and_folders_of_resources(tmp_path: Path) -> None:
    for name, text in [("a-proxy.yaml", PROXY), ("b-vs.yaml", VS), ("c-dr.yml", DR + "---\n" + SE)]:
        (tmp_path / name).write_text(text)
    by_folder = build_snapshot(load_config(tmp_path))
    by_files = build_snapshot(load_config(*sorted(tmp_path.iterdir())))
    assert by_folder == by_files == build_snapshot(load_config(SEED_RESOURCES))


def test_native_format_and_resources_mix() -> None:
    native = SEED.read_text().split("virtualServices:")[0]
    config = load_config(native + "---\n" + VS)
    (vs,) = config.virtual_services
    assert (vs.namespace, config.source(0)) == ("default", "VirtualService default/reviews")
    # The native `reviews` service serves the resource's destinations.
    assert build_snapshot(config)["clusters"][0]["endpoints"] == ["127.0.0.1:9081"]


def test_other_kinds_are_skipped_with_one_warning_each() -> None:
    text = (
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: sc}\nspec: {}\n"
        "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {}\n---\n" + VS
    )
    loaded = load(text, strict=False)
    skipped = [(p.line, p.column, p.message) for p in loaded.problems if p.code == "skipped"]
    assert skipped == [
        (
            2,
            7,
            "`Sidecar` skipped: pymirror reads VirtualService, DestinationRule, ServiceEntry and "
            "Gateway (networking.istio.io) and MirrorProxy",
        ),
        (
            7,
            7,
            "`Deployment` skipped: pymirror reads VirtualService, DestinationRule, "
            "ServiceEntry and Gateway (networking.istio.io) and MirrorProxy",
        ),
    ]
    assert loaded.config is not None and len(loaded.config.virtual_services) == 1


def test_a_resource_needs_a_name_and_known_top_level_fields() -> None:
    text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {}\nspec: {}\n"
    assert messages(text) == ["<string>:3:11: metadata.name: a resource needs `metadata.name`"]
    text = VS.replace("spec:", "spek:")
    assert messages(text) == [
        "<string>:5:1: spek: unknown field `spek`; expected `apiVersion`, `kind`, `metadata`, "
        "`spec`, `status`"
    ]


def test_namespaces_qualify_short_hosts_and_destinations() -> None:
    vs = VS.replace("  name: reviews\n", "  name: reviews\n  namespace: shop\n")
    se = SE.replace("  name: reviews\n", "  name: reviews\n  namespace: shop\n")
    dr = DR.replace("  host: reviews\n", "  host: reviews.shop.svc.cluster.local\n")
    dr = dr.replace("  name: reviews\n", "  name: reviews\n  namespace: shop\n")
    vs = vs.replace(
        "{host: reviews, subset: v2}", "{host: reviews.shop.svc.cluster.local, subset: v2}"
    )
    s = build_snapshot(load_config("---\n".join([PROXY, vs, dr, se])))
    assert s["virtual_hosts"][0]["domains"] == [
        "reviews",
        "reviews.shop",
        "reviews.shop.svc",
        "reviews.shop.svc.cluster.local",
    ]
    # Both spellings of the destination reach the ServiceEntry's endpoints and the rule.
    assert [(c["host"], c["subset"], c["endpoints"]) for c in s["clusters"]] == [
        ("reviews", "v1", ["127.0.0.1:9081"]),
        ("reviews", "v2", ["127.0.0.1:9082"]),
    ]


def test_a_host_written_alike_in_two_namespaces_is_keyed_by_its_full_name() -> None:
    other = SE.replace("  name: reviews\n", "  name: reviews\n  namespace: other\n")
    other = other.replace("9081", "7081").replace("9082", "7082")
    config = load_config("---\n".join([PROXY, VS, DR, SE, other]))
    assert sorted(config.services) == [
        "reviews.default.svc.cluster.local",
        "reviews.other.svc.cluster.local",
    ]
    assert build_snapshot(config)["clusters"][0]["endpoints"] == ["127.0.0.1:9081"]


def test_destination_rule_policies() -> None:
    dr = DR.replace(
        "  subsets:\n",
        "  trafficPolicy:\n"
        "    loadBalancer: {simple: LEAST_REQUEST}\n"
        "    connectionPool: {tcp: {maxConnections: 50}, http: {http2MaxRequests: 80}}\n"
        "    outlierDetection: {consecutive5xxErrors: 3, interval: 5s, minHealthPercent: 50}\n"
        "  subsets:\n",
    ).replace(
        "{name: v2, labels: {version: v2}}",
        "{name: v2, labels: {version: v2}, trafficPolicy: {loadBalancer: {simple: RANDOM}}}",
    )
    loaded = load("---\n".join([PROXY, VS, dr, SE]))
    assert loaded.config is not None
    clusters = build_snapshot(loaded.config)["clusters"]
    policies = [(c["subset"], c["load_balancer"], c["max_requests"]) for c in clusters]
    # The subset's loadBalancer replaces the rule's; its connectionPool is the rule's.
    assert policies == [("v1", "least_request", 50), ("v2", "random", 50)]
    # outlierDetection is served, with Istio's defaults for what is not written.
    assert [c.get("outlier_detection") for c in clusters] == [
        {
            "consecutive_5xx": 3,
            "consecutive_gateway_errors": 0,
            "interval_ms": 5_000,
            "base_ejection_time_ms": 30_000,
            "max_ejection_percent": 10,
        }
    ] * 2
    assert [str(p) for p in loaded.warnings] == [
        "<string>:29:63: warning: spec.trafficPolicy.outlierDetection.minHealthPercent: "
        "`minHealthPercent` is accepted but not served yet"
    ]


def test_service_entry_ports_resolution_and_weights() -> None:
    se = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin}
spec:
  hosts: [httpbin.example]
  ports:
  - {number: 80, name: http}
  - {number: 8443, name: alt, targetPort: 9443}
  resolution: DNS
  endpoints:
  - {address: a.example, weight: 3}
  - {address: 10.0.0.2, ports: {alt: 7443}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external}
spec:
  hosts: [api.example]
  ports: [{number: 443, name: https}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin}
spec:
  hosts: [httpbin.example]
  http:
  - route:
    - destination: {host: httpbin.example, port: {number: 80}}
      weight: 1
    - destination: {host: httpbin.example, port: {number: 8443}}
      weight: 1
    mirror: {host: api.example}
"""
    s = build_snapshot(load_config(se), listen=["127.0.0.1:0"])
    assert [(c["endpoints"], c["weights"]) for c in s["clusters"]] == [
        (["a.example:80", "10.0.0.2:80"], [3, 1]),
        # The endpoint's own port for `alt` first, then the port's targetPort.
        (["a.example:9443", "10.0.0.2:7443"], [3, 1]),
        # DNS without endpoints: the host itself, on the only port.
        (["api.example:443"], []),
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("resolution: DNS", "resolution: STATIC"),
            "<string>:11:15: spec.endpoints[0].address: with resolution STATIC, an endpoint "
            "address is an IP address (got 'a.example')",
        ),
        (
            ("resolution: DNS", "resolution: NONE"),
            "<string>:10:3: spec.endpoints: resolution NONE takes no `endpoints`",
        ),
        (
            ("{number: 8443, name: alt", "{number: 8443, name: http"),
            "<string>:8:26: spec.ports[1].name: port name `http` is already defined",
        ),
        (
            ("ports: {alt: 7443}", "ports: {alt2: 7443}"),
            "<string>:12:33: spec.endpoints[1].ports.alt2: no port of this ServiceEntry is named "
            "`alt2`",
        ),
    ],
)
def test_service_entry_validation(change: tuple[str, str], expected: str) -> None:
    text = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin}
spec:
  hosts: [httpbin.example]
  ports:
  - {number: 80, name: http}
  - {number: 8443, name: alt, targetPort: 9443}
  resolution: DNS
  endpoints:
  - {address: a.example, weight: 3}
  - {address: 10.0.0.2, ports: {alt: 7443}}
"""
    assert messages(text) == []
    assert messages(text.replace(*change)) == [expected]


def test_mirror_proxy_carries_listeners_admin_upstream_and_mirror_defaults() -> None:
    proxy = (
        PROXY
        + "  upstream: {connectTimeout: 2s}\n  mirrorDefaults: {maxInFlight: 8}\n"
        + "  limits: {maxConnections: 7}\n"
    )
    config = load_config("---\n".join([proxy, VS, DR, SE]))
    assert [lst.address for lst in config.listeners] == ["127.0.0.1:8080"]
    assert config.admin is not None and config.admin.address == "127.0.0.1:9901"
    assert config.mirror_defaults.max_in_flight == 8
    assert config.limits.max_connections == 7
    assert messages(PROXY + "  services: {}\n") == [
        "<string>:7:3: spec.services: unknown field `services`; a MirrorProxy holds "
        "`listeners`, `admin`, `upstream`, `mirrorDefaults`, `mirrorPolicies`, `tcpMirrors`, "
        "`limits` (routes and services are VirtualService, DestinationRule and ServiceEntry "
        "resources)"
    ]
    assert messages(PROXY.replace("127.0.0.1:8080", "localhost:8080")) == [
        "<string>:5:25: spec.listeners[0].address: expected an IP address and port to listen "
        "on, such as `0.0.0.0:8080` or `127.0.0.1:8080` (got 'localhost:8080')"
    ]


def test_errors_name_the_file_and_the_resource_path(tmp_path: Path) -> None:
    path = tmp_path / "vs.yaml"
    path.write_text("---\n".join([VS.replace("value: 20.0", "value: 200"), DR, SE]))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [str(p) for p in info.value.problems] == [
        f"{path}:11:31: spec.http[0].mirrorPercentage.value: must be <= 100 (got 200)"
    ]
    assert info.value.problems[0].subject == "VirtualService default/reviews"


def test_tcp_routes_without_a_tcp_listener_are_reported_at_check_and_at_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tcp = VS.replace(
        "  http:\n",
        "  tcp:\n  - match: [{port: 3306}]\n    route: [{destination: {host: db}}]\n  http:\n",
    )
    text = "---\n".join([PROXY, tcp, DR, SE])
    expected = [
        "<string>:14:3: warning: spec.tcp: `tcp` routes serve connections on listeners with "
        "`protocol: tcp` (written, or from a service port declared TCP), and no listener "
        "has it: these routes take no connection"
    ]
    not_served = [str(p) for p in load(text, strict=False).warnings if p.code == "not-served"]
    assert not_served == expected
    with caplog.at_level(logging.WARNING, logger="pymirror.config"):
        load_config(text)  # what `pymirror run` and SIGHUP reloads call
    assert expected[0] in caplog.messages


def test_mesh_only_and_unsupported_fields_are_warnings() -> None:
    vs = VS.replace("  hosts: [reviews]\n", "  hosts: [reviews]\n  gateways: [mesh]\n").replace(
        "  - route:\n",
        "  - match: [{sourceLabels: {app: web}, headers: {uri: {exact: /x}}}]\n"
        "    corsPolicy: {allowOrigins: [{exact: 'https://a.example'}]}\n"
        "    route:\n",
    )
    loaded = load("---\n".join([PROXY, vs, DR, SE]))
    assert loaded.errors == []
    # `gateways: [mesh]` is what serving on the listeners that are no gateway's means.
    assert [(p.code, p.line, p.column) for p in loaded.warnings] == [
        ("not-applicable", 16, 14),  # match sourceLabels
        ("ignored", 16, 50),  # `uri` as a header key
        ("not-served", 17, 5),  # corsPolicy
    ]


def test_subset_references_check_is_lenient_run_is_strict() -> None:
    # No DestinationRule in the files given: perhaps in another file (`check`), but `run`
    # cannot serve it.
    text = "---\n".join([PROXY, VS, SE])
    expected = (
        "spec.http[0].route[0].destination.subset: no DestinationRule for host `reviews` in the "
        "files given defines subset `v1`"
    )
    assert f"<string>:16:44: warning: {expected}" in messages(
        text, strict=False, severity="warning"
    )
    assert f"<string>:16:44: {expected}" in messages(text)
    # A rule that is given but lacks the subset is an error either way.
    text = "---\n".join([PROXY, VS.replace("subset: v2", "subset: v3"), DR, SE])
    expected = (
        "<string>:17:37: spec.http[0].mirror.subset: DestinationRule default/reviews (host "
        "`reviews`) has no subset `v3` (its subsets: `v1`, `v2`)"
    )
    assert messages(text, strict=False) == messages(text) == [expected]


def test_subsets_need_endpoints_with_their_labels() -> None:
    # A rule without ServiceEntry: the endpoints would come from Kubernetes.
    text = "---\n".join([PROXY, VS, DR])
    assert [p.code for p in load(text).errors] == ["no-endpoints", "no-endpoints"]
    assert [p.code for p in load(text, strict=False).errors] == []
    # A ServiceEntry whose endpoints lack the labels: an error at once.
    text = "---\n".join([PROXY, VS, DR, SE.replace("{version: v2}", "{version: v9}")])
    assert messages(text) == [
        "<string>:17:37: spec.http[0].mirror.subset: subset `v2` selects no endpoint: no "
        "endpoint of ServiceEntry default/reviews has the labels {version: v2}"
    ]


def test_delegates_are_served_through_their_parent() -> None:
    root = VS.replace(
        "  - route:\n    - destination: {host: reviews, subset: v1}\n",
        "  - match: [{uri: {prefix: /api}}]\n    delegate: {name: reviews-api}\n"
        "  - route:\n    - destination: {host: reviews, subset: v1}\n",
    )
    delegate = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-api}
spec:
  http:
  - match: [{uri: {prefix: /api/v2}}, {uri: {prefix: /other}}]
    route: [{destination: {host: reviews, subset: v2}}]
"""
    s = build_snapshot(load_config("---\n".join([PROXY, root, delegate, DR, SE])))
    (vh,) = s["virtual_hosts"]
    api, rest = vh["routes"]
    assert api["name"] == "0/reviews-api/0"
    # The root's /api narrows the delegate's matches: /other can never match under it.
    assert [m["uri"] for m in api["matches"]] == [{"prefix": "/api/v2"}]
    assert rest["name"] == "1"


def test_unresolved_and_unused_delegates() -> None:
    root = VS.replace(
        "  - route:\n",
        "  - match: [{uri: {prefix: /api}}]\n    delegate: {name: gone}\n  - route:\n",
    )
    text = "---\n".join([PROXY, root, DR, SE])
    expected = (
        "spec.http[0].delegate.name: no virtual service `gone` in namespace `default` in the "
        "files given: this entry serves nothing"
    )
    assert messages(text) == [f"<string>:16:22: {expected}"]
    assert messages(text, strict=False, severity="warning") == [
        f"<string>:16:22: warning: {expected}"
    ]
    unused = VS.replace("  hosts: [reviews]\n", "").replace("name: reviews\n", "name: lonely\n")
    assert messages("---\n".join([PROXY, VS, unused, DR, SE]), severity="warning") == [
        "<string>:23:9: warning: metadata.name: not served: a virtual service without `hosts` "
        "is a delegate, and no `delegate` names it"
    ]


def test_unreachable_rules_and_ineffective_matches_as_istio_warns() -> None:
    vs = VS.replace(
        "  - route:\n",
        "  - match: [{uri: {prefix: /a}}]\n"
        "    route: [{destination: {host: reviews, subset: v1}}]\n"
        "  - match: [{name: again, uri: {prefix: /a}}]\n"
        "    route: [{destination: {host: reviews, subset: v2}}]\n"
        "  - route: [{destination: {host: reviews, subset: v1}}]\n"
        "  - route:\n",
    )
    loaded = load("---\n".join([PROXY, vs, DR, SE]))
    assert [(p.code, p.line, p.message) for p in loaded.warnings] == [
        ("unreachable-rule", 17, "rule 1 is unreachable: earlier rules have all its matches"),
        ("ineffective-match", 17, "this match is ineffective: rule 0 has the same one"),
        ("unreachable-rule", 20, "rule 3 is unreachable: only the last rule can have no match"),
    ]
