"""One rank of a tensor-parallel model runner: which slice of each weight it holds, and the
collectives that join the ranks (``torch.distributed``: NCCL on GPUs, gloo on CPU).

Megatron-style, as vLLM shards: Q/K/V and the MLP's up (and gate) projections are split by
output rows (column-parallel), the attention output and the MLP's down projection by input
columns (row-parallel, their partial sums all-reduced), the embedding and the head by
vocabulary rows (a rank looks up only its tokens, the sums all-reduced; the head's logits
all-gathered). A rank holds whole KV heads: with fewer KV heads than ranks, each KV head is
replicated onto ``ranks / kv_heads`` ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TensorParallel:
    """This process's place among ``size`` ranks; ``group`` is the process group (None: the
    default one, which ``torch.distributed.init_process_group`` made)."""

    rank: int = 0
    size: int = 1
    group: object = None

    def part(self, t: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """This rank's 1/size of ``t`` along ``dim``, the last part padded with zeros when
        the length does not divide (a vocabulary)."""
        if self.size == 1:
            return t
        n = t.shape[dim]
        chunk = -(-n // self.size)
        start, stop = self.rank * chunk, min((self.rank + 1) * chunk, n)
        piece = t.narrow(dim, start, max(stop - start, 0))
        if piece.shape[dim] < chunk:
            pad = list(piece.shape)
            pad[dim] = chunk - piece.shape[dim]
            piece = torch.cat([piece, piece.new_zeros(pad)], dim=dim)
        return piece.contiguous()

    def kv_heads(self, t: torch.Tensor, num_kv_heads: int, head_dim: int) -> torch.Tensor:
        """This rank's KV heads of a K or V projection (rows ``num_kv_heads x head_dim``):
        its share, or the one head it replicates when heads are fewer than ranks."""
        if self.size == 1 or num_kv_heads >= self.size:
            return self.part(t)
        head = self.rank * num_kv_heads // self.size
        return t.narrow(0, head * head_dim, head_dim).contiguous()

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.size > 1:
            torch.distributed.all_reduce(t, group=self.group)
        return t

    def all_gather_last(self, t: torch.Tensor) -> torch.Tensor:
        """Every rank's ``t`` side by side along the last dimension (rank order)."""
        if self.size == 1:
            return t
        parts = [torch.empty_like(t) for _ in range(self.size)]
        torch.distributed.all_gather(parts, t.contiguous(), group=self.group)
        return torch.cat(parts, dim=-1)
