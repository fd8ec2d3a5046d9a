"""Image tag rules: placeholders, conditions, semver, sanitising (shared/model/tags.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.model.build_request import OCI_TAG_RE
from shared.model.config import TagRule, default_image_tags
from shared.model.tags import (
    PLACEHOLDERS,
    RuleTemplateError,
    SemVer,
    compute_tags,
    parse_semver,
    sanitize_tag,
    validate_rule_templates,
)

SHA = "3f5a9c1e2b4d6f8091a2b3c4d5e6f708192a3b4c"


def tags(rules: list[str | TagRule], ref: str, default_branch: str | None = "main") -> list[str]:
    return compute_tags(rules, ref=ref, commit=SHA, default_branch=default_branch)


# --- placeholders ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "ref", "expected"),
    [
        ("{branch}", "refs/heads/main", ["main"]),
        ("{branch}", "refs/tags/v1.0.0", []),
        ("{tag}", "refs/tags/v1.0.0", ["v1.0.0"]),
        ("{tag}", "refs/heads/main", []),
        ("{sha}", "refs/heads/main", [SHA]),
        ("sha-{short_sha}", "refs/heads/main", ["sha-3f5a9c1"]),
        ("sha-{short_sha}", "refs/tags/anything", ["sha-3f5a9c1"]),
        ("{version}", "refs/tags/v1.4.2", ["1.4.2"]),
        ("{version}", "refs/tags/1.4.2", ["1.4.2"]),
        ("{version}", "refs/tags/release-1", []),
        ("{version}", "refs/heads/main", []),
        ("{major}", "refs/tags/v1.4.2", ["1"]),
        ("{minor}", "refs/tags/v1.4.2", ["4"]),
        ("{patch}", "refs/tags/v1.4.2", ["2"]),
        ("v{major}.{minor}", "refs/tags/v1.4.2", ["v1.4"]),
        ("{branch}-{short_sha}", "refs/heads/feature/login", ["feature-login-3f5a9c1"]),
        ("stable", "refs/heads/main", ["stable"]),
        ("{{literal}}-{short_sha}", "refs/heads/main", ["literal--3f5a9c1"]),
    ],
)
def test_each_placeholder(template: str, ref: str, expected: list[str]) -> None:
    assert tags([template], ref) == expected


def test_a_rule_renders_only_when_every_placeholder_is_filled() -> None:
    assert tags(["{branch}-{tag}"], "refs/heads/main") == []
    assert tags(["{branch}-{tag}"], "refs/tags/v1") == []


def test_refs_that_are_neither_branch_nor_tag_only_fill_the_commit() -> None:
    rules: list[str | TagRule] = ["{branch}", "{tag}", "sha-{short_sha}"]
    assert tags(rules, "refs/pull/12/merge") == ["sha-3f5a9c1"]


# --- conditions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "ref", "applies"),
    [
        ("always", "refs/heads/dev", True),
        ("always", "refs/tags/v1.0.0", True),
        ("branch", "refs/heads/dev", True),
        ("branch", "refs/tags/v1.0.0", False),
        ("tag", "refs/tags/nightly", True),
        ("tag", "refs/heads/dev", False),
        ("default_branch", "refs/heads/main", True),
        ("default_branch", "refs/heads/dev", False),
        ("default_branch", "refs/tags/main", False),
        ("semver", "refs/tags/v1.2.3", True),
        ("semver", "refs/tags/nightly", False),
        ("semver", "refs/heads/v1.2.3", False),
    ],
)
def test_each_condition(when: str, ref: str, applies: bool) -> None:
    rule = TagRule.model_validate({"template": "x-{short_sha}", "when": when})
    assert tags([rule], ref) == (["x-3f5a9c1"] if applies else [])


def test_default_branch_none_means_no_branch_is_the_default() -> None:
    rule = TagRule(template="latest", when="default_branch")
    assert tags([rule], "refs/heads/main", default_branch=None) == []
    assert tags([rule], "refs/heads/trunk", default_branch="trunk") == ["latest"]


def test_pre_release_gets_only_version_rules() -> None:
    rules: list[str | TagRule] = [
        TagRule(template="{version}", when="semver"),
        TagRule(template="{major}.{minor}", when="semver"),
        TagRule(template="stable", when="semver"),
        "{major}.{minor}.{patch}",
        "{tag}",
        "sha-{short_sha}",
    ]
    assert tags(rules, "refs/tags/v2.0.0-rc.1") == ["2.0.0-rc.1", "v2.0.0-rc.1", "sha-3f5a9c1"]
    assert tags(rules, "refs/tags/v2.0.0") == ["2.0.0", "2.0", "stable", "v2.0.0", "sha-3f5a9c1"]


def test_major_alone_is_not_produced_for_major_zero() -> None:
    rules: list[str | TagRule] = [
        TagRule(template="{major}", when="semver"),
        TagRule(template="v{major}", when="semver"),
        TagRule(template="{major}.{minor}", when="semver"),
        TagRule(template="{version}", when="semver"),
    ]
    assert tags(rules, "refs/tags/v0.3.1") == ["0.3", "0.3.1"]
    assert tags(rules, "refs/tags/v1.3.1") == ["1", "v1", "1.3", "1.3.1"]


def test_build_metadata_is_not_part_of_version() -> None:
    assert tags(["{version}"], "refs/tags/v1.2.3+build.7") == ["1.2.3"]
    assert tags(["{tag}"], "refs/tags/v1.2.3+build.7") == ["v1.2.3-build.7"]


def test_default_rules_match_the_readme_table() -> None:
    defaults = default_image_tags()
    assert tags(defaults, "refs/heads/main") == ["main", "sha-3f5a9c1", "latest"]
    assert tags(defaults, "refs/tags/v1.4.2") == ["sha-3f5a9c1", "v1.4.2", "1.4.2", "1.4"]
    assert tags(defaults, "refs/heads/feature/login") == ["feature-login", "sha-3f5a9c1"]
    assert tags(defaults, "refs/tags/v2.0.0-rc.1") == ["sha-3f5a9c1", "v2.0.0-rc.1", "2.0.0-rc.1"]


def test_tags_are_deduplicated_in_rule_order() -> None:
    rules: list[str | TagRule] = ["{branch}", "latest", "{branch}", TagRule(template="latest", when="branch")]
    assert tags(rules, "refs/heads/latest") == ["latest"]
    assert tags(["{branch}", "feature-x"], "refs/heads/feature/x") == ["feature-x"]


def test_shell_text_in_a_ref_stays_inert() -> None:
    assert tags(["{branch}"], "refs/heads/feat/$(reboot)") == ["feat-reboot"]
    assert tags(["{tag}"], "refs/tags/`id`;rm -rf") == ["id-rm--rf"]


# --- sanitising --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("main", "main"),
        ("feature/foo", "feature-foo"),
        ("Feature_Foo.1", "Feature_Foo.1"),
        (".hidden", "hidden"),
        ("--x", "x"),
        ("-.-x", "x"),
        ("_ok", "_ok"),
        ("a//b", "a-b"),
        ("a b\tc", "a-b-c"),
        ("über", "ber"),
        ("x" * 200, "x" * 128),
        ("a" * 127 + "/b", "a" * 127),
        ("", None),
        ("///", None),
        ("...", None),
        ("é", None),
    ],
)
def test_sanitize_tag(value: str, expected: str | None) -> None:
    assert sanitize_tag(value) == expected


# --- semver ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("v1.2.3", SemVer(1, 2, 3)),
        ("1.2.3", SemVer(1, 2, 3)),
        ("v0.0.0", SemVer(0, 0, 0)),
        ("v10.20.30", SemVer(10, 20, 30)),
        ("v1.0.0-alpha", SemVer(1, 0, 0, "alpha")),
        ("v1.0.0-rc.1", SemVer(1, 0, 0, "rc.1")),
        ("1.0.0-0.3.7", SemVer(1, 0, 0, "0.3.7")),
        ("1.0.0-x-y-z.--", SemVer(1, 0, 0, "x-y-z.--")),
        ("v1.0.0+20130313144700", SemVer(1, 0, 0, None, "20130313144700")),
        ("v1.0.0-beta+exp.sha.5114f85", SemVer(1, 0, 0, "beta", "exp.sha.5114f85")),
        ("v1.2", None),
        ("v1", None),
        ("1.2.3.4", None),
        ("V1.2.3", None),
        ("vv1.2.3", None),
        ("v01.2.3", None),
        ("v1.02.3", None),
        ("v1.2.3-", None),
        ("v1.2.3-01", None),
        ("v1.2.3-a..b", None),
        ("v1.2.3+", None),
        ("v1.2.3 ", None),
        (" v1.2.3", None),
        ("v1.2.3\n", None),
        ("release-1.2.3", None),
        ("v١.2.3", None),
        ("", None),
    ],
)
def test_parse_semver(tag: str, expected: SemVer | None) -> None:
    assert parse_semver(tag) == expected


def test_semver_str_is_the_version_placeholder() -> None:
    assert str(SemVer(1, 2, 3)) == "1.2.3"
    assert str(SemVer(1, 2, 3, "rc.1", "b7")) == "1.2.3-rc.1"
    assert SemVer(1, 2, 3, "rc.1").is_prerelease
    assert not SemVer(1, 2, 3, None, "b7").is_prerelease


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6), st.booleans())
def test_semver_round_trip(major: int, minor: int, patch: int, with_v: bool) -> None:
    text = f"{major}.{minor}.{patch}"
    parsed = parse_semver(("v" if with_v else "") + text)
    assert parsed == SemVer(major, minor, patch)
    assert str(parsed) == text


# --- template validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{brnch}", "unknown placeholder {brnch}"),
        ("v{}", "unknown placeholder {}"),
        ("{0}", "unknown placeholder {0}"),
        ("{sha.__class__}", "unknown placeholder {sha.__class__}"),
        ("{sha[0]}", "unknown placeholder {sha[0]}"),
        ("{sha:.7}", "takes no format spec"),
        ("{sha!r}", "takes no format spec"),
        ("{branch", "malformed"),
        ("branch}", "malformed"),
        ("", "empty"),
        ("  ", "empty"),
    ],
)
def test_bad_templates_are_refused(template: str, fragment: str) -> None:
    with pytest.raises(RuleTemplateError) as caught:
        validate_rule_templates(["{branch}", TagRule(template=template)])
    assert fragment in str(caught.value)
    assert caught.value.index == 1
    assert isinstance(caught.value, ValueError)


def test_every_placeholder_is_accepted() -> None:
    validate_rule_templates(["{" + name + "}" for name in PLACEHOLDERS])


def test_compute_tags_refuses_bad_templates_too() -> None:
    with pytest.raises(ValueError, match=r"\{nope\}"):
        tags(["{nope}"], "refs/heads/main")


# --- properties --------------------------------------------------------------------------------

ALL_RULES: list[str | TagRule] = [
    "{branch}",
    "{tag}",
    "{sha}",
    "sha-{short_sha}",
    "{branch}-{short_sha}",
    "prefix/{tag}/suffix",
    ".{branch}.",
    "{tag}" * 20,
    TagRule(template="{version}", when="semver"),
    TagRule(template="{major}.{minor}", when="semver"),
    TagRule(template="{major}", when="semver"),
    TagRule(template="v{major}.{minor}.{patch}", when="tag"),
    TagRule(template="latest", when="default_branch"),
    TagRule(template="{branch}", when="branch"),
]

names = st.one_of(
    st.text(),
    st.text(alphabet="abcXYZ019._-/+~^:?*[]@{}\\ $()`;'\"\n\t"),
    st.from_regex(
        r"v(0|[1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,3})(-[0-9A-Za-z.-]{1,12})?",
        fullmatch=True,
    ),
)


@given(name=names, is_tag=st.booleans(), default_branch=st.one_of(st.none(), names))
def test_every_produced_tag_is_a_valid_oci_tag(name: str, is_tag: bool, default_branch: str | None) -> None:
    ref = ("refs/tags/" if is_tag else "refs/heads/") + name
    produced = compute_tags(ALL_RULES, ref=ref, commit=SHA, default_branch=default_branch)
    assert produced, "sha-{short_sha} always applies"
    for tag in produced:
        assert OCI_TAG_RE.match(tag), tag
    assert len(produced) == len(set(produced))


@given(st.text())
def test_sanitize_tag_output_is_valid_or_none(value: str) -> None:
    result = sanitize_tag(value)
    assert result is None or OCI_TAG_RE.match(result)
    if result is not None:
        assert sanitize_tag(result) == result  # idempotent


commits = st.one_of(st.none(), st.from_regex(r"[0-9a-f]{40}", fullmatch=True))


@given(
    pushes=st.lists(
        st.tuples(st.sampled_from(["main", "v1.2.3", "feat/x", "v0.1.0-rc.1"]), st.booleans(), commits),
        min_size=1,
        max_size=12,
    ),
    default_branch=st.sampled_from([None, "main", "v1.2.3"]),
)
def test_planned_tags_follow_each_commit_of_a_ref(
    pushes: list[tuple[str, bool, str | None]], default_branch: str | None
) -> None:
    """The per-ref plan is reused across pushes: each push still gets its own commit's tags,
    the same tags as a first push of that ref would get."""
    from shared.model import tags as module

    for name, is_tag, commit in pushes:
        ref = ("refs/tags/" if is_tag else "refs/heads/") + name
        planned = compute_tags(ALL_RULES, ref=ref, commit=commit, default_branch=default_branch)
        module._PLANS.clear()
        fresh = compute_tags(ALL_RULES, ref=ref, commit=commit, default_branch=default_branch)
        assert planned == fresh
        if commit is None:
            assert not any(tag.startswith("sha-") for tag in planned)
        else:
            assert f"sha-{commit[:7]}" in planned and commit in planned
        compute_tags(ALL_RULES, ref=ref, commit=commit, default_branch=default_branch)  # warm the plan


def test_a_commitless_build_after_a_push_of_the_ref_has_no_commit_tags() -> None:
    rules: list[str | TagRule] = ["{branch}", "sha-{short_sha}"]
    assert compute_tags(rules, ref="refs/heads/main", commit=SHA, default_branch="main") == [
        "main",
        "sha-3f5a9c1",
    ]
    assert compute_tags(rules, ref="refs/heads/main", commit=None, default_branch="main") == ["main"]
    other = "0" * 39 + "1"
    assert compute_tags(rules, ref="refs/heads/main", commit=other, default_branch="main") == [
        "main",
        "sha-0000000",
    ]


def test_an_empty_commit_is_no_commit() -> None:
    rules: list[str | TagRule] = ["{branch}", "sha-{short_sha}", "{sha}"]
    assert compute_tags(rules, ref="refs/heads/main", commit="", default_branch="main") == ["main"]


_templates = st.sampled_from(
    [
        *("{branch}", "{tag}", "{sha}", "sha-{short_sha}", "{branch}-{short_sha}"),
        *("{short_sha}-{branch}-{sha}",),
        *("-{sha}.", "x/{short_sha}", "{tag}-{sha}", "{version}-{short_sha}", "{major}-{sha}", "{major}"),
        *("{major}.{minor}", "{version}", "latest", "{sha}{sha}{short_sha}" * 3, "..{branch}..{sha}"),
    ]
)
_rules = st.lists(
    st.one_of(
        _templates,
        st.builds(
            TagRule,
            template=_templates,
            when=st.sampled_from(["always", "branch", "tag", "default_branch", "semver"]),
        ),
    ),
    min_size=1,
    max_size=6,
)


@given(
    rules=_rules,
    name=names,
    is_tag=st.booleans(),
    commit=st.one_of(commits, st.just("")),
    default_branch=st.one_of(st.none(), st.just("main"), names),
)
def test_planned_tags_are_each_rule_rendered_on_the_push(
    rules: list[str | TagRule], name: str, is_tag: bool, commit: str | None, default_branch: str | None
) -> None:
    """The per-ref plan (rules decided per ref, commit rules cut into pieces around {sha} and
    {short_sha}) gives what rendering every rule on the push, with all its values, gives."""
    from shared.model import tags as module

    ref = ("refs/tags/" if is_tag else "refs/heads/") + name
    push = module._describe_push(ref, default_branch)
    values = dict(push.values)
    if commit:
        values.update(sha=commit, short_sha=commit[: module.SHORT_SHA_LENGTH])
    expected: list[str] = []
    for rule in module._compiled(rules):
        raw = module._render(rule, push, values)
        tag = sanitize_tag(raw) if raw is not None else None
        if tag is not None and tag not in expected:
            expected.append(tag)
    assert compute_tags(rules, ref=ref, commit=commit, default_branch=default_branch) == expected
    assert compute_tags(rules, ref=ref, commit=commit, default_branch=default_branch) == expected  # planned
