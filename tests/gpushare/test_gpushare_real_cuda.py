"""The real executor on a real GPU: the block graphs compute the model's forward, and a small
`simcli gpushare measure` run times every job consistently."""

import importlib.util

import pandas as pd
import pytest
from typer.testing import CliRunner

from kvsim.cli import app

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available() or importlib.util.find_spec("torchvision") is None:
        pytest.skip("needs CUDA and torchvision")
    return torch


def test_the_block_graphs_replayed_in_order_compute_the_forward(torch):
    from kvsim.gpushare.cuda import CudaGPU

    gpu = CudaGPU(("resnet18", "inception_v3"), (2, 1), streams=1)
    for m, (network, batch) in enumerate(gpu.networks):
        with torch.inference_mode():
            expected = network(batch)
        for slot in gpu.slots[m]:
            with torch.inference_mode():
                slot.output.zero_()
            for graph in slot.graphs:
                graph.replay()
            torch.cuda.synchronize()
            torch.testing.assert_close(slot.output, expected, rtol=1e-4, atol=1e-4)
            with torch.inference_mode():
                slot.whole_output.zero_()
            slot.whole.replay()  # the whole job as one graph, as the hardware baselines launch it
            torch.cuda.synchronize()
            torch.testing.assert_close(slot.whole_output, expected, rtol=1e-4, atol=1e-4)
        assert len(gpu.block_names[m]) == len(gpu.slots[m][0].graphs) > 5
    blocks, whole = gpu.time_alone(0, passes=5)
    assert len(blocks) == len(gpu.block_names[0]) and all(t > 0 for t in blocks) and whole > 0


def test_a_small_measurement_times_every_job(torch, tmp_path):
    out = tmp_path / "measured"
    result = CliRunner().invoke(
        app,
        [
            "gpushare",
            "measure",
            "--mix",
            "extremes",
            "--num-jobs",
            "60",
            "--load",
            "0.5,2",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "load.csv")
    assert set(table.policy) == {"cuda-multi-stream", "cuda-single-stream", "paella-srpt"}
    assert (table[table.model == "all"].jobs == 60).all()
    slack = 50e-6  # the GPU's clock and the host's agree to within a launch latency
    for policy in table.policy.unique():
        for load in (0.5, 2):
            jobs = pd.read_csv(out / "jobs" / f"{policy}@{load:g}.csv")
            assert jobs.finished.notna().all()
            assert (jobs.released >= jobs.arrival).all()
            assert (jobs.started >= jobs.launched - slack).all()
            assert (jobs.finished > jobs.started).all()
            if policy == "cuda-single-stream":
                order = jobs.sort_values("started")
                assert (order.started.to_numpy()[1:] >= order.finished.to_numpy()[:-1] - 1e-6).all()
