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
