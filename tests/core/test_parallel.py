"""Tensor parallelism in the simulator: what each rank holds, what the cache is sized from,
what a step costs (one rank's compute plus the ring's collectives), and the refusals."""

import warnings
from dataclasses import replace

import numpy as np
import pytest

from kvsim.config import SimConfig
from kvsim.cost.parallel import RingAssumptions, RingCollectives, TensorParallelCost
from kvsim.cost.roofline import RooflineCostModel
from kvsim.errors import KvsimError
from kvsim.experiments.run import run
from kvsim.hardware import GiB, load_gpu
from kvsim.models import load_model
from kvsim.sim.capacity import size_kv_cache


def test_a_shard_holds_its_share_of_heads_width_and_vocabulary():
    llama = load_model("llama-2-70b")
    shard = llama.shard(4)
    assert (shard.num_heads, shard.num_kv_heads) == (16, 2)
    assert shard.intermediate_size == 28672 // 4 and shard.vocab_size == 32000 // 4
    assert shard.hidden_size == llama.hidden_size and shard.num_layers == llama.num_layers
    # the matrices split four ways; norms stay whole on every rank
    assert llama.weight_bytes / 4 < shard.weight_bytes < llama.weight_bytes / 4 * 1.001
    assert shard.kv_bytes_per_token == llama.kv_bytes_per_token // 4
    assert llama.shard(1) is llama


def test_grouped_query_heads_are_replicated_when_ranks_outnumber_them():
    llama = load_model("llama-2-70b")  # 8 KV heads
    assert llama.shard(8).num_kv_heads == 1
    assert llama.shard(2).num_kv_heads == 4
    assert llama.tensor_parallel_problem(8) == ""
    assert "attention heads do not split over 3" in llama.tensor_parallel_problem(3)
    odd = replace(llama, num_heads=24)  # 24 heads split over 6 GPUs; 8 KV heads neither split nor replicate
    assert "8 KV heads neither split over nor replicate onto 6" in odd.tensor_parallel_problem(6)


def test_the_cache_is_sized_on_one_rank_as_vllm_sizes_it():
    """OPT-66B on 4 A100-40GB: each GPU holds a quarter of the weights and a quarter of every
    layer's KV heads; the replica's slots are one GPU's blocks times the block size. The vLLM
    paper's Table 1 gives about 9.7K slots (21 GB of KV cache in all), at vLLM's budget then."""
    model, gpu = load_model("opt-66b"), load_gpu("a100-40gb")
    shard = model.shard(4)
    cap = size_kv_cache(shard, gpu, 16, 0.9, 2560, 256)
    usable = int(gpu.memory_bytes * 0.9)
    by_hand = (usable - shard.weight_bytes - shard.activation_bytes(2560, 256)) // (
        16 * shard.kv_bytes_per_token
    )
    assert cap.num_blocks == by_hand and cap.num_slots == 16 * by_hand
    assert cap.num_slots == pytest.approx(9_700, rel=0.05)
    # The paper's "GB" are GiB: 9.7K slots of 2.36 MB (OPT-66B's KV per token) make 21.3 GiB.
    assert 4 * cap.kv_cache_bytes / GiB == pytest.approx(21, rel=0.05)


def test_a_step_is_one_ranks_compute_plus_the_rings_collectives():
    """Two all-reduces per layer of every token's hidden state, and the head's all-gather of
    the sampled sequences' fp32 logits, each ring step 1/N of the data one way on NVLink."""
    model, gpu = load_model("llama-2-70b"), load_gpu("h200-141gb")
    compute = RooflineCostModel(model.shard(8), gpu, 16)
    cost = TensorParallelCost(compute, model, gpu, 8)
    one_way, latency = gpu.nvlink_bandwidth / 2, RingAssumptions().step_latency_s
    batch = 32
    all_reduce = 2 * 7 * (batch * 8192 * 2 / 8 / one_way + latency)
    gather = 7 * (batch * 32000 * 4 / 8 / one_way + latency)
    expected_comm = 2 * 80 * all_reduce + gather
    times = cost.decode_times(batch, batch * 500, 3)
    np.testing.assert_allclose(times - compute.decode_times(batch, batch * 500, 3), expected_comm, rtol=1e-12)
    ring = RingCollectives(gpu, 8, RingAssumptions(step_latency_s=0.0))
    assert ring.all_reduce(1e9) == pytest.approx(2 * 7 / 8 * 1e9 / one_way)  # the bandwidth floor
    new, context = np.array([300, 200]), np.array([300, 900])
    assert cost.prefill_time(new, context) == pytest.approx(
        compute.prefill_time(new, context) + cost.step_communication(500, 2), rel=1e-12
    )


def test_a_run_records_its_collectives_and_they_cost_time():
    config = SimConfig(model="llama-2-70b", gpu="h200-141gb", tensor_parallel=4, num_requests=60, rate=2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run(config)
    steps = result.recorder.steps_frame()
    assert (steps.comm_s > 0).all() and (steps.comm_s < steps.duration).all()
    alone = run(config.with_overrides(num_requests=60))  # deterministic: the same run again
    assert alone.recorder.steps_frame().comm_s.tolist() == steps.comm_s.tolist()
    assert result.summary["completed"] == 60
    assert result.summary["comm_fraction"] == pytest.approx(steps.comm_s.sum() / steps.duration.sum())


def test_a_profile_of_another_degree_is_refused(tmp_path):
    from kvsim.cost.profile import shipped_profile

    config = SimConfig(
        model="opt-13b",
        gpu="a100-40gb",
        tensor_parallel=2,
        profile=str(shipped_profile("opt-13b", "a100-40gb")),
    )
    with pytest.raises(KvsimError, match="tensor parallelism 1, but the run uses --tensor-parallel 2"):
        run(config.with_overrides(num_requests=5))
