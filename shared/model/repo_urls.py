"""A repository URL in every form users write it: the one scp-like grammar and three readings.

A target's ``repo`` may be https, http, ``ssh://`` or scp-like ``git@host:owner/repo``, with or
without ``.git``. Routing matches pushes by ``normalize_repo`` (case-insensitive key), requests clone
``https_clone_url`` (case kept), and commit statuses address ``parse_repo_url`` (segments decoded,
API port kept). Pure functions: the model layer, so runs and intake read the same rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote, urlsplit

_SCP_RE = re.compile(r"^(?:[\w.-]+@)?(?P<host>[\w.-]+):(?P<path>(?!/).+)$")


@lru_cache(maxsize=4096)
def normalize_repo(url: str) -> str:
    """``host/owner/repo`` for any URL form of the same repository.

    https, http, git, ssh:// and scp-like ``git@host:owner/repo`` forms, with or without
    ``.git`` or a trailing slash, all map to one key (lowercased: hosts and most forges are
    case-insensitive).
    """
    text = url.strip()
    scp = _SCP_RE.match(text) if "://" not in text else None
    if scp:
        host, path = scp.group("host"), scp.group("path")
    else:
        try:
            parts = urlsplit(text)
            host, path = parts.hostname or "", parts.path
        except ValueError:  # e.g. "http://[abc": not a URL at all, so it matches nothing else
            return text.lower()
        if not host:
            host, _, path = text.partition("/")
    path = path.strip("/")
    path = path.removesuffix(".git")
    return f"{host.lower()}/{path.lower()}"


@lru_cache(maxsize=1024)
def https_clone_url(url: str) -> str:
    """An https clone URL for a configured repository in any form (https, ssh, scp-like).

    Every request's ``source.repo_url`` comes from here, from the target's ``repo``: never from a
    URL a payload carried. Keeps the path's case (some hosts care) and the port of an http(s)
    form; drops user information and an ssh port (it is not the https port). The receivers put a
    payload's URL through it too, for the informational ``PushEvent.clone_url`` only.
    """
    text = url.strip()
    scp = _SCP_RE.match(text) if "://" not in text else None
    if scp:
        host, path = scp.group("host").lower(), scp.group("path")
    else:
        parts = urlsplit(text if "://" in text else f"https://{text}")
        host = (parts.hostname or "").lower()
        if parts.port and parts.scheme in ("https", "http"):
            host = f"{host}:{parts.port}"
        path = parts.path
    path = path.strip("/").removesuffix(".git")
    if "_git" in path.split("/"):
        # Azure DevOps (Services and Server) names the repository by the segment after _git; its
        # clone URLs carry no .git (MicrosoftDocs/azure-devops-docs docs/repos/git/clone.md:
        # ``git clone https://dev.azure.com/fabrikam/DefaultCollection/_git/Fabrikam``), and a
        # name with .git appended is another repository's name (404 TF401019).
        return f"https://{host}/{path}"
    return f"https://{host}/{path}.git"


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
