from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.intake.routing import SKIP_DIRECTIVES, request_for_commit, route_push, validated_request
from shared.model.build_request import BuildRequest, Trigger, request_id
from shared.model.config import SlipwayConfig
from shared.model.events import PushEvent
from shared.model.repo_urls import normalize_repo
from shared.model.tags import compute_tags

NOW = datetime(2026, 11, 23, tzinfo=UTC)
SHA = "c72d62bc41d8c5a3fc4b8ab4e6b8ae3d2ea1d6d6"


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/Octo/Repo",
        "https://github.com/octo/repo.git",
        "https://github.com/octo/repo/",
        "git@github.com:octo/repo.git",
        "ssh://git@github.com/octo/repo.git",
        "git://github.com/octo/repo.git",
        "http://github.com/octo/repo",
        "github.com/octo/repo",
    ],
)
def test_every_url_form_of_a_repository_matches(url: str) -> None:
    assert normalize_repo(url) == "github.com/octo/repo"


def test_different_repositories_do_not_match() -> None:
    assert normalize_repo("https://github.com/octo/repo") != normalize_repo("https://github.com/octo/repo2")
    assert normalize_repo("https://github.com/octo/repo") != normalize_repo("https://gitlab.com/octo/repo")


def _config(**target: object) -> SlipwayConfig:
    base: dict[str, object] = {"name": "app", "repo": "git@github.com:octo/repo.git", "image": "team/app"}
    base.update(target)
    return SlipwayConfig.model_validate({"registry": "r.azurecr.io", "targets": [base]})


def _event(ref: str = "refs/heads/main", **kw: object) -> PushEvent:
    fields: dict[str, object] = {
        "provider": "github",
        "delivery_id": "d1",
        "received_at": NOW,
        "repo_urls": ("https://github.com/octo/repo.git",),
        "clone_url": "https://github.com/octo/repo.git",
        "ref": ref,
        "after": SHA,
        "default_branch": "main",
        "changed_files": frozenset({"src/app.py"}),
    }
    fields.update(kw)
    return PushEvent(**fields)  # type: ignore[arg-type]


def test_branch_globs() -> None:
    config = _config(branches=["main", "release/*"])
    assert route_push(_event("refs/heads/release/1.2"), config, correlation_id="c").accepted
    out = route_push(_event("refs/heads/release/1/2"), config, correlation_id="c")
    assert not out.accepted and "does not match" in out.ignored[0].reason


def test_tags_are_not_built_unless_asked() -> None:
    assert not route_push(_event("refs/tags/v1.0.0"), _config(), correlation_id="c").accepted
    out = route_push(_event("refs/tags/v1.2.3"), _config(tags=["v*"]), correlation_id="c")
    [request] = out.accepted
    assert request.trigger.kind == "tag"
    assert {"v1.2.3", "1.2.3", "1.2"} <= set(request.image.tags)


def test_paths_and_ignore_paths() -> None:
    assert route_push(_event(), _config(paths=["src/**"]), correlation_id="c").accepted
    assert not route_push(_event(), _config(paths=["docs/**"]), correlation_id="c").accepted
    assert not route_push(_event(), _config(ignore_paths=["src/**"]), correlation_id="c").accepted


def test_unknown_changed_files_build_and_say_so() -> None:
    out = route_push(
        _event(changed_files=None, incomplete_reason="new ref"),
        _config(paths=["docs/**"]),
        correlation_id="c",
    )
    assert out.accepted
    assert "paths filter not applied" in out.notes[0]


@pytest.mark.parametrize("message", ["fix [skip ci]", "[CI SKIP] docs", "x [no ci]", "[skip actions] y"])
def test_skip_directives(message: str) -> None:
    out = route_push(_event(head_message=message), _config(), correlation_id="c")
    assert not out.accepted and "contains" in out.ignored[0].reason


def test_request_fields() -> None:
    [request] = route_push(_event(), _config(build_args={"A": "1"}), correlation_id="corr").accepted
    assert request.source.commit == SHA
    assert request.source.ref == "refs/heads/main"
    assert request.trigger.correlation_id == "corr"
    assert request.image.registry == "r.azurecr.io"
    assert "latest" in request.image.tags and "main" in request.image.tags
    assert request.cache.name == "app-main"
    assert request.coalesce_key == "app:refs/heads/main"
    assert request.platforms == ["linux/amd64", "linux/arm64"]


def test_feature_branch_imports_default_branch_cache() -> None:
    [request] = route_push(_event("refs/heads/feat/x"), _config(branches=["**"]), correlation_id="c").accepted
    assert request.cache.name == "app-feat-x"
    assert request.cache.from_names == ["app-main"]
    assert "latest" not in request.image.tags
    assert "feat-x" in request.image.tags


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("git@github.com:Octo/Repo.git", "https://github.com/Octo/Repo.git"),
        ("https://GitHub.com/Octo/Repo", "https://github.com/Octo/Repo.git"),
        ("ssh://git@github.com/Octo/Repo.git", "https://github.com/Octo/Repo.git"),
        ("github.com/Octo/Repo/", "https://github.com/Octo/Repo.git"),
        ("http://gitea.example:3000/Team/App", "https://gitea.example:3000/Team/App.git"),
        ("ssh://git@gitlab.example.com:2222/Group/App.git", "https://gitlab.example.com/Group/App.git"),
        # Azure DevOps clone URLs carry no .git: MicrosoftDocs/azure-devops-docs
        # docs/repos/git/clone.md (``git clone https://dev.azure.com/fabrikam/DefaultCollection/_git/Fabrikam``).
        (
            "https://dev.azure.com/fabrikam/DefaultCollection/_git/Fabrikam",
            "https://dev.azure.com/fabrikam/DefaultCollection/_git/Fabrikam",
        ),
        ("https://org@dev.azure.com/org/Proj/_git/App/", "https://dev.azure.com/org/Proj/_git/App"),
    ],
)
def test_https_clone_url_keeps_the_path_case(url: str, expected: str) -> None:
    from shared.model.repo_urls import https_clone_url

    assert https_clone_url(url) == expected


@pytest.mark.parametrize(
    "ref",
    [
        "refs/heads/main",
        "refs/heads/feat/$(reboot)",
        "refs/tags/v1.2.3",
        "refs/heads/a-b_c.d",
        "refs/heads/ü",
    ],
)
def test_valid_refs(ref: str) -> None:
    from shared.intake.routing import is_valid_ref

    assert is_valid_ref(ref)


@pytest.mark.parametrize(
    "ref",
    [
        "refs/heads/main\n",
        "refs/heads/a b",
        "refs/heads/a..b",
        "refs/heads/.hidden",
        "refs/heads/x.lock",
        "refs/heads/x/",
        "refs/heads/a~1",
        "refs/heads/a^",
        "refs/heads/a:b",
        "refs/heads/a*",
        "refs/heads/a[b",
        "refs/heads/a\\b",
        "refs/heads/a@{1}",
        "refs/heads//a",
        "refs/pull/1/head",
        "main",
    ],
)
def test_invalid_refs_are_ignored_with_a_reason(ref: str) -> None:
    from shared.intake.routing import is_valid_ref

    assert not is_valid_ref(ref)
    out = route_push(_event(ref), _config(branches=["**"], tags=["**"]), correlation_id="c")
    assert not out.accepted
    assert out.ignored[0].reason == "ref is not a valid Git branch or tag name"


def test_a_malformed_url_in_a_payload_matches_nothing_and_does_not_crash() -> None:
    assert normalize_repo("http://[abc") == "http://[abc"
    out = route_push(
        _event(repo_urls=("http://[abc", "https://github.com/octo/repo.git")), _config(), correlation_id="c"
    )
    assert out.accepted


# --- per-ref prototypes -------------------------------------------------------------------------

_kinds = st.sampled_from(["push", "tag", "base-image", "schedule", "manual", "replay"])
_commits = st.one_of(st.none(), st.from_regex(r"[0-9a-f]{40}", fullmatch=True), st.sampled_from(["", "XYZ"]))


@given(
    builds=st.lists(
        st.tuples(
            st.sampled_from(["refs/heads/main", "refs/heads/feat/x", "refs/tags/v1.2.3"]),
            _commits,
            _kinds,
            st.sampled_from(["https://github.com/octo/repo.git", "https://github.com/octo/Repo.git"]),
            st.sampled_from([(), ("sha256:" + "a" * 64,)]),
        ),
        min_size=1,
        max_size=10,
    )
)
def test_a_request_derived_from_the_refs_prototype_is_what_full_validation_gives(
    builds: list[tuple[str, str | None, str, str, tuple[str, ...]]],
) -> None:
    """request_for_commit validates once per ref and derives the next pushes' requests: each must
    equal a full validation pass over the same data, and be refused exactly when that is."""
    config = _config(platforms=["linux/amd64", "linux/arm64"], build_args={"A": "1"}, tags=["v*"])
    target = config.targets[0]
    for ref, commit, kind, repo_url, id_parts in builds:
        trigger = Trigger.model_validate(
            {"kind": kind, "provider": "test", "received_at": NOW, "correlation_id": "c"}
        )
        try:
            derived = request_for_commit(
                config,
                target,
                ref=ref,
                commit=commit,
                repo_url=repo_url,
                trigger=trigger,
                default_branch="main",
                id_parts=id_parts,
            )
        except ValueError as exc:
            derived_error: Exception | None = exc
        else:
            derived_error = None
        tags = compute_tags(target.image_tags, ref=ref, commit=commit, default_branch="main")
        build_id = request_id(target.name, ref, commit or "", ",".join(target.platforms), *id_parts)
        try:
            full = validated_request(
                config,
                target,
                build_id=build_id,
                ref=ref,
                commit=commit,
                tags=tags,
                repo_url=repo_url,
                trigger=trigger,
                default_branch="main",
            )
        except ValueError:
            assert derived_error is not None, "derived a request that validation refuses"
            continue
        assert derived_error is None, derived_error
        assert derived.model_dump() == full.model_dump()
        assert derived == BuildRequest.model_validate_json(derived.to_json())


def test_a_derived_request_shares_nothing_mutable_with_its_prototype() -> None:
    """derive copies the prototype's parts (request_prototypes._replaced): the derived request has
    the fields the prototype's validation pass set, and building it leaves the prototype as it was."""
    config = _config()
    target = config.targets[0]
    trigger = Trigger(kind="push", provider="test", received_at=NOW, correlation_id="c")
    first = request_for_commit(
        config, target, ref="refs/heads/main", commit=SHA, repo_url="https://x.test/r.git", trigger=trigger
    )
    before = first.model_dump()
    other = "d" * 40
    derived = request_for_commit(
        config, target, ref="refs/heads/main", commit=other, repo_url="https://x.test/r.git", trigger=trigger
    )
    assert first.model_dump() == before
    assert derived.source.commit == other and first.source.commit == SHA
    assert derived.image.tags is not first.image.tags
    # The first request of a ref is the prototype, a full validation pass: the same fields are set.
    for made, validated in ((derived, first), (derived.source, first.source), (derived.image, first.image)):
        assert made.model_fields_set == validated.model_fields_set
        assert made.model_fields_set is not validated.model_fields_set
        assert made.__pydantic_extra__ is None and made.__pydantic_private__ is None


def test_prototypes_belong_to_their_configuration() -> None:
    """A reloaded configuration (a new object) never gets a request shaped by the old one."""
    trigger = Trigger(kind="push", provider="test", received_at=NOW, correlation_id="c")
    old, new = _config(platforms=["linux/amd64"]), _config(platforms=["linux/arm64"], dockerfile="Other")
    for config in (old, new, old):
        request = request_for_commit(
            config,
            config.targets[0],
            ref="refs/heads/main",
            commit=SHA,
            repo_url="https://x.test/r.git",
            trigger=trigger,
        )
        assert request.platforms == list(config.targets[0].platforms)
        assert request.source.dockerfile == config.targets[0].dockerfile


def test_route_plans_belong_to_their_configuration() -> None:
    """Routing caches what the repository and ref decide per configuration object: a reloaded
    configuration routes by its own targets, and the old one keeps routing by its own."""
    builds_main, builds_release = _config(branches=["main"]), _config(branches=["release/*"])
    elsewhere = _config(repo="https://github.com/octo/other")
    for _ in range(2):
        assert route_push(_event(), builds_main, correlation_id="c").accepted
        ignored = route_push(_event(), builds_release, correlation_id="c").ignored
        assert [i.reason for i in ignored] == ["branch 'main' does not match ['release/*']"]
        assert route_push(_event(), elsewhere, correlation_id="c").ignored[0].target is None


def test_a_request_clones_the_configured_repo_whatever_the_event_says() -> None:
    # The event routes on any of its URLs; its clone_url is never what is built.
    event = _event(
        repo_urls=("https://github.com/octo/repo.git",), clone_url="https://attacker.example/octo/repo.git"
    )
    [request] = route_push(event, _config(repo="git@github.com:Octo/Repo.git"), correlation_id="c").accepted
    assert request.source.repo_url == "https://github.com/Octo/Repo.git"


# --- skip directives ----------------------------------------------------------------------------

_message_parts = st.sampled_from(
    [
        *("[skip ci]", "[SKIP CI]", "[Ci Skip]", "[no ci]", "[skip actions]", "[actions skip]", "skip ci"),
        *("[", "]", "[skip", "ci]", " ", "\n", "İ", "ẞ", "fix: ", "[no", "Σ"),
    ]
)


@given(st.lists(st.one_of(_message_parts, st.text(max_size=8)), max_size=8).map("".join))
def test_a_skip_directive_is_found_wherever_it_is_in_any_case(message: str) -> None:
    """The shortcut for messages without "[" (routing._skip_directive) finds exactly what a case-
    insensitive search for each directive, in order, finds."""
    lowered = message.lower()
    expected = next((d for d in SKIP_DIRECTIVES if d in lowered), None)
    event = _event(head_message=message)
    ignored = route_push(event, _config(), correlation_id="c").ignored
    if expected is None:
        assert not any("head commit message" in i.reason for i in ignored)
    else:
        assert [i.reason for i in ignored] == [f"head commit message contains {expected}"]


def test_a_routed_push_carries_the_trigger_its_model_validates() -> None:
    """route_push validates the trigger through the model's validator: the same value, fields and
    refusals as ``Trigger(...)``."""
    [request] = route_push(_event(), _config(), correlation_id="c-1", received_at=NOW).accepted
    expected = Trigger(
        kind="push", provider="github", delivery_id="d1", received_at=NOW, correlation_id="c-1"
    )
    assert type(request.trigger) is Trigger
    assert request.trigger == expected
    assert request.trigger.model_fields_set == expected.model_fields_set
    with pytest.raises(ValidationError):
        route_push(_event(delivery_id=12), _config(), correlation_id="c")
    with pytest.raises(ValidationError):
        route_push(_event(), _config(), correlation_id="c", received_at="not a time")  # type: ignore[arg-type]
