"""The comparator's plain parts: endpoint templates, pair diffs, the bounded store and
the report, over plain data (no sockets, no core)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pymirror.compare.comparator import Comparator
from pymirror.compare.diff import ABSENT, REDACTED, Settings, compare
from pymirror.compare.report import document, render_text
from pymirror.compare.store import OTHER, Store, percentile
from pymirror.compare.template import endpoint, path_template


def side(
    body: Any = b"",
    status: int = 200,
    headers: list[tuple[str, str]] | None = None,
    latency: float = 0.01,
) -> dict[str, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    ctype = [] if isinstance(body, bytes) else [("content-type", "application/json")]
    return {
        "status": status,
        "headers": (headers or []) + ctype + [("content-length", str(len(raw)))],
        "body": raw,
        "body_len": len(raw),
        "body_hash": hash(raw) & (2**64 - 1),
        "truncated": False,
        "latency": latency,
    }


def pair(primary: dict[str, Any], mirror: dict[str, Any], path: str = "/items/1") -> dict[str, Any]:
    return {
        "virtual_service": "shop",
        "route": "0",
        "mirror": 0,
        "method": "GET",
        "path": path,
        "primary": primary,
        "mirror_response": mirror,
    }


# === template ===


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/", "/"),
        ("/items/42", "/items/{id}"),
        ("/items/42/reviews/7?page=2", "/items/{id}/reviews/{id}"),
        ("/users/3f2504e0-4f89-11d3-9a0c-0305e82c3301", "/users/{id}"),
        ("/blobs/9b74c9897bac770ffc029102a200c5de", "/blobs/{id}"),
        ("/v2/items", "/v2/items"),  # a version is not an id
        ("/items/abc", "/items/abc"),
        ("", "/"),
    ],
)
def test_path_templates_fold_ids_only(path: str, template: str) -> None:
    assert path_template(path) == template


def test_endpoint_is_method_and_template() -> None:
    assert endpoint("get", "/items/7?x=1") == "GET /items/{id}"


# === diff ===


def test_equal_answers_match_whatever_the_ignored_headers_say() -> None:
    a = side({"a": 1}, headers=[("date", "Mon"), ("server", "v1"), ("x-request-id", "1")])
    b = side({"a": 1}, headers=[("date", "Tue"), ("server", "v2"), ("x-request-id", "2")])
    assert compare(pair(a, b)).result == "match"


def test_status_wins_over_everything_else() -> None:
    out = compare(pair(side({"a": 1}), side({"a": 2}, status=500)))
    assert out.result == "status_mismatch"
    assert {d.field for d in out.differences} == {"status", "$.a"}


def test_json_is_compared_field_by_field_with_lists_folded() -> None:
    a = {"items": [{"id": 1, "price": 10}, {"id": 2, "price": 20}], "n": 2}
    b = {"items": [{"id": 1, "price": 10}, {"id": 2, "price": 21}], "n": 2, "extra": True}
    out = compare(pair(side(a), side(b)))
    assert out.result == "body_mismatch"
    got = {(d.field, d.path, repr(d.primary), repr(d.mirror)) for d in out.differences}
    assert got == {
        ("$.items[*].price", "$.items[1].price", "20", "21"),
        ("$.extra", "$.extra", "<absent>", "True"),
    }


def test_json_key_order_and_whitespace_do_not_matter_but_types_do() -> None:
    a = side(b'{"a": 1, "b": [1, 2]}', headers=[("content-type", "application/json")])
    b = side(b'{"b":[1,2],"a":1}', headers=[("content-type", "application/json")])
    assert compare(pair(a, b)).result == "match"  # content-length differs: ignored for JSON
    c = side({"flag": True})
    d = side({"flag": 1})
    assert compare(pair(c, d)).result == "body_mismatch"


def test_ignore_paths_cover_wildcards_and_subtrees() -> None:
    a = {"ts": 1, "meta": {"at": 1, "by": "x"}, "items": [{"etag": "a", "p": 1}]}
    b = {"ts": 2, "meta": {"at": 2, "by": "y"}, "items": [{"etag": "b", "p": 1}]}
    s = Settings.from_snapshot(
        {"per_million": 1, "ignore_paths": ["$.ts", "$.meta", "$.items[*].etag"]}
    )
    assert compare(pair(side(a), side(b)), s).result == "match"
    s2 = Settings.from_snapshot({"per_million": 1, "ignore_paths": ["$.*"]})
    assert compare(pair(side(a), side(b)), s2).result == "match"


def test_headers_differ_unless_ignored() -> None:
    a = side(b"x", headers=[("etag", "1"), ("x-backend", "v1")])
    b = side(b"x", headers=[("etag", "2"), ("x-backend", "v2"), ("x-new", "1")])
    out = compare(pair(a, b))
    assert out.result == "header_mismatch"
    assert [d.field for d in out.differences] == ["header:etag", "header:x-backend", "header:x-new"]
    assert out.differences[2].primary is ABSENT
    s = Settings.from_snapshot({"per_million": 1, "ignore_headers": ["ETag", "x-backend", "x-new"]})
    assert compare(pair(a, b), s).result == "match"


def test_content_length_counts_for_opaque_bodies() -> None:
    out = compare(pair(side(b"abc"), side(b"abcd")))
    assert out.result == "body_mismatch"
    assert {d.field for d in out.differences} == {"body", "header:content-length"}


def test_truncated_bodies_compare_by_length_and_hash() -> None:
    a, b = side(b"abc"), side(b"abc")
    for s in (a, b):
        s.update(truncated=True, body_len=10_000, body_hash=7)
    assert compare(pair(a, b)).result == "match"
    b["body_hash"] = 8
    out = compare(pair(a, b))
    assert out.result == "body_mismatch"
    assert "fnv1a" in out.differences[0].primary


# === store ===


def test_store_counts_fields_once_per_pair_and_keeps_bounded_samples() -> None:
    store = Store(max_samples=2)
    s = Settings()
    a = {"items": [{"price": 1}, {"price": 2}]}
    b = {"items": [{"price": 9}, {"price": 9}]}
    for _ in range(5):
        p = pair(side(a), side(b))
        store.add(("shop", "0", "GET /items/{id}"), p, compare(p, s), s)
    p = pair(side(a), side(a))
    store.add(("shop", "0", "GET /items/{id}"), p, compare(p, s), s)
    [e] = store.to_json()
    assert e["compared"] == 6
    assert e["results"] == {"body_mismatch": 5, "match": 1}
    assert e["fields"] == [
        {"field": "$.items[*].price", "count": 5, "rate": 5 / 6, "class": "regression"}
    ]
    assert len(e["samples"]) == 2  # bounded per field


def test_store_bounds_endpoints_and_fields() -> None:
    store = Store(max_endpoints=2, max_fields=1)
    s = Settings()
    p = pair(side({"a": 1, "b": 1}), side({"a": 2, "b": 2}))
    for n in range(4):
        store.add(("shop", "0", f"GET /e{n}"), p, compare(p, s), s)
    names = [e["endpoint"] for e in store.to_json()]
    assert names == ["(other)", "GET /e0", "GET /e1"]
    other = store.get(("shop", "0", OTHER))
    assert other is not None and other.compared == 2
    assert dict(other.fields) == {"$.a": 2, OTHER: 2}


def test_samples_redact_configured_headers_and_fields() -> None:
    s = Settings.from_snapshot(
        {"per_million": 1, "redact_headers": ["x-token"], "redact_paths": ["$.user"]}
    )
    a = side({"user": {"email": "a@x"}, "n": 1}, headers=[("x-token", "s1"), ("cookie", "c1")])
    b = side({"user": {"email": "b@x"}, "n": 2}, headers=[("x-token", "s2"), ("cookie", "c2")])
    store = Store()
    p = pair(a, b)
    store.add(("shop", "0", "GET /items/{id}"), p, compare(p, s), s)
    samples = {x["field"]: x for x in store.to_json()[0]["samples"]}
    for f in ("header:x-token", "header:cookie", "$.user.email"):
        assert samples[f]["primary"] == samples[f]["mirror"] == REDACTED
    assert (samples["$.n"]["primary"], samples["$.n"]["mirror"]) == (1, 2)


def test_percentiles_and_latencies() -> None:
    assert percentile([], 50) is None
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    store = Store()
    for i in range(100):
        p = pair(side(b"x", latency=0.010), side(b"x", latency=0.010 + i / 1000))
        store.add(("shop", "0", "GET /"), p, compare(p), Settings())
    lat = store.to_json()[0]["latency"]
    assert lat["primary"]["p50"] == pytest.approx(0.010)
    assert lat["mirror"]["p99"] == pytest.approx(0.108)


# === comparator and report ===


SNAPSHOT: Any = {
    "virtual_hosts": [
        {
            "name": "shop",
            "routes": [
                {
                    "name": "0",
                    "mirrors": [
                        {
                            "cluster": 1,
                            "per_million": 1,
                            "compare": {"per_million": 1, "ignore_paths": ["$.ts"]},
                        }
                    ],
                }
            ],
        }
    ]
}


def test_comparator_uses_the_mirrors_settings_and_groups_by_endpoint() -> None:
    c = Comparator()
    pairs = [
        pair(side({"ts": i, "p": 1}), side({"ts": -i, "p": 1 if i % 2 else 2}), f"/items/{i}")
        for i in range(10)
    ]
    pairs.append(pair(side(b"ok"), side(b"ok", status=503), "/health"))
    assert c.feed(pairs, SNAPSHOT) == 11
    doc = document(c.store, {"mirrors": [], "compare_queue_depth": 0})
    by = {e["endpoint"]: e for e in doc["endpoints"]}
    items = by["GET /items/{id}"]
    assert items["results"] == {"body_mismatch": 5, "match": 5}
    assert [f["field"] for f in items["fields"]] == ["$.p"]
    assert by["GET /health"]["status_agreement"] == 0.0
    text = render_text(doc)
    assert "GET /items/{id}" in text and "$.p" in text and "50.0%" in text
    assert "200 -> 503: 1" in text
    json.dumps(doc)  # what /compare serves must be JSON


def test_report_names_what_was_sampled_but_not_compared() -> None:
    stats = {
        "compare_queue_depth": 3,
        "mirrors": [
            {
                "virtual_service": "shop",
                "route": "0",
                "host": "shop",
                "subset": "v2",
                "compare": {
                    "sampled": 10,
                    "queued": 7,
                    "skipped": {"queue_full": 3, "primary_incomplete": 0, "mirror_failed": 0},
                },
            }
        ],
    }
    doc = document(Store(), stats)
    assert doc["queue_depth"] == 3
    text = render_text(doc)
    assert "no compared requests yet" in text
    assert "queue_full 3 of 10 sampled" in text


# === gRPC ===


def grpc_side(
    *messages: bytes,
    status: str = "0",
    message: str | None = None,
    trailers_only: bool = False,
    extra: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """A gRPC answer as the core captures it: HTTP 200, framed messages, the outcome in
    the trailers (or in the headers, for a trailers-only answer)."""
    body = b"".join(b"\0" + len(m).to_bytes(4, "big") + m for m in messages)
    outcome = [("grpc-status", status)] + ([("grpc-message", message)] if message else [])
    outcome += extra or []
    headers = [("content-type", "application/grpc")]
    s = side(body, headers=headers + (outcome if trailers_only else []))
    s["headers"] = [h for h in s["headers"] if h[0] != "content-length"]
    s["trailers"] = [] if trailers_only else outcome
    return s


def test_grpc_same_outcome_and_messages_match() -> None:
    assert compare(pair(grpc_side(b"a", b"bc"), grpc_side(b"a", b"bc"))).result == "match"


def test_grpc_trailers_only_equals_the_same_outcome_in_trailers() -> None:
    a = grpc_side(status="5", message="gone", trailers_only=True, extra=[("x-t", "1")])
    b = grpc_side(status="5", message="gone", extra=[("x-t", "1")])
    assert compare(pair(a, b)).result == "match"


def test_grpc_status_differs_under_the_same_http_200() -> None:
    outcome = compare(pair(grpc_side(b"ok"), grpc_side(status="14", message="down")))
    assert outcome.result == "status_mismatch"
    by = {d.field: d for d in outcome.differences}
    assert (by["grpc-status"].primary, by["grpc-status"].mirror) == ("0", "14")
    assert by["grpc-status"].kind == "status"
    assert by["grpc-message"].primary is ABSENT and by["grpc-message"].mirror == "down"
    assert by["message[*]"].mirror is ABSENT
    assert "status" not in by  # HTTP's is 200 on both sides


def test_grpc_message_alone_is_a_field_mismatch() -> None:
    a, b = grpc_side(status="5", message="gone"), grpc_side(status="5", message="missing")
    outcome = compare(pair(a, b))
    assert outcome.result == "header_mismatch"
    assert [d.field for d in outcome.differences] == ["grpc-message"]


def test_grpc_messages_are_compared_one_by_one_as_bytes() -> None:
    outcome = compare(pair(grpc_side(b"a", b"\x08\x01", b"c"), grpc_side(b"a", b"\x08\x02")))
    assert outcome.result == "body_mismatch"
    assert [(d.path, d.primary, d.mirror) for d in outcome.differences] == [
        ("message[1]", "2 bytes: 08 01", "2 bytes: 08 02"),
        ("message[2]", "1 bytes: 63", ABSENT),
    ]
    assert {d.field for d in outcome.differences} == {"message[*]"}


def test_grpc_body_that_is_not_whole_messages_is_compared_as_bytes() -> None:
    a, b = grpc_side(b"abc"), grpc_side(b"abc")
    b["body"] = b["body"][:-1]  # a length prefix promising more than there is
    outcome = compare(pair(a, b))
    assert [d.field for d in outcome.differences] == ["body"]


def test_grpc_truncated_bodies_fall_back_to_length_and_hash() -> None:
    a, b = grpc_side(b"x" * 10), grpc_side(b"x" * 10)
    for s in (a, b):
        s["truncated"], s["body"] = True, s["body"][:4]
    assert compare(pair(a, b)).result == "match"
    b["body_hash"] += 1
    assert [d.field for d in compare(pair(a, b)).differences] == ["body"]


def test_trailers_are_compared_and_redacted_as_headers() -> None:
    a = grpc_side(extra=[("x-token", "one"), ("x-t", "1")])
    b = grpc_side(extra=[("x-token", "two"), ("x-t", "2")])
    outcome = compare(pair(a, b))
    assert {d.field for d in outcome.differences} == {"trailer:x-token", "trailer:x-t"}
    settings = Settings(redact_headers=frozenset({"x-token"}))
    redacted = {d.field for d in outcome.differences if settings.redacted(d)}
    assert redacted == {"trailer:x-token"}


def test_store_labels_grpc_statuses() -> None:
    store = Store()
    Comparator(store).feed([pair(grpc_side(b"a"), grpc_side(status="14"))], None)
    [e] = document(store)["endpoints"]
    assert e["statuses"] == [
        {"primary": "200 grpc-status 0", "mirror": "200 grpc-status 14", "count": 1}
    ]
    assert e["status_agreement"] == 0.0
