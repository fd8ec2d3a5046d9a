"""`slipway config validate` on hostile YAML: one located problem and exit 1, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.model.config import ConfigError, parse_config

SLIPWAY = Path(sys.executable).with_name("slipway")
HEAD = "registry: slipway.azurecr.io\n"


def _flow(depth: int, kind: str) -> str:
    return "[" * depth + "]" * depth if kind == "[" else "{a: " * depth + "1" + "}" * depth


def _block(depth: int, kind: str) -> str:
    if kind == "-":
        return "".join(" " * i + "-\n" for i in range(depth))
    return "".join(" " * i + f"k{i}:\n" for i in range(depth))


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="slipway.yaml")
    return [str(problem) for problem in caught.value.problems]


def test_validate_a_file_nested_5000_deep_and_one_with_a_nul(tmp_path: Path) -> None:
    files = {
        "deep.yaml": HEAD + "targets: " + _flow(5000, "[") + "\n",
        "nul.yaml": HEAD + "targets:\n  - name: a\x00b\n",
    }
    expected = {
        "deep.yaml": "deep.yaml:2: invalid YAML: nested deeper than",
        "nul.yaml": "nul.yaml:3: character U+0000 is not allowed in YAML text",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        out = subprocess.run(
            [str(SLIPWAY), "config", "validate", name],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 1, out
        assert "Traceback" not in out.stderr + out.stdout
        assert expected[name] in out.stdout + out.stderr


@settings(max_examples=40, deadline=None)
@given(
    depth=st.integers(min_value=65, max_value=5000),
    style=st.sampled_from([(_flow, "["), (_flow, "{"), (_block, "-"), (_block, "k")]),
)
def test_fuzz_any_deep_document_is_one_located_problem(depth: int, style: tuple[object, str]) -> None:
    build, kind = style
    body = build(depth, kind)  # type: ignore[operator]
    text = HEAD + (
        "t: " + body + "\n"
        if build is _flow
        else "t:\n" + "".join("  " + line + "\n" for line in body.splitlines())
    )
    [problem] = _problems(text)
    assert "nested deeper than" in problem and problem.startswith("slipway.yaml:")


@settings(max_examples=60, deadline=None)
@given(
    char=st.characters(codec="utf-8", categories=["Cc", "Cs", "Co", "Cn"], exclude_characters="\t\n\r\x85"),
    line=st.integers(min_value=0, max_value=2),
)
def test_fuzz_a_control_character_is_located_not_raised(char: str, line: int) -> None:
    lines = [HEAD.rstrip("\n"), "targets:", "  - name: web"]
    lines[line] += char
    try:
        parse_config("\n".join(lines) + "\n", source="slipway.yaml")
    except ConfigError as exc:
        assert all(str(p).startswith("slipway.yaml") for p in exc.problems)
