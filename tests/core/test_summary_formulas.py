"""Every formula of ``summarize``, recomputed from a hand-made run, and the KV waste
breakdown of a real decode run against the cache it held step by step.

The expected values are written out from the metrics' definitions (the vLLM paper's for
normalized latency: mean over requests of end-to-end latency / output length), never taken
from ``kvsim.engine.metrics``: a formula changed there makes these tests fail.
"""

import math
from collections import Counter
from statistics import mean

import numpy as np
import pytest

from kvsim.cost.roofline import RooflineCostModel
from kvsim.engine.metrics import KV_SLOT_COLUMNS, STEP_COLUMNS, WASTE_KEYS, Recorder, summarize
from kvsim.hardware import load_gpu
from kvsim.models import load_model
from kvsim.policies.paged import PagedKVManager
from kvsim.policies.request import Request
from kvsim.policies.scheduler import EventCounts, Scheduler
from kvsim.sim import engine
from kvsim.sim.cluster import RoundRobinRouter
from kvsim.workloads.trace import Trace

# (arrival, first token, finish, prompt, output, preemptions, recomputed tokens); None: rejected.
# The first arrival is not at t = 0, one output is a single token (no time per output token),
# the latencies are distinct so that percentiles interpolate between them.
REQUESTS = [
    (1.0, 1.5, 7.5, 100, 13, 0, 0),
    (1.5, 1.75, 2.0, 40, 1, 0, 0),
    (2.0, 3.2, 9.2, 60, 4, 1, 60),
    (2.5, None, None, 5000, 10, 0, 0),
    (3.0, 4.0, 11.0, 20, 8, 2, 45),
    (4.0, 4.75, 6.25, 30, 5, 0, 0),
]
NUM_BLOCKS = 10  # of 4 slots: each measured row's slots sum to 40
# Runs of steps: a prefill, a decode run of 10 steps, one step whose slots were not measured
# (NaN: left out of the breakdown), a run of 3; durations differ, so time weights matter.
STEPS = [
    dict(
        duration=0.5,
        comm_s=0.05,
        kind="prefill",
        steps=1,
        batch_size=3,
        kv_blocks_used=4,
        kv_blocks_logical=4,
        slots=(16, 0, 0, 24),
    ),
    dict(
        duration=2.0,
        comm_s=0.3,
        kind="decode",
        steps=10,
        batch_size=2,
        kv_blocks_used=6,
        kv_blocks_logical=8,
        slots=(20, 0, 4, 16),
    ),
    dict(
        duration=0.25,
        kind="decode",
        steps=1,
        batch_size=1,
        kv_blocks_used=9,
        kv_blocks_logical=9,
        slots=(math.nan,) * 4,
    ),
    dict(
        duration=1.0,
        kind="decode",
        steps=3,
        batch_size=5,
        kv_blocks_used=8,
        kv_blocks_logical=12,
        slots=(24, 4, 4, 8),
    ),
]
COUNTERS = Counter(
    block_copies=3,
    forks=5,
    prefix_hit_blocks=7,
    prefix_lookup_blocks=11,
    prefill_tokens_saved=13,
    preempted_swap=17,
    preempted_recompute=19,
    swap_space_full=23,
    swap_out_blocks=29,
    swap_in_blocks=31,
)


def recorded(requests, steps, counters) -> Recorder:
    """A recorder filled through its own API, as the engine fills it."""
    recorder = Recorder(len(requests))
    for rid, (arrival, first, finish, prompt, output, preemptions, recomputed) in enumerate(requests):
        request = Request(rid, prompt, output, num_preemptions=preemptions, recomputed_tokens=recomputed)
        recorder.arrive(request, arrival)
        if finish is None:
            recorder.reject(request, "too long")
            continue
        # Scheduled after a wait (halfway to its first token): TTFT counts from arrival.
        recorder.prefilled([request], (arrival + first) / 2, first, replica=0)
        recorder.finished([request], finish)
    start = 0.0
    for step in steps:
        row = dict(step, replica=0, start=start, **dict(zip(KV_SLOT_COLUMNS, step["slots"])))
        recorder.steps.append(tuple(row.get(column, 0) for column in STEP_COLUMNS))
        start += step["duration"]
    recorder.counters = EventCounts(**counters)
    return recorder


def percentile(values, q):
    """The q-th percentile, interpolating linearly between closest ranks (numpy's default,
    Hyndman & Fan type 7): rank (n - 1) q / 100 in the sorted values."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (rank - low) * (ordered[high] - ordered[low])


def distribution(values, prefix):
    return {
        f"{prefix}_mean": mean(values),
        **{f"{prefix}_p{q}": percentile(values, q) for q in (50, 90, 99)},
        f"{prefix}_max": max(values),
    }


def test_percentile_helper_interpolates():
    """The helper the expectations rest on, on values whose percentiles are known by hand."""
    assert percentile([4, 1, 3, 2], 50) == 2.5
    assert percentile([0, 10], 90) == 9
    assert percentile([7], 99) == 7


def expected_summary(requests, steps, counters, num_blocks) -> dict:
    done = [r for r in requests if r[2] is not None]
    arrival, first, finish, prompt, output, preemptions, recomputed = zip(*done)
    # Throughput is over the span from the first arrival to the last completion.
    span = max(finish) - min(r[0] for r in requests)
    busy = sum(s["duration"] for s in steps)
    arrivals = [r[0] for r in requests]
    warm_end = min(arrivals) + min(60.0, (max(arrivals) - min(arrivals)) / 10)
    window = max(arrivals) - warm_end
    steady = [r for r in done if warm_end <= r[2] <= max(arrivals)]
    total_steps = sum(s["steps"] for s in steps)
    measured = [s for s in steps if not any(math.isnan(v) for v in s["slots"])]
    slot_seconds = [sum(s["slots"][i] * s["duration"] for s in measured) for i in range(len(WASTE_KEYS))]

    def time_mean(column):
        return sum(s[column] * s["duration"] for s in steps) / busy

    holding = [s for s in steps if s["kv_blocks_used"] > 0]
    step_ratio = sum(s["kv_blocks_logical"] / s["kv_blocks_used"] * s["steps"] for s in holding) / sum(
        s["steps"] for s in holding
    )

    return {
        "completed": len(done),
        "rejected": len(requests) - len(done),
        "duration_s": span,
        "throughput_req_s": len(done) / span,
        "throughput_output_tok_s": sum(output) / span,
        "throughput_total_tok_s": (sum(prompt) + sum(output)) / span,
        # Steady state: completions from the warm-up's end (a tenth of the 3 s of arrivals,
        # under a minute) to the last arrival, per second of that window.
        "steady_window_s": window,
        "steady_throughput_req_s": len(steady) / window,
        "steady_throughput_output_tok_s": sum(r[4] for r in steady) / window,
        # The vLLM paper's normalized latency: requests arriving after the warm-up only.
        "steady_normalized_latency_s_per_token": mean((r[2] - r[0]) / r[4] for r in done if r[0] >= warm_end),
        **distribution([f - a for a, f in zip(arrival, first)], "ttft_s"),
        # Time per output token after the first: the other output - 1 tokens share the decode time.
        **distribution([(e - f) / (o - 1) for f, e, o in zip(first, finish, output) if o > 1], "tpot_s"),
        **distribution([e - a for a, e in zip(arrival, finish)], "e2e_latency_s"),
        "normalized_latency_s_per_token": mean((e - a) / o for a, e, o in zip(arrival, finish, output)),
        # A run of k steps is k iterations of its batch.
        "mean_batch_size": sum(s["batch_size"] * s["steps"] for s in steps) / total_steps,
        "num_steps": total_steps,
        "num_step_events": len(steps),
        "busy_fraction": busy / span,
        # the share of the busy time spent in collectives (tensor parallelism)
        "comm_fraction": sum(s.get("comm_s", 0.0) for s in steps) / busy,
        "mean_kv_usage": time_mean("kv_blocks_used") / num_blocks,
        "peak_kv_usage": max(s["kv_blocks_used"] for s in steps) / num_blocks,
        "preemptions": sum(preemptions),
        "recomputed_tokens": sum(recomputed),
        "sharing_memory_saving": 1 - time_mean("kv_blocks_used") / time_mean("kv_blocks_logical"),
        # the paper's Fig. 15: every step weighs the same, the ratio is averaged, not its parts
        "sharing_saving_per_step": 1 - 1 / step_ratio,
        "block_copies": counters["block_copies"],
        "forks": counters["forks"],
        "prefix_hit_rate": counters["prefix_hit_blocks"] / counters["prefix_lookup_blocks"],
        "prefill_tokens_saved": counters["prefill_tokens_saved"],
        "preempted_by_swap": counters["preempted_swap"],
        "preempted_by_recompute": counters["preempted_recompute"],
        "swap_space_full_fallbacks": counters["swap_space_full"],
        "swap_out_blocks": counters["swap_out_blocks"],
        "swap_in_blocks": counters["swap_in_blocks"],
        # Share of the cache's slot-seconds per use, over the steps whose slots were measured.
        **{key: v / sum(slot_seconds) for key, v in zip(WASTE_KEYS, slot_seconds)},
    }


def test_every_summary_key_follows_its_formula():
    summary = summarize(recorded(REQUESTS, STEPS, COUNTERS), NUM_BLOCKS)
    expected = expected_summary(REQUESTS, STEPS, COUNTERS, NUM_BLOCKS)
    assert set(summary) == set(expected)  # a new key needs its formula here
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value, rel=1e-12), key


def test_a_run_where_nothing_completes_reports_no_rates():
    """Every request rejected, no step: nothing to divide by, so rates and latencies are NaN
    and the step averages zero, instead of an error or a made-up number."""
    rejected = [(0.5, None, None, 9000, 10, 0, 0), (1.0, None, None, 9000, 10, 0, 0)]
    summary = summarize(recorded(rejected, [], Counter()), NUM_BLOCKS)
    assert (summary["completed"], summary["rejected"], summary["duration_s"]) == (0, 2, 0)
    nan_keys = [k for k in summary if k.startswith(("throughput", "ttft", "tpot", "e2e", "waste"))]
    assert all(
        math.isnan(summary[k])
        for k in [*nan_keys, "normalized_latency_s_per_token", "busy_fraction", "prefix_hit_rate"]
    )
    assert summary["mean_batch_size"] == summary["mean_kv_usage"] == summary["num_steps"] == 0


def test_decode_run_records_the_cache_averaged_over_its_steps():
    """One request of prompt p and output o on a paged cache of 1-token blocks: a prefill
    step, then o - 1 decode steps charged as one run. Decode step k (1..o-1) writes the KV
    of token p + k, so the cache holds p + k token states while it runs; the run's row must
    carry their average, not its first step's, and the summary weigh each row by its time."""
    prompt, output, num_blocks = 10, 9, 64
    model, gpu = load_model("opt-13b"), load_gpu("a100-40gb")
    trace = Trace("one", np.array([0.0]), np.array([prompt]), np.array([output]))
    recorder = engine.simulate(
        trace,
        [Scheduler(PagedKVManager(num_blocks, 1), 8, 512)],
        RooflineCostModel(model, gpu, 1),
        RoundRobinRouter(),
    )
    steps = recorder.steps_frame()
    assert steps["kind"].tolist() == ["prefill", "decode"]
    assert steps["steps"].tolist() == [1, output - 1]

    token_states = [prompt, mean(prompt + k for k in range(1, output))]
    slots = steps[list(KV_SLOT_COLUMNS)].to_numpy()
    # 1-token blocks: nothing reserved, no fragmentation, every other slot free.
    expected = [(held, 0, 0, num_blocks - held) for held in token_states]
    np.testing.assert_allclose(slots, expected)

    duration = steps["duration"].to_numpy()
    summary = summarize(recorder, num_blocks)
    per_second = sum(h * d for h, d in zip(token_states, duration)) / (num_blocks * duration.sum())
    assert summary["waste_token_states"] == pytest.approx(per_second)
    assert summary["waste_external_and_other"] == pytest.approx(1 - per_second)


def test_busy_fraction_is_a_replicas_share_averaged_over_the_replicas():
    """Two replicas, each busy for half of a 4 s span: each is half busy, not the cluster
    at 100% (the busy seconds of all replicas over one span)."""
    recorder = Recorder(2)
    for rid in range(2):
        request = Request(rid, 10, 5)
        recorder.arrive(request, 0.0)
        recorder.prefilled([request], 0.0, 0.5, replica=rid)
        recorder.finished([request], 4.0)
    for replica in (0, 1):
        row = dict(replica=replica, start=0.0, duration=2.0, kind="decode", steps=1, batch_size=1)
        row.update(zip(KV_SLOT_COLUMNS, (1, 0, 0, 1)))
        recorder.steps.append(tuple(row.get(column, 0) for column in STEP_COLUMNS))
    assert summarize(recorder, 4, num_replicas=2)["busy_fraction"] == pytest.approx(0.5)
    assert summarize(recorder, 4, num_replicas=4)["busy_fraction"] == pytest.approx(0.25)
