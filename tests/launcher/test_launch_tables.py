"""The CLI's tables fit the terminal: at 60 columns long cells end in an ellipsis and the run id stays whole; at
200 nothing is cut; piped output is plain text."""

from __future__ import annotations

import pytest

from launcher.tables import render_table

HEADER = ("RUN", "RECIPE", "TARGET", "STATE", "STEP", "RESTARTS", "AGE")
RUN_ID = "verifiable-20261126-223405-f5e5"  # as launch names runs
ROWS = [(RUN_ID, "verifiable-with-a-long-recipe-name", "skypilot", "restarting", "1200/50000", "3", "2d"),
        ("baseline-20261126-000000-0000", "baseline", "local", "finished", "40/40", "0", "5m")]


@pytest.mark.parametrize("columns", [60, 200])
def test_every_line_fits_the_width_and_the_run_ids_are_whole(monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    lines = render_table(HEADER, ROWS, state_column=3).splitlines()
    assert max(map(len, lines)) <= columns
    assert lines[1].startswith(RUN_ID + " ") and lines[2].startswith("baseline-20261126-000000-0000 ")


def test_a_narrow_terminal_cuts_long_cells_with_an_ellipsis(monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    assert "…" in render_table(HEADER, ROWS).splitlines()[1]


def test_a_wide_terminal_cuts_nothing(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    lines = render_table(HEADER, ROWS).splitlines()
    assert [line.split() for line in lines] == [list(HEADER), *[list(row) for row in ROWS]]


def test_a_run_id_wider_than_the_terminal_is_still_whole(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    long_id = "a-very-long-run-id-somebody-chose-20261126-223405"
    assert render_table(HEADER, [(long_id, *ROWS[0][1:])]).splitlines()[1].startswith(long_id + " ")


def test_piped_output_is_plain_and_uncut(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    text = render_table(HEADER, ROWS * 3, state_column=3)
    assert "\x1b[" not in text and "…" not in text
    assert text.splitlines()[1].split() == list(ROWS[0])
