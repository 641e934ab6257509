"""`simcli plan` over a range of target rates, and on Ray: one capacity search serves every
target, and each target's answer is the one a plan for that target alone gives; Ray runs the
same simulations as local processes, so it writes the same tables."""

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from kvsim.cli import app

runner = CliRunner()

# Tiny settings (one seed, few requests, a coarse bisection) on a derived profile whose replica
# carries about 2 req/s, so that the targets need from one replica to several.
TARGETS = (2.0, 5.0, 10.0)
QUESTION = [
    "plan",
    "--model",
    "opt-13b",
    "--gpu",
    "a100-40gb",
    "--slo",
    "ttft:p90:2s",
    "--slo",
    "tpot:mean:100ms",
    "--seeds",
    "1",
    "--requests-per-replica",
    "150",
    "--tolerance",
    "0.3",
]
#: What a target's answer is: the replicas the cluster check accepted and what they cost and
#: measured. The capacity columns are left out: a range's bisection starts from its largest
#: target, a single plan's from its own, so they stop at different points of the same bracket.
ANSWER = [
    "target_rate",
    "gpu",
    "replicas",
    "gpus",
    "cost_per_hour",
    "cost_per_million_output_tokens",
    "ttft_p90_s_at_target",
    "tpot_mean_s_at_target",
    "goodput_at_target",
]


def plan(out: Path, targets: str, *args: str) -> str:
    result = runner.invoke(app, [*QUESTION, "--target-rate", targets, "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    return " ".join(result.stdout.split())  # as printed, without the terminal's line breaks


@pytest.fixture(scope="module")
def ranged(tmp_path_factory) -> tuple[Path, str]:
    """The range's --out folder and what it printed."""
    out = tmp_path_factory.mktemp("range")
    # given out of order: the plan sorts the targets
    return out, plan(out, ",".join(f"{t:g}" for t in (TARGETS[2], TARGETS[0], TARGETS[1])))


def test_each_target_of_a_range_gets_the_answer_of_its_own_plan(ranged, tmp_path):
    ranged, printed_range = ranged
    table = pd.read_csv(ranged / "plan.csv")
    assert tuple(table["target_rate"]) == TARGETS
    single_probes = 0
    for target in TARGETS:
        out = tmp_path / f"{target:g}"
        printed = plan(out, f"{target:g}")
        alone = pd.read_csv(out / "plan.csv")
        pd.testing.assert_frame_equal(
            table.loc[table["target_rate"] == target, ANSWER].reset_index(drop=True), alone[ANSWER]
        )
        answer = f"Answer: {int(alone['replicas'].iloc[0])} x a100-40gb"
        assert answer in printed
        assert f"{answer} ({int(alone['gpus'].iloc[0])} GPUs) serve {target:g} req/s" in printed_range
        points = pd.read_csv(out / "points.csv")
        single_probes += int((points["purpose"] == "capacity").sum())
    # the capacity is searched once for the whole range, not once per target
    points = pd.read_csv(ranged / "points.csv")
    assert (points["purpose"] == "capacity").sum() < single_probes


def test_replicas_do_not_fall_as_the_target_rises(ranged):
    replicas = pd.read_csv(ranged[0] / "plan.csv")["replicas"].tolist()
    assert replicas == sorted(replicas) and replicas[0] < replicas[-1]


def test_ray_writes_the_tables_of_local_processes(ranged, tmp_path):
    pytest.importorskip("ray")
    plan(tmp_path, ",".join(f"{t:g}" for t in TARGETS), "--executor", "ray", "--jobs", "2")
    for name in ("plan.csv", "points.csv"):
        assert (tmp_path / name).read_text() == (ranged[0] / name).read_text(), name
