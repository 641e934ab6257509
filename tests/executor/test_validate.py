import json

import numpy as np
import pytest
from typer.testing import CliRunner

from kvsim.cli import app
from kvsim.config import SimConfig

torch = pytest.importorskip("torch")


def test_validate_refuses_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(app, ["validate", "--rate", "1", "--num-requests", "5"])
    assert result.exit_code == 2
    assert "no CUDA GPU" in result.output and "Traceback" not in result.output


def test_validate_point_compares_both_sides_on_a_tiny_model(tmp_path):
    from kvsim.gpu.validate import COMPARED, RunnerCache, validate_point

    config = {"model_type": "opt", "hidden_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "ffn_dim": 128, "vocab_size": 101,
              "max_position_embeddings": 512}
    (tmp_path / "config.json").write_text(json.dumps(config))
    sim_config = SimConfig(model=str(tmp_path), dtype="float32", trace="alpaca", rate=50.0,
                           num_requests=6, gpu="a100-40gb", gpu_memory_utilization=0.001).validate()
    row, requests, steps = validate_point(sim_config, RunnerCache("cpu"))
    for metric in COMPARED:
        assert f"{metric}_measured" in row and f"{metric}_rel_error" in row
    assert row["throughput_req_s_measured"] > 0 and np.isfinite(row["throughput_req_s_rel_error"])
    assert len(requests) == 6 and requests.e2e_measured.notna().all()
    assert (steps.measured_s > 0).all() and (steps.predicted_s > 0).all()


@pytest.mark.parametrize("content, message", [("{", "cannot read campaign"), ('{"rate": 1}', "JSON list"),
                                               ('[{"rate": 1, "colour": "red"}]', "colour")])
def test_bad_campaign_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "campaign.json"
    path.write_text(content)
    result = CliRunner().invoke(app, ["validate", "--campaign", str(path)])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_calibrate_first_measures_each_model_and_block_size_once(monkeypatch, tmp_path):
    """--calibrate: one calibration per (model, block size), every point simulated with its own."""
    from kvsim import cli
    from kvsim.calibration import calibrate as calibrate_module
    from kvsim.config import SimConfig

    calls = []

    def fake_calibrate(model, out, block_size=16, log=print, **_):
        calls.append((model, block_size))
        return {}, out

    monkeypatch.setattr(calibrate_module, "calibrate", fake_calibrate)
    configs = [SimConfig(model=m, block_size=b, rate=r, gpu="h100-sxm-80gb")
               for m, b, r in [("opt-13b", 16, 1.0), ("opt-13b", 16, 2.0), ("llama-2-7b", 16, 1.0),
                               ("opt-13b", 32, 1.0)]]
    fresh = cli._with_fresh_profiles(configs, tmp_path)
    assert calls == [("opt-13b", 16), ("llama-2-7b", 16), ("opt-13b", 32)]
    assert fresh[0].profile == fresh[1].profile != fresh[3].profile
    assert all(c.profile.startswith(str(tmp_path)) for c in fresh)
    assert [c.rate for c in fresh] == [1.0, 2.0, 1.0, 1.0]
