"""ACR quarantine: the client against a loopback HTTPS ACR (token exchange + manifest PATCH), and
reconciliation of finished runs: gates named in the ledger and the commit status, digests lifted
from quarantine once for a successful run and never for a failed one."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from shared.config import SlipwayConfig
from shared.quarantine import PASSED, QuarantineClient
from shared.reconcile import Reconciler
from shared.run_outcome import SupplyChainOutcome
from tests.support.acr_server import AcrServer
from tests.support.git_hosts import GitHostServer
from tests.support.registry import Answer, FakeAcr, RecordedRequest, _covers, loopback_tls, serve_loopback
from tests.test_reconcile import Env

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
REPO = "dougbu/azure-test"
_MANIFEST_RE = re.compile(r"/acr/v1/(?P<repo>.+)/_manifests/(?P<digest>sha256:[0-9a-f]{64})")


class QuarantineAcr(FakeAcr):
    """``FakeAcr``'s token exchange plus ``GET``/``PATCH /acr/v1/{repo}/_manifests/{digest}``."""

    def __init__(self, ca_path: str) -> None:
        super().__init__(ca_path)
        self.states: dict[tuple[str, str], dict[str, str]] = {}
        self.patches: list[RecordedRequest] = []
        self._state_lock = threading.Lock()

    def quarantine(self, repo: str, digest: str) -> None:
        self.states[(repo, digest)] = {"quarantineState": "Quarantined"}

    def handle(self, request: RecordedRequest) -> Answer:
        match = _MANIFEST_RE.fullmatch(request.path)
        if match is None:
            return super().handle(request)
        with self._state_lock:
            self.requests.append(request)
        repo, digest = match.group("repo"), match.group("digest")
        scope = f"repository:{repo}:pull" + (",push" if request.method == "PATCH" else "")
        auth = request.headers.get("authorization", "")
        grant = self._access_tokens.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None
        if grant is None or not _covers(grant, scope):
            challenge = (
                f'Bearer realm="{self.url}/oauth2/token",service="{self.login_server}",scope="{scope}"'
            )
            return Answer(401, {"WWW-Authenticate": challenge}, b'{"errors": [{"code": "UNAUTHORIZED"}]}')
        state = self.states.get((repo, digest))
        if state is None:
            return Answer(404, {}, b'{"errors": [{"code": "MANIFEST_UNKNOWN"}]}')
        if request.method == "GET":
            body = {"registry": self.login_server, "imageName": repo, "manifest": {"digest": digest, **state}}
            return Answer(200, {"Content-Type": "application/json"}, json.dumps(body).encode())
        if request.method != "PATCH" or request.headers.get("content-type") != "application/json":
            return Answer(400, {}, b'{"errors": [{"code": "BAD_REQUEST"}]}')
        patch = json.loads(request.body)
        if set(patch) != {"quarantineState", "quarantineDetails"} or not isinstance(
            patch["quarantineDetails"], str
        ):
            return Answer(400, {}, b'{"errors": [{"code": "BAD_REQUEST"}]}')
        with self._state_lock:
            self.patches.append(request)
            state.update(patch)
        return Answer(200, {"Content-Type": "application/json"}, b"{}")


@pytest.fixture
def quarantine_acr(oci_test_ca: tuple[trustme.CA, str]) -> Iterator[QuarantineAcr]:
    ca, ca_path = oci_test_ca
    acr = QuarantineAcr(ca_path)
    with serve_loopback(acr.handle, tls=loopback_tls(ca)) as port:
        acr.port = port
        yield acr


def _client(acr: QuarantineAcr) -> QuarantineClient:
    return QuarantineClient.for_acr(acr.login_server, acr.credential, verify=acr.ca_path)


def test_marks_a_digest_passed_through_the_token_exchange(quarantine_acr: QuarantineAcr) -> None:
    quarantine_acr.quarantine(REPO, DIGEST)
    client = _client(quarantine_acr)
    details = {"run": "ca1", "scanner": "trivy@sha256:" + "7" * 64, "result": "scan gate passed"}
    assert client.set_quarantine(REPO, DIGEST, PASSED, details) is True

    [patch] = quarantine_acr.patches
    assert (patch.method, patch.path) == ("PATCH", f"/acr/v1/{REPO}/_manifests/{DIGEST}")
    assert patch.headers["authorization"] in {f"Bearer {t}" for t in quarantine_acr.issued_access_tokens}
    body = json.loads(patch.body)
    assert body["quarantineState"] == "Passed"
    assert json.loads(body["quarantineDetails"]) == details  # a string holding JSON
    [exchange] = quarantine_acr.calls("/oauth2/exchange")
    assert exchange.form["access_token"] == [quarantine_acr.aad_token]
    scopes = [r.form["scope"] for r in quarantine_acr.calls("/oauth2/token")]
    assert [f"repository:{REPO}:pull,push"] in scopes
    assert client.quarantine_state(REPO, DIGEST) == "Passed"
    # Idempotent: a digest already Passed is read, not patched again.
    assert client.set_quarantine(REPO, DIGEST, PASSED, details) is False
    assert len(quarantine_acr.patches) == 1


def test_refuses_a_tag_or_an_unknown_state(quarantine_acr: QuarantineAcr) -> None:
    client = _client(quarantine_acr)
    with pytest.raises(ValueError, match="digest"):
        client.set_quarantine(REPO, "latest", PASSED, {})
    with pytest.raises(ValueError, match="Passed or Failed"):
        client.set_quarantine(REPO, DIGEST, "Quarantined", {})
    assert quarantine_acr.requests == []


# --------------------------------------------------------------------------------------------
# Reconciliation


def _config(*, quarantine: bool) -> SlipwayConfig:
    return SlipwayConfig.model_validate(
        {
            "registry": "slipway.azurecr.io",
            "quarantine": quarantine,
            "scanner": {"image": "docker.io/aquasec/trivy:0.58.1@sha256:" + "7" * 64},
            "targets": [
                {
                    "name": "azure-test",
                    "repo": "https://github.com/dougbu/AzureTest",
                    "image": REPO,
                    "scan": {},
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


def _reconcile(env: Env, acr: QuarantineAcr, logs: Logs, *, quarantine: bool = True) -> Any:
    outcome = SupplyChainOutcome(
        config=lambda: _config(quarantine=quarantine),
        log_lines=logs,
        quarantine=lambda _registry: _client(acr),
        clock=env.clock,
    )
    return Reconciler(
        ledger=env.ledger, backend=env.backend, notifier=env.notifier(), clock=env.clock, on_finished=outcome
    ).run()


PASSED_LOG = f"""2026/01/01 12:00:00 Executing step ID: build
#12 0.3 slipway-result: pushed slipway.azurecr.io/{REPO}@{OTHER}
slipway-result: pushed slipway.azurecr.io/{REPO}@{DIGEST}
slipway-result: pushed slipway.azurecr.io/someone/else@{OTHER}
slipway-result: platform-check passed
slipway-result: scan linux/amd64 passed
slipway-result: scan-gate passed
slipway-result: tagged slipway.azurecr.io/{REPO}@{DIGEST}
"""


def test_a_successful_run_is_lifted_from_quarantine_once(env: Env, quarantine_acr: QuarantineAcr) -> None:
    quarantine_acr.quarantine(REPO, DIGEST)
    request_id, run_id, logs = _dispatched(env, PASSED_LOG)
    env.acr.set_status(run_id, "Running")
    _reconcile(env, quarantine_acr, logs)
    assert logs.reads == [] and quarantine_acr.patches == []  # not ended: nothing read, nothing lifted

    env.acr.set_status(run_id, "Succeeded")
    _reconcile(env, quarantine_acr, logs)
    _reconcile(env, quarantine_acr, logs)
    # Only the digest printed at column 0 under the request's repository; once.
    [patch] = quarantine_acr.patches
    assert patch.path == f"/acr/v1/{REPO}/_manifests/{DIGEST}"
    details = json.loads(json.loads(patch.body)["quarantineDetails"])
    assert details["run"] == run_id and details["result"] == "scan gate passed"
    assert details["scanner"].startswith("docker.io/aquasec/trivy:0.58.1@sha256:")
    record = env.record(request_id)
    assert (record.run_status, record.following, record.commit_status) == ("Succeeded", False, "success")
    assert [e["event"] for e in record.history if e["event"].startswith("quarantine")] == [
        "quarantine_passed"
    ]
    assert logs.reads == [run_id]


def test_a_report_line_without_the_runs_nonce_is_not_believed(
    env: Env, quarantine_acr: QuarantineAcr
) -> None:
    """A build that got a plain report line to column 0 still cannot lift another digest."""
    quarantine_acr.quarantine(REPO, OTHER)
    forged = f"slipway-result: pushed slipway.azurecr.io/{REPO}@{OTHER}\nslipway-result: scan-gate passed\n"
    request_id, run_id, logs = _dispatched(env, forged=forged)
    env.acr.set_status(run_id, "Succeeded")
    _reconcile(env, quarantine_acr, logs)
    assert logs.reads == [run_id]
    assert quarantine_acr.patches == []
    assert quarantine_acr.states[(REPO, OTHER)]["quarantineState"] == "Quarantined"
    [skipped] = [e for e in env.record(request_id).history if e["event"] == "quarantine_skipped"]
    assert skipped["detail"] == "the run log names no pushed digest"


FAILED_SCAN_LOG = f"""slipway-result: pushed slipway.azurecr.io/{REPO}@{DIGEST}
slipway-result: platform-check passed
slipway-result: scan linux/amd64 passed
slipway-result: scan linux/arm64 failed CRITICAL=2 HIGH=1
slipway-result: scan-report stored application/vnd.slipway.scan-report.trivy.v1+json
slipway-result: scan-gate failed
2026/01/01 12:00:00 failed to run step ID: scan-gate: exit status 1
"""
FAILED_PLATFORM_LOG = f"""slipway-result: pushed slipway.azurecr.io/{REPO}@{DIGEST}
slipway-result: platform-check failed missing linux/arm64
"""


@pytest.mark.parametrize(
    ("log", "sentence"),
    [
        (FAILED_SCAN_LOG, "Scan gate failed: 2 CRITICAL, 1 HIGH on linux/arm64; release tags were not moved"),
        (FAILED_PLATFORM_LOG, "Platform check failed: the pushed image lacks linux/arm64"),
        ("no markers at all\n", "failed during run, err: exit status 1"),
    ],
)
def test_a_failed_run_names_its_gate_and_patches_nothing(
    env: Env, quarantine_acr: QuarantineAcr, log: str, sentence: str
) -> None:
    quarantine_acr.quarantine(REPO, DIGEST)
    request_id, run_id, logs = _dispatched(env, log)
    env.acr.set_status(run_id, "Failed", error="failed during run, err: exit status 1")
    _reconcile(env, quarantine_acr, logs)
    _reconcile(env, quarantine_acr, logs)
    record = env.record(request_id)
    assert sentence in (record.run_error or "")
    assert (record.following, record.commit_status) == (False, "failure")
    status = env.statuses()[-1]
    assert status["state"] == "failure" and sentence[:60] in status["description"]
    if "gate" in sentence or "check" in sentence:
        assert status["description"].startswith(sentence.split(":")[0])  # the gate leads the sentence
    assert quarantine_acr.patches == [] and quarantine_acr.requests == []
    assert quarantine_acr.states[(REPO, DIGEST)]["quarantineState"] == "Quarantined"


def test_without_quarantine_a_successful_run_reads_no_log(env: Env, quarantine_acr: QuarantineAcr) -> None:
    request_id, run_id, logs = _dispatched(env)
    env.acr.set_status(run_id, "Succeeded")
    _reconcile(env, quarantine_acr, logs, quarantine=False)
    assert logs.reads == [] and quarantine_acr.requests == []
    assert env.record(request_id).commit_status == "success"


def test_a_registry_outage_leaves_the_run_followed_for_the_next_tick(
    env: Env, quarantine_acr: QuarantineAcr
) -> None:
    request_id, run_id, logs = _dispatched(env, PASSED_LOG)
    env.acr.set_status(run_id, "Succeeded")
    report = _reconcile(env, quarantine_acr, logs)  # the digest is unknown to the registry: 404
    assert report.errors and env.record(request_id).following is True
    quarantine_acr.quarantine(REPO, DIGEST)
    _reconcile(env, quarantine_acr, logs)
    assert len(quarantine_acr.patches) == 1 and env.record(request_id).following is False


def test_the_run_log_is_read_through_the_sdk_and_its_sas_link_is_never_kept(
    env: Env, quarantine_acr: QuarantineAcr, caplog: pytest.LogCaptureFixture
) -> None:
    """The real path: ``runs.get_log_sas_url`` over HTTPS, then the log blob behind its SAS link."""
    from shared.run_outcome import AcrRunLog
    from tests.support.acr_server import LOG_SAS_SIGNATURE

    quarantine_acr.quarantine(REPO, DIGEST)
    request_id = env.dispatch()
    run_id = env.record(request_id).run_id
    assert run_id is not None
    marker = env.record(request_id).result_marker
    assert marker is not None
    env.acr.set_log(run_id, FAILED_SCAN_LOG.replace("slipway-result:", marker))
    env.acr.set_status(run_id, "Failed", error="failed during run, err: exit status 1")
    outcome = SupplyChainOutcome(
        config=lambda: _config(quarantine=True),
        log_lines=AcrRunLog(env.backend),
        quarantine=lambda _registry: _client(quarantine_acr),
        clock=env.clock,
    )
    with caplog.at_level("DEBUG"):
        Reconciler(
            ledger=env.ledger,
            backend=env.backend,
            notifier=env.notifier(),
            clock=env.clock,
            on_finished=outcome,
        ).run()
    record = env.record(request_id)
    assert (record.run_error or "").startswith("Scan gate failed: 2 CRITICAL, 1 HIGH on linux/arm64")
    [sas_call] = [r for r in env.acr.requests if r.path.endswith("/listLogSasUrl")]
    assert sas_call.method == "POST" and sas_call.params == {"api-version": "2025-03-01-preview"}
    assert [r.path for r in env.acr.requests if r.path.startswith("/logs/")] == [f"/logs/{run_id}"]
    assert LOG_SAS_SIGNATURE not in record.model_dump_json()
    assert LOG_SAS_SIGNATURE not in caplog.text
    assert quarantine_acr.patches == []
