"""A CPU stand-in for the GPU whose step times are known in advance.

A real GPU's error against the cost model is unknown, so a test of the errors the executor
and ``simcli validate`` report needs a device whose error is chosen: ``FakeGPU`` takes, for
each operation, exactly what a given cost model charges for it (``ScaledCost`` makes that a
fixed multiple of another model's price), on a clock of its own that the ``fake_gpu``
fixture (conftest.py) makes the executor read in place of ``time.perf_counter``.
"""

from types import SimpleNamespace

import numpy as np

from kvsim.cost.cost_model import CostModel


class ScaledCost(CostModel):
    """Every price of ``cost`` times ``factor``."""

    def __init__(self, cost: CostModel, factor: float) -> None:
        self.cost, self.factor = cost, factor
        self.name, self.kind = f"{cost.name} x{factor:g}", cost.kind

    def prefill_time(self, new_tokens, context_lens):
        return self.factor * self.cost.prefill_time(new_tokens, context_lens)

    def decode_times(self, batch_size, total_context, steps):
        return self.factor * self.cost.decode_times(batch_size, total_context, steps)

    def copy_time(self, num_blocks):
        return self.factor * self.cost.copy_time(num_blocks)

    def swap_time(self, num_blocks):
        return self.factor * self.cost.swap_time(num_blocks)


class FakeGPU:
    """Stands in for ``ModelRunner``: each call advances ``now`` by ``cost``'s price of the work
    it was given and returns zero logits (the executor then samples token 0)."""

    def __init__(self, cost: CostModel, vocab_size: int) -> None:
        self.cost, self.now = cost, 0.0
        self.spec = SimpleNamespace(vocab_size=vocab_size)

    def prefill(self, inputs, block_tables, cached):
        new = np.array([len(tokens) for tokens in inputs])
        self.now += float(self.cost.prefill_time(new, new + np.array(cached)))
        return self._logits(len(inputs))

    def decode(self, tokens, positions, block_tables):
        # The token at position p is the sequence's (p + 1)-th: it attends to p + 1 tokens.
        self.now += float(self.cost.decode_times(len(tokens), sum(positions) + len(tokens), 1)[0])
        return self._logits(len(tokens))

    def copy_blocks(self, pairs):
        self.now += float(self.cost.copy_time(len(pairs)))

    def swap_in(self, pairs):
        self.now += float(self.cost.swap_time(len(pairs)))

    swap_out = swap_in  # one way or the other, a swap costs the same

    def _logits(self, rows: int):
        import torch  # only the executor's tests use this, and they need torch anyway

        return torch.zeros(rows, self.spec.vocab_size)
