"""How many KV blocks fit on the GPU, sized the way vLLM sizes them.

usable = memory x utilization; the KV cache gets what the weights and the activations of
the largest batch leave of it, cut into whole blocks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from kvsim.errors import KvsimError
from kvsim.hardware import GiB, GPUSpec
from kvsim.models import ModelSpec


@dataclass(frozen=True)
class KVCapacity:
    gpu_memory_bytes: int
    usable_bytes: int
    weight_bytes: int
    activation_bytes: int
    kv_cache_bytes: int
    block_bytes: int
    block_size: int
    num_blocks: int

    @property
    def num_slots(self) -> int:
        return self.num_blocks * self.block_size

    def to_dict(self) -> dict:
        return {**asdict(self), "num_slots": self.num_slots}


def size_kv_cache(
    model: ModelSpec,
    gpu: GPUSpec,
    block_size: int,
    gpu_memory_utilization: float,
    max_num_batched_tokens: int,
    max_num_seqs: int,
) -> KVCapacity:
    usable = int(gpu.memory_bytes * gpu_memory_utilization)
    activations = model.activation_bytes(max_num_batched_tokens, max_num_seqs)
    kv_bytes = usable - model.weight_bytes - activations
    if model.weight_bytes > usable:
        raise KvsimError(
            f"{model.name} weights need {model.weight_bytes / GiB:.1f} GiB but "
            f"{gpu.name} offers {usable / GiB:.1f} GiB at utilization "
            f"{gpu_memory_utilization}: split it over more GPUs (--tensor-parallel)"
        )
    block_bytes = block_size * model.kv_bytes_per_token
    num_blocks = max(kv_bytes, 0) // block_bytes
    if num_blocks < 1:
        raise KvsimError(
            f"{model.name} on {gpu.name} leaves no room for a single KV block of "
            f"{block_size} tokens after weights and activations"
        )
    return KVCapacity(
        gpu.memory_bytes,
        usable,
        model.weight_bytes,
        activations,
        kv_bytes,
        block_bytes,
        block_size,
        int(num_blocks),
    )
