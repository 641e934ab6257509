"""``simcli validate``: refusals, campaign files, and (on a fake GPU of known speed) the
errors it reports."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from fake_device import ScaledCost
from typer.testing import CliRunner

from kvsim.cli import app
from kvsim.config import SimConfig

torch = pytest.importorskip("torch")
SLOWDOWN = 1.25  # the fake GPU's step time over the cost model's price


def test_validate_refuses_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(app, ["validate", "--rate", "1", "--num-requests", "5"])
    assert result.exit_code == 2
    assert "no CUDA GPU" in result.output and "Traceback" not in result.output


@pytest.fixture
def slowed_point(tmp_path, fake_gpu):
    """A tiny model's point validated on a fake GPU 1.25x slower than the cost model's price:
    (config, the simulated run, validate_point's row, requests and steps)."""
    from kvsim.experiments.run import run
    from kvsim.experiments.validate import validate_point

    model = {
        "model_type": "opt",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "ffn_dim": 128,
        "vocab_size": 101,
        "max_position_embeddings": 512,
    }
    (tmp_path / "config.json").write_text(json.dumps(model))
    config = SimConfig(
        model=str(tmp_path),
        dtype="float32",
        trace="alpaca",
        rate=None,
        num_requests=6,
        gpu="a100-40gb",
        gpu_memory_utilization=0.001,
    ).validate()
    simulated = run(config)
    gpu = fake_gpu(ScaledCost(simulated.cost_model, SLOWDOWN), model["vocab_size"])
    return config, simulated, *validate_point(config, SimpleNamespace(get=lambda *geometry: gpu))


def test_validate_point_reports_the_errors_of_a_known_slowdown(slowed_point):
    """The fake GPU takes 1.25x the cost model's price for every step, and every request
    arrives at t = 0 (no rate: an offline batch), so the executor runs the simulated schedule
    with every time stretched 1.25x (test_executor_schedule.py checks that). The measured side
    must be that run, not a simulation: its latencies 1.25x the simulated ones and its
    throughputs 1/1.25 of them. The simulator's relative error, (sim - real) / real, is then
    1/1.25 - 1 = -20% for every latency, 1.25 - 1 = +25% for every throughput and 0 for the
    batch size; each step's (predicted - measured) / measured is -20%."""
    from kvsim.experiments.validate import COMPARED, step_error_summary

    config, simulated, row, requests, steps = slowed_point
    latencies = [m for m in COMPARED if m.startswith(("ttft", "tpot", "e2e", "normalized"))]
    throughputs = [m for m in COMPARED if m.startswith("throughput")]
    counts = ["mean_batch_size", "preemptions"]
    assert sorted(latencies + throughputs + counts) == sorted(COMPARED), "a metric left unchecked"
    approx = lambda value: pytest.approx(value, rel=1e-9)
    for metric in COMPARED:
        assert row[f"{metric}_simulated"] == approx(simulated.summary[metric])
    for metric in latencies:
        assert row[f"{metric}_measured"] == approx(SLOWDOWN * row[f"{metric}_simulated"])
        assert row[f"{metric}_rel_error"] == approx(1 / SLOWDOWN - 1)
    for metric in throughputs:
        assert row[f"{metric}_measured"] == approx(row[f"{metric}_simulated"] / SLOWDOWN)
        assert row[f"{metric}_rel_error"] == approx(SLOWDOWN - 1)
    assert row["mean_batch_size_measured"] == approx(row["mean_batch_size_simulated"])
    assert row["mean_batch_size_rel_error"] == pytest.approx(0, abs=1e-9)
    # No preemption on either side: a relative error of a zero count is undefined.
    assert row["preemptions_measured"] == row["preemptions_simulated"] == 0
    assert np.isnan(row["preemptions_rel_error"])

    assert len(requests) == 6
    for column in ("first_token", "finish", "e2e"):
        np.testing.assert_allclose(
            requests[f"{column}_measured"], SLOWDOWN * requests[f"{column}_simulated"], rtol=1e-9
        )
    np.testing.assert_allclose(steps.measured_s, SLOWDOWN * steps.predicted_s, rtol=1e-9)
    summary = step_error_summary(steps)
    assert set(summary) == {"prefill", "decode"}
    assert sum(kind["steps"] for kind in summary.values()) == len(steps)
    for kind in summary.values():
        assert kind["mean"] == approx(1 / SLOWDOWN - 1)
        assert kind["mean_abs"] == approx(1 - 1 / SLOWDOWN)
        assert kind["p90_abs"] == approx(1 - 1 / SLOWDOWN)


def test_reprice_recomputes_the_campaign_from_its_folder(slowed_point, tmp_path):
    """A campaign's folder, re-priced without a GPU by the profile it was validated with,
    gives validate's own errors back; priced by another, it says so."""
    from kvsim.experiments.validate import REPRICED, reprice_campaign

    config, _, row, requests, _ = slowed_point
    folder = tmp_path / "campaign"
    folder.mkdir()
    requests.to_csv(folder / "requests.csv", index=False)
    (folder / "environment.json").write_text(json.dumps({"configs": [config.to_dict()]}))
    table = reprice_campaign(folder, None)
    assert len(table) == 1
    for metric in REPRICED:
        assert table[f"{metric}_rel_error"][0] == pytest.approx(row[f"{metric}_rel_error"], rel=1e-9)
    shorter = requests[requests.request_id != requests.request_id.max()]
    shorter.to_csv(folder / "requests.csv", index=False)
    result = CliRunner().invoke(app, ["validate", "--reprice", str(folder)])
    assert result.exit_code == 2 and "not the measured ones" in result.output


@pytest.mark.parametrize(
    "content, message",
    [
        ("{", "cannot read campaign"),
        ('{"rate": 1}', "JSON list"),
        ('[{"rate": 1, "colour": "red"}]', "colour"),
    ],
)
def test_bad_campaign_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "campaign.json"
    path.write_text(content)
    result = CliRunner().invoke(app, ["validate", "--campaign", str(path)])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_calibrate_first_measures_each_model_and_block_size_once(monkeypatch, tmp_path):
    """--calibrate: one calibration per (model, block size), every point simulated with its own."""
    from kvsim.calibration import calibrate as calibrate_module
    from kvsim.config import SimConfig
    from kvsim.experiments.validate import with_fresh_profiles

    calls = []

    def fake_calibrate(model, out, block_size=16, log=print, **_):
        calls.append((model, block_size))
        return {}, out

    monkeypatch.setattr(calibrate_module, "calibrate", fake_calibrate)
    configs = [
        SimConfig(model=m, block_size=b, rate=r, gpu="h100-sxm-80gb")
        for m, b, r in [
            ("opt-13b", 16, 1.0),
            ("opt-13b", 16, 2.0),
            ("llama-2-7b", 16, 1.0),
            ("opt-13b", 32, 1.0),
        ]
    ]
    fresh = with_fresh_profiles(configs, tmp_path)
    assert calls == [("opt-13b", 16), ("llama-2-7b", 16), ("opt-13b", 32)]
    assert fresh[0].profile == fresh[1].profile != fresh[3].profile
    assert all(c.profile.startswith(str(tmp_path)) for c in fresh)
    assert [c.rate for c in fresh] == [1.0, 2.0, 1.0, 1.0]
