"""When do a payload's repository URLs name one repository? (``repository_conflict``)"""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from shared.intake.receivers.checks import repository_conflict

_NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,15}", fullmatch=True)
_HOST = st.from_regex(r"[a-z][a-z0-9-]{0,10}\.(com|org|example)", fullmatch=True)


def _forms(host: str, ssh_host: str, owner: str, repo: str) -> list[str]:
    """The forms Git hosts put in one push payload for one repository."""
    return [
        f"https://{host}/{owner}/{repo}",
        f"https://{host}/{owner}/{repo}.git",
        f"http://{host}/{owner}/{repo}.git",
        f"git://{host}/{owner}/{repo}.git",
        f"git@{ssh_host}:{owner}/{repo}.git",
        f"ssh://git@{ssh_host}:2222/{owner}/{repo}.git",
    ]


@given(_HOST, _HOST, _NAME, _NAME, st.randoms(use_true_random=False))
def test_the_forms_of_one_repository_agree(
    host: str, ssh_host: str, owner: str, repo: str, rnd: random.Random
) -> None:
    forms = _forms(host, ssh_host, owner, repo)
    rnd.shuffle(forms)
    assert repository_conflict(tuple(forms[: rnd.randint(1, len(forms))])) is None


@given(_HOST, _HOST, _NAME, _NAME)
def test_a_web_url_on_another_host_disagrees(host: str, other: str, owner: str, repo: str) -> None:
    if other == host:
        other = "x" + host
    reason = repository_conflict((f"https://{host}/{owner}/{repo}", f"https://{other}/{owner}/{repo}.git"))
    assert reason is not None and reason.startswith(
        "the payload's repository URLs name different repositories"
    )


@given(_HOST, _NAME, _NAME, _NAME)
def test_an_ssh_url_with_another_path_disagrees(host: str, owner: str, repo: str, other: str) -> None:
    if other.lower() == repo.lower():
        other = repo + "x"
    assert (
        repository_conflict((f"https://{host}/{owner}/{repo}", f"git@{host}:{owner}/{other}.git")) is not None
    )
    assert (
        repository_conflict((f"git@{host}:{owner}/{repo}.git", f"ssh://git@{host}/{owner}/{other}"))
        is not None
    )


def test_a_relative_url_root_is_not_a_disagreement() -> None:
    # A GitLab or Gitea under https://host/gitlab/ shows the prefix in its web URLs, not its ssh URLs.
    urls = ("https://host.example/gitlab/group/app", "git@host.example:group/app.git")
    assert repository_conflict(urls) is None
    assert repository_conflict(
        ("https://host.example/gitlab/group/app", "git@host.example:lab/group/app.git")
    )


def test_the_reason_is_bounded() -> None:
    urls = tuple(f"https://h{i}.example/{'o' * 500}/r" for i in range(50))
    reason = repository_conflict(urls)
    assert reason is not None and len(reason) < 600
