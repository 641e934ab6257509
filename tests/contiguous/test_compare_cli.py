"""`simcli compare` end to end: one table over policies and rates, CSV and figures, bad input."""

import pandas as pd
from typer.testing import CliRunner

from kvsim.cli import app
from kvsim.config import SimConfig
from kvsim.sim import compare
from kvsim.sim.run import prepare_trace
from kvsim.sim.metrics import WASTE_KEYS

runner = CliRunner()


def test_compare_writes_table_and_figures(tmp_path):
    result = runner.invoke(app, ["compare", "--policies", "paged,orca-oracle,ft", "--rate", "2,4",
                                 "--num-requests", "40", "--seed", "3", "--jobs", "1",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "orca-oracle" in result.output and "token states" in result.output
    table = pd.read_csv(tmp_path / "compare.csv")
    assert list(zip(table.policy, table.rate)) == [("paged", 2), ("paged", 4), ("orca-oracle", 2),
                                                   ("orca-oracle", 4), ("ft", 2), ("ft", 4)]
    assert (table.completed + table.rejected == 40).all()
    assert (table[list(WASTE_KEYS)].sum(axis=1).round(9) == 1).all()
    for name in ("latency_vs_rate.png", "waste_breakdown.png", "batch_size.png"):
        assert (tmp_path / name).stat().st_size > 10_000


def test_every_policy_sees_the_same_trace(monkeypatch):
    built = []

    def prepare(config, model):
        built.append(prepare_trace(config, model))
        return built[-1]

    monkeypatch.setattr(compare, "prepare_trace", prepare)
    seen = []
    monkeypatch.setattr(compare, "_run_point", lambda point: seen.append(point) or {"policy": point[0].policy})
    compare.compare_policies(SimConfig(num_requests=5), ["paged", "orca-max", "ft"], [1.0, 3.0])
    assert len(built) == 2  # one trace per rate, shared by the policies
    assert [(c.policy, c.rate, t is built[i % 2]) for i, (c, t) in enumerate(seen)] == [
        ("paged", 1.0, True), ("paged", 3.0, True), ("orca-max", 1.0, True), ("orca-max", 3.0, True),
        ("ft", 1.0, True), ("ft", 3.0, True)]


def test_bad_input_is_one_line_and_exit_2():
    for args, message in ((["--policies", "paged,nope"], "unknown policy 'nope'"),
                          (["--rate", "0"], "--rate must be positive"),
                          (["--policy", "paged"], "--policies"),
                          (["--seed", "1,2"], "takes one value"),
                          (["--ft-batch-size", "99"], "holds only"),
                          (["--out", "/dev/null/x"], "cannot create output directory")):
        result = runner.invoke(app, ["compare", "--num-requests", "5", "--jobs", "1", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1
