"""simcli profiles and simcli calibrate on a machine without a GPU."""

import importlib.util

import pytest
from typer.testing import CliRunner

from kvsim.cli import app

runner = CliRunner()


def test_profiles_lists_measured_and_derived():
    result = runner.invoke(app, ["profiles"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "opt-13b" in result.output and "a100-40gb" in result.output
    assert "measured" in result.output and "derived (h100-sxm-80gb)" in result.output


def _has_cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_has_cuda(), reason="this machine has a GPU")
def test_calibrate_without_gpu_is_one_line_error():
    result = runner.invoke(app, ["calibrate", "--model", "opt-13b"])
    assert result.exit_code == 2
    assert "calibrate needs" in result.output and "Traceback" not in result.output


def test_calibrate_unknown_model_is_one_line_error():
    result = runner.invoke(app, ["calibrate", "--model", "no-such-model"])
    assert result.exit_code == 2 and "unknown model" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--model", "llama-2-70b", "--tp", "3"],
            "llama-2-70b's 64 attention heads do not split over 3 GPUs",
        ),
        (["--model", "llama-2-70b", "--tensor-parallel", "9"], "--tensor-parallel must be between 1 and 8"),
    ],
)
def test_calibrate_refuses_a_shard_that_cannot_be_before_looking_for_a_gpu(args, message):
    result = runner.invoke(app, ["calibrate", *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
