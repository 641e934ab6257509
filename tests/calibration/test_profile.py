"""Loading and validating profiles, and choosing the cost model of a run."""

import json

import pytest

from kvsim.config import SimConfig
from kvsim.cost import select_cost_model
from kvsim.cost.profile import load_profile, save_profile, shipped_profiles
from kvsim.cost.profile_model import ProfileCostModel
from kvsim.cost.roofline import RooflineCostModel
from kvsim.errors import KvsimError
from kvsim.hardware import load_gpu
from kvsim.models import load_model


def _write(tmp_path, doc, name="p.json"):
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def test_every_shipped_profile_loads():
    paths = shipped_profiles()
    assert any("opt-13b@a100-40gb" in p.name for p in paths)
    for path in paths:
        load_profile(path)


def test_round_trip(tmp_path, synthetic_profile):
    assert load_profile(save_profile(synthetic_profile, tmp_path / "x.json")) == synthetic_profile


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: "{not json", "not valid JSON"),
        (lambda d: [1, 2], "not a JSON object"),
        (lambda d: {**d, "format": "other"}, "not a kvsim step profile"),
        (lambda d: {**d, "version": 99}, "version 99 is not supported"),
        # the format before prefill attention's blocks: says how to bring it up to date
        (lambda d: {**d, "version": 3}, "refit a measured profile (python -m kvsim.calibration.fit FILE)"),
        (
            lambda d: {**d, "prefill_attention": {"solo_rate": 0.8}},
            "prefill_attention must give multiprocessors",
        ),
        (  # below half, a block alone would run slower than beside another: not monotone
            lambda d: {**d, "prefill_attention": {"multiprocessors": 132, "solo_rate": 0.4}},
            "solo_rate (from 0.5 to 1.0)",
        ),
        (lambda d: {k: v for k, v in d.items() if k != "coefficients"}, "missing field(s) coefficients"),
        (
            lambda d: {**d, "coefficients": {**d["coefficients"], "copy": {"fixed": -1, "blocks": 1}}},
            "copy.fixed must be a non-negative number",
        ),
        (lambda d: {**d, "provenance": {"kind": "guessed"}}, "provenance.kind"),
        (lambda d: {**d, "tensor_parallel": "1"}, "tensor_parallel must be a positive integer"),
        (lambda d: {**d, "graph_batch_sizes": [4, 2]}, "graph_batch_sizes"),
        (lambda d: {**d, "grid": {}}, "grid.decode.batch"),
        (lambda d: {k: v for k, v in d.items() if k != "prefill_tokens"}, "missing field(s) prefill_tokens"),
        (
            lambda d: {**d, "prefill_tokens": {"tokens": [16, 8], "seconds": [1.0, 2.0], "weights_s": 0.5}},
            "increasing token counts",
        ),
        (
            lambda d: {**d, "prefill_tokens": {"tokens": [16, 32], "seconds": [1.0, 0.5], "weights_s": 0.5}},
            "non-decreasing",
        ),
        (lambda d: {**d, "prefill_tokens": {"tokens": [16, 32]}}, "prefill_tokens must hold"),
        (
            lambda d: {**d, "prefill_padding": {**d["prefill_padding"], "multiple": 64}},
            "measured at every padded prefill size",
        ),
        (
            lambda d: {**d, "prefill_padding": {"sizes": [32, 16], "multiple": 128}},
            "prefill_padding must give",
        ),
        (lambda d: {**d, "prefill_padding": {"sizes": [16, 32], "multiple": 0}}, "prefill_padding must give"),
    ],
)
def test_bad_profiles_give_one_clear_error(tmp_path, synthetic_profile, mutate, message):
    path = _write(tmp_path, mutate(synthetic_profile))
    with pytest.raises(KvsimError, match="profile .*p.json") as err:
        load_profile(path)
    assert message in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(KvsimError, match="cannot be read"):
        load_profile(tmp_path / "absent.json")


def test_default_run_uses_the_derived_a100_profile():
    config = SimConfig()
    model, gpu = load_model(config.model), load_gpu(config.gpu)
    cost = select_cost_model(config, model, gpu)
    assert isinstance(cost, ProfileCostModel) and cost.kind == "derived"
    assert cost.name == "profile:opt-13b@a100-40gb"
    described = cost.describe()
    assert described["kind"] == "derived" and described["provenance"]["from"] == "opt-13b@h100-sxm-80gb"


def test_no_profile_falls_back_to_roofline_with_a_note(capsys):
    config = SimConfig(model="opt-66b", gpu="h200-141gb")
    cost = select_cost_model(config, load_model("opt-66b"), load_gpu("h200-141gb"))
    assert isinstance(cost, RooflineCostModel)
    assert "analytic roofline" in capsys.readouterr().err


def test_profile_of_another_model_is_an_error(tmp_path, synthetic_profile):
    path = save_profile(synthetic_profile, tmp_path / "opt.json")
    config = SimConfig(model="llama-2-7b", gpu="h100-sxm-80gb", profile=str(path))
    with pytest.raises(KvsimError, match="measured for opt-13b, not llama-2-7b"):
        select_cost_model(config, load_model("llama-2-7b"), load_gpu("h100-sxm-80gb"))


def test_profile_of_another_gpu_is_an_error(tmp_path, synthetic_profile):
    path = save_profile(synthetic_profile, tmp_path / "opt.json")
    config = SimConfig(profile=str(path))
    with pytest.raises(KvsimError, match="prices h100-sxm-80gb, but the run is on a100-40gb"):
        select_cost_model(config, load_model("opt-13b"), load_gpu("a100-40gb"))
