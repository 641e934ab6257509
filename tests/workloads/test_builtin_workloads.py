"""The built-in workloads reproduce what they summarise: the paper's ShareGPT data and Alpaca means."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from kvsim.workloads import build_trace
from kvsim.workloads.builtin import DATA_DIR, load_summary
from kvsim.workloads.derive_builtin import MAX_TOTAL, sharegpt_summary

N = 100_000


@pytest.fixture(scope="module")
def sharegpt():
    return build_trace("sharegpt", num_requests=N, seed=0)


@pytest.fixture
def sharegpt_data(shared_data):
    table = pd.read_csv(shared_data / "sharegpt_opt_lengths.csv")
    table = table[table.input_len + table.output_len <= MAX_TOTAL]
    return table.input_len.to_numpy(), table.output_len.to_numpy()


def test_sharegpt_means_are_the_papers(sharegpt):
    assert sharegpt.prompt_len.mean() == pytest.approx(161.3, rel=0.02)
    assert sharegpt.output_len.mean() == pytest.approx(338.0, rel=0.02)


def test_sharegpt_keeps_the_papers_filter(sharegpt):
    assert sharegpt.prompt_len.min() >= 1 and sharegpt.output_len.min() >= 1
    assert (sharegpt.prompt_len + sharegpt.output_len).max() <= MAX_TOTAL


@pytest.mark.parametrize("part", [0, 1], ids=["input", "output"])
def test_sharegpt_marginals_match_the_data(sharegpt, sharegpt_data, part):
    sample = (sharegpt.prompt_len, sharegpt.output_len)[part]
    data = sharegpt_data[part]
    assert sample.mean() == pytest.approx(data.mean(), rel=0.02)
    for q in (0.5, 0.9, 0.99):
        assert np.quantile(sample, q) == pytest.approx(np.quantile(data, q), rel=0.03), f"quantile {q}"


def test_sharegpt_dependence_matches_the_data(sharegpt, sharegpt_data):
    sample_rho = stats.spearmanr(sharegpt.prompt_len, sharegpt.output_len).statistic
    assert sample_rho == pytest.approx(stats.spearmanr(*sharegpt_data).statistic, abs=0.05)


def test_stored_summary_is_what_the_derivation_gives(sharegpt_data):
    assert sharegpt_summary(*sharegpt_data) == load_summary("sharegpt")


def test_summaries_are_compact():
    def numbers(value):
        if isinstance(value, dict):
            return sum(numbers(v) for v in value.values())
        if isinstance(value, list):
            return sum(numbers(v) for v in value)
        return isinstance(value, (int, float))

    for path in DATA_DIR.glob("*.json"):
        assert numbers(json.loads(path.read_text())) <= 500, path.name


def test_alpaca_means_are_the_papers():
    trace = build_trace("alpaca", num_requests=200_000, seed=0)
    assert trace.prompt_len.mean() == pytest.approx(19.31, rel=0.01)
    assert trace.output_len.mean() == pytest.approx(58.45, rel=0.01)
    assert trace.prompt_len.min() >= 1 and trace.output_len.min() >= 1
    assert (trace.prompt_len + trace.output_len).max() <= MAX_TOTAL
