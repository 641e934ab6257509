"""A sweep's CSV as it fills: one row appended and flushed as each point finishes, so that a
crash or a kill loses only the points still running, and ``--resume`` runs only the others.

Cells are written by one formatter (``cell``), whether a row is new or kept from an earlier,
interrupted run; so a point is recognised by its settings' cells, and a resumed sweep's file
is byte for byte the one an uninterrupted run writes. When the sweep ends the rows are put in
the points' order (they were appended in the order they finished).
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import numpy as np

from kvsim.errors import KvsimError


def cell(value) -> str:
    """One CSV cell: a number in its shortest exact form, nothing for None or NaN."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else repr(float(value))
    return str(value)


def _line(cells: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()


class SweepFile:
    """The CSV at ``path`` with ``columns``, the first ``len(settings)`` of them a point's settings.

    ``resume``: keep the complete rows already there (a last line cut short by a kill is
    dropped, and its point runs again); otherwise start the file afresh."""

    def __init__(self, path: Path, columns: list[str], settings: list[str], resume: bool) -> None:
        self.path, self.columns, self.settings = path, columns, settings
        self.done: dict[tuple[str, ...], list[str]] = {}
        if resume and path.exists():
            self.done = self._read_done()

    def key(self, point: dict) -> tuple[str, ...]:
        return tuple(cell(point[name]) for name in self.settings)

    def _read_done(self) -> dict[tuple[str, ...], list[str]]:
        text = self.path.read_text()
        complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
        rows = list(csv.reader(io.StringIO(complete)))
        if not rows or rows[0] != self.columns:
            raise KvsimError(
                f"--resume: {self.path} was not written by this sweep (its columns differ); "
                "give another --out or leave out --resume"
            )
        done = {}
        for row in rows[1:]:
            if len(row) != len(self.columns):
                raise KvsimError(
                    f"--resume: {self.path} has a row of {len(row)} cells, not {len(self.columns)}"
                )
            done.setdefault(tuple(row[: len(self.settings)]), row)
        return done

    def start(self, points: list[dict]) -> list[int]:
        """The indices of the points still to run. Refuses, changing nothing, a resume whose
        file holds points this sweep does not have (the final file would not be this sweep's);
        else writes the file anew with the rows kept, so that appends start after a whole line."""
        wanted = {self.key(point) for point in points}
        foreign = [key for key in self.done if key not in wanted]
        if foreign:
            shown = ", ".join(f"{n}={v}" for n, v in zip(self.settings, foreign[0]))
            raise KvsimError(
                f"--resume: {self.path} has {len(foreign)} row(s) of points not in this sweep (first: {shown})"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._rewrite(list(self.done.values()))
        return [i for i, point in enumerate(points) if self.key(point) not in self.done]

    def append(self, row: dict) -> list[str]:
        cells = [cell(row.get(column)) for column in self.columns]
        with self.path.open("a") as file:
            file.write(_line(cells))
            file.flush()
        self.done[tuple(cells[: len(self.settings)])] = cells
        return cells

    def finish(self, points: list[dict]) -> None:
        """Every point's row, in the points' order (written aside, then moved over the file,
        so that the file is never half-written)."""
        self._rewrite([self.done[self.key(point)] for point in points])

    def _rewrite(self, rows: list[list[str]]) -> None:
        aside = self.path.with_name(self.path.name + ".partial")
        aside.write_text("".join(_line(row) for row in [self.columns, *rows]))
        os.replace(aside, self.path)
