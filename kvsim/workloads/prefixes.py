"""Token identity for shared content: synthetic token ids, and service-defined shared prefixes.

kvsim never sees text, yet prefix caching needs to know when two prompts start alike. So
every request reads its token ids from a deterministic *stream*: token ``k`` of stream
``s`` is a fixed hash of ``(s, k)``. Requests that read the same stream positions hold the
same tokens; a chatbot turn re-reads its conversation's stream, and every request with
shared prefix ``p`` starts with the first tokens of prefix stream ``p``. Columns in
``Trace.extra`` say which streams a request reads (see ``token_source``).
"""

from __future__ import annotations

import numpy as np

from kvsim.errors import KvsimError
from kvsim.workloads.trace import Trace

VOCAB = 50272  # OPT's vocabulary; only equality of ids matters
PREFIX_STREAMS = 1 << 62  # stream of shared prefix p: PREFIX_STREAMS + p
OWN_STREAMS = 1 << 61  # a request without a stream column reads OWN_STREAMS + its index
PREFIX_SEED_STREAM = 7  # random stream (of kvsim.workloads.streams' kind) for prefix choice


def synth_tokens(stream: int, start: int, count: int) -> np.ndarray:
    """Token ids at positions ``start .. start + count`` of ``stream`` (splitmix64 of both)."""
    base = (stream * 0x9E3779B97F4A7C15) % (1 << 64)  # wraps like uint64, without numpy's warning
    x = np.uint64(base) + np.arange(start, start + count, dtype=np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return ((x ^ (x >> np.uint64(31))) % np.uint64(VOCAB)).astype(np.int64)


def token_source(trace: Trace, rid: int):
    """``token_ids(k)``: the first k token ids of request ``rid`` (prompt, then output), or
    None if the trace carries no token identity."""
    extra = trace.extra
    if "prefix_id" not in extra and "stream_id" not in extra:
        return None
    prefix_len = int(extra["prefix_len"][rid]) if "prefix_id" in extra else 0
    prefix_stream = PREFIX_STREAMS + int(extra["prefix_id"][rid]) if prefix_len else 0
    stream = int(extra["stream_id"][rid]) if "stream_id" in extra else OWN_STREAMS + rid
    start = int(extra["stream_start"][rid]) if "stream_start" in extra else 0

    def token_ids(count: int) -> np.ndarray:
        shared = min(count, prefix_len)
        return np.concatenate(
            [synth_tokens(prefix_stream, 0, shared), synth_tokens(stream, start, count - shared)]
        )

    return token_ids


def add_shared_prefixes(
    trace: Trace, prefix_len: int, num_prefixes: int = 1, popularity: float = 1.0, seed: int = 0
) -> Trace:
    """Prepend one of ``num_prefixes`` system prompts of ``prefix_len`` tokens to every request.

    Prefix ``i`` is chosen with probability proportional to ``(i + 1) ** -popularity``
    (Zipf; 0 gives uniform), as when a service hosts several few-shot templates of unequal
    use. The prompt grows by ``prefix_len``: the prefix comes on top of the request's own.
    """
    if prefix_len < 0:
        raise KvsimError(f"--prefix-len must be >= 0 (got {prefix_len})")
    if num_prefixes < 1:
        raise KvsimError(f"--num-prefixes must be at least 1 (got {num_prefixes})")
    if popularity < 0:
        raise KvsimError(f"--prefix-popularity must be >= 0 (got {popularity})")
    if prefix_len == 0:
        return trace
    weights = (np.arange(num_prefixes) + 1.0) ** -popularity
    rng = np.random.default_rng([seed, PREFIX_SEED_STREAM])
    prefix_id = rng.choice(num_prefixes, size=len(trace), p=weights / weights.sum())
    extra = {
        **trace.extra,
        "prefix_id": prefix_id.astype(np.int64),
        "prefix_len": np.full(len(trace), prefix_len, dtype=np.int64),
    }
    return Trace(
        f"{trace.name}+prefix{prefix_len}",
        trace.arrival_time,
        trace.prompt_len + prefix_len,
        trace.output_len,
        extra,
    )
