"""One meaning of "a target's default branch", for tags, cache names, last-build records and rebuilds.

The rule (``default_branch_for``): the target's ``default_branch`` when configured; else the
default the sender reported (a push's payload; for a rebuild, the default recorded with the last
build); else the target's one branch filter that is a plain name, when exactly one is (the others are
globs: ``[main, release/*]``); else None: no branch is the default, so nothing gets ``latest``, no cache is
imported from a default branch, nothing is recorded as the last build, and a rebuild without a
record is refused with a reason.

Bitbucket Cloud's push payload carries no default branch: its Repository entity has ``name``,
``full_name``, ``links``, ``uuid``, ``scm``, ``owner``, ``is_private`` and ``type`` only
(https://support.atlassian.com/bitbucket-cloud/docs/event-payloads/, "Repository" common entity;
the recorded bodies in tests/fixtures/bitbucket/ match). GitHub, GitLab, Gitea and Azure DevOps
push payloads do report it (tests/fixtures/*/).
"""

from __future__ import annotations

from shared.model.config import Target

# What makes a branch filter a glob (shared/model/globs.py): * ? [ ]; a leading ! is refused there.
_GLOB_CHARS = frozenset("*?[]!")
# Hosts whose push payload carries no default branch (see above); matched on the repo's host.
HOSTS_WITHOUT_DEFAULT_BRANCH = ("bitbucket.org",)


def is_plain_branch(name: str) -> bool:
    """A branch filter that names one branch (no glob characters)."""
    return bool(name) and not _GLOB_CHARS & set(name)


def single_plain_branch(target: Target) -> str | None:
    """The one branch filter that names a single branch, when exactly one does (``[main, release/*]``:
    main). Two plain names (``[develop, main]``) say nothing about which is the default."""
    plain = [branch for branch in target.branches if is_plain_branch(branch)]
    return plain[0] if len(plain) == 1 else None


def default_branch_for(target: Target, reported: str | None) -> str | None:
    """The target's default branch: configured, else ``reported``, else its single plain filter."""
    return target.default_branch or reported or single_plain_branch(target)


def host_reports_default_branch(repo_host: str) -> bool:
    """False for a host whose push payloads carry no default branch (``repo_host`` lowercased)."""
    return not any(
        repo_host == host or repo_host.endswith(f".{host}") for host in HOSTS_WITHOUT_DEFAULT_BRANCH
    )
