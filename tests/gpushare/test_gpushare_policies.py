"""Each dispatch policy's choice on hand-made situations whose schedule can be worked out by hand.

The GPU has four SMs; a block of 1,024 threads takes half an SM. Job L ("long") arrives at 0
with two kernels of 4 blocks (half the GPU) of 100 us each; job S ("short") arrives at 1 us
with one kernel of 4 blocks of 10 us. S fits beside L all along, so any wait of S is a policy's.
"""

import math

import numpy as np
import pytest
from gpushare_chains import SMALL_GPU, US, chain, kernel

from kvsim.gpushare.job import Job, shapes_of
from kvsim.gpushare.policies.base import DispatchSettings, Workload
from kvsim.gpushare.policies.mps import partition_sizes
from kvsim.gpushare.policies.paella import ShortestRemaining
from kvsim.gpushare.simulate import simulate
from kvsim.gpushare.workloads import JobStream, Mix

LONG = chain("long", kernel(100, 4), kernel(100, 4))
SHORT = chain("short", kernel(10, 4))
MIX = Mix("pair", ("long", "short"), (0.5, 0.5), (10, 10))


def finish_times(policy: str, settings=DispatchSettings(), chains=None, stream=None) -> np.ndarray:
    chains = chains or {"long": LONG, "short": SHORT}
    stream = stream or JobStream(np.array([0.0, 1 * US]), np.array([0, 1]))
    run = simulate(chains, MIX, stream, policy, SMALL_GPU, settings)
    return run.jobs.finished.to_numpy() / US


def test_one_hardware_queue_blocks_the_short_job_behind_the_long_ones_second_kernel():
    # Queue: L.k1, L.k2, S. L.k2 waits for L.k1 (its stream) and holds S behind it until
    # L.k2 is placed at 100 us, though half the GPU is free all along.
    long_done, short_done = finish_times("cuda-multi-stream", DispatchSettings(hardware_queues=1))
    assert short_done == pytest.approx(110)
    assert long_done == pytest.approx(200)


def test_separate_hardware_queues_let_the_short_job_run_beside():
    long_done, short_done = finish_times("cuda-multi-stream", DispatchSettings(hardware_queues=2))
    assert short_done == pytest.approx(11)
    assert long_done == pytest.approx(200)


def test_single_stream_serialises_every_kernel():
    long_done, short_done = finish_times("cuda-single-stream")
    assert (long_done, short_done) == pytest.approx((200, 210))


@pytest.mark.parametrize("policy", ["paella-kernel-fifo", "paella-srpt"])
def test_software_dispatch_has_no_head_of_line_blocking(policy):
    long_done, short_done = finish_times(policy)
    assert (long_done, short_done) == pytest.approx((200, 11))


def test_job_by_job_fifo_starts_the_next_job_once_the_last_kernel_of_the_one_before_is_dispatched():
    long_done, short_done = finish_times("paella-job-fifo")
    assert (long_done, short_done) == pytest.approx((200, 110))


def test_dispatch_overhead_delays_every_kernel():
    long_done, short_done = finish_times("paella-kernel-fifo", DispatchSettings(dispatch_overhead_s=2 * US))
    # L.k1 is issued at 2 us, S at 4 (the dispatcher is busy with L.k1 until 2), L.k2 at 104.
    assert (long_done, short_done) == pytest.approx((204, 14))


def full_gpu(duration_us: float):
    return kernel(duration_us, 8)  # 8 blocks of half an SM: the whole GPU


def test_srpt_runs_the_least_remaining_work_first_and_fifo_the_oldest():
    # B fills the GPU until 100 us; A (50 us of work) arrives at 1 us, C (10 us) at 2 us.
    chains = {"long": chain("long", full_gpu(100)), "short": chain("short", full_gpu(50))}
    mix = Mix("three", ("long", "short", "tiny"), (1, 1, 1), (5, 5, 5))
    chains["tiny"] = chain("tiny", full_gpu(10))
    stream = JobStream(np.array([0.0, 1 * US, 2 * US]), np.array([0, 1, 2]))

    def finished(policy):
        return simulate(chains, mix, stream, policy, SMALL_GPU).jobs.finished.to_numpy() / US

    assert finished("paella-srpt") == pytest.approx([100, 160, 110])
    assert finished("paella-kernel-fifo") == pytest.approx([100, 150, 160])


def test_mps_partitions_stretch_a_kernel_by_its_waves():
    # Equal expected work: two SMs each. The long kernel's 4 blocks ran in one wave on 4 SMs
    # (2 per SM) and run in one wave on 2 SMs too; a kernel of 8 blocks takes two waves there.
    wide = chain("long", kernel(100, 8))
    narrow = chain("short", kernel(100, 8))
    stream = JobStream(np.array([0.0]), np.array([0]))
    run = simulate({"long": wide, "short": narrow}, MIX, stream, "mps", SMALL_GPU)
    assert run.jobs.finished.iloc[0] / US == pytest.approx(200)


def test_partition_sizes_are_whole_sms_in_proportion_at_least_one_each():
    assert partition_sizes([1, 1], 4) == [2, 2]
    assert partition_sizes([3, 1], 132) == [99, 33]
    sizes = partition_sizes([1000, 1, 1], 10)
    assert sizes == [8, 1, 1] and sum(sizes) == 10


def ready_job(job_id: int, model_index: int, remaining_kernels: int) -> Job:
    models = ("a", "b")
    shapes = shapes_of(chain(models[model_index], *[kernel(10, 1)] * remaining_kernels), SMALL_GPU)
    return Job(job_id, models[model_index], model_index, shapes, arrival=float(job_id))


def bound_order(threshold: float, alpha: float = 0.25) -> ShortestRemaining:
    order = ShortestRemaining(alpha, threshold)
    a = chain("a", *[kernel(10, 1)] * 3)
    b = chain("b", *[kernel(10, 1)] * 9)
    order.bind(Workload(("a", "b"), {"a": a, "b": b}, (0.5, 0.5)))
    return order


def test_fairness_counter_sends_a_starved_model_next():
    order = bound_order(threshold=1.0)
    short, long = ready_job(0, 0, 3), ready_job(1, 1, 9)
    assert order.choose([short, long]) is short
    order.dispatched(short)
    assert order.deficit.sum() == pytest.approx(0)
    assert order.choose([short, long]) is short  # b's counter is 1/2, under the threshold
    order.dispatched(short)
    assert order.deficit[1] == pytest.approx(1.0)
    assert order.choose([short, long]) is long


def test_without_a_threshold_srpt_never_yields():
    order = bound_order(threshold=math.inf)
    short, long = ready_job(0, 0, 3), ready_job(1, 1, 9)
    for _ in range(20):
        assert order.choose([short, long]) is short
        order.dispatched(short)


def test_kernel_length_estimates_move_toward_what_is_observed():
    order = bound_order(threshold=math.inf, alpha=0.5)
    job = ready_job(0, 0, 3)
    run = job.launch_next()
    run.first_placed, run.finished = 0.0, 30 * US  # observed 30 us against the profiled 10
    order.finished(run)
    assert order.estimates[0][0] == pytest.approx(20 * US)
    assert order.remaining[0][0] == pytest.approx(40 * US)
