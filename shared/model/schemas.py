"""The committed JSON Schemas under ``schemas/``, generated from the pydantic models.

The models are the single source; the files exist for editors (``slipway.yaml``) and for
whoever produces or reads queue messages without Python (BuildRequest v1). A test compares the
files with what the models generate, so they cannot drift.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
CONFIG_SCHEMA_FILE = "slipway.schema.json"
BUILD_REQUEST_SCHEMA_FILE = "build-request.v1.schema.json"


def _config_schema() -> dict[str, Any]:
    from shared.model.config import config_json_schema

    return config_json_schema()


def _build_request_schema() -> dict[str, Any]:
    from shared.model.build_request import build_request_json_schema

    return dict(build_request_json_schema())


GENERATORS: dict[str, Callable[[], dict[str, Any]]] = {
    CONFIG_SCHEMA_FILE: _config_schema,
    BUILD_REQUEST_SCHEMA_FILE: _build_request_schema,
}


def schema_text(schema: dict[str, Any]) -> str:
    """The exact text committed for a schema: stable key order, two-space indent, final newline."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def render_schemas() -> dict[str, str]:
    """File name → the text the models generate for it."""
    return {name: schema_text(generate()) for name, generate in GENERATORS.items()}


def write_schemas(directory: Path) -> list[Path]:
    """Write every schema file into ``directory`` (created if needed); returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, text in render_schemas().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale_schemas(directory: Path) -> list[str]:
    """Names of the schema files in ``directory`` that are missing or differ from the models."""
    stale: list[str] = []
    for name, text in render_schemas().items():
        path = directory / name
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current != text:
            stale.append(name)
    return stale
