"""The azd postprovision hook that imports the tool images, run with a fake ``az`` on PATH.

Facts from outside, with their sources:

* azd command hooks live under ``hooks:`` in azure.yaml; ``postprovision`` runs after the Azure
  resources are created, with ``shell`` (``sh`` | ``pwsh``), ``run`` (an inline script or a path),
  ``continueOnError`` and ``interactive`` (learn.microsoft.com/azure/developer/azure-developer-cli/
  azd-extensibility; MicrosoftDocs/azure-dev-docs articles/azure-developer-cli/azd-extensibility.md).
  azd gives the hook its environment, main.bicep's outputs included (same page, "Use environment
  variables with hooks"; Azure/azure-dev cli/azd/pkg/ext/hooks_runner.go: ``h.env.Environ()``), and
  runs an ``sh`` hook file directly on POSIX, with ``bash`` on Windows (cli/azd/pkg/tools/bash/bash.go).
* ``az acr import --name <registry> --source <image> --image <repo:tag>``; ``--source`` takes
  ``[registry/]repository[:tag]`` or ``[registry/]repository@digest``; ``--repository`` copies
  without a tag; ``--force`` overwrites an existing tag; ``--resource-group``
  (learn.microsoft.com/azure/container-registry/container-registry-import-images; Azure/azure-cli
  src/azure-cli/azure/cli/command_modules/acr/_params.py).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shared.model.config import ToolImages
from shared.model.image_refs import parse_image_reference

ROOT = Path(__file__).resolve().parents[1]
HOOK = ROOT / "infra" / "hooks" / "import-tools.sh"
REGISTRY = "crslipwaytest"
GROUP = "rg-slipway-test"
DIGEST = "sha256:" + "ab" * 32
TRIVY_DIGEST = "sha256:" + "7" * 64
FAKE_AZ = """#!{python}
import json, os, sys
with open(os.environ["FAKE_AZ_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
sys.exit(int(os.environ.get("FAKE_AZ_EXIT", "0")))
"""


def _slipway_cli() -> str:
    cli = Path(sys.executable).parent / "slipway"
    assert cli.is_file(), "the tests run from the virtualenv that has the slipway CLI"
    return str(cli)


def _run(tmp_path: Path, config: str, **env: str) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """Run the hook as azd would (its environment) under ``bash -euo pipefail``; return az's argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "az"
    fake.write_text(FAKE_AZ.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "slipway.yaml").write_text(config)
    log = tmp_path / "az.log"
    base = {key: value for key, value in os.environ.items() if not key.startswith(("SLIPWAY_", "FAKE_AZ"))}
    environment = base | {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLIPWAY_CONFIG": str(tmp_path / "slipway.yaml"),
        "SLIPWAY_CLI": _slipway_cli(),
        "SLIPWAY_REGISTRY": REGISTRY,
        "SLIPWAY_REGISTRY_RESOURCE_GROUP": GROUP,
        "FAKE_AZ_LOG": str(log),
        **env,
    }
    environment = {key: value for key, value in environment.items() if value != "<unset>"}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", str(HOOK)],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def _import(source: str, *destination: str) -> list[str]:
    return [
        "acr", "import", "--name", REGISTRY, "--resource-group", GROUP, "--source", source,
        *destination, "--force", "--output", "none",
    ]  # fmt: skip


def test_azure_yaml_runs_the_hook_after_every_provision() -> None:
    hooks = yaml.safe_load((ROOT / "azure.yaml").read_text())["hooks"]
    assert hooks["postprovision"]["shell"] == "sh"
    assert (ROOT / hooks["postprovision"]["run"]).resolve() == HOOK
    assert hooks["postprovision"].get("continueOnError", False) is False  # a failed import stops azd
    assert HOOK.stat().st_mode & stat.S_IXUSR, "azd runs the file itself on POSIX: it must be executable"
    assert HOOK.read_text().startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in HOOK.read_text()


def test_the_hook_imports_exactly_the_images_the_default_configuration_pins(tmp_path: Path) -> None:
    result, calls = _run(tmp_path, f"registry: {REGISTRY}.azurecr.io\n")
    assert result.returncode == 0, result.stderr
    expected = []
    for role, field in ToolImages.model_fields.items():
        if role == "mirror":
            continue
        # The documented layout: <registry>/slipway-tools/<upstream registry>/<repository>:<tag>.
        reference = parse_image_reference(field.default)
        expected.append(_import(str(reference), "--image", f"slipway-tools/{reference.name}:{reference.tag}"))
    assert len(expected) == 5
    assert sorted(calls) == sorted(expected)
    assert f"5 tool image(s) in {REGISTRY}" in result.stdout


def test_digest_pins_are_imported_by_digest_and_the_scanner_comes_along(tmp_path: Path) -> None:
    config = f"""\
registry: {REGISTRY}.azurecr.io
tools:
  buildkit: moby/buildkit:v0.32.2@{DIGEST}
scanner:
  image: aquasec/trivy@{TRIVY_DIGEST}
"""
    result, calls = _run(tmp_path, config)
    assert result.returncode == 0, result.stderr
    assert (
        _import(
            f"docker.io/moby/buildkit@{DIGEST}", "--image", "slipway-tools/docker.io/moby/buildkit:v0.32.2"
        )
        in calls
    )
    # Pinned by digest alone: copied without a tag (az acr import --repository).
    assert (
        _import(
            f"docker.io/aquasec/trivy@{TRIVY_DIGEST}", "--repository", "slipway-tools/docker.io/aquasec/trivy"
        )
        in calls
    )
    assert len(calls) == 6


def test_a_failed_import_fails_the_hook_at_once(tmp_path: Path) -> None:
    result, calls = _run(tmp_path, f"registry: {REGISTRY}.azurecr.io\n", FAKE_AZ_EXIT="1")
    assert result.returncode != 0 and len(calls) == 1


@pytest.mark.parametrize(
    ("config", "env", "message"),
    [
        ("registry: other.azurecr.io\n", {}, "pushes to other.azurecr.io, not to the registry crslipwaytest"),
        (f"registry: {REGISTRY}.azurecr.io\ntools: {{buildkit: moby/buildkit}}\n", {}, "is not pinned"),
        (
            f"registry: {REGISTRY}.azurecr.io\n",
            {"SLIPWAY_REGISTRY": "<unset>"},
            "SLIPWAY_REGISTRY is not set",
        ),
    ],
)
def test_the_hook_refuses_before_importing_anything(
    tmp_path: Path, config: str, env: dict[str, str], message: str
) -> None:
    result, calls = _run(tmp_path, config, **env)
    assert result.returncode != 0 and calls == []
    assert message in result.stderr


def test_without_a_mirror_there_is_nothing_to_import(tmp_path: Path) -> None:
    result, calls = _run(tmp_path, f"registry: {REGISTRY}.azurecr.io\ntools: {{mirror: null}}\n")
    assert result.returncode == 0 and calls == []
    assert "nothing to import" in result.stderr


def test_tools_list_json_shows_what_runs_pull(tmp_path: Path) -> None:
    (tmp_path / "slipway.yaml").write_text(f"registry: {REGISTRY}.azurecr.io\n")
    output = subprocess.run(
        [_slipway_cli(), "tools", "list", "--json", "--config", str(tmp_path / "slipway.yaml")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    listing = json.loads(output)
    assert listing["mirror"] == f"{REGISTRY}.azurecr.io/slipway-tools"
    by_role = {row["role"]: row for row in listing["images"]}
    assert by_role["buildkit"] == {
        "role": "buildkit",
        "configured": ToolImages().buildkit,
        "pulled": f"{REGISTRY}.azurecr.io/slipway-tools/{ToolImages().buildkit}",
    }


def test_without_a_resource_group_the_registry_is_found_by_name(tmp_path: Path) -> None:
    result, calls = _run(
        tmp_path, f"registry: {REGISTRY}.azurecr.io\n", SLIPWAY_REGISTRY_RESOURCE_GROUP="<unset>"
    )
    assert result.returncode == 0, result.stderr
    assert len(calls) == 5 and all(call[:4] == ["acr", "import", "--name", REGISTRY] for call in calls)
    assert not any("--resource-group" in call for call in calls)
