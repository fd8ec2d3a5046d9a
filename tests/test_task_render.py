"""The rendered ACR task: structure, the shell-safety of its scripts, and where secrets go.

The execution tests emulate the ACR agent (acr-builder) step by step rather than trusting the
rendered text: the YAML is rendered as a Go template (``{{.Values.x}}`` replaced), each volume
file is written exactly as acr-builder's ``createSecretFiles`` does (``/bin/sh -c "cat >> <vol>/<file>
<<EOL ... EOL"``, an unquoted here-document), and each step runs its ``cmd`` script with a fake
``docker`` on PATH that records its argv.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import string
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.acr.task import RenderError, RunSecrets, RunSpec, dump_task, render_run
from shared.model.build_request import BuildRequest, Cache, Source
from shared.model.config import SlipwayConfig, ToolImages
from tests.support.agent import FAKE_DIGEST, Agent

COMMIT = "3f5a0c9e1b7d2486a1c0e9f8b7d6c5a4e3f2a1b0"
ACCOUNT_KEY = "c2VjcmV0LWtleS1kby1ub3QtbGVhaw=="
GIT_TOKEN = "ghp_TestTokenNotReal0123456789"
# The tool images come from tools.mirror, by default {registry}/slipway-tools/<upstream reference>.
MIRROR = "slipway.azurecr.io/slipway-tools/"
DOCKER_CLI = MIRROR + "docker.io/library/docker:29.7.2-cli"
SBOM_GENERATOR = MIRROR + "docker.io/docker/buildkit-syft-scanner:1.12.0"
BINFMT = MIRROR + "docker.io/tonistiigi/binfmt:qemu-v10.0.4-59"
CACHE_COMMON = (
    "type=azblob,account_url=https://slipwaycache.blob.core.windows.net,account_name=slipwaycache,"
    "container=buildkit-cache,prefix=ci"
)


def _request(**source: Any) -> BuildRequest:
    body: dict[str, Any] = {
        "schema": "slipway.build-request/v1",
        "id": "app.0123456789abcdef",
        "target": "app",
        "trigger": {
            "kind": "push",
            "provider": "github",
            "delivery_id": "d-1",
            "received_at": datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
            "correlation_id": "corr-1",
        },
        "source": {
            "repo_url": "https://github.com/o/r.git",
            "ref": "refs/heads/main",
            "commit": COMMIT,
            **source,
        },
        "image": {
            "registry": "slipway.azurecr.io",
            "repository": "team/app",
            "tags": ["main", "sha-3f5a0c9"],
        },
        "platforms": ["linux/amd64", "linux/arm64"],
        "build_args": {"GREETING": "hello world"},
        "cache": {"name": "app-main", "from_names": ["app-default"]},
        "coalesce_key": "app:refs/heads/main",
    }
    return BuildRequest.model_validate(body)


def _config(
    *,
    cache: dict[str, Any] | bool | None = True,
    target: dict[str, Any] | None = None,
    top: dict[str, Any] | None = None,
    **run: Any,
) -> SlipwayConfig:
    """By default the target ``app`` has no gate (the plain build-and-push shape these tests check);
    ``target`` changes its settings (``{}``: the defaults, platform check on), ``top`` adds top-level keys."""
    app: dict[str, Any] = {"name": "app", "repo": "https://github.com/o/r", "image": "team/app"}
    app |= {"platform_check": False} if target is None else target
    body: dict[str, Any] = {"registry": "slipway.azurecr.io", "targets": [app], **(top or {})}
    if cache is True:
        body["cache"] = {"account_url": "https://slipwaycache.blob.core.windows.net", "prefix": "ci"}
    elif isinstance(cache, dict):
        body["cache"] = cache
    if run:
        body["run"] = run
    return SlipwayConfig.model_validate(body)


def _task(spec: RunSpec) -> dict[str, Any]:
    task: dict[str, Any] = yaml.safe_load(spec.task_yaml)
    return task


def _volume(task: dict[str, Any], name: str) -> dict[str, str] | None:
    for volume in task.get("volumes", []):
        if volume["name"] == name:
            secret: dict[str, str] = volume["secret"]
            return secret
    return None


# --------------------------------------------------------------------------------------------
# Structure


def test_task_structure() -> None:
    spec = render_run(_request(), _config(), RunSecrets(cache_account_key=ACCOUNT_KEY))
    assert spec.task_yaml.splitlines()[0] == "version: v1.1.0"
    task = _task(spec)
    assert task["version"] == "v1.1.0"
    assert isinstance(task["stepTimeout"], int)
    assert [s["id"] for s in task["steps"]] == ["binfmt", "setup-builder", "build"]
    for step in task["steps"]:
        # The cmd is a constant: the image, then a script from the volume.
        assert step["cmd"] == f"{DOCKER_CLI} sh -eu /run/slipway/{step['id']}.sh"
        assert isinstance(step["timeout"], int) and step["timeout"] > 0
        assert {"name": "slipway", "mountPath": "/run/slipway"} in step["volumeMounts"]
    assert sum(s["timeout"] for s in task["steps"]) == spec.timeout == 3600
    mounts = {s["id"]: [m["name"] for m in s["volumeMounts"]] for s in task["steps"]}
    assert mounts == {
        "binfmt": ["slipway"],
        "setup-builder": ["slipway"],
        "build": ["slipway", "slipway-secrets"],
    }
    assert set(_volume(task, "slipway") or {}) == {"binfmt.sh", "setup-builder.sh", "build.sh"}
    assert _volume(task, "slipway-secrets") == {"cache-account-key": "{{.Values.slipwayCacheAccountKey}}"}
    assert [(v.name, v.is_secret) for v in spec.values] == [("slipwayCacheAccountKey", True)]
    assert set(spec.scripts) == {"binfmt.sh", "setup-builder.sh", "build.sh"}
    # ACR replaces $Alias words and runs the text through Go templates before parsing it.
    assert "$" not in spec.task_yaml
    assert re.sub(r"\{\{\.Values\.[A-Za-z]+\}\}", "", spec.task_yaml).count("{{") == 0
    # The build context is BuildKit's Git context: no source location for ACR.
    request = spec.redacted()
    assert "sourceLocation" not in request and "source_location" not in request
    assert (spec.os, spec.architecture, spec.cpu, spec.agent_pool) == ("Linux", "amd64", 2, None)


def test_volume_files_are_launchers_of_the_scripts() -> None:
    spec = render_run(_request(), _config(), RunSecrets(cache_account_key=ACCOUNT_KEY))
    files = _volume(_task(spec), "slipway") or {}
    for name, value in files.items():
        launcher = base64.b64decode(value).decode()
        # Nothing the agent's here-document would expand, no line that would end it.
        assert not set("$`\\") & set(launcher)
        assert "EOL" not in launcher.splitlines()
        encoded = launcher.split("<<'SLIPWAY_SCRIPT' | sh -eu\n", 1)[1].split("\nSLIPWAY_SCRIPT\n", 1)[0]
        assert base64.b64decode(encoded.replace("\n", "")).decode() == spec.scripts[name]


@pytest.mark.parametrize(
    ("platforms", "arches"),
    [
        (["linux/amd64"], None),
        (["linux/arm64"], "arm64"),
        (["linux/amd64", "linux/arm64"], "arm64"),
        (["linux/arm/v7", "linux/arm64/v8", "linux/arm/v6", "linux/s390x"], "arm,arm64,s390x"),
    ],
)
def test_binfmt_only_for_foreign_platforms(platforms: list[str], arches: str | None) -> None:
    request = _request().model_copy(update={"platforms": platforms})
    spec = render_run(request, _config(), RunSecrets(cache_account_key=ACCOUNT_KEY))
    ids = [s["id"] for s in _task(spec)["steps"]]
    if arches is None:
        assert ids == ["setup-builder", "build"]
        assert "binfmt.sh" not in spec.scripts
    else:
        assert ids == ["binfmt", "setup-builder", "build"]
        assert f"--install {arches} " in spec.scripts["binfmt.sh"]


@pytest.mark.parametrize("timeout", [300, 301, 1000, 3600, 28800])
@pytest.mark.parametrize("platforms", [["linux/amd64"], ["linux/amd64", "linux/arm64"]])
def test_step_timeouts_fit_the_run_timeout(timeout: int, platforms: list[str]) -> None:
    request = _request().model_copy(update={"platforms": platforms})
    spec = render_run(request, _config(timeout=timeout), RunSecrets(cache_account_key=ACCOUNT_KEY))
    task = _task(spec)
    steps = task["steps"]
    assert spec.timeout == timeout
    assert sum(s["timeout"] for s in steps) == timeout
    assert all(s["timeout"] >= 60 for s in steps)
    assert steps[-1]["id"] == "build" and steps[-1]["timeout"] >= timeout // 2
    assert task["stepTimeout"] <= timeout


def test_run_settings_reach_the_spec() -> None:
    spec = render_run(
        _request(), _config(agent_pool="pool-1", cpu=4), RunSecrets(cache_account_key=ACCOUNT_KEY)
    )
    assert (spec.cpu, spec.agent_pool) == (4, "pool-1")
    assert spec.redacted()["agentPoolName"] == "pool-1"


def test_git_context_of_the_exact_commit() -> None:
    spec = render_run(
        _request(
            repo_url="https://github.com/o/r", context="./services/api/", dockerfile="docker/Dockerfile"
        ),
        _config(cache=None),
        RunSecrets(),
    )
    build = spec.scripts["build.sh"]
    # BuildKit treats an https URL as Git only with ".git"; the label keeps the URL as given.
    assert f"'https://github.com/o/r.git#{COMMIT}:services/api'" in build
    assert "org.opencontainers.image.source=https://github.com/o/r\n" in build
    assert "--file docker/Dockerfile\n" in build
    root = render_run(_request(), _config(cache=None), RunSecrets()).scripts["build.sh"]
    assert f"'https://github.com/o/r.git#{COMMIT}' </dev/null" in root


def test_redacted_request() -> None:
    spec = render_run(_request(), _config(), RunSecrets(cache_account_key=ACCOUNT_KEY, git_token=GIT_TOKEN))
    request = spec.redacted()
    assert request["type"] == "EncodedTaskRunRequest"
    assert base64.b64decode(str(request["encodedTaskContent"])).decode() == spec.task_yaml
    assert request["values"] == [
        {"name": "slipwayCacheAccountKey", "value": "***", "isSecret": True},
        {"name": "slipwayGitToken", "value": "***", "isSecret": True},
    ]
    assert request["timeout"] == 3600
    assert request["platform"] == {"os": "Linux", "architecture": "amd64"}
    assert request["agentConfiguration"] == {"cpu": 2}
    assert request["isArchiveEnabled"] is False
    json.dumps(request)
    assert ACCOUNT_KEY not in repr(spec) and GIT_TOKEN not in repr(spec)
    assert ACCOUNT_KEY not in repr(RunSecrets(cache_account_key=ACCOUNT_KEY))


def test_without_cache_or_secrets() -> None:
    spec = render_run(_request(), _config(cache=None), RunSecrets(cache_account_key=ACCOUNT_KEY))
    task = _task(spec)
    assert spec.values == ()
    assert _volume(task, "slipway-secrets") is None
    assert all(m["name"] == "slipway" for s in task["steps"] for m in s["volumeMounts"])
    assert "--cache-from" not in spec.scripts["build.sh"] and "azblob" not in spec.scripts["build.sh"]


def test_service_principal_values() -> None:
    secrets = RunSecrets(
        cache_tenant_id="72f988bf-86f1-41af-91ab-2d7cd011db47",
        cache_client_id="0b3a8e57-2f4c-4a8e-9d61-5f0c2b7e9a14",
        cache_client_secret="Q~x8Q~abc.DEF_ghi-JKL~mno",
        cache_account_key=ACCOUNT_KEY,  # not for this auth mode: not sent
    )
    spec = render_run(
        _request(),
        _config(cache={"account_url": "https://a.blob.core.windows.net", "auth": "service-principal"}),
        secrets,
    )
    assert [v.name for v in spec.values] == [
        "slipwayCacheTenantId",
        "slipwayCacheClientId",
        "slipwayCacheClientSecret",
    ]
    assert all(v.is_secret for v in spec.values)
    task = _task(spec)
    assert set(_volume(task, "slipway-secrets") or {}) == {
        "cache-tenant-id",
        "cache-client-id",
        "cache-client-secret",
    }
    mounts = {s["id"]: [m["name"] for m in s["volumeMounts"]] for s in task["steps"]}
    assert mounts["setup-builder"] == ["slipway", "slipway-secrets"]
    assert "secret_access_key" not in spec.scripts["build.sh"]


# --------------------------------------------------------------------------------------------
# Execution, emulating the agent


# The step image runs busybox ash; check the scripts under every POSIX shell at hand.
SHELLS = [shell for shell in ("dash", "bash", "busybox") if shutil.which(shell)]


@pytest.fixture(params=SHELLS)
def agent(tmp_path: Path, request: pytest.FixtureRequest) -> Agent:
    return Agent(tmp_path, shell=request.param)


def test_agent_emulation_expands_unprotected_volume_content(agent: Agent) -> None:
    """Why the launchers exist: a quoted hostile value written straight into a volume file runs."""
    hostile_script = f"ref='refs/heads/$(touch {agent.executed})'\n"
    agent.write_volume_file("slipway", "naive.sh", base64.b64encode(hostile_script.encode()).decode())
    assert agent.executed.exists()


@pytest.mark.skipif(shutil.which("base64") is None, reason="needs base64 (coreutils or busybox)")
def test_hostile_values_stay_inert_when_the_task_runs(agent: Agent) -> None:
    marker = agent.root / "pwned"
    ref = f"refs/heads/feat/$(touch${{IFS}}{marker})`id`;reboot"
    arg = f"$(touch {marker}) `reboot` ${{HOME}} 'quoted' \"double\" \\ EOL"
    request = _request(ref=ref, context="services/api").model_copy(update={"build_args": {"HOSTILE": arg}})
    secrets = RunSecrets(cache_account_key=ACCOUNT_KEY, git_token=GIT_TOKEN)
    spec = render_run(request, _config(), secrets)

    launchers = [base64.b64decode(v).decode() for v in (_volume(_task(spec), "slipway") or {}).values()]
    for text in [*spec.scripts.values(), *launchers]:
        subprocess.run([*agent.shell, "-n"], input=text, text=True, check=True)
    results = agent.run(spec)
    assert {k: (r.returncode, r.stderr) for k, r in results.items()} == {
        "binfmt": (0, ""),
        "setup-builder": (0, ""),
        "build": (0, ""),
    }
    assert not marker.exists() and not agent.executed.exists()
    assert ref in results["build"].stdout

    calls = agent.docker_calls()
    assert [c["argv"] for c in calls] == [
        ["run", "--privileged", "--rm", BINFMT, "--install", "arm64"],
        ["rm", "--force", "buildx_buildkit_slipway0"],
        [
            "buildx", "create", "--name", "slipway", "--driver", "docker-container",
            "--driver-opt", "image=" + MIRROR + "docker.io/moby/buildkit:v0.32.2", "--bootstrap", "--use",
        ],
        [
            "buildx", "build", "--builder", "slipway", "--progress", "plain",
            "--platform", "linux/amd64,linux/arm64", "--file", "Dockerfile",
            "--label", "org.opencontainers.image.source=https://github.com/o/r.git",
            "--label", f"org.opencontainers.image.revision={COMMIT}",
            "--tag", "slipway.azurecr.io/team/app:main",
            "--tag", "slipway.azurecr.io/team/app:sha-3f5a0c9",
            "--build-arg", f"HOSTILE={arg}",
            "--sbom=generator=" + SBOM_GENERATOR, "--provenance=mode=min",
            "--cache-from", f"{CACHE_COMMON},name=app-main;app-default,secret_access_key={ACCOUNT_KEY}",
            "--cache-to",
            f"{CACHE_COMMON},name=app-main,mode=max,ignore-error=true,secret_access_key={ACCOUNT_KEY}",
            "--secret", "id=GIT_AUTH_TOKEN.github.com,env=GIT_AUTH_TOKEN",
            "--push", "--metadata-file", f"{agent.workspace}/slipway-run/build-metadata.json",
            f"https://github.com/o/r.git#{COMMIT}:services/api",
        ],
    ]  # fmt: skip
    assert f"slipway-result: pushed slipway.azurecr.io/team/app@{FAKE_DIGEST}" in results["build"].stdout
    # The token reaches buildx without the newline the agent appends to volume files.
    assert calls[-1]["git_auth_token"] == GIT_TOKEN


def test_service_principal_reaches_the_builder_environment(agent: Agent) -> None:
    secrets = RunSecrets(
        cache_tenant_id="72f988bf-86f1-41af-91ab-2d7cd011db47",
        cache_client_id="0b3a8e57-2f4c-4a8e-9d61-5f0c2b7e9a14",
        cache_client_secret="Q~x8Q~abc.DEF_ghi-JKL~mno",
    )
    config = _config(cache={"account_url": "https://a.blob.core.windows.net", "auth": "service-principal"})
    spec = render_run(_request().model_copy(update={"platforms": ["linux/amd64"]}), config, secrets)
    results = agent.run(spec)
    assert all(r.returncode == 0 for r in results.values()), {k: r.stderr for k, r in results.items()}
    create = next(c["argv"] for c in agent.docker_calls() if c["argv"][:2] == ["buildx", "create"])
    assert create == [
        "buildx", "create", "--name", "slipway", "--driver", "docker-container",
        "--driver-opt", "image=" + MIRROR + "docker.io/moby/buildkit:v0.32.2",
        "--driver-opt", "env.AZURE_TENANT_ID=72f988bf-86f1-41af-91ab-2d7cd011db47",
        "--driver-opt", "env.AZURE_CLIENT_ID=0b3a8e57-2f4c-4a8e-9d61-5f0c2b7e9a14",
        "--driver-opt", "env.AZURE_CLIENT_SECRET=Q~x8Q~abc.DEF_ghi-JKL~mno",
        "--bootstrap", "--use",
    ]  # fmt: skip
    build = next(c["argv"] for c in agent.docker_calls() if c["argv"][:2] == ["buildx", "build"])
    cache_from = build[build.index("--cache-from") + 1]
    assert cache_from == (
        "type=azblob,account_url=https://a.blob.core.windows.net,account_name=a,container=buildkit-cache,"
        "name=app-main;app-default"
    )


def test_missing_secret_fails_the_step_with_a_message(agent: Agent) -> None:
    # Rendered without a secret (the dispatcher never does: it fills placeholders), the build step
    # names what is missing.
    spec = render_run(_request().model_copy(update={"platforms": ["linux/amd64"]}), _config(), RunSecrets())
    assert spec.values == () and _volume(_task(spec), "slipway-secrets") is None
    results = agent.run(spec)
    assert results["setup-builder"].returncode == 0
    assert results["build"].returncode == 1
    assert "the cache account key is missing" in results["build"].stderr
    assert not any(c["argv"][:2] == ["buildx", "build"] for c in agent.docker_calls())


# --------------------------------------------------------------------------------------------
# Secrets never appear in any text


_CLIENT_SECRET_ALPHABET = string.ascii_letters + string.digits + "~._-!#%&()*+/:;<=>?@[]^{|}"
# Generated secrets start with a marker found nowhere in a rendering, so that a secret cannot be
# "found" in a text only because hypothesis picked a constant of the template as the secret.
_MARK = "Zq7x"


def _marked(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return text.map(lambda value: _MARK + value)


_secrets = st.one_of(
    st.builds(
        lambda key, token: ("account-key", RunSecrets(cache_account_key=key, git_token=token)),
        _marked(st.binary(min_size=16, max_size=64).map(lambda b: base64.b64encode(b).decode())),
        st.one_of(
            st.none(), _marked(st.text(string.ascii_letters + string.digits + "_-", min_size=20, max_size=60))
        ),
    ),
    st.builds(
        lambda tenant, client, secret, token: (
            "service-principal",
            RunSecrets(
                cache_tenant_id=tenant, cache_client_id=client, cache_client_secret=secret, git_token=token
            ),
        ),
        st.uuids().map(str),
        st.uuids().map(str),
        _marked(st.text(_CLIENT_SECRET_ALPHABET, min_size=16, max_size=64)),
        st.one_of(st.none(), _marked(st.text(_CLIENT_SECRET_ALPHABET, min_size=20, max_size=60))),
    ),
)


def _texts(spec: RunSpec) -> list[str]:
    return [spec.task_yaml, json.dumps(spec.redacted()), repr(spec), *spec.scripts.values()]


# Valid stand-ins for every secret slot, to compare renderings with different secret values.
_OTHER = RunSecrets(
    cache_account_key="T3RoZXJLZXlPdGhlcktleQ==",
    cache_tenant_id="00000000-0000-4000-8000-000000000000",
    cache_client_id="00000000-0000-4000-8000-000000000001",
    cache_client_secret="Other~Secret~Value",
    git_token="other_token_value_000",
)


@settings(max_examples=25, deadline=None)
@given(case=_secrets)
def test_secrets_never_appear_in_task_text_or_redacted_request(case: tuple[str, RunSecrets]) -> None:
    auth, secrets = case
    config = _config(cache={"account_url": "https://a.blob.core.windows.net", "auth": auth})
    spec = render_run(_request(), config, secrets)
    texts = _texts(spec)
    # Nothing that is sent as text, stored or shown depends on a secret's value...
    other = RunSecrets(**{k: getattr(_OTHER, k) if v else None for k, v in vars(secrets).items()})
    other_texts = _texts(render_run(_request(), config, other))
    assert texts == other_texts
    # ...and no secret, nor its base64, is in any of them.
    present = [v for v in vars(secrets).values() if v]
    assert present
    for secret in present:
        encoded = base64.b64encode(secret.encode()).decode()
        for text in texts:
            assert secret not in text
            assert encoded not in text
    assert sorted(base64.b64decode(v.value).decode() for v in spec.values) == sorted(present)
    assert all(v.is_secret for v in spec.values)


# --------------------------------------------------------------------------------------------
# Refusals name the field


def _with_source(**changes: Any) -> BuildRequest:
    request = _request()
    return request.model_copy(update={"source": request.source.model_copy(update=changes)})


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (_with_source(repo_url="https://user:pass@github.com/o/r.git"), "source.repo_url"),
        (_with_source(repo_url="https://x-access-token@github.com/o/r.git"), "source.repo_url"),
        (_with_source(repo_url="http://github.com/o/r.git"), "source.repo_url"),
        (_with_source(repo_url="git@github.com:o/r.git"), "source.repo_url"),
        (_with_source(repo_url="https://github.com/o/r.git#main"), "source.repo_url"),
        (_with_source(repo_url="https://github.com/o/r.git;reboot"), "source.repo_url"),
        (_with_source(repo_url="https://github.com/o/../r.git"), "source.repo_url"),
        (_with_source(context="../outside"), "source.context"),
        (_with_source(context="/etc"), "source.context"),
        (_with_source(context="a b"), "source.context"),
        (_with_source(dockerfile="app/../../Dockerfile"), "source.dockerfile"),
        (_with_source(dockerfile="."), "source.dockerfile"),
        (_with_source(ref="main"), "source.ref"),
        (_with_source(ref="refs/heads/a b"), "source.ref"),
        (_with_source(ref="refs/heads/a..b"), "source.ref"),
        (_with_source(ref="refs/heads/x\n"), "source.ref"),
        (_with_source(commit=COMMIT.upper()), "source.commit"),
        (_request().model_copy(update={"build_args": {"A": "line\nbreak"}}), "build_args.A"),
        (_request().model_copy(update={"build_args": {"A": "nul\x00"}}), "build_args.A"),
        (_request().model_copy(update={"build_args": {"A=B": "x"}}), "build_args"),
        (_request().model_copy(update={"platforms": ["windows/amd64"]}), "platforms"),
        (_request().model_copy(update={"platforms": ["linux/amd64,linux/arm64"]}), "platforms"),
        (
            _request().model_copy(
                update={"cache": Cache.model_construct(name="a,b", from_names=[], mode="max")}
            ),
            "cache.name",
        ),
        (
            _request().model_copy(
                update={"cache": Cache.model_construct(name="a", from_names=["b;c"], mode="max")}
            ),
            "cache.from_names",
        ),
        (
            _request().model_copy(
                update={"trigger": _request().trigger.model_copy(update={"correlation_id": "a\nb"})}
            ),
            "trigger.correlation_id",
        ),
        (
            _request().model_copy(update={"image": _request().image.model_copy(update={"tags": ["$(x)"]})}),
            "image.tags",
        ),
    ],
)
def test_render_errors_name_the_field(request_: BuildRequest, field: str) -> None:
    with pytest.raises(RenderError) as info:
        render_run(request_, _config(), RunSecrets(cache_account_key=ACCOUNT_KEY))
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("cache", "field"),
    [
        ({"account_url": "https://a.blob.core.windows.net/x,y", "account_name": "a"}, "cache.account_url"),
        ({"account_url": "https://user@a.blob.core.windows.net", "account_name": "a"}, "cache.account_url"),
        ({"account_url": "https://a.blob.core.windows.net", "container": "Bad_Name"}, "cache.container"),
        ({"account_url": "https://a.blob.core.windows.net", "container": "a;b"}, "cache.container"),
        ({"account_url": "https://a.blob.core.windows.net", "prefix": "ci,x"}, "cache.prefix"),
        ({"account_url": "https://a.blob.core.windows.net", "prefix": "../up"}, "cache.prefix"),
    ],
)
def test_cache_storage_errors_name_the_field(cache: dict[str, Any], field: str) -> None:
    with pytest.raises(RenderError) as info:
        render_run(_request(), _config(cache=cache), RunSecrets(cache_account_key=ACCOUNT_KEY))
    assert info.value.field == field


@pytest.mark.parametrize(
    ("images", "field"),
    [
        ({"docker_cli": "docker.io/library/docker:latest"}, "tools.docker_cli"),
        ({"docker_cli": "docker.io/library/docker"}, "tools.docker_cli"),
        ({"docker_cli": "docker:29-cli && reboot"}, "tools.docker_cli"),
        ({"buildkit": "moby/buildkit:v0.26.3,network=host"}, "tools.buildkit"),
        ({"binfmt": "tonistiigi/binfmt:$(id)"}, "tools.binfmt"),
    ],
)
def test_tool_image_errors_name_the_field(images: dict[str, str], field: str) -> None:
    config = _config()
    config = config.model_copy(
        update={"tools": ToolImages.model_construct(**{**ToolImages().model_dump(), **images})}
    )
    with pytest.raises(RenderError) as info:
        render_run(_request(), config, RunSecrets(cache_account_key=ACCOUNT_KEY))
    assert info.value.field == field


@pytest.mark.parametrize(
    ("secrets", "field", "value"),
    [
        (RunSecrets(cache_account_key="not base64!"), "secrets.cache_account_key", "not base64!"),
        (RunSecrets(cache_account_key="abc$(reboot)"), "secrets.cache_account_key", "abc$(reboot)"),
        (RunSecrets(cache_account_key=ACCOUNT_KEY, git_token="tok`id`"), "secrets.git_token", "tok`id`"),
        (RunSecrets(cache_account_key=ACCOUNT_KEY, git_token="tok en"), "secrets.git_token", "tok en"),
    ],
)
def test_secret_errors_name_the_field_but_not_the_value(secrets: RunSecrets, field: str, value: str) -> None:
    with pytest.raises(RenderError) as info:
        render_run(_request(), _config(), secrets)
    assert info.value.field == field
    assert value not in str(info.value)


def test_service_principal_secret_with_a_comma_is_refused() -> None:
    config = _config(cache={"account_url": "https://a.blob.core.windows.net", "auth": "service-principal"})
    secrets = RunSecrets(cache_tenant_id="t", cache_client_id="c", cache_client_secret="a,b")
    with pytest.raises(RenderError) as info:
        render_run(_request(), config, secrets)
    assert info.value.field == "secrets.cache_client_secret"


def test_source_model_is_not_changed_by_rendering() -> None:
    request = _request(context="./app/")
    render_run(request, _config(), RunSecrets(cache_account_key=ACCOUNT_KEY))
    assert request.source == Source.model_validate(request.source.model_dump())
    assert request.source.context == "./app/"


def test_environment_is_not_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Rendering is pure: no settings, no network.
    for name in list(os.environ):
        if name.startswith(("AZURE_", "ACR_", "SLIPWAY_")):
            monkeypatch.delenv(name)
    assert render_run(_request(), _config(), RunSecrets()).task_yaml.startswith("version: v1.1.0\n")


# --------------------------------------------------------------------------------------------
# Head builds: a base-image or schedule build that knows no commit builds the ref's head


def _head(ref: str = "refs/heads/main", kind: str = "base-image", **source: Any) -> BuildRequest:
    request = _request(ref=ref, **source)
    return request.model_copy(
        update={
            "trigger": request.trigger.model_copy(update={"kind": kind}),
            "source": request.source.model_copy(update={"commit": None}),
        }
    )


@pytest.mark.parametrize("kind", ["base-image", "schedule"])
def test_head_build_uses_the_ref_as_the_git_context(kind: str) -> None:
    build = render_run(_head(kind=kind), _config(cache=None), RunSecrets()).scripts["build.sh"]
    assert "'https://github.com/o/r.git#refs/heads/main' </dev/null" in build
    assert "org.opencontainers.image.revision" not in build
    assert "org.opencontainers.image.source=https://github.com/o/r.git" in build
    assert "building the head of" in build
    sub = render_run(_head(context="services/api"), _config(cache=None), RunSecrets()).scripts["build.sh"]
    assert "'https://github.com/o/r.git#refs/heads/main:services/api'" in sub
    tag = render_run(_head(ref="refs/tags/v1.2"), _config(cache=None), RunSecrets()).scripts["build.sh"]
    assert "'https://github.com/o/r.git#refs/tags/v1.2'" in tag


def test_head_build_validates_as_a_build_request() -> None:
    body = json.loads(_head().to_json())
    assert body["source"]["commit"] is None
    assert BuildRequest.from_json(json.dumps(body)).source.commit is None
    body["trigger"]["kind"] = "push"
    with pytest.raises(ValueError, match=r"source\.commit is required for a push build"):
        BuildRequest.from_json(json.dumps(body))


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (_head(kind="push"), "source.commit"),  # built without validation: refused all the same
        (_head(kind="tag"), "source.commit"),
        (_head(ref="refs/heads/feat/$(reboot)"), "source.ref"),  # a legal ref, but not a fragment
        (_head(ref="refs/heads/a%41"), "source.ref"),  # Go's URL parser would unescape it
        (_head(ref="refs/heads/a#b"), "source.ref"),
        (_head(ref="refs/pull/1/head"), "source.ref"),
        (_head(ref="refs/heads/x..y"), "source.ref"),
    ],
)
def test_head_build_refusals_name_the_field(request_: BuildRequest, field: str) -> None:
    with pytest.raises(RenderError) as caught:
        render_run(request_, _config(), RunSecrets())
    assert caught.value.field == field


def test_head_build_runs_on_the_agent(agent: Agent) -> None:
    spec = render_run(_head(context="services/api"), _config(cache=None), RunSecrets())
    results = agent.run(spec)
    assert all(r.returncode == 0 for r in results.values()), {k: r.stderr for k, r in results.items()}
    argv = agent.docker_calls()[-1]["argv"]
    assert argv[-4:-3] == ["--push"]
    assert argv[-1] == "https://github.com/o/r.git#refs/heads/main:services/api"
    assert not any(a.startswith("org.opencontainers.image.revision") for a in argv)


# --- the run's own report marker -----------------------------------------------------------------


@pytest.mark.skipif(shutil.which("base64") is None, reason="needs base64 (coreutils or busybox)")
def test_the_steps_print_the_runs_own_marker_and_only_it_is_read_back(agent: Agent) -> None:
    from shared.acr.run_report import parse_run_report
    from shared.acr.task import RESULT_MARKER_RE, new_result_marker

    marker = new_result_marker()
    assert RESULT_MARKER_RE.match(marker) and marker != new_result_marker()
    secrets = RunSecrets(cache_account_key=ACCOUNT_KEY, git_token=GIT_TOKEN)
    spec = render_run(_request(), _config(), secrets, result_marker=marker)
    assert spec.result_marker == marker
    results = agent.run(spec)
    lines = results["build"].stdout.splitlines()
    assert f"{marker} pushed slipway.azurecr.io/team/app@{FAKE_DIGEST}" in lines
    assert not any(line.startswith("slipway-result: ") for line in lines)
    assert parse_run_report(lines, marker=marker).pushed == [("slipway.azurecr.io/team/app", FAKE_DIGEST)]
    assert parse_run_report(lines).pushed == []  # the plain marker is not this run's


@pytest.mark.parametrize(
    "marker",
    [
        "slipway-result",
        "slipway-result-:",
        "slipway-result-0123456789ABCDEF:",
        "x:",
        "slipway-result-'$(id)':",
    ],
)
def test_a_malformed_marker_is_refused(marker: str) -> None:
    with pytest.raises(RenderError, match="result_marker"):
        render_run(_request(), _config(), RunSecrets(cache_account_key=ACCOUNT_KEY), result_marker=marker)


# -- the C emitter writes exactly what the pure-Python one does (issue 22: rendering cost) -------


@settings(max_examples=25, deadline=None)
@given(
    ref=st.sampled_from(["refs/heads/main", "refs/heads/feature/x-1", "refs/tags/v1.2.3"]),
    build_args=st.dictionaries(
        st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True),
        st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12),
        max_size=3,
    ),
    gated=st.booleans(),
)
def test_the_c_emitter_writes_the_same_task_text(ref: str, build_args: dict[str, str], gated: bool) -> None:
    assert yaml.__with_libyaml__, "PyYAML's wheel ships libyaml here: the fast path must be the one tested"
    request = _request(ref=ref).model_copy(update={"build_args": build_args})
    config = _config(target={} if gated else None)
    try:
        spec = render_run(request, config, RunSecrets(cache_account_key=ACCOUNT_KEY, git_token=GIT_TOKEN))
    except RenderError:
        return  # a value the renderer refuses: nothing is written by either emitter
    task = yaml.safe_load(spec.task_yaml)
    assert spec.task_yaml == dump_task(task, dumper=yaml.CSafeDumper)
    assert spec.task_yaml == dump_task(task, dumper=yaml.SafeDumper)
