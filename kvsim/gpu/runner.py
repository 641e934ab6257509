"""An OPT / LLaMA decoder that runs prefill and paged decode over kvsim block tables.

The block tables are the block manager's own: a list of physical block ids per sequence,
token i in block ``table[i // block_size]`` at slot ``i % block_size``. Every layer has a K
and a V cache ``[num_blocks, block_size, num_kv_heads, head_dim]``; optional pinned host
caches of the same shape take swapped-out blocks.

Decode steps can be captured in CUDA graphs for a set of batch sizes (``capture``); a batch
then runs as the smallest captured size that holds it, padded with empty rows (context 0).
Prefills can be captured too, piecewise by token count: the layers' dense work in graphs,
the attention (shaped by the batch's sequences) eager between them.
"""

from __future__ import annotations

import bisect
import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from kvsim.cost.padding import PREFILL_PADDING, padded_tokens
from kvsim.gpu import ops
from kvsim.gpu.parallel import TensorParallel
from kvsim.gpu.weights import NamedWeights, RandomWeights
from kvsim.models import ModelSpec

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_OPT_LN_EPS = 1e-5  # nn.LayerNorm's default, which OPT uses
_OPT_POS_OFFSET = 2  # OPT's learned positions start at index 2
# Decode batch sizes captured in CUDA graphs, as vLLM does: 1, 2, 4, then every multiple of 8.
# Calibration and the real executor capture the same sizes, so a profile's padding is the
# executor's.
GRAPH_BATCH_SIZES = (1, 2, 4, *range(8, 257, 8))
# A prefill's new tokens (the batch's sum) run padded by kvsim.cost.padding's rule. Padded
# prefills of up to 1024 tokens run as piecewise CUDA graphs, attention eager between the
# pieces (its shape is the batch's own): eager, a short prefill's dozen launches per layer
# kept the host busier than the GPU, and host speed differs between machines (measurements in
# benchmarks/KERNELS.md); past ~1024 tokens the GPU outruns the host.
PREFILL_GRAPH_TOKENS = (
    *PREFILL_PADDING["sizes"],
    *range(PREFILL_PADDING["multiple"], 1025, PREFILL_PADDING["multiple"]),
)


def padded_prefill_tokens(tokens: int) -> int:
    """The rows a prefill of ``tokens`` new tokens runs as."""
    return padded_tokens(PREFILL_PADDING, tokens)


@dataclass
class _Layer:
    """One decoder layer with Q/K/V (and LLaMA's gate/up) fused into single matrices."""

    ln1: ops.Norm
    qkv_w: torch.Tensor
    qkv_b: torch.Tensor | None
    o_w: torch.Tensor
    o_b: torch.Tensor | None
    ln2: ops.Norm
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


@dataclass
class _PrefillBuffers:
    """What a prefill's pieces read and write between them, one row per padded token:
    tokens, positions and slots (``ints``, one row each), the residual stream, the fused
    Q/K/V and the attention output."""

    ints: torch.Tensor
    x: torch.Tensor
    qkv: torch.Tensor
    attention: torch.Tensor

    def rows(self, n: int) -> "_PrefillBuffers":
        return _PrefillBuffers(self.ints[:, :n], self.x[:n], self.qkv[:n], self.attention[:n])


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """``arange(starts[i], ends[i])`` for every i, concatenated, without a Python loop."""
    lengths = ends - starts
    first = np.cumsum(lengths) - lengths  # where each range starts in the output
    return np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(first - starts, lengths)


def _offsets(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)])


class ModelRunner:
    """``weights``: None for seeded random weights, a checkpoint directory (safetensors) or
    a Hugging Face state dict. ``dtype`` defaults to the spec's; float32 runs on CPU only.

    ``parallel``: this process's rank of a tensor-parallel runner (``kvsim.gpu.parallel``).
    ``spec`` is then the whole model; the runner holds and computes one rank's shard of it
    (``self.spec`` is the shard's shapes), every rank running the same steps in step.

    ``fused`` off gives the layer operations vLLM's 2023 engine ran (the engine of the
    PagedAttention paper, which eager profiles stand for): cuBLAS at every batch size, the
    residual adds, LayerNorm and ReLU as torch ops; fused Q/K/V and gate/up, and custom
    attention, cache-write, RMSNorm, activation and rotary kernels, as that engine had."""

    def __init__(
        self,
        spec: ModelSpec,
        num_blocks: int,
        block_size: int,
        dtype: str | None = None,
        device: str | torch.device = "cuda",
        weights=None,
        seed: int = 0,
        num_host_blocks: int = 0,
        parallel: TensorParallel = TensorParallel(),
        fused: bool = True,
    ):
        self.full, self.parallel, self.fused = spec, parallel, fused
        spec = self.spec = spec.shard(parallel.size)
        self.dtype = _DTYPES[dtype or spec.dtype]
        self.device = torch.device(device)
        self.block_size = block_size
        self.table_width = -(-spec.max_model_len // block_size)
        self.scale = spec.head_dim**-0.5
        source = RandomWeights(seed, self.device) if weights is None else NamedWeights(weights, self.device)
        self._load(source)
        cache_shape = (num_blocks, block_size, spec.num_kv_heads, spec.head_dim)
        host_shape = (num_host_blocks, *cache_shape[1:])
        pin = self.device.type == "cuda"
        # Layer l's K cache is caches[2l], its V cache caches[2l + 1].
        self.caches = [
            torch.empty(cache_shape, dtype=self.dtype, device=self.device) for _ in range(2 * spec.num_layers)
        ]
        self.host_caches = (
            [torch.empty(host_shape, dtype=self.dtype, pin_memory=pin) for _ in self.caches]
            if num_host_blocks
            else []
        )
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.graph_sizes: list[int] = []
        # The last decode step's forward pass on its uploaded inputs, to run again: its graph's
        # replay, or the eager pass. Calibration times it apart from input preparation and
        # sampling.
        self.last_decode: Callable[[], object] | None = None
        self.static: _Batch | None = None
        self.prefill_graphs: dict[int, list[torch.cuda.CUDAGraph]] = {}
        self._prefill_static: _PrefillBuffers | None = None
        self._static_ints: torch.Tensor | None = None  # [3, rows]: static tokens, positions, slots
        if self.device.type == "cuda":
            self._staging = torch.empty(1 << 16, dtype=torch.int64, pin_memory=True)
            self._uploaded = torch.cuda.Event()
        if spec.family == "llama":
            inv = 1.0 / spec.rope_theta ** (
                torch.arange(0, spec.head_dim, 2, dtype=torch.float32, device=self.device) / spec.head_dim
            )
            angles = torch.outer(
                torch.arange(spec.max_model_len, dtype=torch.float32, device=self.device), inv
            )
            angles = torch.cat([angles, angles], dim=-1)
            self.rope_cos, self.rope_sin = angles.cos().to(self.dtype), angles.sin().to(self.dtype)

    # -- weights ---------------------------------------------------------------------------

    def _load(self, source) -> None:
        """Each parameter as the whole model names and shapes it, sliced to this rank's part
        (all of it on one GPU)."""
        s, dt, tp = self.full, self.dtype, self.parallel
        h, f = s.hidden_size, s.intermediate_size
        q_dim, kv_dim = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
        whole = lambda name, *shape: source.get(name, shape, dt)
        rows = lambda name, *shape: tp.part(whole(name, *shape))  # column-parallel: output rows
        cols = lambda name, *shape: tp.part(whole(name, *shape), dim=1)  # row-parallel: input columns
        kv = lambda name, *shape: tp.kv_heads(whole(name, *shape), s.num_kv_heads, s.head_dim)
        get = whole
        opt = s.family == "opt"
        self.embed = rows("embed_tokens.weight", s.vocab_size, h)
        if opt:
            self.pos_embed = get("embed_positions.weight", s.max_model_len + _OPT_POS_OFFSET, h)
        self.layers = []
        for i in range(s.num_layers):
            p = f"layers.{i}."
            name = lambda n: p + "self_attn." + n
            qkv_w = torch.cat(
                [
                    rows(name("q_proj.weight"), q_dim, h),
                    kv(name("k_proj.weight"), kv_dim, h),
                    kv(name("v_proj.weight"), kv_dim, h),
                ]
            )
            if opt:
                norm = lambda n: ops.Norm(get(p + n + ".weight", h), get(p + n + ".bias", h), _OPT_LN_EPS)
                layer = _Layer(
                    ln1=norm("self_attn_layer_norm"),
                    qkv_w=qkv_w,
                    qkv_b=torch.cat(
                        [
                            rows(name("q_proj.bias"), q_dim),
                            kv(name("k_proj.bias"), kv_dim),
                            kv(name("v_proj.bias"), kv_dim),
                        ]
                    ),
                    o_w=cols(name("out_proj.weight"), h, q_dim),
                    o_b=get(name("out_proj.bias"), h),
                    ln2=norm("final_layer_norm"),
                    up_w=rows(p + "fc1.weight", f, h),
                    up_b=rows(p + "fc1.bias", f),
                    down_w=cols(p + "fc2.weight", h, f),
                    down_b=get(p + "fc2.bias", h),
                )
            else:
                layer = _Layer(
                    ln1=ops.Norm(get(p + "input_layernorm.weight", h), None, s.rms_norm_eps),
                    qkv_w=qkv_w,
                    qkv_b=None,
                    o_w=cols(name("o_proj.weight"), h, q_dim),
                    o_b=None,
                    ln2=ops.Norm(get(p + "post_attention_layernorm.weight", h), None, s.rms_norm_eps),
                    up_w=torch.cat(
                        [rows(p + "mlp.gate_proj.weight", f, h), rows(p + "mlp.up_proj.weight", f, h)]
                    ),
                    up_b=None,
                    down_w=cols(p + "mlp.down_proj.weight", h, f),
                    down_b=None,
                )
            self.layers.append(layer)
        self.final_norm = (
            ops.Norm(get("final_layer_norm.weight", h), get("final_layer_norm.bias", h), _OPT_LN_EPS)
            if opt
            else ops.Norm(get("norm.weight", h), None, s.rms_norm_eps)
        )
        self.lm_head = self.embed if s.tie_word_embeddings else rows("lm_head.weight", s.vocab_size, h)

    # -- the forward pass --------------------------------------------------------------------
    #
    # Fused as production engines fuse a decode step, so that a layer is its four GEMMs and a
    # few small kernels: a sub-layer's output is added to the residual stream by the norm that
    # follows it (``ops.add_norm``; the output and its bias travel there as an ``update``
    # pair), OPT's ReLU rides on its fc1 GEMM, LLaMA's silu(gate) * up is one kernel over the
    # merged gate/up output, and its rotary embedding shares a kernel with the KV-cache write.

    def _embed(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        tp = self.parallel
        if tp.size == 1:
            x = F.embedding(tokens, self.embed)
        else:  # vocabulary-parallel: each rank looks up its own tokens, the others are 0
            local = tokens - tp.rank * self.embed.shape[0]
            mine = (local >= 0) & (local < self.embed.shape[0])
            x = F.embedding(local.clamp(0, self.embed.shape[0] - 1), self.embed) * mine[:, None]
            tp.all_reduce(x)
        if self.spec.family == "opt":
            x = x + F.embedding(positions + _OPT_POS_OFFSET, self.pos_embed)
        return x

    def _qkv(
        self,
        i: int,
        x: torch.Tensor,
        positions: torch.Tensor,
        slots: torch.Tensor,
        out: torch.Tensor | None = None,
        update: tuple = (),
    ) -> torch.Tensor:
        """Layer i's fused Q/K/V of ``x`` (into ``out`` when given), after adding the previous
        layer's ``update`` to x; rotated (LLaMA), with K and V stored at ``slots`` of the
        layer's cache."""
        L = self.layers[i]
        qkv = ops.linear(
            ops.add_norm(x, L.ln1, *update, fused=self.fused), L.qkv_w, L.qkv_b, out=out, fused=self.fused
        )
        q, k, v = self._split(qkv)
        k_cache, v_cache = self.caches[2 * i], self.caches[2 * i + 1]
        if self.spec.family == "llama":
            ops.rotary_and_cache(q, k, v, positions, self.rope_cos, self.rope_sin, k_cache, v_cache, slots)
        else:
            ops.write_kv(k, v, k_cache, v_cache, slots)
        return qkv

    def _split(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s, n = self.spec, qkv.shape[0]
        q_dim, kv_dim = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
        return (
            qkv[:, :q_dim].view(n, s.num_heads, s.head_dim),
            qkv[:, q_dim : q_dim + kv_dim].view(n, s.num_kv_heads, s.head_dim),
            qkv[:, q_dim + kv_dim :].view(n, s.num_kv_heads, s.head_dim),
        )

    def _residual(self, i: int, x: torch.Tensor, attention: torch.Tensor) -> tuple:
        """Layer i after attention: the output projection added to the residual stream ``x``
        (in place) by the MLP's norm, then the MLP. Returns the MLP's output and bias, the
        update that the next layer's norm (or ``_add``) adds to x."""
        L = self.layers[i]
        h = ops.add_norm(x, L.ln2, *self._row_parallel(attention, L.o_w, L.o_b), fused=self.fused)
        if self.spec.family == "opt":
            h = ops.linear(h, L.up_w, L.up_b, relu=True, fused=self.fused)
        else:
            h = ops.silu_mul(ops.linear(h, L.up_w, fused=self.fused))
        return self._row_parallel(h, L.down_w, L.down_b)

    def _row_parallel(self, x: torch.Tensor, weight: torch.Tensor, bias) -> tuple:
        """``x @ weight.T + bias`` with ``weight`` split by input columns, as an update of the
        residual stream (product, bias still to add). On one GPU the bias rides in the GEMM's
        epilogue (on an H200 at batch 64, OPT's output and down projections took ~3 us less per
        layer than with the bias left to the norm); across ranks each rank's partial
        product is summed over the ranks and the (whole) bias added once, by the norm."""
        if self.parallel.size == 1:
            return ops.linear(x, weight, bias, fused=self.fused), None
        return self.parallel.all_reduce(ops.linear(x, weight, fused=self.fused)), bias

    @staticmethod
    def _add(x: torch.Tensor, update: tuple) -> None:
        """The last layer's update added to the residual stream (no norm follows inside the
        layers)."""
        delta, bias = update
        x.add_(delta if bias is None else delta + bias)

    def _hidden(self, batch: _Batch, attend) -> torch.Tensor:
        """Final hidden states of all tokens; ``attend(layer, q, k, v)`` does the attention."""
        n = batch.tokens.shape[0]
        x = self._embed(batch.tokens, batch.positions)
        update = ()
        for i in range(len(self.layers)):
            q, k, v = self._split(self._qkv(i, x, batch.positions, batch.slots, update=update))
            update = self._residual(i, x, attend(i, q, k, v).reshape(n, -1))
        self._add(x, update)
        return x

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = ops.linear(
            ops.add_norm(hidden, self.final_norm, fused=self.fused), self.lm_head, fused=self.fused
        ).float()
        return self.parallel.all_gather_last(logits)[:, : self.full.vocab_size]

    def _table_array(self, block_tables: list[list[int]], rows: int) -> np.ndarray:
        """The block tables as ``[rows, table_width]`` int32, padded with block 0 (never read:
        a sequence attends only to its own context). Built with numpy, not per element: at
        256 sequences the Python way took milliseconds per step."""
        lengths = np.fromiter(map(len, block_tables), np.int64, len(block_tables))
        if len(lengths) and lengths.max() > self.table_width:
            raise ValueError(f"a block table is longer than max_model_len {self.spec.max_model_len} needs")
        array = np.zeros((rows, self.table_width), np.int32)
        filled = np.arange(self.table_width) < lengths[:, None]
        array[: len(block_tables)][filled] = np.fromiter(
            itertools.chain.from_iterable(block_tables), np.int32, int(lengths.sum())
        )
        return array

    def _slots(self, tables: np.ndarray, rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Flat cache slots of ``positions``, each in the sequence of table row ``rows``."""
        bs = self.block_size
        return tables[rows, positions // bs].astype(np.int64) * bs + positions % bs

    def _upload(self, *arrays: np.ndarray) -> list[torch.Tensor]:
        """Integer host arrays to the device as int64, in one copy through a pinned buffer.
        A copy from pageable memory waits for the GPU and took ~0.4 ms each on the H100
        machine; a step needs up to six."""
        sizes = [a.size for a in arrays]
        total = sum(sizes)
        if self.device.type != "cuda":
            return [torch.from_numpy(a.astype(np.int64)) for a in arrays]
        self._uploaded.synchronize()  # the previous upload has left the buffer
        if self._staging.numel() < total:
            self._staging = torch.empty(2 * total, dtype=torch.int64, pin_memory=True)
        host = self._staging.numpy()
        ends = np.cumsum(sizes)
        for a, end in zip(arrays, ends):
            host[end - a.size : end] = a.ravel()
        device = self._staging[:total].to(self.device, non_blocking=True)
        self._uploaded.record()
        return [device[end - a.size : end].view(a.shape) for a, end in zip(arrays, ends)]

    # -- public steps --------------------------------------------------------------------------

    def prefill(
        self, token_ids: list[list[int]], block_tables: list[list[int]], num_cached: list[int] | None = None
    ) -> torch.Tensor:
        """Run each sequence's new tokens (after ``num_cached`` tokens already in its blocks);
        returns float32 logits of each sequence's last token, ``[num_seqs, vocab]``: a mixed
        step without decodes."""
        return self.mixed(token_ids, block_tables, num_cached or [0] * len(token_ids), [], [], [])

    def mixed(
        self,
        token_ids: list[list[int]],
        block_tables: list[list[int]],
        num_cached: list[int],
        decode_ids: list[int],
        decode_positions: list[int],
        decode_tables: list[list[int]],
    ) -> torch.Tensor:
        """Prompt chunks and decodes in one forward pass (the v1 scheduler's mixed step), as
        production engines run it: every row through the dense layers at once (the prefill's
        pieces, graphed at the padded size where captured), the chunks' attention by the
        prefill kernel over their cached context, the decodes' by the paged decode kernel.
        Returns float32 logits of each chunk's last token, then of each decode."""
        num_chunks, num_decodes = len(token_ids), len(decode_ids)
        cached = np.asarray(num_cached, dtype=np.int64)
        new = np.fromiter(map(len, token_ids), np.int64, num_chunks)
        context = cached + new
        chunk_total = int(new.sum())
        total = chunk_total + num_decodes
        rows = np.arange(num_chunks)
        tables = self._table_array(block_tables, num_chunks)
        positions = _ranges(cached, context)
        # Padding rows: token 0 at position 0, slot -1 (no K/V written).
        flat = np.zeros((3, padded_prefill_tokens(total)), np.int64)  # tokens, positions, slots
        flat[2] = -1
        flat[0, :chunk_total] = np.fromiter(itertools.chain.from_iterable(token_ids), np.int64, chunk_total)
        flat[1, :chunk_total] = positions
        flat[2, :chunk_total] = self._slots(tables, np.repeat(rows, new), positions)
        host = [flat, _offsets(new)]
        if cached.any():
            whole = _ranges(np.zeros_like(context), context)
            host += [_offsets(context), self._slots(tables, np.repeat(rows, context), whole)]
        if num_decodes:
            decode_table_array = self._table_array(decode_tables, num_decodes)
            decode_pos = np.asarray(decode_positions, dtype=np.int64)
            flat[0, chunk_total:total] = decode_ids
            flat[1, chunk_total:total] = decode_pos
            flat[2, chunk_total:total] = self._slots(decode_table_array, np.arange(num_decodes), decode_pos)
            decode_lens = (decode_pos + 1).astype(np.int32)
            host += [decode_table_array, decode_lens]
        device = self._upload(*host)
        layout = ops.PrefillLayout(new.tolist(), cached.tolist(), device[1].int())
        if cached.any():
            layout.context_offsets, layout.context_slots = device[2].int(), device[3]
        if num_decodes:
            decode_tables_d, decode_lens_d = device[-2].int(), device[-1].int()
            longest = int(decode_lens.max())

        def attend(i, q, k, v):
            k_cache, v_cache = self.caches[2 * i], self.caches[2 * i + 1]
            chunks = ops.prefill_attention(
                q[:chunk_total], k[:chunk_total], v[:chunk_total], k_cache, v_cache, layout, self.scale
            )
            if not num_decodes:
                return chunks
            decodes = ops.decode_attention(
                q[chunk_total:], k_cache, v_cache, decode_tables_d, decode_lens_d, self.scale, longest
            )
            return torch.cat([chunks.reshape(chunk_total, -1), decodes.reshape(num_decodes, -1)])

        hidden = self._prefill_pieces(total, device[0], attend)
        last = layout.new_offsets[1:].long() - 1
        if num_decodes:
            last = torch.cat([last, torch.arange(chunk_total, total, device=last.device)])
        return self._logits(hidden[last])

    def _prefill_pieces(self, total: int, flat: torch.Tensor, attend) -> torch.Tensor:
        """The prefill's rows through every layer, piece by piece with the attention of the
        first ``total`` (real) rows between the pieces: piece 0 embeds and projects layer 0's
        Q/K/V, piece i + 1 finishes layer i and projects layer i + 1's. The pieces are the
        captured graphs of this size if there are any, else run eagerly."""
        size = flat.shape[1]
        graphs = self.prefill_graphs.get(size)
        if graphs:
            st = self._prefill_static
            st.ints[:, :size].copy_(flat)
            buffers = st.rows(size)
            pieces = [graph.replay for graph in graphs]
        else:
            buffers = self._prefill_buffers(size, flat)
            pieces = self._pieces(buffers)
        pieces[0]()
        q, k, v = (t[:total] for t in self._split(buffers.qkv))
        for i, piece in enumerate(pieces[1:]):
            buffers.attention[:total].copy_(attend(i, q, k, v).reshape(total, -1))
            piece()
        return buffers.x

    def _prefill_buffers(self, rows: int, ints: torch.Tensor) -> _PrefillBuffers:
        s = self.spec
        q_dim, kv_dim = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
        hidden = lambda width: torch.zeros(rows, width, dtype=self.dtype, device=self.device)
        return _PrefillBuffers(ints, hidden(s.hidden_size), hidden(q_dim + 2 * kv_dim), hidden(q_dim))

    def _pieces(self, buffers: _PrefillBuffers) -> list:
        """The prefill's pieces over ``buffers`` (see ``_prefill_pieces``), as callables."""
        tokens, positions, slots = buffers.ints
        x, qkv, attention = buffers.x, buffers.qkv, buffers.attention
        last = len(self.layers) - 1

        def embed():
            x.copy_(self._embed(tokens, positions))
            self._qkv(0, x, positions, slots, out=qkv)

        def finish(i):
            update = self._residual(i, x, attention)
            if i < last:
                self._qkv(i + 1, x, positions, slots, out=qkv, update=update)
            else:
                self._add(x, update)

        return [embed, *(functools.partial(finish, i) for i in range(last + 1))]

    def _decode_step(self, batch: _Batch, max_context_len: int) -> torch.Tensor:
        def attend(i, q, k, v):
            return ops.decode_attention(
                q,
                self.caches[2 * i],
                self.caches[2 * i + 1],
                batch.tables,
                batch.context_lens,
                self.scale,
                max_context_len,
            )

        return self._logits(self._hidden(batch, attend))

    def decode(
        self, token_ids: list[int], positions: list[int], block_tables: list[list[int]]
    ) -> torch.Tensor:
        """One new token per sequence at ``positions`` (= tokens already cached); returns
        float32 logits ``[num_seqs, vocab]``. Uses a captured graph when one fits."""
        n = len(token_ids)
        if max(positions) >= self.spec.max_model_len:
            raise ValueError(f"decode past max_model_len {self.spec.max_model_len}")
        size = (
            self.graph_sizes[bisect.bisect_left(self.graph_sizes, n)]
            if (self.graph_sizes and n <= self.graph_sizes[-1])
            else n
        )
        # Rows past n pad the captured batch: context 0 (attention writes zeros), slot -1
        # (no K/V written).
        tables = self._table_array(block_tables, size)
        flat = np.zeros((3, size), np.int64)  # tokens, positions, slots
        flat[0, :n], flat[1, :n] = token_ids, positions
        flat[2] = -1
        flat[2, :n] = self._slots(tables, np.arange(n), flat[1, :n])
        context_lens = np.zeros(size, np.int32)
        context_lens[:n] = flat[1, :n] + 1
        flat, tables_d, lens_d = self._upload(flat, tables, context_lens)
        if size not in self.graphs:
            batch = _Batch(flat[0], flat[1], flat[2], tables_d.int(), lens_d.int())
            self.last_decode = functools.partial(self._decode_step, batch, int(context_lens.max()))
            return self.last_decode()
        st = self.static
        self._static_ints[:, :size].copy_(flat)
        st.tables[:size].copy_(tables_d)
        st.context_lens[:size].copy_(lens_d)
        graph, logits = self.graphs[size]
        self.last_decode = graph.replay
        graph.replay()
        return logits[:n].clone()  # the graph's output buffer is reused by the next replay

    def _graph(self, step, pool) -> tuple[torch.cuda.CUDAGraph, object]:
        """``step`` captured in a CUDA graph (after a warm-up outside the capture, which
        loads kernels and picks GEMM algorithms), and what it returned."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            step()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            output = step()
        return graph, output

    def capture(self, batch_sizes: list[int], prefill_tokens: list[int] = ()) -> None:
        """Capture decode steps for these batch sizes, and prefills of these token counts, in
        CUDA graphs (largest first, one shared memory pool: no graph's memory outlives its
        replay but through the static buffers). The attention grid is sized for
        ``max_model_len``. A tensor-parallel rank runs eagerly: its collectives are not
        captured."""
        if self.parallel.size > 1:
            return
        pool = torch.cuda.graph_pool_handle()
        zeros = lambda *shape, dt=torch.int64: torch.zeros(shape, dtype=dt, device=self.device)
        sizes = sorted(set(batch_sizes), reverse=True)
        if sizes:
            m, w = sizes[0], self.table_width
            ints = self._static_ints = zeros(3, m)  # tokens, positions, slots: one copy fills all three
            ints[2] = -1
            self.static = _Batch(
                ints[0], ints[1], ints[2], zeros(m, w, dt=torch.int32), zeros(m, dt=torch.int32) + 1
            )
        for size in sizes:
            st = self.static
            view = _Batch(
                st.tokens[:size],
                st.positions[:size],
                st.slots[:size],
                st.tables[:size],
                st.context_lens[:size],
            )
            self.graphs[size] = self._graph(lambda: self._decode_step(view, self.spec.max_model_len), pool)
        self.graph_sizes = sorted(sizes)
        if prefill_tokens:
            if any(padded_prefill_tokens(t) != t for t in prefill_tokens):
                raise ValueError("prefill graphs are for padded token counts only")
            self._capture_prefill(sorted(set(prefill_tokens), reverse=True), pool)

    def _capture_prefill(self, sizes: list[int], pool) -> None:
        ints = torch.zeros(3, sizes[0], dtype=torch.int64, device=self.device)
        ints[2] = -1
        st = self._prefill_static = self._prefill_buffers(sizes[0], ints)
        for size in sizes:
            self.prefill_graphs[size] = [self._graph(piece, pool)[0] for piece in self._pieces(st.rows(size))]

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Copy-on-write: block src -> dst in every layer's K and V, one launch."""
        ops.copy_blocks(self.caches, self.caches, pairs)

    def swap_out(self, pairs: list[tuple[int, int]]) -> None:
        """Device block -> host block, for (device_id, host_id) pairs."""
        ops.copy_blocks(self.caches, self.host_caches, pairs)

    def swap_in(self, pairs: list[tuple[int, int]]) -> None:
        """Host block -> device block, for (host_id, device_id) pairs."""
        ops.copy_blocks(self.host_caches, self.caches, pairs)
