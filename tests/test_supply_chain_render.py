"""The supply-chain steps of the rendered task: attestations, push by digest, platform check, scan
gate and release tags, rendered for each combination and run on the emulated agent."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path
from typing import Any

import pytest

from shared.acr.task import RenderError, RunSecrets, render_run
from shared.model.supply_chain import Scanner
from tests.support.agent import FAKE_DIGEST, Agent
from tests.test_task_render import SHELLS, _config, _request, _task

TRIVY = "docker.io/aquasec/trivy:0.58.1@sha256:" + "7" * 64
ORAS = "ghcr.io/oras-project/oras:v1.2.2"
# Pulled from tools.mirror, by default {registry}/slipway-tools/<upstream reference>.
MIRROR = "slipway.azurecr.io/slipway-tools/"
SBOM_FLAG = "--sbom=generator=" + MIRROR + "docker.io/docker/buildkit-syft-scanner:1.12.0"
REPO = "slipway.azurecr.io/team/app"
SCANNER = {"scanner": {"image": TRIVY}}
GATES: dict[str, dict[str, Any]] = {
    "none": {"platform_check": False},
    "platform-check": {},
    "scan": {"platform_check": False, "scan": {"severity": ["CRITICAL"], "ignore_unfixed": True}},
    "both": {"scan": {}},
}
ATTESTATIONS = {
    "off": ({"sbom": False, "provenance": "off"}, ["--sbom=false", "--provenance=false"]),
    "min": ({}, [SBOM_FLAG, "--provenance=mode=min"]),
    "max": ({"sbom": True, "provenance": "max"}, [SBOM_FLAG, "--provenance=mode=max"]),
}
PLATFORMS = [["linux/amd64"], ["linux/amd64", "linux/arm64", "linux/arm/v7"]]


def _spec(gate: str = "both", attestations: str = "min", platforms: list[str] | None = None) -> Any:
    target = {**GATES[gate], "attestations": ATTESTATIONS[attestations][0]}
    request = _request().model_copy(update={"platforms": platforms or ["linux/amd64", "linux/arm64"]})
    return render_run(request, _config(cache=None, target=target, top=SCANNER), RunSecrets())


def _ancestors(steps: list[dict[str, Any]], step_id: str) -> set[str]:
    """Every step ``step_id`` waits for, directly or not (acr-builder: no ``when`` = the previous step)."""
    index = {s["id"]: i for i, s in enumerate(steps)}
    step = steps[index[step_id]]
    direct = step.get("when", [steps[index[step_id] - 1]["id"]] if index[step_id] else [])
    found = set(direct) - {"-"}
    for parent in list(found):
        found |= _ancestors(steps, parent)
    return found


@pytest.mark.parametrize(
    ("gate", "attestations", "platforms"), list(itertools.product(GATES, ATTESTATIONS, PLATFORMS))
)
def test_every_combination_orders_the_gates_before_the_release_tags(
    gate: str, attestations: str, platforms: list[str]
) -> None:
    spec = _spec(gate, attestations, platforms)
    steps = _task(spec)["steps"]
    ids = [s["id"] for s in steps]
    build = spec.scripts["build.sh"]
    for flag in ATTESTATIONS[attestations][1]:
        assert f"set -- \"$@\" '{flag}'\n" in build or f'set -- "$@" {flag}\n' in build
    for step in steps:
        assert "ignoreErrors" not in step  # a failing gate step must stop the run
        # Every script is valid shell; every value in it is a quoted word.
        script = spec.scripts[f"{step['id']}.sh"]
        for shell in SHELLS:
            subprocess.run([shell, "-n"], input=script, text=True, check=True)
    if gate == "none":
        assert "release-tags" not in ids and "--tag slipway.azurecr.io/team/app:main" in build
        assert "push-by-digest" not in build and "--push" in build
        return
    # Gated: the build pushes by digest only, and the tags are written by the last step alone.
    assert "--tag" not in build and "'--push'" not in build and "--push\n" not in build
    assert f"type=image,name={REPO},push-by-digest=true,name-canonical=true,push=true" in build
    assert ids[-1] == "release-tags"
    tags_step = spec.scripts["release-tags.sh"]
    assert f"'--tag' {REPO}:main" in tags_step or f"--tag {REPO}:main" in tags_step
    assert not any("--tag" in spec.scripts[f"{i}.sh"] for i in ids if i != "release-tags")
    needed = {"platform-check"} if "platform_check" not in GATES[gate] else set()
    if GATES[gate].get("scan") is not None:
        needed |= {"scan", "scan-gate"}
        scan = next(s for s in steps if s["id"] == "scan")
        assert scan["cmd"] == f"{MIRROR}{TRIVY} -eu /run/slipway/scan.sh" and scan["entryPoint"] == "sh"
        assert "@sha256:" in scan["cmd"].split(" ")[0]
        gate_step = next(s for s in steps if s["id"] == "scan-gate")
        assert gate_step["cmd"] == f"{MIRROR}{ORAS} -eu /run/slipway/scan-gate.sh"
        assert gate_step["when"] == ["scan"]
        for platform in platforms:
            assert f"--platform {platform} " in spec.scripts["scan.sh"]
    assert needed <= _ancestors(steps, "release-tags")
    assert set(next(s for s in steps if s["id"] == "release-tags")["when"]) == needed
    assert sum(s["timeout"] for s in steps) == spec.timeout
    for platform in platforms:
        if "platform-check" in needed:
            assert platform in spec.scripts["platform-check.sh"]


def test_default_target_has_the_platform_check_on() -> None:
    request = _request().model_copy(update={"target": "not-configured"})
    steps = _task(render_run(request, _config(cache=None), RunSecrets()))["steps"]
    assert [s["id"] for s in steps] == ["binfmt", "setup-builder", "build", "platform-check", "release-tags"]
    assert steps[-1]["when"] == ["platform-check"] and steps[-2]["when"] == ["build"]


def test_max_provenance_with_a_secret_looking_request_arg_is_refused() -> None:
    request = _request().model_copy(update={"build_args": {"NPM_TOKEN": "x"}})
    config = _config(cache=None, target={"attestations": {"provenance": "max"}})
    with pytest.raises(RenderError) as caught:
        render_run(request, config, RunSecrets())
    assert caught.value.field == "attestations.provenance" and "NPM_TOKEN" in str(caught.value)


def test_scan_gate_without_a_pinned_scanner_is_refused_at_render_time() -> None:
    config = _config(cache=None, target=GATES["scan"], top=SCANNER)
    unpinned = config.model_copy(update={"scanner": Scanner.model_construct(image="aquasec/trivy:0.58")})
    with pytest.raises(RenderError) as caught:
        render_run(_request(), unpinned, RunSecrets())
    assert caught.value.field == "scanner.image"


# --------------------------------------------------------------------------------------------
# On the emulated agent


@pytest.fixture(params=SHELLS)
def agent(tmp_path: Path, request: pytest.FixtureRequest) -> Agent:
    return Agent(tmp_path, shell=request.param)


def _calls(agent: Agent, tool: str) -> list[list[str]]:
    return [c["argv"] for c in agent.docker_calls() if c["tool"] == tool]


def _codes(results: dict[str, subprocess.CompletedProcess[str]]) -> dict[str, int]:
    return {step: result.returncode for step, result in results.items()}


def test_a_passing_scan_tags_the_scanned_digest(agent: Agent) -> None:
    results = agent.run(_spec("both"))
    assert set(_codes(results).values()) == {0}, {k: r.stderr for k, r in results.items()}
    ref = f"{REPO}@{FAKE_DIGEST}"
    docker = _calls(agent, "docker")
    inspects = [argv for argv in docker if argv[:3] == ["buildx", "imagetools", "inspect"]]
    assert [argv[-1] for argv in inspects] == [ref, ref]
    trivy = _calls(agent, "trivy")
    assert [argv[argv.index("--platform") + 1] for argv in trivy] == ["linux/amd64", "linux/arm64"]
    assert all(argv[-1] == ref and "--exit-code" in argv for argv in trivy)
    oras = _calls(agent, "oras")
    assert [argv[-2:] for argv in oras] == [
        [ref, "scan-linux-amd64.json:application/json"],
        [ref, "scan-linux-arm64.json:application/json"],
    ]
    assert docker[-1] == [
        "buildx", "imagetools", "create", "--tag", f"{REPO}:main", "--tag", f"{REPO}:sha-3f5a0c9", ref,
    ]  # fmt: skip
    assert f"slipway-result: pushed {ref}" in results["build"].stdout
    assert "slipway-result: scan-gate passed" in results["scan-gate"].stdout
    assert f"slipway-result: tagged {ref}" in results["release-tags"].stdout


def test_a_failing_scan_keeps_the_report_and_writes_no_tag(agent: Agent) -> None:
    agent.env |= {
        "FAKE_TRIVY_EXIT": "3",
        "FAKE_TRIVY_REPORT": '{"Results": [{"Vulnerabilities": [{"Severity": "CRITICAL"}, '
        '{"Severity": "HIGH"}, {"Severity": "CRITICAL"}]}]}',
    }
    results = agent.run(_spec("both"))
    assert _codes(results) == {
        "binfmt": 0, "setup-builder": 0, "build": 0, "platform-check": 0, "scan": 0, "scan-gate": 1,
    }  # fmt: skip
    assert "slipway-result: scan linux/arm64 failed CRITICAL=2 HIGH=1" in results["scan"].stdout
    assert "slipway-result: scan-gate failed" in results["scan-gate"].stdout
    assert "the scan gate failed" in results["scan-gate"].stderr
    assert len(_calls(agent, "oras")) == 2  # the reports are stored before the gate fails
    assert not any(argv[:3] == ["buildx", "imagetools", "create"] for argv in _calls(agent, "docker"))


def test_a_scanner_error_fails_the_scan_step(agent: Agent) -> None:
    agent.env["FAKE_TRIVY_EXIT"] = "1"
    results = agent.run(_spec("scan"))
    assert results["scan"].returncode == 1 and "could not scan linux/amd64" in results["scan"].stderr
    assert "scan-gate" not in results and "release-tags" not in results


@pytest.mark.parametrize(
    ("found", "media_type", "missing"),
    [
        ("linux/amd64 unknown/unknown", "application/vnd.oci.image.index.v1+json", " linux/arm64"),
        ("linux/amd64", "application/vnd.oci.image.manifest.v1+json", " linux/arm64"),
        ("linux/arm64/v8\nlinux/amd64", "application/vnd.oci.image.index.v1+json", None),
    ],
)
def test_the_platform_check_fails_on_a_missing_platform(
    agent: Agent, found: str, media_type: str, missing: str | None
) -> None:
    agent.env |= {"FAKE_PLATFORMS": found, "FAKE_MEDIA_TYPE": media_type}
    results = agent.run(_spec("platform-check"))
    if missing is None:
        assert set(_codes(results).values()) == {0}
        assert "slipway-result: platform-check passed" in results["platform-check"].stdout
        return
    assert results["platform-check"].returncode == 1 and "release-tags" not in results
    assert f"slipway-result: platform-check failed missing{missing}" in results["platform-check"].stdout
    assert "the pushed image lacks linux/arm64" in results["platform-check"].stderr
    formats = [a[a.index("--format") + 1] for a in _calls(agent, "docker") if "--format" in a]
    assert ("Manifests" in formats[1]) == media_type.endswith("index.v1+json")


def test_a_build_without_a_digest_fails_before_any_gate(agent: Agent) -> None:
    agent.env["FAKE_DIGEST"] = "sha256:not-hex"
    results = agent.run(_spec("both"))
    assert results["build"].returncode == 1 and "no image digest" in results["build"].stderr
    assert "platform-check" not in results
