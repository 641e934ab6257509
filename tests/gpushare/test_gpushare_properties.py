"""Invariants of every shared-GPU run, over random chains, arrivals and policies: no SM ever
holds more than it has, every kernel of every job runs exactly once and in order (each a launch
gap after the one before), no job runs faster than alone, and a run repeats exactly, with
launch latencies and interference or without."""

import numpy as np
import pandas as pd
from gpushare_chains import SMALL_GPU, US
from hypothesis import given, settings
from hypothesis import strategies as st

from kvsim.gpushare.kernels import Kernel, KernelChain, sm_capacity
from kvsim.gpushare.policies.base import DispatchSettings
from kvsim.gpushare.policies.registry import POLICIES
from kvsim.gpushare.simulate import simulate
from kvsim.gpushare.workloads import JobStream, Mix

kernels = st.builds(
    Kernel,
    name=st.just("k"),
    duration_s=st.integers(1, 200).map(lambda us: us * US),
    blocks=st.integers(1, 40),
    threads_per_block=st.sampled_from([32, 64, 96, 128, 256, 512, 1024]),
    registers_per_thread=st.integers(0, 255),
    shared_memory_bytes=st.integers(0, 120 * 1024),
).filter(lambda k: k.blocks_per_sm(SMALL_GPU) >= 1)  # a real kernel's block fits an SM


launch_gaps = st.sampled_from([0.0, 1 * US, 7 * US])


@st.composite
def scenarios(draw):
    num_models = draw(st.integers(1, 3))
    models = tuple(f"m{i}" for i in range(num_models))
    chains = {
        m: KernelChain(
            m,
            tuple(draw(st.lists(kernels, min_size=1, max_size=5))),
            launch_gap_s=draw(launch_gaps),
            interference=draw(st.sampled_from([0.0, 0.5, 2.0])),
            launch_latency_s=draw(launch_gaps) * 3,
        )
        for m in models
    }
    caps = tuple(draw(st.lists(st.integers(1, 4), min_size=num_models, max_size=num_models)))
    mix = Mix("random", models, (1.0,) * num_models, caps)
    num_jobs = draw(st.integers(1, 12))
    gaps = draw(st.lists(st.integers(0, 300), min_size=num_jobs - 1, max_size=num_jobs - 1))
    arrivals = np.concatenate([[0.0], np.cumsum(gaps) * US])
    model_index = np.array(
        draw(st.lists(st.integers(0, num_models - 1), min_size=num_jobs, max_size=num_jobs))
    )
    knobs = DispatchSettings(
        hardware_queues=draw(st.integers(1, 3)),
        outstanding_limit=draw(st.integers(0, 2)),
        dispatch_overhead_s=draw(st.sampled_from([0.0, 1 * US])),
        fairness_threshold=draw(st.sampled_from([1.0, 3.0, float("inf")])),
    )
    return chains, mix, JobStream(arrivals, model_index), draw(st.sampled_from(list(POLICIES))), knobs


def run_checked(chains, mix, stream, policy, knobs):
    capacity = sm_capacity(SMALL_GPU)[:, None]
    breaches = []

    def observe(now, used):
        if (used < 0).any() or (used > capacity).any():
            breaches.append(now)

    run = simulate(chains, mix, stream, policy, SMALL_GPU, knobs, record_kernels=True, observer=observe)
    return run, breaches


@settings(max_examples=120, deadline=None)
@given(scenarios())
def test_capacity_order_and_completeness(scenario):
    chains, mix, stream, policy, knobs = scenario
    run, breaches = run_checked(*scenario)
    assert breaches == []
    jobs, kernels = run.jobs, run.kernels
    assert jobs.finished.notna().all()
    expected = sorted(
        (job, k) for job, model in enumerate(jobs.model) for k in range(len(chains[model].kernels))
    )
    assert sorted(zip(kernels.job, kernels.kernel)) == expected  # each exactly once
    for job, runs in kernels.sort_values(["job", "kernel"]).groupby("job"):
        gap = chains[jobs.model[job]].launch_gap_s  # each kernel starts a launch gap after the one before
        assert (runs.started.to_numpy()[1:] >= runs.finished.to_numpy()[:-1] + gap * (1 - 1e-9)).all()
    # Only jobs launched whole pay the launch latency; none runs its kernels faster than alone.
    alone = jobs.model.map({m: c.alone_s - c.launch_latency_s for m, c in chains.items()})
    assert (jobs.latency >= alone * (1 - 1e-9)).all()
    assert (jobs.admitted >= jobs.arrival).all()


@settings(max_examples=30, deadline=None)
@given(scenarios())
def test_same_inputs_same_run(scenario):
    first, second = run_checked(*scenario)[0], run_checked(*scenario)[0]
    pd.testing.assert_frame_equal(first.jobs, second.jobs)
    pd.testing.assert_frame_equal(first.kernels, second.kernels)
