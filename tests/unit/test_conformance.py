"""Istio's own files (../shared/conformance/istio, beside the repository; skipped where
absent, as in a user's clone): the bookinfo samples and the mirroring task pass `check`;
in Istio's analyzer test data, every reference Istio's analyzer flags is flagged, and
nothing else. Istio's expectations are those of its
pkg/config/analysis/analyzers/analyzers_test.go (the folder's README says so too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pymirror.check import check
from pymirror.config.analyzers import HOST_CODES, SUBSET_CODES

CONFORMANCE = (Path(__file__).resolve().parents[2] / "../shared/conformance/istio").resolve()

pytestmark = pytest.mark.skipif(
    not CONFORMANCE.is_dir(), reason=f"{CONFORMANCE} is not here (a user's clone lacks it)"
)

ANALYZER_FILES = ("virtualservice_destinationhosts.yaml", "virtualservice_destinationrules.yaml")
SAMPLES = sorted(
    p.name
    for p in (CONFORMANCE.glob("*.yaml") if CONFORMANCE.is_dir() else ())
    if not p.name.startswith("virtualservice_")
)


#: Bookinfo's rules for a mesh with Istio's CA: ISTIO_MUTUAL, which pymirror refuses.
MESH_MTLS = "destination-rule-all-mtls.yaml"


@pytest.mark.parametrize("name", [n for n in SAMPLES if n != MESH_MTLS])
def test_every_sample_passes_check(name: str) -> None:
    report = check([CONFORMANCE / name])
    assert report.errors == []
    assert report.snapshot is not None


def test_istio_mutual_is_refused_where_written_saying_what_to_write() -> None:
    report = check([CONFORMANCE / MESH_MTLS])
    # One error per rule, each at its `tls.mode`, none about anything else.
    assert len(report.errors) == 4
    for error in report.errors:
        assert error.path[-4:] == ("spec", "trafficPolicy", "tls", "mode")
        assert "mesh CA" in error.message and "mode: MUTUAL" in error.message


@pytest.mark.parametrize("name", [n for n in SAMPLES if n.startswith("virtual-service-")])
def test_samples_with_their_destination_rules_pass_check(name: str) -> None:
    report = check([CONFORMANCE / name, CONFORMANCE / "destination-rule-all.yaml"])
    assert report.errors == []
    # The rules define every subset the routes name; only the endpoints are elsewhere
    # (in Kubernetes), which `check` says without failing.
    assert {p.code for p in report.problems} <= {
        "unknown-host",
        "no-endpoints",
        "no-listener",
        "not-served",
    }


def test_the_mirroring_task_mirrors_all_of_v1_to_v2() -> None:
    report = check([CONFORMANCE / "mirroring-task-httpbin-mirror-v2.yaml"])
    assert report.ok and report.snapshot is not None
    [route] = report.snapshot["virtual_hosts"][0]["routes"]
    [mirror] = route["mirrors"]
    assert mirror["per_million"] == 1_000_000
    assert report.snapshot["clusters"][mirror["cluster"]]["subset"] == "v2"


def test_two_versions_of_one_virtual_service_are_a_duplicate() -> None:
    # The task applies the second file in place of the first; given together, both
    # define `default/httpbin`.
    first = CONFORMANCE / "mirroring-task-httpbin-route-v1.yaml"
    report = check([first, CONFORMANCE / "mirroring-task-httpbin-mirror-v2.yaml"])
    assert f"virtual service `httpbin` is already defined at {first}:4:9" in [
        p.message for p in report.errors
    ]


def flagged(name: str, codes: frozenset[str]) -> set[tuple[str, str]]:
    """(code, `namespace/name`) of every finding of these codes in one analyzer file."""
    report = check([CONFORMANCE / name])
    return {
        (p.code, p.subject.removeprefix("VirtualService "))
        for p in report.problems
        if p.code in codes
    }


def test_destination_hosts_as_istio_flags_them() -> None:
    found = flagged("virtualservice_destinationhosts.yaml", HOST_CODES)
    assert {subject for _, subject in found} == {
        "default/reviews-bogushost",
        "default/reviews-bookinfo-other",
        "default/reviews-mirror-bogushost",
        "default/reviews-bogusport",
        "default/reviews-2port-missing",
        "istio-system/cross-namespace-details",
        "hello/hello-export-to-bogus",
    }
    # Istio's message kinds: ReferencedResourceNotFound, and the port one.
    assert ("port-required", "default/reviews-2port-missing") in found
    assert ("unknown-port", "default/reviews-bogusport") in found


def test_destination_rule_subsets_as_istio_flags_them() -> None:
    assert flagged("virtualservice_destinationrules.yaml", SUBSET_CODES) == {
        ("unknown-subset", "default/reviews-bogussubset"),
        ("unknown-subset", "default/reviews-mirror-bogussubset"),
    }


def test_unreachable_rules_and_ineffective_matches_as_istio_warns() -> None:
    codes = frozenset({"unreachable-rule", "ineffective-match"})
    unreachable, ineffective = "unreachable-rule", "ineffective-match"
    assert flagged("virtualservice_dupmatches.yaml", codes) == {
        (unreachable, "default/duplicate-match"),
        (unreachable, "foo/sample-foo-cluster01"),
        (ineffective, "default/almost-duplicate-match"),
        (ineffective, "default/duplicate-match"),
        (unreachable, "default/duplicate-tcp-match"),
        (unreachable, "default/duplicate-empty-tcp"),
        (ineffective, "default/almost-duplicate-tcp-match"),
        (ineffective, "default/duplicate-tcp-match"),
        (unreachable, "none/tls-routing"),
        (ineffective, "none/tls-routing-almostmatch"),
        (ineffective, "none/tls-routing"),
    }


@pytest.mark.parametrize("name", ANALYZER_FILES)
def test_bogus_references_are_named(name: str) -> None:
    messages = " ".join(p.message for p in check([CONFORMANCE / name]).problems)
    if name == "virtualservice_destinationhosts.yaml":
        for bogus in ("`reviews-bogus`", "`other.bookinfo.com`", "no port 999"):
            assert bogus in messages
    else:
        assert "has no subset `bogus`" in messages


@pytest.mark.parametrize(
    ("name", "codes"), [(ANALYZER_FILES[0], HOST_CODES), (ANALYZER_FILES[1], SUBSET_CODES)]
)
def test_the_mirror_entries_of_the_analyzer_files_are_not_flagged(
    name: str, codes: frozenset[str]
) -> None:
    # `reviews-mirror` mirrors to an existing host and subset: Istio raises nothing.
    assert "default/reviews-mirror" not in {subject for _, subject in flagged(name, codes)}
