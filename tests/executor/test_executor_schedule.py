"""The real executor drives the simulator's own scheduler and block manager: given the same
step times, it must produce the very schedule the simulator produces; given other step times
(a GPU slower than the cost model), it must keep time by what it measured."""

import numpy as np
import pandas as pd
import pytest
from fake_device import ScaledCost

torch = pytest.importorskip("torch")

from kvsim.cost.roofline import RooflineCostModel  # noqa: E402
from kvsim.engine.metrics import KV_SLOT_COLUMNS  # noqa: E402
from kvsim.gpu.executor import STEP_COLUMNS, RealExecutor  # noqa: E402
from kvsim.gpu.runner import ModelRunner  # noqa: E402
from kvsim.hardware import load_gpu  # noqa: E402
from kvsim.models import spec_from_hf_config  # noqa: E402
from kvsim.policies.registry import PolicyContext, get_policy  # noqa: E402
from kvsim.sim.cluster import RoundRobinRouter  # noqa: E402
from kvsim.sim.engine import simulate  # noqa: E402
from kvsim.workloads.sampling import add_sampling  # noqa: E402
from kvsim.workloads.trace import Trace  # noqa: E402

TINY = spec_from_hf_config(
    {
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "vocab_size": 97,
        "max_position_embeddings": 256,
    },
    "tiny-llama",
    dtype="float32",
)
NUM_BLOCKS, BLOCK_SIZE = 24, 4
SLOWDOWN = 1.25  # the fake GPU's step time over the cost model's price, in the tests that use it


def tiny_trace(n=14, seed=3, spread=0.05):
    """``n`` requests arriving within ``spread`` seconds (0: all at t = 0)."""
    rng = np.random.default_rng(seed)
    return Trace("tiny", np.sort(rng.uniform(0, spread, n)), rng.integers(2, 30, n), rng.integers(1, 25, n))


def roofline():
    return RooflineCostModel(TINY, load_gpu("a100-40gb"), BLOCK_SIZE)


def scheduler(preemption="recompute", step_scheduler="v0", budget=64):
    context = PolicyContext(
        NUM_BLOCKS,
        BLOCK_SIZE,
        max_num_seqs=6,
        max_num_batched_tokens=budget,
        max_model_len=256,
        preemption=preemption,
        swap_blocks=64,
        scheduler=step_scheduler,
    )
    return get_policy("paged").build(context)


@pytest.mark.parametrize(
    "preemption, n, beam", [("recompute", 1, 1), ("swap", 1, 1), ("swap", 2, 1), ("recompute", 1, 2)]
)
def test_executor_reproduces_the_simulated_schedule(preemption, n, beam):
    trace = add_sampling(tiny_trace(), n=n, beam_width=beam)
    cost = roofline()
    simulated = simulate(trace, [scheduler(preemption)], cost, RoundRobinRouter())

    runner = ModelRunner(
        TINY, NUM_BLOCKS, BLOCK_SIZE, dtype="float32", device="cpu", seed=0, num_host_blocks=64
    )
    moved = {"swap_out": 0, "copy_blocks": 0}
    for name in moved:  # count the block moves the executor really performs

        def counting(pairs, real=getattr(runner, name), name=name):
            moved[name] += len(pairs)
            real(pairs)

        setattr(runner, name, counting)
    executor = RealExecutor(
        scheduler(preemption),
        runner,
        step_clock=lambda plan: float(cost.plan_durations(plan)[0]),
        predictor=cost,
    )
    executed = executor.run(trace)

    sim, real = simulated.requests_frame(), executed.requests_frame()
    assert sim.preemptions.sum() > 0, "the test must exercise preemption"
    assert (moved["swap_out"] > 0) == (preemption == "swap")
    assert (moved["copy_blocks"] > 0) == (n > 1 or beam > 1)  # copy-on-write of shared tails
    same = ["status", "prompt_len", "output_len", "preemptions", "recomputed_tokens"]
    pd.testing.assert_frame_equal(sim[same], real[same])
    for column in ("admitted", "first_token", "finish"):  # same admission order and timing
        np.testing.assert_allclose(real[column], sim[column], rtol=1e-9)
    assert int(simulated.steps_frame().steps.sum()) == len(executed.steps)
    # One engine core behind both clocks: the same event counters, forks, copies and swaps too.
    assert executed.counters == simulated.counters
    assert executed.counters.swap_out_blocks == moved["swap_out"]
    assert executed.counters.block_copies == moved["copy_blocks"]
    steps = pd.DataFrame(executor.step_times, columns=STEP_COLUMNS)
    np.testing.assert_allclose(steps.measured_s, steps.predicted_s)


def test_executor_reproduces_the_v1_schedule_of_chunks_and_mixed_steps():
    """v1 with a 12-token budget: prompts of up to 30 tokens run in chunks beside decodes, so
    the executor runs prefill, decode and mixed steps through the CPU runner, and keeps the
    simulator's schedule: who is admitted, chunked, preempted, and when each token comes."""
    trace = tiny_trace()
    cost = roofline()
    simulated = simulate(trace, [scheduler("recompute", "v1", budget=12)], cost, RoundRobinRouter())
    runner = ModelRunner(TINY, NUM_BLOCKS, BLOCK_SIZE, dtype="float32", device="cpu", seed=0)
    executor = RealExecutor(
        scheduler("recompute", "v1", budget=12),
        runner,
        step_clock=lambda plan: float(cost.plan_durations(plan)[0]),
        predictor=cost,
    )
    executed = executor.run(trace)
    sim, real = simulated.requests_frame(), executed.requests_frame()
    kinds = set(simulated.steps_frame().kind)
    assert {"prefill", "decode", "mixed"} <= kinds or {"decode", "mixed"} <= kinds, kinds
    same = ["status", "prompt_len", "output_len", "preemptions", "recomputed_tokens"]
    pd.testing.assert_frame_equal(sim[same], real[same])
    for column in ("admitted", "first_token", "finish"):
        np.testing.assert_allclose(real[column], sim[column], rtol=1e-9)
    assert executed.counters == simulated.counters
    real_steps = executed.steps_frame()
    assert int(simulated.steps_frame().steps.sum()) == len(real_steps)
    assert real_steps.prefill_tokens.sum() == simulated.steps_frame().prefill_tokens.sum()


@pytest.mark.parametrize("preemption, n", [("recompute", 1), ("swap", 2)])
def test_a_slower_gpu_stretches_the_schedule(fake_gpu, preemption, n):
    """Every step on the fake GPU takes 1.25x the cost model's price. With every request there
    at t = 0, arrival times cannot steer the scheduler, so the executor runs the simulated
    schedule batch for batch, only slower: its clock advances by the measured step times, so
    every time it records is 1.25x the simulated one, and each step logs its measured time
    1.25x its (unscaled) prediction."""
    trace = add_sampling(tiny_trace(spread=0), n=n)
    cost = roofline()
    simulated = simulate(trace, [scheduler(preemption)], cost, RoundRobinRouter())
    executor = RealExecutor(
        scheduler(preemption), fake_gpu(ScaledCost(cost, SLOWDOWN), TINY.vocab_size), predictor=cost
    )
    executed = executor.run(trace)

    sim, real = simulated.requests_frame(), executed.requests_frame()
    assert sim.preemptions.sum() > 0, "the test must exercise preemption"
    same = ["status", "preemptions", "recomputed_tokens"]
    pd.testing.assert_frame_equal(sim[same], real[same])
    for column in ("admitted", "first_token", "finish"):
        np.testing.assert_allclose(real[column], SLOWDOWN * sim[column], rtol=1e-9)
    sim_steps, real_steps = simulated.steps_frame(), executed.steps_frame()
    # Block moves are priced too: the swap case (two samples a request) swaps and copies.
    assert (
        (real_steps.swap_out_blocks.sum() > 0)
        == (real_steps.block_copies.sum() > 0)
        == (preemption == "swap")
    )
    for column in ("kind", "num_seqs"):  # a simulated run of decode steps is one row
        np.testing.assert_array_equal(real_steps[column], np.repeat(sim_steps[column], sim_steps.steps))
    logged = pd.DataFrame(executor.step_times, columns=STEP_COLUMNS)
    np.testing.assert_allclose(logged.measured_s, SLOWDOWN * logged.predicted_s, rtol=1e-9)
    np.testing.assert_allclose(real_steps.duration, logged.measured_s, rtol=1e-9)


def test_a_slower_gpu_keeps_the_schedule_of_its_own_step_times(fake_gpu):
    """With requests arriving while it works, a GPU 1.25x slower than the cost model may
    batch them otherwise than the simulation at the cost model's prices would; what must
    hold is that it serves them as the simulator does at the prices it measures (the cost
    model scaled by 1.25): the same admissions, first tokens and finishes, to the float."""
    trace, cost = tiny_trace(), roofline()
    simulated = simulate(trace, [scheduler()], ScaledCost(cost, SLOWDOWN), RoundRobinRouter())
    executed = RealExecutor(
        scheduler(), fake_gpu(ScaledCost(cost, SLOWDOWN), TINY.vocab_size), predictor=cost
    ).run(trace)
    sim, real = simulated.requests_frame(), executed.requests_frame()
    assert sim.preemptions.sum() > 0, "the test must exercise preemption"
    pd.testing.assert_frame_equal(sim[["status", "preemptions"]], real[["status", "preemptions"]])
    for column in ("admitted", "first_token", "finish"):
        np.testing.assert_allclose(real[column], sim[column], rtol=1e-9)


def test_executor_measures_wall_time_by_default():
    trace = tiny_trace(n=4)
    runner = ModelRunner(TINY, NUM_BLOCKS, BLOCK_SIZE, dtype="float32", device="cpu", seed=0)
    recorder = RealExecutor(scheduler(), runner).run(trace)
    requests = recorder.requests_frame()
    assert (requests.status == "completed").all()
    assert (requests.finish > requests.first_token).any() and (requests.ttft > 0).all()
    slots = recorder.steps_frame()[list(KV_SLOT_COLUMNS)]  # the waste breakdown, as simulated runs have it
    assert slots.notna().all().all() and (slots.sum(axis=1) == NUM_BLOCKS * BLOCK_SIZE).all()


def test_engine_time_is_the_step_outside_the_runner():
    """Each step's engine time (scheduling, bookkeeping) is positive and a part of the step."""
    runner = ModelRunner(TINY, NUM_BLOCKS, BLOCK_SIZE, dtype="float32", device="cpu", seed=0)
    executor = RealExecutor(scheduler(), runner)
    executor.run(tiny_trace(n=4))
    steps = pd.DataFrame(executor.step_times, columns=STEP_COLUMNS)
    assert len(steps) > 0
    assert (steps.engine_s > 0).all() and (steps.engine_s < steps.measured_s).all()
