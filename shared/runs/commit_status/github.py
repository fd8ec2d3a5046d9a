"""GitHub commit statuses (github.com, GHE.com, GitHub Enterprise Server).

Token: ``GITHUB_STATUS_TOKEN``, a fine-grained token or GitHub App installation token with the
repository permission "Commit statuses: Read and write" (plus the implicit "Metadata: Read") on
the built repositories only; a classic token needs only the ``repo:status`` scope.
``GITHUB_API_URL`` overrides the API (GHES: ``https://<host>/api/v3``); when set it serves every
GitHub repository, since one deployment holds one GitHub token.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from shared.runs.commit_status.model import CommitStatus, require_location, truncate
from shared.runs.commit_status.transport import DEFAULT_TIMEOUT_S, Transport


class GitHubStatusClient:
    """``POST /repos/{owner}/{repo}/statuses/{sha}``; GitHub rejects descriptions over 140 chars.

    A pull request's status is posted the same way, on the configured (base) repository for the
    head commit, fork or not: "commits in a pull request are available in a repository even
    before the pull request is merged" (GitHub docs, "Checking out pull requests locally": the
    base repository's ``refs/pull/<n>/head``), a pull request's own ``statuses_url`` is the base
    repository's ``/statuses/<head sha>``, and the request shows its head commit's statuses in
    its merge box and commit list ("About status checks"; its Checks tab lists check runs only,
    not commit statuses). Statuses are per repository, commit and ``context`` ("a limit of 1000
    statuses per sha and context within a repository", Create a commit status).
    """

    provider = "github"
    DESCRIPTION_LIMIT = 140
    CONTEXT_LIMIT = 255

    def __init__(
        self, token: str, *, api_url: str = "https://api.github.com", timeout: float = DEFAULT_TIMEOUT_S
    ):
        self.api_url = api_url.rstrip("/")
        self._token = token
        self._http = Transport((token,), timeout)

    def __repr__(self) -> str:
        return f"GitHubStatusClient(api_url={self.api_url!r})"

    def post(self, status: CommitStatus) -> None:
        loc = require_location(status.repo_url, min_segments=2)
        owner, repo = (quote(s, safe="") for s in loc.segments[:2])
        body: dict[str, Any] = {
            "state": status.state.value,
            "description": truncate(status.description, self.DESCRIPTION_LIMIT),
            "context": status.context[: self.CONTEXT_LIMIT],
        }
        if status.target_url:
            body["target_url"] = status.target_url
        self._http.post_json(
            f"{self.api_url}/repos/{owner}/{repo}/statuses/{status.commit}",
            {
                "Authorization": f"Bearer {self._token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            },
            body,
        )
