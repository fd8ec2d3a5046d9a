"""``config validate`` runs the renderer's checks (issue #17 item 6).

Each row of ``REFUSALS`` is a configuration the models accept and the renderer refuses for every
build: the test shows both against the real code (a push routed by ``route_push`` and rendered by
``prepare_run``, as the dispatcher does), then that the check refuses it at the field's line. The
property then generates configurations from good and bad field values: one checks exactly when
it has no bad value, and every one that checks renders real pushes of several refs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.acr.run_prepare import prepare_run
from shared.acr.task import RenderError
from shared.app.config_check import check_config_text
from shared.intake.base_images import rebuild_request
from shared.intake.routing import RouteResult, route_push
from shared.model.build_request import Trigger
from shared.model.config import ConfigError, SlipwayConfig, parse_config
from shared.model.events import PushEvent
from shared.model.repo_urls import https_clone_url

NOW = datetime(2026, 12, 1, tzinfo=UTC)
COMMIT = "8339b7affbd7c70bbacd0276f581d1ca44df0853"
BASE: dict[str, Any] = {
    "registry": "slipway.azurecr.io",
    "cache": {"account_url": "https://acct.blob.core.windows.net"},
}
TARGET: dict[str, Any] = {"name": "web", "repo": "https://github.com/contoso/web", "image": "contoso/web"}


def _document(top: dict[str, Any] | None = None, **target: Any) -> str:
    data = {**BASE, **(top or {})}
    if "cache" in (top or {}):
        data["cache"] = {**BASE["cache"], **top["cache"]}  # type: ignore[index]
    data["targets"] = [{**TARGET, **target}]
    return yaml.safe_dump(data, sort_keys=False)


def _push(config: SlipwayConfig, ref: str) -> RouteResult:
    target = config.targets[0]
    event = PushEvent(
        provider="github",
        delivery_id="d",
        received_at=NOW,
        repo_urls=(target.repo,),
        clone_url=https_clone_url(target.repo),
        ref=ref,
        after=COMMIT,
        default_branch="main",
    )
    return route_push(event, config, correlation_id="c")


def _renderer_refuses(config: SlipwayConfig) -> bool:
    """Whether the dispatcher's renderer refuses a push of main, or a head rebuild (base images)."""
    target = config.targets[0]
    requests = list(_push(config, "refs/heads/main").accepted)
    if target.base_images:
        trigger = Trigger(kind="base-image", provider="acr", received_at=NOW, correlation_id="c")
        try:
            rebuild = rebuild_request(
                config, target, last=None, trigger=trigger, id_parts=("x",), result=RouteResult()
            )
        except ValidationError:
            return True
        requests += [rebuild] if rebuild is not None else []
    for request in requests:
        try:
            prepare_run(request, config, target, {})
        except RenderError:
            return True
    return False


# (id, top-level overrides, target overrides, the field the problem must name)
REFUSALS: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("dockerfile-dotdot", {}, {"dockerfile": "./docker/../Dockerfile"}, "targets[0].dockerfile"),
    ("dockerfile-absolute", {}, {"dockerfile": "/Dockerfile"}, "targets[0].dockerfile"),
    ("dockerfile-root", {}, {"dockerfile": "."}, "targets[0].dockerfile"),
    ("context-dotdot", {}, {"context": "../shared"}, "targets[0].context"),
    ("context-space", {}, {"context": "src dir"}, "targets[0].context"),
    ("repo-space", {}, {"repo": "https://github.com/contoso/we b"}, "targets[0].repo"),
    ("repo-dotdot", {}, {"repo": "https://github.com/contoso/../web"}, "targets[0].repo"),
    ("platform-windows", {}, {"platforms": ["windows/amd64"]}, "targets[0].platforms"),
    ("build-arg-newline", {}, {"build_args": {"NOTE": "a\nb"}}, "targets[0].build_args.NOTE"),
    ("build-arg-long", {}, {"build_args": {"BIG": "x" * 9000}}, "targets[0].build_args.BIG"),
    (
        "default-branch-space",
        {},
        {"default_branch": "a b", "base_images": ["python:3.12"]},
        "targets[0].default_branch",
    ),
    ("cache-container", {"cache": {"container": "Bad_Container"}}, {}, "cache.container"),
    ("cache-prefix", {"cache": {"prefix": "a/../b"}}, {}, "cache.prefix"),
    ("cache-prefix-comma", {"cache": {"prefix": "a,b"}}, {}, "cache.prefix"),
    (
        "cache-account-url-comma",
        {"cache": {"account_url": "https://acct.blob.core.windows.net/a,b", "account_name": "acct"}},
        {},
        "cache.account_url",
    ),
    ("agent-pool", {"run": {"agent_pool": "bad pool"}}, {}, "run.agent_pool"),
]


@pytest.mark.parametrize(("top", "target", "field"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_each_renderer_refusal_is_a_validation_problem(
    top: dict[str, Any], target: dict[str, Any], field: str
) -> None:
    text = _document(top, **target)
    config = parse_config(text, source="slipway.yaml")  # the models accept it: this was "OK"
    assert _renderer_refuses(config)  # and the dispatcher's renderer refuses its builds
    with pytest.raises(ConfigError) as caught:
        check_config_text(text, source="slipway.yaml")
    problems = {p.path: p for p in caught.value.problems}
    assert field in problems, caught.value
    key = field.rsplit(".", 1)[-1].split("[")[0]
    lines = [n for n, line in enumerate(text.splitlines(), 1) if line.lstrip().startswith(f"{key}:")]
    assert problems[field].line == lines[-1]
    assert str(problems[field]).startswith(f"slipway.yaml:{lines[-1]}: {field}: ")


def test_every_problem_is_reported_at_once() -> None:
    text = _document(
        {"run": {"agent_pool": "bad pool"}, "cache": {"container": "Bad_Container"}},
        dockerfile="../Dockerfile",
        platforms=["windows/amd64"],
    )
    with pytest.raises(ConfigError) as caught:
        check_config_text(text, source="s.yaml")
    assert {p.path for p in caught.value.problems} == {
        "run.agent_pool",
        "cache.container",
        "targets[0].dockerfile",
        "targets[0].platforms",
    }


def test_warnings_where_default_branch_is_needed() -> None:
    bitbucket: dict[str, Any] = {
        "repo": "https://bitbucket.org/contoso/web",
        "branches": ["master", "feature/*"],
    }
    checked = check_config_text(_document(**bitbucket), source="s.yaml")
    [warning] = checked.warnings
    assert warning.path == "targets[0]" and "bitbucket.org" in warning.message
    assert "set default_branch" in warning.message
    assert check_config_text(_document(**bitbucket, default_branch="master"), source="s").warnings == ()
    globs: dict[str, Any] = {"branches": ["release/*"], "schedule": "0 3 * * *"}
    [warning] = check_config_text(_document(**globs), source="s.yaml").warnings
    assert warning.path == "targets[0].branches" and "set default_branch" in warning.message
    # GitHub reports the default, and nothing rebuilds: no warning.
    assert check_config_text(_document(branches=["release/*"]), source="s").warnings == ()


@pytest.mark.parametrize(
    ("repo", "host"),
    [
        ("https://dev.azure.com/contoso/web/_git/web", "Azure DevOps"),
        ("https://contoso.visualstudio.com/DefaultCollection/web/_git/web", "Azure DevOps"),
        ("https://tfs.contoso.test/tfs/Main/web/_git/web", "Azure DevOps"),  # Azure DevOps Server
        ("https://bitbucket.org/contoso/web", "Bitbucket Cloud"),
        ("https://github.com/contoso/web", None),
        ("https://gitlab.com/contoso/web", None),
    ],
)
def test_forks_label_on_a_host_without_label_events_is_a_warning(repo: str, host: str | None) -> None:
    """Azure DevOps and Bitbucket Cloud send no event for a label added (their receivers read none
    as ``labeled``): ``forks: label`` is valid there, but no fork ever builds, so it warns."""
    policy = {
        "enabled": True,
        "forks": "label",
        "label": "safe to build",
        "fork_registry_token_setting": "REGISTRY_TOKEN_WEB",
    }
    checked = check_config_text(
        _document(repo=repo, default_branch="main", pull_requests=policy), source="s.yaml"
    )
    found = [w for w in checked.warnings if "forks: label never builds" in w.message]
    if host is None:
        assert found == []
        return
    [warning] = found
    assert warning.path == "targets[0].pull_requests.forks"
    assert f"{host} sends no event when a label is added" in warning.message
    # forks: on builds a fork's request on every event: no such warning.
    on = {**policy, "forks": "on"}
    on.pop("label")
    checked = check_config_text(_document(repo=repo, default_branch="main", pull_requests=on), source="s")
    assert not [w for w in checked.warnings if "forks: label" in w.message]


# --- property: generated configurations --------------------------------------------------------

# field -> (values the renderer accepts, values it refuses); every value passes the models.
FIELDS: dict[str, tuple[list[Any], list[Any]]] = {
    "dockerfile": (
        ["Dockerfile", "./docker/Dockerfile", "docker/app.Dockerfile"],
        ["../Dockerfile", "/Dockerfile"],
    ),
    "context": ([".", "./", "src/app", "src/"], ["../x", "a b", "a//b"]),
    "repo": (
        [
            "https://github.com/contoso/web",
            "git@github.com:contoso/web.git",
            "ssh://git@github.com/contoso/web",
        ],
        ["https://github.com/contoso/we b", "https://github.com/contoso/./web"],
    ),
    "platforms": ([["linux/amd64"], ["linux/arm64", "linux/arm/v7"]], [["windows/amd64"]]),
    "build_args": ([{}, {"VERSION": "1.2.3", "EMPTY": ""}], [{"NOTE": "a\nb"}, {"NUL": "a\x00b"}]),
    "branches": ([["main"], ["main", "release/*"], ["**"]], []),
    "tags": ([[], ["v*"], ["release-1"]], []),
}
TOP: dict[str, tuple[list[Any], list[Any]]] = {
    "cache": (
        [{"container": "buildkit-cache"}, {"prefix": "team/a"}],
        [{"container": "UP"}, {"prefix": "a/../b"}],
    ),
    "run": ([{}, {"agent_pool": "pool-1"}], [{"agent_pool": "bad pool"}]),
}


@st.composite
def _choices(draw: st.DrawFn, fields: dict[str, tuple[list[Any], list[Any]]]) -> tuple[dict[str, Any], bool]:
    chosen: dict[str, Any] = {}
    bad = False
    for name, (good_values, bad_values) in fields.items():
        pick_bad = bool(bad_values) and draw(st.integers(0, 4)) == 0
        chosen[name] = draw(st.sampled_from(bad_values if pick_bad else good_values))
        bad |= pick_bad
    return chosen, bad


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(target=_choices(FIELDS), top=_choices(TOP))
def test_a_configuration_checks_exactly_when_every_build_renders(
    target: tuple[dict[str, Any], bool], top: tuple[dict[str, Any], bool]
) -> None:
    (target_fields, target_bad), (top_fields, top_bad) = target, top
    text = _document(top_fields, **target_fields)
    parse_config(text, source="s")  # every value passes the models alone
    try:
        config = check_config_text(text, source="s").config
    except ConfigError as exc:
        assert target_bad or top_bad, str(exc)  # nothing good is refused
        return
    assert not (target_bad or top_bad), f"a refused value passed:\n{text}"
    # It renders: real pushes of the default branch, of a branch its globs match, of a tag.
    refs = ["refs/heads/main", "refs/heads/release/1.x", "refs/tags/v2.0.0", "refs/tags/release-1"]
    for ref in refs:
        for request in _push(config, ref).accepted:
            prepare_run(request, config, config.targets[0], {})
