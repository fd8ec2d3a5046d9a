"""BuildKit cache names: a branch's or tag's (from the target's template) and a pull request's.

Cache isolation of pull-request builds (issue #20) rests on one rule, enforced here for every
name a branch or tag build can get: **a pull request's cache name ends in ``-pr-<digits>``, and no
branch or tag cache name ever does.** ``branch_cache_name`` expands the target's template
(``{target}-{branch}`` by default) with any ref name at all, sanitizes it to the cache name
alphabet, and as its last step rewrites a trailing ``-pr-<digits>`` to ``-pr_<digits>``: a branch
literally named ``pr-7`` of target ``app`` caches as ``app-pr_7``, never as ``app-pr-7``, the name
pull request 7 of ``app`` writes. The rewrite keeps the length and the alphabet, and its result
ends in ``_<digits>``, which the reserved suffix cannot match, so the two sets of names are disjoint
whatever the templates, target names and refs are (``tests/test_pr_build.py`` holds it as a
property). The renderer checks both sides again (``shared.acr.task.pr_isolation``).
"""

from __future__ import annotations

import re
from functools import lru_cache

from shared.model.build_request import CACHE_NAME_RE, PR_TAG_RE, TARGET_NAME_RE

# The reserved suffix of pull-request cache names; no branch or tag cache name ends with it.
PR_CACHE_SUFFIX_RE = re.compile(r"-pr-[0-9]+\Z")
_UNSAFE_RUN_RE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_CACHE_NAME = 128


def is_pr_cache_name(name: str) -> bool:
    """Whether ``name`` is in the pull-request namespace (only PR builds may write it)."""
    return PR_CACHE_SUFFIX_RE.search(name) is not None


def sanitize_cache_name(value: str) -> str:
    """``value`` in the cache name alphabet, at most 128 characters, never a pull request's name."""
    cleaned = _UNSAFE_RUN_RE.sub("-", value).strip(".-_")[:MAX_CACHE_NAME]
    if not CACHE_NAME_RE.match(cleaned):
        return "cache"
    # The reserved suffix, rewritten: same length, same alphabet, ends in "_<digits>" instead.
    return PR_CACHE_SUFFIX_RE.sub(lambda m: "-pr_" + m.group(0)[4:], cleaned)


@lru_cache(maxsize=4096)
def branch_cache_name(template: str, target: str, ref: str) -> str:
    """The cache name of a branch or tag build: the template expanded with the ref's short name."""
    ref_name = ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
    return sanitize_cache_name(template.format(target=target, branch=ref_name))


def pr_cache_name(target: str, number: int) -> str:
    """``<target>-pr-<number>``: the only cache a pull request's build writes."""
    return f"{target}-pr-{number}"


def parse_pr_cache_name(name: str) -> tuple[str, int] | None:
    """The (target, number) whose pull request writes ``name``, or None when no target's can.

    The number is the digits after the last ``-pr-``; what precedes is the target, which must be a
    target name (``app-pr-3-pr-7`` is pull request 7 of target ``app-pr-3``).
    """
    match = PR_CACHE_SUFFIX_RE.search(name)
    if match is None:
        return None
    target, digits = name[: match.start()], match.group(0)[4:]
    if not TARGET_NAME_RE.match(target) or digits.startswith("0") or len(digits) > 19:
        return None
    return target, int(digits)


SHORT_SHA = 12
__all__ = [
    "PR_TAG_RE",
    "branch_cache_name",
    "is_pr_cache_name",
    "parse_pr_cache_name",
    "pr_cache_name",
    "pr_tags",
    "sanitize_cache_name",
]


def pr_tags(number: int, commit: str) -> list[str]:
    """``pr-<n>`` (moves with the request's head) and ``pr-<n>-<12 hex>`` (this commit, stays)."""
    return [f"pr-{number}", f"pr-{number}-{commit[:SHORT_SHA]}"]
