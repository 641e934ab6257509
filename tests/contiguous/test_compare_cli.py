"""`simcli compare` end to end: one table over policies and rates, CSV and figures, bad input."""

import pandas as pd
import pytest
from typer.testing import CliRunner

from kvsim.cli import app, parse_option_args
from kvsim.config import SimConfig
from kvsim.engine.metrics import WASTE_KEYS
from kvsim.experiments import compare
from kvsim.experiments.run import prepare_trace

runner = CliRunner()


def run_compare(policies: str, *options) -> str:
    """What `simcli compare` prints over ``policies``, its points run in turn in this process."""
    result = runner.invoke(app, ["compare", "--policies", policies, "--jobs", "1", *options])
    assert result.exit_code == 0, result.output
    return result.output


def test_compare_writes_table_and_figures(tmp_path):
    output = run_compare(
        "paged,orca-oracle,ft", "--rate", "2,4", "--num-requests", "40", "--seed", "3", "--out", str(tmp_path)
    )
    assert "orca-oracle" in output and "token states" in output
    table = pd.read_csv(tmp_path / "compare.csv")
    assert list(zip(table.policy, table.rate)) == [
        ("paged", 2),
        ("paged", 4),
        ("orca-oracle", 2),
        ("orca-oracle", 4),
        ("ft", 2),
        ("ft", 4),
    ]
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
    monkeypatch.setattr(
        compare, "_run_point", lambda point: seen.append(point) or {"policy": point[0].policy}
    )
    compare.compare_policies(SimConfig(num_requests=5), ["paged", "orca-max", "ft"], [1.0, 3.0])
    assert len(built) == 2  # one trace per rate, shared by the policies
    assert [(c.policy, c.rate, t is built[i % 2]) for i, (c, t) in enumerate(seen)] == [
        ("paged", 1.0, True),
        ("paged", 3.0, True),
        ("orca-max", 1.0, True),
        ("orca-max", 3.0, True),
        ("ft", 1.0, True),
        ("ft", 3.0, True),
    ]


def test_bad_input_is_one_line_and_exit_2():
    for args, message in (
        (["--policies", "paged,nope"], "unknown policy 'nope'"),
        (["--rate", "0"], "--rate must be positive"),
        (["--policy", "paged"], "--policies"),
        (["--seed", "1,2"], "takes one value"),
        (["--ft-batch-size", "99"], "holds only"),
        (["--out", "/dev/null/x"], "cannot create output directory"),
    ):
        result = runner.invoke(app, ["compare", "--num-requests", "5", "--jobs", "1", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_compare_shows_sharing_against_contiguous(tmp_path):
    output = run_compare(
        "paged,orca-oracle", "--beam-width", "4", "--rate", "2", "--num-requests", "8", "--out", str(tmp_path)
    )
    assert "block sharing" in output and "beam width 4" in output
    paged, oracle = pd.read_csv(tmp_path / "compare.csv").to_dict("records")
    assert paged["forks"] > 0 and 0 < paged["sharing_memory_saving"] < 1
    # Contiguous reservation cannot share: private prompt copies, beams copy their parents.
    assert oracle["forks"] == 0 and oracle["sharing_memory_saving"] == 0
    assert oracle["block_copies"] > paged["block_copies"]


@pytest.mark.parametrize(
    "options, expected",
    [
        (
            [
                "--n",
                "2",
                "--independent-sample-lengths",
                "--prefix-len",
                "32",
                "--num-prefixes",
                "2",
                "--prefix-popularity",
                "0.5",
                "--prefix-caching",
                "--preemption",
                "swap",
                "--swap-space",
                "2",
            ],
            dict(
                n=2,
                independent_sample_lengths=True,
                prefix_len=32,
                num_prefixes=2,
                prefix_popularity=0.5,
                prefix_caching=True,
                preemption="swap",
                swap_space=2.0,
            ),
        ),
        (
            ["--beam-width", "3", "--beam-stay", "0.2", "--beam-skew", "2", "--prefix-caching", "false"],
            dict(beam_width=3, beam_stay=0.2, beam_skew=2.0, prefix_caching=False, preemption="recompute"),
        ),
    ],
)
def test_compare_passes_every_run_option_through(monkeypatch, options, expected):
    configs = []
    run_point = compare._run_point
    monkeypatch.setattr(compare, "_run_point", lambda point: configs.append(point[0]) or run_point(point))
    assert "block sharing" in run_compare("paged,orca-oracle", "--rate", "4", "--num-requests", "6", *options)
    assert [c.policy for c in configs] == ["paged", "orca-oracle"]
    for config in configs:
        # orca-oracle never preempts, so it runs with the default preemption setting.
        preemption = expected["preemption"] if config.policy == "paged" else "recompute"
        assert {name: getattr(config, name) for name in expected} == {**expected, "preemption": preemption}


@pytest.mark.parametrize("command", ["compare", "sweep"])
@pytest.mark.parametrize(
    "args, message",
    [
        (["--seed", "x"], "--seed value 'x' is not a int"),
        (["--prefix-caching", "maybe"], "--prefix-caching value 'maybe' is not a bool"),
        (["--n"], "--n needs a value"),
        (["--nope", "1"], "unknown option --nope"),
    ],
)
def test_option_errors_name_the_command(command, args, message):
    result = runner.invoke(app, [command, "--jobs", "1", *args])
    assert result.exit_code == 2, result.output
    assert f"{command}: {message}" in result.output and len(result.output.strip().splitlines()) == 1


def test_switches_take_true_false_lists():
    assert parse_option_args("sweep", ["--prefix-caching", "false,true", "--independent-sample-lengths"]) == {
        "prefix_caching": [False, True],
        "independent_sample_lengths": [True],
    }
