"""A tensor-parallel runner (ranks over gloo, on CPU) gives the logits of the whole model:
prefill, cached-prefix prefill, paged decode and a mixed step, for OPT (biases, learned
positions) and LLaMA (gated MLP, rotary, grouped-query heads, split and replicated)."""

import socket

import pytest

torch = pytest.importorskip("torch")

import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from kvsim.gpu.parallel import TensorParallel  # noqa: E402
from kvsim.gpu.runner import ModelRunner  # noqa: E402
from kvsim.models import spec_from_hf_config  # noqa: E402

BLOCK = 4
CONFIGS = {
    "opt": {
        "model_type": "opt",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "ffn_dim": 128,
        "vocab_size": 101,  # does not divide by the ranks: the last part is padded
        "max_position_embeddings": 128,
    },
    "llama-gqa": {
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 96,
        "vocab_size": 97,
        "max_position_embeddings": 128,
    },
    "llama-mqa": {
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "intermediate_size": 96,
        "vocab_size": 97,
        "max_position_embeddings": 128,
    },
}


def _steps(runner: ModelRunner) -> list[torch.Tensor]:
    """Logits of a fixed little session: two prompts, a cached-prefix continuation, two decode
    steps, and a mixed step (a chunk beside a decode)."""
    tables = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    out = [runner.prefill([[3, 17, 5, 9, 44, 2], [8, 1, 7]], tables[:2])]
    out.append(runner.prefill([[61, 62, 63]], tables[2:], num_cached=[0]))
    out.append(runner.prefill([[64, 65]], tables[2:], num_cached=[3]))
    for step in range(2):
        out.append(runner.decode([20 + step, 30 + step], [6 + step, 3 + step], tables[:2]))
    out.append(runner.mixed([[70, 71, 72]], tables[2:], [5], [40], [8], tables[:1]))
    return out


def _rank(rank: int, port: int, name: str, ranks: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=ranks)
    try:
        spec = spec_from_hf_config(CONFIGS[name], name, dtype="float32")
        whole = _steps(ModelRunner(spec, 16, BLOCK, device="cpu", seed=0))
        parallel = ModelRunner(spec, 16, BLOCK, device="cpu", seed=0, parallel=TensorParallel(rank, ranks))
        assert parallel.spec.num_heads == spec.num_heads // ranks
        for sharded, full in zip(_steps(parallel), whole):
            assert sharded.shape == full.shape
            assert float((sharded - full).norm() / full.norm()) < 1e-5
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "name, ranks",
    [
        ("opt", 2),
        ("llama-gqa", 2),  # one KV head per rank
        ("llama-mqa", 2),  # the one KV head on both ranks
        ("llama-gqa", 4),  # each of 2 KV heads replicated onto 2 of the 4 ranks
    ],
)
def test_ranks_give_the_whole_models_logits(name, ranks):
    mp.spawn(_rank, args=(_free_port(), name, ranks), nprocs=ranks, join=True)


def _executor_rank(rank: int, port: int, ranks: int) -> None:
    """Every rank drives its own copy of the engine core over the same trace: scheduling is
    deterministic, so all run the same steps, and their collectives meet."""
    import numpy as np

    from kvsim.cost.roofline import RooflineCostModel
    from kvsim.gpu.executor import RealExecutor
    from kvsim.hardware import load_gpu
    from kvsim.policies.registry import PolicyContext, get_policy
    from kvsim.sim.cluster import RoundRobinRouter
    from kvsim.sim.engine import simulate
    from kvsim.workloads.trace import Trace

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=ranks)
    try:
        spec = spec_from_hf_config(CONFIGS["llama-gqa"], "llama-gqa", dtype="float32")
        rng = np.random.default_rng(3)
        trace = Trace(
            "tiny", np.sort(rng.uniform(0, 0.05, 10)), rng.integers(2, 30, 10), rng.integers(1, 20, 10)
        )
        cost = RooflineCostModel(spec.shard(ranks), load_gpu("a100-40gb"), BLOCK)
        context = PolicyContext(
            24, BLOCK, max_num_seqs=4, max_num_batched_tokens=16, max_model_len=128, scheduler="v1"
        )
        simulated = simulate(trace, [get_policy("paged").build(context)], cost, RoundRobinRouter())
        runner = ModelRunner(spec, 24, BLOCK, device="cpu", seed=0, parallel=TensorParallel(rank, ranks))
        executed = RealExecutor(
            get_policy("paged").build(context),
            runner,
            step_clock=lambda plan: float(cost.plan_durations(plan)[0]),
        ).run(trace)
        sim, real = simulated.requests_frame(), executed.requests_frame()
        assert sim.status.tolist() == real.status.tolist()
        np.testing.assert_allclose(real.finish, sim.finish, rtol=1e-9)
        assert sim.preemptions.sum() > 0  # the cache is small enough to preempt
    finally:
        dist.destroy_process_group()


def test_a_tensor_parallel_executor_keeps_the_simulated_schedule():
    mp.spawn(_executor_rank, args=(_free_port(), 2), nprocs=2, join=True)
