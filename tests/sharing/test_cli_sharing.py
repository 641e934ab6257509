"""End to end: every sharing / preemption option through `simcli run`, and each bad value."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kvsim.cli import app

runner = CliRunner()
TINY = ["run", "--num-requests", "40", "--rate", "4"]


def run_ok(tmp_path, *options: str) -> dict:
    result = runner.invoke(app, [*TINY, *options, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    return json.loads((tmp_path / "summary.json").read_text())["metrics"]


@pytest.mark.parametrize(
    "options",
    [
        ("--n", "4"),
        ("--n", "3", "--independent-sample-lengths"),
        ("--beam-width", "4"),
        ("--beam-width", "4", "--beam-stay", "0.2", "--beam-skew", "2"),
    ],
)
def test_groups_share_memory(tmp_path, options):
    metrics = run_ok(tmp_path, *options)
    assert metrics["completed"] + metrics["rejected"] == 40
    assert metrics["forks"] > 0 and metrics["block_copies"] > 0
    assert 0 < metrics["sharing_memory_saving"] < 1


def test_shared_prefix_is_prefilled_once(tmp_path):
    metrics = run_ok(tmp_path, "--prefix-len", "256", "--num-prefixes", "2", "--prefix-popularity", "0.5")
    assert metrics["prefill_tokens_saved"] > 0 and metrics["sharing_memory_saving"] > 0


def test_chatbot_prefix_caching_hits(tmp_path):
    metrics = run_ok(tmp_path, "--trace", "chatbot", "--prefix-caching", "--num-requests", "200")
    assert metrics["prefix_hit_rate"] > 0 and metrics["prefill_tokens_saved"] > 0


def test_swap_preemption(tmp_path):
    metrics = run_ok(tmp_path, "--n", "4", "--preemption", "swap", "--rate", "20")
    assert metrics["preempted_by_swap"] > 0 and metrics["swapped_bytes"] > 0
    assert metrics["preempted_by_recompute"] == metrics["swap_space_full_fallbacks"]


def test_swap_space_full_falls_back_to_recompute(tmp_path):
    metrics = run_ok(tmp_path, "--n", "4", "--preemption", "swap", "--rate", "20", "--swap-space", "0.001")
    assert metrics["swap_space_full_fallbacks"] > 0


def test_contiguous_policy_duplicates_the_prompt(tmp_path):
    metrics = run_ok(tmp_path, "--n", "2", "--policy", "orca-oracle")
    assert metrics["forks"] == 0 and metrics["sharing_memory_saving"] == 0
    assert metrics["block_copies"] > 0  # each sample's private copy of the prompt


@pytest.mark.parametrize(
    "options, message",
    [
        (("--n", "-1"), "--n"),
        (("--beam-width", "0"), "--beam-width"),
        (("--beam-width", "300"), "max-num-seqs"),
        (("--n", "2", "--beam-width", "2"), "cannot both"),
        (("--independent-sample-lengths",), "--n above 1"),
        (("--beam-width", "2", "--beam-stay", "1.5"), "--beam-stay"),
        (("--beam-width", "2", "--beam-skew", "-1"), "--beam-skew"),
        (("--preemption", "swap", "--swap-space", "0"), "--swap-space"),
        (("--swap-space", "-1"), "--swap-space"),
        (("--preemption", "teleport"), "--preemption"),
        (("--prefix-len", "-5"), "--prefix-len"),
        (("--prefix-len", "16", "--num-prefixes", "0"), "--num-prefixes"),
        (("--prefix-len", "16", "--prefix-popularity", "-1"), "--prefix-popularity"),
        (("--policy", "orca-oracle", "--preemption", "swap"), "paged"),
    ],
)
def test_bad_values_are_one_line_errors(options, message):
    result = runner.invoke(app, [*TINY, *options])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
