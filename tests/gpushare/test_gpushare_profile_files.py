"""Kernel profiles: read as measured or refused in one line; the profiler's trace parsing."""

import json

import pytest
from gpushare_chains import profile_kernel, write_profile

from kvsim.calibration.kernel_chains import kernels_of_trace, pass_spans_us, trace_kernels
from kvsim.errors import KvsimError
from kvsim.gpushare.kernels import load_chain, load_chains
from kvsim.hardware import SM_LIMITS

H200 = SM_LIMITS["h200-141gb"]


def test_a_profile_reads_back_as_its_chain(tmp_path):
    path = write_profile(tmp_path, "resnet18", "h200-141gb", [profile_kernel(12.5, 64), profile_kernel(3, 2)])
    chain = load_chain(path, "resnet18", "h200-141gb")
    assert [k.duration_s for k in chain.kernels] == pytest.approx([12.5e-6, 3e-6])
    assert [k.blocks for k in chain.kernels] == [64, 2]
    assert chain.alone_s == pytest.approx(15.5e-6)


def test_a_graph_pass_gives_each_kernel_the_launch_gap_that_makes_a_job_alone_take_it(tmp_path):
    path = write_profile(tmp_path, "resnet18", "h200-141gb", [profile_kernel(12.5, 64), profile_kernel(3, 2)])
    doc = json.loads(path.read_text()) | {"graph_pass_us": 19.5}
    path.write_text(json.dumps(doc))
    chain = load_chain(path, "resnet18", "h200-141gb")
    assert chain.launch_gap_s == pytest.approx(2e-6)  # (19.5 - 15.5) us over 2 kernels
    assert chain.alone_s == pytest.approx(19.5e-6)
    assert chain.launch_latency_s == 0  # no co-location benchmark: no launch latency
    path.write_text(json.dumps(doc | {"colocated_us": {"1": 30.0, "2": 40.0}}))
    launched = load_chain(path, "resnet18", "h200-141gb")
    assert launched.launch_latency_s == pytest.approx(10.5e-6)  # alone from idle, less queued
    assert launched.alone_s == pytest.approx(30e-6)
    path.write_text(json.dumps(doc | {"graph_pass_us": 15.0}))  # faster than the kernels' medians
    assert load_chain(path, "resnet18", "h200-141gb").launch_gap_s == 0
    path.write_text(json.dumps(doc | {"graph_pass_us": -1}))
    with pytest.raises(KvsimError, match="graph_pass_us must be a positive number"):
        load_chain(path, "resnet18", "h200-141gb")


@pytest.mark.parametrize(
    "field, value",
    [
        ("duration_us", 0),
        ("duration_us", "1"),
        ("grid", [1, 1]),
        ("block", [0, 1, 1]),
        ("registers_per_thread", -1),
    ],
)
def test_a_bad_field_is_named(tmp_path, field, value):
    kernel = profile_kernel(5, 4) | {field: value}
    path = write_profile(tmp_path, "resnet18", "h200-141gb", [kernel])
    with pytest.raises(KvsimError, match=f"kernels\\[0\\].{field}"):
        load_chain(path, "resnet18", "h200-141gb")


def test_a_profile_of_another_gpu_is_refused(tmp_path):
    path = write_profile(tmp_path, "resnet18", "a100-40gb", [profile_kernel(5, 4)])
    with pytest.raises(KvsimError, match="not 'resnet18' on 'h200-141gb'"):
        load_chain(path, "resnet18", "h200-141gb")


def test_a_missing_profile_names_the_command_that_measures_it(tmp_path):
    with pytest.raises(KvsimError, match="simcli gpushare profile"):
        load_chains(tmp_path, ("resnet18",), "h200-141gb", H200)


def kernel_event(ts: float, dur: float, name: str, grid=(8, 1, 1)) -> dict:
    args = {"grid": list(grid), "block": [128, 1, 1], "registers per thread": 40, "shared memory": 2048}
    return {"ph": "X", "cat": "kernel", "name": name, "ts": ts, "dur": dur, "args": args}


def two_passes() -> dict:
    """Two passes of kernels a, b (and a CPU event, which is not a kernel)."""
    events = [
        kernel_event(0, 4, "a"),
        kernel_event(10, 2, "b"),
        kernel_event(100, 6, "a"),
        kernel_event(105, 2, "b"),
        {"ph": "X", "cat": "cpu_op", "name": "aten::conv2d", "ts": 1, "dur": 3},
    ]
    return {"traceEvents": events}


def test_the_trace_splits_into_passes_and_keeps_the_median():
    kernels = trace_kernels(json.loads(json.dumps(two_passes())))
    chain = kernels_of_trace(kernels, 2, "test")
    assert [k["name"] for k in chain] == ["a", "b"]
    assert [k["duration_us"] for k in chain] == [5, 2]
    assert chain[0]["grid"] == [8, 1, 1] and chain[0]["shared_memory_bytes"] == 2048
    assert [k["start_offset_us"] for k in chain] == [0, 7.5]
    assert pass_spans_us(kernels, 2) == pytest.approx(9.5)  # spans 12 and 7


def test_passes_that_differ_are_refused():
    trace = two_passes()
    trace["traceEvents"][3] = kernel_event(105, 2, "b", grid=(16, 1, 1))
    with pytest.raises(KvsimError, match="kernel 1 differs"):
        kernels_of_trace(trace_kernels(trace), 2, "test")
    with pytest.raises(KvsimError, match="do not split into 3 passes"):
        kernels_of_trace(trace_kernels(two_passes()), 3, "test")


def test_a_trace_without_footprints_is_refused():
    trace = two_passes()
    del trace["traceEvents"][0]["args"]["grid"]
    with pytest.raises(KvsimError, match="no launch footprint"):
        kernels_of_trace(trace_kernels(trace), 2, "test")


def shipped_profiles() -> list:
    from kvsim.experiments.gpushare import SHIPPED_PROFILES

    return sorted(SHIPPED_PROFILES.glob("*.json"))


def test_profiles_are_shipped_for_every_model_of_the_mixes():
    from kvsim.gpushare.workloads import MIXES

    shipped = {path.name.split("@")[0] for path in shipped_profiles()}
    needed = {model for mix in MIXES.values() for model in mix.models}
    assert needed <= shipped


@pytest.mark.parametrize("path", shipped_profiles(), ids=lambda p: p.name)
def test_every_shipped_profile_loads_with_positive_durations_that_fit_an_h200_sm(path):
    model, gpu = path.stem.split("@")
    chain = load_chain(path, model, gpu)
    chain.check_fits(SM_LIMITS[gpu], str(path))
    assert chain.kernels
    for kernel in chain.kernels:
        assert kernel.duration_s > 0
        assert kernel.blocks > 0 and kernel.threads_per_block > 0
        assert 1 <= kernel.blocks_per_sm(H200)
