"""Pull-request builds (issue #20, items 3 and 4): the request, the rendered task, cache isolation.

The expected names and flags are written out here from the issue's rules (``<target>-pr-<n>``,
``pr-<n>`` tags, ``--output type=cacheonly`` from docs.docker.com/build/exporters/), never read
from the code under test.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.acr.run_backend import DryRunBackend
from shared.acr.task import RenderError, RunSecrets, RunSpec, render_run
from shared.app.cli import main
from shared.dispatch.dispatcher import Dispatcher, Outcome
from shared.dispatch.request_check import request_mismatch
from shared.intake.pr_policy import decide
from shared.intake.pr_routing import NotBuildable, request_for_pull_request
from shared.intake.routing import request_for_commit
from shared.model.build_request import BuildRequest, Trigger
from shared.model.cache_names import branch_cache_name, is_pr_cache_name, pr_cache_name
from shared.model.config import SlipwayConfig, Target, load_config, parse_config
from shared.model.events import PullRequestEvent
from shared.platform.ledger import FolderLedger
from tests.support.agent import DOCKER_CLI, FAKE_DIGEST, Agent

HEAD = "3f5a0c9e1b7d2486a1c0e9f8b7d6c5a4e3f2a1b0"
ACCOUNT_KEY = "c2VjcmV0LWtleS1kby1ub3QtbGVhaw=="
NOW = datetime(2026, 12, 1, tzinfo=UTC)
REGISTRY = "slipway.azurecr.io"
# app pushes PRs to a scratch repository (gated by the platform check, on by default); web builds
# them cache-only; docs names its caches by the bare branch, the adversarial template.
CONFIG_TEXT = """\
registry: slipway.azurecr.io
cache:
  account_url: https://slipwaycache.blob.core.windows.net
  auth: account-key
targets:
  - name: app
    repo: https://github.com/o/app
    image: team/app
    branches: [main, "release/*"]
    default_branch: main
    platforms: [linux/amd64, linux/arm64]
    pull_requests: {enabled: true, push: scratch, scratch_repository: team/app-pr}
  - name: web
    repo: https://github.com/o/web
    image: team/web
    branches: [main, pr-7, "pr/*"]
    default_branch: main
    platforms: [linux/amd64, linux/arm64]
    pull_requests:
      enabled: true
      platforms: [linux/amd64]
      forks: "on"
      fork_registry_token_setting: REGISTRY_TOKEN_PR
  - name: docs
    repo: https://github.com/o/docs
    image: team/docs
    branches: ["**"]
    cache: {name: "{branch}"}
"""
CONFIG: SlipwayConfig = parse_config(CONFIG_TEXT, source="slipway.yaml")
APP, WEB, DOCS = CONFIG.targets
SECRETS = RunSecrets(cache_account_key=ACCOUNT_KEY)


def _event(target: Target, *, number: int = 7, fork: bool = False, base: str = "main") -> PullRequestEvent:
    repo = f"https://github.com/o/{target.name}.git"
    return PullRequestEvent(
        provider="github",
        delivery_id="d-1",
        received_at=NOW,
        repo_urls=(repo,),
        number=number,
        action="opened",
        head_commit=HEAD,
        head_ref="refs/heads/feature/x",
        head_repo_urls=("https://github.com/someone/fork.git",) if fork else (repo,),
        base_ref=f"refs/heads/{base}",
        fork=fork,
    )


def _pr_request(target: Target, **event: Any) -> BuildRequest:
    pr_event = _event(target, **event)
    return request_for_pull_request(pr_event, CONFIG, target, decide(pr_event, target), correlation_id="c")


def _edited(request: BuildRequest, **changes: Any) -> BuildRequest:
    """A message someone edited: built without validation, as the renderer must expect."""
    return request.model_copy(update=changes)


def _script(spec: RunSpec, step: str) -> str:
    return spec.scripts[f"{step}.sh"]


# --- the request ------------------------------------------------------------------------------


def test_scratch_request_builds_the_head_into_the_scratch_repository() -> None:
    request = _pr_request(APP)
    assert request.trigger.kind == "pull-request"
    assert request.source.commit == HEAD and request.source.repo_url == "https://github.com/o/app.git"
    assert request.source.default_branch is None  # never recorded as the target's last build
    assert (request.image.registry, request.image.repository) == (REGISTRY, "team/app-pr")
    assert request.image.tags == ["pr-7", "pr-7-3f5a0c9e1b7d"]
    assert request.platforms == ["linux/amd64", "linux/arm64"]
    assert (request.cache.name, request.cache.from_names) == ("app-pr-7", ["app-main"])
    assert request.coalesce_key == "app:pr-7"
    pr = request.pull_request
    assert pr is not None
    assert (pr.number, pr.head_commit, pr.push, pr.scratch_repository) == (7, HEAD, "scratch", "team/app-pr")
    assert (pr.head_ref, pr.base_ref, pr.fork) == ("refs/heads/feature/x", "refs/heads/main", False)
    # Its JSON reads back as the same request.
    assert BuildRequest.from_json(request.to_json()) == request


def test_push_none_request_takes_the_policys_platforms_and_pushes_nothing() -> None:
    request = _pr_request(WEB, fork=True, base="pr/7")
    assert request.platforms == ["linux/amd64"]
    assert request.pull_request is not None and request.pull_request.push == "none"
    assert request.pull_request.fork and request.pull_request.scratch_repository is None
    assert request.image.tags == ["pr-7", "pr-7-3f5a0c9e1b7d"]
    # The base branch pr/7 caches as web-pr-7 would be named by the template: rewritten.
    assert (request.cache.name, request.cache.from_names) == ("web-pr-7", ["web-pr_7"])


def test_ids_differ_from_the_push_build_of_the_same_commit_and_between_requests() -> None:
    push = request_for_commit(
        CONFIG,
        APP,
        ref="refs/heads/feature/x",
        commit=HEAD,
        repo_url="https://github.com/o/app.git",
        trigger=Trigger(kind="push", provider="github", received_at=NOW, correlation_id="c"),
        default_branch="main",
    )
    ids = {push.id, _pr_request(APP).id, _pr_request(APP, number=8).id}
    assert len(ids) == 3
    assert _pr_request(APP).id == _pr_request(APP).id  # the same delivery twice: one build


def test_routing_refuses_what_the_verdict_refuses_or_cannot_build() -> None:
    closed = replace(_event(APP), action="closed")
    with pytest.raises(NotBuildable, match="closed"):
        request_for_pull_request(closed, CONFIG, APP, decide(closed, APP), correlation_id="c")
    fork = _event(APP, fork=True)  # forks are off for app
    with pytest.raises(NotBuildable, match="fork"):
        request_for_pull_request(fork, CONFIG, APP, decide(fork, APP), correlation_id="c")


def test_old_messages_are_unchanged_and_the_section_goes_with_its_trigger() -> None:
    push = json.loads(_pr_request(APP).to_json())
    assert push["trigger"]["kind"] == "pull-request" and "pull_request" in push
    plain = request_for_commit(
        CONFIG,
        APP,
        ref="refs/heads/main",
        commit=HEAD,
        repo_url="https://github.com/o/app.git",
        trigger=Trigger(kind="push", provider="github", received_at=NOW, correlation_id="c"),
    )
    assert "pull_request" not in json.loads(plain.to_json())
    body = json.loads(_pr_request(APP).to_json())
    for bad in (
        {"trigger": {**body["trigger"], "kind": "push"}},  # a section without its trigger
        {"pull_request": None},  # the trigger without its section
        {"source": {**body["source"], "commit": "b" * 40}},  # not the head commit
        {"image": {**body["image"], "tags": ["latest"]}},  # a release tag
        {"image": {**body["image"], "tags": ["pr-70"]}},  # another request's tag
        {"image": {**body["image"], "repository": "team/app"}},  # not the scratch repository
        {"pull_request": {**body["pull_request"], "scratch_repository": None}},
    ):
        with pytest.raises(ValidationError):
            BuildRequest.model_validate({**body, **bad})


def test_the_dispatcher_runs_a_routed_pull_request_build(tmp_path: Path) -> None:
    request = _pr_request(APP)
    assert request_mismatch(request, CONFIG, APP) is None
    dispatcher = Dispatcher(
        config=lambda: CONFIG,
        ledger=FolderLedger(tmp_path / "ledger"),
        backend=DryRunBackend(),
        settings={"SLIPWAY_CACHE_ACCOUNT_KEY": ACCOUNT_KEY},
    )
    result = dispatcher.dispatch(request.to_json(), message_id="m-1")
    assert result.outcome is Outcome.DISPATCHED, result
    # The same message again: the ledger holds the claim, nothing starts twice.
    assert dispatcher.dispatch(request.to_json(), message_id="m-1").outcome is Outcome.DUPLICATE


# --- the rendered task ------------------------------------------------------------------------


def _task(spec: RunSpec) -> dict[str, Any]:
    task: dict[str, Any] = yaml.safe_load(spec.task_yaml)
    return task


def _check_structure(spec: RunSpec) -> None:
    """The checks every rendered task passes (tests/test_task_render.py, test_task_structure)."""
    task = _task(spec)
    assert spec.task_yaml.splitlines()[0] == "version: v1.1.0"
    assert "$" not in spec.task_yaml
    assert re.sub(r"\{\{\.Values\.[A-Za-z]+\}\}", "", spec.task_yaml).count("{{") == 0
    assert sum(step["timeout"] for step in task["steps"]) == spec.timeout
    scripts = next(v for v in task["volumes"] if v["name"] == "slipway")["secret"]
    assert set(scripts) == set(spec.scripts) == {f"{step['id']}.sh" for step in task["steps"]}
    assert task["version"] == "v1.1.0" and isinstance(task["stepTimeout"], int)
    for step in task["steps"]:
        # The cmd is a constant: a tool image from the registry's mirror (the Docker CLI; the
        # scanner and ORAS, entry point sh, for the scan steps), then a script from the volume.
        image = {"scan": f"{TRIVY} ", "scan-gate": "ghcr.io/oras-project/oras:v1.2.2 "}.get(
            step["id"], f"{DOCKER_CLI} sh "
        )
        assert step["cmd"] == f"{REGISTRY}/slipway-tools/{image}-eu /run/slipway/{step['id']}.sh"
        assert isinstance(step["timeout"], int) and step["timeout"] > 0
        assert {"name": "slipway", "mountPath": "/run/slipway"} in step["volumeMounts"]
        launcher = base64.b64decode(scripts[f"{step['id']}.sh"]).decode()
        assert not set("$`\\") & set(launcher) and "EOL" not in launcher.splitlines()
    # The build context is BuildKit's Git context: no source location for ACR.
    request = spec.redacted()
    assert "sourceLocation" not in request and "source_location" not in request
    assert (spec.os, spec.architecture) == ("Linux", "amd64")


def test_push_none_builds_every_platform_into_its_own_cache_and_pushes_nothing() -> None:
    spec = render_run(_pr_request(WEB), CONFIG, SECRETS)
    _check_structure(spec)
    # No gate step: nothing was pushed to inspect, scan or tag.
    assert [s["id"] for s in _task(spec)["steps"]] == ["setup-builder", "build"]
    build = _script(spec, "build")
    assert 'set -- "$@" --output type=cacheonly\n' in build
    assert "--platform linux/amd64\n" in build
    for pushing in ("--push", "push=true", "--tag", "imagetools", "docker login", "team/web"):
        assert pushing not in "".join(spec.scripts.values())
    assert "name=web-pr-7;web-main" in build  # reads its own and the base branch's cache
    assert re.search(r"cache_to='?[^'\n]*,name=web-pr-7,mode=max", build)
    assert "--sbom=false" in build and "--provenance=false" in build


def test_push_scratch_pushes_by_digest_and_tags_only_pr_tags_in_the_scratch_repository() -> None:
    spec = render_run(_pr_request(APP), CONFIG, SECRETS)
    _check_structure(spec)
    steps = [s["id"] for s in _task(spec)["steps"]]
    assert steps == ["binfmt", "setup-builder", "build", "platform-check", "release-tags"]
    build = _script(spec, "build")
    assert f"type=image,name={REGISTRY}/team/app-pr,push-by-digest=true" in build
    assert re.search(r"cache_to='?[^'\n]*,name=app-pr-7,mode=max", build)
    tags = _script(spec, "release-tags")
    assert f"--tag {REGISTRY}/team/app-pr:pr-7 --tag" not in tags  # one word per line
    assert re.findall(r"--tag (\S+)", tags) == [
        f"{REGISTRY}/team/app-pr:pr-7",
        f"{REGISTRY}/team/app-pr:pr-7-3f5a0c9e1b7d",
    ]
    assert f"{REGISTRY}/team/app:" not in "".join(spec.scripts.values())


SHELLS = [shell for shell in ("dash", "bash", "busybox") if shutil.which(shell)]


@pytest.fixture(params=SHELLS)
def agent(tmp_path: Path, request: pytest.FixtureRequest) -> Agent:
    return Agent(tmp_path, shell=request.param)


@pytest.mark.skipif(shutil.which("base64") is None, reason="needs base64 (coreutils or busybox)")
def test_push_none_runs_on_the_agent(agent: Agent) -> None:
    results = agent.run(render_run(_pr_request(WEB), CONFIG, SECRETS))
    assert all(r.returncode == 0 for r in results.values()), {k: r.stderr for k, r in results.items()}
    assert "slipway-result: built linux/amd64 cache-only" in results["build"].stdout
    [build] = [c["argv"] for c in agent.docker_calls() if c["argv"][:2] == ["buildx", "build"]]
    assert build[build.index("--output") + 1] == "type=cacheonly"
    assert not {"--push", "--tag", "--metadata-file"} & set(build)
    cache_to = build[build.index("--cache-to") + 1]
    assert ",name=web-pr-7," in cache_to and cache_to.endswith(f",secret_access_key={ACCOUNT_KEY}")


@pytest.mark.skipif(shutil.which("base64") is None, reason="needs base64 (coreutils or busybox)")
def test_push_scratch_runs_on_the_agent(agent: Agent) -> None:
    results = agent.run(render_run(_pr_request(APP), CONFIG, SECRETS))
    assert all(r.returncode == 0 for r in results.values()), {k: r.stderr for k, r in results.items()}
    assert f"slipway-result: pushed {REGISTRY}/team/app-pr@{FAKE_DIGEST}" in results["build"].stdout
    [create] = [
        c["argv"] for c in agent.docker_calls() if c["argv"][:3] == ["buildx", "imagetools", "create"]
    ]
    assert create[-1] == f"{REGISTRY}/team/app-pr@{FAKE_DIGEST}"
    assert [create[i + 1] for i, a in enumerate(create) if a == "--tag"] == [
        f"{REGISTRY}/team/app-pr:pr-7",
        f"{REGISTRY}/team/app-pr:pr-7-3f5a0c9e1b7d",
    ]


# --- the renderer's isolation check, against edited messages --------------------------------


def _with(request: BuildRequest, part: str, **changes: Any) -> BuildRequest:
    return _edited(request, **{part: getattr(request, part).model_copy(update=changes)})


APP_PR = _pr_request(APP)
WEB_PR = _pr_request(WEB, fork=True)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (_with(APP_PR, "cache", name="app-main"), "cache.name"),  # writes the release cache
        (_with(APP_PR, "cache", name="app-pr-8"), "cache.name"),  # another request's
        (_with(APP_PR, "cache", from_names=["app-pr-8"]), "cache.from_names"),  # reads another's
        (_with(APP_PR, "cache", from_names=["app-release-1.0"]), "cache.from_names"),
        (_with(APP_PR, "image", repository="team/app"), "image.repository"),  # the release repository
        (_with(APP_PR, "image", tags=["latest"]), "image.tags"),  # a release tag
        (_with(APP_PR, "image", tags=["pr-8"]), "image.tags"),
        (_with(APP_PR, "image", registry="other.azurecr.io"), "image.registry"),
        (_with(WEB_PR, "image", repository="team/app"), "image.repository"),
        (_with(APP_PR, "source", commit="b" * 40), "source.commit"),
        (_with(APP_PR, "trigger", kind="push"), "pull_request"),
        (
            _edited(APP_PR, target="gone", cache=APP_PR.cache.model_copy(update={"name": "gone-pr-7"})),
            "target",
        ),
    ],
)
def test_the_renderer_refuses_a_pull_request_task_that_is_not_isolated(
    request_: BuildRequest, field: str
) -> None:
    with pytest.raises(RenderError) as caught:
        render_run(request_, CONFIG, SECRETS)
    assert caught.value.field == field


def test_a_scratch_repository_that_is_another_targets_release_repository_is_refused() -> None:
    text = CONFIG_TEXT.replace("image: team/docs", "image: team/app-pr")
    config = parse_config(text, source="slipway.yaml")
    with pytest.raises(RenderError, match="release repository"):
        render_run(_pr_request(config.targets[0]), config, SECRETS)


@pytest.mark.parametrize("names", [{"name": "app-pr-7"}, {"from_names": ["app-pr-7"]}])
def test_a_branch_build_never_uses_a_pull_request_cache(names: dict[str, Any]) -> None:
    push = request_for_commit(
        CONFIG,
        APP,
        ref="refs/heads/main",
        commit=HEAD,
        repo_url="https://github.com/o/app.git",
        trigger=Trigger(kind="push", provider="github", received_at=NOW, correlation_id="c"),
    )
    with pytest.raises(RenderError, match="pull-request cache name"):
        render_run(_with(push, "cache", **names), CONFIG, SECRETS)


# --- the naming rule, as a property ------------------------------------------------------------

TARGETS = st.from_regex(r"[a-z0-9][a-z0-9-]{0,62}", fullmatch=True)
ADVERSARIAL = [
    "pr-7",
    "pr/7",
    "pr-07",
    "x-pr-7",
    "pr-7/",
    "PR-7",
    "pr-7.",
    "pr-7-",
    "_pr-7",
    "pr--7",
    "ü-pr-7",
]
BRANCHES = st.one_of(
    st.sampled_from(ADVERSARIAL),
    st.text(min_size=1, max_size=300),  # unicode and long names included
    st.builds(
        lambda a, n, b: f"{a}pr{b}{n}", st.text(max_size=80), st.integers(0, 10**6), st.sampled_from("-/_.")
    ),
)
TEMPLATES = st.sampled_from(
    [
        "{target}-{branch}",
        "{branch}",
        "{target}",
        "{target}-pr-{branch}",
        "{branch}-pr-1",
        "x-{branch}",
        "{target}-{branch}-pr",
    ]
)


@settings(max_examples=400)
@given(
    target=TARGETS, other=TARGETS, template=TEMPLATES, branch=BRANCHES,
    kind=st.sampled_from(["heads", "tags"]), number=st.integers(1, 10**9),
)  # fmt: skip
def test_no_branch_or_tag_cache_name_is_ever_a_pull_requests(
    target: str, other: str, template: str, branch: str, kind: str, number: int
) -> None:
    name = branch_cache_name(template, other, f"refs/{kind}/{branch}")
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", name)
    assert not re.search(r"-pr-[0-9]+$", name) and not is_pr_cache_name(name)
    assert name != pr_cache_name(target, number) == f"{target}-pr-{number}"


def test_a_branch_named_like_a_pull_request_caches_under_another_name() -> None:
    assert branch_cache_name("{target}-{branch}", "app", "refs/heads/pr-7") == "app-pr_7"
    assert branch_cache_name("{branch}", "x", "refs/heads/app-pr-7") == "app-pr_7"
    assert branch_cache_name("{target}-{branch}", "app", "refs/heads/pr/7") == "app-pr_7"
    assert branch_cache_name("{target}-{branch}", "app", "refs/heads/main") == "app-main"  # unchanged


@settings(max_examples=100, deadline=None)
@given(branches=st.lists(BRANCHES, min_size=1, max_size=5), number=st.integers(1, 10**6))
def test_no_rendered_pull_request_task_writes_what_a_routed_branch_task_reads(
    branches: list[str], number: int
) -> None:
    trigger = Trigger(kind="push", provider="github", received_at=NOW, correlation_id="c")
    read: set[str] = set()
    for target in (APP, WEB, DOCS):
        for branch in branches:
            if not re.fullmatch(r"[A-Za-z0-9._/-]{1,200}", branch) or ".." in branch or branch.endswith("/"):
                continue  # not a ref routing would see; the name rule above covers every string
            push = request_for_commit(
                CONFIG,
                target,
                ref=f"refs/heads/{branch}",
                commit=HEAD,
                repo_url=f"https://github.com/o/{target.name}.git",
                trigger=trigger,
                default_branch="main",
            )
            read.update([push.cache.name, *push.cache.from_names])
    for target in (APP, WEB):
        request = _pr_request(target, number=number)
        build = _script(render_run(request, CONFIG, SECRETS), "build")
        [written] = re.findall(r"cache_to='?[^'\n]*,name=([^,']+),", build)
        assert written == f"{target.name}-pr-{number}" and written not in read


# --- slipway render --request-file ------------------------------------------------------------


@pytest.mark.parametrize(("target", "output"), [(APP, "push-by-digest=true"), (WEB, "type=cacheonly")])
def test_slipway_render_prints_the_pull_request_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: Target, output: str
) -> None:
    config_file = tmp_path / "slipway.yaml"
    config_file.write_text(CONFIG_TEXT)
    request_file = tmp_path / "request.json"
    request_file.write_text(_pr_request(target).to_json())
    capsys.readouterr()
    assert (
        main(["render", "--config", str(config_file), "--request-file", str(request_file), "--scripts"]) == 0
    )
    printed = capsys.readouterr().out
    assert output in printed and f"name={target.name}-pr-7," in printed
    # The same function the dispatcher renders with: the configuration read back gives the same task.
    assert load_config(config_file).target(target.name) is not None


# --- every gate combination, as the supply-chain tests check push builds -------------------------

GATES = {  # the target's gate settings, as YAML flow mappings' contents
    "none": "platform_check: false",
    "platform-check": "platform_check: true",
    "scan": "platform_check: false, scan: {severity: [CRITICAL]}",
    "both": "scan: {}",
}
TRIVY = "docker.io/aquasec/trivy:0.58.1@sha256:" + "7" * 64


def _gated_config(gate: str, push: str) -> SlipwayConfig:
    scratch = ", push: scratch, scratch_repository: team/app-pr" if push == "scratch" else ""
    text = CONFIG_TEXT.replace(
        "    pull_requests: {enabled: true, push: scratch, scratch_repository: team/app-pr}\n",
        f"    pull_requests: {{enabled: true{scratch}}}\n"
        f"    attestations: {{sbom: true, provenance: min}}\n"
        + "".join(f"    {item.strip()}\n" for item in re.split(r",\s*(?![^{]*\})", GATES[gate])),
    )
    return parse_config(text + f"scanner: {{image: '{TRIVY}'}}\n", source="slipway.yaml")


@pytest.mark.parametrize(("gate", "push"), [(g, p) for g in GATES for p in ("none", "scratch")])
def test_every_gate_combination_of_a_pull_request_task(gate: str, push: str) -> None:
    from tests.test_supply_chain_render import _ancestors

    config = _gated_config(gate, push)
    app = config.targets[0]
    event = _event(app)
    spec = render_run(
        request_for_pull_request(event, config, app, decide(event, app), correlation_id="c"), config, SECRETS
    )
    _check_structure(spec)
    steps = _task(spec)["steps"]
    ids = [s["id"] for s in steps]
    for step in steps:
        assert "ignoreErrors" not in step
        for shell in SHELLS:
            subprocess.run([shell, "-n"], input=spec.scripts[f"{step['id']}.sh"], text=True, check=True)
    everything = "".join(spec.scripts.values())
    assert f"{REGISTRY}/team/app:" not in everything and f"{REGISTRY}/team/app@" not in everything
    if push == "none":
        assert ids == ["binfmt", "setup-builder", "build"]  # nothing pushed: no gate to run
        assert "type=cacheonly" in spec.scripts["build.sh"] and "--sbom=false" in spec.scripts["build.sh"]
        return
    tagging = [i for i in ids if "--tag" in spec.scripts[f"{i}.sh"]]
    if gate == "none":  # no gate: the build tags as it pushes, in the scratch repository
        assert tagging == ["build"] and "release-tags" not in ids
    else:
        assert tagging == ["release-tags"] and ids[-1] == "release-tags"
        needed = set(ids) - {"binfmt", "setup-builder", "build", "release-tags"}
        assert needed and needed <= _ancestors(steps, "release-tags")
    assert set(re.findall(r"--tag (\S+)", everything)) == {
        f"{REGISTRY}/team/app-pr:pr-7",
        f"{REGISTRY}/team/app-pr:pr-7-3f5a0c9e1b7d",
    }


# --- the isolation property at the renderer, over generated configurations ----------------------

REF_NAMES = st.from_regex(
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,30}(/[A-Za-z0-9][A-Za-z0-9_-]{0,20}){0,2}", fullmatch=True
)


@settings(max_examples=60, deadline=None)
@given(
    name=TARGETS, template=TEMPLATES, base=REF_NAMES, others=st.lists(REF_NAMES, max_size=4),
    number=st.integers(1, 10**9),
)  # fmt: skip
def test_a_rendered_pull_request_task_writes_no_name_any_branch_task_reads(
    name: str, template: str, base: str, others: list[str], number: int
) -> None:
    assume(name != "bare")
    config = parse_config(
        "registry: slipway.azurecr.io\n"
        "cache: {account_url: 'https://slipwaycache.blob.core.windows.net', auth: account-key}\n"
        "targets:\n"
        f"  - {{name: '{name}', repo: 'https://github.com/o/a', image: team/a, branches: ['**'],\n"
        f"     cache: {{name: '{template}'}}, pull_requests: {{enabled: true}}}}\n"
        "  - {name: bare, repo: 'https://github.com/o/b', image: team/b, branches: ['**'],\n"
        "     cache: {name: '{branch}'}}\n",
        source="slipway.yaml",
    )
    target = config.targets[0]
    event = replace(_event(target, number=number, base=base), repo_urls=("https://github.com/o/a.git",))
    spec = render_run(
        request_for_pull_request(event, config, target, decide(event, target), correlation_id="c"),
        config,
        SECRETS,
    )
    [written] = re.findall(r"cache_to='?[^'\n]*,name=([^,']+),", spec.scripts["build.sh"])
    assert written == f"{name}-pr-{number}"
    trigger = Trigger(kind="push", provider="github", received_at=NOW, correlation_id="c")
    adversarial = [f"pr-{number}", f"pr/{number}", f"{name}-pr-{number}", base, *others]
    for branch_target in config.targets:
        for branch in adversarial:
            push = request_for_commit(
                config, branch_target, ref=f"refs/heads/{branch}", commit=HEAD,
                repo_url="https://github.com/o/x.git", trigger=trigger, default_branch=base,
            )  # fmt: skip
            assert written not in {push.cache.name, *push.cache.from_names}


# --- config validate renders a pull request of each target that builds them ---------------------


def test_config_validate_refuses_a_scratch_repository_that_is_a_release_repository() -> None:
    from shared.app.config_check import check_config_text
    from shared.model.config import ConfigError

    check_config_text(CONFIG_TEXT, source="slipway.yaml")  # the PR samples of app and web render
    with pytest.raises(ConfigError) as caught:
        check_config_text(
            CONFIG_TEXT.replace("image: team/docs", "image: team/app-pr"), source="slipway.yaml"
        )
    text = str(caught.value)
    assert "slipway.yaml:12: targets[0].pull_requests.scratch_repository" in text
    assert "every pull-request build would be refused" in text and "release repository" in text


@given(first=TARGETS, second=TARGETS, n=st.integers(1, 10**18), m=st.integers(1, 10**18))
def test_two_pull_requests_never_share_a_cache_name(first: str, second: str, n: int, m: int) -> None:
    if (first, n) != (second, m):
        assert pr_cache_name(first, n) != pr_cache_name(second, m)
    # Also when the generated names are built to look alike: a target named like another's PR cache.
    assert pr_cache_name(f"{first}-pr-{n}", m) != pr_cache_name(first, n)


@given(target=TARGETS, number=st.integers(1, 10**18), template=TEMPLATES, branch=BRANCHES)
def test_a_pull_request_cache_name_reads_back_as_its_target_and_number(
    target: str, number: int, template: str, branch: str
) -> None:
    """What the cache collector reads to find the request a cache belongs to (its close expires it)."""
    from shared.model.cache_names import parse_pr_cache_name

    assert parse_pr_cache_name(pr_cache_name(target, number)) == (target, number)
    assert parse_pr_cache_name(branch_cache_name(template, target, f"refs/heads/{branch}")) is None
