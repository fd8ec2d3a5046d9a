"""ACR quarantine against the loopback HTTPS ACR data plane (``tests.support.acr_dataplane``, real
token exchange and HTTP client): every manifest a run pushed (the index, its platform images and
BuildKit's attestation manifests) is marked ``Passed`` after a successful run and ``Failed`` after
a failed one, with ``quarantineDetails`` as Azure/acr's published schema allows, once.

The schema facts the fake and these tests hold come from the source, cited where they are written
(``tests/support/acr_dataplane.py``, ``SCHEMA_*``), not from ``shared.acr.quarantine``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.acr.quarantine import (
    FAILED,
    PASSED,
    QUARANTINE_READER_ROLE_ID,
    QUARANTINE_WRITER_ROLE_ID,
    QuarantineClient,
    QuarantineDetails,
    details_for,
)
from shared.acr.task import SCAN_REPORT_ARTIFACT_TYPE
from shared.model.config import SlipwayConfig
from shared.platform.oci import RegistryError
from shared.runs.reconcile import Reconciler
from shared.runs.run_outcome import SupplyChainOutcome
from tests.support.acr_dataplane import (  # noqa: F401 (fixture)
    QUARANTINED,
    AcrDataPlane,
    acr_dataplane,
    quarantine_details_problems,
)
from tests.support.acr_server import AcrServer
from tests.support.git_hosts import GitHostServer
from tests.test_reconcile import Env

REPO = "dougbu/azure-test"
REGISTRY = "slipway.azurecr.io"
CREATED = datetime(2026, 1, 1, tzinfo=UTC)
SCANNER = "docker.io/aquasec/trivy:0.58.1@sha256:" + "7" * 64


@pytest.fixture
def plane(acr_dataplane: AcrDataPlane) -> AcrDataPlane:  # noqa: F811
    """A registry whose quarantine policy is on: everything added starts quarantined."""
    acr_dataplane.quarantine_policy = True
    return acr_dataplane


def _client(plane: AcrDataPlane) -> QuarantineClient:
    return QuarantineClient.for_acr(plane.login_server, plane.credential, verify=plane.ca_path)


def _nulls(value: Any, path: str = "$") -> list[str]:
    """Where a JSON value holds null."""
    if value is None:
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _nulls(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _nulls(v, f"{path}[{i}]")]
    return []


def _report(plane: AcrDataPlane, subject: str, request_id: str) -> str:
    """A scan report as the scan-gate step attaches it (shared/acr/task/, ``oras attach``)."""
    annotations = {"dev.slipway.platform": "linux/amd64", "dev.slipway.request": request_id}
    return plane.add_referrer(
        REPO, subject, artifact_type=SCAN_REPORT_ARTIFACT_TYPE, annotations=annotations, created=CREATED
    )


def _states(plane: AcrDataPlane, digests: list[str]) -> list[str | None]:
    return [plane.quarantine_state(REPO, d) for d in digests]


# --------------------------------------------------------------------------------------------
# Constants checked at their sources


def test_role_ids_are_microsofts_built_in_quarantine_roles() -> None:
    # https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/containers
    # (MicrosoftDocs/azure-docs, articles/role-based-access-control/built-in-roles/containers.md).
    assert QUARANTINE_READER_ROLE_ID == "cdda3590-29a3-44f6-95f2-9f980659eb04"  # AcrQuarantineReader
    assert QUARANTINE_WRITER_ROLE_ID == "c8d4ff99-41c3-41a8-9f60-21dfdad59608"  # AcrQuarantineWriter
    # Azure/acr docs/preview/quarantine/readme.md: "quarantineState": "[Passed|Failed]".
    assert (PASSED, FAILED) == ("Passed", "Failed")


def test_the_schema_check_of_the_fake_refuses_what_the_schema_refuses() -> None:
    """The fake's check is worth trusting only if it says no to what the published schema forbids.

    https://github.com/Azure/acr/blob/main/docs/preview/quarantine/quarantine-details/schema.json
    (commit 81b818eb): additionalProperties false; scanner/state/link strings; result needs version
    and summary; summary at most 5 items, severity in Critical/High/Medium/Low/None, count an
    integer; description at most 1024 characters.
    """
    good = {
        "scanner": "trivy",
        "state": "scan passed",
        "link": "https://x",
        "result": {"version": "0.0.1", "summary": []},
    }
    assert quarantine_details_problems(json.dumps(good)) == []
    bad: list[Any] = [
        {"state": None},  # null is no string
        {"run": "ca1"},  # additionalProperties: false
        {"result": {"summary": []}},  # version is required
        {"result": {"version": "0.0.1", "summary": [{"severity": "Unknown", "count": 1}]}},
        {"result": {"version": "0.0.1", "summary": [{"severity": "High", "count": True}]}},
        {"result": {"version": "0.0.1", "summary": [{"severity": "Low", "count": 1}] * 6}},
        {"result": {"version": "0.0.1", "summary": [], "description": "x" * 1025}},
        ["not", "an", "object"],
    ]
    for details in bad:
        assert quarantine_details_problems(json.dumps(details)), details
    assert quarantine_details_problems(good) != []  # an object, not the string the PATCH carries


@settings(max_examples=60, deadline=None)
@given(
    findings=st.dictionaries(
        st.sampled_from(["linux/amd64", "linux/arm64", "linux/arm/v7"]),
        st.dictionaries(
            st.sampled_from(["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"]), st.integers(0, 10**6)
        ),
    ),
    description=st.text(max_size=3000),
    scanner=st.one_of(st.none(), st.just(SCANNER)),
)
def test_details_always_fit_the_published_schema(
    findings: dict[str, dict[str, int]], description: str, scanner: str | None
) -> None:
    details = details_for(state="scan failed", description=description, scanner=scanner, findings=findings)
    text = details.to_json()
    assert quarantine_details_problems(text) == []
    data = json.loads(text)
    assert _nulls(data) == []
    assert ("scanner" in data) == (scanner is not None)
    # The summed counts survive (UNKNOWN has no place in the schema's enum).
    wanted = {
        name.title(): sum(c.get(name, 0) for c in findings.values())
        for name in ("CRITICAL", "HIGH", "MEDIUM", "LOW")
    }
    got = {item["severity"]: item["count"] for item in data["result"]["summary"]}
    assert got == {k: v for k, v in wanted.items() if v}


# --------------------------------------------------------------------------------------------
# The client


def test_marks_a_digest_passed_through_the_token_exchange(plane: AcrDataPlane) -> None:
    digest = plane.add_platform_image(REPO, created=CREATED)
    client = _client(plane)
    details = details_for(state="scan passed", description="run ca1", scanner=SCANNER)
    assert client.quarantine_state(REPO, digest) == QUARANTINED
    assert client.set_quarantine(REPO, digest, PASSED, details) is True

    [patch] = plane.patches
    assert (patch.method, patch.path) == ("PATCH", f"/acr/v1/{REPO}/_manifests/{digest}")
    assert patch.headers["authorization"] in {f"Bearer {t}" for t in plane.issued_access_tokens}
    body = json.loads(patch.body)
    assert set(body) == {"quarantineState", "quarantineDetails"}
    assert body["quarantineState"] == "Passed"
    assert isinstance(body["quarantineDetails"], str)  # a string holding JSON
    assert json.loads(body["quarantineDetails"])["scanner"] == SCANNER
    [exchange] = plane.calls("/oauth2/exchange")
    assert exchange.form["access_token"] == [plane.aad_token]
    scopes = [r.form["scope"] for r in plane.calls("/oauth2/token")]
    assert [f"repository:{REPO}:pull,push"] in scopes
    assert client.quarantine_state(REPO, digest) == "Passed"
    # Idempotent: a digest already Passed is read, not patched again.
    assert client.set_quarantine(REPO, digest, PASSED, details) is False
    assert len(plane.patches) == 1


def test_failed_never_replaces_passed_but_passed_replaces_failed(plane: AcrDataPlane) -> None:
    released, rejected = (plane.add_platform_image(REPO, created=CREATED) for _ in range(2))
    client = _client(plane)
    details = details_for(state="run failed", description="why")
    assert client.set_quarantine(REPO, released, PASSED, details) is True
    assert client.set_quarantine(REPO, released, FAILED, details) is False  # still deployed elsewhere
    assert client.set_quarantine(REPO, rejected, FAILED, details) is True
    assert client.set_quarantine(REPO, rejected, FAILED, details) is False
    assert client.set_quarantine(REPO, rejected, PASSED, details) is True  # a later scan passed
    assert _states(plane, [released, rejected]) == ["Passed", "Passed"]
    assert len(plane.patches) == 3


def test_refuses_a_tag_an_unknown_state_or_free_form_details(plane: AcrDataPlane) -> None:
    client = _client(plane)
    digest = plane.add_platform_image(REPO, created=CREATED)
    with pytest.raises(ValueError, match="digest"):
        client.set_quarantine(REPO, "latest", PASSED, QuarantineDetails())
    with pytest.raises(ValueError, match="Passed or Failed"):
        client.set_quarantine(REPO, digest, "Quarantined", QuarantineDetails())
    with pytest.raises(TypeError, match="schema"):
        client.set_quarantine(REPO, digest, PASSED, {"run": "ca1"})  # type: ignore[arg-type]
    assert plane.requests == []


def test_the_release_set_of_an_index_is_every_manifest_it_lists(plane: AcrDataPlane) -> None:
    index, children = plane.add_index(REPO, created=CREATED)
    single = plane.add_platform_image(REPO, created=CREATED)
    client = _client(plane)
    assert len(children) == 4  # two platform images and an attestation manifest for each
    assert client.release_set(REPO, index) == [index, *children]
    assert client.release_set(REPO, single) == [single]


def test_referrers_lists_the_reports_attached_to_an_image(plane: AcrDataPlane) -> None:
    index, children = plane.add_index(REPO, created=CREATED)
    report = _report(plane, index, "azure-test.r1")
    plane.add_referrer(
        REPO, index, artifact_type="application/vnd.example.sig", annotations={}, created=CREATED
    )
    client = _client(plane)
    [found] = client.referrers(REPO, index, artifact_type=SCAN_REPORT_ARTIFACT_TYPE)
    assert found.digest == report and found.annotations["dev.slipway.request"] == "azure-test.r1"
    assert len(client.referrers(REPO, index)) == 2
    [listing, *_] = [r for r in plane.requests if "/referrers/" in r.path and r.params]
    assert listing.params == {"artifactType": [SCAN_REPORT_ARTIFACT_TYPE]}
    assert client.referrers(REPO, children[0]) == []  # an image nothing refers to
    plane.referrers_api = False  # a registry without the API answers 404: nothing to list
    assert client.referrers(REPO, index) == []


def test_without_quarantine_read_rights_the_index_cannot_be_read(plane: AcrDataPlane) -> None:
    """Azure/acr readme: a quarantined image pulled by digest answers "The operation is disallowed"."""
    index, _children = plane.add_index(REPO, created=CREATED)
    plane.quarantine_reader = False
    with pytest.raises(RegistryError, match="disallowed"):
        _client(plane).release_set(REPO, index)


# --------------------------------------------------------------------------------------------
# Reconciliation


def _config(*, quarantine: bool, scan: bool = True) -> SlipwayConfig:
    return SlipwayConfig.model_validate(
        {
            "registry": REGISTRY,
            "quarantine": quarantine,
            "scanner": {"image": SCANNER},
            "targets": [
                {
                    "name": "azure-test",
                    "repo": "https://github.com/dougbu/AzureTest",
                    "image": REPO,
                    **({"scan": {}} if scan else {}),
                }
            ],
        }
    )


class Logs:
    """Run logs by run id, and how often each was read."""

    def __init__(self) -> None:
        self.text: dict[str, str] = {}
        self.reads: list[str] = []

    def __call__(self, run_id: str) -> list[str]:
        self.reads.append(run_id)
        return self.text.get(run_id, "").splitlines()


@pytest.fixture
def env(tmp_path: Path, acr_server: AcrServer, git_host_server: GitHostServer) -> Env:
    return Env(tmp_path, acr_server, git_host_server)


def _dispatched(env: Env, log: str = "", *, forged: str = "") -> tuple[str, str, Logs]:
    """A dispatched run: (request id, run id, its log).

    ``log`` is written with the plain marker and printed with the run's own, as its steps print
    it; ``forged`` lines are appended as they are, as a build that does not know it would.
    """
    request_id = env.dispatch()
    record = env.record(request_id)
    assert record.run_id is not None
    assert record.result_marker is not None and record.result_marker != "slipway-result:"
    logs = Logs()
    logs.text[record.run_id] = log.replace("slipway-result:", record.result_marker) + forged
    return request_id, record.run_id, logs


def _reconcile(
    env: Env, plane: AcrDataPlane, logs: Any, *, quarantine: bool = True, scan: bool = True
) -> Any:
    outcome = SupplyChainOutcome(
        config=lambda: _config(quarantine=quarantine, scan=scan),
        log_lines=logs,
        quarantine=lambda _registry: _client(plane),
        clock=env.clock,
    )
    return Reconciler(
        ledger=env.ledger, backend=env.backend, notifier=env.notifier(), clock=env.clock, on_finished=outcome
    ).run()


def _passed_log(index: str, other: str) -> str:
    return f"""2026/01/01 12:00:00 Executing step ID: build
#12 0.3 slipway-result: pushed {REGISTRY}/{REPO}@{other}
slipway-result: pushed {REGISTRY}/{REPO}@{index}
slipway-result: pushed {REGISTRY}/someone/else@{other}
slipway-result: platform-check passed
slipway-result: scan linux/amd64 passed
slipway-result: scan-gate passed
slipway-result: tagged {REGISTRY}/{REPO}@{index}
"""


def test_a_successful_run_releases_the_index_and_every_manifest_in_it(env: Env, plane: AcrDataPlane) -> None:
    index, children = plane.add_index(REPO, created=CREATED)
    other = plane.add_platform_image(REPO, created=CREATED)  # named only by a line that is no report
    request_id, run_id, logs = _dispatched(env, _passed_log(index, other))
    report = _report(plane, index, request_id)
    someone_elses = _report(plane, index, "azure-test.another-request")
    env.acr.set_status(run_id, "Running")
    _reconcile(env, plane, logs)
    assert logs.reads == [] and plane.patches == []  # not ended: nothing read, nothing released

    env.acr.set_status(run_id, "Succeeded")
    _reconcile(env, plane, logs)
    _reconcile(env, plane, logs)
    assert _states(plane, [index, *children, report]) == ["Passed"] * 6
    assert _states(plane, [other, someone_elses]) == [QUARANTINED] * 2
    # Once each, the index last (whoever may pull it may then pull what it lists).
    patched = [p.path.rsplit("/", 1)[1] for p in plane.patches]
    assert sorted(patched) == sorted([index, *children, report]) and patched[-1] == index
    for digest in (index, *children, report):
        text = plane.repositories[REPO].manifests[digest].quarantine_details
        assert quarantine_details_problems(text) == []
    details = plane.quarantine_details(REPO, index)
    assert details["scanner"] == SCANNER and details["state"] == "scan passed"
    assert run_id in details["result"]["description"] and request_id in details["result"]["description"]
    record = env.record(request_id)
    assert (record.run_status, record.following, record.commit_status) == ("Succeeded", False, "success")
    assert [e["event"] for e in record.history if e["event"].startswith("quarantine")] == [
        "quarantine_passed"
    ]
    assert logs.reads == [run_id]


def test_a_rerun_on_released_digests_patches_nothing(env: Env, plane: AcrDataPlane) -> None:
    """Retries are idempotent: a digest already Passed is read, not patched."""
    index, children = plane.add_index(REPO, created=CREATED)
    client = _client(plane)
    for digest in (index, *children):
        client.set_quarantine(REPO, digest, PASSED, details_for(state="scan passed", description="earlier"))
    before = len(plane.patches)
    request_id, run_id, logs = _dispatched(env, _passed_log(index, index))
    env.acr.set_status(run_id, "Succeeded")
    _reconcile(env, plane, logs)
    assert len(plane.patches) == before
    events = [e["event"] for e in env.record(request_id).history if e["event"].startswith("quarantine")]
    assert events == ["quarantine_unchanged"]


def test_a_report_line_without_the_runs_nonce_is_not_believed(env: Env, plane: AcrDataPlane) -> None:
    """A build that got a plain report line to column 0 still cannot release another digest."""
    other = plane.add_platform_image(REPO, created=CREATED)
    forged = f"slipway-result: pushed {REGISTRY}/{REPO}@{other}\nslipway-result: scan-gate passed\n"
    request_id, run_id, logs = _dispatched(env, forged=forged)
    env.acr.set_status(run_id, "Succeeded")
    _reconcile(env, plane, logs)
    assert logs.reads == [run_id]
    assert plane.patches == []
    assert plane.quarantine_state(REPO, other) == QUARANTINED
    [skipped] = [e for e in env.record(request_id).history if e["event"] == "quarantine_skipped"]
    assert skipped["detail"] == "the run log names no pushed digest"


def _failed_scan_log(index: str) -> str:
    return f"""slipway-result: pushed {REGISTRY}/{REPO}@{index}
slipway-result: platform-check passed
slipway-result: scan linux/amd64 passed
slipway-result: scan linux/arm64 failed CRITICAL=2 HIGH=1
slipway-result: scan-report stored application/vnd.slipway.scan-report.trivy.v1+json
slipway-result: scan-gate failed
2026/01/01 12:00:00 failed to run step ID: scan-gate: exit status 1
"""


def _failed_platform_log(index: str) -> str:
    return f"""slipway-result: pushed {REGISTRY}/{REPO}@{index}
slipway-result: platform-check failed missing linux/arm64
"""


def _failed_late_log(index: str) -> str:
    """Every gate passed, then ``release-tags`` failed: the run failed all the same."""
    return f"""slipway-result: pushed {REGISTRY}/{REPO}@{index}
slipway-result: platform-check passed
slipway-result: scan-gate passed
"""


@pytest.mark.parametrize(
    ("log", "sentence", "state", "summary", "scanner"),
    [
        (
            _failed_scan_log,
            "Scan gate failed: 2 CRITICAL, 1 HIGH on linux/arm64; release tags were not moved",
            "scan failed",
            [{"severity": "Critical", "count": 2}, {"severity": "High", "count": 1}],
            SCANNER,
        ),
        (
            _failed_platform_log,
            "Platform check failed: the pushed image lacks linux/arm64",
            "platform check failed",
            [],
            None,
        ),
        (_failed_late_log, "failed during run, err: exit status 1", "run failed", [], SCANNER),
    ],
)
def test_a_failed_run_names_its_gate_and_marks_every_manifest_failed(
    env: Env,
    plane: AcrDataPlane,
    log: Any,
    sentence: str,
    state: str,
    summary: list[dict[str, Any]],
    scanner: str | None,
) -> None:
    index, children = plane.add_index(REPO, created=CREATED)
    request_id, run_id, logs = _dispatched(env, log(index))
    reports = [_report(plane, index, request_id)] if state == "scan failed" else []
    env.acr.set_status(run_id, "Failed", error="failed during run, err: exit status 1")
    _reconcile(env, plane, logs)
    _reconcile(env, plane, logs)
    record = env.record(request_id)
    assert sentence in (record.run_error or "")
    assert (record.following, record.commit_status) == (False, "failure")
    status = env.statuses()[-1]
    assert status["state"] == "failure" and sentence[:60] in status["description"]
    if "gate" in sentence or "check" in sentence:
        assert status["description"].startswith(sentence.split(":")[0])  # the gate leads the sentence
    assert _states(plane, [index, *children, *reports]) == ["Failed"] * (5 + len(reports))
    assert len(plane.patches) == 5 + len(reports)  # once each, the second pass read them back
    assert plane.patches[0].path.endswith(index)  # the index is blocked first
    for digest in (index, *children, *reports):
        details = plane.quarantine_details(REPO, digest)
        assert quarantine_details_problems(json.dumps(details)) == []
        assert details["state"] == state
        assert sentence in details["result"]["description"] and run_id in details["result"]["description"]
        assert details["result"]["summary"] == summary
        assert details.get("scanner") == scanner
    events = [e["event"] for e in record.history if e["event"].startswith("quarantine")]
    assert events == ["quarantine_failed"]


def test_a_failed_run_that_pushed_nothing_patches_nothing(env: Env, plane: AcrDataPlane) -> None:
    index, _children = plane.add_index(REPO, created=CREATED)
    request_id, run_id, logs = _dispatched(env, "no markers at all\n")
    env.acr.set_status(run_id, "Failed", error="failed during run, err: exit status 1")
    _reconcile(env, plane, logs)
    record = env.record(request_id)
    assert record.run_error == "failed during run, err: exit status 1"
    assert plane.patches == [] and plane.quarantine_state(REPO, index) == QUARANTINED


def test_a_failed_run_does_not_take_back_an_earlier_release(env: Env, plane: AcrDataPlane) -> None:
    """A reproducible build pushed a digest an earlier run released; a failing rescan leaves it Passed."""
    index, children = plane.add_index(REPO, created=CREATED)
    client = _client(plane)
    for digest in (index, *children):
        client.set_quarantine(REPO, digest, PASSED, details_for(state="scan passed", description="earlier"))
    request_id, run_id, logs = _dispatched(env, _failed_scan_log(index))
    env.acr.set_status(run_id, "Failed", error="failed during run, err: exit status 1")
    _reconcile(env, plane, logs)
    assert _states(plane, [index, *children]) == ["Passed"] * 5
    assert (env.record(request_id).run_error or "").startswith("Scan gate failed")


@pytest.mark.parametrize("status", ["Canceled", "Timeout"])
def test_a_canceled_or_timed_out_run_is_left_quarantined(env: Env, plane: AcrDataPlane, status: str) -> None:
    index, _children = plane.add_index(REPO, created=CREATED)
    _request_id, run_id, logs = _dispatched(env, _passed_log(index, index))
    env.acr.set_status(run_id, status)
    _reconcile(env, plane, logs)
    assert logs.reads == [] and plane.requests == []


def test_without_quarantine_a_successful_run_reads_no_log(env: Env, plane: AcrDataPlane) -> None:
    index, _children = plane.add_index(REPO, created=CREATED)
    request_id, run_id, logs = _dispatched(env, _passed_log(index, index))
    env.acr.set_status(run_id, "Succeeded")
    _reconcile(env, plane, logs, quarantine=False)
    assert logs.reads == [] and plane.requests == []
    assert env.record(request_id).commit_status == "success"


def test_without_quarantine_a_failed_run_is_read_only_to_name_its_gate(env: Env, plane: AcrDataPlane) -> None:
    index, _children = plane.add_index(REPO, created=CREATED)
    request_id, run_id, logs = _dispatched(env, _failed_scan_log(index))
    env.acr.set_status(run_id, "Failed", error="failed during run, err: exit status 1")
    _reconcile(env, plane, logs, quarantine=False)
    assert logs.reads == [run_id]  # read to name the gate, nothing more
    assert plane.requests == []
    assert (env.record(request_id).run_error or "").startswith("Scan gate failed")


def test_a_registry_outage_leaves_the_run_followed_for_the_next_tick(env: Env, plane: AcrDataPlane) -> None:
    index, children = plane.add_index(REPO, created=CREATED)
    stored = plane.repositories.pop(REPO)  # the registry does not know the digest (yet)
    request_id, run_id, logs = _dispatched(env, _passed_log(index, index))
    env.acr.set_status(run_id, "Succeeded")
    report = _reconcile(env, plane, logs)
    assert report.errors and env.record(request_id).following is True
    plane.repositories[REPO] = stored
    _reconcile(env, plane, logs)
    assert len(plane.patches) == 5 and env.record(request_id).following is False
    assert _states(plane, [index, *children]) == ["Passed"] * 5


def test_an_identity_without_quarantine_read_rights_is_an_error_not_a_release(
    env: Env, plane: AcrDataPlane
) -> None:
    index, _children = plane.add_index(REPO, created=CREATED)
    plane.quarantine_reader = False
    request_id, run_id, logs = _dispatched(env, _passed_log(index, index))
    env.acr.set_status(run_id, "Succeeded")
    report = _reconcile(env, plane, logs)
    assert any("disallowed" in error for error in report.errors)
    assert env.record(request_id).following is True and plane.patches == []


def test_without_a_scan_gate_the_details_name_no_scanner(env: Env, plane: AcrDataPlane) -> None:
    index, _children = plane.add_index(REPO, created=CREATED)
    log = f"slipway-result: pushed {REGISTRY}/{REPO}@{index}\nslipway-result: platform-check passed\n"
    _request_id, run_id, logs = _dispatched(env, log)
    env.acr.set_status(run_id, "Succeeded")
    _reconcile(env, plane, logs, scan=False)
    details = plane.quarantine_details(REPO, index)
    assert "scanner" not in details and details["state"] == "not scanned"
    assert quarantine_details_problems(json.dumps(details)) == []


def test_the_run_log_is_read_through_the_sdk_and_its_sas_link_is_never_kept(
    env: Env, plane: AcrDataPlane, caplog: pytest.LogCaptureFixture
) -> None:
    """The real path: ``runs.get_log_sas_url`` over HTTPS, then the log blob behind its SAS link."""
    from shared.runs.run_outcome import AcrRunLog
    from tests.support.acr_server import LOG_SAS_SIGNATURE

    index, children = plane.add_index(REPO, created=CREATED)
    request_id = env.dispatch()
    run_id = env.record(request_id).run_id
    assert run_id is not None
    marker = env.record(request_id).result_marker
    assert marker is not None
    env.acr.set_log(run_id, _failed_scan_log(index).replace("slipway-result:", marker))
    env.acr.set_status(run_id, "Failed", error="failed during run, err: exit status 1")
    with caplog.at_level("DEBUG"):
        _reconcile(env, plane, AcrRunLog(env.backend))
    record = env.record(request_id)
    assert (record.run_error or "").startswith("Scan gate failed: 2 CRITICAL, 1 HIGH on linux/arm64")
    [sas_call] = [r for r in env.acr.requests if r.path.endswith("/listLogSasUrl")]
    assert sas_call.method == "POST" and sas_call.params == {"api-version": "2025-03-01-preview"}
    assert [r.path for r in env.acr.requests if r.path.startswith("/logs/")] == [f"/logs/{run_id}"]
    assert LOG_SAS_SIGNATURE not in record.model_dump_json()
    assert LOG_SAS_SIGNATURE not in caplog.text
    assert _states(plane, [index, *children]) == ["Failed"] * 5
