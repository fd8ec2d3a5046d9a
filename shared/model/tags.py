"""Image tag rules, in the spirit of docker/metadata-action.

A rule is a template such as ``sha-{short_sha}``, optionally with a condition (``TagRule.when``).
A push fills the placeholders it can; a rule with a placeholder the push cannot fill produces
nothing, so ``{branch}`` is silent on tag pushes without needing a condition.

Templates are parsed here, never handed to ``str.format``: ``{sha.__class__}`` or ``{0}`` would
otherwise reach into Python objects. Every produced tag is sanitised to the OCI tag grammar,
because branch and tag names come from whoever can push and later end up in a build command.

This module must not import ``shared.model.config`` at run time: ``config`` imports
``validate_rule_templates`` from here to check ``Target.image_tags`` while its models are built.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from shared.model.pinned_cache import PinnedCache

if TYPE_CHECKING:
    from shared.model.config import TagRule

PLACEHOLDERS: tuple[str, ...] = ("branch", "tag", "sha", "short_sha", "version", "major", "minor", "patch")
CONDITIONS: tuple[str, ...] = ("always", "branch", "tag", "default_branch", "semver")
SHORT_SHA_LENGTH = 7
MAX_TAG_LENGTH = 128

# Semantic Versioning 2.0.0 (semver.org's grammar), ASCII digits only: ``\d`` would accept "١".
_NUM = r"(?:0|[1-9][0-9]*)"
_PRE_ID = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_BUILD_ID = r"[0-9A-Za-z-]+"
_SEMVER_RE = re.compile(
    rf"v?(?P<major>{_NUM})\.(?P<minor>{_NUM})\.(?P<patch>{_NUM})"
    rf"(?:-(?P<prerelease>{_PRE_ID}(?:\.{_PRE_ID})*))?"
    rf"(?:\+(?P<build>{_BUILD_ID}(?:\.{_BUILD_ID})*))?"
)
# Runs of characters outside the tag alphabet become one "-" (metadata-action does the same).
_INVALID_RUN_RE = re.compile(r"[^A-Za-z0-9._-]+")
_SEMVER_PARTS = frozenset({"major", "minor", "patch"})
_COMMIT_PLACEHOLDERS = frozenset({"sha", "short_sha"})


@dataclass(frozen=True)
class SemVer:
    """A parsed semantic version; ``str()`` is the ``{version}`` placeholder (no "v", no build)."""

    major: int
    minor: int
    patch: int
    prerelease: str | None = None
    build: str | None = None

    @property
    def is_prerelease(self) -> bool:
        return self.prerelease is not None

    def __str__(self) -> str:
        # Build metadata is left out as node-semver's ``version`` does: it carries no precedence,
        # and "+" is not allowed in an OCI tag anyway.
        core = f"{self.major}.{self.minor}.{self.patch}"
        return f"{core}-{self.prerelease}" if self.prerelease else core


class RuleTemplateError(ValueError):
    """A tag rule template that can never render; ``index`` is the rule's position in its list."""

    def __init__(self, message: str, *, index: int, template: str) -> None:
        super().__init__(message)
        self.index = index
        self.template = template


def parse_semver(tag: str) -> SemVer | None:
    """The semantic version a Git tag names (``v1.2.3``, ``1.2.3-rc.1+b5``), or None.

    Strict semver.org grammar with an optional leading lowercase "v": a loose parse would turn a
    tag like ``2024.1`` into release tags that later real versions collide with.
    """
    match = _SEMVER_RE.fullmatch(tag)
    if match is None:
        return None
    return SemVer(
        major=int(match["major"]),
        minor=int(match["minor"]),
        patch=int(match["patch"]),
        prerelease=match["prerelease"],
        build=match["build"],
    )


def sanitize_tag(value: str) -> str | None:
    """``value`` forced into the OCI tag grammar ``[A-Za-z0-9_][A-Za-z0-9._-]{0,127}``; None if empty.

    Runs of other characters become "-" (``feature/foo`` → ``feature-foo``); leading and trailing
    "." and "-" are dropped (a tag may not start with them, and ``feat/$(x)`` should read
    ``feat-x``, not ``feat-x-``); the result is cut to 128 characters.
    """
    cleaned = _INVALID_RUN_RE.sub("-", value).strip(".-")
    cleaned = cleaned[:MAX_TAG_LENGTH].rstrip(".-")
    return cleaned or None


def template_placeholders(template: str) -> list[str]:
    """The placeholder names a template uses, in order. Raises ValueError on malformed braces."""
    return [
        field for _literal, field, _spec, _conv in string.Formatter().parse(template) if field is not None
    ]


def validate_rule_templates(rules: Sequence[str | TagRule]) -> None:
    """Refuse templates that could never render, naming the rule and the bad placeholder.

    Called by ``Target.image_tags``' validator so a typo such as ``{brnch}`` fails at load time
    instead of silently producing no tag on every push. Raises ``RuleTemplateError``.
    """
    for index, rule in enumerate(rules):
        template = rule if isinstance(rule, str) else rule.template
        if not template.strip():
            raise RuleTemplateError("tag template is empty", index=index, template=template)
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise RuleTemplateError(
                f"tag template {template!r} is malformed: {exc} (write '{{{{' or '}}}}' for a literal brace)",
                index=index,
                template=template,
            ) from exc
        for _literal, field, spec, conversion in parsed:
            if field is None:
                continue
            if field not in PLACEHOLDERS:
                shown = "{" + field + "}"
                raise RuleTemplateError(
                    f"tag template {template!r} uses unknown placeholder {shown} "
                    f"(known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})",
                    index=index,
                    template=template,
                )
            if spec or conversion:
                raise RuleTemplateError(
                    f"tag template {template!r}: placeholder {{{field}}} takes no format spec or conversion",
                    index=index,
                    template=template,
                )


@dataclass(frozen=True)
class _Push:
    """What one push offers to templates: the values it can fill, and its facts for conditions."""

    values: dict[str, str]
    branch: str | None
    tag: str | None
    semver: SemVer | None
    is_default_branch: bool


def _describe_push(ref: str, default_branch: str | None) -> _Push:
    """What the ref offers; the commit's placeholders are added per push (``compute_tags``).

    Without a commit (a build of a branch's head), {sha} rules produce nothing, like any rule
    whose placeholder the push cannot fill.
    """
    values: dict[str, str] = {}
    branch = tag = None
    semver = None
    if ref.startswith("refs/heads/"):
        branch = ref.removeprefix("refs/heads/")
        values["branch"] = branch
    elif ref.startswith("refs/tags/"):
        tag = ref.removeprefix("refs/tags/")
        values["tag"] = tag
        semver = parse_semver(tag)
        if semver is not None:
            values.update(
                version=str(semver), major=str(semver.major), minor=str(semver.minor), patch=str(semver.patch)
            )
    return _Push(
        values=values,
        branch=branch,
        tag=tag,
        semver=semver,
        is_default_branch=branch is not None and default_branch is not None and branch == default_branch,
    )


def _condition_holds(when: str, push: _Push) -> bool:
    if when == "always":
        return True
    if when == "branch":
        return push.branch is not None
    if when == "tag":
        return push.tag is not None
    if when == "default_branch":
        return push.is_default_branch
    if when == "semver":
        return push.semver is not None
    raise ValueError(f"unknown tag rule condition {when!r}")


@lru_cache(maxsize=1024)
def _parse_template(
    template: str,
) -> tuple[tuple[tuple[str, str | None, str | None, str | None], ...], frozenset[str]]:
    """Templates come from the configuration: parse each once, not on every push.

    Returns the parsed pieces and the placeholder names used.
    """
    parsed = tuple(string.Formatter().parse(template))
    return parsed, frozenset(field for _literal, field, _spec, _conv in parsed if field is not None)


def _applies(rule: _CompiledRule, push: _Push, available: AbstractSet[str]) -> bool:
    """Whether ``rule`` makes a tag for ``push`` when the placeholders ``available`` can be filled."""
    if not _condition_holds(rule.when, push):
        return False
    used = rule.used
    if not used <= available:
        return False
    semver = push.semver
    if semver is not None and (rule.when == "semver" or used & _SEMVER_PARTS):
        # metadata-action: a pre-release only extends {version}; "2.0" must keep meaning the
        # latest stable 2.0.x, never a release candidate.
        if semver.is_prerelease and "version" not in used:
            return False
        # metadata-action: no bare "{major}" tag for 0.y.z, whose API is not stable.
        if semver.major == 0 and "major" in used and not used & {"minor", "patch", "version"}:
            return False
    return True


def _render(rule: _CompiledRule, push: _Push, values: dict[str, str]) -> str | None:
    """One rule on one push: the raw (unsanitised) tag, or None when the rule does not apply."""
    if not _applies(rule, push, values.keys()):
        return None
    return "".join(literal + (values[field] if field else "") for literal, field, _s, _c in rule.parsed)


# A rule that uses the commit, for one ref: its text with the ref's placeholders filled in, cut
# before each {sha} or {short_sha} (the field name; None after the last piece).
_CommitPieces = tuple[tuple[str, str | None], ...]


def _commit_pieces(rule: _CompiledRule, values: dict[str, str]) -> _CommitPieces:
    pieces: list[tuple[str, str | None]] = []
    text = ""
    for literal, field, _spec, _conversion in rule.parsed:
        text += literal
        if field in _COMMIT_PLACEHOLDERS:
            pieces.append((text, field))
            text = ""
        elif field is not None:
            text += values[field]
    pieces.append((text, None))
    return tuple(pieces)


@dataclass(frozen=True)
class _CompiledRule:
    when: str
    parsed: tuple[tuple[str, str | None, str | None, str | None], ...]
    used: frozenset[str]


# Rule lists come from the loaded configuration and are reused for every push: compile each list
# once. Keyed by the list's identity, holding the list itself so that the id cannot be reused.
# The snapshot of its items catches a list changed in place since it was compiled.
_COMPILED: dict[
    int, tuple[Sequence[str | TagRule], tuple[str | TagRule, ...], tuple[_CompiledRule, ...]]
] = {}
_MAX_COMPILED = 4096


def _compiled(rules: Sequence[str | TagRule]) -> tuple[_CompiledRule, ...]:
    cached = _COMPILED.get(id(rules))
    # Tuple equality compares items by identity first: equal unless an item was replaced.
    if cached is not None and cached[0] is rules and cached[1] == tuple(rules):
        return cached[2]
    validate_rule_templates(rules)
    compiled = []
    for rule in rules:
        template, when = (rule, "always") if isinstance(rule, str) else (rule.template, rule.when)
        parsed, used = _parse_template(template)
        compiled.append(_CompiledRule(when, parsed, used))
    result = tuple(compiled)
    if len(_COMPILED) >= _MAX_COMPILED:
        _COMPILED.clear()
    _COMPILED[id(rules)] = (rules, tuple(rules), result)
    return result


def compute_tags(
    rules: Sequence[str | TagRule], *, ref: str, commit: str | None, default_branch: str | None
) -> list[str]:
    """The image tags for a push of ``commit`` to the full ``ref``, sanitised, deduplicated, in rule order.

    ``default_branch`` decides ``when: default_branch`` rules (None: no branch is the default).
    ``commit`` None means the head of ``ref``, whose commit is not known: ``{sha}`` rules are silent.
    A plain string rule behaves like ``when: always``.
    """
    # An empty commit is no commit, as None is: {sha} rules stay silent.
    plan = _ref_plan(_compiled(rules), ref, default_branch, bool(commit))
    tags: list[str] = []
    for step in plan:
        if isinstance(step, str):
            tag: str | None = step
        else:
            assert commit  # only planned when there is a commit
            short = commit[:SHORT_SHA_LENGTH]
            raw = "".join(
                [text + (commit if field == "sha" else short) if field else text for text, field in step]
            )
            tag = sanitize_tag(raw)
        if tag is not None and tag not in tags:
            tags.append(tag)
    return tags


# A tag, or the pieces of one that uses the commit; rules that make no tag for the ref are left out.
_PlanStep = str | _CommitPieces
# Keyed by the compiled rules and the ref: the same few refs push again and again, and only the
# commit differs between their pushes.
_PLANS: PinnedCache[tuple[_PlanStep, ...]] = PinnedCache(_MAX_COMPILED)


def _ref_plan(
    compiled: tuple[_CompiledRule, ...], ref: str, default_branch: str | None, has_commit: bool
) -> tuple[_PlanStep, ...]:
    """Each rule's outcome for ``ref``, decided and rendered once: a tag, or a commit rule's pieces.

    Whether a rule applies and what its ref placeholders say depends on the ref alone; only
    ``{sha}`` and ``{short_sha}`` change from one push of a ref to the next, so a push only joins
    its commit into the pieces (and sanitises the result, as every tag is).
    """
    key = (ref, default_branch, has_commit)
    cached = _PLANS.get((compiled,), key)
    if cached is not None:
        return cached
    push = _describe_push(ref, default_branch)
    with_commit = push.values.keys() | _COMMIT_PLACEHOLDERS
    steps: list[_PlanStep] = []
    for rule in compiled:
        if has_commit and rule.used & _COMMIT_PLACEHOLDERS:
            if _applies(rule, push, with_commit):
                steps.append(_commit_pieces(rule, push.values))
            continue
        raw = _render(rule, push, push.values)
        if raw is not None and (tag := sanitize_tag(raw)) is not None:
            steps.append(tag)
    return _PLANS.put((compiled,), key, tuple(steps))
