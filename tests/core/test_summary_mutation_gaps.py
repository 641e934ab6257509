"""Summary metrics and requests.csv columns that mutation testing found unchecked
(docs/testing.md): a run shorter than a second, a request with exactly two output tokens, a
run in which nothing completed, and each request's row. The recorder is filled by hand, so
every expected number is worked out here from the times below.
"""

import math

import numpy as np
import pytest

from kvsim.engine.metrics import Recorder, summarize
from kvsim.policies.request import Request
from kvsim.policies.scheduler import DECODE, PREFILL, StepKind, StepPlan

NUM_BLOCKS = 8


def record(
    recorder: Recorder, kind: StepKind, requests: list[Request], start: float, end: float, kv_slots: tuple
) -> None:
    """One step of ``requests`` (one sequence each); their sequences hold 2 blocks between
    them, one block shared: 1 block in use."""
    seqs = np.arange(len(requests))
    plan = StepPlan(kind, requests, seqs, new_tokens=np.ones_like(seqs), context_lens=np.ones_like(seqs))
    recorder.record_step(
        0, plan, start, end, 1, kv_slots, kv_blocks_used=1, kv_blocks_logical=2, num_waiting=0
    )


def short_run() -> Recorder:
    """Two requests in 0.7 s. Request 0 (2 output tokens) arrives at 0, request 1 (3 output
    tokens) at 0.05; one prefill gives both their first token at 0.1; request 0 finishes at
    0.3, request 1 at 0.7. The engine is busy 0.1 + 0.2 + 0.2 = 0.5 s, idle from 0.3 to 0.5.
    The cache is 2 slots, one holding a token state and one free, in every step."""
    r0, r1 = Request(0, prompt_len=4, output_len=2), Request(1, prompt_len=6, output_len=3)
    recorder = Recorder(2)
    recorder.arrive(r0, 0.0)
    recorder.arrive(r1, 0.05)
    slots = (1, 0, 0, 1)
    record(recorder, PREFILL, [r0, r1], 0.0, 0.1, slots)
    record(recorder, DECODE, [r0, r1], 0.1, 0.3, slots)
    recorder.finished([r0], 0.3)
    record(recorder, DECODE, [r1], 0.5, 0.7, slots)
    recorder.finished([r1], 0.7)
    return recorder


def test_a_run_shorter_than_a_second_has_rates_and_shares():
    """Rates and time shares are per second and per busy second whatever the run's length:
    nothing may be left out because the run lasted under a second."""
    summary = summarize(short_run(), NUM_BLOCKS)
    span = 0.7
    assert summary["duration_s"] == pytest.approx(span)
    assert summary["throughput_req_s"] == pytest.approx(2 / span)
    assert summary["throughput_output_tok_s"] == pytest.approx((2 + 3) / span)
    assert summary["throughput_total_tok_s"] == pytest.approx((2 + 3 + 4 + 6) / span)
    assert summary["busy_fraction"] == pytest.approx(0.5 / span)
    # 2 slots x 0.5 busy seconds = 1 slot-second in all, half of it token states.
    assert summary["waste_token_states"] == pytest.approx(0.5)
    assert summary["waste_external_and_other"] == pytest.approx(0.5)
    # 1 block used of the 2 held without sharing, over 0.5 s: 1 block-second of 2 logical.
    assert summary["sharing_memory_saving"] == pytest.approx(0.5)


def test_two_output_tokens_give_one_decode_interval():
    """TPOT is the time per output token after the first: request 0's single interval
    (0.3 - 0.1) / 1 and request 1's (0.7 - 0.1) / 2 both count."""
    summary = summarize(short_run(), NUM_BLOCKS)
    assert summary["tpot_s_mean"] == pytest.approx((0.2 + 0.3) / 2)


def test_a_run_where_nothing_completed_reports_the_same_metrics_as_nan():
    """A run whose only request was rejected still reports every metric a finished run
    does (summary.json has a fixed set of keys); latencies and rates are NaN."""
    recorder = Recorder(1)
    request = Request(0, prompt_len=4, output_len=2)
    recorder.arrive(request, 0.0)
    recorder.reject(request, "too long")
    summary = summarize(recorder, NUM_BLOCKS)
    assert summary.keys() == summarize(short_run(), NUM_BLOCKS).keys()
    assert summary["completed"] == 0 and summary["rejected"] == 1
    for metric in ("ttft_s", "tpot_s", "e2e_latency_s"):
        for stat in ("mean", "p50", "p90", "p99"):
            assert math.isnan(summary[f"{metric}_{stat}"])
    assert math.isnan(summary["throughput_req_s"])
    assert summary["sharing_memory_saving"] == 0.0  # nothing held, nothing saved


def test_requests_frame_has_each_requests_times_and_outcome():
    """requests.csv: one row per request with its lengths, times, latencies and outcome."""
    recorder = Recorder(3)
    for rid, (arrival, first, finish) in enumerate([(0.0, 0.1, 0.3), (0.05, 0.1, 0.7)]):
        request = Request(rid, prompt_len=4 + 2 * rid, output_len=2 + rid)
        recorder.arrive(request, arrival)
        recorder.prefilled([request], arrival, first, replica=rid)
        recorder.finished([request], finish)
    rejected = Request(2, prompt_len=9, output_len=1)
    recorder.arrive(rejected, 0.2)
    recorder.reject(rejected, "too long")
    frame = recorder.requests_frame()
    assert list(frame.columns) == [
        "request_id",
        "status",
        "replica",
        "prompt_len",
        "output_len",
        "arrival",
        "admitted",
        "first_token",
        "finish",
        "ttft",
        "e2e_latency",
        "preemptions",
        "recomputed_tokens",
        "reject_reason",
    ]
    assert frame["request_id"].tolist() == [0, 1, 2]
    assert frame["replica"].tolist() == [0, 1, -1]
    assert frame["prompt_len"].tolist() == [4, 6, 9] and frame["output_len"].tolist() == [2, 3, 1]
    assert frame["ttft"][:2].tolist() == pytest.approx([0.1, 0.05])
    assert frame["e2e_latency"][:2].tolist() == pytest.approx([0.3, 0.65])
    assert frame["status"].tolist() == ["completed", "completed", "rejected"]
    assert frame["reject_reason"].tolist() == ["", "", "too long"]
