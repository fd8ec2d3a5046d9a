"""A fork pull request's run gets no secret of the target's (issue #20, item 5).

No Git token, no secret-looking build argument, no cache account key, and no registry login of
the run's own: ``credentials.sourceRegistry.loginMode`` is ``None`` and the only login is the ACR
token the policy names. The wire values below are written from the REST API spec
(azure-rest-api-specs, Microsoft.ContainerRegistry/RegistryTasks/preview/2025-03-01-preview,
``containerregistry_build.json`` and its example ``RegistriesScheduleRun_FileTask_WithCustomCredentials``:
``SourceRegistryLoginMode`` is ``None``/``Default``, a ``SecretObject`` is ``{"type": "Opaque",
"value": ...}``, ``customRegistries`` is keyed by login server), never read from the code.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.acr.run_backend import AcrBackend
from shared.acr.run_prepare import prepare_run
from shared.acr.task import RenderError, RunSecrets, RunSpec, render_run
from shared.app.config_check import check_config_text
from shared.app.doctor.settings_checks import check_secrets
from shared.intake.pr_policy import decide
from shared.intake.pr_routing import request_for_pull_request
from shared.model.build_request import BuildRequest
from shared.model.config import ConfigError, SlipwayConfig, Target, parse_config
from shared.model.events import PullRequestEvent
from tests.support.acr_server import AcrServer, StaticTokenCredential
from tests.support.agent import Agent
from tests.support.receiving import NOW

REGISTRY = "slipway.azurecr.io"
HEAD = "3f5a0c9e1b7d2486a1c0e9f8b7d6c5a4e3f2a1b0"
GIT_TOKEN = "ghp_GitTokenTheForkMustNeverSee0123"
ACCOUNT_KEY = "c2VjcmV0LWtleS1kby1ub3QtbGVhaw=="
CLIENT_SECRET = "sp-secret.value~0123"
TOKEN_USER = "slipway-pr-web"
TOKEN_PASSWORD = "q2Vr+fAkE/PaSsWoRd=0123456789abcdef"
NPM_TOKEN = "npm_SecretBuildArgValue0123"
# Everything a run could be handed; a fork's run must use none but the cache principal and its token.
EVERYTHING = RunSecrets(
    cache_account_key=ACCOUNT_KEY,
    cache_tenant_id="tenant.example",
    cache_client_id="client-0001",
    cache_client_secret=CLIENT_SECRET,
    git_token=GIT_TOKEN,
    fork_registry_token=f"{TOKEN_USER}:{TOKEN_PASSWORD}",
)


def _config(*, auth: str = "service-principal", mirror: bool = True, push: str = "scratch") -> SlipwayConfig:
    scratch = "\n      scratch_repository: team/web-pr" if push == "scratch" else ""
    return parse_config(
        f"""\
registry: {REGISTRY}
cache:
  account_url: https://slipwaycache.blob.core.windows.net
  auth: {auth}
{"" if mirror else "tools: {mirror: null}"}
targets:
  - name: web
    repo: https://github.com/o/web
    image: team/web
    platforms: [linux/amd64, linux/arm64]
    build_args: {{NPM_TOKEN: {NPM_TOKEN}, NODE_ENV: production}}
    pull_requests:
      enabled: true
      forks: "on"
      push: {push}{scratch}
      fork_registry_token_setting: REGISTRY_TOKEN_WEB
  - name: app
    repo: https://github.com/o/app
    image: team/app
    git_token_setting: GIT_TOKEN_APP
    pull_requests: {{enabled: true}}
""",
        source="slipway.yaml",
    )


CONFIG = _config()
WEB, APP = CONFIG.targets


def _event(target: Target, *, fork: bool, number: int = 7) -> PullRequestEvent:
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
        base_ref="refs/heads/main",
        fork=fork,
    )


def _request(target: Target, *, fork: bool, config: SlipwayConfig = CONFIG, number: int = 7) -> BuildRequest:
    event = _event(target, fork=fork, number=number)
    return request_for_pull_request(event, config, target, decide(event, target), correlation_id="c")


def _values(spec: RunSpec) -> dict[str, str]:
    """Each SetValue decoded (secret values are base64 of the volume file)."""
    return {v.name: base64.b64decode(v.value).decode() if v.is_secret else v.value for v in spec.values}


def _everything_sent(spec: RunSpec) -> str:
    """All the text of the run but the registry password: task, values, scripts."""
    return "\n".join([spec.task_yaml, *_values(spec).values(), *spec.scripts.values()])


# --- the configuration ------------------------------------------------------------------------


def test_a_target_that_needs_a_git_token_cannot_build_forks() -> None:
    for forks in ("on", "label"):
        label = ", label: ok-to-build" if forks == "label" else ""
        text = (
            f"registry: {REGISTRY}\ntargets:\n  - name: app\n    repo: https://github.com/o/app\n"
            f"    image: team/app\n    git_token_setting: GIT_TOKEN_APP\n"
            f"    pull_requests: {{enabled: true, forks: '{forks}'{label}}}\n"
        )
        with pytest.raises(ConfigError) as caught:
            parse_config(text, source="slipway.yaml")
        [problem] = [str(p) for p in caught.value.problems]
        assert problem.startswith("slipway.yaml:7: targets[0].pull_requests.forks: ")
        assert "RUN --mount=type=secret" in problem and "forks: off" in problem


@pytest.mark.parametrize(
    "name",
    [
        # Slipway's own secrets, and a Git token: none may become a fork's registry password.
        "GITHUB_WEBHOOK_SECRET",
        "SLIPWAY_CACHE_ACCOUNT_KEY",
        "SLIPWAY_CACHE_CLIENT_SECRET",
        "GITHUB_STATUS_TOKEN",
        "SLIPWAY_REGISTRY_PASSWORD",
        "GIT_TOKEN_WEB",
        "REGISTRY_TOKEN_",
        "registry-token-pr",
    ],
)
def test_the_fork_registry_token_names_only_registry_token_settings(name: str) -> None:
    text = (
        f"registry: {REGISTRY}\ntargets:\n  - name: web\n    repo: https://github.com/o/web\n"
        f"    image: team/web\n    pull_requests: {{enabled: true, forks: 'on', "
        f"fork_registry_token_setting: {name}}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="slipway.yaml")
    [problem] = [str(p) for p in caught.value.problems]
    assert "targets[0].pull_requests.fork_registry_token_setting: " in problem


def test_a_fork_registry_token_without_forks_is_an_error() -> None:
    text = (
        f"registry: {REGISTRY}\ntargets:\n  - name: web\n    repo: https://github.com/o/web\n"
        "    image: team/web\n"
        "    pull_requests: {enabled: true, fork_registry_token_setting: REGISTRY_TOKEN_PR}\n"
    )
    with pytest.raises(ConfigError, match="used only with forks: label or on"):
        parse_config(text, source="slipway.yaml")


def test_no_setting_of_slipways_own_carries_the_registry_token_prefix() -> None:
    """The prefix is safe to hand to config authors only while Slipway reads nothing under it."""
    from shared.model.config import REGISTRY_TOKEN_SETTING_PREFIX
    from tests.support.settings_read import settings_read_by_code

    own = settings_read_by_code(Path(__file__).resolve().parents[1])
    assert own, "the settings scan found nothing"
    assert REGISTRY_TOKEN_SETTING_PREFIX == "REGISTRY_TOKEN_"
    assert not [s for s in own if s.startswith(REGISTRY_TOKEN_SETTING_PREFIX)]


def test_config_validate_refuses_forks_that_need_the_registry_and_have_no_token() -> None:
    text = (
        f"registry: {REGISTRY}\ntargets:\n  - name: web\n    repo: https://github.com/o/web\n"
        "    image: team/web\n    pull_requests: {enabled: true, forks: 'on'}\n"
    )
    with pytest.raises(ConfigError) as caught:
        check_config_text(text, source="slipway.yaml")
    [problem] = [str(p) for p in caught.value.problems]
    assert problem.startswith("slipway.yaml:6: targets[0].pull_requests.fork_registry_token_setting: ")
    assert "every fork pull-request build would be refused" in problem
    assert f"never logged in to {REGISTRY}" in problem and "slipway-tools" in problem
    # Tools pulled upstream and nothing pushed: a fork needs nothing from the registry.
    checked = check_config_text(text.replace("targets:", "tools: {mirror: null}\ntargets:"), source="x")
    assert checked.config.targets[0].pull_requests.forks == "on"


def test_config_validate_warns_that_account_key_forks_build_without_the_cache() -> None:
    text = (
        f"registry: {REGISTRY}\n"
        "cache: {account_url: 'https://slipwaycache.blob.core.windows.net', auth: account-key}\n"
        "tools: {mirror: null}\n"
        "targets:\n  - name: web\n    repo: https://github.com/o/web\n"
        "    image: team/web\n    pull_requests: {enabled: true, forks: 'on'}\n"
    )
    [warning] = [str(w) for w in check_config_text(text, source="slipway.yaml").warnings]
    assert "targets[0].pull_requests.forks" in warning
    assert "without the cache" in warning and "service-principal" in warning
    sp = text.replace("account-key", "service-principal")
    assert not check_config_text(sp, source="slipway.yaml").warnings


# --- routing ----------------------------------------------------------------------------------


def test_a_forks_request_goes_without_the_secret_looking_build_arguments() -> None:
    fork, same = _request(WEB, fork=True), _request(WEB, fork=False)
    assert fork.build_args == {"NODE_ENV": "production"}
    assert same.build_args == {"NPM_TOKEN": NPM_TOKEN, "NODE_ENV": "production"}
    decision = decide(_event(WEB, fork=True), WEB)
    assert decision.build
    assert "build_args NPM_TOKEN look secret and are not passed to a fork pull request" in decision.notes
    assert not any("NPM_TOKEN" in note for note in decide(_event(WEB, fork=False), WEB).notes)


# --- the rendered run -------------------------------------------------------------------------


def test_a_forks_run_carries_no_git_token_no_build_secret_and_only_its_registry_token() -> None:
    spec = render_run(_request(WEB, fork=True), CONFIG, EVERYTHING)
    sent = _everything_sent(spec)
    for secret in (GIT_TOKEN, ACCOUNT_KEY, NPM_TOKEN, TOKEN_PASSWORD, "NPM_TOKEN", "GIT_AUTH", "--secret"):
        assert secret not in sent, secret
    # The cache is used through the principal in the builder's environment, not a build secret.
    assert set(_values(spec)) == {"slipwayCacheTenantId", "slipwayCacheClientId", "slipwayCacheClientSecret"}
    assert "env.AZURE_CLIENT_SECRET=" in spec.scripts["setup-builder.sh"]
    assert ",name=web-pr-7," in spec.scripts["build.sh"]
    # No login of the run's own; the fork's ACR token for the registry, and nothing else.
    assert spec.source_login_mode == "None"
    [login] = spec.registry_logins
    assert (login.login_server, login.user_name, login.password) == (REGISTRY, TOKEN_USER, TOKEN_PASSWORD)
    assert TOKEN_PASSWORD not in repr(spec) and TOKEN_PASSWORD not in repr(login)


def test_the_recorded_run_request_shows_the_credentials_without_the_password() -> None:
    spec = render_run(_request(WEB, fork=True), CONFIG, EVERYTHING)
    recorded = spec.redacted()
    assert recorded["credentials"] == {
        "sourceRegistry": {"loginMode": "None"},
        "customRegistries": {
            REGISTRY: {
                "userName": {"type": "Opaque", "value": TOKEN_USER},
                "password": {"type": "Opaque", "value": "***"},
            }
        },
    }
    text = json.dumps(recorded)
    for secret in (TOKEN_PASSWORD, GIT_TOKEN, CLIENT_SECRET, ACCOUNT_KEY, NPM_TOKEN):
        assert secret not in text


def test_a_same_repository_request_keeps_the_targets_git_token_and_the_runs_login() -> None:
    spec = render_run(_request(APP, fork=False), CONFIG, EVERYTHING)
    assert _values(spec)["slipwayGitToken"] == GIT_TOKEN
    assert "GIT_AUTH_TOKEN.github.com" in spec.scripts["build.sh"]
    assert (spec.source_login_mode, spec.registry_logins) == (None, ())
    assert "credentials" not in spec.redacted()
    same = render_run(_request(WEB, fork=False), CONFIG, EVERYTHING)
    assert f"NPM_TOKEN={NPM_TOKEN}" in same.scripts["build.sh"] and "credentials" not in same.redacted()


def test_the_renderer_refuses_a_fork_message_that_would_carry_a_secret() -> None:
    fork = _request(WEB, fork=True)
    with_arg = fork.model_copy(update={"build_args": {**fork.build_args, "NPM_TOKEN": NPM_TOKEN}})
    with pytest.raises(RenderError) as caught:
        render_run(with_arg, CONFIG, EVERYTHING)
    assert caught.value.field == "build_args" and NPM_TOKEN not in str(caught.value)
    # A fork of the private repository (app builds no forks: an edited message says it is one).
    same = _request(APP, fork=False)
    assert same.pull_request is not None
    edited = same.model_copy(update={"pull_request": same.pull_request.model_copy(update={"fork": True})})
    with pytest.raises(RenderError) as caught:
        render_run(edited, CONFIG, EVERYTHING)
    assert caught.value.field == "git_token_setting" and GIT_TOKEN not in str(caught.value)


def test_with_an_account_key_a_fork_builds_without_the_cache() -> None:
    config = _config(auth="account-key")
    spec = render_run(_request(config.targets[0], fork=True, config=config), config, EVERYTHING)
    assert _values(spec) == {}
    assert "--cache-from" not in spec.scripts["build.sh"] and "secret_access_key" not in _everything_sent(
        spec
    )
    same = render_run(_request(config.targets[0], fork=False, config=config), config, EVERYTHING)
    assert _values(same)["slipwayCacheAccountKey"] == ACCOUNT_KEY  # the repository's own requests keep it


def test_a_fork_that_needs_the_registry_and_has_no_token_is_refused() -> None:
    no_token = RunSecrets(cache_tenant_id="t.example", cache_client_id="c-1", cache_client_secret="s-1")
    with pytest.raises(RenderError) as caught:
        render_run(_request(WEB, fork=True), CONFIG, no_token)
    assert caught.value.field == "pull_requests.fork_registry_token_setting"
    assert "pulls slipway.azurecr.io/slipway-tools/" in str(caught.value)
    upstream = _config(mirror=False)
    with pytest.raises(RenderError, match="pushes to the scratch repository"):
        render_run(_request(upstream.targets[0], fork=True, config=upstream), upstream, no_token)
    # The refusal asks for the rights the run needs, and no more.
    pulls_only = _config(push="none")
    with pytest.raises(RenderError) as caught:
        render_run(_request(pulls_only.targets[0], fork=True, config=pulls_only), pulls_only, no_token)
    assert "may read those images (or pull the tools upstream (tools.mirror: null))" in str(caught.value)
    assert "scratch" not in str(caught.value) and "push:" not in str(caught.value)
    with pytest.raises(RenderError) as caught:
        render_run(_request(upstream.targets[0], fork=True, config=upstream), upstream, no_token)
    assert "may write only the scratch repository (or push: none)" in str(caught.value)
    assert "read those" not in str(caught.value) and "tools.mirror" not in str(caught.value)
    with pytest.raises(RenderError) as caught:
        render_run(_request(WEB, fork=True), CONFIG, no_token)
    assert (
        "may read those images and write only the scratch repository "
        "(or pull the tools upstream (tools.mirror: null) and push: none)"
    ) in str(caught.value)
    # Tools upstream, nothing pushed: nothing from the registry, no login at all.
    nothing = _config(mirror=False, push="none")
    spec = render_run(_request(nothing.targets[0], fork=True, config=nothing), nothing, no_token)
    assert (spec.source_login_mode, spec.registry_logins) == ("None", ())
    assert spec.redacted()["credentials"] == {"sourceRegistry": {"loginMode": "None"}}


@pytest.mark.parametrize("value", ["no-colon-here", "abc:pw", f"{TOKEN_USER}:pass word", f"{TOKEN_USER}:$x"])
def test_a_malformed_registry_token_is_refused_without_its_value(value: str) -> None:
    secrets = RunSecrets(cache_tenant_id="t.example", cache_client_id="c-1", cache_client_secret="s-1")
    secrets = RunSecrets(**{**vars(secrets), "fork_registry_token": value})
    with pytest.raises(RenderError) as caught:
        render_run(_request(WEB, fork=True), CONFIG, secrets)
    assert caught.value.field == "secrets.fork_registry_token"
    assert value not in str(caught.value) and "<token name>:<password>" in str(caught.value)


# --- the settings a fork's run needs ----------------------------------------------------------


def test_a_forks_run_reads_its_registry_token_and_never_the_git_token() -> None:
    settings = {
        "SLIPWAY_CACHE_TENANT_ID": "t.example",
        "SLIPWAY_CACHE_CLIENT_ID": "c-1",
        "SLIPWAY_CACHE_CLIENT_SECRET": CLIENT_SECRET,
        "REGISTRY_TOKEN_WEB": f"{TOKEN_USER}:{TOKEN_PASSWORD}",
        "GIT_TOKEN_APP": GIT_TOKEN,
    }
    prepared = prepare_run(_request(WEB, fork=True), CONFIG, WEB, settings)
    assert prepared.missing == ()
    assert [(login.user_name, login.password) for login in prepared.spec.registry_logins] == [
        (TOKEN_USER, TOKEN_PASSWORD)
    ]
    unset = prepare_run(_request(WEB, fork=True), CONFIG, WEB, {**settings, "REGISTRY_TOKEN_WEB": ""})
    assert unset.missing == ("REGISTRY_TOKEN_WEB",)  # the dispatcher refuses it; a dry run records why
    # The repository's own requests never read the fork's token.
    assert (
        prepare_run(_request(WEB, fork=False), CONFIG, WEB, {**settings, "REGISTRY_TOKEN_WEB": ""}).missing
        == ()
    )


def test_slipway_doctor_checks_the_forks_registry_token() -> None:
    acr = {"ACR_SUBSCRIPTION_ID": "s", "ACR_RESOURCE_GROUP": "rg", "ACR_NAME": "slipway"}
    base = {
        **acr,
        "SLIPWAY_CACHE_TENANT_ID": "t.example",
        "SLIPWAY_CACHE_CLIENT_ID": "c-1",
        "SLIPWAY_CACHE_CLIENT_SECRET": CLIENT_SECRET,
        "GIT_TOKEN_APP": GIT_TOKEN,
    }

    def run(settings: dict[str, str]) -> str:
        from shared.app.doctor.report import Failed

        try:
            return str(check_secrets(cast(Any, SimpleNamespace(config=CONFIG, settings=settings))))
        except Failed as failed:
            return f"FAILED {failed}"

    assert run(base).startswith("FAILED web (fork pull requests): setting REGISTRY_TOKEN_WEB is not set")
    bad = run({**base, "REGISTRY_TOKEN_WEB": "only-a-password"})
    assert bad.startswith("FAILED web (fork pull requests): setting REGISTRY_TOKEN_WEB must be <token name>:")
    assert "only-a-password" not in bad
    assert run({**base, "REGISTRY_TOKEN_WEB": f"{TOKEN_USER}:{TOKEN_PASSWORD}"}).startswith("every target's")


# --- what ACR receives ------------------------------------------------------------------------


def _backend(server: AcrServer) -> AcrBackend:
    return AcrBackend(
        subscription_id="00000000-0000-0000-0000-000000000001",
        resource_group="rg-builds",
        registry_name="slipway",
        credential=StaticTokenCredential(),
        base_url=server.base_url,
        connection_verify=server.ca_path,
    )


def test_acr_receives_login_mode_none_and_the_forks_token_only(acr_server: AcrServer) -> None:
    backend = _backend(acr_server)
    fork = render_run(_request(WEB, fork=True), CONFIG, EVERYTHING)
    backend.start(fork, request_id="web.fork", correlation_id="c")
    same = render_run(_request(APP, fork=False), CONFIG, EVERYTHING)
    backend.start(same, request_id="app.same", correlation_id="c")
    fork_body, same_body = (call.body for call in acr_server.requests)
    assert fork_body["credentials"] == {
        "sourceRegistry": {"loginMode": "None"},
        "customRegistries": {
            REGISTRY: {
                "userName": {"type": "Opaque", "value": TOKEN_USER},
                "password": {"type": "Opaque", "value": TOKEN_PASSWORD},
            }
        },
    }
    values = {v["name"]: v for v in fork_body["values"]}
    assert not {"slipwayGitToken", "slipwayCacheAccountKey"} & set(values)
    assert GIT_TOKEN not in json.dumps(fork_body)
    # Every other run sends no credentials: ACR logs it in to its registry as it always has.
    assert "credentials" not in same_body
    assert (
        base64.b64decode({v["name"]: v for v in same_body["values"]}["slipwayGitToken"]["value"]).decode()
        == GIT_TOKEN
    )


# --- on the agent -----------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("base64") is None, reason="needs base64 (coreutils or busybox)")
def test_a_forks_build_runs_with_no_build_secret(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    results = agent.run(render_run(_request(WEB, fork=True), CONFIG, EVERYTHING))
    assert all(r.returncode == 0 for r in results.values()), {k: r.stderr for k, r in results.items()}
    [build] = [c for c in agent.docker_calls() if c["argv"][:2] == ["buildx", "build"]]
    assert "--secret" not in build["argv"] and build["git_auth_token"] is None
    assert not [a for a in build["argv"] if "NPM_TOKEN" in a or "secret_access_key" in a]


# --- the property -----------------------------------------------------------------------------

CONFIGS = st.builds(
    lambda auth, mirror, push: _config(auth=auth, mirror=mirror, push=push),
    auth=st.sampled_from(["account-key", "service-principal"]),
    mirror=st.booleans(),
    push=st.sampled_from(["none", "scratch"]),
)
TOKENS = st.sampled_from([None, f"{TOKEN_USER}:{TOKEN_PASSWORD}"])


@settings(max_examples=60, deadline=None)
@given(config=CONFIGS, token=TOKENS, number=st.integers(1, 10**9), platforms=st.sampled_from([1, 2]))
def test_no_fork_run_ever_carries_the_git_token_a_build_secret_or_the_runs_own_login(
    config: SlipwayConfig, token: str | None, number: int, platforms: int
) -> None:
    target = config.targets[0]
    target = target.model_copy(update={"platforms": target.platforms[:platforms]})
    config = config.model_copy(update={"targets": [target, *config.targets[1:]]})
    secrets = RunSecrets(**{**vars(EVERYTHING), "fork_registry_token": token})
    try:
        spec = render_run(_request(target, fork=True, config=config, number=number), config, secrets)
    except RenderError as refused:  # only for want of a token the run needs
        assert token is None and refused.field == "pull_requests.fork_registry_token_setting"
        return
    sent = _everything_sent(spec)
    for secret in (GIT_TOKEN, ACCOUNT_KEY, NPM_TOKEN, TOKEN_PASSWORD, "GIT_AUTH", "secret_access_key"):
        assert secret not in sent, secret
    recorded = spec.redacted()
    assert json.dumps(recorded).count('"loginMode": "None"') == 1 and "Default" not in json.dumps(recorded)
    assert all(login.login_server == REGISTRY for login in spec.registry_logins)
    assert TOKEN_PASSWORD not in json.dumps(recorded)


def _scripts_of(task_yaml: str) -> list[str]:
    """The step scripts inside the task as ACR gets it: each volume file is a launcher holding the
    base64 of its script between its here-document lines (shared/acr/task/scripts.py)."""
    [volume] = [v for v in yaml.safe_load(task_yaml)["volumes"] if v["name"] == "slipway"]
    scripts = []
    for encoded in volume["secret"].values():
        lines = base64.b64decode(encoded).decode().splitlines()
        start = next(i for i, line in enumerate(lines) if line.endswith("<<'SLIPWAY_SCRIPT' | sh -eu"))
        end = lines.index("SLIPWAY_SCRIPT")
        scripts.append(base64.b64decode("".join(lines[start + 1 : end])).decode())
    return scripts


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=CONFIGS, number=st.integers(1, 10**9))
def test_no_fork_run_request_acr_receives_holds_a_secret_or_login_mode_default(
    acr_server: AcrServer, config: SlipwayConfig, number: int
) -> None:
    """The same property on the wire: the JSON body the real SDK sends to the loopback ACR."""
    spec = render_run(
        _request(config.targets[0], fork=True, config=config, number=number), config, EVERYTHING
    )
    before = len(acr_server.requests)
    _backend(acr_server).start(spec, request_id=f"web.fork.{number}", correlation_id="c")
    body = acr_server.requests[before].body
    task = base64.b64decode(body["encodedTaskContent"]).decode()
    decoded = [task, *_scripts_of(task)]
    for value in body["values"]:
        decoded.append(base64.b64decode(value["value"]).decode() if value["isSecret"] else value["value"])
    everything = json.dumps(body) + "\n".join(decoded)
    for secret in (GIT_TOKEN, ACCOUNT_KEY, NPM_TOKEN, "GIT_AUTH", "secret_access_key"):
        assert secret not in everything, secret
    assert body["credentials"]["sourceRegistry"] == {"loginMode": "None"}
    assert list(body["credentials"]["customRegistries"]) == [REGISTRY]
    assert any("docker buildx build" in script for script in decoded)  # the scripts were read
