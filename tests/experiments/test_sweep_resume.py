"""`simcli sweep` streams each row to its CSV as the point finishes; `--resume` keeps the rows
already there and runs only the other points, ending with the file an uninterrupted sweep
writes; `--executor ray` gives the same rows as local processes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kvsim.cli import EXIT_BAD_INPUT, app
from kvsim.experiments.sweep_file import SweepFile

runner = CliRunner()
GRID = ["--rate", "1,4", "--block-size", "8,16,32", "--num-requests", "40"]


def sweep(out: Path, *args: str, grid=GRID):
    result = runner.invoke(app, ["sweep", *grid, "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())  # as printed, without the terminal's line breaks


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("full") / "sweep.csv"
    sweep(out)
    return out.read_text()


def test_resume_keeps_the_rows_written_and_runs_only_the_others(tmp_path, uninterrupted):
    header, *rows = uninterrupted.splitlines(keepends=True)
    # Two points finished, in another order than the grid's, and a third cut mid-line by a kill.
    # A kept row is marked (its `completed` cell): a resume that redid its point would lose the mark.
    completed = header.split(",").index("completed")
    marked = rows[3].split(",")
    marked[completed] = "-1"
    partial = tmp_path / "sweep.csv"
    partial.write_text(header + ",".join(marked) + rows[1] + rows[4][:25])
    result = sweep(partial, "--resume")
    assert "2 of 6 points kept" in result
    assert partial.read_text() == header + "".join(rows[:3]) + ",".join(marked) + "".join(rows[4:])


def test_a_killed_sweep_resumes_to_the_file_an_uninterrupted_one_writes(tmp_path):
    # Longer points than GRID's, so that the kill lands mid-sweep.
    grid = ["--rate", "1,4", "--block-size", "8,16,32", "--num-requests", "300"]
    out = tmp_path / "sweep.csv"
    command = [sys.executable, "-m", "kvsim.cli", "sweep", *grid, "--out", str(out), "--jobs", "1"]
    process = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if out.exists() and len(out.read_text().splitlines()) >= 2:  # the header and a row
                break
            time.sleep(0.01)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the sweep and its worker processes
        process.wait()
    kept = len(out.read_text().splitlines()) - 1
    assert 1 <= kept < 6, "the kill should land after the first point and before the last"
    result = sweep(out, "--resume", grid=grid)
    assert f"{kept} of 6 points kept" in result
    reference = tmp_path / "reference.csv"
    sweep(reference, grid=grid)
    assert out.read_bytes() == reference.read_bytes()


def test_resume_refuses_a_file_of_another_sweep_and_changes_nothing(tmp_path, uninterrupted):
    out = tmp_path / "sweep.csv"
    cases = (
        ("rate,block_size\n1.0,8\n", ["--rate", "1"], "was not written by this sweep"),
        (
            uninterrupted,
            ["--rate", "1", "--block-size", "8,16,32", "--num-requests", "40"],
            "not in this sweep",
        ),
    )
    for text, grid, message in cases:
        out.write_text(text)
        result = runner.invoke(app, ["sweep", *grid, "--out", str(out), "--resume"])
        assert result.exit_code == EXIT_BAD_INPUT and message in result.stderr, result.output
        assert out.read_text() == text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--executor", "dask"], "--executor must be one of local, ray"),
        (["--address", "auto"], "--address is for --executor ray"),
    ],
)
def test_bad_executor_options_are_refused(tmp_path, args, message):
    result = runner.invoke(app, ["sweep", "--rate", "1", "--out", str(tmp_path / "s.csv"), *args])
    assert result.exit_code == EXIT_BAD_INPUT and message in result.stderr, result.output
    assert not (tmp_path / "s.csv").exists()


COLUMNS = ["rate", "block_size", "value", "error"]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), count=st.integers(1, 8))
def test_any_finishing_order_and_any_cut_end_in_the_same_file(tmp_path_factory, data, count):
    """The file's invariant: whatever order points finish in and wherever a kill cuts the
    file, resuming and finishing writes the bytes of a sweep that ran straight through."""
    points = [{"rate": 0.5 * (i + 1), "block_size": 8 * (i % 3 + 1)} for i in range(count)]
    rows = [
        {**p, "value": p["rate"] / 3, "error": None if i % 4 else "no room"} for i, p in enumerate(points)
    ]
    folder = tmp_path_factory.mktemp("sweepfile")
    straight = folder / "straight.csv"
    first = SweepFile(straight, COLUMNS, ["rate", "block_size"], resume=False)
    for index in first.start(points):
        first.append(rows[index])
    first.finish(points)

    order = data.draw(st.permutations(range(count)))
    written = data.draw(st.integers(0, count))
    cut = folder / "cut.csv"
    interrupted = SweepFile(cut, COLUMNS, ["rate", "block_size"], resume=False)
    interrupted.start(points)
    for index in order[:written]:
        interrupted.append(rows[index])
    text = cut.read_text()
    cut.write_text(text[: data.draw(st.integers(len(text.splitlines()[0]) + 1, len(text)))])

    resumed = SweepFile(cut, COLUMNS, ["rate", "block_size"], resume=True)
    todo = resumed.start(points)
    assert set(range(count)) - set(todo) <= set(order[:written])  # only appended points are kept
    for index in todo:
        resumed.append(rows[index])
    resumed.finish(points)
    assert cut.read_bytes() == straight.read_bytes()


def test_the_ray_executor_gives_the_rows_of_local_processes(tmp_path, uninterrupted):
    pytest.importorskip("ray")
    out = tmp_path / "ray.csv"
    sweep(out, "--executor", "ray", "--jobs", "2")
    assert out.read_text() == uninterrupted
