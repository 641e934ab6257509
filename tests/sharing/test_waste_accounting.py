"""The KV waste breakdown with shared blocks: every physical slot is counted once.

``PagedKVManager.usage`` works from running totals; here it is checked, at every engine
step of runs that fork, share prefixes and cache blocks, against a brute-force count over
the block tables themselves.
"""

from __future__ import annotations

import numpy as np
import pytest

from kvsim.config import SimConfig
from kvsim.engine.metrics import KV_SLOT_COLUMNS, WASTE_KEYS
from kvsim.experiments.run import run
from kvsim.policies.kv_manager import CacheUsage
from kvsim.policies.paged import PagedKVManager


def physical_usage(kv: PagedKVManager, seqs: np.ndarray, num_tokens: np.ndarray) -> CacheUsage:
    """Each held block once, its written slots those of the sharer that wrote furthest into it;
    a held block in no table must be a pinned prefix block (full: its prefix was computed)."""
    size, allocator = kv.block_size, kv.allocator
    written: dict[int, int] = {}
    for seq, tokens in zip(seqs.tolist(), num_tokens.tolist()):
        for index, block in enumerate(kv.block_tables[seq]):
            slots = min(max(tokens - index * size, 0), size)
            written[block] = max(written.get(block, 0), slots)
    held = [b for b in range(kv.num_blocks) if allocator.ref_count[b] > 0]
    for block in set(held) - set(written):
        assert allocator.lookup(allocator._name_of[block]) == block  # a named, pinned block
        written[block] = size
    assert set(written) == set(held)
    stored = sum(written.values())
    return CacheUsage(stored, 0, len(held) * size - stored, allocator.num_free * size)


SHARING_RUNS = {
    "beam-width 4": dict(beam_width=4, num_requests=30, rate=4.0),
    "n 4": dict(n=4, num_requests=40, rate=8.0),
    "n 4, independent lengths, swap": dict(
        n=4, independent_sample_lengths=True, num_requests=40, rate=20.0, preemption="swap"
    ),
    "prefix-len": dict(prefix_len=200, num_prefixes=3, num_requests=60, rate=8.0),
    "prefix-caching": dict(trace="chatbot", prefix_caching=True, num_requests=150, rate=8.0),
}


@pytest.mark.parametrize("options", SHARING_RUNS.values(), ids=SHARING_RUNS)
def test_breakdown_counts_each_physical_slot_once(monkeypatch, options):
    fast = PagedKVManager.usage
    checked = []

    def usage(kv, seqs, num_tokens):
        result = fast(kv, seqs, num_tokens)
        assert result == physical_usage(kv, seqs, num_tokens)
        checked.append(kv.cow.active)
        return result

    monkeypatch.setattr(PagedKVManager, "usage", usage)
    result = run(SimConfig(**options))
    assert checked and result.summary["completed"] > 0
    if "beam_width" in options or "n" in options:
        assert any(checked)  # the shared-tail path was exercised

    num_slots = result.capacity.num_slots
    slots = result.recorder.steps_frame()[list(KV_SLOT_COLUMNS)]
    assert (slots >= 0).all().all()
    assert (slots["kv_token_states"] <= num_slots).all()
    assert np.allclose(slots.sum(axis=1), num_slots)
    shares = [result.summary[key] for key in WASTE_KEYS]
    assert sum(shares) == pytest.approx(1.0) and all(0 <= s <= 1 for s in shares)
    assert result.summary["waste_reservation"] == 0
