"""The slipway.yaml loader: problems located at file:line with the field path, defaults, settings."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from shared.model.config import (
    DEFAULT_PLATFORMS,
    ConfigError,
    ConfigProblem,
    SlipwayConfig,
    TagRule,
    config_json_schema,
    config_path,
    default_image_tags,
    load_config,
    parse_config,
)

MINIMAL = """\
registry: myregistry.azurecr.io
targets:
  - name: web
    repo: https://github.com/contoso/web
    image: contoso/web
"""


TOP_LEVEL = "the top level must be a mapping of keys (version, registry, targets, ...)"


def problems(text: str, source: str = "slipway.yaml") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(textwrap.dedent(text), source=source)
    return [str(problem) for problem in caught.value.problems]


# --- valid files and defaults ------------------------------------------------------------------


def test_minimal_file_gets_every_default() -> None:
    config = parse_config(MINIMAL, source="slipway.yaml")
    assert config.version == 1
    assert config.registry == "myregistry.azurecr.io"
    assert config.cache is None
    assert config.tools.buildkit.startswith("docker.io/moby/buildkit:")
    assert (config.run.timeout, config.run.cpu, config.run.agent_pool) == (3600, 2, None)
    (target,) = config.targets
    assert target.branches == ["main"]
    assert target.tags == [] and target.paths == [] and target.ignore_paths == []
    assert (target.context, target.dockerfile) == (".", "Dockerfile")
    assert target.platforms == DEFAULT_PLATFORMS
    assert target.image_tags == default_image_tags()
    assert (target.cache.name, target.cache.mode) == ("{target}-{branch}", "max")
    assert target.build_args == {} and target.default_branch is None and target.git_token_setting is None


def test_a_file_without_targets_is_valid() -> None:
    assert parse_config("registry: r.azurecr.io\n", source="s.yaml").targets == []


def test_full_example_from_the_readme_loads() -> None:
    config = parse_config(
        textwrap.dedent(
            """\
            version: 1
            registry: myregistry.azurecr.io
            cache:
              account_url: https://mycache.blob.core.windows.net/
              container: buildkit-cache
              prefix: ""
              auth: service-principal
            tools:
              docker_cli: docker.io/library/docker:29.0.4-cli
            run: {timeout: 7200, cpu: 2, agent_pool: null}
            targets:
              - name: web
                repo: https://github.com/contoso/web
                branches: ["main", "release/*"]
                tags: ["v*"]
                paths: ["src/**", "Dockerfile"]
                ignore_paths: ["**.md"]
                image: contoso/web
                platforms: [linux/amd64, linux/arm64, linux/arm/v7]
                build_args: {PYTHON_VERSION: "3.11"}
                image_tags:
                  - "{branch}"
                  - {template: "{version}", when: semver}
                cache: {name: "{target}-{branch}", mode: min}
                git_token_setting: GIT_TOKEN_WEB
            """
        ),
        source="s.yaml",
    )
    assert config.cache is not None and config.cache.account_url == "https://mycache.blob.core.windows.net"
    target = config.targets[0]
    assert target.image_tags == ["{branch}", TagRule(template="{version}", when="semver")]
    assert config.target("web") is target and config.target("nope") is None


def test_yaml_anchors_and_merge_keys_work() -> None:
    config = parse_config(
        textwrap.dedent(
            """\
            registry: r.azurecr.io
            targets:
              - &base {name: a, repo: https://github.com/o/a, image: o/a, platforms: [linux/amd64]}
              - {<<: *base, name: b, image: o/b}
            """
        ),
        source="s.yaml",
    )
    assert [(t.name, t.image, t.platforms) for t in config.targets] == [
        ("a", "o/a", ["linux/amd64"]),
        ("b", "o/b", ["linux/amd64"]),
    ]


# --- problems: file, line, field path ----------------------------------------------------------


def test_unknown_key_names_file_line_path_and_suggestion() -> None:
    text = MINIMAL + "    branchs: [main]\n"
    assert problems(text) == ["slipway.yaml:6: targets[0].branchs: unknown key (did you mean 'branches'?)"]


def test_unknown_key_without_a_close_match_lists_the_known_keys() -> None:
    (message,) = problems("registry: r.azurecr.io\nzzz: 1\n")
    assert message.startswith("slipway.yaml:2: zzz: unknown key (known keys: version, registry, cache,")


def test_unknown_key_inside_a_tag_rule() -> None:
    text = (
        MINIMAL + "    image_tags:\n      - '{branch}'\n      - {template: latest, whenn: default_branch}\n"
    )
    assert problems(text) == [
        "slipway.yaml:8: targets[0].image_tags[1].whenn: unknown key (did you mean 'when'?)"
    ]


def test_config_problem_fields_for_programmatic_use() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(MINIMAL + "    branchs: [main]\n", source="conf/slipway.yaml")
    assert caught.value.problems == [
        ConfigProblem(
            file="conf/slipway.yaml",
            line=6,
            path="targets[0].branchs",
            message="unknown key (did you mean 'branches'?)",
        )
    ]
    assert (
        str(caught.value) == "conf/slipway.yaml:6: targets[0].branchs: unknown key (did you mean 'branches'?)"
    )


def test_missing_required_key_points_at_its_mapping() -> None:
    text = """\
    registry: r.azurecr.io
    targets:
      - name: web
        image: contoso/web
    """
    assert problems(text) == ["slipway.yaml:3: targets[0].repo: required key is missing"]
    assert problems("version: 1\n") == ["slipway.yaml:1: registry: required key is missing"]


def test_duplicate_keys_are_refused_with_both_lines() -> None:
    text = MINIMAL + "    image: contoso/other\n"
    assert problems(text) == [
        "slipway.yaml:6: targets[0].image: duplicate key (first at line 5); YAML would keep only the last"
    ]
    assert problems("registry: a.azurecr.io\nregistry: b.azurecr.io\n") == [
        "slipway.yaml:2: registry: duplicate key (first at line 1); YAML would keep only the last"
    ]


def test_non_string_keys_are_refused() -> None:
    assert problems("registry: r.azurecr.io\n1: x\n") == [
        "slipway.yaml:2: key '1' is not a string (quote it: \"1\")"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "- a\n- b\n",
            f"slipway.yaml:1: {TOP_LEVEL}, not a list",
        ),
        (
            "just text\n",
            f"slipway.yaml:1: {TOP_LEVEL}, not the scalar 'just text'",
        ),
        ("", "slipway.yaml:1: the file is empty; at least 'registry' is required"),
        ("# only a comment\n", "slipway.yaml:1: the file is empty; at least 'registry' is required"),
    ],
)
def test_top_level_must_be_a_mapping(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_yaml_syntax_errors_carry_their_line() -> None:
    (message,) = problems("registry: r.azurecr.io\ntargets:\n  - name: [web\n")
    assert message.startswith("slipway.yaml:4: invalid YAML: ")
    (message,) = problems("registry: r.azurecr.io\ntargets:\n\t- name: web\n")
    assert message.startswith("slipway.yaml:3: invalid YAML: found character '\\t'")
    (message,) = problems("registry: a.io\n---\nregistry: b.io\n")
    assert message == "slipway.yaml:2: a second YAML document ('---'); use only one"


def test_python_tags_are_refused() -> None:
    (message,) = problems("registry: !!python/object/apply:os.system ['true']\n")
    assert message.startswith("slipway.yaml:1: invalid YAML: could not determine a constructor")


def test_numbers_where_text_is_expected_say_to_quote_them() -> None:
    text = MINIMAL + "    build_args:\n      PYTHON_VERSION: 3.10\n"
    assert problems(text) == [
        "slipway.yaml:7: targets[0].build_args.PYTHON_VERSION: expected a string, got the number 3.10; "
        'quote it ("3.10") to keep it as text'
    ]


def test_a_string_where_a_list_is_expected() -> None:
    text = MINIMAL + "    branches: main\n"
    assert problems(text) == [
        "slipway.yaml:6: targets[0].branches: expected a list, got the string 'main'; "
        "write [main] for a list of one"
    ]


def test_list_items_are_located_on_their_own_line() -> None:
    text = (
        MINIMAL
        + "    paths:\n      - src/**\n      - 42\n    platforms:\n      - linux/amd64\n      - linux/sparc\n"
    )
    assert problems(text) == [
        "slipway.yaml:8: targets[0].paths[1]: expected a string, got the number 42; "
        'quote it ("42") to keep it as text',
        "slipway.yaml:11: targets[0].platforms[1]: platform 'linux/sparc' is not os/arch[/variant] "
        "(e.g. linux/amd64, linux/arm64, linux/arm/v7)",
    ]


def test_bad_build_arg_name_points_at_its_key() -> None:
    text = MINIMAL + "    build_args:\n      OK: x\n      'NOT OK': y\n"
    assert problems(text) == [
        "slipway.yaml:8: targets[0].build_args['NOT OK']: build arg name 'NOT OK' is not a valid identifier"
    ]


def test_unknown_tag_placeholder_is_a_config_error_at_its_rule() -> None:
    text = (
        MINIMAL + "    image_tags:\n      - '{branch}'\n      - template: 'v{majr}'\n        when: semver\n"
    )
    (message,) = problems(text)
    assert message.startswith(
        "slipway.yaml:8: targets[0].image_tags[1].template: "
        "tag template 'v{majr}' uses unknown placeholder {majr}"
    )
    (message,) = problems(MINIMAL + "    image_tags: ['{brnch}']\n")
    assert message.startswith("slipway.yaml:6: targets[0].image_tags[0]: tag template '{brnch}' uses unknown")


def test_empty_tag_rule_list_is_refused() -> None:
    (message,) = problems(MINIMAL + "    image_tags: []\n")
    assert message.startswith("slipway.yaml:6: targets[0].image_tags: at least one tag rule is needed")


def test_cache_name_template_only_knows_target_and_branch() -> None:
    (message,) = problems(MINIMAL + "    cache: {name: '{target}-{ref}'}\n")
    assert message.startswith(
        "slipway.yaml:6: targets[0].cache.name: cache name template '{target}-{ref}' uses {ref}"
    )


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("name: web", "name: Web_App", "slipway.yaml:3: targets[0].name: name must be lowercase letters"),
        (
            "image: contoso/web",
            "image: Contoso/Web",
            "slipway.yaml:5: targets[0].image: image must be a repository",
        ),
        (
            "image: contoso/web",
            "image: contoso/web\n    cache: {mode: maximum}",
            "slipway.yaml:6: targets[0].cache.mode: must be one of 'min' or 'max', got the string 'maximum'",
        ),
        (
            "image: contoso/web",
            "image: contoso/web\n    git_token_setting: 'my token'",
            "slipway.yaml:6: targets[0].git_token_setting: git_token_setting must be an app setting name",
        ),
        (
            "image: contoso/web",
            "image: contoso/web\n    git_token_setting: GITHUB_WEBHOOK_SECRET",
            "slipway.yaml:6: targets[0].git_token_setting: git_token_setting must name a setting starting "
            "with GIT_TOKEN_ (e.g. GIT_TOKEN_WEB): its value is handed to the build as a secret the "
            "Dockerfile can read, so only settings that hold Git tokens may be named",
        ),
        (
            "image: contoso/web",
            "image: contoso/web\n    platforms: []",
            "slipway.yaml:6: targets[0].platforms: List should have at least 1 item",
        ),
        (
            "image: contoso/web",
            "image: contoso/web\n    cache: maximum",
            "slipway.yaml:6: targets[0].cache: expected a mapping of keys, got the string 'maximum'",
        ),
        ("image: contoso/web", "image: contoso/web\n    default_branch:", None),
    ],
)
def test_field_validators_are_located(old: str, new: str, expected: str | None) -> None:
    text = MINIMAL.replace(old, new)
    if expected is None:
        parse_config(text, source="slipway.yaml")
        return
    (message,) = problems(text)
    assert message.startswith(expected), message


def test_top_level_fields_are_checked() -> None:
    text = """\
    registry: https://myregistry.azurecr.io
    version: 2
    run:
      timeout: 10
    cache:
      account_url: ftp://cache
    """
    assert problems(text) == [
        "slipway.yaml:1: registry: registry must be a login server such as myregistry.azurecr.io",
        "slipway.yaml:2: version: must be one of 1, got the number 2",
        "slipway.yaml:4: run.timeout: must be greater than or equal to 300, got the number 10",
        "slipway.yaml:6: cache.account_url: account_url must be an http(s) URL",
    ]


def test_every_problem_is_reported_in_line_order() -> None:
    text = MINIMAL + "    branchs: [main]\n    platforms: [linux/sparc]\n  - name: api\n    image: api\n"
    assert problems(text) == [
        "slipway.yaml:6: targets[0].branchs: unknown key (did you mean 'branches'?)",
        "slipway.yaml:7: targets[0].platforms[0]: platform 'linux/sparc' is not os/arch[/variant] "
        "(e.g. linux/amd64, linux/arm64, linux/arm/v7)",
        "slipway.yaml:8: targets[1].repo: required key is missing",
    ]


def test_alias_bombs_are_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    (message,) = problems("\n".join(lines) + "\n")
    assert "expands to more than" in message


# --- unique target names -----------------------------------------------------------------------


def test_target_names_are_unique() -> None:
    text = MINIMAL + "  - name: api\n    repo: https://github.com/contoso/api\n    image: contoso/api\n"
    text += "  - name: web\n    repo: https://github.com/contoso/web2\n    image: contoso/web2\n"
    assert problems(text) == [
        "slipway.yaml:9: targets[2].name: target name 'web' is used twice (first by targets[0])"
    ]


def test_unique_names_are_enforced_without_the_loader_too() -> None:
    target = {"name": "a", "repo": "r", "image": "a"}
    with pytest.raises(ValueError, match="used twice"):
        SlipwayConfig.model_validate({"registry": "r.azurecr.io", "targets": [target, target]})


# --- load_config -------------------------------------------------------------------------------


def test_load_config_names_the_file_it_was_given(tmp_path: Path) -> None:
    path = tmp_path / "slipway.yaml"
    path.write_text(MINIMAL + "    branchs: [main]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}:6: targets[0].branchs: unknown key (did you mean 'branches'?)"


def test_load_config_reads_utf8_with_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "slipway.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_config(path).targets[0].name == "web"


def test_missing_or_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml")
    (problem,) = caught.value.problems
    assert problem.line is None and problem.file == str(tmp_path / "nope.yaml")
    assert "cannot read the file" in str(caught.value)
    (tmp_path / "latin1.yaml").write_bytes(b"registry: caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path / "latin1.yaml")


# --- SLIPWAY_CONFIG ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, "/app/slipway.yaml"),
        ({"SLIPWAY_CONFIG": ""}, "/app/slipway.yaml"),
        ({"SLIPWAY_CONFIG": "  "}, "/app/slipway.yaml"),
        ({"SLIPWAY_CONFIG": "config/prod.yaml"}, "/app/config/prod.yaml"),
        ({"SLIPWAY_CONFIG": " config/prod.yaml "}, "/app/config/prod.yaml"),
        ({"SLIPWAY_CONFIG": "/etc/slipway/slipway.yaml"}, "/etc/slipway/slipway.yaml"),
    ],
)
def test_config_path_from_settings(settings: dict[str, str], expected: str) -> None:
    assert config_path(settings, Path("/app")) == Path(expected)


def test_config_path_does_not_depend_on_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert config_path({"SLIPWAY_CONFIG": "x.yaml"}, Path("/srv/app")) == Path("/srv/app/x.yaml")


# --- JSON Schema -------------------------------------------------------------------------------


def test_config_json_schema_header() -> None:
    schema = config_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "https://slipway.dev/schemas/slipway.schema.json"
    assert schema["title"] == "Slipway configuration (slipway.yaml)"
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["registry"]
    target = schema["$defs"]["Target"]
    assert target["additionalProperties"] is False
    assert {"name", "repo", "branches", "image_tags", "platforms"} <= target["properties"].keys()


@pytest.mark.parametrize(
    "name",
    [
        # Slipway's own secrets: each would reach the Dockerfile as a readable build secret.
        "GITHUB_WEBHOOK_SECRET",
        "SLIPWAY_CACHE_ACCOUNT_KEY",
        "SLIPWAY_CACHE_CLIENT_SECRET",
        "GITHUB_STATUS_TOKEN",
        "SLIPWAY_REGISTRY_PASSWORD",
        "AzureWebJobsStorage",
        "GIT_TOKEN_",
        "MY_REPO_TOKEN",
    ],
)
def test_git_token_setting_names_only_git_token_settings(name: str) -> None:
    [problem] = problems(MINIMAL + f"    git_token_setting: {name}\n")
    assert problem.startswith("slipway.yaml:6: targets[0].git_token_setting: ")


def test_no_setting_of_slipways_own_carries_the_git_token_prefix() -> None:
    """The prefix is safe to hand to config authors only while Slipway reads nothing under it."""
    from shared.model.config import GIT_TOKEN_SETTING_PREFIX
    from tests.support.settings_read import settings_read_by_code

    own = settings_read_by_code(Path(__file__).resolve().parents[1])
    assert own, "the settings scan found nothing"
    assert not [s for s in own if s.startswith(GIT_TOKEN_SETTING_PREFIX)]


@pytest.mark.parametrize(
    "url",
    ["http://storage.internal:10000/acct", "http://10.0.0.4/acct", "http://acct.blob.core.windows.net"],
)
@pytest.mark.parametrize("auth", ["account-key", "service-principal"])
def test_plain_http_cache_urls_are_refused_off_loopback(url: str, auth: str) -> None:
    """Signatures made with the account key, or a service principal's token, would cross the
    network in clear (issue 21: credentials over plain http)."""
    text = f"registry: r.azurecr.io\ncache:\n  account_url: {url}\n  auth: {auth}\n  account_name: acct\n"
    [problem] = problems(text)
    assert "plain http only on loopback" in problem


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:10000/devstoreaccount1", "http://localhost:10000/acct", "http://[::1]:10000/acct"],
)
def test_plain_http_cache_urls_stay_allowed_on_loopback(url: str) -> None:
    config = parse_config(f"registry: r.azurecr.io\ncache:\n  account_url: {url}\n", source="s.yaml")
    assert config.cache is not None and config.cache.account_url == url
