"""A listener that writes no `protocol` takes it from the service ports with its port
number, as Istio's sidecar does: TCP-family ports make it tcp, disagreeing ports are an
error, and whatever it writes wins."""

from __future__ import annotations

from typing import Literal

import pytest

from pymirror.check import as_text, check
from pymirror.config import ConfigError, load, load_config
from pymirror.config.model import Config
from pymirror.resolve import build_snapshot, describe


def ports_config(*protocols: str | None) -> Config:
    """Services that each declare port 7000 with one of ``protocols``."""
    return Config.model_validate(
        {
            "services": {
                f"s{i}": {"ports": [{"number": 7000, "name": "p", "protocol": p}]}
                for i, p in enumerate(protocols)
            }
        }
    )


@pytest.mark.parametrize(
    ("protocols", "written", "expected"),
    [
        (["TCP"], None, "tcp"),
        (["REDIS"], None, "tcp"),
        (["mongo"], None, "tcp"),
        (["MySQL"], None, "tcp"),
        (["TCP", "REDIS"], None, "tcp"),
        # A port without a protocol, or with one that is neither family, decides nothing.
        ([None, "TCP"], None, "tcp"),
        (["TLS", "TCP"], None, "tcp"),
        (["HTTP"], None, "http"),
        (["GRPC"], None, "http"),
        ([None], None, "http"),
        ([], None, "http"),
        # Disagreeing ports serve as http (validation reports them).
        (["TCP", "HTTP2"], None, "http"),
        # What the listener writes wins.
        (["TCP"], "http", "http"),
        (["HTTP"], "tcp", "tcp"),
    ],
)
def test_listener_protocol_follows_the_ports_with_its_number(
    protocols: list[str | None], written: Literal["http", "tcp"] | None, expected: str
) -> None:
    config = ports_config(*protocols)
    assert config.listener_protocol("127.0.0.1:7000", written) == expected


def test_other_port_numbers_and_port_0_stay_http() -> None:
    config = ports_config("TCP")
    assert config.listener_protocol("127.0.0.1:7001") == "http"
    assert config.listener_protocol("127.0.0.1:0") == "http"
    assert config.listener_protocol("[::1]:7000") == "tcp"


NATIVE = """\
listeners:
  - {address: 127.0.0.1:8080}
  - {address: 127.0.0.1:6379}
  - {address: 127.0.0.1:0}
services:
  redis:
    ports: [{number: 6379, name: tcp-redis, protocol: TCP}]
    endpoints: [{address: 127.0.0.1, ports: {tcp-redis: 7001}}]
virtualServices:
  - name: redis
    hosts: [redis]
    tcp:
      - route: [{destination: {host: redis}}]
"""


def test_a_native_tcp_service_port_makes_its_listener_tcp() -> None:
    config = load_config(NATIVE)
    s = build_snapshot(config)
    assert s["listeners"] == [
        {"address": "127.0.0.1:8080", "default_virtual_host": None},
        {"address": "127.0.0.1:6379", "default_virtual_host": None, "protocol": "tcp"},
        {"address": "127.0.0.1:0", "default_virtual_host": None},
    ]
    [route] = s["tcp_routes"]
    assert s["clusters"][route["destinations"][0]["cluster"]]["endpoints"] == ["127.0.0.1:7001"]
    assert not [w for w in config.warnings if w.code == "not-served"]
    assert (
        "listener 127.0.0.1:6379 (tcp: port 6379 is declared by service `redis` port "
        "`tcp-redis` (TCP) at <string>:7:55)"
    ) in describe(config)


def test_a_written_protocol_wins_over_the_port() -> None:
    text = NATIVE.replace("127.0.0.1:6379}", "127.0.0.1:6379, protocol: http}")
    config = load_config(text)
    assert all("protocol" not in x for x in build_snapshot(config)["listeners"])
    assert [w.code for w in config.warnings] == ["not-served"]


def test_a_host_on_a_listener_made_tcp_by_its_port_is_an_error() -> None:
    text = NATIVE.replace("127.0.0.1:6379}", "127.0.0.1:6379, host: redis}")
    with pytest.raises(ConfigError) as info:
        load_config(text)
    assert [str(p) for p in info.value.problems] == [
        "<string>:3:31: listeners[1].host: this listener is tcp (port 6379 is declared by "
        "service `redis` port `tcp-redis` (TCP) at <string>:7:55), with no requests to "
        "route by host: remove `host`, or write `protocol: http`"
    ]


def test_disagreeing_native_ports_need_the_protocol_written() -> None:
    text = NATIVE.replace(
        "virtualServices:",
        "  web: {ports: [{number: 6379, name: http, protocol: HTTP}]}\nvirtualServices:",
    )
    with pytest.raises(ConfigError) as info:
        load_config(text)
    assert [str(p) for p in info.value.problems] == [
        "<string>:3:15: listeners[1].address: port 6379 is declared by service `redis` port "
        "`tcp-redis` (TCP) at <string>:7:55 and by service `web` port `http` (HTTP) at "
        "<string>:9:54: write this listener's `protocol` (`tcp` or `http`)"
    ]
    # Written, it is served as written.
    config = load_config(text.replace("127.0.0.1:6379}", "127.0.0.1:6379, protocol: tcp}"))
    assert build_snapshot(config)["listeners"][1]["protocol"] == "tcp"


ISTIO = """\
apiVersion: pymirror.dev/v1alpha1
kind: MirrorProxy
metadata: {name: proxy, namespace: default}
spec:
  listeners: [{address: 127.0.0.1:6380}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: redis, namespace: default}
spec:
  hosts: [redis.internal]
  ports: [{number: 6380, name: tcp-redis, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {tcp-redis: 16380}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: redis, namespace: default}
spec:
  hosts: [redis.internal]
  tcp:
  - match: [{port: 6380}]
    route: [{destination: {host: redis.internal}}]
"""


def test_a_service_entry_tcp_port_serves_tcp_routes_on_a_mirror_proxy_listener() -> None:
    config = load_config(ISTIO)
    s = build_snapshot(config)
    assert s["listeners"] == [
        {"address": "127.0.0.1:6380", "default_virtual_host": None, "protocol": "tcp"}
    ]
    [route] = s["tcp_routes"]
    assert route["matches"] == [{"port": 6380, "destination_subnets": []}]
    assert s["clusters"][route["destinations"][0]["cluster"]]["endpoints"] == ["127.0.0.1:16380"]
    assert not [p for p in load(ISTIO).problems if "no listener has it" in p.message]


@pytest.mark.parametrize("protocol", ["REDIS", "mongo"])
def test_other_tcp_family_protocols_count(protocol: str) -> None:
    s = build_snapshot(load_config(ISTIO.replace("protocol: TCP", f"protocol: {protocol}")))
    assert s["listeners"][0]["protocol"] == "tcp"


def test_an_http_service_entry_port_leaves_the_listener_http() -> None:
    text = ISTIO.replace("protocol: TCP", "protocol: HTTP")
    assert "protocol" not in build_snapshot(load_config(text))["listeners"][0]
    assert [p.code for p in load(text).problems] == ["not-served"]


def test_errors_in_tcp_routes_stop_a_run_once_a_port_makes_them_served() -> None:
    """Reference findings in `tcp` routes are errors only where tcp is served, which is
    decided on the documents before the model exists."""
    text = ISTIO.replace("{host: redis.internal}", "{host: redis.internal, subset: v9}")
    with pytest.raises(ConfigError) as info:
        load_config(text)
    assert [p.code for p in info.value.problems] == ["no-destination-rule"]
    # On an HTTP port the route is not served: the same finding is only a warning.
    loaded = load(text.replace("protocol: TCP", "protocol: HTTP"))
    assert not loaded.errors
    assert "no-destination-rule" in [p.code for p in loaded.warnings]


def test_disagreeing_service_entries_name_both_declarations() -> None:
    web = """\
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: default}
spec:
  hosts: [web.internal]
  ports: [{number: 6380, name: http, protocol: HTTP}]
"""
    with pytest.raises(ConfigError) as info:
        load_config(ISTIO + web)
    assert [str(p) for p in info.value.problems] == [
        "<string>:5:25: spec.listeners[0].address: port 6380 is declared by ServiceEntry "
        "default/redis port `tcp-redis` (TCP) at <string>:12:53 and by ServiceEntry "
        "default/web port `http` (HTTP) at <string>:30:48: write this listener's `protocol` "
        "(`tcp` or `http`)"
    ]


def test_check_shows_where_a_listener_took_tcp_from() -> None:
    lines = as_text(check([ISTIO]))
    assert (
        "listener 127.0.0.1:6380 (tcp: port 6380 is declared by ServiceEntry default/redis "
        "port `tcp-redis` (TCP) at <string>:12:53)"
    ) in lines
    written = ISTIO.replace("127.0.0.1:6380}", "127.0.0.1:6380, protocol: tcp}")
    assert "listener 127.0.0.1:6380 (tcp)" in as_text(check([written]))


def test_listen_addresses_take_their_own_port_protocol() -> None:
    unlisted = "services:" + NATIVE.split("services:", 1)[1]
    s = build_snapshot(load_config(unlisted), listen=["127.0.0.1:6379", "127.0.0.1:8080"])
    assert [x.get("protocol") for x in s["listeners"]] == ["tcp", None]
    # The first listener's default host goes to the http addresses only.
    hosted = NATIVE.replace("127.0.0.1:8080}", "127.0.0.1:8080, host: redis}")
    s = build_snapshot(load_config(hosted), listen=["127.0.0.1:6379", "127.0.0.1:8080"])
    assert [(x.get("protocol"), x["default_virtual_host"]) for x in s["listeners"]] == [
        ("tcp", None),
        (None, 0),
    ]


def test_listen_addresses_keep_the_first_listeners_written_protocol() -> None:
    for written, expected in (("http", None), ("tcp", "tcp")):
        text = NATIVE.replace("127.0.0.1:8080}", f"127.0.0.1:8080, protocol: {written}}}")
        s = build_snapshot(load_config(text), listen=["127.0.0.1:6379", "127.0.0.1:9000"])
        assert [x.get("protocol") for x in s["listeners"]] == [expected, expected]


def test_a_listen_address_on_disagreeing_ports_is_an_error() -> None:
    config = ports_config("TCP", "HTTP")
    with pytest.raises(ConfigError) as info:
        build_snapshot(config, listen=["127.0.0.1:7000"])
    assert [str(p) for p in info.value.problems] == [
        "--listen: 127.0.0.1:7000: port 7000 is declared by service `s0` port `p` (TCP) at "
        "<config> and by service `s1` port `p` (HTTP) at <config>: write this listener's "
        "`protocol` (`tcp` or `http`)"
    ]
