"""A warning raised in every point of a sweep or comparison (a shipped profile that lacks a
term, a cost extrapolated past what was measured) is printed once, not once per worker."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from kvsim.experiments.sweep import WarnOnce, in_workers

# Llama-2-7B's shipped A100-80GB profile predates mixed steps, and v1 runs mixed steps: every
# point warns about it.
POINTS = ["--model", "llama-2-7b", "--gpu", "a100-80gb", "--scheduler", "v1", "--num-requests", "60"]


def _stderr(*args: str, tmp_path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "kvsim.cli", *args], capture_output=True, text=True, cwd=tmp_path, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def _warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


@pytest.mark.parametrize(
    "command",
    [
        ["sweep", *POINTS, "--rate", "4,8,12", "--jobs", "2", "--out", "sweep.csv"],
        ["compare", *POINTS, "--policies", "paged", "--rate", "4,8,12", "--jobs", "2", "--out", "compare"],
    ],
    ids=["sweep", "compare"],
)
def test_a_warning_of_every_point_is_printed_once(tmp_path, command):
    lines = _warning_lines(_stderr(*command, tmp_path=tmp_path))
    assert any("mixed steps" in line for line in lines)
    assert len(lines) == len(set(lines))


def _warns(text: str) -> int:
    warnings.warn(text, UserWarning)
    return len(text)


def test_warn_once_reissues_each_distinct_warning_once():
    warn_once = WarnOnce()
    work = in_workers(_warns)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = list(warn_once.all(work(text) for text in ["a", "bb", "a"]))
    assert results == [1, 2, 1]
    assert [str(w.message) for w in caught] == ["a", "bb"]
