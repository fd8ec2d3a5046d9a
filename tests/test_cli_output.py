"""The CLI's human tables: ids stay whole on one line, so they can be copied into the next command."""

from __future__ import annotations

import pytest

from shared.app.commands.output import print_table

REQUEST_ID = "azure-test.010b33d99c56bf6ebff35d0e00c6fa73"
RUN_ID = "dryrun-d811900aa1b2c3d4e5f6"


@pytest.mark.parametrize("width", ["60", "90", "200"])
def test_ids_never_wrap_however_narrow_the_terminal(
    width: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", width)
    rows = [
        {
            "request_id": REQUEST_ID,
            "target": "azure-test",
            "status": "dispatched",
            "run_id": RUN_ID,
            "ref": "refs/heads/a-rather-long-feature-branch-name",
            "created_at": "2026-12-03T22:31:10+00:00",
        }
    ]
    print_table("1 run(s)", ["request_id", "target", "status", "run_id", "ref", "created_at"], rows)
    lines = capsys.readouterr().out.splitlines()
    assert any(REQUEST_ID in line for line in lines), lines
    assert any(RUN_ID in line for line in lines), lines
    assert any("dispatch" in line for line in lines), lines  # the other columns are not squeezed away


def test_other_long_values_still_fold_to_the_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    long_ref = "refs/heads/" + "x" * 120
    print_table("t", ["request_id", "ref"], [{"request_id": REQUEST_ID, "ref": long_ref}])
    out = capsys.readouterr().out
    assert REQUEST_ID in out and long_ref not in out  # folded over several lines
    assert "x" * 5 in out


def test_optional_columns_give_way_in_order_and_are_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    row = {"request_id": REQUEST_ID, "a": "alpha", "b": "bravo", "c": "charlie", "d": "delta", "e": "echo"}
    print_table("t", ["request_id", "a", "b", "c", "d", "e"], [row], optional=["e", "d", "c"])
    captured = capsys.readouterr()
    assert REQUEST_ID in captured.out
    assert max(len(line) for line in captured.out.splitlines()) <= 80
    # 1 + (43 + 3) + 11 per other column: five others need 102, so e and d go, c stays.
    assert "e, d left out" in captured.err
    assert "charlie" in captured.out and "delta" not in captured.out and "echo" not in captured.out


def test_nothing_is_left_out_when_the_table_fits(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    row = {"request_id": REQUEST_ID, "a": "alpha", "e": "echo"}
    print_table("t", ["request_id", "a", "e"], [row], optional=["e", "a"])
    captured = capsys.readouterr()
    assert "echo" in captured.out and "alpha" in captured.out and captured.err == ""
