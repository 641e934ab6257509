"""Turning a trace row into the scheduler's Request, with whatever per-request columns it has."""

from __future__ import annotations

from kvsim.policies.request import Request
from kvsim.workloads.prefixes import token_source
from kvsim.workloads.trace import Trace


class RequestFactory:
    """``factory(rid)`` -> Request; a plain trace (no extra columns) costs one constructor call."""

    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        extra = trace.extra
        self._width = extra.get("width")
        self._beam = extra.get("beam")
        self._sample_lens = extra.get("sample_output_lens")
        self._prefix_len = extra.get("prefix_len")
        self._has_tokens = trace.has_token_content

    def __call__(self, rid: int) -> Request:
        trace = self.trace
        request = Request(rid, int(trace.prompt_len[rid]), int(trace.output_len[rid]))
        if self._width is not None:
            request.width = int(self._width[rid])
            request.beam = bool(self._beam[rid])
            if self._sample_lens is not None:
                request.sample_output_lens = tuple(int(v) for v in self._sample_lens[rid])
        if self._has_tokens:
            request.token_ids = token_source(trace, rid)
            if self._prefix_len is not None:
                request.shared_prefix_len = int(self._prefix_len[rid])
        return request
