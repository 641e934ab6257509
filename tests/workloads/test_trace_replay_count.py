"""``--arrival trace`` without ``--num-requests`` replays the whole file, not the default 1,000."""

import numpy as np

from kvsim.config import DEFAULT_NUM_REQUESTS, SimConfig
from kvsim.experiments.run import prepare_trace
from kvsim.models import load_model

ROWS = DEFAULT_NUM_REQUESTS + 234


def _timestamped_csv(write) -> str:
    lines = ["arrived_at,num_prefill_tokens,num_decode_tokens"]
    lines += [f"{0.5 * i},{10 + i % 7},{1 + i % 5}" for i in range(ROWS)]
    return write("timed.csv", "\n".join(lines) + "\n")


def test_request_count_is_the_whole_file_under_trace_arrivals():
    assert SimConfig(arrival="trace").request_count is None
    assert SimConfig(arrival="trace", num_requests=10).request_count == 10
    assert SimConfig().request_count == DEFAULT_NUM_REQUESTS  # generated arrivals keep the default


def test_replay_without_num_requests_takes_every_row(write):
    path = _timestamped_csv(write)
    model = load_model("llama-2-7b")
    whole = prepare_trace(SimConfig(trace=path, arrival="trace", model="llama-2-7b"), model)
    assert len(whole) == ROWS
    np.testing.assert_allclose(whole.arrival_time, 0.5 * np.arange(ROWS))
    head = prepare_trace(SimConfig(trace=path, arrival="trace", model="llama-2-7b", num_requests=100), model)
    assert len(head) == 100
    early = prepare_trace(SimConfig(trace=path, arrival="trace", model="llama-2-7b", duration=10.0), model)
    assert len(early) == 20
