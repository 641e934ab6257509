"""Every bad input is a KvsimError with a one-line message that says what is wrong."""

import json
import re
import sys
import types

import pytest

from kvsim.errors import KvsimError
from kvsim.workloads import build_trace, clip_to_context

GOOD_CSV = "prompt_len,output_len\n3,4\n"


def _fails(match, source="sharegpt", **kwargs):
    with pytest.raises(KvsimError, match=match) as err:
        build_trace(source, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(num_requests=0), "num_requests must be"),
        (dict(num_requests=-5), "num_requests must be"),
        (dict(num_requests=2.5), "num_requests must be"),
        (dict(num_requests=True), "num_requests must be"),
        (dict(num_requests=10, rate=0.0), "rate must be a positive number"),
        (dict(num_requests=10, rate=-1.0), "rate must be a positive number"),
        (dict(num_requests=10, rate=float("nan")), "rate must be a positive number"),
        (dict(num_requests=10, rate=float("inf")), "rate must be a positive number"),
        (dict(duration=0.0, rate=1.0), "duration must be a positive number"),
        (dict(duration=-3.0, rate=1.0), "duration must be a positive number"),
        (
            dict(num_requests=10, rate=1.0, arrival="gamma", burstiness_cv=0.0),
            "burstiness_cv must be positive",
        ),
        (
            dict(num_requests=10, rate=1.0, arrival="gamma", burstiness_cv=-2.0),
            "burstiness_cv must be positive",
        ),
        (dict(num_requests=10, rate=1.0, burstiness_cv=3.0), "needs arrival='gamma'"),
        (dict(num_requests=10, rate=1.0, arrival="uniform"), "unknown arrival process 'uniform'"),
        (dict(num_requests=10, seed=-1), "seed must be"),
        (dict(rate=1.0), "needs num_requests"),
        (dict(), "needs num_requests"),
        (dict(duration=10.0), "a duration needs arrival times"),
        (dict(num_requests=10, arrival="gamma", burstiness_cv=2.0), "gamma arrivals need a rate"),
        (dict(num_requests=10, arrival="trace"), "no arrival timestamps"),
    ],
)
def test_bad_arguments(kwargs, match):
    _fails(match, **kwargs)


def test_unknown_builtin_or_missing_file(tmp_path):
    _fails("unknown workload 'shargpt': not a built-in", "shargpt", num_requests=1)
    _fails("no such file", str(tmp_path / "missing.csv"))


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("t.csv", "", "cannot read CSV"),
        ("t.csv", "prompt_len,output_len\n1,2\n3,4,5,6\n", "cannot read CSV"),
        (
            "t.csv",
            "a,b\n1,2\n",
            r"no token-count columns \(expected one of input_len/output_len.*found a, b\)",
        ),
        ("t.csv", "prompt_len,output_len\n", "no requests"),
        (
            "t.csv",
            "prompt_len,output_len\n5,0\n",
            "column 'output_len', request 1: expected a positive whole number of tokens, got 0",
        ),
        (
            "t.csv",
            "prompt_len,output_len\n5,6\n-3,4\n",
            "request 2: expected a positive whole number of tokens, got -3",
        ),
        ("t.csv", "prompt_len,output_len\n1.5,4\n", "got 1.5$"),
        ("t.csv", "prompt_len,output_len\nabc,4\n", "got 'abc'$"),
        ("t.csv", "prompt_len,output_len\n2,\n", "column 'output_len', request 1: .* got nothing"),
        (
            "t.csv",
            "arrived_at,prompt_len,output_len\n0,1,2\nsoon,3,4\n",
            "request 2: expected an arrival time .*, got 'soon'",
        ),
        ("t.jsonl", '{"input_len": 3, "output_len": 4}\n{"input_len": 3,\n', "line 2: malformed JSON"),
        ("t.jsonl", "[3, 4]\n", "line 1: expected a JSON object per line"),
        ("t.json", "{not json", "malformed JSON"),
        ("t.json", '{"conversations": []}', "expected a ShareGPT list of conversations, got a JSON dict"),
        ("t.json", '[{"id": 1}]', "conversation 1 is not"),
        ("t.json", '[{"conversations": [{"from": "human"}]}]', "conversation 1 is not"),
        (
            "t.json",
            '[{"conversations": [{"from": "gpt", "value": "hi"}]}]',
            "no conversation has a human turn",
        ),
        ("t.parquet", "x", "unsupported trace format '.parquet'"),
    ],
)
def test_bad_files(write, name, text, match):
    _fails(match, write(name, text))


def test_unreadable_bytes(tmp_path):
    for name in ("t.csv", "t.jsonl", "t.json"):
        path = tmp_path / name
        path.write_bytes(b"\xff\xfe\x00bad")
        _fails("cannot read", str(path))


def test_tokenizer_misuse(write, tmp_path, monkeypatch):
    _fails("a tokenizer applies to ShareGPT JSON only", write("t.csv", GOOD_CSV), tokenizer=str(tmp_path))
    conversations = json.dumps(
        [{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}]
    )
    sharegpt = write("t.json", conversations)
    _fails("no tokenizer at", sharegpt, tokenizer=str(tmp_path / "nope"))
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    _fails("needs the 'transformers' package", sharegpt, tokenizer=str(tmp_path))

    def from_pretrained(path, **kwargs):
        raise ValueError("Unrecognized configuration\nwith details on more lines")

    broken = types.ModuleType("transformers")
    broken.AutoTokenizer = types.SimpleNamespace(from_pretrained=from_pretrained)
    monkeypatch.setitem(sys.modules, "transformers", broken)
    expected = re.escape(f"cannot load a tokenizer from {tmp_path}: Unrecognized configuration") + "$"
    _fails(expected, sharegpt, tokenizer=str(tmp_path))


def test_clip_needs_room_for_a_request():
    trace = build_trace("alpaca", num_requests=3)
    with pytest.raises(KvsimError, match="at least 2"):
        clip_to_context(trace, 1)
