"""pydantic's validation errors turned into messages at document paths, for ``file:line`` reports.

pydantic locates an error by model structure (union member names, ``[key]`` for a mapping key)
and words it for programmers; an operator needs the path as written in ``slipway.yaml`` and what
to change. ``validation_messages`` follows the models' annotations to get the first, and
rewords the common error kinds for the second.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from shared.model.config.base import LocatedValueError
from shared.model.config.problems import FieldPath, PathPart, Position
from shared.model.config.slipway_config import SlipwayConfig


@dataclass
class _Located:
    path: FieldPath
    container: Any  # the annotation the last path part was looked up in
    wrong_union_branch: bool = False
    dict_key: bool = False


def _unwrap_optional(annotation: Any) -> Any:
    if _is_union(annotation):
        members = [m for m in typing.get_args(annotation) if m is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _union_tag(member: Any) -> str:
    """The name pydantic puts in an error location for a union member (``str``, ``TagRule``)."""
    return str(member.__name__) if isinstance(member, type) else repr(member)


def _lookup(data: Any, path: FieldPath) -> Any:
    for part in path:
        in_mapping = isinstance(data, Mapping) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if not (in_mapping or in_list):
            return None
        data = data[part]
    return data


def _locate(loc: tuple[PathPart, ...], data: Any) -> _Located:
    """Turn a pydantic error location into a document path, following the model's annotations.

    pydantic inserts the member name of a union (``image_tags[0].TagRule.when``) and ``[key]`` for
    a mapping key; neither is part of the document. An error from the union member that does not
    fit the value's kind (the ``str`` branch for a mapping) is flagged so it can be dropped.
    """
    annotation: Any = SlipwayConfig
    container: Any = None
    path: list[PathPart] = []
    located = _Located(path=(), container=None)
    index = 0
    while index < len(loc):
        part = loc[index]
        annotation = _unwrap_optional(annotation)
        origin = typing.get_origin(annotation)
        if _is_union(annotation):
            member = next((m for m in typing.get_args(annotation) if _union_tag(m) == part), None)
            if member is not None:
                value = _lookup(data, tuple(path))
                if _is_model(member) != isinstance(value, Mapping):
                    located.wrong_union_branch = True
                annotation = member
                index += 1
                continue
            annotation = None
            continue
        container = annotation
        path.append(part)
        if _is_model(annotation) and isinstance(part, str) and part in annotation.model_fields:
            annotation = annotation.model_fields[part].annotation
        elif origin is list and isinstance(part, int):
            annotation = typing.get_args(annotation)[0]
        elif origin is dict:
            if index + 1 < len(loc) and loc[index + 1] == "[key]":
                located.dict_key = True
                index += 1
                annotation = typing.get_args(annotation)[0]
            else:
                annotation = typing.get_args(annotation)[1]
        else:
            annotation = None
        index += 1
    located.path = tuple(path)
    located.container = container
    return located


def _describe(value: Any, text: str | None) -> str:
    shown = text if text is not None else repr(value)
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return f"the boolean {shown}"
    if isinstance(value, int | float):
        return f"the number {shown}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {shown}"


# (model, old key) -> new key: the close-match hint would name the wrong section for these.
_RENAMED_KEYS = {("SlipwayConfig", "tool_images"): "tools"}


def _unknown_key_message(key: PathPart, container: Any) -> str:
    import difflib

    if not _is_model(container):
        return "unknown key"
    renamed = _RENAMED_KEYS.get((container.__name__, str(key)))
    if renamed is not None:
        return f"unknown key: it is now {renamed!r}"
    fields = list(container.model_fields)
    close = difflib.get_close_matches(str(key), fields, n=1, cutoff=0.6)
    if close:
        return f"unknown key (did you mean {close[0]!r}?)"
    return f"unknown key (known keys: {', '.join(fields)})"


def _message(error: Mapping[str, Any], located: _Located, position: Position | None) -> str:
    kind = error["type"]
    value = error.get("input")
    text = position.text if position is not None and not located.dict_key else None
    got = _describe(value, text)
    quote_hint = (
        f'; quote it ("{text if text is not None else value}") to keep it as text'
        if isinstance(value, bool | int | float)
        else ""
    )
    what = "a string key" if located.dict_key else "a string"
    if kind == "extra_forbidden":
        return _unknown_key_message(located.path[-1] if located.path else "", located.container)
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        cause = error.get("ctx", {}).get("error")
        return str(cause) if cause is not None else str(error["msg"]).removeprefix("Value error, ")
    if kind == "string_type":
        return f"expected {what}, got {got}{quote_hint}"
    if kind == "list_type":
        hint = f"; write [{value}] for a list of one" if isinstance(value, str) else ""
        return f"expected a list, got {got}{hint}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping of keys, got {got}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {got}"
    if kind == "literal_error":
        allowed = error.get("ctx", {}).get("expected", "")
        return f"must be one of {allowed}, got {got}"
    message = str(error["msg"]).replace("Input should be", "must be")
    return f"{message}, got {got}" if value is not None and not isinstance(value, Mapping | list) else message


def validation_messages(
    exc: ValidationError,
    data: Any,
    positions: Mapping[FieldPath, Position],
    odd_key_parents: set[FieldPath],
) -> Iterator[tuple[FieldPath, str]]:
    """(path, message) for each pydantic error, minus those the tree walk has already explained."""
    seen: set[tuple[FieldPath, str]] = set()
    for error in exc.errors(include_url=False):
        loc: tuple[PathPart, ...] = tuple(error["loc"])
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, LocatedValueError):
            loc = (*loc, *cause.at)
        located = _locate(loc, data)
        if located.wrong_union_branch:
            continue
        if error["type"] == "invalid_key" and located.path[:-1] in odd_key_parents:
            continue
        message = _message(error, located, positions.get(located.path))
        if (located.path, message) not in seen:
            seen.add((located.path, message))
            yield located.path, message
