"""The retention decision: a repository graph and a rule in, a plan out. Pure, no I/O.

The safety argument, which the property tests check on random graphs:

1. *Roots* are kept on their own: manifests a kept tag points at (a tag written during the pass
   is always kept), locked manifests, manifests younger than ``min_age``, top-level manifests of
   unknown age, and (``untagged: keep``) untagged manifests nothing references.
2. Everything a kept manifest references is kept (an index keeps its platform manifests and
   attestations, a referrer its subject), and so is every referrer of a kept manifest (its
   signatures and SBOMs). This closure is computed to a fixed point, so no kept manifest ever
   references a deleted one.
3. Everything else is deleted; a deleted index takes along the children no kept index
   references. Deletions are ordered so that a manifest goes before anything it references: a
   pass interrupted half-way leaves no dangling index behind.
4. Deleting a manifest by digest removes all its tags, so a dropped tag whose manifest is kept
   is *untagged* (a tag deletion), never deleted through the manifest.
"""

from __future__ import annotations

import gc
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import chain
from operator import attrgetter
from typing import Literal

from shared.model.globs import any_match
from shared.model.retention_rules import ImageRule
from shared.pruning.retention.graph import ManifestNode, RepositoryGraph

ManifestAction = Literal["delete", "keep", "keep-referenced"]
TagAction = Literal["keep", "untag", "delete-with-manifest"]


@dataclass(frozen=True, slots=True)
class ManifestDecision:
    digest: str
    action: ManifestAction
    reason: str
    kind: str
    tags: tuple[str, ...] = ()
    created: datetime | None = None
    referenced_by: tuple[str, ...] = ()  # for keep-referenced: the kept manifests that need it


@dataclass(frozen=True, slots=True)
class TagDecision:
    tag: str
    digest: str
    action: TagAction
    reason: str


@dataclass(frozen=True)
class RepositoryPlan:
    repository: str
    rule: str  # "images[0]", for the report
    manifests: tuple[ManifestDecision, ...]
    tags: tuple[TagDecision, ...]
    deletions: tuple[str, ...]  # manifest digests, each before anything it references
    untags: tuple[str, ...]  # tags to delete on their own (their manifest stays)

    @property
    def kept(self) -> frozenset[str]:
        return frozenset(d.digest for d in self.manifests if d.action != "delete")


def effective_created(graph: RepositoryGraph) -> dict[str, datetime | None]:
    """Each manifest's age: its own timestamp, else (an index) its newest child's."""
    derived = _derived_created(graph.manifests)
    return {d: derived.get(d, n.created) for d, n in graph.manifests.items()}


def _derived_created(manifests: Mapping[str, ManifestNode]) -> dict[str, datetime | None]:
    """The ages of the indexes without a time of their own (the only ones not on their node)."""
    memo: dict[str, datetime | None] = {}
    for digest, node in manifests.items():
        if node.created is None and node.children and digest not in memo:
            _newest_child(manifests, digest, memo, set())
    return {d: v for d, v in memo.items() if manifests[d].created is None and manifests[d].children}


def _newest_child(
    manifests: Mapping[str, ManifestNode],
    digest: str,
    memo: dict[str, datetime | None],
    visiting: set[str],
) -> datetime | None:
    """An index without a time of its own: its newest child's (recursively; cycles cut)."""
    visiting.add(digest)
    known = []
    for child in manifests[digest].children:
        if child in manifests and child not in visiting:
            node = manifests[child]
            if node.created is not None or not node.children:
                value = node.created
            else:
                value = memo[child] if child in memo else _newest_child(manifests, child, memo, visiting)
            if value is not None:
                known.append(value)
    visiting.discard(digest)
    memo[digest] = max(known) if known else None
    return memo[digest]


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic collector off while planning: the planner makes no reference cycles (refcounting
    frees its garbage), and at 100k manifests the collections it triggers walk the whole graph
    again and again (issue 22.5). Process-wide, so only for this short CPU-bound stretch.

    On the way out, what was allocated meanwhile (the plan: a decision per manifest) goes straight
    to the oldest generation (``gc.freeze`` then ``gc.unfreeze``: two list splices, nothing walked)
    instead of staying young, where the first allocation after ``gc.enable`` would start a young
    collection walking all of it: 55-100 ms at 100k manifests, a fifth of the per-manifest growth
    from 1k (measured with ``gc.callbacks``). Objects others left young move up with it, so their
    cycles wait for the next full collection. Skipped when something else froze objects, which
    ``gc.unfreeze`` would thaw."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if gc.get_freeze_count() == 0:
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def _links(
    manifests: Mapping[str, ManifestNode],
) -> tuple[dict[str, tuple[str, ...]], dict[str, list[str]], dict[str, list[str]]]:
    """In one pass over the manifests: ``reference_map``; digest -> the indexes listing it;
    digest -> its referrers (the manifests whose subject it is). Only leaves' neighbours get
    entries; a leaf nothing points at costs two attribute reads."""
    refs: dict[str, tuple[str, ...]] = {}
    listed_by: dict[str, list[str]] = {}
    about: dict[str, list[str]] = {}
    for digest, node in manifests.items():
        children, subject = node.children, node.subject
        if not children and subject is None:
            continue
        found = []
        for child in children:
            if child in manifests:
                found.append(child)
        for child in dict.fromkeys(found) if found else ():
            if child != digest:
                listed_by.setdefault(child, []).append(digest)
        if subject is not None and subject in manifests:
            found.append(subject)
            about.setdefault(subject, []).append(digest)
        if found:
            refs[digest] = tuple(dict.fromkeys(found))
    return refs, listed_by, about


def reference_map(graph: RepositoryGraph) -> dict[str, tuple[str, ...]]:
    """``graph.references`` of every manifest that references something, computed once."""
    manifests = graph.manifests
    refs: dict[str, tuple[str, ...]] = {}
    for digest, node in manifests.items():
        if node.children or node.subject is not None:
            found = [c for c in node.children if c in manifests]
            if node.subject is not None and node.subject in manifests:
                found.append(node.subject)
            if found:
                refs[digest] = tuple(dict.fromkeys(found))
    return refs


def _young(when: datetime | None, now: datetime, min_age: timedelta) -> bool:
    return when is not None and now - when < min_age


def _decide_tags(
    graph: RepositoryGraph,
    rule: ImageRule,
    now: datetime,
    created: Callable[[str], datetime | None],
    written: AbstractSet[str],
) -> dict[str, str | None]:
    """tag → why it is kept, or None when the rule drops it."""
    min_age = rule.min_age_delta
    reasons: dict[str, str | None] = {}
    others: list[tuple[datetime | None, str]] = []
    for tag in graph.tags.values():
        if tag.locked:
            reasons[tag.name] = "locked"
        elif tag.name in written:
            reasons[tag.name] = "written during the pass"
        elif tag.digest not in graph.manifests:
            reasons[tag.name] = "its manifest could not be read"
        elif any_match(rule.keep_tags, tag.name):
            reasons[tag.name] = "keep_tags"
        else:
            others.append((tag.updated or created(tag.digest), tag.name))
    # Newest first; a tag of unknown time counts as newest (it cannot be shown to be old).
    others.sort(key=lambda item: (0, 0.0, item[1]) if item[0] is None else (1, -item[0].timestamp(), item[1]))
    for rank, (when, name) in enumerate(others):
        if rank < rule.keep_newest:
            reasons[name] = f"keep_newest {rule.keep_newest}"
        elif when is None:
            reasons[name] = "age unknown"
        elif _young(when, now, min_age):
            reasons[name] = f"younger than min_age {rule.min_age}"
        else:
            reasons[name] = None
    return reasons


def plan_repository(
    graph: RepositoryGraph,
    rule: ImageRule,
    *,
    now: datetime,
    rule_name: str = "images[0]",
    written: AbstractSet[str] = frozenset(),
) -> RepositoryPlan:
    """Decide every manifest and tag of one repository under ``rule`` (see the module docstring).

    ``written`` names tags that moved or appeared since the pass first read the repository: they
    are kept whatever the rule says (their time is unknown on ``/v2/``, and someone just chose them).
    """
    with paused_gc():
        return _plan(graph, rule, now, rule_name, written)


def _plan(
    graph: RepositoryGraph, rule: ImageRule, now: datetime, rule_name: str, written: AbstractSet[str]
) -> RepositoryPlan:
    """``plan_repository``'s work. Each map below holds only the manifests it has something for
    (most manifests are leaves nothing refers to), and each reference is followed once."""
    manifests = graph.manifests
    min_age = rule.min_age_delta
    derived = _derived_created(manifests)  # indexes without a time: their newest child's

    def created(digest: str) -> datetime | None:
        return derived.get(digest, manifests[digest].created)

    tag_reasons = _decide_tags(graph, rule, now, created, written)
    refs, listed_by, about = _links(manifests)
    kept_tags_of: dict[str, list[str]] = {}
    dropped_tags_of: dict[str, list[str]] = {}
    for tag in graph.tags.values():
        if tag.digest in manifests:
            by_digest = kept_tags_of if tag_reasons[tag.name] is not None else dropped_tags_of
            by_digest.setdefault(tag.digest, []).append(tag.name)

    # 1. Roots, with the reason each is kept.
    roots: dict[str, str] = {}
    young = f"younger than min_age {rule.min_age}"
    for digest, node in manifests.items():
        # Owned: listed by an index, or a referrer of a manifest here (its subject owns it).
        subject = node.subject
        owned = digest in listed_by or (subject is not None and subject != digest and subject in manifests)
        top_level = not owned
        when = node.created if owned or node.created is not None else derived.get(digest)
        if digest in kept_tags_of:
            roots[digest] = "; ".join(
                f"tag {name} ({tag_reasons[name]})" for name in sorted(kept_tags_of[digest])
            )
        elif node.locked:
            roots[digest] = "locked"
        elif _young(when, now, min_age):
            roots[digest] = young
        elif top_level and when is None:
            roots[digest] = "age unknown"
        elif top_level and digest not in dropped_tags_of and rule.untagged == "keep":
            roots[digest] = "untagged: keep"

    # 2. Closure: what kept manifests reference, and the referrers of kept manifests.
    kept_by: dict[str, str] = {}
    queue = deque(sorted(roots))
    seen = set(roots)
    while queue:
        digest = queue.popleft()
        for other in (*refs.get(digest, ()), *about.get(digest, ())):
            if other not in seen:
                seen.add(other)
                kept_by[other] = digest
                queue.append(other)

    # 3. Decisions, made in the listing's order (each map above was filled in that order, so their
    # entries are read front to back instead of at random) and then sorted by digest once.
    # Deleted is exactly "not seen". Nothing is read back in digest order afterwards: at 100k
    # manifests a pass over rows sorted by digest visits memory at random (issue 22.5).
    decisions: list[ManifestDecision] = []
    deleted: list[str] = []
    reasons = _DeleteReasons(rule, rule_name, dropped_tags_of, listed_by, manifests)
    for digest, node in manifests.items():
        when = node.created if node.created is not None else derived.get(digest)
        kept_names, dropped_names = kept_tags_of.get(digest), dropped_tags_of.get(digest)
        tags = (
            tuple(sorted((kept_names or []) + (dropped_names or []))) if kept_names or dropped_names else ()
        )
        if digest not in seen:
            decisions.append(
                ManifestDecision(digest, "delete", reasons.of(digest, node), node.kind, tags, when)
            )
            deleted.append(digest)
        elif digest in roots:
            decisions.append(ManifestDecision(digest, "keep", roots[digest], node.kind, tags, when))
        else:
            needers = {r for r in (*listed_by.get(digest, ()), *about.get(digest, ())) if r in seen}
            if node.subject is not None and node.subject in seen:
                needers.add(node.subject)
            by = tuple(sorted(needers)) or (kept_by[digest],)
            decisions.append(
                ManifestDecision(
                    digest,
                    "keep-referenced",
                    "referenced by " + ", ".join(_short(d) for d in by),
                    node.kind,
                    tags,
                    when,
                    by,
                )
            )
    decisions.sort(key=_digest_of)

    tag_decisions: list[TagDecision] = []
    untags: list[str] = []
    for name in sorted(graph.tags):
        tag = graph.tags[name]
        reason = tag_reasons[name]
        if reason is not None:
            tag_decisions.append(TagDecision(name, tag.digest, "keep", reason))
        elif tag.digest not in seen:  # its manifest is deleted
            tag_decisions.append(TagDecision(name, tag.digest, "delete-with-manifest", f"{rule_name}"))
        else:
            untags.append(name)
            tag_decisions.append(
                TagDecision(name, tag.digest, "untag", f"{rule_name}; its manifest is still needed")
            )
    return RepositoryPlan(
        repository=graph.repository,
        rule=rule_name,
        manifests=tuple(decisions),
        tags=tuple(tag_decisions),
        deletions=_in_layers(deleted, _layers(refs, seen)),
        untags=tuple(untags),
    )


class _DeleteReasons:
    """Why each deleted manifest goes. The children of one index share one reason string (made
    once, not once per child), and so do all untagged leftovers."""

    def __init__(
        self,
        rule: ImageRule,
        rule_name: str,
        dropped_tags_of: Mapping[str, list[str]],
        listed_by: Mapping[str, list[str]],
        manifests: Mapping[str, ManifestNode],
    ) -> None:
        self.rule_name, self.dropped_tags_of, self.listed_by = rule_name, dropped_tags_of, listed_by
        self.manifests = manifests
        self.untagged = f"{rule_name}: untagged, older than min_age {rule.min_age}"
        self.with_one: dict[str, str] = {}

    def of(self, digest: str, node: ManifestNode) -> str:
        dropped = self.dropped_tags_of.get(digest)
        owners = list(self.listed_by.get(digest, ()))
        subject = node.subject
        if subject is not None and subject != digest and subject in self.manifests:
            owners.append(subject)
        parts = []
        if dropped is not None:
            parts.append(f"{self.rule_name}: tags {', '.join(sorted(dropped))} not kept")
        if len(owners) == 1:
            owner = owners[0]
            shared = self.with_one.get(owner)
            if shared is None:
                shared = self.with_one[owner] = "with " + _short(owner)
            parts.append(shared)
        elif owners:
            parts.append("with " + ", ".join(_short(d) for d in sorted(owners)))
        elif dropped is None:
            return self.untagged
        return parts[0] if len(parts) == 1 else "; ".join(parts)


def deletion_order(graph: RepositoryGraph, deleted: AbstractSet[str]) -> tuple[str, ...]:
    """``deleted`` ordered so that a manifest comes before everything it references."""
    kept = set(graph.manifests) - set(deleted)
    return _in_layers(deleted, _layers(reference_map(graph), kept))


_STUCK = -2  # in a reference cycle, which content addressing makes impossible: deleted last


def _layers(refs: Mapping[str, tuple[str, ...]], kept: AbstractSet[str]) -> dict[str, int]:
    """Kahn's topological sort by layers over the deleted manifests (those not ``kept``): digest
    -> its layer, for those past the first (nothing deleted references a first-layer manifest)
    and ``_STUCK`` for any left in a cycle. Linear; no sorting.

    The deletion order is the layers in turn, each by digest (``_in_layers``). It used to re-sort
    the whole ready list after every step, quadratic: 45 of 49 s at 102k manifests; then a heap;
    then lookups in digest order, which cost more at 100k than all the rest (22.5).
    """
    pending: dict[str, list[str]] = {}
    indegree: dict[str, int] = {}
    for digest, targets in refs.items():
        if digest not in kept:
            found = [t for t in targets if t not in kept and t != digest]
            if found:
                pending[digest] = found
                for target in found:
                    indegree[target] = indegree.get(target, 0) + 1
    layer_of: dict[str, int] = {}
    layer = [d for d in pending if d not in indegree]  # only these can free anything
    depth = 0
    while layer:
        depth += 1
        freed = []
        for digest in layer:
            for target in pending.get(digest, ()):
                indegree[target] -= 1
                if indegree[target] == 0:
                    freed.append(target)
                    layer_of[target] = depth
        layer = freed
    for digest, count in indegree.items():
        if count > 0:
            layer_of[digest] = _STUCK
    return layer_of


def _in_layers(deleted: Iterable[str], layer_of: Mapping[str, int]) -> tuple[str, ...]:
    """The deletion order: layer 0, then 1, ..., then any stuck, each layer by digest."""
    layers: list[list[str]] = [[]]
    stuck: list[str] = []
    for digest in deleted:
        layer = layer_of.get(digest, 0)
        if layer == _STUCK:
            stuck.append(digest)
        else:
            while len(layers) <= layer:
                layers.append([])
            layers[layer].append(digest)
    for part in (*layers, stuck):
        part.sort()
    return tuple(chain.from_iterable((*layers, stuck)))


_digest_of = attrgetter("digest")


def _short(digest: str) -> str:
    algorithm, _, hexdigits = digest.partition(":")
    return f"{algorithm}:{hexdigits[:12]}" if hexdigits else digest
