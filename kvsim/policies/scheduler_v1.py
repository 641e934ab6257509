"""vLLM's v1 scheduler: a token budget per step, chunked prefill, prefill and decode mixed.

Every step has a budget of tokens (``max_num_batched_tokens``). Running requests are served
first, in priority (arrival) order: each takes one decode token, or the next chunk of a
prompt it has not finished computing. Then waiting requests are admitted first come, first
served, while the budget, the sequence cap and free KV blocks last; a prompt longer than the
budget left is computed in chunks over several steps (at most ``max_num_partial_prefills``
requests mid-prompt at once, each chunk at most ``long_prefill_token_threshold`` tokens when
that is set). A request samples its first token in the step that computes the last of its
prompt. When a running request needs a block and none is free, the latest running request
is preempted and recomputed (v1 does not swap); nothing is admitted in a step that preempted.

With prefix caching (on by default in v1) a waiting request starts from the longest run of
its prompt's full blocks found cached, and a block is named (found by later prompts) once
its tokens are computed.

The state of a request is two counts: tokens known (prompt and generated) and tokens whose
KV is computed; a step computes ``known - computed`` of them, at most its share of the
budget. So a decode is a chunk of one token, and a step is a list of (sequence, new tokens,
context) entries of any mix, which the cost model prices by its composition.

Scope: one sequence per request (vLLM v1 runs parallel samples as separate requests, and
beam search outside the scheduler), block tables (policy paged).
"""

from __future__ import annotations

import numpy as np

from kvsim.errors import KvsimError
from kvsim.policies.kv_manager import CacheUsage
from kvsim.policies.request import Request, Status
from kvsim.policies.scheduler import DECODE, MIXED, PREFILL, Scheduler, StepPlan


class V1Scheduler(Scheduler):
    def __init__(
        self,
        kv,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        prefix_caching: bool = True,
        long_prefill_token_threshold: int = 0,
        max_num_partial_prefills: int = 1,
    ) -> None:
        super().__init__(kv, max_num_seqs, max_num_batched_tokens, prefix_caching=prefix_caching)
        if self.sharing is None:
            raise KvsimError("--scheduler v1 needs a block-table policy (paged)")
        self.long_prefill_token_threshold = long_prefill_token_threshold
        self.max_num_partial_prefills = max_num_partial_prefills
        # Per sequence: tokens whose KV is computed, and where its current prefill ends (the
        # prompt, plus what a recompute regenerates): below it, a step computes a chunk.
        self.computed = np.zeros(1024, dtype=np.int64)
        self.prefill_end = np.zeros(1024, dtype=np.int64)

    # -- intake -------------------------------------------------------------------------
    chunks_prompts = True  # the budget bounds a step's chunk, not a prompt

    def rejection_reason(self, request: Request) -> str:
        if request.width > 1:
            return (
                "--scheduler v1 runs one sequence per request (use --scheduler v0 for --n and --beam-width)"
            )
        return super().rejection_reason(request)

    def add_request(self, request: Request) -> None:
        super().add_request(request)
        if len(self.computed) < self.seq_table.count:
            self.computed = np.concatenate([self.computed, np.zeros_like(self.computed)])
            self.prefill_end = np.concatenate([self.prefill_end, np.zeros_like(self.prefill_end)])

    # -- one step -------------------------------------------------------------------------
    def schedule(self) -> StepPlan | None:
        """Serve the running requests, then admit waiting ones, within the step's budget."""
        budget = self.max_num_batched_tokens
        threshold = self.long_prefill_token_threshold or budget
        preempted: list[Request] = []
        served, new, context, decoding = self._serve_at_once(budget, threshold)
        if served is None:  # someone lacks a block: request by request, preempting
            served, new, context, preempted = self._serve_running(budget, threshold)
            decoding = False
            self._running_seqs = None  # the batch lost its victims
        budget -= int(new.sum())
        known = self.seq_table.num_tokens
        # Prompts left part-way by this step (none when every served request decodes).
        partial = 0 if decoding or not served else int((context < known[self._seqs_of(served)]).sum())
        started: list[Request] = []
        chunks: list[tuple[int, int]] = []
        while self.waiting and budget > 0 and not preempted and len(self.running) < self.max_num_seqs:
            request = self.waiting[0]
            admitted = self._admit_chunk(
                request, min(threshold, budget), partial < self.max_num_partial_prefills
            )
            if admitted is None:
                break
            self.waiting.popleft()
            request.status = Status.RUNNING
            self.running.append(request)
            started.append(request)
            chunks.append(admitted)
            partial += admitted[1] < int(known[request.seqs[0]])
            budget -= admitted[0]
        if preempted or started:
            self._running_seqs = None
        if not served and not started:
            return None
        if decoding and not started:  # a pure decode step of the whole batch
            return StepPlan(
                DECODE,
                served,
                self._batch_seqs(),
                new,
                context,
                prompts_started=[],
                prompts_done=[],
                num_chunks=0,
            )
        if started:
            added_new, added_context = (np.array(column, dtype=np.int64) for column in zip(*chunks))
            new, context = np.concatenate([new, added_new]), np.concatenate([context, added_context])
        return self._plan(served + started, new, context, started, preempted)

    def _serve_at_once(self, budget: int, threshold: int):
        """The running requests served in one pass over the batch, as ``_serve_running``
        would serve them when none of them lacks a block (the usual step): each its want
        (the rest of its prompt up to the threshold, or one decode token) in priority order
        while the budget lasts, the last one served perhaps cut short. Returns (requests,
        new, context, whether all of the batch decodes), or Nones if the room is not there."""
        seqs = self._batch_seqs()
        done, known = self.computed[seqs], self.seq_table.num_tokens[seqs]
        if len(seqs) <= budget and (done >= self.prefill_end[seqs]).all():
            # Every prompt computed and a token of budget each (a decode run's steps): each
            # decodes its one known, uncomputed token, with no budget arithmetic to do.
            if not self.kv.try_append(seqs, known):
                return None, None, None, False
            return list(self.running), known - done, known, True
        want = np.minimum(known - done, threshold)
        before = np.cumsum(want) - want  # budget taken by the requests ahead
        served = int(np.searchsorted(before, budget))  # those that find some budget left
        new = np.minimum(want[:served], budget - before[:served])
        context = done[:served] + new
        if served and not self.kv.try_append(seqs[:served], context):
            return None, None, None, False
        decoding = served == len(seqs) and bool((done >= self.prefill_end[seqs]).all())
        return self.running[:served], new, context, decoding

    def _serve_running(self, budget: int, threshold: int):
        """Running requests in priority order, each its next decode token or prompt chunk,
        while the budget lasts; one that lacks a block preempts the latest running request
        (itself, if it is the latest). Returns (requests, new, context, preempted)."""
        known, computed = self.seq_table.num_tokens, self.computed
        served: list[Request] = []
        new: list[int] = []
        context: list[int] = []
        preempted: list[Request] = []
        position = 0
        while position < len(self.running) and budget > 0:
            request = self.running[position]
            seq = request.seqs[0]
            done, total = int(computed[seq]), int(known[seq])
            tokens = min(total - done, threshold, budget)
            while not self.kv.can_append(seq, done + tokens):
                victim = self.running.pop()
                self._preempt(victim)
                preempted.append(victim)
                if victim is request:
                    break
            else:
                self.kv.append(np.array([seq]), np.array([done + tokens]), 1)
                served.append(request)
                new.append(tokens)
                context.append(done + tokens)
                budget -= tokens
                position += 1
        return served, np.array(new, dtype=np.int64), np.array(context, dtype=np.int64), preempted

    def _admit_chunk(self, request: Request, most: int, may_stay_partial: bool) -> tuple[int, int] | None:
        """Allocate the first chunk of the request's prompt (after what the prefix cache
        holds); return (new tokens, context), or None, holding nothing, if it cannot start."""
        kv, seq = self.sharing, request.seqs[0]
        total = int(self.seq_table.num_tokens[seq])  # prompt, and what a recompute regenerates
        names = self._prompt_names(request)
        hits = kv.count_cached(names, total) if names else 0
        cached = hits * kv.block_size
        new = min(total - cached, most)
        if cached + new < total and not may_stay_partial:
            return None
        if names is None:
            if not kv.can_admit(new, request.max_tokens):
                return None
            kv.admit(seq, new, request.max_tokens)
        elif kv.admit_cached(seq, cached + new, names, request.shared_prefix_len // kv.block_size) is None:
            return None
        else:
            self.counters.prefix_lookup_blocks += min(len(names), (total - 1) // kv.block_size)
            self.counters.prefix_hit_blocks += hits
            self.counters.prefill_tokens_saved += cached
        self.computed[seq] = cached
        self.prefill_end[seq] = total
        if request.num_preemptions:
            request.recomputed_tokens += total - request.prompt_len
        return new, cached + new

    def _seqs_of(self, requests: list[Request]) -> np.ndarray:
        """The sequence of each of ``requests`` (one each under v1), in their order: the
        batch's cached array when they are the whole running batch, as they usually are."""
        if len(requests) == len(self.running):
            return self._batch_seqs()
        return np.array([request.seqs[0] for request in requests], dtype=np.int64)

    def _plan(self, requests, new, context, started, preempted) -> StepPlan:
        seqs = self._seqs_of(requests)
        samples = context == self.seq_table.num_tokens[seqs]  # every known token computed: one more follows
        chunks = context - new < self.prefill_end[seqs]  # prompt tokens in it
        chunk_rows = chunks.nonzero()[0].tolist()  # a few entries; the rest decode
        for row in chunk_rows:
            request = requests[row]
            if request.block_names:  # its computed full blocks can now be found
                names = request.block_names[: int(context[row]) // self.kv.block_size]
                self.sharing.name_blocks(request.seqs[0], names)
        kind = DECODE if not chunk_rows else PREFILL if len(chunk_rows) == len(requests) else MIXED
        return StepPlan(
            kind,
            requests,
            seqs,
            new_tokens=new,
            context_lens=context,
            preempted=preempted,
            samples=None if samples.all() else samples,
            prompts_started=started,
            prompts_done=[requests[row] for row in chunk_rows if samples[row]],
            num_chunks=len(chunk_rows),
        )

    def _preempt(self, request: Request) -> None:
        """Recompute: drop the KV and re-queue at the head; every known token is prompt now."""
        request.num_preemptions += 1
        self.counters.preempted_recompute += 1
        seq = request.seqs[0]
        self.kv.free(seq)
        self.computed[seq] = 0
        request.status = Status.WAITING
        self.waiting.appendleft(request)

    # -- the cache as the step runs -------------------------------------------------------
    def kv_usage(self, plan: StepPlan, written_only: bool = False) -> CacheUsage:
        """Every running sequence holds its computed tokens; one in the step is writing its
        new ones too (``written_only`` leaves them out, as after ``advance``)."""
        seqs = self._batch_seqs()
        if not written_only and len(plan.seqs) == len(seqs) and plan.kind is DECODE:
            return self.kv.usage(seqs, plan.context_lens)
        if written_only:
            return self.kv.usage(seqs, self.computed[seqs])
        computed = self.computed
        computed[plan.seqs] += plan.new_tokens
        try:
            return self.kv.usage(seqs, computed[seqs])
        finally:
            computed[plan.seqs] -= plan.new_tokens

    # -- fast-forward and commit --------------------------------------------------------------
    def advance(self, plan: StepPlan, steps: int) -> None:
        """Each entry's new tokens are computed; an entry that computed every known token
        samples the next. Runs of several steps are pure decodes: every entry samples."""
        table = self.seq_table
        if steps > 1:
            self.kv.append(plan.seqs, plan.context_lens + 1, steps - 1)
            self.computed[plan.seqs] += steps
            sampled = plan.seqs
        else:
            self.computed[plan.seqs] += plan.new_tokens
            sampled = plan.seqs if plan.samples is None else plan.seqs[plan.samples]
        table.num_tokens[sampled] += steps
        table.remaining[sampled] -= steps
