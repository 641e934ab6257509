"""`simcli gpushare profile` on a real GPU: a measured chain that reads back as a profile."""

import importlib.util
import json
import subprocess
import sys

import pytest

from kvsim.gpushare.kernels import load_chain

pytestmark = pytest.mark.gpu


def test_resnet18_profile_reads_back(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available() or importlib.util.find_spec("torchvision") is None:
        pytest.skip("needs CUDA and torchvision")
    from kvsim.calibration.kernel_chains import profile_models

    (path,) = profile_models(tmp_path, ("resnet18",), repeats=2, warmup=2, log=lambda line: None)
    gpu = path.stem.split("@")[1]
    chain = load_chain(path, "resnet18", gpu)
    assert len(chain.kernels) > 20  # 20 convolutions alone
    assert all(k.duration_s > 0 and k.blocks >= 1 for k in chain.kernels)
    # the pass as one graph was timed: the chain alone takes it (kernels plus their launch gaps)
    # and the launch latency of a whole job on an idle GPU
    doc = json.loads(path.read_text())
    graph_pass_s = doc["graph_pass_us"] * 1e-6
    assert set(doc["colocated_us"]) == {"1", "2", "4", "8"} and chain.interference >= 0
    launch_latency_s = max(0.0, doc["colocated_us"]["1"] * 1e-6 - graph_pass_s)
    kernels_s = sum(k.duration_s for k in chain.kernels)
    assert chain.alone_s == pytest.approx(launch_latency_s + max(graph_pass_s, kernels_s))


def fresh_process(code: str, cwd) -> float:
    """The last line ``code`` prints, run by a Python of its own: CUDA state such as a
    profiler's CUPTI session, once started, lasts as long as its process."""
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True)
    return float(result.stdout.split()[-1])


def test_the_profiled_pass_is_the_one_the_executor_runs(tmp_path):
    """A whole job is priced by the profile's graph pass queued behind other work; the real
    executor's graph of the same model (captured its own way, kvsim/gpushare/cuda.py), queued
    behind its blocks, in a process that never profiles, as `simcli gpushare measure` runs it,
    must take as long. When the profiler timed its graphs after tracing (CUPTI attached), its
    ResNet-18 pass ran slower than the executor's on an H200, by more than this bound, and the
    simulated single stream queued too fast."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available() or importlib.util.find_spec("torchvision") is None:
        pytest.skip("needs CUDA and torchvision")
    profiled_us = fresh_process(
        "import json, pathlib\n"
        "from kvsim.calibration.kernel_chains import profile_models\n"
        f"(path,) = profile_models(pathlib.Path({str(tmp_path)!r}), ('resnet18',), repeats=2, log=lambda line: None)\n"
        "print(json.loads(path.read_text())['graph_pass_us'])",
        tmp_path,
    )
    executed_us = fresh_process(
        "from kvsim.gpushare.cuda import CudaGPU\n"
        "gpu = CudaGPU(['resnet18'], [1], 1)\n"
        "gpu.time_alone(0, 20)\n"
        "print(gpu.time_alone(0, 50)[1] * 1e6)",
        tmp_path,
    )
    assert profiled_us == pytest.approx(executed_us, rel=0.04)
