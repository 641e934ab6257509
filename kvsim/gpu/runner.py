"""An OPT / LLaMA decoder that runs prefill and paged decode over kvsim block tables.

The block tables are the block manager's own: a list of physical block ids per sequence,
token i in block ``table[i // block_size]`` at slot ``i % block_size``. Every layer has a K
and a V cache ``[num_blocks, block_size, num_kv_heads, head_dim]``; optional pinned host
caches of the same shape take swapped-out blocks.

Decode steps can be captured in CUDA graphs for a set of batch sizes (``capture``); a batch
then runs as the smallest captured size that holds it, padded with empty rows (context 0).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kvsim.gpu import ops
from kvsim.gpu.weights import NamedWeights, RandomWeights
from kvsim.models import ModelSpec

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_OPT_LN_EPS = 1e-5  # nn.LayerNorm's default, which OPT uses
_OPT_POS_OFFSET = 2  # OPT's learned positions start at index 2


@dataclass
class _Layer:
    """One decoder layer with Q/K/V (and LLaMA's gate/up) fused into single matrices."""

    ln1: tuple
    qkv_w: torch.Tensor
    qkv_b: torch.Tensor | None
    o_w: torch.Tensor
    o_b: torch.Tensor | None
    ln2: tuple
    up_w: torch.Tensor  # OPT fc1; LLaMA [gate; up]
    up_b: torch.Tensor | None
    down_w: torch.Tensor  # OPT fc2; LLaMA down_proj
    down_b: torch.Tensor | None


@dataclass
class _Batch:
    """Device tensors of one step: flat tokens, their positions and slots, and per sequence
    the padded block table and context length (decode only)."""

    tokens: torch.Tensor
    positions: torch.Tensor
    slots: torch.Tensor
    tables: torch.Tensor | None = None
    context_lens: torch.Tensor | None = None


class ModelRunner:
    """``weights``: None for seeded random weights, a checkpoint directory (safetensors) or
    a Hugging Face state dict. ``dtype`` defaults to the spec's; float32 runs on CPU only."""

    def __init__(self, spec: ModelSpec, num_blocks: int, block_size: int, dtype: str | None = None,
                 device: str | torch.device = "cuda", weights=None, seed: int = 0,
                 num_host_blocks: int = 0):
        self.spec = spec
        self.dtype = _DTYPES[dtype or spec.dtype]
        self.device = torch.device(device)
        self.block_size = block_size
        self.table_width = -(-spec.max_model_len // block_size)
        self.scale = spec.head_dim ** -0.5
        source = RandomWeights(seed, self.device) if weights is None else NamedWeights(weights, self.device)
        self._load(source)
        cache_shape = (num_blocks, block_size, spec.num_kv_heads, spec.head_dim)
        host_shape = (num_host_blocks, *cache_shape[1:])
        pin = self.device.type == "cuda"
        # Layer l's K cache is caches[2l], its V cache caches[2l + 1].
        self.caches = [torch.empty(cache_shape, dtype=self.dtype, device=self.device)
                       for _ in range(2 * spec.num_layers)]
        self.host_caches = [torch.empty(host_shape, dtype=self.dtype, pin_memory=pin)
                            for _ in self.caches] if num_host_blocks else []
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.graph_sizes: list[int] = []
        self.static: _Batch | None = None
        if spec.family == "llama":
            inv = 1.0 / spec.rope_theta ** (
                torch.arange(0, spec.head_dim, 2, dtype=torch.float32, device=self.device) / spec.head_dim)
            angles = torch.outer(torch.arange(spec.max_model_len, dtype=torch.float32,
                                              device=self.device), inv)
            angles = torch.cat([angles, angles], dim=-1)
            self.rope_cos, self.rope_sin = angles.cos().to(self.dtype), angles.sin().to(self.dtype)

    # -- weights ---------------------------------------------------------------------------

    def _load(self, source) -> None:
        s, dt = self.spec, self.dtype
        h, f = s.hidden_size, s.intermediate_size
        q_dim, kv_dim = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
        get = lambda name, *shape: source.get(name, shape, dt)
        opt = s.family == "opt"
        self.embed = get("embed_tokens.weight", s.vocab_size, h)
        if opt:
            self.pos_embed = get("embed_positions.weight", s.max_model_len + _OPT_POS_OFFSET, h)
        self.layers = []
        for i in range(s.num_layers):
            p = f"layers.{i}."
            attn = lambda n, *shape: get(p + "self_attn." + n, *shape)
            qkv_w = torch.cat([attn("q_proj.weight", q_dim, h), attn("k_proj.weight", kv_dim, h),
                               attn("v_proj.weight", kv_dim, h)])
            if opt:
                norm = lambda n: (get(p + n + ".weight", h), get(p + n + ".bias", h))
                layer = _Layer(
                    ln1=norm("self_attn_layer_norm"), qkv_w=qkv_w,
                    qkv_b=torch.cat([attn("q_proj.bias", q_dim), attn("k_proj.bias", kv_dim),
                                     attn("v_proj.bias", kv_dim)]),
                    o_w=attn("out_proj.weight", h, q_dim), o_b=attn("out_proj.bias", h),
                    ln2=norm("final_layer_norm"),
                    up_w=get(p + "fc1.weight", f, h), up_b=get(p + "fc1.bias", f),
                    down_w=get(p + "fc2.weight", h, f), down_b=get(p + "fc2.bias", h))
            else:
                layer = _Layer(
                    ln1=(get(p + "input_layernorm.weight", h),), qkv_w=qkv_w, qkv_b=None,
                    o_w=attn("o_proj.weight", h, q_dim), o_b=None,
                    ln2=(get(p + "post_attention_layernorm.weight", h),),
                    up_w=torch.cat([get(p + "mlp.gate_proj.weight", f, h),
                                    get(p + "mlp.up_proj.weight", f, h)]), up_b=None,
                    down_w=get(p + "mlp.down_proj.weight", h, f), down_b=None)
            self.layers.append(layer)
        self.final_norm = ((get("final_layer_norm.weight", h), get("final_layer_norm.bias", h))
                           if opt else (get("norm.weight", h),))
        self.lm_head = self.embed if s.tie_word_embeddings else get("lm_head.weight", s.vocab_size, h)

    # -- the forward pass --------------------------------------------------------------------

    def _norm(self, x: torch.Tensor, params: tuple) -> torch.Tensor:
        if self.spec.family == "opt":
            return F.layer_norm(x, (x.shape[-1],), *params, eps=_OPT_LN_EPS)
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.spec.rms_norm_eps)
        return params[0] * x32.to(x.dtype)

    def _rope(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        cos, sin = self.rope_cos[positions][:, None], self.rope_sin[positions][:, None]
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin

    def _hidden(self, batch: _Batch, attend) -> torch.Tensor:
        """Final hidden states of all tokens; ``attend(layer, q, k, v)`` does the attention."""
        s = self.spec
        n, hd = batch.tokens.shape[0], s.head_dim
        q_dim, kv_dim = s.num_heads * hd, s.num_kv_heads * hd
        x = F.embedding(batch.tokens, self.embed)
        if s.family == "opt":
            x = x + F.embedding(batch.positions + _OPT_POS_OFFSET, self.pos_embed)
        for i, L in enumerate(self.layers):
            qkv = F.linear(self._norm(x, L.ln1), L.qkv_w, L.qkv_b)
            q = qkv[:, :q_dim].view(n, s.num_heads, hd)
            k = qkv[:, q_dim:q_dim + kv_dim].view(n, s.num_kv_heads, hd)
            v = qkv[:, q_dim + kv_dim:].view(n, s.num_kv_heads, hd)
            if s.family == "llama":
                q, k = self._rope(q, batch.positions), self._rope(k, batch.positions)
            ops.write_kv(k, v, self.caches[2 * i], self.caches[2 * i + 1], batch.slots)
            a = attend(i, q, k, v).reshape(n, q_dim)
            x = x + F.linear(a, L.o_w, L.o_b)
            h = self._norm(x, L.ln2)
            if s.family == "opt":
                h = F.relu(F.linear(h, L.up_w, L.up_b))
            else:
                gate, up = F.linear(h, L.up_w).chunk(2, dim=-1)
                h = F.silu(gate) * up
            x = x + F.linear(h, L.down_w, L.down_b)
        return x

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(self._norm(hidden, self.final_norm), self.lm_head).float()

    def _slots(self, tables: list[list[int]], positions: list[list[int]]) -> list[int]:
        bs = self.block_size
        return [t[p // bs] * bs + p % bs for t, ps in zip(tables, positions) for p in ps]

    def _int_tensor(self, values, dtype=torch.int64) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype).to(self.device, non_blocking=True)

    # -- public steps --------------------------------------------------------------------------

    def prefill(self, token_ids: list[list[int]], block_tables: list[list[int]],
                num_cached: list[int] | None = None) -> torch.Tensor:
        """Run each sequence's new tokens (after ``num_cached`` tokens already in its blocks);
        returns float32 logits of each sequence's last token, ``[num_seqs, vocab]``."""
        num_cached = num_cached or [0] * len(token_ids)
        positions = [list(range(c, c + len(t))) for c, t in zip(num_cached, token_ids)]
        lengths = [len(t) for t in token_ids]
        batch = _Batch(self._int_tensor([t for ts in token_ids for t in ts]),
                       self._int_tensor([p for ps in positions for p in ps]),
                       self._int_tensor(self._slots(block_tables, positions)))

        def attend(i, q, k, v):
            kc, vc = self.caches[2 * i], self.caches[2 * i + 1]
            parts = zip(q.split(lengths), k.split(lengths), v.split(lengths), block_tables, num_cached)
            return torch.cat([ops.prefill_attention(*p[:3], kc, vc, p[3], p[4], self.scale)
                              for p in parts])

        hidden = self._hidden(batch, attend)
        last = torch.tensor(lengths, device=self.device).cumsum(0) - 1
        return self._logits(hidden[last])

    def _decode_step(self, batch: _Batch, max_context_len: int) -> torch.Tensor:
        def attend(i, q, k, v):
            return ops.decode_attention(q, self.caches[2 * i], self.caches[2 * i + 1], batch.tables,
                                        batch.context_lens, self.scale, max_context_len)
        return self._logits(self._hidden(batch, attend))

    def decode(self, token_ids: list[int], positions: list[int],
               block_tables: list[list[int]]) -> torch.Tensor:
        """One new token per sequence at ``positions`` (= tokens already cached); returns
        float32 logits ``[num_seqs, vocab]``. Uses a captured graph when one fits."""
        n = len(token_ids)
        if max(positions) >= self.spec.max_model_len or max(map(len, block_tables)) > self.table_width:
            raise ValueError(f"decode past max_model_len {self.spec.max_model_len}")
        slots = self._slots(block_tables, [[p] for p in positions])
        tables = [t + [0] * (self.table_width - len(t)) for t in block_tables]
        size = self.graph_sizes[bisect.bisect_left(self.graph_sizes, n)] if (
            self.graph_sizes and n <= self.graph_sizes[-1]) else None
        if size is None:
            batch = _Batch(self._int_tensor(token_ids), self._int_tensor(positions),
                           self._int_tensor(slots), self._int_tensor(tables, torch.int32),
                           self._int_tensor([p + 1 for p in positions], torch.int32))
            return self._decode_step(batch, max(positions) + 1)
        pad = size - n
        st = self.static
        st.tokens[:size].copy_(self._int_tensor(token_ids + [0] * pad))
        st.positions[:size].copy_(self._int_tensor(positions + [0] * pad))
        st.slots[:size].copy_(self._int_tensor(slots + [-1] * pad))
        st.tables[:size].copy_(self._int_tensor(tables + [[0] * self.table_width] * pad, torch.int32))
        st.context_lens[:size].copy_(self._int_tensor([p + 1 for p in positions] + [0] * pad,
                                                      torch.int32))
        graph, logits = self.graphs[size]
        graph.replay()
        return logits[:n].clone()  # the graph's output buffer is reused by the next replay

    def capture(self, batch_sizes: list[int]) -> None:
        """Capture decode steps for these batch sizes in CUDA graphs (largest first, one
        shared memory pool). The attention grid is sized for ``max_model_len``."""
        sizes = sorted(set(batch_sizes), reverse=True)
        m, w = sizes[0], self.table_width
        zeros = lambda *shape, dt=torch.int64: torch.zeros(shape, dtype=dt, device=self.device)
        self.static = _Batch(zeros(m), zeros(m), zeros(m) - 1, zeros(m, w, dt=torch.int32),
                             zeros(m, dt=torch.int32) + 1)
        pool = torch.cuda.graph_pool_handle()
        for size in sizes:
            st = self.static
            view = _Batch(st.tokens[:size], st.positions[:size], st.slots[:size],
                          st.tables[:size], st.context_lens[:size])
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up outside capture (kernel loading etc.)
                self._decode_step(view, self.spec.max_model_len)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                logits = self._decode_step(view, self.spec.max_model_len)
            self.graphs[size] = (graph, logits)
        self.graph_sizes = sorted(sizes)

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Copy-on-write: block src -> dst in every layer's K and V, one launch."""
        ops.copy_blocks(self.caches, self.caches, pairs)

    def swap_out(self, pairs: list[tuple[int, int]]) -> None:
        """Device block -> host block, for (device_id, host_id) pairs."""
        ops.copy_blocks(self.caches, self.host_caches, pairs)

    def swap_in(self, pairs: list[tuple[int, int]]) -> None:
        """Host block -> device block, for (host_id, device_id) pairs."""
        ops.copy_blocks(self.host_caches, self.caches, pairs)
