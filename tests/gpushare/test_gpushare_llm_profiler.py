"""The LLM step profiler's parts that run without a GPU: a step's trace becomes an entry the
simulator reads back, the prefill's prompts, and bad input refused before any GPU work."""

import json

import pytest

from kvsim.calibration.kernel_chains import trace_kernels
from kvsim.calibration.llm_chains import check_grid, profile_llms, prompt_lengths, step_entry, steps_document
from kvsim.errors import KvsimError
from kvsim.gpushare.llm_chains import step_chains_from_doc

GPU = "h200-141gb"


def step_trace(durations_us: list[float], repeats: int) -> list[dict]:
    """``repeats`` identical steps, each of kernels taking ``durations_us`` (+1 us from the
    second step on, so the median is the middle one's)."""
    events, ts = [], 0.0
    for r in range(repeats):
        for i, d in enumerate(durations_us):
            args = {"grid": [64, 1, 1], "block": [256, 1, 1], "registers per thread": 64, "shared memory": 0}
            events.append(
                {"ph": "X", "cat": "kernel", "name": f"k{i}", "ts": ts, "dur": d + min(r, 1), "args": args}
            )
            ts += 50
    return trace_kernels({"traceEvents": events})


def test_measured_steps_read_back_as_the_simulators_chains():
    device = {"name": GPU}
    entries = [
        step_entry("decode", 4, "opt-13b", device, step_trace([10, 20], 3), 3, 80e-6),
        step_entry("prefill", 512, "opt-13b", device, step_trace([100, 200, 300], 3), 3, 700e-6),
    ]
    doc = steps_document("opt-13b", device, {"context_len": 512}, entries)
    chains = step_chains_from_doc(json.loads(json.dumps(doc)), "opt-13b", GPU, "test")
    measured, ran = chains.for_step("decode", 3)
    assert measured is ran and measured.model == "opt-13b decode 4"
    assert [k.duration_s for k in measured.kernels] == pytest.approx([11e-6, 21e-6])
    # the queued step gives the launch gap: the chain alone takes it
    assert measured.alone_s == pytest.approx(80e-6)
    prefill, _ = chains.for_step("prefill", 300)
    assert prefill.alone_s == pytest.approx(700e-6) and len(prefill.kernels) == 3


def test_steps_whose_kernels_differ_between_repeats_are_refused():
    kernels = step_trace([10, 20], 2)
    kernels[3]["args"] = {**kernels[3]["args"], "grid": [128, 1, 1]}
    with pytest.raises(KvsimError, match="opt-13b decode 4: kernel 1 differs"):
        step_entry("decode", 4, "opt-13b", {"name": GPU}, kernels, 2, 1e-4)


@pytest.mark.parametrize("tokens, expected", [(128, [128]), (512, [512]), (1300, [512, 512, 276])])
def test_a_prefill_is_prompts_of_the_prompt_length(tokens, expected):
    assert prompt_lengths(tokens, 512) == expected


@pytest.mark.parametrize(
    "models, decode, prefill, context, message",
    [
        (["no-such-model"], (1,), (128,), 512, "unknown model"),
        ([], (1,), (128,), 512, "names no model"),
        (["opt-13b"], (0, 8), (128,), 512, "decode batch sizes must be positive"),
        (["opt-13b"], (1,), (), 512, "prefill token counts must be positive"),
        (["opt-13b"], (1,), (128,), 4096, "exceeds its context of 2048"),
    ],
)
def test_bad_input_is_refused_in_one_line_before_any_gpu_work(models, decode, prefill, context, message):
    with pytest.raises(KvsimError, match=message) as err:
        check_grid(models, decode, prefill, context)
    assert "\n" not in str(err.value)


def test_the_profiler_checks_its_input_before_asking_for_a_gpu(tmp_path):
    with pytest.raises(KvsimError, match="unknown model"):
        profile_llms(tmp_path / "out", ["no-such-model"])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", [["--models", "resnet18"], ["--dtype", "float16"]])
def test_torchvision_options_beside_llm_are_refused_not_ignored(tmp_path, flag):
    from typer.testing import CliRunner

    from kvsim.cli import EXIT_BAD_INPUT, app

    args = ["gpushare", "profile", "--out", str(tmp_path / "out"), "--llm", "opt-13b", *flag]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == EXIT_BAD_INPUT
    assert "--models and --dtype are for torchvision models" in result.output
