"""The real GPU's host loop (kvsim.gpushare.replay) driven by a fake GPU and clock: every step
runs once, in order, after the one before; arrivals are released in order and never early;
the loop launches what the simulator's policy objects choose; caps and stream rules hold.
(The step times are round values chosen so the schedules can be worked out by hand.)"""

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pytest

from kvsim.errors import KvsimError
from kvsim.gpushare.policies.base import DispatchSettings, Workload
from kvsim.gpushare.policies.paella import Order
from kvsim.gpushare.replay import Dispatcher, Replay, build_mode, real_order, step_chain, step_jobs
from kvsim.gpushare.workloads import JobStream, Mix, generate_jobs

US = 1e-6


@dataclass
class FakeLaunch:
    job: int
    first: int
    stop: int
    lane: int
    launched: float
    start: float
    end: float


class FakeGPU:
    """Steps take their chain's times; a stream runs its launches one after another, streams
    run side by side without slowing each other, and the host takes no time: the clock moves
    only when the loop waits."""

    def __init__(self, chains):
        self.chains, self.log, self.released = chains, [], []

    def start(self):
        self.t, self.stream_free = 0.0, defaultdict(float)

    def now(self):
        return self.t

    def wait(self, until, heads):
        self.t = min([until, *(h.end for h in heads)])
        assert np.isfinite(self.t)

    def launch(self, job, first, stop, lane):
        start = max(self.t, self.stream_free[lane])
        end = start + sum(k.duration_s for k in self.chains[job.model].kernels[first:stop])
        self.stream_free[lane] = end
        self.log.append(FakeLaunch(job.id, first, stop, lane, self.t, start, end))
        return self.log[-1]

    def done(self, launch):
        return launch.end <= self.t

    def span(self, launch):
        return launch.start, launch.end

    def release(self, job):
        self.released.append(job.id)


LONG = step_chain("long", ["a", "b"], [100 * US, 100 * US])
SHORT = step_chain("short", ["a"], [10 * US])
CHAINS = {"long": LONG, "short": SHORT}
PAIR = Mix("pair", ("long", "short"), (0.5, 0.5), (10, 10))


def replay(policy, stream, mix=PAIR, chains=CHAINS, streams=4, inflight=2, mode=None):
    workload = Workload(mix.models, chains, mix.probabilities)
    mode = mode or build_mode(policy, DispatchSettings(), workload, streams, inflight)
    gpu = FakeGPU(chains)
    result = Replay(step_jobs(mix, stream, chains), mix.caps, gpu, mode).run()
    return result.jobs, gpu


def random_stream(seed=3, num_jobs=60):
    return generate_jobs(PAIR, 8000.0, num_jobs, 1.5, seed)


@pytest.mark.parametrize("policy", ["paella-srpt", "paella-kernel-fifo", "paella-job-fifo"])
def test_every_step_of_every_job_runs_once_in_order_after_the_one_before(policy):
    stream = random_stream()
    jobs, gpu = replay(policy, stream)
    by_job = defaultdict(list)
    for launch in gpu.log:
        by_job[launch.job].append(launch)
    assert set(by_job) == set(range(len(stream.arrivals)))
    for job, launches in by_job.items():
        model = PAIR.models[stream.model_index[job]]
        assert [(x.first, x.stop) for x in launches] == [
            (k, k + 1) for k in range(len(CHAINS[model].kernels))
        ]
        for before, after in zip(launches, launches[1:]):
            assert after.launched >= before.end
        assert jobs.finished[job] == launches[-1].end
        assert jobs.started[job] == launches[0].start
    assert sorted(gpu.released) == list(range(len(stream.arrivals)))


@pytest.mark.parametrize("policy", ["cuda-multi-stream", "cuda-single-stream", "paella-srpt"])
def test_arrivals_are_released_in_order_and_never_early(policy):
    jobs, _ = replay(policy, random_stream())
    assert (jobs.released >= jobs.arrival).all()
    assert jobs.released.is_monotonic_increasing
    # the fake host takes no time, so it sees every arrival the moment it comes
    assert np.allclose(jobs.released, jobs.arrival)
    assert (jobs.admitted >= jobs.released).all() and (jobs.latency > 0).all()


def test_the_dispatcher_never_has_more_steps_in_flight_than_its_limit():
    for inflight in (1, 3):
        _, gpu = replay("paella-kernel-fifo", random_stream(), inflight=inflight)
        for launch in gpu.log:
            in_flight = sum(x.launched <= launch.launched < x.end for x in gpu.log)
            assert in_flight <= inflight
        assert max(sum(x.launched <= t.launched < x.end for x in gpu.log) for t in gpu.log) == inflight


class Recording(Order):
    """The simulator's order, with every dispatch it decides written down."""

    def __init__(self, order):
        self.order, self.decided = order, []

    def bind(self, workload):
        self.order.bind(workload)

    def choose(self, active):
        return self.order.choose(active)

    def dispatched(self, job, active):
        self.decided.append((job.id, job.next_kernel))
        self.order.dispatched(job, active)

    def finished(self, run):
        self.order.finished(run)


@pytest.mark.parametrize("policy", ["paella-srpt", "paella-kernel-fifo"])
def test_the_loop_launches_exactly_what_the_policy_object_decides(policy):
    order = Recording(real_order(policy, DispatchSettings()))
    mode = Dispatcher(order, Workload(PAIR.models, CHAINS, PAIR.probabilities), inflight_limit=2)
    _, gpu = replay(policy, random_stream(), mode=mode)
    assert len(order.decided) == len(gpu.log) > len(random_stream().arrivals)
    assert [(x.job, x.first) for x in gpu.log] == order.decided


def test_srpt_puts_the_short_job_before_the_long_jobs_second_step_and_fifo_does_not():
    # L arrives at 0 (two 100 us steps), S at 1 us (one 10 us step); one step at a time.
    stream = JobStream(np.array([0.0, 1 * US]), np.array([0, 1]))
    srpt, _ = replay("paella-srpt", stream, inflight=1)
    fifo, _ = replay("paella-kernel-fifo", stream, inflight=1)
    assert srpt.finished.to_numpy() / US == pytest.approx([210, 110])
    assert fifo.finished.to_numpy() / US == pytest.approx([200, 210])


def test_a_job_beyond_its_models_cap_is_admitted_when_one_finishes():
    capped = Mix("capped", ("long", "short"), (0.5, 0.5), (1, 10))
    stream = JobStream(np.array([0.0, 1 * US, 2 * US]), np.array([0, 0, 1]))
    jobs, _ = replay("cuda-multi-stream", stream, mix=capped)
    assert jobs.admitted.to_numpy() / US == pytest.approx([0, 200, 2])
    assert jobs.finished.to_numpy() / US == pytest.approx([200, 400, 12])
    assert jobs.latency[1] / US == pytest.approx(399)  # from its arrival, as the simulation counts


def test_one_stream_runs_jobs_one_after_another_and_a_stream_each_side_by_side():
    stream = random_stream(num_jobs=30)
    single, gpu = replay("cuda-single-stream", stream)
    assert {x.lane for x in gpu.log} == {0}
    assert (single.started.to_numpy()[1:] >= single.finished.to_numpy()[:-1]).all()
    multi, gpu = replay("cuda-multi-stream", stream, streams=64)
    assert [x.lane for x in gpu.log] == list(range(30))
    assert np.allclose(multi.started, multi.arrival)  # no stream is busy when its job comes


def test_mps_has_no_real_counterpart():
    with pytest.raises(KvsimError, match="no real-GPU counterpart"):
        real_order("mps", DispatchSettings())
