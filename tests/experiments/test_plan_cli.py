"""`simcli plan` end to end: its answer checked against direct simulation on fresh seeds, and
bad input refused with one line before any work."""

import pandas as pd
import pytest
from typer.testing import CliRunner

from kvsim.cli import EXIT_BAD_INPUT, app
from kvsim.config import SimConfig
from kvsim.experiments.run import run

runner = CliRunner()

# A small question that runs in seconds: OPT-13B on A100-40GBs (a derived profile), with a
# target a few times one replica's capacity, so that the answer is several replicas.
MODEL, GPU, TARGET, PER_REPLICA = "opt-13b", "a100-40gb", 6.0, 400
TTFT_P90_S, TPOT_MEAN_S = 2.0, 0.1
QUESTION = [
    "plan",
    "--model",
    MODEL,
    "--gpu",
    GPU,
    "--target-rate",
    str(TARGET),
    "--slo",
    f"ttft:p90:{TTFT_P90_S}s",
    "--slo",
    f"tpot:mean:{TPOT_MEAN_S * 1000:g}ms",
    "--seeds",
    "2",
    "--requests-per-replica",
    str(PER_REPLICA),
]


def meets_slos(replicas: int, seed: int) -> bool:
    """The whole cluster simulated directly (no planner code), judged on its summary."""
    summary = run(
        SimConfig(
            model=MODEL,
            gpu=GPU,
            rate=TARGET,
            num_replicas=replicas,
            num_requests=PER_REPLICA * replicas,
            seed=seed,
        )
    ).summary
    return summary["ttft_s_p90"] <= TTFT_P90_S and summary["tpot_s_mean"] <= TPOT_MEAN_S


def test_the_recommended_cluster_meets_the_slos_on_fresh_seeds_and_one_fewer_does_not(tmp_path):
    result = runner.invoke(app, [*QUESTION, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    plan = pd.read_csv(tmp_path / "plan.csv")
    assert plan["target_rate"].eq(TARGET).all()
    replicas = int(plan["replicas"].iloc[0])
    assert replicas > 1  # the question needs several replicas, so "one fewer" means something
    assert f"Answer: {replicas} x {GPU}" in result.stdout
    fresh = (100, 101)  # the plan used seeds 0 and 1
    assert all(meets_slos(replicas, seed) for seed in fresh)
    assert not any(meets_slos(replicas - 1, seed) for seed in fresh)
    # the answer rests on a profile derived from another GPU's measurements, and says so
    assert f"profile:{MODEL}@{GPU} is a derived profile" in result.stderr
    assert (tmp_path / "pareto.png").stat().st_size > 0
    points = pd.read_csv(tmp_path / "points.csv")
    assert set(points["purpose"]) == {"capacity", "cluster check"}
    assert points.loc[points["purpose"] == "cluster check", "rate"].eq(TARGET).all()


def refusal(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def no_work(monkeypatch):
    def started(*args, **kwargs):
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr("kvsim.experiments.plan.plan_capacity", started)
    monkeypatch.setattr("kvsim.experiments.plan.run_sweep", started)
    monkeypatch.setattr("kvsim.experiments.plan.run_problem", started)


BASE = ["plan", "--target-rate", "4", "--slo", "ttft:p90:2s"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["plan", "--slo", "ttft:p90:2s"], "--target-rate"),
        (["plan", "--target-rate", "4"], "--slo"),
        ([*BASE, "--slo", "ttft:p90"], "METRIC:STAT:LIMIT"),
        ([*BASE, "--slo", "ttft:p90:1s"], "twice"),
        (["plan", "--target-rate", "4", "--slo", "queue:p90:2s"], "metric"),
        (["plan", "--target-rate", "0", "--slo", "ttft:p90:2s"], "--target-rate"),
        (["plan", "--target-rate", "nan", "--slo", "ttft:p90:2s"], "--target-rate"),
        (["plan", "--target-rate", "", "--slo", "ttft:p90:2s"], "--target-rate has an empty value"),
        (["plan", "--target-rate", "10,,20", "--slo", "ttft:p90:2s"], "--target-rate has an empty value"),
        (["plan", "--target-rate", "10,-5", "--slo", "ttft:p90:2s"], "--target-rate must be a positive"),
        (["plan", "--target-rate", "10,fast", "--slo", "ttft:p90:2s"], "'fast' is not a number"),
        (["plan", "--target-rate", "10,20,10.0", "--slo", "ttft:p90:2s"], "names a rate twice"),
        ([*BASE, "--executor", "dask"], "--executor must be one of local, ray"),
        ([*BASE, "--address", "auto"], "--address is for --executor ray"),
        ([*BASE, "--rate", "3"], "set by the planner"),
        ([*BASE, "--seed", "3"], "set by the planner"),
        ([*BASE, "--trace", "sharegpt,alpaca"], "takes one value"),
        ([*BASE, "--arrival", "trace"], "--arrival trace"),
        ([*BASE, "--goodput", "1.5"], "--goodput"),
        ([*BASE, "--tolerance", "0"], "--tolerance"),
        ([*BASE, "--seeds", "0"], "--seeds"),
        ([*BASE, "--gpu", "a100-80gb,tpu"], "unknown GPU"),
        ([*BASE, "--block-size", "16,0"], "--block-size"),
        ([*BASE, "--prices", "/nonexistent/prices.json"], "cannot read price table"),
    ],
)
def test_bad_input_is_refused_before_any_work(no_work, args, message):
    assert message in refusal(args)


def test_a_gpu_without_a_price_is_refused(no_work, tmp_path):
    prices = tmp_path / "prices.json"
    prices.write_text('{"prices": {"h100-sxm-80gb": 4.0}}')
    line = refusal([*BASE, "--gpu", "a100-80gb", "--prices", str(prices)])
    assert "no price for GPU a100-80gb" in line


def test_an_out_that_is_a_file_is_refused(no_work, tmp_path):
    out = tmp_path / "file"
    out.write_text("")
    assert "must name a directory" in refusal([*BASE, "--out", str(out)])
