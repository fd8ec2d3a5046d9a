"""``tools:``: pinned tool images, the mirror runs pull them from, and the task that uses them.

Facts from outside, with their sources:

* buildx's ``--sbom`` is a shorthand: a value that is not a boolean becomes ``type=sbom,<value>``
  (docker/buildx util/buildflags/attests.go, ``CanonicalizeAttest``), and ``generator=<image>``
  names the scanner image (docs.docker.com/build/metadata/attestations/sbom/, "SBOM generator";
  moby/buildkit docs/attestations/sbom.md).
* BuildKit's own default generator is ``docker/buildkit-syft-scanner:stable-1`` (moby/buildkit
  frontend/attestations/parse.go, ``defaultSBOMGenerator``), a tag that moves.
* The newest release of docker/buildkit-syft-scanner is the git tag ``v1.12.0``; its CI publishes
  semver tags without the ``v`` (.github/workflows/ci.yaml: ``type=semver,pattern={{version}}``).
"""

from __future__ import annotations

import itertools
import shlex
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.acr.task import RenderError, RunSecrets, render_run
from shared.model.config import ConfigError, SlipwayConfig, ToolImages, parse_config
from shared.model.image_refs import parse_image_reference
from shared.model.tool_images import import_plan, resolve_tools
from tests.support.agent import Agent
from tests.test_task_render import _request

DIGEST = "sha256:" + "ab" * 32
TRIVY = "docker.io/aquasec/trivy:0.58.1@sha256:" + "7" * 64
# docker/buildkit-syft-scanner: newest release tag v1.12.0, published as "1.12.0" (module docstring).
SYFT_SCANNER_RELEASE = "1.12.0"
# moby/buildkit frontend/attestations/parse.go: the moving default Slipway must not leave in place.
BUILDKIT_DEFAULT_GENERATOR = "docker/buildkit-syft-scanner:stable-1"


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(textwrap.dedent(text), source="slipway.yaml")
    return [str(problem) for problem in caught.value.problems]


def _config(tools: dict[str, Any] | None = None, *, scan: bool = False, sbom: bool = True) -> SlipwayConfig:
    target: dict[str, Any] = {
        "name": "app",
        "repo": "https://github.com/o/r",
        "image": "team/app",
        "attestations": {"sbom": sbom},
    }
    body: dict[str, Any] = {"registry": "slipway.azurecr.io", "targets": [target]}
    if tools is not None:
        body["tools"] = tools
    if scan:
        target["scan"] = {}
        body["scanner"] = {"image": TRIVY}
    return SlipwayConfig.model_validate(body)


# --- configuration -------------------------------------------------------------------------------


def test_every_default_tool_image_names_a_version_tag() -> None:
    for role, field in ToolImages.model_fields.items():
        if role == "mirror":
            continue
        reference = parse_image_reference(field.default)
        assert reference.tag not in (None, "latest"), role
        assert str(reference) == field.default, f"{role}: defaults are written normalised"


def test_the_sbom_generator_is_pinned_to_a_release_not_buildkits_moving_default() -> None:
    generator = parse_image_reference(ToolImages().sbom_generator)
    default = parse_image_reference(BUILDKIT_DEFAULT_GENERATOR)
    assert generator.name == default.name  # the same scanner BuildKit would pick...
    assert generator.tag == SYFT_SCANNER_RELEASE  # ...at a release tag instead of stable-1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("docker.io/moby/buildkit", "is not pinned"),
        ("moby/buildkit:latest", "is not pinned"),
        (f"docker.io/moby/buildkit@{DIGEST}", "is not pinned"),  # a digest alone names no version
        ("moby/buildkit:v0.26.3,network=host", "is not a valid tag"),
        ("Moby/BuildKit:v0.32.2", "lowercase"),
        ("docker.io/library/docker:29 && reboot", "is not a valid tag"),
    ],
)
def test_an_unpinned_or_malformed_tool_image_is_refused_at_its_line(value: str, message: str) -> None:
    [problem] = _problems(
        f"""\
        registry: r.azurecr.io
        tools:
          buildkit: "{value}"
        """
    )
    assert problem.startswith("slipway.yaml:3: tools.buildkit: ") and message in problem


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        # BuildKit's azblob cache takes account_name, which every run passes, since v0.12.0
        # (moby/buildkit commit ef0a352, cache/remotecache/azblob/utils.go).
        ("moby/buildkit:v0.11.6", True),
        (f"moby/buildkit:v0.11.6@{DIGEST}", True),
        ("moby/buildkit:0.9.3-rootless", True),
        ("moby/buildkit:v0.12.0", False),
        ("moby/buildkit:v0.32.2-rootless", False),
        ("moby/buildkit:buildx-stable-1", False),  # no version to judge: a mirror's own naming
    ],
)
def test_a_buildkit_too_old_for_the_cache_attributes_is_refused(value: str, refused: bool) -> None:
    text = textwrap.dedent(
        f"""\
        registry: r.azurecr.io
        tools:
          buildkit: "{value}"
        """
    )
    if refused:
        [problem] = _problems(text)
        assert problem.startswith("slipway.yaml:3: tools.buildkit: ") and "v0.12.0 or later" in problem
    else:
        parse_config(text, source="slipway.yaml")


def test_a_tag_with_its_digest_is_kept_and_normalised() -> None:
    config = parse_config(
        f"registry: r.azurecr.io\ntools:\n  buildkit: moby/buildkit:v0.32.2@{DIGEST}\n", source="s"
    )
    assert config.tools.buildkit == f"docker.io/moby/buildkit:v0.32.2@{DIGEST}"


@pytest.mark.parametrize(
    ("mirror", "message"),
    [
        ("{registry}/tools/{target}", "only {registry} is known"),
        ("mirror.azurecr.io/{registry}", "only {registry} is known"),
        ("{registry", "malformed"),
        ("slipway-tools", "is not a registry host"),
        ("mirror/tools", "is not a registry host"),
        ("mirror.azurecr.io/Tools", "is not a repository path"),
        ("mirror.azurecr.io/a//b", "is not a repository path"),
    ],
)
def test_a_malformed_mirror_is_refused(mirror: str, message: str) -> None:
    [problem] = _problems(f'registry: r.azurecr.io\ntools:\n  mirror: "{mirror}"\n')
    assert problem.startswith("slipway.yaml:3: tools.mirror: ") and message in problem


@pytest.mark.parametrize(
    ("mirror", "stored"),
    [
        ("{registry}", "{registry}"),
        ("{registry}/mirror/", "{registry}/mirror"),
        ("localhost:5000/tools", "localhost:5000/tools"),
        ("mirror.azurecr.io", "mirror.azurecr.io"),
    ],
)
def test_a_mirror_is_a_host_or_the_registry_placeholder_with_an_optional_path(
    mirror: str, stored: str
) -> None:
    config = parse_config(f'registry: r.azurecr.io\ntools:\n  mirror: "{mirror}"\n', source="s")
    assert config.tools.mirror == stored


def test_the_old_tool_images_key_says_what_it_is_called_now() -> None:
    [problem] = _problems("registry: r.azurecr.io\ntool_images:\n  buildkit: moby/buildkit:v0.32.2\n")
    assert problem == "slipway.yaml:2: tool_images: unknown key: it is now 'tools'"


# --- the mirror rewrite ----------------------------------------------------------------------------


def test_by_default_every_tool_is_pulled_from_the_registrys_slipway_tools_copy() -> None:
    resolved = resolve_tools(_config(scan=True))
    assert set(resolved) == {"docker_cli", "buildkit", "binfmt", "sbom_generator", "oras", "scanner"}
    for image in resolved.values():
        # <registry>/slipway-tools/<upstream registry>/<repository>:<tag>[@digest]
        assert image.pulled == f"slipway.azurecr.io/slipway-tools/{image.upstream}"
        reference = parse_image_reference(image.upstream)
        assert image.import_target == f"slipway-tools/{reference.name}:{reference.tag}"
        expected_source = f"{reference.name}@{reference.digest}" if reference.digest else image.upstream
        assert image.import_source == expected_source
    assert resolved["scanner"].import_source == f"docker.io/aquasec/trivy@sha256:{'7' * 64}"


def test_a_mirror_on_another_registry_is_pulled_from_but_not_imported_into() -> None:
    resolved = resolve_tools(_config({"mirror": "mirror.example.com/hub"}))
    assert resolved["buildkit"].pulled == "mirror.example.com/hub/docker.io/moby/buildkit:v0.32.2"
    assert all(image.import_source is None for image in resolved.values())
    assert import_plan(_config({"mirror": "mirror.example.com/hub"})) == []


def test_an_image_already_in_the_mirror_registry_is_used_as_written() -> None:
    own = f"slipway.azurecr.io/base/buildkit:v0.32.2@{DIGEST}"
    resolved = resolve_tools(_config({"buildkit": own}))
    assert resolved["buildkit"].pulled == own and resolved["buildkit"].import_source is None
    assert "buildkit" not in {image.role for image in import_plan(_config({"buildkit": own}))}


def test_without_a_mirror_the_configured_images_are_pulled_as_written() -> None:
    resolved = resolve_tools(_config({"mirror": None}))
    assert all(image.pulled == image.upstream for image in resolved.values())
    assert import_plan(_config({"mirror": None})) == []


# --- the rendered task -----------------------------------------------------------------------------


def _step_images(task_yaml: str) -> list[str]:
    """The image of every step: the first word of its ``cmd``."""
    task = yaml.safe_load(task_yaml)
    return [step["cmd"].split(" ")[0] for step in task["steps"]]


def _script_images(scripts: dict[str, str]) -> dict[str, list[str]]:
    """Images the scripts hand to docker: ``docker run ... <image>``, ``--driver-opt image=``,
    ``--sbom=generator=``; read by splitting each line the way the shell does."""
    found: dict[str, list[str]] = {"run": [], "builder": [], "sbom": []}
    for script in scripts.values():
        for line in script.splitlines():
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                continue
            if words[:3] == ["docker", "run", "--privileged"]:
                found["run"].append(words[4])
            for before, word in itertools.pairwise(words):
                if before == "--driver-opt" and word.startswith("image="):
                    found["builder"].append(word.removeprefix("image="))
            found["sbom"] += [
                w.removeprefix("--sbom=generator=") for w in words if w.startswith("--sbom=generator=")
            ]
    return found


def test_every_step_uses_the_configured_tool_images_and_none_pulls_from_another_registry() -> None:
    mirror = "tools.example.com/hub"
    config = _config({"mirror": mirror}, scan=True)
    spec = render_run(_request(), config, RunSecrets(cache_account_key=None))
    pulled = {role: image.pulled for role, image in resolve_tools(config).items()}
    steps = _step_images(spec.task_yaml)
    scripts = _script_images(dict(spec.scripts))
    assert steps.count(pulled["docker_cli"]) == len(steps) - 2  # all but the scan and the scan gate
    assert pulled["scanner"] in steps and pulled["oras"] in steps
    assert scripts == {
        "run": [pulled["binfmt"]],
        "builder": [pulled["buildkit"]],
        "sbom": [pulled["sbom_generator"]],
    }
    every = [*steps, *scripts["run"], *scripts["builder"], *scripts["sbom"]]
    assert {parse_image_reference(image).registry for image in every} == {"tools.example.com"}


def test_per_image_references_are_used_as_written_without_a_mirror() -> None:
    own = {
        "docker_cli": f"mirror.example.com/docker:29.7.2-cli@{DIGEST}",
        "buildkit": "mirror.example.com/buildkit:v0.32.2",
        "binfmt": "mirror.example.com/binfmt:qemu-v10.0.4-59",
        "sbom_generator": f"mirror.example.com/syft-scanner:1.12.0@{DIGEST}",
        "oras": "mirror.example.com/oras:v1.2.2",
    }
    spec = render_run(_request(), _config({"mirror": None, **own}), RunSecrets())
    scripts = _script_images(dict(spec.scripts))
    assert set(_step_images(spec.task_yaml)) == {own["docker_cli"]}
    assert scripts == {"run": [own["binfmt"]], "builder": [own["buildkit"]], "sbom": [own["sbom_generator"]]}


def test_sbom_off_passes_no_generator() -> None:
    spec = render_run(_request(), _config(sbom=False), RunSecrets())
    assert "--sbom=false" in shlex.split(spec.scripts["build.sh"], comments=True)
    assert _script_images(dict(spec.scripts))["sbom"] == []


def _canonicalize_attest(attest_type: str, value: str) -> str:
    """docker/buildx util/buildflags/attests.go CanonicalizeAttest: how buildx reads ``--sbom=<value>``."""
    go_bools = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True}
    go_bools |= {"0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}
    if value in go_bools:  # Go's strconv.ParseBool
        return f"type={attest_type},disabled={str(not go_bools[value]).lower()}"
    return f"type={attest_type},{value}"


def test_buildx_reads_the_sbom_flag_as_the_generator_attribute_when_the_build_runs(tmp_path: Path) -> None:
    config = _config()
    spec = render_run(_request(), config, RunSecrets())
    agent = Agent(tmp_path)
    results = agent.run(spec)
    assert all(result.returncode == 0 for result in results.values()), results
    [build] = [c["argv"] for c in agent.docker_calls() if c["argv"][:2] == ["buildx", "build"]]
    [flag] = [word for word in build if word.startswith("--sbom")]
    attest = _canonicalize_attest("sbom", flag.removeprefix("--sbom="))
    attributes = dict(field.split("=", 1) for field in attest.split(","))
    assert attributes == {"type": "sbom", "generator": resolve_tools(config)["sbom_generator"].pulled}


def test_a_tool_image_built_without_validation_is_refused_by_the_renderer() -> None:
    config = _config()
    hostile = ToolImages.model_construct(**{**config.tools.model_dump(), "sbom_generator": "x/y:1,push=true"})
    with pytest.raises(RenderError) as caught:
        render_run(_request(), config.model_copy(update={"tools": hostile}), RunSecrets())
    assert caught.value.field == "tools.sbom_generator"
