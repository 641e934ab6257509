"""`simcli gpushare load|fairness` end to end on hand-made profiles in a temporary folder, and
their refusals. (The profiles are made up for the test; nothing here is a measurement.)"""

import pandas as pd
import pytest
from typer.testing import CliRunner

from kvsim.cli import EXIT_BAD_INPUT, app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["gpushare", *args])


def test_load_sweep_writes_a_row_per_policy_load_and_model(profiles, tmp_path):
    out = tmp_path / "load"
    result = invoke(
        "load", "--mix", "extremes", "--profiles", str(profiles), "--num-jobs", "40", "--jobs", "1",
        "--policies", "cuda-multi-stream,paella-srpt", "--load", "0.5,1", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "load.csv")
    assert len(table) == 2 * 2 * 3  # policies x loads x (two models and all)
    assert set(table.model) == {"resnet18", "inception_v3", "all"}
    assert (table[table.model == "all"].jobs == 40).all()
    assert (out / "load.png").stat().st_size > 0


def test_fairness_sweep_gives_jains_index_per_threshold(profiles, tmp_path):
    out = tmp_path / "fair"
    result = invoke(
        "fairness", "--mix", "extremes", "--profiles", str(profiles), "--num-jobs", "40", "--jobs", "1",
        "--thresholds", "1,inf", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "fairness.csv")
    assert len(table) == 2 * 3
    assert table.jain_index.between(0.5, 1.0).all()  # 1/n..1 over two models
    assert (out / "fairness.png").stat().st_size > 0


EMPTY_DIR = "<an empty folder>"  # stands for the test's tmp_path: a folder without profiles


@pytest.mark.parametrize(
    "args, message",
    [
        (["load", "--num-jobs", "5", "--profiles", EMPTY_DIR], "no measured kernel profile of mobilenet_v2"),
        (["load", "--policies", "fastest"], "unknown dispatch policy 'fastest'"),
        (["load", "--load", "0,1"], "--load values must be positive"),
        (["load", "--mix", "nine"], "unknown mix"),
        (["load", "--gpu", "tpu"], "no SM limits for GPU 'tpu'"),
        (["fairness", "--thresholds", "1,,2"], "empty value"),
        (
            ["fairness", "--outstanding-limit", "-1", "--mix", "extremes"],
            "--outstanding-limit must be at least 0",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    args = [str(tmp_path) if arg == EMPTY_DIR else arg for arg in args]
    result = invoke(*args, "--out", str(tmp_path / "o"))
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "o").exists()
