"""Which host's client posts a repository's statuses, built from the app settings.

Well-known hosts are known by name; a self-hosted GitHub or GitLab needs the trigger's provider
or its API setting, and Gitea is only ever ``GITEA_BASE_URL``'s host. A host without its token,
or with an API URL that would expose the token, has statuses off (``client_for`` returns None).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import urlsplit

from shared.model.repo_urls import RepoLocation, parse_repo_url
from shared.platform.app_settings import setting
from shared.platform.logs import log_event
from shared.runs.commit_status.azure_devops import AzureDevOpsStatusClient, parse_azure_devops_repo
from shared.runs.commit_status.bitbucket import BitbucketStatusClient
from shared.runs.commit_status.gitea import GiteaStatusClient
from shared.runs.commit_status.github import GitHubStatusClient
from shared.runs.commit_status.gitlab import GitLabStatusClient
from shared.runs.commit_status.model import StatusClient
from shared.runs.commit_status.transport import api_base

logger = logging.getLogger("slipway.commit_status")

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
    if host == _host_of(setting(settings, "GITEA_BASE_URL")):
        return "gitea"
    named = _HINT_ALIASES.get((hint or "").strip().lower())
    if named in ("github", "gitlab"):
        return named
    if host == _host_of(setting(settings, "GITHUB_API_URL")):
        return "github"
    if host == _host_of(setting(settings, "GITLAB_API_URL")):
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
        token = setting(settings, "GITHUB_STATUS_TOKEN")
        if token is None:
            return None
        if (api := setting(settings, "GITHUB_API_URL")) is None:
            if loc.host == "github.com":
                api = "https://api.github.com"
            elif loc.host.endswith(".ghe.com"):
                api = f"https://api.{loc.host}"
            else:
                api = f"https://{loc.netloc}/api/v3"
        base = _checked_base(api, "GITHUB_API_URL")
        return GitHubStatusClient(token, api_url=base) if base else None
    if provider == "gitlab":
        token = setting(settings, "GITLAB_STATUS_TOKEN")
        if token is None:
            return None
        api = setting(settings, "GITLAB_API_URL") or f"https://{loc.netloc}/api/v4"
        base = _checked_base(api, "GITLAB_API_URL")
        return GitLabStatusClient(token, api_url=base) if base else None
    if provider == "azure-devops":
        token = setting(settings, "AZURE_DEVOPS_STATUS_TOKEN")
        if token is None or parse_azure_devops_repo(repo_url) is None:
            return None
        base = _checked_base(
            setting(settings, "AZURE_DEVOPS_API_URL") or "https://dev.azure.com", "AZURE_DEVOPS_API_URL"
        )
        return AzureDevOpsStatusClient(token, api_url=base) if base else None
    if provider == "bitbucket":
        token = setting(settings, "BITBUCKET_STATUS_TOKEN")
        if token is None:
            return None
        base = _checked_base(
            setting(settings, "BITBUCKET_API_URL") or "https://api.bitbucket.org", "BITBUCKET_API_URL"
        )
        user = setting(settings, "BITBUCKET_STATUS_USER")
        return BitbucketStatusClient(token, user=user, api_url=base) if base else None
    if provider == "gitea":
        token = setting(settings, "GITEA_STATUS_TOKEN")
        base_setting = setting(settings, "GITEA_BASE_URL")
        if token is None or base_setting is None:
            return None
        base = _checked_base(base_setting, "GITEA_BASE_URL")
        return GiteaStatusClient(token, base_url=base) if base else None
    return None


def _checked_base(url: str, setting: str) -> str | None:
    base = api_base(url)
    if base is None:
        log_event(
            logger,
            "commit_status_config_invalid",
            level=logging.WARNING,
            setting=setting,
            reason="not an https URL (plain http only for loopback), or it carries credentials",
        )
    return base
