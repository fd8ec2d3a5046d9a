"""``slipway doctor`` against the local defaults, broken settings, and a real Azurite and ACR server."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.acr.run_backend import AcrBackend
from shared.app.cli import main
from shared.app.doctor import PROBE_PREFIX, Doctor, DoctorReport, Status
from shared.platform.oci import RegistryError
from shared.platform.queue.port import OutgoingMessage
from tests.support.acr_server import AcrServer, StaticTokenCredential
from tests.support.azurite import AzuriteServer, dead_storage_connection_string
from tests.support.ports import free_port
from tests.support.registry import OciRegistry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "slipway.yaml"
# Every setting the doctor could pick up from the developer's or CI's environment.
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
    "SLIPWAY_LEDGER_CONTAINER",
    "SLIPWAY_STATE_CONTAINER",
)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A deployment-like folder with slipway.yaml, as the working directory, with a clean environment."""
    for name in SCRUBBED:
        monkeypatch.delenv(name, raising=False)
    shutil.copy(EXAMPLE, tmp_path / "slipway.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLIPWAY_STATE_DIR", str(tmp_path / ".slipway"))
    return tmp_path


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _doctor_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["doctor", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def _checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in report["checks"]}


# --------------------------------------------------------------------------------- local


def test_local_defaults_are_all_green_and_create_nothing(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _tree(workdir)
    code, report = _doctor_json(capsys)
    assert code == 0, report
    assert report["ok"] is True and report["mode"] == "local"
    checks = _checks(report)
    assert set(checks) == {
        "config",
        "settings",
        "schedules",
        "secrets",
        "queue",
        "ledger",
        "ledger write",
        "state",
        "cache",
        "registry",
        "tools",
    }
    assert {c["status"] for c in checks.values()} <= {"pass", "skip"}
    assert checks["config"]["status"] == "pass" and "2 targets" in checks["config"]["detail"]
    assert checks["registry"]["status"] == "skip"  # dry-run dispatch
    assert _tree(workdir) == before, "the doctor created something"


def test_local_state_in_use_is_checked_and_the_probe_is_removed(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.platform.queue.local import LocalQueue

    state = workdir / ".slipway"
    (state / "ledger").mkdir(parents=True)
    with LocalQueue(state / "queue.sqlite3", name="build-requests") as queue:
        queue.send([OutgoingMessage(body=b"{}", message_id="m1")])
    before = _tree(workdir)
    code, report = _doctor_json(capsys)
    assert code == 0, report
    checks = _checks(report)
    assert "1 message(s) ready" in checks["queue"]["detail"]
    assert "written to" in checks["ledger write"]["detail"] and "deleted" in checks["ledger write"]["detail"]
    assert not [p for p in (state / "ledger").iterdir() if p.name.startswith(PROBE_PREFIX)]
    assert _tree(workdir) == before


def test_table_output_and_exit_code(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "all checks passed" in out and "ledger write" in out


@pytest.mark.parametrize(
    ("env", "check", "detail", "fix"),
    [
        ({"ACR_NAME": "reg"}, "settings", "ACR_SUBSCRIPTION_ID, ACR_RESOURCE_GROUP missing", "set ACR_SUB"),
        (
            {"GITHUB_WEBHOOK_SECRET": "@Microsoft.KeyVault(VaultName=kv;SecretName=github-webhook-secret)"},
            "settings",
            "GITHUB_WEBHOOK_SECRET",
            "Key Vault Secrets User",
        ),
        ({"SLIPWAY_CONFIG": "missing.yaml"}, "config", "missing.yaml", "SLIPWAY_CONFIG"),
        ({"SLIPWAY_STATE_DIR": "slipway.yaml/state"}, "ledger write", "not a directory", "SLIPWAY_STATE_DIR"),
    ],
)
def test_broken_settings_are_named_with_their_fix(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    env: Mapping[str, str],
    check: str,
    detail: str,
    fix: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, report = _doctor_json(capsys)
    assert code == 1
    assert report["ok"] is False
    failed = {name: c for name, c in _checks(report).items() if c["status"] == "fail"}
    assert check in failed, report
    assert detail in failed[check]["detail"]
    assert fix in failed[check]["fix"]


def test_an_invalid_configuration_is_named_with_file_and_line(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "slipway.yaml").write_text(
        "version: 1\nregistry: r.azurecr.io\ntargets:\n  - name: 1\n    bogus: x\n"
    )
    code, report = _doctor_json(capsys)
    assert code == 1
    config = _checks(report)["config"]
    assert config["status"] == "fail" and "slipway.yaml:" in config["detail"]
    assert "slipway config validate" in config["fix"]
    # What depends on the configuration is skipped, not failed a second time.
    assert _checks(report)["cache"]["status"] == "skip"


def test_a_configuration_whose_builds_the_renderer_refuses_fails(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The models accept it; every build of the target would be refused (issue #17 item 6).
    (workdir / "slipway.yaml").write_text(
        "registry: r.azurecr.io\ntargets:\n  - name: web\n    repo: https://github.com/c/web\n"
        "    image: c/web\n    dockerfile: ./docker/../Dockerfile\n"
    )
    code, report = _doctor_json(capsys)
    assert code == 1
    config = _checks(report)["config"]
    assert config["status"] == "fail"
    assert "slipway.yaml:6: targets[0].dockerfile:" in config["detail"]


def test_default_branch_warnings_are_in_the_config_detail(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "slipway.yaml").write_text(
        "registry: r.azurecr.io\ntargets:\n  - name: web\n    repo: https://bitbucket.org/c/web\n"
        "    image: c/web\n    branches: [master, develop]\n"
    )
    _code, report = _doctor_json(capsys)
    config = _checks(report)["config"]
    assert config["status"] == "pass" and "set default_branch" in config["detail"]


def test_azure_mode_names_every_missing_setting(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBSITE_SITE_NAME", "func-slipway")  # running on the Functions host
    code, report = _doctor_json(capsys)
    assert code == 1 and report["mode"] == "azure"
    detail = _checks(report)["settings"]["detail"]
    for name in (
        "ServiceBusConnection__fullyQualifiedNamespace",
        "AzureWebJobsStorage__accountName",
        "ACR_NAME",
    ):
        assert name in detail


# --------------------------------------------------------------------------------- Azurite + ACR


@pytest.fixture
def acr_settings(acr_server: AcrServer) -> Iterator[dict[str, str]]:
    yield {"ACR_SUBSCRIPTION_ID": "sub", "ACR_RESOURCE_GROUP": "rg", "ACR_NAME": "slipwayreg"}


def _backend_factory(server: AcrServer) -> Any:
    def build(settings: Mapping[str, str]) -> AcrBackend:
        return AcrBackend(
            subscription_id=settings["ACR_SUBSCRIPTION_ID"],
            resource_group=settings["ACR_RESOURCE_GROUP"],
            registry_name=settings["ACR_NAME"],
            credential=StaticTokenCredential(),
            base_url=server.base_url,
            connection_verify=server.ca_path,
        )

    return build


def _azurite_settings(
    azurite: AzuriteServer, workdir: Path, *, ledger: str, state: str, cache: str
) -> dict[str, str]:
    config = EXAMPLE.read_text().replace("container: buildkit-cache", f"container: {cache}", 1)
    (workdir / "slipway.yaml").write_text(config)
    return {
        "AzureWebJobsStorage": azurite.connection_string,
        "SLIPWAY_CACHE_CONNECTION_STRING": azurite.connection_string,
        "SLIPWAY_LEDGER_CONTAINER": ledger,
        "SLIPWAY_STATE_CONTAINER": state,
        "SLIPWAY_STATE_DIR": str(workdir / ".slipway"),
        "SLIPWAY_CACHE_ACCOUNT_KEY": azurite.account_key,
        "GITHUB_WEBHOOK_SECRET": "s3cret",
    }


def _container_names(azurite: AzuriteServer) -> list[str]:
    return sorted(c.name for c in azurite.service_client().list_containers())


class _NoRegistry:
    """Stands in for the tool mirror where a test is not about it: no call leaves the machine."""

    def resolve_digest(self, reference: object) -> str:
        raise RegistryError(f"{reference}: no registry in this test")


def _run(settings: Mapping[str, str], workdir: Path, server: AcrServer) -> DoctorReport:
    now = datetime.now(UTC)
    return Doctor(
        settings,
        app_root=workdir,
        backend_factory=_backend_factory(server),
        registry_clients=lambda _settings: lambda _registry: _NoRegistry(),  # type: ignore[arg-type,return-value]
        clock=lambda: now,
    ).run()


def test_the_tool_images_must_be_in_the_mirror_before_a_real_run_pulls_them(
    workdir: Path, acr_server: AcrServer, acr_settings: dict[str, str], oci_registry: OciRegistry
) -> None:
    """The real registry stands in for the mirror; the doctor's own client reads it."""
    import uuid

    from shared.model.config import parse_config
    from shared.model.tool_images import resolve_tools

    mirror = f"t{uuid.uuid4().hex[:10]}"
    text = (
        f"registry: {oci_registry.host}\ntools:\n  mirror: '{{registry}}/{mirror}'\ntargets:\n"
        "  - name: web\n    repo: https://github.com/contoso/web\n    image: contoso/web\n"
    )
    (workdir / "slipway.yaml").write_text(text)
    pulled = [tool.pulled for tool in resolve_tools(parse_config(text, source="s.yaml")).values()]
    assert len(pulled) == 5 and all(p.startswith(f"{oci_registry.host}/{mirror}/") for p in pulled)
    settings = {**acr_settings, "SLIPWAY_STATE_DIR": str(workdir / ".slipway")}

    def tools_check() -> Any:
        report = Doctor(settings, app_root=workdir, backend_factory=_backend_factory(acr_server)).run()
        return next(c for c in report.checks if c.name == "tools")

    def push(reference: str) -> None:
        repository, tag = reference.removeprefix(f"{oci_registry.host}/").rsplit(":", 1)
        oci_registry.push_image(repository, tag)

    for reference in pulled[:3]:
        push(reference)
    check = tools_check()
    assert check.status is Status.FAIL and "2 of 5 tool image(s) missing" in check.detail
    assert pulled[3] in check.detail and pulled[4] in check.detail and pulled[0] not in check.detail
    assert "import-tools.sh" in (check.fix or "") and "mirror: null" in (check.fix or "")
    for reference in pulled[3:]:
        push(reference)
    check = tools_check()
    assert check.status is Status.PASS and "5 tool image(s) present" in check.detail


def test_without_real_dispatch_the_tool_mirror_is_not_asked(workdir: Path) -> None:
    (workdir / "slipway.yaml").write_text(EXAMPLE.read_text())
    report = Doctor({"SLIPWAY_STATE_DIR": str(workdir / ".slipway")}, app_root=workdir).run()
    check = next(c for c in report.checks if c.name == "tools")
    assert check.status is Status.SKIP and "dry run" in check.detail


def test_azurite_without_the_ledger_container(
    azurite: AzuriteServer, workdir: Path, acr_server: AcrServer, acr_settings: dict[str, str]
) -> None:
    state = azurite.new_container("state").container_name
    cache = azurite.new_container("cache").container_name
    settings = {
        **_azurite_settings(azurite, workdir, ledger="ledger-missing", state=state, cache=cache),
        **acr_settings,
    }
    before = _container_names(azurite)
    report = _run(settings, workdir, acr_server)
    checks = {c.name: c for c in report.checks}
    assert report.ok is False
    assert checks["ledger"].status is Status.FAIL
    assert "'ledger-missing' does not exist" in checks["ledger"].detail
    assert "never creates containers" in (checks["ledger"].fix or "")
    assert checks["ledger write"].status is Status.SKIP
    assert checks["state"].status is Status.PASS
    assert checks["cache"].status is Status.PASS
    assert checks["registry"].status is Status.PASS and "runs listable" in checks["registry"].detail
    assert checks["secrets"].status is Status.PASS
    # Service Bus is not configured, and the report says so (azure mode: storage is set).
    assert checks["settings"].status is Status.FAIL
    assert "ServiceBusConnection__fullyQualifiedNamespace" in checks["settings"].detail
    assert _container_names(azurite) == before, "the doctor created a container"
    list_calls = [r for r in acr_server.requests if r.path.endswith("/runs")]
    assert list_calls, "the registry check lists runs"


def test_azurite_with_every_container_probes_the_ledger_and_deletes_the_probe(
    azurite: AzuriteServer, workdir: Path, acr_server: AcrServer, acr_settings: dict[str, str]
) -> None:
    ledger = azurite.new_container("ledger")
    state = azurite.new_container("state").container_name
    cache = azurite.new_container("cache").container_name
    settings = {
        **_azurite_settings(azurite, workdir, ledger=ledger.container_name, state=state, cache=cache),
        **acr_settings,
    }
    report = _run(settings, workdir, acr_server)
    checks = {c.name: c for c in report.checks}
    for name in ("config", "secrets", "queue", "ledger", "ledger write", "state", "cache", "registry"):
        assert checks[name].status is Status.PASS, checks[name]
    assert list(ledger.list_blobs()) == [], "the probe blob was left behind"


def test_a_registry_that_refuses_is_named(
    azurite: AzuriteServer, workdir: Path, acr_server: AcrServer, acr_settings: dict[str, str]
) -> None:
    acr_server.fail_next(403, times=5)
    settings = {**acr_settings, "SLIPWAY_STATE_DIR": str(workdir / ".slipway")}
    report = _run(settings, workdir, acr_server)
    registry = next(c for c in report.checks if c.name == "registry")
    assert registry.status is Status.FAIL and "slipwayreg" in registry.detail
    assert "Container Registry Tasks Contributor" in (registry.fix or "")


def test_missing_run_secrets_are_named_per_target(
    workdir: Path, acr_server: AcrServer, acr_settings: dict[str, str]
) -> None:
    settings = {**acr_settings, "SLIPWAY_STATE_DIR": str(workdir / ".slipway")}
    report = _run(settings, workdir, acr_server)
    secrets = next(c for c in report.checks if c.name == "secrets")
    assert secrets.status is Status.FAIL and "SLIPWAY_CACHE_ACCOUNT_KEY" in secrets.detail


def test_the_registry_check_lists_recent_quick_runs(
    workdir: Path, acr_server: AcrServer, acr_settings: dict[str, str]
) -> None:
    settings = {**acr_settings, "SLIPWAY_STATE_DIR": str(workdir / ".slipway")}
    _run(settings, workdir, acr_server)
    [call] = [r for r in acr_server.requests if r.path.endswith("/runs")]
    assert "CreateTime ge" in call.params["$filter"] and "QuickRun" in call.params["$filter"]


def test_storage_that_refuses_connections_fails_at_once_not_after_the_sdks_backoff(
    workdir: Path, acr_server: AcrServer, acr_settings: dict[str, str]
) -> None:
    """With the SDK's default retries a dead endpoint took over a minute per check; the doctor
    makes one attempt and names the endpoint."""
    dead = free_port()
    connection = dead_storage_connection_string(dead)
    (workdir / "slipway.yaml").write_text(EXAMPLE.read_text())
    settings = {
        "AzureWebJobsStorage": connection,
        "SLIPWAY_CACHE_CONNECTION_STRING": connection,
        "SLIPWAY_STATE_DIR": str(workdir / ".slipway"),
        "GITHUB_WEBHOOK_SECRET": "s3cret",
        **acr_settings,
    }
    started = time.monotonic()
    report = _run(settings, workdir, acr_server)
    elapsed = time.monotonic() - started
    checks = {c.name: c for c in report.checks}
    for name in ("ledger", "state", "cache"):
        assert checks[name].status is Status.FAIL, checks[name]
        assert str(dead) in checks[name].detail
    assert elapsed < 30, f"the storage checks took {elapsed:.0f} s"
