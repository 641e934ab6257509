"""Model shapes, read from a Hugging Face ``config.json`` (or a built-in copy of one).

Everything kvsim needs from a model follows from its shape: weight bytes (how much GPU
memory is left for the KV cache), KV bytes per token (how many tokens fit in it), and
FLOPs per token (what a step costs). Weights themselves are never needed here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from kvsim.errors import KvsimError

# Built-in models as the relevant fields of their Hugging Face config.json. OPT-175B was
# never published on the Hub; its shape is the one in the OPT paper (Zhang et al. 2022, Table 1).
BUILTIN_CONFIGS: dict[str, dict] = {
    "opt-13b": {
        "model_type": "opt",
        "hidden_size": 5120,
        "num_hidden_layers": 40,
        "num_attention_heads": 40,
        "ffn_dim": 20480,
        "vocab_size": 50272,
        "max_position_embeddings": 2048,
        "word_embed_proj_dim": 5120,
    },
    "opt-66b": {
        "model_type": "opt",
        "hidden_size": 9216,
        "num_hidden_layers": 64,
        "num_attention_heads": 72,
        "ffn_dim": 36864,
        "vocab_size": 50272,
        "max_position_embeddings": 2048,
        "word_embed_proj_dim": 9216,
    },
    "opt-175b": {
        "model_type": "opt",
        "hidden_size": 12288,
        "num_hidden_layers": 96,
        "num_attention_heads": 96,
        "ffn_dim": 49152,
        "vocab_size": 50272,
        "max_position_embeddings": 2048,
        "word_embed_proj_dim": 12288,
    },
    "llama-7b": {
        "model_type": "llama",
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "intermediate_size": 11008,
        "vocab_size": 32000,
        "max_position_embeddings": 2048,
    },
    "llama-13b": {
        "model_type": "llama",
        "hidden_size": 5120,
        "num_hidden_layers": 40,
        "num_attention_heads": 40,
        "intermediate_size": 13824,
        "vocab_size": 32000,
        "max_position_embeddings": 2048,
    },
    "llama-2-7b": {
        "model_type": "llama",
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "intermediate_size": 11008,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
    },
    "llama-2-13b": {
        "model_type": "llama",
        "hidden_size": 5120,
        "num_hidden_layers": 40,
        "num_attention_heads": 40,
        "num_key_value_heads": 40,
        "intermediate_size": 13824,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
    },
    "llama-2-70b": {
        "model_type": "llama",
        "hidden_size": 8192,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "intermediate_size": 28672,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
    },
    "llama-3-70b": {
        "model_type": "llama",
        "hidden_size": 8192,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "intermediate_size": 28672,
        "vocab_size": 128256,
        "max_position_embeddings": 8192,
        "rope_theta": 500000.0,
    },
    "llama-3-8b": {
        "model_type": "llama",
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "vocab_size": 128256,
        "max_position_embeddings": 8192,
        "rope_theta": 500000.0,
    },
}

SUPPORTED_FAMILIES = ("opt", "llama")
DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}


@dataclass(frozen=True)
class ModelSpec:
    """The shape of a decoder-only transformer, enough to size memory and count FLOPs."""

    name: str
    family: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_model_len: int
    dtype: str = "float16"
    tie_word_embeddings: bool = True
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V for one token across all layers."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes

    @property
    def layer_params(self) -> int:
        """Parameters of one decoder layer (matrices, biases and norms)."""
        h, f = self.hidden_size, self.intermediate_size
        q_dim, kv_dim = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        if self.family == "opt":
            attention = h * q_dim + 2 * h * kv_dim + q_dim * h + q_dim + 2 * kv_dim + h
            mlp = 2 * h * f + f + h
            norms = 4 * h  # two LayerNorms, weight and bias
        else:
            attention = h * q_dim + 2 * h * kv_dim + q_dim * h
            mlp = 3 * h * f  # gate, up, down
            norms = 2 * h
        return attention + mlp + norms

    @property
    def matmul_params_per_token(self) -> int:
        """Weights each token multiplies through: all layers plus the LM head."""
        h, f = self.hidden_size, self.intermediate_size
        q_dim, kv_dim = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        per_layer = h * q_dim + 2 * h * kv_dim + q_dim * h + (2 if self.family == "opt" else 3) * h * f
        return self.num_layers * per_layer + self.vocab_size * h

    @property
    def param_count(self) -> int:
        h = self.hidden_size
        embeddings = self.vocab_size * h
        if self.family == "opt":
            embeddings += (self.max_model_len + 2) * h  # learned positions, offset 2
            final_norm = 2 * h
        else:
            final_norm = h
        lm_head = 0 if self.tie_word_embeddings else self.vocab_size * h
        return embeddings + self.num_layers * self.layer_params + final_norm + lm_head

    @property
    def weight_bytes(self) -> int:
        return self.param_count * self.dtype_bytes

    @property
    def linear_flops_per_token(self) -> int:
        """Multiply-adds of the weight matrices, counted as 2 FLOPs each."""
        return 2 * self.matmul_params_per_token

    @property
    def attention_flops_per_pair(self) -> int:
        """FLOPs for one query token attending to one context token (QK^T and PV, all layers)."""
        return 4 * self.num_heads * self.head_dim * self.num_layers

    def shard(self, tensor_parallel: int) -> "ModelSpec":
        """What one of ``tensor_parallel`` ranks holds and computes (Megatron-style, as vLLM
        shards): attention heads, the MLP's width and the vocabulary (embedding and head)
        split evenly, each rank keeping whole KV heads, replicated when there are fewer KV
        heads than ranks; the residual stream, norms and learned positions stay whole."""
        if tensor_parallel == 1:
            return self
        return replace(
            self,
            name=f"{self.name}-tp{tensor_parallel}",
            num_heads=self.num_heads // tensor_parallel,
            num_kv_heads=max(1, self.num_kv_heads // tensor_parallel),
            intermediate_size=-(-self.intermediate_size // tensor_parallel),
            vocab_size=-(-self.vocab_size // tensor_parallel),
        )

    def tensor_parallel_problem(self, tensor_parallel: int) -> str:
        """Why this model cannot be split over ``tensor_parallel`` ranks ('' if it can)."""
        if self.num_heads % tensor_parallel:
            return f"{self.name}'s {self.num_heads} attention heads do not split over {tensor_parallel} GPUs"
        kv = self.num_kv_heads
        if kv % tensor_parallel and tensor_parallel % kv:
            return f"{self.name}'s {kv} KV heads neither split over nor replicate onto {tensor_parallel} GPUs"
        return ""

    def activation_bytes(self, max_batched_tokens: int, max_num_seqs: int) -> int:
        """Peak activation memory of the largest prefill step, the way vLLM's profile run sees it.

        The widest live intermediates of one layer (QKV, attention output and the MLP's
        expanded hidden state) for every batched token, plus fp32 logits for the last token
        of every sequence. Layers run one after another, so only one layer's worth is live.
        """
        q_dim, kv_dim = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        mlp_width = (2 if self.family == "opt" else 3) * self.intermediate_size
        per_token = (q_dim + 2 * kv_dim + q_dim + mlp_width) * self.dtype_bytes
        logits = max_num_seqs * self.vocab_size * 4
        return max_batched_tokens * per_token + logits


def spec_from_hf_config(config: dict, name: str, dtype: str = "float16") -> ModelSpec:
    """Build a spec from the fields of a Hugging Face config.json (OPT and LLaMA families)."""
    model_type = config.get("model_type", "")
    family = "llama" if model_type in ("llama", "mistral") else model_type
    if family not in SUPPORTED_FAMILIES:
        raise KvsimError(
            f"model {name!r}: unsupported model_type {model_type!r} "
            f"(supported: {', '.join(SUPPORTED_FAMILIES)})"
        )
    try:
        hidden = int(config["hidden_size"])
        heads = int(config["num_attention_heads"])
        if family == "opt":
            intermediate = int(config["ffn_dim"])
            if int(config.get("word_embed_proj_dim", hidden)) != hidden:
                raise KvsimError(
                    f"model {name!r}: OPT with word_embed_proj_dim != hidden_size "
                    "(the 350M variant) is not supported"
                )
        else:
            intermediate = int(config["intermediate_size"])
        spec = ModelSpec(
            name=name,
            family=family,
            hidden_size=hidden,
            num_layers=int(config["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            intermediate_size=intermediate,
            vocab_size=int(config["vocab_size"]),
            max_model_len=int(config["max_position_embeddings"]),
            dtype=dtype,
            tie_word_embeddings=bool(config.get("tie_word_embeddings", family == "opt")),
            rope_theta=float(config.get("rope_theta", 10000.0)),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        )
    except KeyError as missing:
        raise KvsimError(f"model {name!r}: config.json lacks field {missing}") from None
    except (TypeError, ValueError) as bad:
        raise KvsimError(f"model {name!r}: malformed config.json ({bad})") from None
    if spec.num_heads % spec.num_kv_heads:
        raise KvsimError(
            f"model {name!r}: {spec.num_heads} heads not divisible by {spec.num_kv_heads} KV heads"
        )
    return spec


def load_model(name_or_path: str, dtype: str = "float16") -> ModelSpec:
    """A built-in model by name, or a Hugging Face config.json (file or its directory)."""
    key = name_or_path.lower()
    if key in BUILTIN_CONFIGS:
        return spec_from_hf_config(BUILTIN_CONFIGS[key], key, dtype)
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise KvsimError(
            f"unknown model {name_or_path!r}: not a built-in "
            f"({', '.join(BUILTIN_CONFIGS)}) and no config.json at that path"
        )
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise KvsimError(f"cannot read model config {path}: {err}") from None
    if not isinstance(config, dict):
        raise KvsimError(f"model config {path} is not a JSON object")
    return spec_from_hf_config(config, path.parent.name or path.stem, dtype)
