"""Commit statuses: show a build's outcome on the commit, on the Git host of its repository.

Slipway posts ``pending`` when it dispatches a run and ``success``/``failure``/``error`` when
the run ends, for pushes and for rebuilds of a known commit. The link (``target_url``) is the
run in the Azure portal (``portal_run_url``), never a SAS log URL: a status is readable by
everyone who can read the repository, and a SAS URL is a credential. Posting is best effort:
``StatusReporter.report`` retries what can succeed later, logs what cannot, and never raises,
so a status never fails a build.

Hosts, and the least privilege each needs (one token per host, in app settings / Key Vault):

* GitHub (github.com, GHE.com, GitHub Enterprise Server): ``GITHUB_STATUS_TOKEN``, a
  fine-grained token or GitHub App installation token with the repository permission
  "Commit statuses: Read and write" (plus the implicit "Metadata: Read") on the built
  repositories only; a classic token needs only the ``repo:status`` scope. ``GITHUB_API_URL``
  overrides the API (GHES: ``https://<host>/api/v3``); when set it serves every GitHub
  repository, since one deployment holds one GitHub token.
* GitLab (gitlab.com and self-managed): ``GITLAB_STATUS_TOKEN``, a project (or group) access
  token with the Developer role. GitLab has no narrower scope than ``api`` that allows
  ``POST /projects/:id/statuses/:sha`` (``write_repository`` is Git-over-HTTP only), so the
  token must have ``api``: keep it to one project and the Developer role to bound it.
  ``GITLAB_API_URL`` overrides the API (default ``https://<host>/api/v4``).
* Azure DevOps Services (dev.azure.com, *.visualstudio.com): ``AZURE_DEVOPS_STATUS_TOKEN``, a
  PAT with only the "Code (status)" scope (``vso.code_status``: read and write commit and pull
  request statuses), sent as Basic auth with an empty user; a Microsoft Entra access token
  (a JWT) is sent as Bearer instead. ``AZURE_DEVOPS_API_URL`` overrides the server root
  (default ``https://dev.azure.com``, the organisation is appended). Azure DevOps Server
  (on-premises collections) is not supported.
* Bitbucket Cloud (bitbucket.org): ``BITBUCKET_STATUS_TOKEN``, a repository access token; the
  commit-status endpoints accept the ``repository`` scope, i.e. "Repositories: Read" is enough
  (Atlassian: creating statuses needs only read; only the status' author or an admin may
  overwrite it, so the pending and the final status must come from the same token). With
  ``BITBUCKET_STATUS_USER`` set, the token is sent as Basic auth (user + app password or API
  token with the same read scope) instead of Bearer. ``BITBUCKET_API_URL`` overrides the API
  (default ``https://api.bitbucket.org``). Bitbucket Data Center has another API: not supported.
* Gitea / Forgejo: ``GITEA_STATUS_TOKEN`` with the ``write:repository`` scope (Gitea has no
  status-only scope; use a bot user with Write access to the built repositories only) and
  ``GITEA_BASE_URL`` (e.g. ``https://gitea.example.com``). The token is only ever sent to that
  URL's host: a repository elsewhere gets no status, whatever its webhook claimed to be.

A host without its token has statuses off (``client_for`` returns None). Tokens are sent only
in request headers, never follow a redirect, never go over plain HTTP except to loopback (the
test server), and are redacted from every error message and log line.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import http.client
import json
import logging
import random
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Protocol
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from shared.model.build_request import COMMIT_RE
from shared.model.loopback import is_loopback
from shared.platform.logs import log_event

logger = logging.getLogger("slipway.commit_status")

USER_AGENT = "slipway-commit-status/1"
DEFAULT_TIMEOUT_S = 10.0
PORTAL_URL = "https://portal.azure.com"
_SCP_RE = re.compile(r"^(?:[\w.-]+@)?(?P<host>[\w.-]+):(?P<path>(?!/).+)$")
_ERROR_EXCERPT_CHARS = 300


class CommitState(StrEnum):
    """Slipway's states; each client maps them onto its host's vocabulary."""

    PENDING = "pending"
    SUCCESS = "success"
    FAILURE = "failure"
    ERROR = "error"


@dataclass(frozen=True)
class CommitStatus:
    """One status for one commit, host-neutral; clients truncate fields to their host's limits.

    ``context`` names the status so later ones replace it (``context_for(target)``). A
    ``target_url`` that is not a plain http(s) link, or that carries credentials (user info, a
    SAS ``sig``), is dropped: statuses are public to every reader of the repository.
    """

    repo_url: str
    commit: str
    state: CommitState
    description: str
    context: str
    target_url: str | None = None

    def __post_init__(self) -> None:
        if not COMMIT_RE.match(self.commit):
            raise ValueError("commit must be a full lowercase hex commit id")
        object.__setattr__(self, "state", CommitState(self.state))
        if self.target_url is not None and not _is_shareable_link(self.target_url):
            log_event(
                logger,
                "commit_status_link_dropped",
                level=logging.WARNING,
                commit=self.commit,
                context=self.context,
                reason="not a plain http(s) link without credentials",
            )
            object.__setattr__(self, "target_url", None)


def context_for(target: str) -> str:
    """The status name of a target: one status per target and commit, updated in place."""
    return f"slipway/{target}"


def portal_run_url(
    subscription_id: str,
    resource_group: str,
    registry: str,
    run_id: str,
    *,
    tenant: str = "",
    portal: str = PORTAL_URL,
) -> str:
    """The Azure portal link to an ACR run, for a status' target URL.

    The form is the portal's generic resource deep link, ``<portal>/#@<tenant>/resource<ARM id>``,
    here with the run's ARM id (``.../registries/<registry>/runs/<run id>``, the id the
    management API returns for the run). It needs the reader to sign in with access to the
    registry, which is the point: unlike a SAS log link it grants nothing. An empty ``tenant``
    opens the reader's default directory; pass the tenant's domain or id when readers belong
    to several. ``portal`` serves sovereign clouds (``https://portal.azure.us``...).
    """
    parts = [subscription_id, resource_group, registry, run_id]
    if not all(parts):
        raise ValueError("subscription id, resource group, registry and run id are all required")
    sub, rg, reg, run = (quote(p, safe="") for p in parts)
    resource_id = (
        f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry"
        f"/registries/{reg}/runs/{run}"
    )
    return f"{portal.rstrip('/')}/#@{quote(tenant, safe='.-')}/resource{resource_id}"


class StatusPostError(Exception):
    """A status could not be posted; ``retryable`` says whether trying again may succeed."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


class StatusClient(Protocol):
    """Posts statuses to one Git host; ``provider`` names it in logs."""

    provider: str

    def post(self, status: CommitStatus) -> None: ...


# -- repository URLs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RepoLocation:
    """Where a repository lives: host (lowercased), port, and path segments (decoded, case kept)."""

    host: str
    port: int | None
    segments: tuple[str, ...]

    @property
    def netloc(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def display(self) -> str:
        """``host/path`` for logs: never user info, whatever the URL carried."""
        return "/".join((self.host, *self.segments))


def parse_repo_url(url: str) -> RepoLocation | None:
    """https, http, ssh:// and scp-like ``git@host:path`` forms, with or without ``.git``."""
    text = url.strip()
    scp = _SCP_RE.match(text) if "://" not in text else None
    port: int | None = None
    if scp:
        host, path = scp.group("host"), scp.group("path")
    else:
        try:
            parts = urlsplit(text if "://" in text else f"https://{text}")
            host, path, port = parts.hostname or "", parts.path, parts.port
        except ValueError:
            return None
        if parts.scheme not in ("http", "https"):
            port = None  # an ssh port says nothing about the web/API port
    path = path.strip("/").removesuffix(".git")
    segments = tuple(unquote(s) for s in path.split("/") if s)
    if not host or not segments:
        return None
    return RepoLocation(host.lower(), port, segments)


# -- HTTP --------------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: urllib would resend the Authorization header to the new host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _retry_after_seconds(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds from ``Retry-After`` (seconds or an HTTP date), else GitHub's rate-limit reset."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw = lowered.get("retry-after")
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            pass
        try:
            return max(0.0, email.utils.parsedate_to_datetime(raw).timestamp() - now)
        except (TypeError, ValueError):
            pass
    if lowered.get("x-ratelimit-remaining") == "0" and lowered.get("x-ratelimit-reset", "").isdigit():
        return max(0.0, float(lowered["x-ratelimit-reset"]) - now)
    return None


def _is_rate_limited(status: int, headers: Mapping[str, str]) -> bool:
    """GitHub answers 403 (not 429) for exhausted and secondary rate limits."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return status == 403 and ("retry-after" in lowered or lowered.get("x-ratelimit-remaining") == "0")


class _Transport:
    """POSTs JSON; turns every failure into a ``StatusPostError`` with the secrets redacted."""

    def __init__(self, secrets: tuple[str, ...], timeout: float) -> None:
        self._secrets = tuple(s for s in secrets if s)
        self._timeout = timeout

    def post_json(self, url: str, headers: Mapping[str, str], body: Mapping[str, Any]) -> None:
        data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        request = urllib.request.Request(url, data=data, method="POST")  # noqa: S310 - scheme checked
        for name, value in {
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            "Content-Type": "application/json",
            **headers,
        }.items():
            request.add_header(name, value)
        where = _redact(url, self._secrets)
        try:
            with _OPENER.open(request, timeout=self._timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                excerpt = exc.read(_ERROR_EXCERPT_CHARS * 4).decode("utf-8", "replace")
            excerpt = " ".join(_redact(excerpt, self._secrets).split())[:_ERROR_EXCERPT_CHARS]
            code = exc.code
            resp_headers = dict(exc.headers.items()) if exc.headers else {}
            retryable = code in (408, 429) or code >= 500 or _is_rate_limited(code, resp_headers)
            raise StatusPostError(
                f"POST {where} answered {code}: {excerpt or exc.reason}",
                retryable=retryable,
                status=code,
                retry_after=_retry_after_seconds(resp_headers, time.time()) if retryable else None,
            ) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise StatusPostError(
                f"POST {where} failed: {_redact(str(reason), self._secrets)}", retryable=True
            ) from None


def _api_base(url: str) -> str | None:
    """An API base URL without trailing slash, or None when it would expose a token.

    https only; plain http is accepted for loopback (tests, a local proxy) and nothing else.
    """
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    secure = parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname or ""))
    if secure and parts.hostname and not parts.username and not parts.query and not parts.fragment:
        return url.strip().rstrip("/")
    return None


def _is_shareable_link(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return False
    query_names = {name.lower() for name, _ in parse_qsl(parts.query, keep_blank_values=True)}
    return "sig" not in query_names  # an Azure Storage SAS: a credential, not a link


def truncate(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters, ending in an ellipsis when cut."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


# -- hosts -------------------------------------------------------------------------------------


class GitHubStatusClient:
    """``POST /repos/{owner}/{repo}/statuses/{sha}``; GitHub rejects descriptions over 140 chars."""

    provider = "github"
    DESCRIPTION_LIMIT = 140
    CONTEXT_LIMIT = 255

    def __init__(
        self, token: str, *, api_url: str = "https://api.github.com", timeout: float = DEFAULT_TIMEOUT_S
    ):
        self.api_url = api_url.rstrip("/")
        self._token = token
        self._http = _Transport((token,), timeout)

    def __repr__(self) -> str:
        return f"GitHubStatusClient(api_url={self.api_url!r})"

    def post(self, status: CommitStatus) -> None:
        loc = _require_location(status.repo_url, min_segments=2)
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


class GitLabStatusClient:
    """``POST /projects/{url-encoded path}/statuses/{sha}``.

    GitLab documents 255 characters for ``description`` and ``target_url``; a longer link is
    left out rather than failing the whole status.
    """

    provider = "gitlab"
    DESCRIPTION_LIMIT = 255
    URL_LIMIT = 255
    STATES: ClassVar[Mapping[CommitState, str]] = {
        CommitState.PENDING: "pending",
        CommitState.SUCCESS: "success",
        CommitState.FAILURE: "failed",
        CommitState.ERROR: "failed",  # GitLab has no "error"; "canceled" would hide the failure
    }

    def __init__(
        self, token: str, *, api_url: str = "https://gitlab.com/api/v4", timeout: float = DEFAULT_TIMEOUT_S
    ):
        self.api_url = api_url.rstrip("/")
        self._token = token
        self._http = _Transport((token,), timeout)
        # A GitLab under a relative URL (https://host/gitlab/api/v4) has that prefix in repo paths.
        api = urlsplit(self.api_url)
        self._api_host = (api.hostname or "").lower()
        self._prefix = tuple(s for s in api.path.removesuffix("/api/v4").split("/") if s)

    def __repr__(self) -> str:
        return f"GitLabStatusClient(api_url={self.api_url!r})"

    def project_path(self, repo_url: str) -> str:
        loc = _require_location(repo_url, min_segments=2)
        segments = loc.segments
        n = len(self._prefix)
        if n and loc.host == self._api_host and segments[:n] == self._prefix and len(segments) > n + 1:
            segments = segments[n:]
        return "/".join(segments)

    def post(self, status: CommitStatus) -> None:
        project = quote(self.project_path(status.repo_url), safe="")
        body: dict[str, Any] = {
            "state": self.STATES[status.state],
            "name": status.context,
            "description": truncate(status.description, self.DESCRIPTION_LIMIT),
        }
        if status.target_url and len(status.target_url) <= self.URL_LIMIT:
            body["target_url"] = status.target_url
        try:
            self._http.post_json(
                f"{self.api_url}/projects/{project}/statuses/{status.commit}",
                {"PRIVATE-TOKEN": self._token},
                body,
            )
        except StatusPostError as exc:
            # Re-posting the state a status already has (a retry whose first answer was lost)
            # is refused with 400 "Cannot transition status via :x from :x": it is posted.
            if exc.status == 400 and "Cannot transition status" in str(exc):
                return
            raise


@dataclass(frozen=True)
class AzureDevOpsRepo:
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
        self._http = _Transport((token, basic), timeout)

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
        self._http.post_json(
            f"{self.api_url}/{org}/{project}/_apis/git/repositories/{name}/commits/{status.commit}"
            f"/statuses?api-version={self.API_VERSION}",
            {"Authorization": self._authorization},
            body,
        )


def _looks_like_jwt(token: str) -> bool:
    return token.startswith("eyJ") and token.count(".") == 2


class BitbucketStatusClient:
    """``POST /2.0/repositories/{workspace}/{slug}/commit/{sha}/statuses/build``.

    Bitbucket refuses a ``key`` over 40 characters, so a longer context is shortened to a
    stable 40-character key (the pending and the final status must share it); ``url`` is
    required, so the repository page stands in when there is no run link.
    """

    provider = "bitbucket"
    KEY_LIMIT = 40
    TEXT_LIMIT = 255
    STATES: ClassVar[Mapping[CommitState, str]] = {
        CommitState.PENDING: "INPROGRESS",
        CommitState.SUCCESS: "SUCCESSFUL",
        CommitState.FAILURE: "FAILED",
        CommitState.ERROR: "FAILED",  # STOPPED reads as "cancelled" and would not block a merge
    }

    def __init__(
        self,
        token: str,
        *,
        user: str | None = None,
        api_url: str = "https://api.bitbucket.org",
        timeout: float = DEFAULT_TIMEOUT_S,
    ):
        self.api_url = api_url.rstrip("/")
        if user:
            basic = base64.b64encode(f"{user}:{token}".encode()).decode("ascii")
            self._authorization = f"Basic {basic}"
            secrets: tuple[str, ...] = (token, basic)
        else:
            self._authorization = f"Bearer {token}"
            secrets = (token,)
        self._http = _Transport(secrets, timeout)

    def __repr__(self) -> str:
        return f"BitbucketStatusClient(api_url={self.api_url!r})"

    @classmethod
    def key_for(cls, context: str) -> str:
        if len(context) <= cls.KEY_LIMIT:
            return context
        digest = hashlib.sha256(context.encode("utf-8")).hexdigest()[:12]
        return f"{context[: cls.KEY_LIMIT - 13]}-{digest}"

    def post(self, status: CommitStatus) -> None:
        loc = _require_location(status.repo_url, min_segments=2)
        workspace, slug = loc.segments[:2]
        self._http.post_json(
            f"{self.api_url}/2.0/repositories/{quote(workspace, safe='')}/{quote(slug, safe='')}"
            f"/commit/{status.commit}/statuses/build",
            {"Authorization": self._authorization},
            {
                "key": self.key_for(status.context),
                "state": self.STATES[status.state],
                "name": status.context[: self.TEXT_LIMIT],
                "url": status.target_url or f"https://bitbucket.org/{workspace}/{slug}",
                "description": truncate(status.description, self.TEXT_LIMIT),
            },
        )


class GiteaStatusClient:
    """``POST {base}/api/v1/repos/{owner}/{repo}/statuses/{sha}`` (Forgejo: the same API)."""

    provider = "gitea"
    DESCRIPTION_LIMIT = 255  # no documented limit; one readable line
    STATES: ClassVar[Mapping[CommitState, str]] = {
        CommitState.PENDING: "pending",
        CommitState.SUCCESS: "success",
        CommitState.FAILURE: "failure",
        CommitState.ERROR: "error",
    }

    def __init__(self, token: str, *, base_url: str, timeout: float = DEFAULT_TIMEOUT_S):
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._http = _Transport((token,), timeout)
        base = urlsplit(self.base_url)
        self._prefix = tuple(s for s in base.path.split("/") if s)

    def __repr__(self) -> str:
        return f"GiteaStatusClient(base_url={self.base_url!r})"

    def post(self, status: CommitStatus) -> None:
        loc = _require_location(status.repo_url, min_segments=2)
        segments = loc.segments
        n = len(self._prefix)
        if n and segments[:n] == self._prefix:  # Gitea served under a sub-path
            segments = segments[n:]
        if len(segments) != 2:
            raise StatusPostError("the repository URL is not <base>/<owner>/<repo>", retryable=False)
        owner, repo = (quote(s, safe="") for s in segments)
        body: dict[str, Any] = {
            "state": self.STATES[status.state],
            "description": truncate(status.description, self.DESCRIPTION_LIMIT),
            "context": status.context,
        }
        if status.target_url:
            body["target_url"] = status.target_url
        self._http.post_json(
            f"{self.base_url}/api/v1/repos/{owner}/{repo}/statuses/{status.commit}",
            {"Authorization": f"token {self._token}"},
            body,
        )


def _require_location(repo_url: str, *, min_segments: int) -> RepoLocation:
    loc = parse_repo_url(repo_url)
    if loc is None or len(loc.segments) < min_segments:
        raise StatusPostError("the repository URL has no owner/repository path", retryable=False)
    return loc


# -- choosing the host -------------------------------------------------------------------------

_HINT_ALIASES = {
    "github": "github",
    "ghes": "github",
    "github-enterprise": "github",
    "gitlab": "gitlab",
    "azure-devops": "azure-devops",
    "azuredevops": "azure-devops",
    "ado": "azure-devops",
    "vsts": "azure-devops",
    "bitbucket": "bitbucket",
    "bitbucket-cloud": "bitbucket",
    "gitea": "gitea",
    "forgejo": "gitea",
}


def _setting(settings: Mapping[str, str], name: str) -> str | None:
    value = (settings.get(name) or "").strip()
    return value or None


def _host_of(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return (urlsplit(url).hostname or "").lower() or None
    except ValueError:
        return None


def _provider_for(loc: RepoLocation, hint: str | None, settings: Mapping[str, str]) -> str | None:
    """Well-known hosts decide by themselves; a self-hosted one needs the hint or its API setting."""
    host = loc.host
    if host == "github.com" or host.endswith(".ghe.com"):
        return "github"
    if host == "gitlab.com":
        return "gitlab"
    if host in ("dev.azure.com", "ssh.dev.azure.com") or host.endswith(".visualstudio.com"):
        return "azure-devops"
    if host == "bitbucket.org":
        return "bitbucket"
    if host == _host_of(_setting(settings, "GITEA_BASE_URL")):
        return "gitea"
    named = _HINT_ALIASES.get((hint or "").strip().lower())
    if named in ("github", "gitlab"):
        return named
    if host == _host_of(_setting(settings, "GITHUB_API_URL")):
        return "github"
    if host == _host_of(_setting(settings, "GITLAB_API_URL")):
        return "gitlab"
    return None  # Gitea elsewhere than GITEA_BASE_URL, Bitbucket/Azure DevOps servers: unsupported


def client_for(repo_url: str, provider_hint: str | None, settings: Mapping[str, str]) -> StatusClient | None:
    """The status client for a repository, or None when statuses are off for it.

    ``provider_hint`` is the trigger's provider (``github``, ``gitlab``, ``gitea``...); it only
    matters for self-hosted GitHub and GitLab, since the other hosts are known by name and a
    replay's provider (``operator``) says nothing about the host.
    """
    loc = parse_repo_url(repo_url)
    if loc is None:
        return None
    provider = _provider_for(loc, provider_hint, settings)
    if provider == "github":
        token = _setting(settings, "GITHUB_STATUS_TOKEN")
        if token is None:
            return None
        if (api := _setting(settings, "GITHUB_API_URL")) is None:
            if loc.host == "github.com":
                api = "https://api.github.com"
            elif loc.host.endswith(".ghe.com"):
                api = f"https://api.{loc.host}"
            else:
                api = f"https://{loc.netloc}/api/v3"
        base = _checked_base(api, "GITHUB_API_URL")
        return GitHubStatusClient(token, api_url=base) if base else None
    if provider == "gitlab":
        token = _setting(settings, "GITLAB_STATUS_TOKEN")
        if token is None:
            return None
        api = _setting(settings, "GITLAB_API_URL") or f"https://{loc.netloc}/api/v4"
        base = _checked_base(api, "GITLAB_API_URL")
        return GitLabStatusClient(token, api_url=base) if base else None
    if provider == "azure-devops":
        token = _setting(settings, "AZURE_DEVOPS_STATUS_TOKEN")
        if token is None or parse_azure_devops_repo(repo_url) is None:
            return None
        base = _checked_base(
            _setting(settings, "AZURE_DEVOPS_API_URL") or "https://dev.azure.com", "AZURE_DEVOPS_API_URL"
        )
        return AzureDevOpsStatusClient(token, api_url=base) if base else None
    if provider == "bitbucket":
        token = _setting(settings, "BITBUCKET_STATUS_TOKEN")
        if token is None:
            return None
        base = _checked_base(
            _setting(settings, "BITBUCKET_API_URL") or "https://api.bitbucket.org", "BITBUCKET_API_URL"
        )
        user = _setting(settings, "BITBUCKET_STATUS_USER")
        return BitbucketStatusClient(token, user=user, api_url=base) if base else None
    if provider == "gitea":
        token = _setting(settings, "GITEA_STATUS_TOKEN")
        base_setting = _setting(settings, "GITEA_BASE_URL")
        if token is None or base_setting is None:
            return None
        base = _checked_base(base_setting, "GITEA_BASE_URL")
        return GiteaStatusClient(token, base_url=base) if base else None
    return None


def _checked_base(url: str, setting: str) -> str | None:
    base = _api_base(url)
    if base is None:
        log_event(
            logger,
            "commit_status_config_invalid",
            level=logging.WARNING,
            setting=setting,
            reason="not an https URL (plain http only for loopback), or it carries credentials",
        )
    return base


# -- reporting ---------------------------------------------------------------------------------

ClientFactory = Callable[[str, str | None, Mapping[str, str]], StatusClient | None]


class StatusReporter:
    """Posts statuses with bounded retries; never raises, so a status never fails a build.

    Retries are for what can pass later: 429 and GitHub's rate-limit 403 (waiting as long as
    ``Retry-After``/the rate-limit reset says, giving up when that is over ``max_delay``),
    408, 5xx and connection errors, with exponential backoff and jitter. Everything else (401,
    403, 404, 422...) is a configuration problem: logged once, not retried.
    """

    def __init__(
        self,
        settings: Mapping[str, str],
        *,
        max_attempts: int = 4,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        client_factory: ClientFactory = client_for,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._settings = settings
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._sleep = sleep
        self._jitter = jitter
        self._client_factory = client_factory

    def report(
        self, status: CommitStatus, *, provider_hint: str | None = None, correlation_id: str | None = None
    ) -> bool:
        """Post ``status``; True when the host accepted it."""
        loc = parse_repo_url(status.repo_url)
        fields: dict[str, Any] = {
            "correlation_id": correlation_id,
            "repo": loc.display if loc else "(unparsable repository URL)",
            "commit": status.commit,
            "state": status.state.value,
            "context": status.context,
        }
        try:
            client = self._client_factory(status.repo_url, provider_hint, self._settings)
        except Exception as exc:  # a status must never fail a build
            log_event(logger, "commit_status_failed", level=logging.WARNING, error=_describe(exc), **fields)
            return False
        if client is None:
            log_event(logger, "commit_status_off", level=logging.DEBUG, **fields)
            return False
        fields["provider"] = client.provider
        for attempt in range(1, self._max_attempts + 1):
            try:
                client.post(status)
            except StatusPostError as exc:
                delay = self._delay(attempt, exc)
                if not exc.retryable or attempt == self._max_attempts or delay is None:
                    log_event(
                        logger,
                        "commit_status_failed",
                        level=logging.WARNING,
                        attempt=attempt,
                        status_code=exc.status,
                        retryable=exc.retryable,
                        error=str(exc),
                        **fields,
                    )
                    return False
                log_event(
                    logger,
                    "commit_status_retry",
                    level=logging.INFO,
                    attempt=attempt,
                    status_code=exc.status,
                    delay_s=round(delay, 3),
                    error=str(exc),
                    **fields,
                )
                self._sleep(delay)
            except Exception as exc:  # a bug in a client must not fail the build either
                log_event(
                    logger,
                    "commit_status_failed",
                    level=logging.WARNING,
                    attempt=attempt,
                    error=_describe(exc),
                    **fields,
                )
                return False
            else:
                log_event(logger, "commit_status_posted", attempt=attempt, **fields)
                return True
        return False  # pragma: no cover - the loop returns on its last attempt

    def _delay(self, attempt: int, exc: StatusPostError) -> float | None:
        """Seconds before the next attempt, or None when the host asks for more than ``max_delay``."""
        if exc.retry_after is not None:
            return exc.retry_after if exc.retry_after <= self._max_delay else None
        backoff = min(self._max_delay, self._base_delay * 2.0 ** (attempt - 1))
        return backoff * (0.5 + 0.5 * self._jitter())


def _describe(exc: BaseException) -> str:
    """The exception's type only: an unexpected error's text could carry anything, tokens included."""
    return f"unexpected {type(exc).__name__}"


__all__ = [
    "PORTAL_URL",
    "AzureDevOpsRepo",
    "AzureDevOpsStatusClient",
    "BitbucketStatusClient",
    "CommitState",
    "CommitStatus",
    "GitHubStatusClient",
    "GitLabStatusClient",
    "GiteaStatusClient",
    "RepoLocation",
    "StatusClient",
    "StatusPostError",
    "StatusReporter",
    "client_for",
    "context_for",
    "parse_azure_devops_repo",
    "parse_repo_url",
    "portal_run_url",
    "truncate",
]
