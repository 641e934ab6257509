"""Eager profiles (the runner measured with CUDA graphs off, as vLLM's 2023 engine ran): named
``MODEL-eager@GPU``, found by ``--eager``, kept eager by a transfer, checked eagerly, and used
by the paper report where one is shipped. The GPU side (``Calibrator(graphs=False)``) is run on
the device; here it is faked and its plumbing is real."""

import copy
import json

import numpy as np
import pytest
from synthetic_steps import H100, NOISE, SPEC, fit
from test_profile_refusals import assert_refused_by_run, changed, refusal, write_profile
from typer.testing import CliRunner

from kvsim.calibration.transfer import derive_profile
from kvsim.cli import app
from kvsim.config import SimConfig
from kvsim.cost import select_cost_model
from kvsim.cost.profile import is_eager, profile_name, validate
from kvsim.errors import KvsimError
from kvsim.hardware import BUILTIN_GPUS, load_gpu
from kvsim.models import ModelSpec, load_model


@pytest.fixture(scope="module")
def eager_profile(raw_points) -> dict:
    return fit({**raw_points, "graphs": False})


def test_an_eager_calibration_is_named_and_marked_eager(eager_profile, synthetic_profile):
    assert eager_profile["name"] == "opt-13b-eager@h100-sxm-80gb" == profile_name("opt-13b", H100.name, True)
    assert is_eager(eager_profile) and eager_profile["provenance"]["by"] == "simcli calibrate --eager"
    assert synthetic_profile["name"] == "opt-13b@h100-sxm-80gb" and not is_eager(synthetic_profile)


def test_a_profile_from_before_the_field_replayed_graphs(synthetic_profile):
    old = copy.deepcopy(synthetic_profile)
    del old["graphs"]
    assert not is_eager(validate(old, "old"))


@pytest.mark.parametrize("value", ["false", 0, None])
def test_graphs_must_be_true_or_false(tmp_path, synthetic_profile, value):
    assert_refused_by_run(write_profile(tmp_path, changed(synthetic_profile, ("graphs",), value)), "graphs")


# An eager runner's host issues a decode step in this long (seconds, fixed and per sequence):
# longer than the synthetic GPU's work at small batches and contexts, shorter at large ones.
ISSUE = {"fixed": 0.03, "batch": 1e-5}


def _host_issued(raw: dict, seed: int = 1) -> dict:
    """``raw``'s decode points as an eager runner times them: the host issues a step in
    ``ISSUE`` (with the points' noise), and the GPU part ends no sooner."""
    rng = np.random.default_rng(seed)
    decode = []
    for p in raw["decode"]:
        issue = (ISSUE["fixed"] + ISSUE["batch"] * p["batch"]) * (1 + NOISE * rng.standard_normal())
        gpu = max(p["gpu_s"], issue)
        decode.append({**p, "issue_s": issue, "gpu_s": gpu, "wall_s": p["wall_s"] - p["gpu_s"] + gpu})
    return {**raw, "decode": decode, "graphs": False}


def test_an_eager_fit_prices_a_step_at_the_longer_of_the_hosts_issue_and_the_gpus_work(raw_points):
    raw = _host_issued(raw_points)
    paced_by_host = [p["gpu_s"] == p["issue_s"] for p in raw["decode"]]
    assert 0.2 < np.mean(paced_by_host) < 0.8  # both kinds of step are in the data
    doc = fit(raw)
    issue = doc["coefficients"]["issue"]
    assert issue["fixed"] == pytest.approx(ISSUE["fixed"], rel=0.02)
    assert issue["batch"] == pytest.approx(ISSUE["batch"], abs=2e-6)
    assert doc["fit_report"]["decode"]["heldout"]["mape"] < 0.01
    # Without the host's issue measured, one set of decode terms cannot follow both kinds.
    blind = fit({**raw, "decode": [{k: v for k, v in p.items() if k != "issue_s"} for p in raw["decode"]]})
    assert "issue" not in blind["coefficients"]
    assert (
        blind["fit_report"]["decode"]["heldout"]["mape"] > 3 * doc["fit_report"]["decode"]["heldout"]["mape"]
    )


def test_a_derived_eager_profile_stays_eager(eager_profile):
    derived = validate(derive_profile(eager_profile, BUILTIN_GPUS["a100-40gb"]), "derived")
    assert derived["name"] == "opt-13b-eager@a100-40gb" and is_eager(derived)


# -- simcli calibrate --eager ---------------------------------------------------------------------


@pytest.fixture
def fake_gpu(monkeypatch, raw_points, cuda_h100):
    """An H100 as far as calibrate can tell, and a Calibrator that records how it was made and
    returns the synthetic measurements (with the runner mode it was given)."""
    made = []

    class Calibrator:
        def __init__(self, spec, block_size, grid, log, graphs):
            made.append({"model": spec.name, "block_size": block_size, "graphs": graphs})
            self.graphs = graphs

        def run(self):
            return {**raw_points, "graphs": self.graphs}

    monkeypatch.setattr("kvsim.calibration.measure.Calibrator", Calibrator)
    return made


@pytest.mark.parametrize(
    "eager, written", [(True, "opt-13b-eager@h100-sxm-80gb.json"), (False, "opt-13b@h100-sxm-80gb.json")]
)
def test_calibrate_eager_measures_without_graphs_and_writes_the_eager_profile(
    monkeypatch, tmp_path, fake_gpu, eager, written
):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["calibrate", "--model", "opt-13b", *(["--eager"] if eager else [])])
    assert result.exit_code == 0, result.output
    assert fake_gpu == [{"model": "opt-13b", "block_size": 16, "graphs": not eager}]
    doc = json.loads((tmp_path / written).read_text())
    assert is_eager(doc) == eager and f"{doc['name']}.json" == written


def test_check_and_block_sizes_only_are_not_one_command():
    result = CliRunner().invoke(app, ["calibrate", "--check", "--block-sizes-only"])
    assert result.exit_code == 2 and "--check and --block-sizes-only" in result.output


def test_the_check_of_an_eager_profile_times_its_anchors_eagerly(
    monkeypatch, eager_profile, synthetic_profile
):
    from kvsim.calibration import check

    asked = []

    def measure_anchors(spec, block_size, log, graphs=True):
        asked.append(graphs)
        raise KvsimError("stop: the anchors need a GPU")

    monkeypatch.setattr(check, "measure_anchors", measure_anchors)
    for doc in (eager_profile, synthetic_profile):
        with pytest.raises(KvsimError, match="stop"):
            check.run_check(SPEC, doc, None, 0.03)
    assert asked == [False, True]


def test_validate_calibrates_an_eager_profile_for_an_eager_point(monkeypatch, tmp_path):
    from kvsim.experiments.validate import with_fresh_profiles

    calibrated = []

    def calibrate(model, out, block_size, log, eager):
        calibrated.append((model, block_size, eager))
        return {}, out

    monkeypatch.setattr("kvsim.calibration.calibrate.calibrate", calibrate)
    configs = [SimConfig(eager=True), SimConfig(eager=False), SimConfig(eager=True, rate=3.0)]
    fresh = with_fresh_profiles(configs, tmp_path)
    assert calibrated == [("opt-13b", 16, True), ("opt-13b", 16, False)]
    assert fresh[0].profile == fresh[2].profile != fresh[1].profile


# -- choosing the eager profile ---------------------------------------------------------------------


@pytest.fixture
def shipped(monkeypatch, tmp_path):
    """An empty folder of shipped profiles, and a function that ships a profile into it."""
    folder = tmp_path / "shipped"
    folder.mkdir()
    monkeypatch.setattr("kvsim.cost.profile.SHIPPED_DIR", folder)

    def ship(doc: dict) -> None:
        (folder / f"{doc['name']}.json").write_text(json.dumps(doc))

    return ship


def cost_of(**settings):
    config = SimConfig(model="opt-13b", gpu="h100-sxm-80gb", **settings)
    return select_cost_model(config, load_model("opt-13b"), load_gpu("h100-sxm-80gb"))


def test_eager_runs_pick_the_eager_profile_and_others_the_graph_one(
    shipped, synthetic_profile, eager_profile
):
    shipped(synthetic_profile)
    shipped(eager_profile)
    assert cost_of(eager=True).name == "profile:opt-13b-eager@h100-sxm-80gb"
    assert cost_of().name == "profile:opt-13b@h100-sxm-80gb"


def test_eager_without_an_eager_profile_is_refused_in_one_line(shipped, synthetic_profile):
    shipped(synthetic_profile)  # the graph profile is no stand-in, nor is the roofline
    line = refusal("--gpu", "h100-sxm-80gb", "--eager")
    assert "no eager profile opt-13b-eager@h100-sxm-80gb" in line and "simcli calibrate --eager" in line


def test_eager_with_a_named_graph_profile_is_refused(tmp_path, synthetic_profile, eager_profile):
    assert_refused_by_run(write_profile(tmp_path, synthetic_profile), "CUDA graphs", "--eager")
    named = SimConfig(gpu="h100-sxm-80gb", profile=str(write_profile(tmp_path, eager_profile)), eager=True)
    assert select_cost_model(named, load_model("opt-13b"), load_gpu("h100-sxm-80gb")).name.endswith(
        "-eager@h100-sxm-80gb"
    )


def test_the_paper_report_uses_an_eager_profile_where_one_is_shipped_and_says_so(shipped, eager_profile):
    from kvsim.experiments.paper import base_config, describe, runner_text

    assert not base_config().eager  # none shipped for opt-13b on the A100-40GB
    assert "no eager profile is shipped" in runner_text(base_config())
    shipped(derive_profile(eager_profile, BUILTIN_GPUS["a100-40gb"]))
    config = base_config()
    assert config.eager and not base_config(model="llama-2-7b").eager
    assert "eager profile" in describe(config, 10) and "opt-13b-eager@a100-40gb" in runner_text(config)


def test_the_runner_repeats_its_last_decode_forward_pass():
    """What calibration times as a decode step's GPU time, eager or replayed: the forward pass
    of the last step's inputs, run again (here eager, on CPU)."""
    from kvsim.gpu.runner import ModelRunner

    spec = ModelSpec("tiny", "opt", 32, 2, 4, 4, 8, 64, 50, 64, dtype="float32")
    runner = ModelRunner(spec, num_blocks=16, block_size=4, device="cpu")
    for cache in runner.caches:
        cache.normal_()
    logits = runner.decode([3, 7], [5, 9], [[0, 1], [2, 3, 4]])
    np.testing.assert_array_equal(runner.last_decode().numpy(), logits.numpy())
