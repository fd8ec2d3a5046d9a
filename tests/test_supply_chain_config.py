"""Supply-chain configuration: attestations, scan gate, scanner pinning, quarantine."""

from __future__ import annotations

import pytest

from shared.model.config import ConfigError, parse_config
from shared.model.supply_chain import is_secret_build_arg

TARGET = """registry: r.azurecr.io
{top}targets:
  - name: app
    repo: https://github.com/o/r
    image: team/app
{target}"""
TRIVY = "docker.io/aquasec/trivy:0.58.1@sha256:" + "7" * 64


def _problems(target: str = "", top: str = "") -> list[str]:
    try:
        parse_config(TARGET.format(target=target, top=top), source="slipway.yaml")
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    return []


def test_defaults() -> None:
    config = parse_config(TARGET.format(target="", top=""), source="slipway.yaml")
    [target] = config.targets
    assert (target.attestations.sbom, target.attestations.provenance) == (True, "min")
    assert (target.scan, target.platform_check, config.quarantine, config.scanner.image) == (
        None,
        True,
        False,
        None,
    )


def test_max_provenance_with_a_secret_build_arg_is_rejected_with_the_field_named() -> None:
    target = "    build_args: {NPM_TOKEN: abc, GREETING: hi}\n    attestations: {provenance: max}\n"
    [problem] = _problems(target)
    assert problem.startswith("slipway.yaml:7: targets[0].attestations.provenance: ")
    assert "NPM_TOKEN" in problem and "GREETING" not in problem
    assert _problems("    build_args: {GREETING: hi}\n    attestations: {provenance: max}\n") == []
    assert _problems("    build_args: {NPM_TOKEN: abc}\n    attestations: {provenance: min}\n") == []


@pytest.mark.parametrize(
    ("name", "secret"),
    [("NPM_TOKEN", True), ("db_password", True), ("API_KEY", True), ("AUTH", True), ("KEYBOARD", False),
     ("PUBLIC_KEY", False), ("GREETING", False), ("TOKENIZER", False)],
)  # fmt: skip
def test_secret_build_arg_names(name: str, secret: bool) -> None:
    assert is_secret_build_arg(name) is secret


def test_a_scan_gate_needs_a_scanner_pinned_by_digest() -> None:
    [problem] = _problems("    scan: {severity: [CRITICAL]}\n")
    assert "scanner.image" in problem and "pinned by digest" in problem
    [problem] = _problems("    scan: {}\n", top="scanner: {image: 'aquasec/trivy:0.58.1'}\n")
    assert "scanner.image" in problem and "must be pinned by digest" in problem
    assert _problems("    scan: {ignore_unfixed: true}\n", top=f"scanner: {{image: '{TRIVY}'}}\n") == []


def test_unknown_severity_and_provenance_are_refused() -> None:
    top = f"scanner: {{image: '{TRIVY}'}}\n"
    [problem] = _problems("    scan: {severity: [SEVERE]}\n", top=top)
    assert "targets[0].scan.severity[0]" in problem
    [problem] = _problems("    attestations: {provenance: full}\n")
    assert "targets[0].attestations.provenance" in problem
