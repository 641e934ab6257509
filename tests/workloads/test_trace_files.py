"""Trace files: the shared real traces, and small CSV / JSONL / ShareGPT JSON files written here."""

import json
import math
import sys
import types

import numpy as np
import pytest

from kvsim.workloads import build_trace


def test_azure_conv_replays_its_own_timestamps(shared_data):
    trace = build_trace(str(shared_data / "splitwise_conv.csv"))  # no rate: the file's times
    assert len(trace) == 19_366
    assert trace.name == "splitwise_conv"
    assert trace.arrival_time[0] == 0.0 and np.all(np.diff(trace.arrival_time) >= 0)
    assert trace.stats()["arrival_span_s"] == pytest.approx(3501.72, abs=0.01)
    assert trace.prompt_len.mean() == pytest.approx(1154.7, abs=0.05)
    assert trace.output_len.mean() == pytest.approx(211.1, abs=0.05)


def test_azure_code_replay_is_bounded_in_file_order(shared_data):
    path = str(shared_data / "splitwise_code.csv")
    full = build_trace(path, arrival="trace", rate=3.0)  # the rate does not apply to a replay
    head = build_trace(path, arrival="trace", num_requests=100)
    np.testing.assert_array_equal(head.prompt_len, full.prompt_len[:100])
    early = build_trace(path, duration=60.0)
    assert early.arrival_time.max() < 60.0 and len(early) == np.sum(full.arrival_time < 60.0)


def test_vidur_sharegpt_with_generated_arrivals(shared_data):
    trace = build_trace(
        str(shared_data / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv"), num_requests=10_000, rate=1.5
    )
    assert len(trace) == 10_000
    assert trace.stats()["offered_rate"] == pytest.approx(1.5, rel=0.05)
    assert trace.prompt_len.mean() == pytest.approx(2340.0, rel=0.03)


def test_the_papers_sharegpt_lengths_load(shared_data):
    trace = build_trace(str(shared_data / "sharegpt_opt_lengths.csv"))
    assert len(trace) == 84_226 and not trace.arrival_time.any()  # no timestamps, no rate: offline
    assert trace.prompt_len.mean() == pytest.approx(295.6, abs=0.05)


def test_csv_rows_are_shuffled_evenly_when_generated(write):
    path = write("t.csv", "prompt_len,output_len\n" + "".join(f"{i},{i + 100}\n" for i in range(1, 11)))
    whole = build_trace(path, rate=1.0)
    assert sorted(whole.prompt_len) == list(range(1, 11)) and list(whole.prompt_len) != list(range(1, 11))
    np.testing.assert_array_equal(whole.output_len, whole.prompt_len + 100)  # rows stay whole
    many = build_trace(path, rate=1.0, num_requests=35)
    assert set(np.bincount(many.prompt_len)[1:]) <= {3, 4}  # each pass over the file is a reshuffle


def test_csv_timestamps_out_of_order_replay_in_time_order(write):
    path = write("t.csv", "Arrival_Time,Input_Len,Output_Len\n10.5,3,4\n10.0,5,6\n12.0,7,8\n")
    trace = build_trace(path)
    np.testing.assert_array_equal(trace.arrival_time, [0.0, 0.5, 2.0])
    np.testing.assert_array_equal(trace.prompt_len, [5, 3, 7])


def test_jsonl_with_vidur_columns(write):
    lines = [
        {"num_prefill_tokens": 10, "num_decode_tokens": 20, "timestamp": 1.0},
        {"num_prefill_tokens": 30, "num_decode_tokens": 40, "timestamp": 3.0},
    ]
    path = write("t.jsonl", "\n".join(map(json.dumps, lines)) + "\n\n")
    trace = build_trace(path)
    np.testing.assert_array_equal(trace.arrival_time, [0.0, 2.0])
    np.testing.assert_array_equal(trace.output_len, [20, 40])


def test_azure_raw_format_with_date_times(write):
    path = write(
        "AzureLLMInferenceTrace_conv.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n",
    )
    trace = build_trace(path)
    np.testing.assert_allclose(trace.arrival_time, [0.0, 4.314579])
    np.testing.assert_array_equal(trace.prompt_len, [374, 396])


def _sharegpt(write, conversations):
    return write(
        "sg.json", json.dumps([{"id": str(i), "conversations": c} for i, c in enumerate(conversations)])
    )


CONVERSATIONS = [
    [
        {"from": "human", "value": "Hello there"},
        {"from": "gpt", "value": "Hi! How can I help you today?"},
        {"from": "human", "value": "ignored: later turns"},
    ],
    [{"from": "gpt", "value": "no human turn before me"}],
    [{"from": "human", "value": "   "}, {"from": "gpt", "value": "empty prompt: skipped"}],
    [
        {"from": "system", "value": "x"},
        {"from": "user", "value": "abcdefghi"},
        {"from": "assistant", "value": "ab"},
    ],
    [],
]


def test_sharegpt_json_first_exchange_approximate_counts(write):
    trace = build_trace(_sharegpt(write, CONVERSATIONS))
    assert trace.name == "sg"
    np.testing.assert_array_equal(trace.prompt_len, [math.ceil(11 / 4), math.ceil(9 / 4)])
    np.testing.assert_array_equal(trace.output_len, [math.ceil(29 / 4), 1])


def test_sharegpt_json_with_a_local_tokenizer(write, tmp_path, monkeypatch):
    """The tokenizer path reaches AutoTokenizer with local_files_only, and its ids are counted."""
    calls = []

    class FakeTokenizer:
        def __call__(self, texts):
            return types.SimpleNamespace(input_ids=[[0, *range(len(t.split()))] for t in texts])

    def from_pretrained(path, **kwargs):
        calls.append((path, kwargs))
        return FakeTokenizer()

    fake = types.ModuleType("transformers")
    fake.AutoTokenizer = types.SimpleNamespace(from_pretrained=from_pretrained)
    monkeypatch.setitem(sys.modules, "transformers", fake)
    trace = build_trace(_sharegpt(write, CONVERSATIONS), tokenizer=str(tmp_path))
    assert calls == [(str(tmp_path), {"local_files_only": True})]
    np.testing.assert_array_equal(trace.prompt_len, [3, 2])  # BOS + words, as vLLM counts
    np.testing.assert_array_equal(trace.output_len, [8, 2])


def test_sharegpt_json_with_a_real_tokenizer_directory(write, tmp_path):
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]").save_pretrained(tmp_path / "tok")
    trace = build_trace(_sharegpt(write, CONVERSATIONS[:1]), tokenizer=str(tmp_path / "tok"))
    assert (trace.prompt_len[0], trace.output_len[0]) == (2, 9)  # Whitespace splits off punctuation
