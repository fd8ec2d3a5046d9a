"""``slipway doctor`` lists every problem in one run, one line each with its setting and fix; a bad
timer schedule is named by the doctor and by ``slipway serve`` instead of a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from shared.app.cli import main
from shared.platform import identity
from tests.support.loopback_server import LoopbackServer, bind_loopback, port_of, serving

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "slipway.yaml"
SLIPWAY = Path(sys.executable).with_name("slipway")
SCRUBBED = (
    "AzureWebJobsStorage",
    "ServiceBusConnection",
    "ServiceBusConnection__fullyQualifiedNamespace",
    "ACR_SUBSCRIPTION_ID",
    "ACR_RESOURCE_GROUP",
    "ACR_NAME",
    "WEBSITE_SITE_NAME",
    "SLIPWAY_CACHE_CONNECTION_STRING",
    "SLIPWAY_CONFIG",
    "SLIPWAY_STATE_DIR",
    "SLIPWAY_RECONCILE_SCHEDULE",
    "SLIPWAY_SCHEDULE_TIMER",
    "SLIPWAY_BASE_IMAGE_POLL_SCHEDULE",
    "SLIPWAY_CACHE_PRUNE_SCHEDULE",
    "SLIPWAY_IMAGE_PRUNE_SCHEDULE",
    # Credentials azure-identity would find in a developer's or CI's environment.
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in SCRUBBED:
        monkeypatch.delenv(name, raising=False)
    shutil.copy(EXAMPLE, tmp_path / "slipway.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, dict[str, Any]], str]:
    code = main(["doctor", "--json", *args])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    return code, {check["name"]: check for check in report["checks"]}, captured.err


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("*/5 * * * *", "5 field(s), NCRONTAB needs six"),  # classic cron: the seconds are missing
        ("0 61 * * * *", "minute"),
        ("01:00:00", "1 field(s)"),  # a TimeSpan: App Service plans only
        ("0 0 0 * * * *", "7 field(s)"),
    ],
)
def test_an_invalid_schedule_setting_is_named_with_its_value(
    value: str, why: str, workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLIPWAY_BASE_IMAGE_POLL_SCHEDULE", value)
    code, checks, err = _doctor(capsys)
    assert code == 1 and err == ""
    schedules = checks["schedules"]
    assert schedules["status"] == "fail"
    assert schedules["detail"].startswith(f"SLIPWAY_BASE_IMAGE_POLL_SCHEDULE={value!r}: ")
    assert why in schedules["detail"] and "\n" not in schedules["detail"]
    assert "six NCRONTAB fields" in schedules["fix"]


def test_valid_schedules_pass(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLIPWAY_RECONCILE_SCHEDULE", "30 * * * * *")
    monkeypatch.setenv("SLIPWAY_IMAGE_PRUNE_SCHEDULE", "0 30 9 * Jan Mon")
    code, checks, _err = _doctor(capsys)
    assert code == 0 and checks["schedules"]["status"] == "pass"
    assert checks["schedules"]["detail"].startswith("2 timer schedule(s) set")


def test_every_problem_is_listed_in_one_run(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "slipway.yaml").unlink()
    monkeypatch.setenv("SLIPWAY_SCHEDULE_TIMER", "* * * * *")
    monkeypatch.setenv("SLIPWAY_STATE_DIR", str(workdir / "a-file"))
    (workdir / "a-file").write_text("not a folder")
    monkeypatch.setenv(
        "GITHUB_WEBHOOK_SECRET", "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/x)"
    )
    code, checks, err = _doctor(capsys)
    assert code == 1 and err == ""
    failed = {name for name, check in checks.items() if check["status"] == "fail"}
    assert failed == {"config", "settings", "schedules", "ledger write"}
    assert "SLIPWAY_CONFIG" in checks["config"]["fix"]
    assert "GITHUB_WEBHOOK_SECRET" in checks["settings"]["detail"]
    assert "SLIPWAY_SCHEDULE_TIMER" in checks["schedules"]["detail"]
    assert "SLIPWAY_STATE_DIR" in checks["ledger write"]["fix"]
    for check in checks.values():
        assert "\n" not in check["detail"] and "\n" not in (check["fix"] or "")


class _IdentityEndpoint(BaseHTTPRequestHandler):
    """App Service's identity endpoint, refusing: the app has no identity with that client id."""

    def do_GET(self) -> None:
        data = json.dumps({"error": {"code": "identity_not_found", "message": "no such identity"}}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def no_identity(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A sandbox whose identity endpoint refuses every token (no network beyond loopback), and no
    Azure CLI, PowerShell or azd on PATH: every credential azure-identity tries fails."""
    server = bind_loopback(LoopbackServer, _IdentityEndpoint)
    with serving(server, name="identity-endpoint"):
        monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{port_of(server)}/msi/token")
        monkeypatch.setenv("IDENTITY_HEADER", "header")
        monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
        monkeypatch.setenv("HOME", os.devnull)  # no shared token cache
        identity._shared_credential.cache_clear()
        try:
            yield
        finally:
            identity._shared_credential.cache_clear()


def test_a_missing_credential_is_one_line_naming_the_setting(
    workdir: Path, no_identity: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {
        "ACR_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
        "ACR_RESOURCE_GROUP": "rg",
        "ACR_NAME": "reg",
        "AZURE_CLIENT_ID": "11111111-1111-1111-1111-111111111111",
    }.items():
        monkeypatch.setenv(name, value)
    code, checks, err = _doctor(capsys)
    assert code == 1
    registry = checks["registry"]
    assert registry["status"] == "fail"
    assert registry["detail"].startswith("no credential: ")
    assert "AZURE_CLIENT_ID" in registry["fix"] and "az login" in registry["fix"]
    # azure-identity's account of every credential it tried is neither in the report nor logged.
    assert "Attempted credentials" not in json.dumps(checks) and "Attempted credentials" not in err
    assert "Traceback" not in err


def test_serve_names_an_invalid_schedule_setting_at_start_up(workdir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env |= {"SLIPWAY_CACHE_PRUNE_SCHEDULE": "0 30 3 * *", "SLIPWAY_STATE_DIR": str(workdir / "state")}
    done = subprocess.run(
        [str(SLIPWAY), "serve", "--port", "0"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert line == (
        "error: timer schedule SLIPWAY_CACHE_PRUNE_SCHEDULE='0 30 3 * *': 5 field(s), NCRONTAB needs six: "
        "{second} {minute} {hour} {day} {month} {day-of-week}"
    )
