"""kvsim.simulate: the run `simcli run` makes, as DataFrames, with one's own cost model if given."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import kvsim
from kvsim.cli import app
from kvsim.config import SimConfig
from kvsim.cost import select_cost_model
from kvsim.cost.cost_model import CostModel
from kvsim.errors import KvsimError

SMALL = {"num_requests": 40, "rate": 4.0}
STEP_S = 0.01


class FixedStep(CostModel):
    """Every step takes STEP_S, whatever its batch; moving blocks costs nothing."""

    name, kind = "fixed-step", "analytic"

    def prefill_time(self, new_tokens, context_lens):
        return STEP_S

    def decode_times(self, batch_size, total_context, steps):
        return np.full(steps, STEP_S)

    def copy_time(self, num_blocks):
        return 0.0

    def swap_time(self, num_blocks):
        return 0.0


def test_simulate_gives_the_tables_simcli_run_writes(tmp_path):
    result = kvsim.simulate(SimConfig(**SMALL))
    result.write(tmp_path / "api")
    cli = CliRunner().invoke(
        app, ["run", "--num-requests", "40", "--rate", "4", "--out", str(tmp_path / "cli")]
    )
    assert cli.exit_code == 0, cli.output
    for name in ("requests.csv", "iterations.csv", "summary.json", "config.json"):
        assert (tmp_path / "api" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name
    assert (
        len(result.requests) == 40
        and result.summary["completed"] == (result.requests.status == "completed").sum()
    )
    assert result.steps["steps"].sum() == result.summary["num_steps"]


def test_a_config_can_be_a_dict_a_file_or_keywords(tmp_path):
    first = kvsim.simulate(SMALL)
    first.write(tmp_path)
    from_file = kvsim.simulate(tmp_path / "config.json")
    from_keywords = kvsim.simulate(**SMALL)
    for other in (from_file, from_keywords):
        assert other.config == first.config
        pd.testing.assert_frame_equal(other.requests, first.requests)
    # Keywords override the config they come with.
    assert kvsim.simulate(SMALL, rate=8.0).config.rate == 8.0


@pytest.mark.parametrize("as_factory", [False, True])
def test_ones_own_cost_model_prices_every_step(as_factory):
    given = (lambda config, model, gpu: FixedStep()) if as_factory else FixedStep()
    result = kvsim.simulate(SMALL, cost_model=given)
    assert result.run.cost_model.name == "fixed-step"
    np.testing.assert_allclose(result.steps["duration"], STEP_S * result.steps["steps"])
    assert "fixed-step" in result.caption


def test_a_factory_sees_the_runs_model_and_gpu_and_can_wrap_the_shipped_model():
    seen = {}

    class Slower(FixedStep):
        name = "shipped, doubled"

        def __init__(self, base):
            self.base = base

        def prefill_time(self, new_tokens, context_lens):
            return 2 * self.base.prefill_time(new_tokens, context_lens)

        def decode_times(self, batch_size, total_context, steps):
            return 2 * self.base.decode_times(batch_size, total_context, steps)

        def mixed_time(self, new_tokens, context_lens):
            return 2 * self.base.mixed_time(new_tokens, context_lens)

    def factory(config, model, gpu):
        seen.update(model=model.name, gpu=gpu.name)
        return Slower(select_cost_model(config, model, gpu))

    plain = kvsim.simulate(SMALL, model="llama-2-7b", gpu="a100-80gb")
    slower = kvsim.simulate(SMALL, model="llama-2-7b", gpu="a100-80gb", cost_model=factory)
    assert seen == {"model": "llama-2-7b", "gpu": "a100-80gb"}
    # The first step (the first request's prompt) is the same batch in both runs.
    assert slower.steps["duration"].iloc[0] == pytest.approx(2 * plain.steps["duration"].iloc[0])
    assert slower.summary["ttft_s_mean"] > plain.summary["ttft_s_mean"]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: kvsim.simulate(rate=-1.0), "--rate must be positive"),
        (lambda: kvsim.simulate(42), "config must be a SimConfig"),
        (lambda: kvsim.simulate(SMALL, cost_model="fast"), "cost_model must be a CostModel"),
    ],
)
def test_bad_arguments_raise_before_running(call, message):
    with pytest.raises(KvsimError, match=message):
        call()


def test_the_result_writes_its_timeline_and_figures(tmp_path):
    result = kvsim.simulate(SMALL)
    assert result.write_timeline(tmp_path / "t.json").stat().st_size > 0
    assert [p.name for p in result.write_figures(tmp_path / "figs")] == [
        "kv_and_queue.png",
        "latency_cdf.png",
        "request_scatter.png",
    ]
