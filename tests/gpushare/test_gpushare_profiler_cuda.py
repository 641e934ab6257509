"""`simcli gpushare profile` on a real GPU: a measured chain that reads back as a profile."""

import importlib.util
import json

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


def test_the_profiled_pass_is_the_one_the_executor_runs(tmp_path):
    """A whole job is priced by the profile's graph pass queued behind other work; the real
    executor's graph of the same model (captured its own way, kvsim/gpushare/cuda.py), queued
    behind its blocks, must take as long. When the profiler ran its passes on the default
    stream before capturing on another, its ResNet-18 graph ran slower than the executor's
    on an H200, by more than this bound, and the simulated single stream queued too fast."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available() or importlib.util.find_spec("torchvision") is None:
        pytest.skip("needs CUDA and torchvision")
    from kvsim.calibration.kernel_chains import profile_models
    from kvsim.gpushare.cuda import CudaGPU

    (path,) = profile_models(tmp_path, ("resnet18",), repeats=2, warmup=10, log=lambda line: None)
    profiled_s = json.loads(path.read_text())["graph_pass_us"] * 1e-6
    gpu = CudaGPU(["resnet18"], [1], 1)
    gpu.time_alone(0, 20)  # warm
    _, executed_s = gpu.time_alone(0, 50)
    assert profiled_s == pytest.approx(executed_s, rel=0.04)
