"""Commit statuses: show a build's outcome on the commit, on the Git host of its repository.

Slipway posts ``pending`` when it dispatches a run and ``success``/``failure``/``error`` when
the run ends, for pushes, rebuilds of a known commit and pull requests (on their head commit,
where each host shows it on the request: ``CommitStatus.pull_request``). The link (``target_url``) is the
run in the Azure portal (``portal_run_url``), never a SAS log URL: a status is readable by
everyone who can read the repository, and a SAS URL is a credential. Posting is best effort:
``StatusReporter.report`` retries what can succeed later, logs what cannot, and never raises.

One module per host (``github``, ``gitlab``, ``azure_devops``, ``bitbucket``, ``gitea``) says
which token it needs, with the least privilege; ``choose`` picks the client for a repository,
``transport`` sends (https only, no redirects, secrets redacted), ``model`` holds the values,
``reporter`` the retries. This module only re-exports what the rest of Slipway imports.
"""

from __future__ import annotations

from shared.model.repo_urls import RepoLocation, parse_repo_url
from shared.runs.commit_status.azure_devops import (
    AzureDevOpsRepo,
    AzureDevOpsStatusClient,
    parse_azure_devops_repo,
)
from shared.runs.commit_status.bitbucket import BitbucketStatusClient
from shared.runs.commit_status.choose import client_for
from shared.runs.commit_status.gitea import GiteaStatusClient
from shared.runs.commit_status.github import GitHubStatusClient
from shared.runs.commit_status.gitlab import GitLabStatusClient
from shared.runs.commit_status.model import (
    PORTAL_URL,
    CommitState,
    CommitStatus,
    PullRequestRef,
    StatusClient,
    StatusNotPostable,
    StatusPostError,
    context_for,
    portal_run_url,
    truncate,
)
from shared.runs.commit_status.reporter import StatusReporter

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
    "PullRequestRef",
    "RepoLocation",
    "StatusClient",
    "StatusNotPostable",
    "StatusPostError",
    "StatusReporter",
    "client_for",
    "context_for",
    "parse_azure_devops_repo",
    "parse_repo_url",
    "portal_run_url",
    "truncate",
]
