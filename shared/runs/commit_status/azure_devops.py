"""Azure DevOps Services commit statuses (dev.azure.com, *.visualstudio.com), and its repository URLs.

Token: ``AZURE_DEVOPS_STATUS_TOKEN``, a PAT with only the "Code (status)" scope
(``vso.code_status``: read and write commit and pull request statuses), sent as Basic auth with
an empty user; a Microsoft Entra access token (a JWT) is sent as Bearer instead.
``AZURE_DEVOPS_API_URL`` overrides the server root (default ``https://dev.azure.com``, the
organisation is appended). Azure DevOps Server (on-premises collections) is not supported.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote

from shared.model.repo_urls import parse_repo_url
from shared.runs.commit_status.model import (
    CommitState,
    CommitStatus,
    StatusPostError,
    truncate,
)
from shared.runs.commit_status.transport import DEFAULT_TIMEOUT_S, Transport


@dataclass(frozen=True)
class AzureDevOpsRepo:
    """An Azure DevOps Services repository: its organisation, project and name (case kept)."""

    organization: str
    project: str
    repository: str


def parse_azure_devops_repo(repo_url: str) -> AzureDevOpsRepo | None:
    """Organisation, project and repository of an Azure DevOps Services URL.

    Forms: ``https://[user@]dev.azure.com/{org}/{project}/_git/{repo}``,
    ``https://{org}.visualstudio.com/[DefaultCollection/]{project}/_git/{repo}``, the
    project's default repository (``.../{org}/_git/{project}``) and the SSH forms
    ``git@ssh.dev.azure.com:v3/{org}/{project}/{repo}`` / ``{org}@vs-ssh.visualstudio.com:v3/...``.
    """
    loc = parse_repo_url(repo_url)
    if loc is None:
        return None
    segs = list(loc.segments)
    if loc.host in ("ssh.dev.azure.com", "vs-ssh.visualstudio.com"):
        if len(segs) == 4 and segs[0] == "v3":
            return AzureDevOpsRepo(segs[1], segs[2], segs[3])
        return None
    if "_git" not in segs:
        return None
    at = segs.index("_git")
    before, after = segs[:at], segs[at + 1 :]
    if len(after) != 1:
        return None
    repo = after[0]
    if loc.host == "dev.azure.com":
        if not before or len(before) > 2:
            return None
        org, project = before[0], before[1] if len(before) == 2 else repo
    elif loc.host.endswith(".visualstudio.com"):
        org = loc.host.removesuffix(".visualstudio.com")
        if before[:1] and before[0].lower() == "defaultcollection":
            before = before[1:]
        if len(before) > 1:
            return None
        project = before[0] if before else repo
    else:
        return None
    return AzureDevOpsRepo(org, project, repo)


class AzureDevOpsStatusClient:
    """``POST {org}/{project}/_apis/git/repositories/{repo}/commits/{sha}/statuses``.

    The context ``slipway/<target>`` becomes genre ``slipway`` and name ``<target>``: Azure
    DevOps identifies a status (and a branch policy's required status) by the pair.

    A pull-request build's status goes to the pull request instead:
    ``POST .../repositories/{repo}/pullRequests/{id}/statuses`` (Pull Request Statuses - Create,
    learn.microsoft.com/rest/api/azure/devops/git/pull-request-statuses/create). That is the
    status the PR details view shows and a branch policy's "Status checks" reads ("Customize and
    extend pull request workflows with pull request status", Azure Repos docs); a commit status
    is neither. The same body; "only the latest [status] is shown for each unique context". It
    is posted to the request as a whole, without ``iterationId``: finding the iteration of a head
    means listing the request's iterations, which needs ``vso.code`` (read code), more than the
    ``vso.code_status`` this token has. The description names the head commit, and a new head's
    build posts ``pending`` under the same context, replacing the older outcome. A fork's
    request lives in the configured (target) repository like any other, so forks need nothing
    else.
    """

    provider = "azure-devops"
    API_VERSION = "7.1"
    DESCRIPTION_LIMIT = 255  # no documented limit; one readable line in the PR status panel
    STATES: ClassVar[Mapping[CommitState, str]] = {
        CommitState.PENDING: "pending",
        CommitState.SUCCESS: "succeeded",
        CommitState.FAILURE: "failed",
        CommitState.ERROR: "error",
    }

    def __init__(
        self, token: str, *, api_url: str = "https://dev.azure.com", timeout: float = DEFAULT_TIMEOUT_S
    ):
        self.api_url = api_url.rstrip("/")
        self._token = token
        basic = base64.b64encode(f":{token}".encode()).decode("ascii")
        # A Microsoft Entra access token is a JWT (header ``eyJ...``); a PAT goes in Basic auth.
        self._authorization = f"Bearer {token}" if _looks_like_jwt(token) else f"Basic {basic}"
        self._http = Transport((token, basic), timeout)

    def __repr__(self) -> str:
        return f"AzureDevOpsStatusClient(api_url={self.api_url!r})"

    def post(self, status: CommitStatus) -> None:
        repo = parse_azure_devops_repo(status.repo_url)
        if repo is None:
            raise StatusPostError("not an Azure DevOps Services repository URL", retryable=False)
        org, project, name = (quote(p, safe="") for p in (repo.organization, repo.project, repo.repository))
        genre, _, context_name = status.context.partition("/")
        if not context_name:
            genre, context_name = "slipway", status.context
        body: dict[str, Any] = {
            "state": self.STATES[status.state],
            "description": truncate(status.description, self.DESCRIPTION_LIMIT),
            "context": {"name": context_name, "genre": genre},
        }
        if status.target_url:
            body["targetUrl"] = status.target_url
        repository = f"{self.api_url}/{org}/{project}/_apis/git/repositories/{name}"
        where = (
            f"commits/{status.commit}"
            if status.pull_request is None
            else f"pullRequests/{status.pull_request.number}"
        )
        self._http.post_json(
            f"{repository}/{where}/statuses?api-version={self.API_VERSION}",
            {"Authorization": self._authorization},
            body,
        )


def _looks_like_jwt(token: str) -> bool:
    return token.startswith("eyJ") and token.count(".") == 2
