"""Hypothesis strategies shared by the receivers' fuzz tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=24),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if prefix:
        yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def json_mutations(sample: bytes) -> st.SearchStrategy[bytes]:
    """The sample with one field, at any depth, replaced by any JSON value."""

    def build(path: tuple[Any, ...], value: Any) -> bytes:
        document = json.loads(sample)
        node = document
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return json.dumps(document).encode()

    return st.builds(build, st.sampled_from(list(_paths(json.loads(sample)))), JSON_VALUES)


def nested(depth: int, kind: str = "[") -> bytes:
    """A JSON value nested ``depth`` containers deep: ``[[...]]`` or ``{"a":{"a":...}}``."""
    if kind == "[":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"null" + b"}" * depth


def with_field(sample: bytes, name: str, raw_value: bytes) -> bytes:
    """``sample`` (a JSON object) with one more top-level field whose value is ``raw_value`` verbatim."""
    document = sample.rstrip()
    assert document.endswith(b"}")
    return document[:-1] + b',"' + name.encode() + b'":' + raw_value + b"}"
