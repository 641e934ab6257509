"""`simcli gpushare measure` and `compare-real` without a GPU: the comparison's arithmetic on a
hand-made measured folder, the refusals, and how a model's forward is cut into blocks (on the
CPU, with a small module shaped like torchvision's). The profiles and measurements are made up
for the tests; nothing here is a measurement."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from kvsim.cli import EXIT_BAD_INPUT, app
from kvsim.errors import KvsimError
from kvsim.experiments.gpushare_real import BELOW_SATURATION, measured_vs_simulated

runner = CliRunner()
KEYS = ["policy", "load", "model"]


def summary(policy, load, rows):
    """A load table's rows: (model, jobs, throughput, mean, p99)."""
    return pd.DataFrame(
        [
            {
                "policy": policy,
                "load": load,
                "offered_jobs_s": 100.0 * load,
                "model": model,
                "jobs": jobs,
                "throughput_jobs_s": throughput,
                "latency_mean_s": mean,
                "latency_p50_s": mean,
                "latency_p99_s": p99,
                "slowdown": 1.0,
            }
            for model, jobs, throughput, mean, p99 in rows
        ]
    )


def test_errors_are_the_simulations_relative_to_the_measurement_and_saturation_is_per_point():
    measured = pd.concat(
        [
            summary("p", 1.0, [("a", 8, 80.0, 0.010, 0.040), ("all", 10, 100.0, 0.020, 0.050)]),
            summary("p", 2.0, [("a", 8, 80.0, 0.010, 0.040), ("all", 10, 150.0, 0.040, 0.100)]),
        ]
    )
    simulated = pd.concat(
        [
            summary("p", 1.0, [("a", 8, 80.0, 0.011, 0.030), ("all", 10, 100.0, 0.018, 0.060)]),
            summary("p", 2.0, [("a", 8, 80.0, 0.010, 0.040), ("all", 10, 200.0, 0.020, 0.100)]),
        ]
    )
    table = measured_vs_simulated(measured, simulated, {1.0: 100.0, 2.0: 200.0}).set_index(KEYS)
    assert table.loc[("p", 1.0, "a"), "latency_mean_s_error"] == pytest.approx(0.1)
    assert table.loc[("p", 1.0, "a"), "latency_p99_s_error"] == pytest.approx(-0.25)
    assert table.loc[("p", 1.0, "all"), "latency_p99_s_error"] == pytest.approx(0.2)
    assert table.loc[("p", 2.0, "all"), "throughput_jobs_s_error"] == pytest.approx(1 / 3)
    # load 2 finished 150 jobs/s of 200 arriving: below BELOW_SATURATION, for every row of the point
    assert 150 / 200 < BELOW_SATURATION
    assert table.below_saturation.to_dict() == {
        ("p", 1.0, "a"): True,
        ("p", 1.0, "all"): True,
        ("p", 2.0, "a"): False,
        ("p", 2.0, "all"): False,
    }


def test_a_simulation_of_other_jobs_is_refused():
    measured = summary("p", 1.0, [("all", 10, 100.0, 0.02, 0.05)])
    with pytest.raises(KvsimError, match="does not have the measured jobs"):
        measured_vs_simulated(measured, summary("p", 1.0, [("all", 9, 100.0, 0.02, 0.05)]), {1.0: 100.0})
    with pytest.raises(KvsimError, match="does not have the measured jobs"):
        measured_vs_simulated(measured, summary("q", 1.0, [("all", 10, 100.0, 0.02, 0.05)]), {1.0: 100.0})


def test_compare_real_sets_a_measurement_beside_the_simulation_of_its_jobs(profiles, tmp_path):
    """The measured folder is the simulation's own table with every latency 25% longer, so the
    simulation's error is -20% on every row."""
    sim = tmp_path / "sim"
    args = ["--mix", "extremes", "--profiles", str(profiles), "--num-jobs", "40", "--jobs", "1"]
    result = runner.invoke(
        app, ["gpushare", "load", *args, "--policies", "cuda-multi-stream,paella-srpt", "--load", "0.5,1"]
        + ["--out", str(sim)]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    measured = tmp_path / "measured"
    measured.mkdir()
    table = pd.read_csv(sim / "load.csv")
    for column in ("latency_mean_s", "latency_p50_s", "latency_p99_s"):
        table[column] *= 1.25
    table.to_csv(measured / "load.csv", index=False)
    meta = {"gpu": "h200-141gb", "mix": "extremes", "num_jobs": 40, "sigma": 1.5, "seed": 0}
    meta["settings"] = {"hardware_queues": 8, "ewma_alpha": 0.25}
    (measured / "measure.json").write_text(json.dumps(meta))
    result = runner.invoke(
        app, ["gpushare", "compare-real", str(measured), "--profiles", str(profiles), "--jobs", "1"]
    )
    assert result.exit_code == 0, result.output
    compared = pd.read_csv(measured / "compare.csv")
    assert len(compared) == 2 * 2 * 3
    assert compared.latency_mean_s_error.to_numpy() == pytest.approx(-0.2)
    assert compared.latency_p99_s_error.to_numpy() == pytest.approx(-0.2)
    assert compared.throughput_jobs_s_error.to_numpy() == pytest.approx(0.0)
    assert (measured / "compare.png").stat().st_size > 0
    assert pd.read_csv(measured / "simulated.csv").equals(pd.read_csv(sim / "load.csv"))


def test_compare_real_runs_the_measured_jobs_whatever_profiles_price_them(profiles, tmp_path):
    """A load is a rate only through the profiles that priced it: the measurement's folder,
    measured at the rates one set of profiles gave, compared with profiles twice as slow, must
    still be simulated at the jobs per second the measurement offered (not at half of them)."""
    from kvsim.experiments.gpushare_real import compare_setup

    measured = tmp_path / "measured"
    args = ["--mix", "extremes", "--profiles", str(profiles), "--num-jobs", "40", "--jobs", "1"]
    result = runner.invoke(
        app,
        [
            "gpushare",
            "load",
            *args,
            "--policies",
            "cuda-multi-stream",
            "--load",
            "0.5,1",
            "--out",
            str(measured),
        ],
    )
    assert result.exit_code == 0, result.output
    meta = {"gpu": "h200-141gb", "mix": "extremes", "num_jobs": 40, "sigma": 1.5, "seed": 0}
    meta["settings"] = {"hardware_queues": 8, "ewma_alpha": 0.25}
    (measured / "measure.json").write_text(json.dumps(meta))
    slower = tmp_path / "slower"
    slower.mkdir()
    for path in profiles.glob("*.json"):
        doc = json.loads(path.read_text())
        for kernel in doc["kernels"]:
            kernel["duration_us"] *= 2
        (slower / path.name).write_text(json.dumps(doc))
    setup, table = compare_setup(measured, slower)
    for point in table[table.model == "all"].itertuples():
        assert setup.rate_for_load(point.load) == pytest.approx(point.offered_jobs_s, rel=1e-12)


@pytest.mark.parametrize(
    "args, message",
    [
        (["measure", "--policies", "mps"], "no real-GPU counterpart"),
        (["measure", "--policies", "fastest"], "unknown dispatch policy 'fastest'"),
        (["measure", "--load", "0"], "--load values must be positive"),
        (["measure", "--mix", "nine"], "unknown mix"),
        (["measure", "--inflight-steps", "0"], "--inflight-steps must be at least 1"),
        (["compare-real", "."], "not the output of `simcli gpushare measure`"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    extra = ["--out", str(tmp_path / "o")] if args[0] == "measure" else []
    result = runner.invoke(app, ["gpushare", *args, *extra])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_measure_without_cuda_says_so_in_one_line(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = runner.invoke(app, ["gpushare", "measure", "--num-jobs", "5", "--out", str(tmp_path / "o")])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "needs a CUDA GPU" in lines[0], result.stderr


def test_a_forward_is_cut_before_each_child_that_launches_kernels():
    torch = pytest.importorskip("torch")
    from torch import nn

    from kvsim.gpushare.cuda import split_forward

    class Net(nn.Module):
        """torchvision's shape: children, functional code between them, a dropout."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Dropout(0.5)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            x = self.pool(torch.relu(self.conv(x)))
            return self.fc(self.dropout(torch.flatten(x, 1)))

    net, batch = Net().eval(), torch.randn(1, 3, 8, 8)
    cuts = []
    with torch.inference_mode():
        output, names = split_forward(net, batch, lambda: cuts.append(len(cuts)))
        assert torch.equal(output, net(batch))
    assert names == ["conv", "pool", "fc"]
    assert len(cuts) == len(names) - 1
    assert not net._forward_pre_hooks and not net.fc._forward_pre_hooks  # the hooks are gone


def test_a_load_table_without_its_overall_rows_is_refused_in_one_line(tmp_path):
    """compare-real takes the rates the measurement drew its jobs at from the table's overall
    rows; a table without them is not measure's, and is refused before anything runs."""
    folder = tmp_path / "measured"
    folder.mkdir()
    meta = {"gpu": "h200-141gb", "mix": "extremes", "num_jobs": 40, "sigma": 1.5, "seed": 0}
    meta["settings"] = {"hardware_queues": 8, "ewma_alpha": 0.25}
    (folder / "measure.json").write_text(json.dumps(meta))
    summary("cuda-multi-stream", 0.5, [("resnet18", 10, 1.0, 1e-3, 2e-3)]).to_csv(
        folder / "load.csv", index=False
    )
    result = runner.invoke(app, ["gpushare", "compare-real", str(folder)])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "no model 'all' rows" in result.output
