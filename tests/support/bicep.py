"""Reading Bicep files with the tree-sitter-bicep grammar, for tests that compare the template
with the code (no Bicep CLI or Azure account needed)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path

import tree_sitter
import tree_sitter_bicep


@cache
def _parser() -> tree_sitter.Parser:
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_bicep.language()))


def parse(path: Path) -> tree_sitter.Node:
    return _parser().parse(path.read_bytes()).root_node


def walk(node: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
    yield node
    for child in node.children:
        yield from walk(child)


def problems(node: tree_sitter.Node) -> list[str]:
    """Every ERROR or MISSING node, as ``line:column: text``."""
    return [
        f"{n.start_point[0] + 1}:{n.start_point[1] + 1}: {'missing' if n.is_missing else 'error'} "
        f"{(n.text or b'').decode(errors='replace')[:60]!r}"
        for n in walk(node)
        if n.is_error or n.is_missing
    ]


def text(node: tree_sitter.Node) -> str:
    return (node.text or b"").decode()


def declaration(root: tree_sitter.Node, kind: str, name: str) -> tree_sitter.Node:
    """The ``param``/``var``/``resource``/``output`` declaration called ``name``."""
    for child in root.named_children:
        if child.type == f"{kind}_declaration" and text(child.named_children[0]) == name:
            return child
    raise KeyError(f"no {kind} {name!r}")


def declarations(root: tree_sitter.Node, kind: str) -> list[tree_sitter.Node]:
    return [child for child in root.named_children if child.type == f"{kind}_declaration"]


def body(node: tree_sitter.Node) -> tree_sitter.Node:
    """The object a declaration assigns (through an ``if (...)`` condition)."""
    for child in node.named_children:
        if child.type == "object":
            return child
        if child.type == "if_statement":
            return body(child)
    raise KeyError(f"{text(node)[:40]!r} has no object body")


def properties(obj: tree_sitter.Node) -> dict[str, tree_sitter.Node]:
    """An object literal's keys (identifiers or quoted) and value nodes."""
    found: dict[str, tree_sitter.Node] = {}
    for prop in obj.named_children:
        if prop.type == "object_property":
            key, value = prop.named_children[0], prop.named_children[-1]
            found[str(literal(key)) if key.type == "string" else text(key)] = value
    return found


def literal(node: tree_sitter.Node) -> str | int | bool:
    """A string without interpolation, a number or a boolean."""
    if node.type == "string":
        parts = node.named_children
        if any(part.type != "string_content" for part in parts):
            raise ValueError(f"not a literal string: {text(node)}")
        return "".join(text(part) for part in parts)
    if node.type == "number":
        return int(text(node))
    if node.type == "boolean":
        return text(node) == "true"
    raise ValueError(f"not a literal: {node.type} {text(node)[:40]!r}")


def strings(node: tree_sitter.Node) -> list[str]:
    """The literal strings of an array literal."""
    return [str(literal(item)) for item in node.named_children if item.type == "string"]
