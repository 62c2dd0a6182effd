"""`check`'s misroute warnings (plain model, a stand-in DNS): a mirror aimed at the
primary's own endpoints, by its service or by a subset selecting them, and a host no
services entry declares that DNS does not resolve."""

from __future__ import annotations

from pymirror.config import load_config
from pymirror.config.validate import locate
from pymirror.resolve.misroutes import misroutes, unresolved

CONFIG = """
listeners: [{address: 127.0.0.1:0}]
services:
  reviews:
    endpoints:
      - {address: "127.0.0.1:9081", labels: {version: v1, track: stable}}
      - {address: "127.0.0.1:9082", labels: {version: v2}}
    subsets: {v1: {version: v1}, stable: {track: stable}, v2: {version: v2}}
virtualServices:
  - name: reviews
    hosts: [reviews]
    http:
      - match: [{headers: {x-a: {exact: "1"}}}]
        route: [{destination: {host: reviews, subset: v1}}]
        mirror: {host: reviews, subset: stable}
      - match: [{headers: {x-b: {exact: "1"}}}]
        route: [{destination: {host: reviews, subset: v1}, weight: 80},
                {destination: {host: reviews, subset: v2}, weight: 20}]
        mirror: {host: reviews, subset: v2}
      - route: [{destination: {host: reviews, subset: v1}}]
        mirror: {host: reviewz}
"""


def test_a_mirror_onto_the_primarys_endpoints_is_flagged_at_the_mirror() -> None:
    config = load_config(CONFIG)
    [found] = locate(config, misroutes(config))
    # `stable` selects v1's endpoint: every copy would reach it a second time.
    assert (found.line, found.column) == (15, 17)
    assert found.path == ("virtualServices", 0, "http", 0, "mirror")
    assert "127.0.0.1:9081" in found.message and found.code == "mirror-is-primary"
    # The 80/20 split's mirror to v2 is not flagged: copying to the canary is a plan.


def test_a_host_that_does_not_resolve_is_flagged_once_per_place() -> None:
    config = load_config(CONFIG)
    asked: list[str] = []

    def dns(host: str) -> str | None:
        asked.append(host)
        return "Name or service not known" if host == "reviewz" else None

    [found] = locate(config, unresolved(config, dns))
    assert found.path == ("virtualServices", 0, "http", 2, "mirror", "host")
    assert "`reviewz` has no services entry and does not resolve" in found.message
    # Hosts with a services entry are never looked up.
    assert asked == ["reviewz"]


def test_a_regex_the_core_refuses_is_an_error_at_its_place() -> None:
    """Python's `re` takes `\\Z`; RE2 and the data plane's engine do not. `check` and
    `Proxy` ask the engine and place its refusal (a real core, no network)."""
    from pymirror import ConfigError, Proxy
    from pymirror.check import check

    text = CONFIG.replace(
        'match: [{headers: {x-a: {exact: "1"}}}]', r"match: [{uri: {regex: '/reviews\Z'}}]"
    )
    report = check([text])
    [error] = report.errors
    assert error.path == ("virtualServices", 0, "http", 0, "match", 0, "uri", "regex")
    assert (error.line, error.column) == (13, 31)
    assert "refused by the data plane's engine" in error.message
    try:
        Proxy(text).start()
    except ConfigError as exc:
        assert [(p.line, p.column) for p in exc.problems] == [(13, 31)]
    else:
        raise AssertionError("the proxy started with a regex its engine refuses")
