"""The bodies of ``slipway send --pull-request``, one builder per Git host (see ``_send_pull_requests``).

Each follows its host's published samples (tests/fixtures/<host>/SOURCES.md): the same fields,
nested the same way; the few fields no sample has are cited where they are set.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from shared.app.commands._send_pull_requests import WHEN, Pr, Repo, made_up_id, made_up_sha, made_up_uuid

# --- GitHub: octokit/webhooks payload-examples/api.github.com/pull_request/* ---------------------
_GITHUB_ACTIONS = {
    "opened": "opened",
    "updated": "synchronize",
    "closed": "closed",
    "merged": "closed",
    "labeled": "labeled",
    "reopened": "reopened",
}


def _github_user(login: str) -> dict[str, Any]:
    return {"login": login, "id": made_up_id("user", login), "type": "User", "site_admin": False}


def _github_repo(repo: Repo, api: str, *, fork: bool) -> dict[str, Any]:
    return {
        "id": repo.id,
        "name": repo.name,
        "full_name": repo.full_name,
        "private": False,
        "owner": _github_user(repo.owner),
        "html_url": repo.web,
        "fork": fork,
        "url": f"{api}/repos/{repo.full_name}",
        "statuses_url": f"{api}/repos/{repo.full_name}/statuses/{{sha}}",
        "ssh_url": repo.ssh,
        "clone_url": repo.clone,
        "default_branch": "main",
    }


def _github_label(name: str) -> dict[str, Any]:
    return {"id": made_up_id("label", name), "name": name, "color": "ededed", "default": False}


def github(pr: Pr) -> tuple[dict[str, Any], str]:
    spec, base = pr.spec, pr.base
    api = "https://api.github.com" if base.host == "github.com" else f"https://{base.host}/api/v3"
    pulls = f"{api}/repos/{base.full_name}/pulls/{spec.number}"
    closed = spec.action in ("closed", "merged")
    body: dict[str, Any] = {
        "action": _GITHUB_ACTIONS[spec.action],
        "number": spec.number,
        "pull_request": {
            "url": pulls,
            "id": spec.number,
            "html_url": f"{base.web}/pull/{spec.number}",
            "number": spec.number,
            "state": "closed" if closed else "open",
            "locked": False,
            "title": f"slipway send: pull request #{spec.number}",
            "user": _github_user(pr.head_repo.owner),
            "body": None,
            "created_at": WHEN,
            "updated_at": WHEN,
            "closed_at": WHEN if closed else None,
            "merged_at": WHEN if spec.action == "merged" else None,
            "labels": [_github_label(name) for name in spec.labels],
            "statuses_url": f"{api}/repos/{base.full_name}/statuses/{pr.head}",
            "head": {
                "label": f"{pr.head_repo.owner}:{spec.head_branch}",
                "ref": spec.head_branch,
                "sha": pr.head,
                "user": _github_user(pr.head_repo.owner),
                "repo": _github_repo(pr.head_repo, api, fork=pr.fork),
            },
            "base": {
                "label": f"{base.owner}:{spec.base_branch}",
                "ref": spec.base_branch,
                "sha": pr.base_sha,
                "user": _github_user(base.owner),
                "repo": _github_repo(base, api, fork=False),
            },
            "draft": False,
            "merged": spec.action == "merged",
        },
        "repository": _github_repo(base, api, fork=False),
        "sender": _github_user(pr.head_repo.owner),
    }
    if spec.action == "updated":  # synchronize: the head's old and new commits
        body["before"], body["after"] = made_up_sha(pr.head, "before"), pr.head
    if pr.added is not None:
        body["label"] = _github_label(pr.added)
    return body, "pull_request"


# --- Gitea / Forgejo: woodpecker-ci's recordings (tests/fixtures/gitea/SOURCES.md) ---------------
_GITEA_ACTIONS = {
    "opened": "opened",
    "updated": "synchronized",
    "closed": "closed",
    "merged": "closed",
    "labeled": "label_updated",
    "reopened": "reopened",
}


def _gitea_user(login: str) -> dict[str, Any]:
    return {"id": made_up_id("user", login), "login": login, "username": login}


def _gitea_repo(repo: Repo, *, fork: bool) -> dict[str, Any]:
    return {
        "id": repo.id,
        "owner": _gitea_user(repo.owner),
        "name": repo.name,
        "full_name": repo.full_name,
        "private": False,
        "fork": fork,
        "html_url": repo.web,
        "url": f"https://{repo.host}/api/v1/repos/{repo.full_name}",
        "ssh_url": repo.ssh,
        "clone_url": repo.clone,
        "default_branch": "main",
    }


def gitea(pr: Pr) -> tuple[dict[str, Any], str]:
    spec, base = pr.spec, pr.base
    closed = spec.action in ("closed", "merged")
    side = {"head": (pr.head_repo, spec.head_branch, pr.head), "base": (base, spec.base_branch, pr.base_sha)}
    body = {
        "action": _GITEA_ACTIONS[spec.action],
        "number": spec.number,
        "pull_request": {
            "id": spec.number,
            "url": f"{base.web}/pulls/{spec.number}",
            "number": spec.number,
            "user": _gitea_user(pr.head_repo.owner),
            "title": f"slipway send: pull request #{spec.number}",
            "body": "",
            "labels": [{"id": made_up_id("label", n), "name": n, "color": "ededed"} for n in spec.labels],
            "state": "closed" if closed else "open",
            "html_url": f"{base.web}/pulls/{spec.number}",
            "merged": spec.action == "merged",
            "merged_at": WHEN if spec.action == "merged" else None,
            **{
                name: {
                    "label": branch,
                    "ref": branch,
                    "sha": sha,
                    "repo_id": repo.id,
                    "repo": _gitea_repo(repo, fork=name == "head" and pr.fork),
                }
                for name, (repo, branch, sha) in side.items()
            },
            "created_at": WHEN,
            "updated_at": WHEN,
            "closed_at": WHEN if closed else None,
        },
        "repository": _gitea_repo(base, fork=False),
        "sender": _gitea_user(pr.head_repo.owner),
    }
    return body, "pull_request"


# --- GitLab: "Merge Request Hook" (go-gitlab's copy of GitLab's documented sample) ---------------
_GITLAB_ACTIONS = {
    "opened": "open",
    "updated": "update",
    "closed": "close",
    "merged": "merge",
    "labeled": "update",
    "reopened": "reopen",
}
_GITLAB_STATES = {
    "opened": "opened",
    "updated": "opened",
    "closed": "closed",
    "merged": "merged",
    "labeled": "opened",
    "reopened": "opened",
}


def _gitlab_project(repo: Repo, *, with_id: bool = True) -> dict[str, Any]:
    """A project; the sample's ``source`` and ``target`` carry no ``id`` (the ``*_project_id`` do)."""
    project = {
        "id": repo.id,
        "name": repo.name,
        "web_url": repo.web,
        "git_ssh_url": repo.ssh,
        "git_http_url": repo.clone,
        "namespace": repo.owner,
        "path_with_namespace": repo.full_name,
        "default_branch": "main",
    }
    if not with_id:
        del project["id"]
    return project


def _gitlab_label(title: str) -> dict[str, Any]:
    return {"id": made_up_id("label", title), "title": title, "color": "#ededed", "type": "ProjectLabel"}


def gitlab(pr: Pr) -> tuple[dict[str, Any], str]:
    spec, base = pr.spec, pr.base
    labels = [_gitlab_label(name) for name in spec.labels]
    attributes: dict[str, Any] = {
        "id": spec.number,
        "iid": spec.number,
        "target_branch": spec.base_branch,
        "source_branch": spec.head_branch,
        "source_project_id": pr.head_repo.id,
        "target_project_id": base.id,
        "title": f"slipway send: merge request !{spec.number}",
        "state": _GITLAB_STATES[spec.action],
        "url": f"{base.web}/-/merge_requests/{spec.number}",
        "source": _gitlab_project(pr.head_repo, with_id=False),
        "target": _gitlab_project(base, with_id=False),
        "last_commit": {
            "id": pr.head,
            "message": "slipway send",
            "timestamp": WHEN,
            "url": f"{pr.head_repo.web}/-/commit/{pr.head}",
        },
        "labels": labels,
        "action": _GITLAB_ACTIONS[spec.action],
    }
    body: dict[str, Any] = {
        "object_kind": "merge_request",
        "event_type": "merge_request",
        "user": {"id": 1, "name": pr.head_repo.owner, "username": pr.head_repo.owner},
        "project": _gitlab_project(base),
        "object_attributes": attributes,
        "labels": labels,
    }
    if spec.action == "updated":
        # "oldrev" is sent "only when there are actual code changes" (GitLab docs, Webhook events,
        # Merge request events); no published sample has one.
        attributes["oldrev"] = made_up_sha(pr.head, "before")
    if pr.added is not None:
        body["changes"] = {"labels": {"previous": labels[:-1], "current": labels}}
    return body, "Merge Request Hook"


# --- Azure DevOps: Microsoft's service-hook samples (aspnet/WebHooks) ----------------------------
_ADO_EVENTS = {
    "opened": ("git.pullrequest.created", "active"),
    "updated": ("git.pullrequest.updated", "active"),
    "closed": ("git.pullrequest.updated", "abandoned"),
    "merged": ("git.pullrequest.merged", "completed"),
}


def _ado_repository(repo: Repo) -> dict[str, Any]:
    """The ``repository`` of a pull request event; ``remoteUrl`` in the ``_git`` form it clones by."""
    from shared.runs.commit_status import parse_azure_devops_repo

    url = f"https://{repo.host}/{repo.full_name}"
    ado = parse_azure_devops_repo(url) if repo.host != "ssh.dev.azure.com" else None
    if repo.host == "ssh.dev.azure.com" and len(repo.path) == 4:  # git@ssh.dev.azure.com:v3/org/project/repo
        ado = parse_azure_devops_repo(f"https://dev.azure.com/{'/'.join(repo.path[1:3])}/_git/{repo.path[3]}")
    org, project, name = (
        (ado.organization, ado.project, ado.repository) if ado else (repo.owner, repo.name, repo.name)
    )
    host = "dev.azure.com" if repo.host == "ssh.dev.azure.com" else repo.host
    prefix = "" if host.endswith(".visualstudio.com") else f"/{quote(org, safe='')}"
    root = f"https://{host}{prefix}"
    uuid = repo.uuid()
    return {
        "id": uuid,
        "name": name,
        "url": f"{root}/_apis/git/repositories/{uuid}",
        "project": {"id": made_up_uuid("project", root, project), "name": project, "state": "wellFormed"},
        "remoteUrl": f"{root}/{quote(project, safe='')}/_git/{quote(name, safe='')}",
    }


def azure_devops(pr: Pr, delivery: str) -> tuple[dict[str, Any], None]:
    spec, base = pr.spec, pr.base
    event_type, status = _ADO_EVENTS[spec.action]
    repository = _ado_repository(base)
    resource: dict[str, Any] = {
        "repository": repository,
        "pullRequestId": spec.number,
        "status": status,
        "createdBy": {"displayName": pr.head_repo.owner, "uniqueName": pr.head_repo.owner},
        "creationDate": WHEN,
        "title": f"slipway send: pull request {spec.number}",
        "description": "",
        "sourceRefName": f"refs/heads/{spec.head_branch}",
        "targetRefName": f"refs/heads/{spec.base_branch}",
        "mergeStatus": "succeeded",
        "lastMergeSourceCommit": {"commitId": pr.head, "url": f"{repository['url']}/commits/{pr.head}"},
        "lastMergeTargetCommit": {
            "commitId": pr.base_sha,
            "url": f"{repository['url']}/commits/{pr.base_sha}",
        },
        "url": f"{repository['url']}/pullRequests/{spec.number}",
    }
    if pr.fork:
        # GitPullRequest.forkSource: "If this is a PR from a fork this will contain information
        # about its source" (learn.microsoft.com/javascript/api/azure-devops-extension-api/
        # gitpullrequest); the published samples are of same-repository requests.
        resource["forkSource"] = {
            "name": f"refs/heads/{spec.head_branch}",
            "repository": _ado_repository(pr.head_repo),
        }
    text = f"slipway send: pull request {spec.number} {status}"
    body = {
        "subscriptionId": "00000000-0000-0000-0000-000000000000",
        "notificationId": spec.number,
        "id": delivery,
        "eventType": event_type,
        "publisherId": "tfs",
        "message": {"text": text, "html": text, "markdown": text},
        "resource": resource,
        "createdDate": WHEN,
    }
    return body, None


# --- Bitbucket Cloud: woodpecker-ci's and drone/go-scm's recordings ------------------------------
_BITBUCKET_EVENTS = {
    "opened": ("pullrequest:created", "OPEN"),
    "updated": ("pullrequest:updated", "OPEN"),
    "closed": ("pullrequest:rejected", "DECLINED"),
    "merged": ("pullrequest:fulfilled", "MERGED"),
}


def _bitbucket_repository(repo: Repo) -> dict[str, Any]:
    return {
        "type": "repository",
        "full_name": repo.full_name,
        "name": repo.name,
        "uuid": f"{{{repo.uuid()}}}",
        "links": {
            "self": {"href": f"https://api.bitbucket.org/2.0/repositories/{repo.full_name}"},
            "html": {"href": repo.web},
        },
    }


def bitbucket(pr: Pr) -> tuple[dict[str, Any], str]:
    spec, base = pr.spec, pr.base
    event_key, state = _BITBUCKET_EVENTS[spec.action]
    actor = {"display_name": pr.head_repo.owner, "type": "user", "nickname": pr.head_repo.owner}

    def end(repo: Repo, branch: str, sha: str) -> dict[str, Any]:
        # Bitbucket's pull request events carry 12 hex digits of the commit.
        return {
            "branch": {"name": branch},
            "commit": {"hash": sha[:12]},
            "repository": _bitbucket_repository(repo),
        }

    body = {
        "pullrequest": {
            "type": "pullrequest",
            "id": spec.number,
            "title": f"slipway send: pull request #{spec.number}",
            "description": "",
            "state": state,
            "author": actor,
            "source": end(pr.head_repo, spec.head_branch, pr.head),
            "destination": end(base, spec.base_branch, pr.base_sha),
            "links": {"html": {"href": f"{base.web}/pull-requests/{spec.number}"}},
            "close_source_branch": False,
            "reviewers": [],
            "created_on": WHEN,
            "updated_on": WHEN,
        },
        "actor": actor,
        "repository": _bitbucket_repository(base),
    }
    return body, event_key
