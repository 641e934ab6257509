"""LLM deployments on the simulated shared GPU, with hand-made step chains (no measured numbers:
a step's kernels take round durations that grow with its size, so larger steps take longer)."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from gpushare_chains import SMALL_GPU, profile_kernel

from kvsim.engine.metrics import STATUS_COMPLETED, STATUS_REJECTED
from kvsim.errors import KvsimError
from kvsim.experiments.gpushare_llm import (
    LLMPlacement,
    check_placements,
    colocate,
    deployment,
    placement_config,
)
from kvsim.gpushare.kernels import PROFILE_FORMAT
from kvsim.gpushare.llm import simulate_llms
from kvsim.gpushare.llm_chains import (
    STEPS_FORMAT,
    StepOutOfRangeWarning,
    load_step_chains,
    step_chains_from_doc,
    step_profile_path,
)
from kvsim.workloads.trace import Trace

GPU = "h200-141gb"
DECODE_SIZES = (1, 8, 64, 256)
PREFILL_SIZES = (256, 2048, 16384)
MODELS = ("llama-2-7b", "opt-13b")


def steps_doc(model: str, scale: float = 1.0, decode=DECODE_SIZES, prefill=PREFILL_SIZES) -> dict:
    """A step profile whose steps take ``scale`` x round durations growing with their size."""

    def profile(kernels):
        return {"format": PROFILE_FORMAT, "model": model, "gpu": {"name": GPU}, "kernels": kernels}

    steps = [
        {"kind": "decode", "size": b, "profile": profile([profile_kernel(scale * (200 + b), 64)] * 3)}
        for b in decode
    ] + [
        {"kind": "prefill", "size": t, "profile": profile([profile_kernel(scale * (100 + t / 4), 512)] * 2)}
        for t in prefill
    ]
    return {"format": STEPS_FORMAT, "model": model, "gpu": {"name": GPU}, "steps": steps}


@pytest.fixture
def chains(tmp_path):
    for model, scale in zip(MODELS, (1.0, 1.8)):
        step_profile_path(tmp_path, model, GPU).write_text(json.dumps(steps_doc(model, scale)))
    return {model: load_step_chains(tmp_path, model, GPU, SMALL_GPU) for model in MODELS}


def configs(num_requests=12, rates=(4.0, 3.0), seed=0):
    return [
        placement_config(LLMPlacement(m, r, 0.5), i, GPU, num_requests, seed)
        for i, (m, r) in enumerate(zip(MODELS, rates))
    ]


def test_every_request_completes_or_is_rejected(chains):
    config = configs()[0]
    # ShareGPT requests, and one longer than the model's context: it can only be rejected.
    base = deployment(config, chains[config.model])[0].trace
    trace = Trace(
        "with-too-long",
        np.append(base.arrival_time, base.arrival_time[-1] + 0.1),
        np.append(base.prompt_len, 5000),
        np.append(base.output_len, 10),
    )
    shared = [
        deployment(config, chains[config.model], trace)[0],
        deployment(configs()[1], chains["opt-13b"])[0],
    ]
    simulate_llms(shared, "paella-srpt", SMALL_GPU)
    for d in shared:
        status = d.core.recorder.status
        assert set(status) <= {STATUS_COMPLETED, STATUS_REJECTED}
        assert (status == STATUS_COMPLETED).sum() > 0
    assert shared[0].core.recorder.status[-1] == STATUS_REJECTED


@pytest.mark.parametrize("policy", ["cuda-multi-stream", "paella-srpt", "paella-kernel-fifo"])
def test_an_llm_alone_runs_each_step_as_its_chain(chains, policy):
    config = configs()[1]
    alone = deployment(config, chains[config.model])[0]
    steps = simulate_llms([alone], policy, SMALL_GPU)
    assert len(steps) == len(alone.core.recorder.steps)
    np.testing.assert_allclose(steps.end - steps.start, steps.chain_alone_s, rtol=1e-9)
    measured = {
        kind: np.array(sizes) for kind, sizes in (("decode", DECODE_SIZES), ("prefill", PREFILL_SIZES))
    }
    for row in steps.itertuples():
        sizes = measured[row.kind]
        assert row.chain == f"{config.model} {row.kind} {sizes[sizes >= row.size].min()}"
    # the engine recorded each step with the time its job took
    recorded = alone.core.recorder.steps_frame()
    np.testing.assert_allclose(recorded.duration.to_numpy(), (steps.end - steps.start).to_numpy())


def test_sharing_the_gpu_makes_no_llm_faster(chains):
    table, _ = colocate(configs(), chains, "paella-srpt", SMALL_GPU)
    shared = table[table.placement == "shared"]
    assert len(shared) == len(MODELS)
    for metric in ("tpot_s_mean_slowdown", "normalized_latency_s_per_token_slowdown"):
        assert (shared[metric] >= 1).all(), shared[["model", metric]]
    # and sharing costs something: both engines' steps overlap on four SMs
    assert (shared.normalized_latency_s_per_token_slowdown > 1).any()


def test_same_seed_same_output(chains):
    first = colocate(configs(num_requests=6), chains, "cuda-multi-stream", SMALL_GPU)
    second = colocate(configs(num_requests=6), chains, "cuda-multi-stream", SMALL_GPU)
    pd.testing.assert_frame_equal(first[0], second[0])
    pd.testing.assert_frame_equal(first[1], second[1])


def test_a_step_beyond_the_measured_range_is_stretched_with_a_warning():
    chains = step_chains_from_doc(steps_doc("opt-13b"), "opt-13b", GPU, "test")
    largest = max(DECODE_SIZES)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        measured, ran = chains.for_step("decode", 2 * largest)
        chains.for_step("decode", 3 * largest)
    assert [w.category for w in caught] == [StepOutOfRangeWarning]  # once per kind
    assert measured.model == f"opt-13b decode {largest}"
    assert ran.alone_s == pytest.approx(2 * measured.alone_s)
    below, same = chains.for_step("decode", 2)
    assert below is same and below.model == "opt-13b decode 8"  # never below the step's size


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["steps"][0].update(kind="mixed"), "kind must be one of"),
        (lambda d: d["steps"][0].update(size=0), "size must be a positive integer"),
        (lambda d: d.update(steps=[s for s in d["steps"] if s["kind"] == "decode"]), "no prefill steps"),
        (lambda d: d["steps"][1]["profile"].update(kernels=[]), "kernels must be a non-empty list"),
        (lambda d: d["steps"].append(dict(d["steps"][0])), "a second decode step of size 1"),
    ],
)
def test_a_bad_step_profile_is_refused_in_one_line(edit, message):
    doc = steps_doc("opt-13b")
    edit(doc)
    with pytest.raises(KvsimError, match=message) as err:
        step_chains_from_doc(doc, "opt-13b", GPU, "test")
    assert "\n" not in str(err.value)


def test_missing_profiles_and_bad_placements_are_refused(tmp_path):
    with pytest.raises(KvsimError, match="gpushare profile --llm opt-13b"):
        load_step_chains(tmp_path, "opt-13b", GPU, SMALL_GPU)
    with pytest.raises(KvsimError, match="sum to 1.2"):
        check_placements([LLMPlacement("a", 1, 0.6), LLMPlacement("b", 1, 0.6)], 10)
    with pytest.raises(KvsimError, match="twice"):
        check_placements([LLMPlacement("a", 1, 0.5), LLMPlacement("a", 1, 0.5)], 10)


def test_mps_is_refused_for_llm_deployments(chains):
    config = configs()[0]
    with pytest.raises(KvsimError, match="mps"):
        simulate_llms([deployment(config, chains[config.model])[0]], "mps", SMALL_GPU)


def test_the_llm_command_writes_shared_and_alone_rows_per_model(tmp_path):
    from typer.testing import CliRunner

    from kvsim.cli import EXIT_BAD_INPUT, app

    for model in MODELS:
        step_profile_path(tmp_path, model, GPU).write_text(json.dumps(steps_doc(model)))
    out = tmp_path / "llm"
    args = ["gpushare", "llm", "--profiles", str(tmp_path), "--num-requests", "3", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "llm.csv")
    assert sorted(zip(table.model, table.placement)) == sorted(
        (m, p) for m in MODELS for p in ("alone", "shared")
    )
    assert (table.completed + table.rejected == 3).all()
    steps = pd.read_csv(out / "llm-steps.csv")
    assert set(steps.llm) == set(MODELS)
    bad = CliRunner().invoke(app, [*args, "--memory-shares", "0.7,0.7"])
    assert bad.exit_code == EXIT_BAD_INPUT and "sum to 1.4" in bad.output
