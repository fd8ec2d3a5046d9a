"""The retention planner on hand-made and random graphs (pure: no registry)."""

from __future__ import annotations

import gc
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.model.globs import any_match
from shared.model.retention_rules import ImageRule, parse_duration, rule_for
from shared.pruning.retention.graph import ManifestNode, RepositoryGraph, TagNode
from shared.pruning.retention.planner import RepositoryPlan, deletion_order, plan_repository

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def d(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def image(name: str, days: float | None, **kw: object) -> ManifestNode:
    return ManifestNode(d(name), created=None if days is None else ago(days), **kw)  # type: ignore[arg-type]


def index(name: str, days: float | None, children: list[str], **kw: object) -> ManifestNode:
    return ManifestNode(
        d(name),
        created=None if days is None else ago(days),
        children=tuple(d(c) for c in children),
        kind="index",
        **kw,  # type: ignore[arg-type]
    )


def graph(nodes: list[ManifestNode], tags: dict[str, str], **tag_kw: TagNode) -> RepositoryGraph:
    tag_nodes = {name: TagNode(name, d(target)) for name, target in tags.items()}
    tag_nodes.update(tag_kw)
    return RepositoryGraph("app", {n.digest: n for n in nodes}, tag_nodes)


def action(plan: RepositoryPlan, name: str) -> str:
    return next(m.action for m in plan.manifests if m.digest == d(name))


def rule(**kw: object) -> ImageRule:
    return ImageRule.model_validate({"repositories": ["app"], "min_age": "7d", **kw})


def test_an_old_multi_arch_index_goes_as_one_unit_and_a_live_one_stays_whole() -> None:
    nodes = [
        index("old", None, ["old-amd64", "old-arm64", "old-att"]),
        image("old-amd64", 40),
        image("old-arm64", 40),
        image("old-att", 40, kind="attestation"),
        index("new", None, ["new-amd64", "new-arm64", "new-att"]),
        image("new-amd64", 30),
        image("new-arm64", 30),
        image("new-att", 30, kind="attestation"),
    ]
    plan = plan_repository(graph(nodes, {"v1": "old", "latest": "new"}), rule(keep_tags=["latest"]), now=NOW)
    for name in ("old", "old-amd64", "old-arm64", "old-att"):
        assert action(plan, name) == "delete"
    assert action(plan, "new") == "keep"
    for name in ("new-amd64", "new-arm64", "new-att"):
        assert action(plan, name) == "keep-referenced"
        decision = next(m for m in plan.manifests if m.digest == d(name))
        assert decision.referenced_by == (d("new"),)
    # The index goes before its children; the index's age is its newest child's.
    assert plan.deletions[0] == d("old")
    assert next(m for m in plan.manifests if m.digest == d("old")).created == ago(40)
    assert next(t for t in plan.tags if t.tag == "v1").action == "delete-with-manifest"


def test_a_child_shared_with_a_kept_index_is_kept() -> None:
    nodes = [
        index("old", 40, ["shared", "old-only"]),
        index("new", 30, ["shared"]),
        image("shared", 40),
        image("old-only", 40),
    ]
    plan = plan_repository(graph(nodes, {"v1": "old", "v2": "new"}), rule(keep_tags=["v2"]), now=NOW)
    assert action(plan, "old") == "delete"
    assert action(plan, "old-only") == "delete"
    assert action(plan, "shared") == "keep-referenced"


def test_a_dropped_tag_on_a_kept_manifest_is_untagged_not_deleted() -> None:
    nodes = [image("a", 40)]
    plan = plan_repository(graph(nodes, {"latest": "a", "v1": "a"}), rule(keep_tags=["latest"]), now=NOW)
    assert action(plan, "a") == "keep"
    assert plan.untags == ("v1",)
    assert plan.deletions == ()


def test_keep_newest_min_age_and_untagged() -> None:
    nodes = [image(f"i{n}", 10 + n) for n in range(5)] + [image("young", 1), image("loose", 50)]
    tags = {f"t{n}": f"i{n}" for n in range(5)}
    plan = plan_repository(graph(nodes, tags), rule(keep_newest=2), now=NOW)
    assert [action(plan, f"i{n}") for n in range(5)] == ["keep", "keep", "delete", "delete", "delete"]
    assert action(plan, "young") == "keep"
    assert action(plan, "loose") == "delete"
    kept = plan_repository(graph(nodes, tags), rule(keep_newest=2, untagged="keep"), now=NOW)
    assert action(kept, "loose") == "keep"
    assert action(kept, "i4") == "delete"  # untagged: keep does not save manifests whose tags are dropped


def test_locks_and_signatures() -> None:
    nodes = [
        image("locked", 50, locked=True),
        image("signed", 50),
        ManifestNode(d("sig"), subject=d("signed"), kind="referrer"),
        image("dropped", 50),
        ManifestNode(d("sig2"), subject=d("dropped"), kind="referrer"),
    ]
    tags = {"a": "locked", "b": "dropped"}
    locked_tag = TagNode("c", d("signed"), ago(60), locked=True)
    plan = plan_repository(graph(nodes, tags, c=locked_tag), rule(), now=NOW)
    assert action(plan, "locked") == "keep"
    assert action(plan, "signed") == "keep"  # its tag is locked
    assert action(plan, "sig") == "keep-referenced"  # a signature of a kept image stays
    assert action(plan, "dropped") == "delete"
    assert action(plan, "sig2") == "delete"
    assert plan.deletions.index(d("sig2")) < plan.deletions.index(d("dropped"))


def test_unknown_age_keeps_top_level_manifests_only() -> None:
    nodes = [image("mystery", None), index("old", 40, ["child"]), image("child", None)]
    plan = plan_repository(graph(nodes, {}), rule(), now=NOW)
    assert action(plan, "mystery") == "keep"
    assert action(plan, "old") == "delete"
    assert action(plan, "child") == "delete"


def test_rules_parse_and_match() -> None:
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration("1d12h") == timedelta(days=1, hours=12)
    assert parse_duration("0") == timedelta(0)
    with pytest.raises(ValueError, match="not like 7d"):
        parse_duration("7 days")
    with pytest.raises(ValidationError):
        ImageRule.model_validate({"repositories": ["app"], "min_age": "soon"})
    with pytest.raises(ValidationError):
        ImageRule.model_validate({"repositories": []})
    rules = [ImageRule(repositories=["team/special"]), ImageRule(repositories=["app", "team/*"])]
    assert rule_for(rules, "team/special") == (0, rules[0])
    assert rule_for(rules, "team/other") == (1, rules[1])
    assert rule_for(rules, "team/a/b") is None
    assert rule_for(rules, "other") is None


# -- properties on random graphs -----------------------------------------------------------------


@st.composite
def random_graphs(draw: st.DrawFn) -> RepositoryGraph:
    ages = st.one_of(st.none(), st.floats(min_value=0, max_value=60))
    names = [f"m{n}" for n in range(draw(st.integers(1, 14)))]
    nodes: dict[str, ManifestNode] = {}
    for position, name in enumerate(names):
        earlier = names[:position]  # content addressing: only earlier manifests can be referenced
        shape = draw(st.sampled_from(["image", "index", "referrer"])) if earlier else "image"
        age = draw(ages)
        created = None if age is None else ago(age)
        locked = draw(st.booleans()) and draw(st.booleans())
        if shape == "index":
            children = draw(st.lists(st.sampled_from(earlier), min_size=1, max_size=4))
            node = ManifestNode(
                d(name), created=created, children=tuple(d(c) for c in children), kind="index"
            )
        elif shape == "referrer":
            node = ManifestNode(
                d(name), created=created, subject=d(draw(st.sampled_from(earlier))), kind=shape
            )
        else:
            node = ManifestNode(d(name), created=created)
        nodes[name] = ManifestNode(
            node.digest,
            created=node.created,
            children=node.children,
            subject=node.subject,
            locked=locked,
            kind=node.kind,
        )
    tags = {}
    for number in range(draw(st.integers(0, 8))):
        tag_name = draw(st.sampled_from(["latest", "v1", "v2", "dev", "pr"])) + f"-{number}"
        target = draw(st.sampled_from(names))
        tags[tag_name] = TagNode(
            tag_name,
            d(target),
            draw(ages.map(lambda a: None if a is None else ago(a))),
            locked=draw(st.booleans()) and draw(st.booleans()),
        )
    return RepositoryGraph("app", {n.digest: n for n in nodes.values()}, tags)


rules_strategy = st.builds(
    lambda keep, newest, age, untagged: ImageRule(
        repositories=["app"], keep_tags=keep, keep_newest=newest, min_age=age, untagged=untagged
    ),
    st.lists(st.sampled_from(["latest-*", "v*", "dev-1", "*"]), max_size=2),
    st.integers(0, 3),
    st.sampled_from(["0", "1d", "7d", "30d"]),
    st.sampled_from(["delete", "keep"]),
)


@settings(max_examples=400, deadline=None)
@given(random_graphs(), rules_strategy)
def test_no_kept_manifest_ever_references_a_deleted_one(graph: RepositoryGraph, rule: ImageRule) -> None:
    plan = plan_repository(graph, rule, now=NOW)
    deleted = set(plan.deletions)
    kept = plan.kept
    assert deleted | kept == set(graph.manifests) and not deleted & kept
    assert {m.digest for m in plan.manifests if m.action == "delete"} == deleted
    for digest in kept:
        node = graph.manifests[digest]
        assert not set(node.children) & deleted, "a kept index lost a child"
        assert node.subject not in deleted, "a kept referrer lost its subject"
    for digest, node in graph.manifests.items():
        if node.subject in kept:
            assert digest in kept, "a kept manifest lost its signature/SBOM"
        if node.locked:
            assert digest in kept
        if node.created is not None and NOW - node.created < rule.min_age_delta:
            assert digest in kept
    for decision in plan.manifests:
        if decision.action == "keep-referenced":
            assert decision.referenced_by and set(decision.referenced_by) <= kept
    for tag in plan.tags:
        if tag.action == "keep":
            assert tag.digest in kept or tag.digest not in graph.manifests
        elif tag.action == "untag":
            assert tag.digest in kept and tag.tag in plan.untags
        else:
            assert tag.digest in deleted
    for node_tag in graph.tags.values():
        if node_tag.locked or any_match(rule.keep_tags, node_tag.name):
            assert node_tag.digest in kept or node_tag.digest not in graph.manifests
    position = {digest: i for i, digest in enumerate(plan.deletions)}
    for digest in plan.deletions:
        for target in graph.references(digest):
            if target in position:
                assert position[digest] < position[target], "a manifest deleted before what references it"


@settings(max_examples=300, deadline=None)
@given(random_graphs(), rules_strategy, st.data())
def test_a_tag_written_during_the_pass_saves_what_it_reaches(
    graph: RepositoryGraph, rule: ImageRule, data: st.DataObject
) -> None:
    """What the prune pass deletes after a tag moved (both plans agree) never includes the
    manifest the tag now points at, nor anything that manifest references (issue 17.9)."""
    assume(graph.manifests)
    first = plan_repository(graph, rule, now=NOW)
    target = data.draw(st.sampled_from(sorted(graph.manifests)))
    name = data.draw(st.sampled_from([*sorted(graph.tags), "rollback"]))
    others = [t for t in graph.tags.values() if t.name != name]
    again = plan_repository(
        graph.with_tags([*others, TagNode(name, target)]), rule, now=NOW, written=frozenset({name})
    )
    deleted = set(first.deletions) & set(again.deletions)
    reached, stack = set(), [target]
    while stack:
        digest = stack.pop()
        if digest not in reached:
            reached.add(digest)
            stack.extend(graph.references(digest))
    assert not reached & deleted
    assert [t.action for t in again.tags if t.tag == name] == ["keep"]


@st.composite
def dags_and_subsets(draw: st.DrawFn) -> tuple[RepositoryGraph, set[str]]:
    """A repository of up to 60 manifests (indexes, referrers, images) and a random deletion set."""
    count = draw(st.integers(1, 60))
    nodes: dict[str, ManifestNode] = {}
    digests: list[str] = []
    for position in range(count):
        digest = d(f"n{position}")
        earlier = digests[:position]
        children = tuple(draw(st.lists(st.sampled_from(earlier), max_size=5))) if earlier else ()
        subject = draw(st.one_of(st.none(), st.sampled_from(earlier))) if earlier else None
        nodes[digest] = ManifestNode(digest, children=children, subject=subject)
        digests.append(digest)
    deleted = set(draw(st.lists(st.sampled_from(digests), unique=True)))
    return RepositoryGraph("app", nodes, {}), deleted


@settings(max_examples=300, deadline=None)
@given(dags_and_subsets())
def test_the_deletion_order_is_a_topological_order_of_what_is_deleted(
    case: tuple[RepositoryGraph, set[str]],
) -> None:
    """Every deleted manifest exactly once, each before everything it references (issue 22.5:
    the order is computed by layers now, not by re-sorting a list at every step)."""
    graph, deleted = case
    order = deletion_order(graph, deleted)
    assert sorted(order) == sorted(deleted)
    position = {digest: i for i, digest in enumerate(order)}
    for digest in order:
        for target in graph.references(digest):
            if target in position and target != digest:
                assert position[digest] < position[target]
    assert deletion_order(graph, set(reversed(order))) == order  # deterministic


def test_the_deletion_order_stays_linear_on_a_wide_repository() -> None:
    """3,000 indexes with a child each: the old sort-per-step made ~10^7 digest comparisons here,
    the layered order ~10^5. Counted, not timed (machines are too noisy for timings)."""
    compared = 0

    class Counting(str):
        def __lt__(self, other: str) -> bool:
            nonlocal compared
            compared += 1
            return str.__lt__(self, other)

        def __gt__(self, other: str) -> bool:
            nonlocal compared
            compared += 1
            return str.__gt__(self, other)

    nodes: dict[str, ManifestNode] = {}
    for n in range(3_000):
        child, parent = Counting(d(f"c{n}")), Counting(d(f"i{n}"))
        nodes[child] = ManifestNode(child)
        nodes[parent] = ManifestNode(parent, children=(child,), kind="index")
    order = deletion_order(RepositoryGraph("app", nodes, {}), set(nodes))
    assert len(order) == 6_000
    assert compared < 6_000 * 40  # n·log2(n) is ~8·10^4


def _generations_of(objects: list[object]) -> set[int]:
    wanted = {id(o) for o in objects}
    return {g for g in range(3) for o in gc.get_objects(generation=g) if id(o) in wanted}


def test_planning_hands_its_objects_to_the_oldest_generation_and_restores_the_collector() -> None:
    """The plan's decisions leave young: otherwise the first allocation afterwards walks them all."""
    nodes = [index(f"i{n}", 40, [f"c{n}"]) for n in range(200)] + [image(f"c{n}", 40) for n in range(200)]
    assert gc.isenabled()
    plan = plan_repository(graph(nodes, {}), rule(), now=NOW)
    assert gc.isenabled() and gc.get_freeze_count() == 0
    assert _generations_of(list(plan.manifests)) == {2}

    gc.freeze()  # something else froze objects: they stay frozen
    try:
        before = gc.get_freeze_count()
        plan_repository(graph(nodes, {}), rule(), now=NOW)
        assert gc.isenabled() and gc.get_freeze_count() == before > 0
    finally:
        gc.unfreeze()

    gc.disable()  # a caller that had it off keeps it off
    try:
        plan_repository(graph(nodes, {}), rule(), now=NOW)
        assert not gc.isenabled()
    finally:
        gc.enable()
