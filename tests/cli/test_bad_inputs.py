"""Every bad input is refused before any work starts: exit status 2, exactly one line on
stderr, no traceback, and nothing written. A run that serves no request says so and fails."""

import json
import os

import pytest
from typer.testing import CliRunner

from kvsim.cli import EXIT_BAD_INPUT, EXIT_NOTHING_SERVED, app

runner = CliRunner()
SMALL = ["--num-requests", "5", "--rate", "4"]


def refusal(args: list[str]) -> str:
    """The one stderr line with which `simcli args` refuses."""
    result = runner.invoke(app, args)
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def files(tmp_path):
    """Placeholders for the arguments below, each a path in tmp_path."""
    paths = {
        "binary": tmp_path / "binary.json",
        "folder": tmp_path / "folder",
        "malformed": tmp_path / "malformed.csv",
        "out": tmp_path / "out",
    }
    paths["binary"].write_bytes(bytes(range(128, 256)) * 8)  # no UTF-8 text starts with 0x80
    paths["folder"].mkdir()
    paths["malformed"].write_text("foo,bar\n1,2\n")
    for name, text in CONFIGS.items():
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(text)
    return paths


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if a simulation, a sweep point or a comparison starts."""

    def started(*args, **kwargs):
        raise AssertionError("work started before the input was checked")

    for target in (
        "kvsim.experiments.run.run",
        "kvsim.experiments.sweep.ProcessPoolExecutor",
        "kvsim.experiments.compare.compare_policies",
    ):
        monkeypatch.setattr(target, started)


CONFIGS = {
    "text_rate": '{"rate": "fast"}',
    "fractional_block": '{"block_size": 16.5}',
    "word_switch": '{"prefix_caching": "yes"}',
    "true_count": '{"num_requests": true}',
    "nan_skew": '{"beam_skew": NaN}',
    "list": '[{"rate": 1}]',
    "number": "3",
}

# Refused by the config's own checks, before the simulation is even set up.
CONFIG_CASES = [
    (["--config", "{binary}"], "cannot read config"),
    (["--config", "{text_rate}"], "--rate must be a number (got 'fast')"),
    (["--config", "{fractional_block}"], "--block-size must be a whole number"),
    (["--config", "{word_switch}"], "--prefix-caching must be true or false"),
    (["--config", "{true_count}"], "--num-requests must be a whole number"),
    (["--config", "{nan_skew}"], "--beam-skew must be a finite number"),
    (["--config", "{list}"], "must hold a JSON object of settings (got a list)"),
    (["--config", "{number}"], "must hold a JSON object of settings (got a number)"),
    (["--beam-skew", "nan"], "--beam-skew must be a finite number"),
    (["--rate", "inf"], "--rate must be a finite number"),
    (["--watermark", "nan"], "--watermark must be a finite number"),
    (["--swap-space", "-inf"], "--swap-space must be a finite number"),
    (["--swap-space", "1e9", "--preemption", "swap"], "--swap-space must be at most"),
    (["--swap-space", "1e9"], "--swap-space must be at most"),  # the swap free list is built anyway
    (["--num-requests", str(10**12)], "--num-requests must be between 1 and"),
    (["--num-requests", "0"], "--num-requests must be between 1 and"),
    (["--rate", "1000", "--duration", "1e9"], "more than the limit"),
    (["--dtype", "float64"], "--dtype must be one of"),
    (["--rate", "0"], "--rate must be positive"),
    (["--rate", "-1"], "--rate must be positive"),
    (["--block-size", "512"], "--block-size"),
    (["--rate", "abc"], "--rate"),
    (["--nope"], "No such option: --nope"),
    (["--scheduler", "v2"], "--scheduler must be one of v0, v1"),
    (["--scheduler", "v1", "--n", "2"], "--scheduler v1 does not model --n: use --scheduler v0"),
    (["--scheduler", "v1", "--policy", "orca-max"], "--scheduler v1 does not model policy orca-max"),
    (["--scheduler", "v1", "--preemption", "swap"], "--scheduler v1 does not model --preemption swap"),
    (["--long-prefill-token-threshold", "-1"], "--long-prefill-token-threshold must be at least 0"),
    (["--tensor-parallel", "16"], "--tensor-parallel 16 is more GPUs than a node has (8)"),
    (["--tp", "0"], "--tensor-parallel must be at least 1"),
    (["--max-num-partial-prefills", "0"], "--max-num-partial-prefills must be at least 1"),
]

# Refused while the run resolves what it names: model, GPU, policy, trace.
RESOLVE_CASES = [
    (["--gpu", "{binary}"], "cannot read GPU file"),
    (["--model", "{binary}"], "cannot read model config"),
    (["--trace", "{folder}"], "is a directory"),
    (["--trace", "/no/such/file.csv"], "/no/such/file.csv"),
    (["--trace", "{malformed}"], "no token-count columns"),
    (["--policy", "magic"], "unknown policy"),
    (["--model", "gpt-9"], "unknown model"),
    (["--gpu", "tpu"], "unknown GPU"),
    (["--model", "opt-66b"], "weights need"),
    (["--model", "llama-2-70b", "--tp", "3"], "llama-2-70b's 64 attention heads do not split over 3 GPUs"),
    (["--model", "llama-2-70b", "--tp", "2"], "split it over more GPUs (--tensor-parallel)"),
]


def refused_run(files: dict, args: list[str], message: str) -> None:
    """`simcli run args --out ...` refuses with ``message`` and writes nothing."""
    assert message in refusal(["run", *[a.format(**files) for a in args], "--out", str(files["out"])])
    assert not files["out"].exists()


@pytest.mark.parametrize("args, message", CONFIG_CASES)
def test_run_refuses_a_bad_config_before_simulating(files, no_work, args, message):
    refused_run(files, args, message)


@pytest.mark.parametrize("args, message", RESOLVE_CASES)
def test_run_refuses_what_it_cannot_resolve(files, args, message):
    refused_run(files, [*SMALL, *args], message)  # small, in case a refusal goes missing


LIST_CASES = [
    (["sweep", "--block-size", "8,,16"], "sweep: --block-size has an empty value in '8,,16'"),
    (["sweep", "--rate", "1,"], "sweep: --rate has an empty value"),
    (["sweep", "--beam-skew", "1,nan"], "--beam-skew must be a finite number"),
    (["sweep", "--jobs", "0"], "'--jobs'"),
    (["compare", "--rate", "1,,2"], "compare: --rate has an empty value"),
    (["compare", "--policies", "paged,,ft"], "compare: --policies has an empty value"),
    (["compare", "--jobs", "0"], "'--jobs'"),
]


@pytest.mark.parametrize("args, message", LIST_CASES)
def test_lists_and_jobs_are_refused_whole(tmp_path, no_work, args, message):
    out = tmp_path / ("out.csv" if args[0] == "sweep" else "out")
    assert message in refusal([*args, *SMALL[:2], "--out", str(out)])
    assert not out.exists()


OUT_CASES = [
    (["sweep", *SMALL, "--out", "{folder}"], "--out {folder} is a directory"),
    (["sweep", *SMALL, "--out", "{binary}/sweep.csv"], "{binary} is not a directory"),
    (["run", *SMALL, "--out", "{binary}"], "--out {binary} is a file"),
    (["run", *SMALL, "--out", "{binary}/run"], "{binary} is not a directory"),
    (["compare", *SMALL, "--out", "{binary}/compare"], "{binary} is not a directory"),
    # The GPU commands check --out first too: else the refusal would be "no CUDA GPU".
    (["validate", *SMALL, "--out", "{binary}/validation"], "{binary} is not a directory"),
    (["calibrate", "--out", "{folder}"], "--out {folder} is a directory"),
]


@pytest.mark.parametrize("args, message", OUT_CASES)
def test_out_is_checked_before_anything_runs(files, no_work, args, message):
    before = sorted(files["out"].parent.rglob("*"))
    assert message.format(**files) in refusal([a.format(**files) for a in args])
    assert sorted(files["out"].parent.rglob("*")) == before


@pytest.mark.parametrize("command, out", [("sweep", "sweep.csv"), ("run", "run"), ("compare", "compare")])
def test_unwritable_out_is_refused(tmp_path, monkeypatch, no_work, command, out):
    """Root may write anywhere, so a patched os.access stands in for a denied permission."""
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode, **kw: path != tmp_path and real_access(path, mode, **kw)
    )
    assert f"{tmp_path} is not writable" in refusal([command, "--out", str(tmp_path / out), *SMALL])
    assert not (tmp_path / out).exists()


def test_run_that_serves_no_request_says_so_and_still_writes(tmp_path):
    trace = tmp_path / "long.csv"
    trace.write_text("input_len,output_len\n3000,10\n2040,100\n")  # both past OPT-13B's 2048
    result = runner.invoke(
        app, ["run", "--trace", str(trace), "--num-requests", "2", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == EXIT_NOTHING_SERVED != EXIT_BAD_INPUT
    [line] = result.stderr.splitlines()
    assert "no request completed: 2 of 2 rejected" in line and "context" in line
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["metrics"]["completed"] == 0
    assert summary["metrics"]["normalized_latency_s_per_token"] is None  # NaN written as null
