"""Where the runner's parameters come from: seeded random values, or Hugging Face-named tensors
(a state dict or a local safetensors checkpoint).

Both answer the same question, "the tensor named N of shape S", with names in a canonical
form: the Hugging Face name without its ``model.`` / ``model.decoder.`` prefix
(``layers.0.self_attn.q_proj.weight``, ``embed_tokens.weight``, ``lm_head.weight``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from kvsim.errors import KvsimError


def canonical_name(hf_name: str) -> str:
    for prefix in ("model.decoder.", "model.", "decoder."):
        if hf_name.startswith(prefix):
            return hf_name[len(prefix) :]
    return hf_name


class RandomWeights:
    """Seeded random parameters, drawn on the target device in request order.

    Timing does not depend on values, but zeros could hide wrong indexing and run faster
    than real data, so matrices and biases are N(0, 0.02) and norm weights are ones.
    """

    def __init__(self, seed: int, device: torch.device):
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.device = device

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        if "norm" in name and name.endswith(".weight"):
            return torch.ones(shape, dtype=dtype, device=self.device)
        t = torch.empty(shape, dtype=dtype, device=self.device)
        return t.normal_(0.0, 0.02, generator=self.generator)


class NamedWeights:
    """Parameters looked up by Hugging Face name: from a state dict, or from a local
    checkpoint directory of ``*.safetensors`` files, read lazily tensor by tensor."""

    def __init__(self, source: str | Path | Mapping[str, torch.Tensor], device: torch.device):
        self.device = device
        if isinstance(source, Mapping):
            self.loaders = {canonical_name(n): (lambda t=t: t) for n, t in source.items()}
            return
        from safetensors import safe_open

        files = sorted(Path(source).glob("*.safetensors"))
        if not files:
            raise KvsimError(f"no *.safetensors files in {source}")
        handles = [safe_open(str(f), framework="pt") for f in files]
        self.loaders = {
            canonical_name(n): (lambda h=h, n=n: h.get_tensor(n)) for h in handles for n in h.keys()
        }

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        if name not in self.loaders:
            raise KvsimError(f"weights lack parameter {name!r}")
        t = self.loaders[name]()
        if tuple(t.shape) != tuple(shape):
            raise KvsimError(f"parameter {name!r} has shape {tuple(t.shape)}, expected {tuple(shape)}")
        return t.to(device=self.device, dtype=dtype)
