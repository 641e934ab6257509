"""Invariants of whole simulations over random workloads (hypothesis)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import random_traces

from kvsim.cost.roofline import RooflineCostModel
from kvsim.hardware import load_gpu
from kvsim.models import load_model
from kvsim.policies.paged import PagedKVManager
from kvsim.policies.scheduler import Scheduler
from kvsim.sim import engine
from kvsim.sim.cluster import LeastLoadedRouter, RoundRobinRouter

MODEL, GPU = load_model("opt-13b"), load_gpu("a100-40gb")


class CheckedScheduler(Scheduler):
    """Asserts block conservation after every step."""

    def complete(self, plan, steps=1):
        finished = super().complete(plan, steps)
        kv = self.kv
        held = sum(len(t) for t in kv.block_tables.values())
        assert held + kv.allocator.num_free == kv.num_blocks
        assert (kv.allocator.ref_count >= 0).all()
        return finished


@st.composite
def workloads(draw):
    trace = draw(random_traces(max_requests=40, max_gap=2.0, max_len=300))
    block_size = draw(st.sampled_from([1, 2, 4, 16, 64]))
    num_blocks = draw(st.integers(320 // block_size + 1, 2000 // block_size + 2))
    replicas = draw(st.integers(1, 3))
    return trace, block_size, num_blocks, replicas


def simulate(trace, block_size, num_blocks, replicas, router=RoundRobinRouter):
    schedulers = [CheckedScheduler(PagedKVManager(num_blocks, block_size), 8, 512) for _ in range(replicas)]
    recorder = engine.simulate(trace, schedulers, RooflineCostModel(MODEL, GPU, block_size), router())
    return recorder, schedulers


@settings(max_examples=60, deadline=None)
@given(workloads())
def test_no_request_lost_blocks_conserved_time_monotone(workload):
    trace, block_size, num_blocks, replicas = workload
    recorder, schedulers = simulate(*workload)
    requests = recorder.requests_frame()
    assert set(requests["status"]) <= {"completed", "rejected"}
    done = requests[requests.status == "completed"]
    assert (done.arrival <= done.admitted).all()
    assert (done.admitted < done.first_token).all() and (done.first_token <= done.finish).all()
    rejected = requests[requests.status == "rejected"]
    assert (rejected.reject_reason != "").all()
    for s in schedulers:  # every block back, every reference count zero
        assert s.kv.allocator.num_free == num_blocks and not s.kv.allocator.ref_count.any()
    steps = recorder.steps_frame()
    for _, replica_steps in steps.groupby("replica"):
        start, end = replica_steps.start.to_numpy(), (replica_steps.start + replica_steps.duration).to_numpy()
        assert (np.diff(start) > 0).all() and (end[:-1] <= start[1:] + 1e-9).all()


@settings(max_examples=15, deadline=None)
@given(workloads())
def test_same_inputs_give_identical_outputs(workload):
    first, _ = simulate(*workload, router=LeastLoadedRouter)
    second, _ = simulate(*workload, router=LeastLoadedRouter)
    assert first.requests_frame().to_csv() == second.requests_frame().to_csv()
    assert first.steps_frame().to_csv() == second.steps_frame().to_csv()
