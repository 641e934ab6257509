"""End-to-end runs of simcli (bad input: tests/cli/test_bad_inputs.py)."""

import json

import pandas as pd
from typer.testing import CliRunner

from kvsim.cli import app

runner = CliRunner()
SMALL = ["--num-requests", "60", "--rate", "4"]


def invoke(*args):
    return runner.invoke(app, list(args))


def run_trace(tmp_path, csv_text, *options):
    """Run simcli on every request of a trace written from ``csv_text``; the requests.csv it writes."""
    trace, out = tmp_path / "t.csv", tmp_path / "o"
    trace.write_text(csv_text)
    num_requests = str(len(csv_text.splitlines()) - 1)  # one a row, after the header
    result = invoke("run", "--trace", str(trace), "--num-requests", num_requests, *options, "--out", str(out))
    assert result.exit_code == 0, result.output
    return pd.read_csv(out / "requests.csv")


def test_run_writes_reproducible_outputs(tmp_path):
    result = invoke("run", *SMALL, "--out", str(tmp_path / "a"))
    assert result.exit_code == 0, result.output
    assert "token slots" in result.output and "normalized latency" in result.output
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["kv_capacity"]["num_blocks"] > 0 and summary["kv_capacity"]["num_slots"] > 0
    assert summary["metrics"]["completed"] + summary["metrics"]["rejected"] == 60
    assert summary["workload"]["mean_prompt_len"] > 0
    requests = pd.read_csv(tmp_path / "a" / "requests.csv")
    assert len(requests) == 60 and set(requests.status) <= {"completed", "rejected"}
    assert len(pd.read_csv(tmp_path / "a" / "iterations.csv")) > 0
    # The written config reproduces the run byte for byte.
    again = invoke("run", "--config", str(tmp_path / "a" / "config.json"), "--out", str(tmp_path / "b"))
    assert again.exit_code == 0, again.output
    for name in ("requests.csv", "iterations.csv", "summary.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_several_replicas_and_least_loaded_routing():
    result = invoke("run", *SMALL, "--num-replicas", "2", "--router", "least-loaded")
    assert result.exit_code == 0, result.output
    assert "2x a100-40gb" in result.output


def test_csv_trace_with_timestamps(tmp_path):
    csv_text = "arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,100,20\n0.5,50,10\n1.0,3000,10\n"
    requests = run_trace(tmp_path, csv_text, "--arrival", "trace")
    assert list(requests.status) == ["completed", "completed", "rejected"]  # 3010 > OPT's 2048
    assert "context" in requests.reject_reason[2]


def test_clip_keeps_over_length_requests(tmp_path):
    row = run_trace(tmp_path, "input_len,output_len\n3000,1000\n", "--over-length", "clip").iloc[0]
    assert row.status == "completed" and row.prompt_len + row.output_len <= 2048


def test_sweep_writes_one_row_per_point(tmp_path):
    out = tmp_path / "sweep.csv"
    result = invoke(
        "sweep",
        "--out",
        str(out),
        "--jobs",
        "1",
        "--block-size",
        "8,16",
        "--rate",
        "2,4",
        "--num-requests",
        "30",
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert len(table) == 4 and set(table.block_size) == {8, 16}
    assert (table.completed == 30).all()


def test_request_longer_than_whole_cache_is_rejected_not_lost(tmp_path):
    # At 31% of an A100-80GB, OPT-13B leaves about 680 token slots: 1999 can never fit.
    options = ("--gpu", "a100-80gb", "--gpu-memory-utilization", "0.31")
    requests = run_trace(tmp_path, "input_len,output_len\n1500,500\n10,10\n", *options)
    assert list(requests.status) == ["rejected", "completed"]
    assert "whole KV cache" in requests.reject_reason[0]


def test_catalogues_list_builtins():
    assert "llama-3-8b" in invoke("models").output
    assert "h100-sxm-80gb" in invoke("gpus").output
    assert "paged" in invoke("policies").output


def test_summary_names_no_absolute_path(tmp_path):
    """The same run from two checkouts (here: one profile file in two places) writes the same
    summary.json, byte for byte."""
    from kvsim.cost.profile import shipped_profile

    shipped = shipped_profile("opt-13b", "a100-40gb")
    summaries = []
    for place in ("a", "b"):
        (tmp_path / place).mkdir()
        profile = tmp_path / place / shipped.name
        profile.write_bytes(shipped.read_bytes())
        result = invoke("run", *SMALL, "--profile", str(profile), "--out", str(tmp_path / place / "out"))
        assert result.exit_code == 0, result.output
        summaries.append((tmp_path / place / "out" / "summary.json").read_text())
    assert summaries[0] == summaries[1]
    assert str(tmp_path) not in summaries[0]
    default = invoke("run", *SMALL, "--out", str(tmp_path / "default"))
    assert default.exit_code == 0, default.output
    assert str(shipped.parent) not in (tmp_path / "default" / "summary.json").read_text()
