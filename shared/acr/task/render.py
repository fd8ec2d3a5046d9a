"""Render the ACR task (``acr-task.yaml``, ``version: v1.1.0``) that builds one BuildRequest.

The run is a quick run (``EncodedTaskRunRequest``) with up to three ``cmd`` steps, all using the
configured ``docker:<version>-cli`` image, which ships the buildx plugin:

1. ``binfmt`` (only for platforms the amd64 agent cannot run natively) registers QEMU emulators on
   the agent host through the mounted Docker socket. It runs before the builder starts because
   BuildKit probes the host's emulators once, when the daemon starts.
2. ``setup-builder`` creates the ``slipway`` buildx builder (``docker-container`` driver, pinned
   BuildKit image). Its state lands in the ``HOME=/acb/home`` volume that ACR shares between steps.
3. ``build`` runs ``docker buildx build`` on BuildKit's Git context of the exact commit, with the
   azblob cache and the target's SBOM/provenance attestations. A base-image or schedule build
   that knows no commit uses the ref instead (``<repo>.git#refs/heads/main``) and carries no
   revision label. It records the pushed digest in ``/workspace/slipway-run/digest`` (the
   workspace every step mounts) and prints ``<marker> pushed <repo>@<digest>``.

With a gate (the platform check, on by default, or a scan gate) the build pushes **by digest
only** and the release tags come last, each step waiting (``when``) on the one before:

4. ``platform-check`` inspects the pushed index and fails unless every requested platform is in it.
5. ``scan`` (scan gate) runs the scanner image itself (Trivy, pinned by digest) on the digest,
   once per platform, writing one JSON report per platform and the verdict to the workspace.
6. ``scan-gate`` (ORAS image) attaches the reports to the image as OCI referrers, then fails the
   run when the verdict is a failure: the reports are kept either way.
7. ``release-tags`` points the release tags at the same digest (``buildx imagetools create``), so
   no tag moves unless every gate step before it succeeded; nothing is rebuilt.

Lines starting with the run's marker (``slipway-result-<nonce>:``, random per claim, recorded in
the ledger; plain ``slipway-result:`` for ``slipway render``) are the run's report to
reconciliation (``shared.acr.run_report``), which reads them from the run log to name a failed gate
and to find the digests to lift from quarantine. Every value in them was validated here.

Why the task is shaped this way (reference: acr-tasks-buildkit-cache.md §1.5, acr-builder source):

* ACR runs a ``cmd`` step as ``/bin/sh -c "docker run ... <cmd text>"`` on the agent host, after
  rendering the whole YAML as a Go template and replacing ``$Alias`` words. So no value from
  outside ever appears in a ``cmd``: each one is the constant
  ``<docker_cli image> sh -eu /run/slipway/<step>.sh``, and the YAML contains no ``$`` and no
  ``{{`` except the secret placeholders.
* The step scripts reach the agent as launchers in a secret volume (``scripts`` says why), the
  secrets as placeholders in a second one (``secrets``); every value was validated first
  (``validate``, ``build``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import yaml

from shared.acr.task.build import run_target, validate_build
from shared.acr.task.gate_scripts import (
    platform_check_script,
    release_tags_script,
    scan_gate_script,
    scan_script,
)
from shared.acr.task.pr_isolation import fork_registry_needs, is_fork_run
from shared.acr.task.scripts import b64, binfmt_script, build_script, launcher, setup_script
from shared.acr.task.secrets import (
    FORK_REGISTRY_TOKEN,
    RunSecrets,
    SecretSlot,
    check_secret,
    needed_slots,
    registry_login,
)
from shared.acr.task.spec import (
    AGENT_ARCHITECTURE,
    AGENT_OS,
    MAX_AUX_STEP_TIMEOUT,
    MAX_RUN_TIMEOUT,
    MIN_AUX_STEP_TIMEOUT,
    MIN_GATE_STEP_TIMEOUT,
    MIN_RUN_TIMEOUT,
    RESULT_MARKER,
    RESULT_MARKER_RE,
    SCRIPTS_DIR,
    SCRIPTS_VOLUME,
    SECRETS_DIR,
    SECRETS_VOLUME,
    STEP_BINFMT,
    STEP_BUILD,
    STEP_PLATFORM_CHECK,
    STEP_RELEASE_TAGS,
    STEP_SCAN,
    STEP_SCAN_GATE,
    STEP_SETUP,
    TASK_VERSION,
    RegistryLogin,
    RenderError,
    RunSpec,
    RunValue,
    SourceLoginMode,
)
from shared.acr.task.validate import AGENT_POOL_RE, check, csv_value, tool_image
from shared.model.build_request import BuildRequest
from shared.model.config import SlipwayConfig
from shared.model.tool_images import resolve_tools

# binfmt's --install names for the architectures of PLATFORM_RE.
_BINFMT_NAMES = {
    "arm64": "arm64",
    "arm": "arm",
    "386": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def _step_timeouts(run_timeout: int, aux_steps: int) -> tuple[int, int]:
    """(each auxiliary step, the build step); their sum is the run timeout."""
    aux = min(MAX_AUX_STEP_TIMEOUT, max(MIN_AUX_STEP_TIMEOUT, run_timeout // 12))
    if aux * aux_steps > run_timeout // 2:  # many gate steps in a short run: the build keeps half
        aux = max(MIN_GATE_STEP_TIMEOUT, run_timeout // (2 * aux_steps))
    return aux, run_timeout - aux * aux_steps


def _foreign_arches(platforms: Iterable[str]) -> list[str]:
    arches: list[str] = []
    for platform in platforms:
        arch = platform.split("/")[1]
        if arch != AGENT_ARCHITECTURE and _BINFMT_NAMES[arch] not in arches:
            arches.append(_BINFMT_NAMES[arch])
    return arches


def render_run(
    request: BuildRequest, config: SlipwayConfig, secrets: RunSecrets, *, result_marker: str = RESULT_MARKER
) -> RunSpec:
    """Validate everything again and render the run. Raises ``RenderError`` naming the field.

    The BuildRequest was validated when parsed, but a message can be edited and re-sent from the
    portal and a model can be built without validation; this is the last gate before a shell.
    ``result_marker`` starts the report lines the steps print (the dispatcher passes a random
    one per claim and records it; ``slipway render`` shows the plain default).
    """
    check("result_marker", result_marker, RESULT_MARKER_RE, "must be slipway-result[-<16 hex>]:")
    tools = resolve_tools(config)  # each as a run pulls it: from tools.mirror when one is set
    docker_cli = tool_image("tools.docker_cli", tools["docker_cli"].pulled)
    buildkit = csv_value("tools.buildkit", tool_image("tools.buildkit", tools["buildkit"].pulled))
    binfmt = tool_image("tools.binfmt", tools["binfmt"].pulled)
    run_timeout = config.run.timeout
    if not isinstance(run_timeout, int) or not MIN_RUN_TIMEOUT <= run_timeout <= MAX_RUN_TIMEOUT:
        raise RenderError("run.timeout", f"must be {MIN_RUN_TIMEOUT}..{MAX_RUN_TIMEOUT} seconds")
    if not isinstance(config.run.cpu, int) or config.run.cpu < 1:
        raise RenderError("run.cpu", "must be a positive integer")
    if config.run.agent_pool is not None:
        check("run.agent_pool", config.run.agent_pool, AGENT_POOL_RE, "must be an agent pool name")

    target = run_target(request, config)
    build = dataclasses.replace(validate_build(request, config, secrets, target), marker=result_marker)
    if build.sbom:
        generator = tools["sbom_generator"].pulled
        generator = csv_value("tools.sbom_generator", tool_image("tools.sbom_generator", generator))
        build = dataclasses.replace(build, sbom_generator=generator)
    scanner = oras = None
    if build.scan is not None:
        if not config.scanner.image or "@sha256:" not in config.scanner.image:
            raise RenderError("scanner.image", "a scan gate needs a scanner image pinned by digest")
        scanner = tool_image("scanner.image", tools["scanner"].pulled)
        oras = tool_image("tools.oras", tools["oras"].pulled)

    # The secrets the run needs (the rule run_prepare reads settings by), those that are set.
    fork = is_fork_run(request)
    present: list[tuple[SecretSlot, str]] = []
    for slot in needed_slots(config, git_token=build.git_auth is not None, fork=fork):
        value = check_secret(slot, getattr(secrets, slot.attr))
        if value is not None:
            present.append((slot, value))
    # The builder gets the service principal only when the build uses the cache (a fork may not).
    use_sp = (
        build.cache_from is not None and config.cache is not None and config.cache.auth == "service-principal"
    )

    arches = _foreign_arches(build.platforms)
    # What the run pulls besides the build's own images: with a mirror, from the registry.
    pulled = [
        docker_cli,
        buildkit,
        *([binfmt] if arches else []),
        *([build.sbom_generator] if build.sbom else []),
    ]
    pulled += [scanner, oras] if scanner is not None and oras is not None else []
    login_mode, logins = _fork_credentials(request, config, secrets, pulled, pushes=bool(build.repository))
    scripts: dict[str, str] = {}
    if arches:
        scripts[f"{STEP_BINFMT}.sh"] = binfmt_script(request, binfmt, arches)
    scripts[f"{STEP_SETUP}.sh"] = setup_script(request, buildkit, use_sp)
    scripts[f"{STEP_BUILD}.sh"] = build_script(request, build)
    # (step id, image, entry point, waits for): the gate steps, each after the one before it.
    gates: list[tuple[str, str, str | None, list[str]]] = []
    if build.platform_check:
        scripts[f"{STEP_PLATFORM_CHECK}.sh"] = platform_check_script(request, build)
        gates.append((STEP_PLATFORM_CHECK, docker_cli, None, [STEP_BUILD]))
    if build.scan is not None and scanner is not None and oras is not None:
        scripts[f"{STEP_SCAN}.sh"] = scan_script(request, build, build.scan)
        scripts[f"{STEP_SCAN_GATE}.sh"] = scan_gate_script(request, build, build.scan)
        gates.append((STEP_SCAN, scanner, "sh", [gates[-1][0] if gates else STEP_BUILD]))
        gates.append((STEP_SCAN_GATE, oras, "sh", [STEP_SCAN]))
    if build.gated:
        scripts[f"{STEP_RELEASE_TAGS}.sh"] = release_tags_script(request, build)
        # Every gate step is named, not only the last: no tag without all of them succeeding.
        gates.append((STEP_RELEASE_TAGS, docker_cli, None, [step_id for step_id, *_ in gates]))

    aux_timeout, build_timeout = _step_timeouts(run_timeout, len(scripts) - 1)
    scripts_mount = {"name": SCRIPTS_VOLUME, "mountPath": SCRIPTS_DIR}
    secrets_mount = {"name": SECRETS_VOLUME, "mountPath": SECRETS_DIR}

    def step(
        step_id: str,
        timeout: int,
        needs_secrets: bool,
        *,
        image: str = docker_cli,
        entry_point: str | None = None,
        when: list[str] | None = None,
    ) -> dict[str, object]:
        mounts = [scripts_mount, *([secrets_mount] if needs_secrets and present else [])]
        # An image whose entry point is its tool (trivy, oras) runs the script with entryPoint sh.
        shell = "" if entry_point else "sh "
        rendered: dict[str, object] = {"id": step_id}
        if when is not None:
            rendered["when"] = list(when)
        if entry_point is not None:
            rendered["entryPoint"] = entry_point
        rendered |= {
            "cmd": f"{image} {shell}-eu {SCRIPTS_DIR}/{step_id}.sh",
            "timeout": timeout,
            "volumeMounts": [dict(m) for m in mounts],
        }
        return rendered

    steps: list[dict[str, object]] = []
    if arches:
        steps.append(step(STEP_BINFMT, aux_timeout, needs_secrets=False))
    steps.append(step(STEP_SETUP, aux_timeout, needs_secrets=use_sp))
    steps.append(step(STEP_BUILD, build_timeout, needs_secrets=True))
    for step_id, image, entry_point, when in gates:
        steps.append(step(step_id, aux_timeout, False, image=image, entry_point=entry_point, when=when))

    volumes: list[dict[str, object]] = [
        {
            "name": SCRIPTS_VOLUME,
            "secret": {name: b64(launcher(name, text)) for name, text in scripts.items()},
        }
    ]
    if present:
        volumes.append(
            {
                "name": SECRETS_VOLUME,
                "secret": {slot.file: f"{{{{.Values.{slot.value_name}}}}}" for slot, _ in present},
            }
        )

    task: dict[str, object] = {
        "version": TASK_VERSION,
        "stepTimeout": aux_timeout,
        "volumes": volumes,
        "steps": steps,
    }
    task_yaml = dump_task(task)
    _check_task_text(task_yaml, [slot.value_name for slot, _ in present])

    values = tuple(RunValue(slot.value_name, b64(value), is_secret=True) for slot, value in present)
    return RunSpec(
        task_yaml=task_yaml,
        values=values,
        timeout=run_timeout,
        os=AGENT_OS,
        architecture=AGENT_ARCHITECTURE,
        cpu=config.run.cpu,
        agent_pool=config.run.agent_pool,
        result_marker=result_marker,
        scripts=MappingProxyType(scripts),
        source_login_mode=login_mode,
        registry_logins=logins,
    )


def _fork_credentials(
    request: BuildRequest, config: SlipwayConfig, secrets: RunSecrets, pulled: list[str], *, pushes: bool
) -> tuple[SourceLoginMode | None, tuple[RegistryLogin, ...]]:
    """The run request's ``credentials``: none for most runs (ACR logs the run in to its registry);
    for a fork's, ``loginMode: None`` and only the fork's own ACR token (``pr_isolation``)."""
    if not is_fork_run(request):
        return None, ()
    token = check_secret(FORK_REGISTRY_TOKEN, secrets.fork_registry_token)
    if token is None:
        needs = fork_registry_needs(config.registry, pulled, pushes=pushes)
        if needs is not None:
            pulls = not needs.startswith("pushes")
            rights = " and ".join(
                (["read those images"] if pulls else [])
                + (["write only the scratch repository"] if pushes else [])
            )
            instead = " and ".join(
                (["pull the tools upstream (tools.mirror: null)"] if pulls else [])
                + (["push: none"] if pushes else [])
            )
            raise RenderError(
                "pull_requests.fork_registry_token_setting",
                f"a fork pull request's run is never logged in to {config.registry} with the run's "
                f"own rights, and it {needs}: name the setting of an ACR token that may {rights} "
                f"(or {instead})",
            )
        return "None", ()
    user, password = registry_login(token)
    return "None", (RegistryLogin(config.registry, user, password),)


_PLACEHOLDER_RE = re.compile(r"\{\{\.Values\.([A-Za-z0-9]+)\}\}")


# PyYAML's C emitter (libyaml, shipped in PyYAML's wheels) writes the same text as its pure-Python
# emitter about 20 times faster; the pure one was half of a dispatch's CPU. tests/test_task_render.py
# holds the two byte-identical over rendered tasks; a PyYAML built without libyaml falls back.
_TASK_DUMPER: type[Any] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump_task(task: Mapping[str, object], *, dumper: type[Any] | None = None) -> str:
    """The task as YAML: keys in insertion order, block style, no line folding."""
    return yaml.dump(
        task, Dumper=dumper or _TASK_DUMPER, sort_keys=False, default_flow_style=False, width=1 << 20
    )


def _check_task_text(task_yaml: str, placeholders: list[str]) -> None:
    """The YAML is rendered as a Go template and scanned for ``$Alias`` words before parsing."""
    if not task_yaml.startswith(f"version: {TASK_VERSION}\n"):
        raise AssertionError("the task must start with its version line")
    if "$" in task_yaml:
        raise AssertionError("the task text must not contain '$' (ACR alias expansion)")
    remainder = _PLACEHOLDER_RE.sub("", task_yaml)
    if "{{" in remainder or "}}" in remainder:
        raise AssertionError("the task text must contain no template action but the secret placeholders")
    if sorted(_PLACEHOLDER_RE.findall(task_yaml)) != sorted(placeholders):
        raise AssertionError("secret placeholders do not match the secret values")
