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
