"""The Authorization header each Git host gets for a private repository's token.

Each case renders a target through the dispatcher's own function, runs the build step the way the
ACR agent does (tests/support/agent.py) with a ``docker`` that records the build secrets it is
given, and computes the header BuildKit would send from them, re-implemented from moby/buildkit
``source/git/source.go`` (``authSecretNames``, ``getAuthToken``; at 73ed6825). That header must
be the scheme the host documents:

* GitHub: user ``x-access-token``, the token as password
  (https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/authenticating-as-a-github-app-installation).
* GitLab: "any non-blank value as a username", the token as password
  (https://docs.gitlab.com/user/profile/personal_access_tokens/).
* Azure DevOps: "a username, which can be anything except the empty string", the PAT as password
  (MicrosoftDocs/azure-devops-docs docs/repos/git/includes/personal-access-tokens.md).
* Gitea: a non-empty password is taken as the token (go-gitea/gitea services/auth/basic.go).
* Bitbucket Cloud access tokens: the literal user ``x-token-auth``
  (https://support.atlassian.com/bitbucket-cloud/docs/using-access-tokens/); API tokens: the
  Bitbucket user name or ``x-bitbucket-api-token-auth``
  (https://support.atlassian.com/bitbucket-cloud/docs/using-api-tokens/).
"""

from __future__ import annotations

import base64
import json
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from shared.acr.run_prepare import prepare_run
from shared.intake.routing import request_for_commit
from shared.model.build_request import Trigger
from shared.model.config import ConfigError, SlipwayConfig, parse_config
from shared.model.repo_urls import https_clone_url
from tests.support.agent import Agent

COMMIT = "3f5a0c9e1b7d2486a1c0e9f8b7d6c5a4e3f2a1b0"
# Longer than one base64 line (76 characters), so a wrapped encoding would show.
TOKEN = "ATCTT3xFfGN0" + "k" * 80 + "-_.~"
SHELLS = [shell for shell in ("dash", "bash", "busybox") if shutil.which(shell)]

# Records every build secret variable the build step exports, then runs the agent's fake docker.
RECORDING_DOCKER = """#!{python}
import json, os, sys
with open(os.environ["GIT_ENV_LOG"], "a") as log:
    env = {{k: v for k, v in os.environ.items() if k.startswith("GIT_AUTH")}}
    log.write(json.dumps({{"argv": sys.argv[1:], "env": env}}) + "\\n")
os.execv({real!r}, ["docker", *sys.argv[1:]])
"""


def buildkit_authorization(remote: str, secrets: dict[str, str]) -> str | None:
    """The Authorization value BuildKit's Git source sends to ``remote`` given these build secrets.

    source/git/source.go: the first of GIT_AUTH_HEADER.<host>, GIT_AUTH_TOKEN.<host>,
    GIT_AUTH_HEADER, GIT_AUTH_TOKEN that exists (``<host>`` is ``url.Parse(remote).Host``); a token
    becomes ``basic base64("x-access-token:" + token)``, a header is used as it is.
    """
    host = urlsplit(remote).netloc
    for name, is_token in (
        (f"GIT_AUTH_HEADER.{host}", False),
        (f"GIT_AUTH_TOKEN.{host}", True),
        ("GIT_AUTH_HEADER", False),
        ("GIT_AUTH_TOKEN", True),
    ):
        if name in secrets:
            value = secrets[name]
            if is_token:
                return "basic " + base64.b64encode(f"x-access-token:{value}".encode()).decode()
            return value
    return None


def basic_credentials(header: str) -> tuple[str, str]:
    scheme, _, encoded = header.partition(" ")
    assert scheme.lower() == "basic", header  # RFC 7617: the scheme name is case-insensitive
    user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    assert sep == ":"
    return user, password


def _documented_github(user: str, password: str) -> bool:
    return user == "x-access-token" and password == TOKEN


def _any_non_blank_user(user: str, password: str) -> bool:  # GitLab, Azure DevOps
    return user != "" and password == TOKEN


def _gitea(user: str, password: str) -> bool:
    return password == TOKEN  # non-empty password: the token, whatever the user


def _bitbucket_access_token(user: str, password: str) -> bool:
    return user == "x-token-auth" and password == TOKEN


def _bitbucket_api_token(user: str, password: str) -> bool:
    return user == "x-bitbucket-api-token-auth" and password == TOKEN


HOSTS: list[tuple[str, str | None, Callable[[str, str], bool]]] = [
    ("https://github.com/o/private-app", None, _documented_github),
    ("https://gitlab.com/group/sub/private-app", None, _any_non_blank_user),
    ("https://dev.azure.com/org/project/_git/private-app", None, _any_non_blank_user),
    ("https://gitea.example.com:3000/o/private-app", None, _gitea),
    ("https://bitbucket.org/workspace/private-app", None, _bitbucket_access_token),
    ("https://bitbucket.org/workspace/private-app", "x-bitbucket-api-token-auth", _bitbucket_api_token),
]


def _config(repo: str, user: str | None) -> SlipwayConfig:
    target: dict[str, Any] = {
        "name": "app",
        "repo": repo,
        "image": "team/app",
        "platforms": ["linux/amd64"],
        "platform_check": False,
        "git_token_setting": "GIT_TOKEN_APP",
    }
    if user is not None:
        target["git_token_user"] = user
    return SlipwayConfig.model_validate({"registry": "slipway.azurecr.io", "targets": [target]})


def _build_secrets(tmp_path: Path, shell: str, repo: str, user: str | None) -> tuple[str, dict[str, str]]:
    """Run the rendered build step; return its Git context's remote and the secrets buildx got."""
    config = _config(repo, user)
    target = config.targets[0]
    trigger = Trigger(kind="manual", provider="cli", received_at=datetime.now(UTC), correlation_id="c")
    request = request_for_commit(
        config, target, ref="refs/heads/main", commit=COMMIT, repo_url=https_clone_url(repo), trigger=trigger
    )
    prepared = prepare_run(request, config, target, {"GIT_TOKEN_APP": TOKEN})
    agent = Agent(tmp_path, shell=shell)
    (agent.bin / "real").mkdir()
    real = agent.bin / "real" / "docker"  # the fake tells tools apart by their file name
    (agent.bin / "docker").rename(real)
    recorder = agent.bin / "docker"
    recorder.write_text(RECORDING_DOCKER.format(python=sys.executable, real=str(real)))
    recorder.chmod(0o755)
    agent.env["GIT_ENV_LOG"] = str(tmp_path / "git-env.jsonl")
    results = agent.run(prepared.spec)
    assert all(r.returncode == 0 for r in results.values()), {k: r.stderr for k, r in results.items()}
    calls = [json.loads(line) for line in (tmp_path / "git-env.jsonl").read_text().splitlines()]
    [build] = [c for c in calls if c["argv"][:2] == ["buildx", "build"]]
    argv: list[str] = build["argv"]
    secrets: dict[str, str] = {}
    for index, word in enumerate(argv[:-1]):
        if word == "--secret":  # id=<name>,env=<variable>
            fields = dict(field.split("=", 1) for field in argv[index + 1].split(","))
            secrets[fields["id"]] = build["env"][fields["env"]]
    remote = argv[-1].split("#", 1)[0]  # the Git context: <remote>#<commit>
    return remote, secrets


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(("repo", "user", "documented"), HOSTS)
def test_each_host_gets_the_scheme_it_documents(
    tmp_path: Path, shell: str, repo: str, user: str | None, documented: Callable[[str, str], bool]
) -> None:
    remote, secrets = _build_secrets(tmp_path, shell, repo, user)
    assert urlsplit(remote).netloc == urlsplit(repo).netloc
    header = buildkit_authorization(remote, secrets)
    assert header is not None
    assert documented(*basic_credentials(header)), basic_credentials(header)
    # Host-scoped only: another remote a Dockerfile fetches (ADD <git url>) is offered nothing.
    assert set(secrets) <= {
        f"GIT_AUTH_TOKEN.{urlsplit(repo).netloc}",
        f"GIT_AUTH_HEADER.{urlsplit(repo).netloc}",
    }
    assert buildkit_authorization("https://elsewhere.example/o/r.git", secrets) is None


def test_bitbucket_would_get_x_access_token_from_buildkit_alone() -> None:
    """Why Bitbucket needs a header secret: BuildKit's token form names the wrong user."""
    header = buildkit_authorization("https://bitbucket.org/w/r.git", {"GIT_AUTH_TOKEN.bitbucket.org": TOKEN})
    assert header is not None and not _bitbucket_access_token(*basic_credentials(header))


def test_no_token_no_secret(tmp_path: Path) -> None:
    config = SlipwayConfig.model_validate(
        {
            "registry": "r.azurecr.io",
            "targets": [{"name": "app", "repo": "https://bitbucket.org/w/r", "image": "a/b"}],
        }
    )
    trigger = Trigger(kind="manual", provider="cli", received_at=datetime.now(UTC), correlation_id="c")
    target = config.targets[0]
    request = request_for_commit(
        config,
        target,
        ref="refs/heads/main",
        commit=COMMIT,
        repo_url=https_clone_url(target.repo),
        trigger=trigger,
    )
    build = prepare_run(request, config, target, {}).spec.scripts["build.sh"]
    assert "GIT_AUTH" not in build and "--secret" not in build


@pytest.mark.parametrize("user", ["user:name", "", "x y", "$(id)"])
def test_a_token_user_that_cannot_be_a_basic_user_name_is_refused(user: str) -> None:
    text = (
        "registry: r.azurecr.io\n"
        "targets:\n"
        "  - name: app\n"
        "    repo: https://bitbucket.org/w/r\n"
        "    image: a/b\n"
        f"    git_token_user: {json.dumps(user)}\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="slipway.yaml")
    assert "slipway.yaml:6" in str(info.value) and "git_token_user" in str(info.value)
