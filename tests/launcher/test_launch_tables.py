"""The CLI's tables fit the terminal: at 60 columns long cells end in an ellipsis and the run id stays whole; at
200 nothing is cut; piped output is plain text."""

from __future__ import annotations

import pytest

from launcher.views.tables import render_table

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


# --- narrow terminals: the least important columns go first, the run id, state and step stay whole ------------------

def _columns(line: str) -> list[str]:
    return line.split()


@pytest.mark.parametrize("columns, kept", [
    (80, ["RUN", "RECIPE", "TARGET", "STATE", "STEP"]),  # restarts, then age, go first
    (60, ["RUN", "STATE", "STEP"])])  # then the recipe (the run id starts with it), then the target
def test_status_drops_its_least_important_columns_before_cutting(monkeypatch, columns, kept):
    from launcher.sweeps.status import status_header

    monkeypatch.setenv("COLUMNS", str(columns))
    lines = render_table(status_header(), ROWS, state_column=3).splitlines()
    assert max(map(len, lines)) <= columns
    assert _columns(lines[0]) == kept
    for line, row in zip(lines[1:], ROWS):
        run_id, state, step = row[0], row[3], row[4]
        assert line.startswith(run_id + " ") and f" {state} " in line and line.endswith(f" {step}")


def test_status_with_projects_and_who_drops_who_before_project(monkeypatch):
    from launcher.sweeps.status import status_header

    monkeypatch.setenv("COLUMNS", "72")
    rows = [(row[0], "team-project", *row[1:], "alice,bob") for row in ROWS]
    lines = render_table(status_header(projects=True, who=True), rows, state_column=4).splitlines()
    assert _columns(lines[0]) == ["RUN", "PROJECT", "STATE", "STEP"]
    assert lines[1].split() == [RUN_ID, "team-project", "restarting", "1200/50000"]


def test_a_dropped_column_leaves_room_for_a_cut_one_before_an_essential_one_is_cut(monkeypatch):
    """At 80 the recipe is kept, cut, rather than dropped: the essential columns stay whole beside it."""
    from launcher.sweeps.status import status_header

    monkeypatch.setenv("COLUMNS", "80")
    row = render_table(status_header(), ROWS, state_column=3).splitlines()[1].split()
    assert (row[0], row[2:]) == (RUN_ID, ["skypilot", "restarting", "1200/50000"])
    assert row[1].endswith("…") and "verifiable-with-a-long-recipe-name".startswith(row[1][:-1])


def test_when_the_essential_columns_alone_do_not_fit_they_are_cut_but_never_the_key(monkeypatch):
    from launcher.sweeps.status import status_header

    monkeypatch.setenv("COLUMNS", "40")
    lines = render_table(status_header(), ROWS, state_column=3).splitlines()
    assert _columns(lines[0])[0] == "RUN" and len(_columns(lines[0])) == 3
    assert lines[1].startswith(RUN_ID + " ") and max(map(len, lines)) <= 40


@pytest.mark.parametrize("columns", [60, 80, 200])
def test_a_header_without_priorities_drops_nothing(monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    assert len(_columns(render_table(HEADER, ROWS).splitlines()[0])) == len(HEADER)  # cut, maybe, but there


def test_a_wide_terminal_shows_every_column_of_a_header_with_priorities_as_before(monkeypatch):
    from launcher.sweeps.status import status_header

    monkeypatch.setenv("COLUMNS", "200")
    assert render_table(status_header(), ROWS, state_column=3) == render_table(HEADER, ROWS, state_column=3)
