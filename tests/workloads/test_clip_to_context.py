"""clip_to_context follows Vidur's rule: proportional shrinking, totals fit, short requests untouched."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvsim.workloads import Trace, build_trace, clip_to_context, over_length_mask

lengths = st.lists(st.tuples(st.integers(1, 100_000), st.integers(1, 100_000)), min_size=1, max_size=50)


def _trace(pairs):
    prompt, output = (np.array(column, dtype=np.int64) for column in zip(*pairs))
    return Trace("t", np.zeros(len(pairs)), prompt, output)


@given(pairs=lengths, max_len=st.integers(2, 200_000))
def test_clipped_requests_fit_and_others_are_untouched(pairs, max_len):
    trace = _trace(pairs)
    over = over_length_mask(trace, max_len)
    clipped = clip_to_context(trace, max_len)
    total = clipped.prompt_len + clipped.output_len
    assert total.max() <= max_len
    assert clipped.prompt_len.min() >= 1 and clipped.output_len.min() >= 1
    np.testing.assert_array_equal(clipped.prompt_len[~over], trace.prompt_len[~over])
    np.testing.assert_array_equal(clipped.output_len[~over], trace.output_len[~over])
    assert np.all(clipped.prompt_len <= trace.prompt_len) and np.all(clipped.output_len <= trace.output_len)
    np.testing.assert_array_equal(over, trace.prompt_len + trace.output_len > max_len)


def test_proportional_shrinking():
    clipped = clip_to_context(_trace([(3000, 1000), (5000, 1)]), 2000)
    assert (clipped.prompt_len[0], clipped.output_len[0]) == (1500, 500)  # excess 2000 split 3:1
    assert (clipped.prompt_len[1], clipped.output_len[1]) == (1999, 1)  # output kept at 1


def test_matches_vidurs_clipping_of_its_sharegpt_trace(shared_data):
    """The shared data README's figures for Vidur's default max_tokens = 4096."""
    vidur = build_trace(str(shared_data / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv"))
    trace = clip_to_context(vidur, 4096)
    expected = ((trace.prompt_len, 1925.1, 1730, 4057), (trace.output_len, 405.0, 381, 985))
    for column, mean, median, p99 in expected:
        assert column.mean() == pytest.approx(mean, abs=0.05)
        assert np.median(column) == median and np.quantile(column, 0.99) == p99
