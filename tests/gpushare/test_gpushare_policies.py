"""Each dispatch policy's choice on hand-made situations whose schedule can be worked out by hand.

The GPU has four SMs; a block of 1,024 threads takes half an SM. Job L ("long") arrives at 0
with two kernels of 4 blocks (half the GPU) of 100 us each; job S ("short") arrives at 1 us
with one kernel of 4 blocks of 10 us. S fits beside L all along, so any wait of S is a policy's.
"""

import math
from dataclasses import replace

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


def test_a_launch_gap_comes_before_every_kernel_and_holds_its_queue():
    # A gap of 5 us per kernel; one hardware queue: L.k1 reaches the SMs at 5 and ends at 105,
    # L.k2 is issued then and placed at 110; S waits behind it in the queue: issued at 110,
    # placed at 115, done at 125. L: 110 + 100.
    gapped = {
        "long": chain("long", *LONG.kernels, launch_gap_s=5 * US),
        "short": chain("short", *SHORT.kernels, launch_gap_s=5 * US),
    }
    long_done, short_done = finish_times("cuda-multi-stream", DispatchSettings(hardware_queues=1), gapped)
    assert (long_done, short_done) == pytest.approx((210, 125))


def test_the_host_submits_whole_jobs_one_after_another():
    # A launch latency of 5 us per job, one launching thread: L reaches its queue at 5 (done at
    # 205), S, admitted at 1, only when L's submission is over: at 10, done at 20.
    slow = {m: replace(c, launch_latency_s=5 * US) for m, c in {"long": LONG, "short": SHORT}.items()}
    long_done, short_done = finish_times("cuda-multi-stream", DispatchSettings(hardware_queues=2), slow)
    assert (long_done, short_done) == pytest.approx((205, 20))


def full_gpu(duration_us: float):
    return kernel(duration_us, 8)  # 8 blocks of half an SM: the whole GPU


def test_srpt_runs_the_least_remaining_work_first_and_fifo_the_oldest():
    # B fills the GPU until 100 us; A (50 us of work) arrives at 1 us, C (10 us) at 2 us. No
    # kernel may wait for room, so neither is committed before the order chooses at 100 us.
    chains = {"long": chain("long", full_gpu(100)), "short": chain("short", full_gpu(50))}
    mix = Mix("three", ("long", "short", "tiny"), (1, 1, 1), (5, 5, 5))
    chains["tiny"] = chain("tiny", full_gpu(10))
    stream = JobStream(np.array([0.0, 1 * US, 2 * US]), np.array([0, 1, 2]))

    def finished(policy):
        settings = DispatchSettings(outstanding_limit=0)
        return simulate(chains, mix, stream, policy, SMALL_GPU, settings).jobs.finished.to_numpy() / US

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
    made = chain(models[model_index], *[kernel(10, 1)] * remaining_kernels)
    return Job(job_id, made, model_index, shapes_of(made, SMALL_GPU), arrival=float(job_id))


def bound_order(threshold: float, alpha: float = 0.25) -> ShortestRemaining:
    order = ShortestRemaining(alpha, threshold)
    a = chain("a", *[kernel(10, 1)] * 3)
    b = chain("b", *[kernel(10, 1)] * 9)
    order.bind(Workload(("a", "b"), {"a": a, "b": b}, (0.5, 0.5)))
    return order


def dispatch(order: ShortestRemaining, active: list[Job]) -> Job:
    """The order's choice, launched as the dispatcher launches it."""
    job = order.choose(active)
    order.dispatched(job, active)
    job.launch_next()
    return job


def test_fairness_counter_sends_a_passed_over_model_next():
    order = bound_order(threshold=1.0)
    shorts, long = [ready_job(i, 0, 3) for i in range(3)], ready_job(3, 1, 9)
    active = [*shorts, long]
    assert dispatch(order, active) is shorts[0]
    assert order.deficit.tolist() == pytest.approx([-0.5, 0.5])  # both could run: 1/2 credit each
    assert dispatch(order, active) is shorts[1]  # b's counter is 1/2, under the threshold
    assert order.deficit[1] == pytest.approx(1.0)
    assert dispatch(order, active) is long
    # b's only ready job went: its counter is dropped, not carried until it is ready again
    assert order.deficit[1] == 0.0


def test_a_model_without_a_ready_job_earns_no_credit():
    # b's job runs a kernel while a's jobs are dispatched ten times over: b was never passed
    # over, so once its job is ready again SRPT still prefers a's shorter work.
    order = bound_order(threshold=1.0)
    shorts, long = [ready_job(0, 0, 3), ready_job(1, 0, 3)], ready_job(2, 1, 9)
    active = [*shorts, long]
    long.launch_next()
    for _ in range(10):
        order.dispatched(order.choose(active), active)
    assert order.deficit[1] == 0.0
    long.in_flight = False
    assert order.choose(active) is shorts[0]


def test_without_a_threshold_srpt_never_yields():
    order = bound_order(threshold=math.inf)
    short, long = ready_job(0, 0, 3), ready_job(1, 1, 9)
    for _ in range(20):
        assert order.choose([short, long]) is short
        order.dispatched(short, [short, long])


def test_the_fairness_threshold_changes_the_order_of_a_run():
    # Full-GPU kernels of 10 us run one at a time. a's jobs (one kernel) at 0, 10, 20 and 30 us
    # run alone; b's job (three kernels) arrives at 35 us, a's S1, S2, S3 at 36, 37 and 38.
    # From 40 us SRPT prefers a's jobs (10 us left against 30). At threshold 1, b, passed over
    # twice (1/2 credit each), goes at 60 us, and S3 waits for it; its four kernels of waiting
    # before b arrived earn it nothing. Without a threshold b goes last. No kernel may wait
    # for room, so each is chosen when the GPU frees.
    chains = {"a": chain("a", full_gpu(10)), "b": chain("b", *[full_gpu(10)] * 3)}
    mix = Mix("two", ("a", "b"), (1, 1), (10, 10))
    stream = JobStream(np.array([0.0, 10, 20, 30, 35, 36, 37, 38]) * US, np.array([0, 0, 0, 0, 1, 0, 0, 0]))

    def finished(threshold):
        settings = DispatchSettings(outstanding_limit=0, fairness_threshold=threshold)
        return (
            simulate(chains, mix, stream, "paella-srpt", SMALL_GPU, settings).jobs.finished.to_numpy()[4:]
            / US
        )

    assert finished(1.0) == pytest.approx([100, 50, 60, 80])
    assert finished(math.inf) == pytest.approx([100, 50, 60, 70])


# The gate: three kernels on the four SMs. A (4 blocks of 150 KiB of shared memory, one per SM)
# runs from 0 to 100 us. B (8 blocks of 60 KiB, 100 us) arrives at 1 us: one block fits beside
# A on each SM, so it would start only half. C (4 small blocks, 10 us) arrives at 2 us and fits
# whole beside A and half of B.
GATE_CHAINS = {
    "a": chain("a", kernel(100, 4, smem=150 * 1024)),
    "b": chain("b", kernel(100, 8, threads=256, smem=60 * 1024)),
    "c": chain("c", kernel(10, 4, threads=256)),
}
GATE_MIX = Mix("gate", ("a", "b", "c"), (1, 1, 1), (1, 1, 1))
GATE_STREAM = JobStream(np.array([0.0, 1, 2]) * US, np.array([0, 1, 2]))


def gate_run(policy: str, outstanding_limit: int):
    settings = DispatchSettings(outstanding_limit=outstanding_limit)
    run = simulate(GATE_CHAINS, GATE_MIX, GATE_STREAM, policy, SMALL_GPU, settings, record_kernels=True)
    return run.kernels.set_index("job").sort_index()[["started", "finished"]].to_numpy() / US


@pytest.mark.parametrize("policy", ["paella-kernel-fifo", "paella-srpt"])
def test_a_kernel_that_starts_whole_goes_while_another_waits_for_room(policy):
    # B goes as the one kernel allowed to wait; C then starts at once instead of waiting
    # for B's last blocks to be placed at 100 us.
    np.testing.assert_allclose(gate_run(policy, outstanding_limit=1), [[0, 100], [1, 200], [2, 12]])


def test_with_no_kernel_allowed_to_wait_one_that_would_start_part_waits_for_room():
    # B is held until A's end leaves room for all of it; SRPT meanwhile sends C, which fits.
    np.testing.assert_allclose(gate_run("paella-srpt", outstanding_limit=0), [[0, 100], [100, 200], [2, 12]])


def test_the_dispatcher_never_passes_over_its_choice():
    # Kernel-by-kernel FIFO chooses B, which may not go: C, though it fits, waits behind it.
    np.testing.assert_allclose(
        gate_run("paella-kernel-fifo", outstanding_limit=0), [[0, 100], [100, 200], [100, 110]]
    )


def test_kernel_length_estimates_move_toward_what_is_observed():
    order = bound_order(threshold=math.inf, alpha=0.5)
    job = ready_job(0, 0, 3)
    run = job.launch_next()
    run.first_placed, run.finished = 0.0, 30 * US  # observed 30 us against the profiled 10
    order.finished(run)
    assert order.estimates[0][0] == pytest.approx(20 * US)
    assert order.remaining[0][0] == pytest.approx(40 * US)
