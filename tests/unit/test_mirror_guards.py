"""Mirror guards and copy-only header operations from configuration (pymirror extensions):
inline on `mirror` / `mirrors[]`, `mirrorDefaults`, and `mirrorPolicies` (a MirrorProxy's,
for Istio resources). What each resolves to, and every error with file:line:col."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from pymirror.config import load, load_config
from pymirror.resolve import build_snapshot, describe

SERVICES = """\
listeners: [{address: 127.0.0.1:8080}]
services:
  reviews:
    endpoints:
      - {address: 127.0.0.1:9081, labels: {version: v1}}
      - {address: 127.0.0.1:9082, labels: {version: v2}}
    subsets: {v1: {version: v1}, v2: {version: v2}}
"""


def native(mirror: str = "mirror: {host: reviews, subset: v2}", extra: str = "") -> str:
    """Two routes, `main` (whose mirror part is ``mirror``) and unnamed `1` (a plain
    mirror); ``extra`` adds top-level keys."""
    return (
        SERVICES
        + textwrap.dedent(extra)
        + """\
virtualServices:
  - name: reviews
    hosts: [reviews]
    http:
      - name: main
        match: [{uri: {prefix: /main}}]
        route: [{destination: {host: reviews, subset: v1}}]
"""
        + textwrap.indent(textwrap.dedent(mirror).rstrip("\n") + "\n", " " * 8)
        + """\
      - route: [{destination: {host: reviews, subset: v1}}]
        mirror: {host: reviews, subset: v2}
"""
    )


def mirrors(text: str) -> list[list[dict[str, Any]]]:
    """Each route's mirrors, as guards: (only_idempotent, after_primary_success, headers)."""
    s = build_snapshot(load_config(text))
    return [
        [
            {
                "idempotent": m["only_idempotent"],
                "after": m["after_primary_success"],
                "headers": {
                    "remove": m["request_headers"]["remove"],
                    "set": {h["name"]: h["value"] for h in m["request_headers"]["set"]},
                    "add": {h["name"]: h["value"] for h in m["request_headers"]["add"]},
                },
            }
            for m in route["mirrors"]
        ]
        for route in s["virtual_hosts"][0]["routes"]
    ]


def guard(
    idempotent: bool = False,
    after: bool = False,
    remove: tuple[str, ...] = (),
    set_: dict[str, str] | None = None,
    add: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "idempotent": idempotent,
        "after": after,
        "headers": {"remove": list(remove), "set": set_ or {}, "add": add or {}},
    }


PLAIN = guard()
STRIP = {"headers": {"request": {"remove": ["authorization", "cookie"]}}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(native(), [[PLAIN], [PLAIN]], id="none-by-default"),
        pytest.param(
            native("""\
                mirror:
                  host: reviews
                  subset: v2
                  onlyIdempotent: true
                  afterPrimarySuccess: true
                  headers:
                    request:
                      remove: [Authorization, cookie]
                      set: {x-shadow: "1"}
                      add: {x-note: copy}
                """),
            [
                [
                    guard(
                        True,
                        True,
                        ("authorization", "cookie"),
                        {"x-shadow": "1"},
                        {"x-note": "copy"},
                    )
                ],
                [PLAIN],
            ],
            id="inline-on-mirror",
        ),
        pytest.param(
            native("""\
                mirrors:
                  - destination: {host: reviews, subset: v2}
                    only_idempotent: true
                  - destination: {host: reviews, subset: v1}
                    percentage: {value: 50}
                    headers: {request: {remove: [cookie]}}
                """),
            [[guard(True), guard(remove=("cookie",))], [PLAIN]],
            id="per-entry-of-mirrors-snake-case-too",
        ),
        pytest.param(
            native(
                extra="""\
                mirrorDefaults:
                  onlyIdempotent: true
                  headers: {request: {remove: [authorization], set: {x-shadow: "1"}}}
                """
            ),
            [[guard(True, remove=("authorization",), set_={"x-shadow": "1"})]] * 2,
            id="mirror-defaults-apply-to-every-mirror",
        ),
        pytest.param(
            native(
                """\
                mirror:
                  host: reviews
                  subset: v2
                  onlyIdempotent: false
                  headers: {request: {remove: [cookie], set: {x-shadow: main}}}
                """,
                extra="""\
                mirrorDefaults:
                  onlyIdempotent: true
                  afterPrimarySuccess: true
                  headers: {request: {remove: [authorization], set: {x-shadow: "1"}}}
                """,
            ),
            [
                [guard(False, True, ("authorization", "cookie"), {"x-shadow": "main"})],
                [guard(True, True, ("authorization",), {"x-shadow": "1"})],
            ],
            id="a-mirror-overrides-guards-and-adds-to-default-header-operations",
        ),
        pytest.param(
            native(
                extra="""\
                mirrorPolicies:
                  - {virtualService: reviews, afterPrimarySuccess: true}
                  - virtualService: reviews
                    route: main
                    onlyIdempotent: true
                    headers: {request: {remove: [authorization, cookie]}}
                """
            ),
            [[guard(True, True, ("authorization", "cookie"))], [guard(after=True)]],
            id="policies-by-virtual-service-and-by-route",
        ),
        pytest.param(
            native(
                "mirror: {host: reviews, subset: v2, afterPrimarySuccess: false}",
                extra="""\
                mirrorPolicies:
                  - {virtualService: reviews, route: "1", onlyIdempotent: true}
                  - {virtualService: reviews, route: main, afterPrimarySuccess: true}
                """,
            ),
            [[PLAIN], [guard(True)]],
            id="inline-beats-policy-and-an-unnamed-route-is-named-by-index",
        ),
    ],
)
def test_guards_resolve(text: str, expected: list[list[dict[str, Any]]]) -> None:
    assert load(text).problems == []
    assert mirrors(text) == expected


def errors(text: str, *, strict: bool = True) -> list[str]:
    return [str(p) for p in load(text, strict=strict).problems if p.severity == "error"]


# `native()` puts the mirror part of route `main` at line 15, column 9 (`extra` at line 8).
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            native("mirror: {host: reviews, subset: v2, onlyIdempotnt: true}"),
            "<string>:15:45: virtualServices[0].http[0].mirror.onlyIdempotnt: unknown field "
            "`onlyIdempotnt`; did you mean `onlyIdempotent`?",
            id="typo",
        ),
        pytest.param(
            native("mirror: {host: reviews, subset: v2, onlyIdempotent: yes please}"),
            "<string>:15:61: virtualServices[0].http[0].mirror.onlyIdempotent: expected `true` "
            "or `false`, got text 'yes please'",
            id="not-a-boolean",
        ),
        pytest.param(
            native("mirror: {host: reviews, subset: v2, headers: {response: {remove: [a]}}}"),
            "<string>:15:55: virtualServices[0].http[0].mirror.headers.response: a copy's "
            "response is dropped, so a mirror has only `request` operations",
            id="response-operations",
        ),
        pytest.param(
            native("mirror: {host: reviews, subset: v2, headers: {request: {remove: [Host]}}}"),
            "<string>:15:74: virtualServices[0].http[0].mirror.headers.request.remove[0]: a copy "
            "needs a Host; change it with `set` or `mirrorDefaults.hostSuffix`",
            id="host-removed",
        ),
        pytest.param(
            native("mirror: {host: reviews, subset: v2, headers: {request: {set: {'a b': x}}}}"),
            "<string>:15:71: virtualServices[0].http[0].mirror.headers.request.set['a b']: not a "
            "valid HTTP header name: 'a b'",
            id="bad-header-name",
        ),
        pytest.param(
            native(extra="mirrorDefaults: {afterPrimarySuccess: 1}\n"),
            "<string>:8:39: mirrorDefaults.afterPrimarySuccess: expected `true` or `false`, got "
            "the number 1",
            id="defaults-not-a-boolean",
        ),
        pytest.param(
            native(extra="mirrorPolicies: [{virtualService: ratings, onlyIdempotent: true}]\n"),
            "<string>:8:35: mirrorPolicies[0].virtualService: no virtual service `ratings` in "
            "the files given (known: `reviews`)",
            id="unknown-virtual-service",
        ),
        pytest.param(
            native(extra="mirrorPolicies: [{virtualService: reviews, route: mian}]\n"),
            "<string>:8:51: mirrorPolicies[0].route: virtual service `reviews` has no http route "
            "`mian` (its routes: `main`, `1`)",
            id="unknown-route",
        ),
        pytest.param(
            native(
                extra="""\
                mirrorPolicies:
                  - {virtualService: reviews, onlyIdempotent: true}
                  - {virtualService: reviews, onlyIdempotent: false}
                """
            ),
            "<string>:10:5: mirrorPolicies[1]: `reviews` already has a mirror policy at "
            "<string>:9:22",
            id="duplicate-policy",
        ),
        pytest.param(
            native(extra="mirrorPolicies: [{route: main, onlyIdempotent: true}]\n"),
            "<string>:8:18: mirrorPolicies[0].virtualService: missing required field "
            "`virtualService`",
            id="policy-needs-a-virtual-service",
        ),
    ],
)
def test_guard_errors_name_file_line_column_and_field(text: str, expected: str) -> None:
    assert errors(text) == [expected]


def test_a_policy_for_routes_without_mirrors_is_a_warning() -> None:
    text = native("", extra="mirrorPolicies: [{virtualService: reviews, route: main}]\n")
    assert [str(p) for p in load(text).problems] == [
        "<string>:8:18: warning: mirrorPolicies[0]: applies to no mirror: route `main` of "
        "`reviews` has `mirror` or `mirrors`"
    ]


def test_check_describes_the_guards() -> None:
    text = native(
        "mirror: {host: reviews, subset: v2, onlyIdempotent: true}",
        extra="mirrorDefaults: {headers: {request: {remove: [cookie], set: {x-shadow: '1'}}}}\n",
    )
    [line] = [x for x in describe(load_config(text)) if x.startswith("reviews/main:")]
    assert line.endswith(
        "mirror 100% -> reviews v2 (127.0.0.1:9082) (only idempotent, headers -cookie =x-shadow)"
    )


# === Istio resources: a MirrorProxy's `mirrorPolicies` ===

PROXY = """\
apiVersion: pymirror.dev/v1alpha1
kind: MirrorProxy
metadata: {name: proxy, namespace: shop}
spec:
  listeners: [{address: 127.0.0.1:8080}]
"""
VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - name: api
    route:
    - destination: {host: reviews, subset: v1}
    mirror: {host: reviews, subset: v2}
"""
SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  ports: [{number: 9080, name: http}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: 9081}, labels: {version: v1}}
  - {address: 127.0.0.1, ports: {http: 9082}, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


def resources(policies: str, vs: str = VS) -> str:
    body = textwrap.indent(textwrap.dedent(policies).rstrip("\n") + "\n", "  ")
    return "---\n".join([PROXY + "  mirrorPolicies:\n" + body, vs, SERVICE])


@pytest.mark.parametrize(
    "reference",
    [
        "virtualService: reviews",
        "virtualService: shop/reviews",
        "virtualService: reviews, route: api",
    ],
)
def test_mirror_proxy_policies_apply_to_the_named_virtual_service(reference: str) -> None:
    strip = "headers: {request: {remove: [authorization, cookie]}}"
    text = resources(f"- {{{reference}, onlyIdempotent: true, {strip}}}")
    assert load(text).problems == []
    assert mirrors(text) == [[guard(True, remove=("authorization", "cookie"))]]


@pytest.mark.parametrize(
    ("policies", "expected"),
    [
        pytest.param(
            "- {virtualService: default/reviews, onlyIdempotent: true}",
            "<string>:7:22: spec.mirrorPolicies[0].virtualService: no virtual service "
            "`default/reviews` in the files given (known: `shop/reviews`)",
            id="other-namespace",
        ),
        pytest.param(
            "- {virtualService: ratings, onlyIdempotent: true}",
            "<string>:7:22: spec.mirrorPolicies[0].virtualService: no virtual service "
            "`shop/ratings` in the files given (known: `shop/reviews`)",
            id="unknown-name-in-the-proxys-namespace",
        ),
        pytest.param(
            "- {virtualService: reviews, route: web, onlyIdempotent: true}",
            "<string>:7:38: spec.mirrorPolicies[0].route: virtual service `shop/reviews` has "
            "no http route `web` (its routes: `api`)",
            id="unknown-route",
        ),
        pytest.param(
            "- {virtualService: reviews, onlyIdempotent: 'yes'}",
            "<string>:7:47: spec.mirrorPolicies[0].onlyIdempotent: expected `true` or `false`, "
            "got text 'yes'",
            id="not-a-boolean",
        ),
    ],
)
def test_mirror_proxy_policy_errors(policies: str, expected: str) -> None:
    assert errors(resources(policies)) == [expected]


def test_a_virtual_service_resource_keeps_istios_fields() -> None:
    vs = VS.replace("subset: v2}", "subset: v2, onlyIdempotent: true}")
    found = errors(resources("- {virtualService: reviews}", vs))
    assert (
        "<string>:18:41: spec.http[0].mirror.onlyIdempotent: `onlyIdempotent` is a pymirror "
        "extension, not an Istio field: keep the VirtualService as Istio reads it and set it "
        "in a MirrorProxy's `mirrorPolicies` (`virtualService: shop/reviews`, "
        "`onlyIdempotent: ...`)"
    ) in found


def test_check_is_lenient_about_a_virtual_service_in_a_file_not_given() -> None:
    text = "---\n".join([PROXY + "  mirrorPolicies: [{virtualService: ratings}]\n", VS, SERVICE])
    assert errors(text, strict=False) == []
    assert errors(text) != []


# === compare (a pymirror extension): native and through a MirrorProxy ===


def test_compare_resolves_into_the_snapshot_from_native_and_istio() -> None:
    native = load_config(
        SERVICES
        + """\
virtualServices:
  - name: reviews
    hosts: [reviews]
    http:
      - route: [{destination: {host: reviews, subset: v1}}]
        mirror:
          host: reviews
          subset: v2
          compare: {percentage: {value: 1.5}, maxBodyBytes: 1KiB, ignoreHeaders: [ETag],
                    ignorePaths: [$.ts], redactPaths: [$.email]}
"""
    )
    [m] = build_snapshot(native)["virtual_hosts"][0]["routes"][0]["mirrors"]
    assert m["compare"] == {
        "per_million": 15_000,
        "max_body_bytes": 1024,
        "ignore_headers": ["etag"],
        "ignore_paths": ["$.ts"],
        "redact_headers": [],
        "redact_paths": ["$.email"],
    }
    assert "compare 1.5%" in "\n".join(describe(native))

    istio = load_config(
        resources(
            """\
            - virtualService: shop/reviews
              route: api
              compare: {percentage: {value: 10}}
            """
        )
    )
    [m] = build_snapshot(istio)["virtual_hosts"][0]["routes"][0]["mirrors"]
    assert m["compare"] is not None
    assert (m["compare"]["per_million"], m["compare"]["max_body_bytes"]) == (100_000, 64 * 1024)


def test_compare_is_not_an_istio_field_on_a_virtual_service() -> None:
    vs = VS.replace(
        "mirror: {host: reviews, subset: v2}",
        "mirror: {host: reviews, subset: v2, compare: {percentage: {value: 1}}}",
    )
    found = errors("---\n".join([PROXY, vs, SERVICE]))
    assert any("`compare` is a pymirror extension" in e for e in found), found


def grpc_methods(text: str) -> list[list[list[str] | None]]:
    """Each route's mirrors' `grpc_methods` (None: the key is left out of the snapshot)."""
    s = build_snapshot(load_config(text))
    return [[m.get("grpc_methods") for m in r["mirrors"]] for r in s["virtual_hosts"][0]["routes"]]


def test_grpc_methods_resolve_from_the_mirror_then_the_defaults() -> None:
    inline = """\
        mirror: {host: reviews, subset: v2, onlyIdempotent: true, grpcMethods: [/a.B/Get]}
        """
    assert grpc_methods(native(inline)) == [[["/a.B/Get"]], [None]]
    defaults = "mirrorDefaults: {onlyIdempotent: true, grpcMethods: [/a.B/, /c.D/Put]}\n"
    assert grpc_methods(native(inline, extra=defaults)) == [
        [["/a.B/Get"]],
        [["/a.B/", "/c.D/Put"]],
    ]
    # None written anywhere: nothing in the snapshot.
    assert grpc_methods(native()) == [[None], [None]]
    described = describe(load_config(native(inline)))
    assert "only idempotent and gRPC /a.B/Get" in "\n".join(described)


@pytest.mark.parametrize("bad", ["a.B/Get", "/a.B", "/a.B/Get/x", "/ a/Get", "//Get"])
def test_a_malformed_grpc_method_is_an_error_with_its_place(bad: str) -> None:
    text = native(f"mirror: {{host: reviews, subset: v2, grpcMethods: ['{bad}']}}")
    [error] = errors(text)
    assert error.startswith("<string>:15:59: virtualServices[0].http[0].mirror.grpcMethods[0]: ")
    assert "mirror.grpcMethods[0]" in error
    assert "/package.Service/Method" in error and repr(bad) in error
