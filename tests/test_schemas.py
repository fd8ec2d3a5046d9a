"""The committed schemas match the models; the examples are valid and consistent with each other."""

from __future__ import annotations

import json
from pathlib import Path

from shared.intake.routing import request_for_commit
from shared.model.build_request import OCI_TAG_RE, BuildRequest, build_request_json_schema
from shared.model.config import config_json_schema, load_config
from shared.model.schemas import (
    BUILD_REQUEST_SCHEMA_FILE,
    CONFIG_SCHEMA_FILE,
    SCHEMA_DIR,
    render_schemas,
    stale_schemas,
    write_schemas,
)
from shared.model.tags import compute_tags

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = ROOT / "examples" / "slipway.yaml"
EXAMPLE_REQUEST = ROOT / "examples" / "build-request.json"


def test_committed_schemas_match_the_models() -> None:
    assert SCHEMA_DIR == ROOT / "schemas"
    stale = stale_schemas(SCHEMA_DIR)
    assert not stale, (
        f"schemas/{', schemas/'.join(stale)} differ from what the models generate: "
        "run `slipway config schema --write` and commit the result"
    )


def test_committed_schemas_are_the_generated_documents() -> None:
    assert json.loads((SCHEMA_DIR / CONFIG_SCHEMA_FILE).read_text()) == config_json_schema()
    assert json.loads((SCHEMA_DIR / BUILD_REQUEST_SCHEMA_FILE).read_text()) == build_request_json_schema()


def test_write_schemas_then_nothing_is_stale(tmp_path: Path) -> None:
    directory = tmp_path / "out"
    written = write_schemas(directory)
    assert sorted(p.name for p in written) == sorted([CONFIG_SCHEMA_FILE, BUILD_REQUEST_SCHEMA_FILE])
    assert stale_schemas(directory) == []
    for path in written:
        schema = json.loads(path.read_text())
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"] and schema["title"]
        assert path.read_text().endswith("}\n")
    (directory / CONFIG_SCHEMA_FILE).write_text("{}\n")
    (directory / BUILD_REQUEST_SCHEMA_FILE).unlink()
    assert sorted(stale_schemas(directory)) == sorted([CONFIG_SCHEMA_FILE, BUILD_REQUEST_SCHEMA_FILE])


def test_rendering_is_deterministic() -> None:
    assert render_schemas() == render_schemas()


# --- examples/slipway.yaml ---------------------------------------------------------------------


def test_example_config_is_valid_and_realistic() -> None:
    config = load_config(EXAMPLE_CONFIG)
    assert config.registry == "slipway.azurecr.io"
    assert config.cache is not None
    assert config.cache.account_url.startswith("http://127.0.0.1:10000/")
    public, filtered = config.targets
    assert public.repo.startswith("https://github.com/")
    assert public.platforms == ["linux/amd64", "linux/arm64"]
    assert "image_tags" not in public.model_fields_set  # the default tag rules
    assert filtered.paths and filtered.ignore_paths
    assert filtered.tags == ["v*"]
    assert filtered.build_args


def test_example_config_points_editors_at_the_committed_schema() -> None:
    first_line = EXAMPLE_CONFIG.read_text().splitlines()[0]
    assert first_line == "# yaml-language-server: $schema=../schemas/slipway.schema.json"
    assert (EXAMPLE_CONFIG.parent / "../schemas/slipway.schema.json").resolve().is_file()


def test_example_config_tags() -> None:
    config = load_config(EXAMPLE_CONFIG)
    filtered = config.targets[1]
    sha = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
    produced = compute_tags(filtered.image_tags, ref="refs/tags/v1.4.2", commit=sha, default_branch="master")
    assert produced == ["sha-6113728", "1.4.2", "1.4", "v1"]


# --- examples/build-request.json ---------------------------------------------------------------


def test_example_build_request_is_valid() -> None:
    text = EXAMPLE_REQUEST.read_text()
    request = BuildRequest.from_json(text)
    assert json.loads(request.to_json()) == json.loads(text)  # complete: nothing left to defaults
    assert all(OCI_TAG_RE.match(tag) for tag in request.image.tags)


def test_example_build_request_is_what_the_example_config_produces() -> None:
    """The example message is the one the router builds for that push, so the two cannot drift."""
    request = BuildRequest.from_json(EXAMPLE_REQUEST.read_text())
    config = load_config(EXAMPLE_CONFIG)
    target = config.target(request.target)
    assert target is not None
    rebuilt = request_for_commit(
        config,
        target,
        ref=request.source.ref,
        commit=request.source.commit,
        repo_url=request.source.repo_url,
        trigger=request.trigger,
        default_branch="master",
    )
    assert rebuilt == request, (
        "examples/build-request.json no longer matches what shared.intake.routing builds for that push; "
        "regenerate it with request_for_commit (see this test) if the change is intended"
    )
