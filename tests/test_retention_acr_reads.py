"""Issue 22.5: on ACR only the manifests the decision needs are read (indexes, possible referrers).

Counted on the loopback data plane through the real SDK, and a property: on random repositories
the plan from the lazy reads equals the plan from reading every manifest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.model.retention_rules import ImageRule
from shared.platform.oci import Manifest, compute_digest
from shared.pruning.retention.acr_backend import AcrRetentionBackend
from shared.pruning.retention.acr_listing import ListedManifest, graph_from_listing, raw_fields
from shared.pruning.retention.graph import TagNode
from shared.pruning.retention.planner import plan_repository
from shared.pruning.retention.prune import prune_images
from tests.support.acr_dataplane import AcrDataPlane, acr_dataplane  # noqa: F401 (fixture)

NOW = datetime(2026, 6, 1, tzinfo=UTC)
PASS = datetime.now(UTC)
OLD = PASS - timedelta(days=40)
# Written out here, not imported: what registries and tools put on the wire.
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
IN_TOTO = "application/vnd.in-toto+json"
EMPTY = "application/vnd.oci.empty.v1+json"
NOTATION = "application/vnd.cncf.notary.signature"


def manifest_gets(plane: AcrDataPlane, repo: str) -> list[str]:
    """The digests whose JSON was fetched (answered 200; the SDK's 401 challenges are not reads)."""
    prefix = f"/v2/{repo}/manifests/"
    return [
        unquote(r.path.removeprefix(prefix))
        for r in plane.requests
        if r.method == "GET" and r.path.startswith(prefix) and r.headers.get("authorization")
    ]


def test_only_indexes_and_possible_referrers_are_read_on_acr(acr_dataplane: AcrDataPlane) -> None:  # noqa: F811
    plane = acr_dataplane
    plane.page_size = 4
    indexes = []
    for _ in range(3):
        digest, _children = plane.add_index("app", created=OLD)
        indexes.append(digest)
    plane.tag("app", "latest", indexes[-1], updated=OLD)
    leftovers = [plane.add_platform_image("app", created=OLD) for _ in range(4)]
    docker = plane.add_manifest(
        "app",
        {"config": {"mediaType": DOCKER_CONFIG, "digest": compute_digest(b"d"), "size": 1}, "layers": []},
        created=OLD,
        media_type=DOCKER_MANIFEST,
    )
    signature = plane.add_referrer("app", indexes[-1], artifact_type=NOTATION, annotations={}, created=OLD)
    # An in-toto statement no index lists, pushed as a referrer of a leftover: read (it may be one).
    loose_attestation = plane.add_manifest(
        "app",
        {
            "config": {"mediaType": IN_TOTO, "digest": compute_digest(b"s"), "size": 1},
            "layers": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": leftovers[0], "size": 1},
        },
        created=OLD,
    )
    plane.tag("app", "kept", leftovers[0], updated=OLD)
    rules = [ImageRule(repositories=["app"], keep_tags=["latest", "kept"], min_age="7d")]
    backend = AcrRetentionBackend.connect(plane.url, plane.credential, connection_verify=plane.ca_path)

    lazy = prune_images(backend, rules, dry_run=True, now=PASS)

    read = manifest_gets(plane, "app")
    assert sorted(read) == sorted([*indexes, signature, loose_attestation])
    assert docker not in read and not set(leftovers) & set(read)
    assert len(plane.repositories["app"].manifests) == 3 * 5 + 4 + 1 + 1 + 1  # 7 of 22 were read
    # Reading everything plans the same, and the kept index's children and referrers stay whole.
    plane.requests.clear()
    backend.read_everything = True
    full = prune_images(backend, rules, dry_run=True, now=PASS)
    assert len(manifest_gets(plane, "app")) == 22
    assert lazy.to_json() == full.to_json()
    (plan,) = [o.plan for o in lazy.repositories]
    assert plan is not None
    decisions = {m.digest: m for m in plan.manifests}
    assert decisions[signature].action == "keep-referenced"
    assert decisions[loose_attestation].action == "keep-referenced"
    kept_children = json.loads(plane.repositories["app"].manifests[indexes[-1]].body)["manifests"]
    assert all(decisions[c["digest"]].action == "keep-referenced" for c in kept_children)
    assert {decisions[c["digest"]].kind for c in kept_children} == {"image", "attestation"}


# -- the property: lazy reads plan exactly as full reads ----------------------------------------


def _body(content: dict[str, object]) -> tuple[str, bytes]:
    raw = json.dumps(content, sort_keys=True).encode()
    return compute_digest(raw), raw


@st.composite
def repositories(draw: st.DrawFn) -> tuple[list[dict[str, object]], dict[str, Manifest], dict[str, TagNode]]:
    """Raw listing entries, every manifest's JSON, and tags, for a random repository that keeps
    the one assumption: an image (image config, or Docker schema 2) carries no ``subject``, nor
    does an in-toto manifest an index lists."""
    entries: list[dict[str, object]] = []
    manifests: dict[str, Manifest] = {}
    may_child: list[str] = []  # what an index may list
    for n in range(draw(st.integers(1, 18))):
        earlier = [str(e["digest"]) for e in entries]
        shape = draw(st.sampled_from(["image", "docker", "in-toto", "referrer", "index", "docker-list"]))
        content: dict[str, object] = {"schemaVersion": 2}
        subject = draw(st.one_of(st.none(), st.sampled_from(earlier))) if earlier else None
        if shape in {"index", "docker-list"}:
            media_type = OCI_INDEX if shape == "index" else DOCKER_LIST
            pick = st.lists(st.sampled_from(may_child), max_size=4, unique=True)
            children = draw(pick) if may_child else []
            descriptors = []
            for child in children:
                descriptor: dict[str, object] = {"mediaType": OCI_MANIFEST, "digest": child, "size": 1}
                if draw(st.booleans()):
                    descriptor["annotations"] = {"vnd.docker.reference.type": "attestation-manifest"}
                descriptors.append(descriptor)
            content["manifests"] = descriptors
            if shape == "index" and subject is not None and draw(st.booleans()):
                content["subject"] = {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1}
        else:
            media_type = DOCKER_MANIFEST if shape == "docker" else OCI_MANIFEST
            configs = {"image": OCI_CONFIG, "docker": DOCKER_CONFIG, "in-toto": IN_TOTO, "referrer": EMPTY}
            config = configs[shape]
            content["config"] = {"mediaType": config, "digest": compute_digest(f"c{n}".encode()), "size": 1}
            content["layers"] = []
            has_subject = shape == "referrer" or (shape == "in-toto" and draw(st.booleans()))
            if has_subject and subject is not None:
                content["subject"] = {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1}
        content["mediaType"] = media_type
        content["n"] = n  # distinct digests
        digest, raw = _body(content)
        manifests[digest] = Manifest.parse(raw, digest=digest, content_type=media_type)
        if "subject" not in content or shape in {"referrer", "index"}:
            may_child.append(digest)
        entry: dict[str, object] = {"digest": digest, "mediaType": media_type}
        if "config" in content:
            entry["configMediaType"] = content["config"]["mediaType"]  # type: ignore[index]
        if draw(st.integers(0, 9)) == 0:
            entry = {"digest": digest}  # the listing left the types out: read to be safe
        entry["created"] = NOW - timedelta(days=draw(st.sampled_from([1, 10, 40])))
        entry["locked"] = draw(st.integers(0, 9)) == 0
        entries.append(entry)
    digests = [str(e["digest"]) for e in entries]
    tags = {
        f"t{i}": TagNode(f"t{i}", target, NOW - timedelta(days=i))
        for i, target in enumerate(draw(st.lists(st.sampled_from(digests), max_size=4)))
    }
    return entries, manifests, tags


rules_strategy = st.builds(
    lambda keep, newest, age, untagged: ImageRule(
        repositories=["app"], keep_tags=keep, keep_newest=newest, min_age=age, untagged=untagged
    ),
    st.lists(st.sampled_from(["t0", "t1*", "*"]), max_size=1),
    st.integers(0, 2),
    st.sampled_from(["0", "7d", "30d"]),
    st.sampled_from(["delete", "keep"]),
)


@settings(max_examples=300, deadline=None)
@given(repositories(), rules_strategy)
def test_the_plan_from_lazy_reads_equals_the_plan_from_reading_everything(
    case: tuple[list[dict[str, object]], dict[str, Manifest], dict[str, TagNode]], rule: ImageRule
) -> None:
    entries, manifests, tags = case
    listed = []
    for entry in entries:
        media_type, config, references = raw_fields(entry)
        created = entry["created"]
        assert isinstance(created, datetime)
        locked = bool(entry["locked"])
        listed.append(ListedManifest(str(entry["digest"]), created, locked, media_type, config, references))
    read: list[str] = []

    def read_many(digests: Sequence[str]) -> Mapping[str, Manifest]:
        read.extend(digests)
        return {d: manifests[d] for d in digests}

    lazy = graph_from_listing("app", listed, read_many, tags)
    lazy_reads = list(read)
    full = graph_from_listing("app", listed, read_many, tags, read_everything=True)

    assert plan_repository(lazy, rule, now=NOW) == plan_repository(full, rule, now=NOW)
    assert len(lazy_reads) == len(set(lazy_reads))  # each manifest read at most once
    for entry in entries:
        if entry.get("configMediaType") in {OCI_CONFIG, DOCKER_CONFIG}:
            assert entry["digest"] not in lazy_reads, "a plain image was read"


def test_the_raw_listing_says_what_the_sdk_models_say(acr_dataplane: AcrDataPlane) -> None:  # noqa: F811
    """The backend reads the listing pages' JSON itself (through the SDK's pipeline); every
    manifest and tag, across pages, has the digest, time and lock the SDK's models give."""
    plane = acr_dataplane
    plane.page_size = 3
    repo = "team/app"  # a nested name: quoted whole in the path, as the SDK quotes it
    created = [OLD + timedelta(hours=i, microseconds=123_457 * i) for i in range(8)]
    digests = [plane.add_platform_image(repo, created=c, locked=i % 3 == 0) for i, c in enumerate(created)]
    index, _children = plane.add_index(repo, created=OLD)
    for i, digest in enumerate(digests[:5]):
        plane.tag(repo, f"v{i}", digest, updated=created[i] + timedelta(minutes=1), locked=i == 2)
    plane.tag(repo, "latest", index, updated=PASS)
    backend = AcrRetentionBackend.connect(plane.url, plane.credential, connection_verify=plane.ca_path)
    sdk = backend.client

    listed = [(m.digest, m.created, m.locked) for m in backend.list_manifests(repo)]
    expected = [
        (str(p.digest), p.created_on, p.can_delete is False or p.can_write is False)
        for p in sdk.list_manifest_properties(repo)
    ]
    assert listed == expected and len(listed) == len(digests) + 5  # the index and its four children
    assert sum(locked for _, _, locked in listed) == 3
    tags = [(t.name, t.digest, t.updated, t.locked) for t in backend.read_tags(repo)]
    assert tags == [
        (
            str(t.name),
            str(t.digest),
            t.last_updated_on or t.created_on,
            t.can_delete is False or t.can_write is False,
        )
        for t in sdk.list_tag_properties(repo)
    ]
    assert [name for name, *_ in tags] == sorted(["latest", "v0", "v1", "v2", "v3", "v4"])
    assert [locked for *_, locked in tags].count(True) == 1
    pages = [
        r
        for r in plane.requests
        if r.method == "GET" and r.path.endswith("/_manifests") and r.headers.get("authorization")
    ]
    assert len(pages) == 2 * 5  # both listings followed every Link (13 manifests, 3 a page)


def test_a_failed_listing_is_a_service_error(acr_dataplane: AcrDataPlane) -> None:  # noqa: F811
    from azure.core.exceptions import HttpResponseError

    from shared.platform.errors import is_service_error

    plane = acr_dataplane
    plane.add_platform_image("app", created=OLD)
    backend = AcrRetentionBackend.connect(plane.url, plane.credential, connection_verify=plane.ca_path)
    for read in (backend.list_manifests, backend.read_tags):
        try:
            read("missing")
        except HttpResponseError as exc:
            assert exc.status_code == 404 and is_service_error(exc)
        else:
            raise AssertionError("a 404 listing must raise")
