"""Iteration-level (continuous batching) scheduler with vLLM's original semantics.

Each step is either a prefill of newly admitted requests or one decode step of every
running request, never both. Admission is first-come-first-served: the head of the queue
waits until its prompt fits, and nobody overtakes it. When a decode step needs a block
and none is free, the most recently admitted running request is preempted all-or-nothing
and later recomputed.

The scheduler knows nothing of time or GPUs: the simulator drives it with a cost model,
and a real executor can drive the very same object with real kernels.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from kvsim.policies.kv_manager import KVCacheManager
from kvsim.policies.request import Request, Status

PREFILL = "prefill"
DECODE = "decode"


@dataclass
class StepPlan:
    """One engine step: what runs, and what the cost model needs to price it."""

    kind: str
    requests: list[Request]
    seqs: np.ndarray  # sequence ids in the batch
    new_tokens: np.ndarray  # tokens computed per sequence this step (1 for decode)
    context_lens: np.ndarray  # tokens attended per sequence (new + cached)
    preempted: list[Request] = field(default_factory=list)
    block_copies: int = 0
    swap_in_blocks: int = 0
    swap_out_blocks: int = 0


class SequenceTable:
    """Per-sequence counters as growable arrays, so a batch is updated in one numpy call."""

    def __init__(self, capacity: int = 1024) -> None:
        self.num_tokens = np.zeros(capacity, dtype=np.int64)  # prompt + generated so far
        self.remaining = np.zeros(capacity, dtype=np.int64)  # tokens still to generate
        self.count = 0

    def add(self, num_tokens: int, remaining: int) -> int:
        if self.count == len(self.num_tokens):
            self.num_tokens = np.concatenate([self.num_tokens, np.zeros_like(self.num_tokens)])
            self.remaining = np.concatenate([self.remaining, np.zeros_like(self.remaining)])
        seq = self.count
        self.num_tokens[seq] = num_tokens
        self.remaining[seq] = remaining
        self.count += 1
        return seq


class Scheduler:
    """FCFS continuous batching over any KV-cache policy, with preemption by recompute."""

    def __init__(self, kv: KVCacheManager, max_num_seqs: int, max_num_batched_tokens: int,
                 preemption: bool = True) -> None:
        self.kv = kv
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        # Policies that reserve a request's whole life at admission never run out mid-flight.
        self.preemption = preemption
        self.seq_table = SequenceTable()
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []  # in priority (arrival) order
        self._running_seqs: np.ndarray | None = None  # cache; rebuilt when `running` changes
        self.owner: dict[int, Request] = {}  # sequence id -> its request, while it lives

    # -- intake -------------------------------------------------------------------------
    def rejection_reason(self, request: Request) -> str:
        """Why this request can never run here ('' if it can)."""
        if request.prompt_len > self.max_num_batched_tokens:
            return (f"prompt of {request.prompt_len} tokens exceeds max-num-batched-tokens "
                    f"{self.max_num_batched_tokens}")
        if not self.kv.fits_alone(request.max_tokens):
            return (f"needs {request.max_tokens} token slots; the whole KV cache has "
                    f"{self.kv.num_slots}")
        return ""

    def add_request(self, request: Request) -> None:
        request.seqs = [self.seq_table.add(request.prompt_len, request.output_len)]
        for seq in request.seqs:
            self.owner[seq] = request
        request.status = Status.WAITING
        self.waiting.append(request)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    @property
    def num_running_seqs(self) -> int:
        return len(self._batch_seqs())

    # -- one step -------------------------------------------------------------------------
    def schedule(self) -> StepPlan | None:
        """Choose the next step's batch and reserve KV room for it (None: nothing to run)."""
        plan = self._schedule_prefill()
        if plan is None and self.running:
            plan = self._schedule_decode()
        return plan

    def _schedule_prefill(self) -> StepPlan | None:
        admitted: list[Request] = []
        batched_tokens = 0
        num_seqs = self.num_running_seqs
        tokens = self.seq_table.num_tokens
        while self.waiting:
            request = self.waiting[0]
            seq = request.seqs[0]
            prompt = int(tokens[seq])
            if admitted and batched_tokens + prompt > self.max_num_batched_tokens:
                break
            if num_seqs + len(request.seqs) > self.max_num_seqs:
                break
            if not self.kv.can_admit(prompt, request.max_tokens):
                break
            self.waiting.popleft()
            self.kv.admit(seq, prompt, request.max_tokens)
            if request.num_preemptions:
                request.recomputed_tokens += prompt - request.prompt_len
            request.status = Status.RUNNING
            admitted.append(request)
            batched_tokens += prompt
            num_seqs += len(request.seqs)
        if not admitted:
            return None
        self.running.extend(admitted)
        self._running_seqs = None
        seqs = np.array([r.seqs[0] for r in admitted], dtype=np.int64)
        lens = tokens[seqs].copy()
        return StepPlan(PREFILL, admitted, seqs, new_tokens=lens, context_lens=lens)

    def _schedule_decode(self) -> StepPlan:
        seqs = self._batch_seqs()
        tokens = self.seq_table.num_tokens[seqs]
        preempted: list[Request] = []
        if self.kv.decode_headroom(seqs, tokens, 1) < 1:
            preempted = self._make_room()
            seqs = self._batch_seqs()
            tokens = self.seq_table.num_tokens[seqs]
        self.kv.append(seqs, tokens, 1)
        return StepPlan(DECODE, list(self.running), seqs, new_tokens=np.ones_like(seqs),
                        context_lens=tokens, preempted=preempted)

    def _make_room(self) -> list[Request]:
        """vLLM's loop: serve requests in priority order, preempting from the back."""
        if not self.preemption:
            raise AssertionError("a policy without preemption ran out of KV room")
        queue = list(self.running)
        kept: list[Request] = []
        preempted: list[Request] = []
        tokens = self.seq_table.num_tokens
        while queue:
            request = queue.pop(0)
            while not all(self.kv.can_append(s, int(tokens[s])) for s in request.seqs):
                victim = queue.pop() if queue else request
                self._preempt(victim)
                preempted.append(victim)
                if victim is request:
                    break
            else:
                seqs = np.array(request.seqs, dtype=np.int64)
                self.kv.append(seqs, tokens[seqs], 1)
                kept.append(request)
        # The kept requests' room is reserved, so the caller's append() changes nothing for them.
        self.running = kept
        self._running_seqs = None
        return preempted

    def _preempt(self, request: Request) -> None:
        """Recompute: drop the KV; the request re-enters at the queue's head with its tokens so far."""
        for seq in request.seqs:
            self.kv.free(seq)
        request.status = Status.WAITING
        request.num_preemptions += 1
        self.waiting.appendleft(request)

    def _batch_seqs(self) -> np.ndarray:
        if self._running_seqs is None:
            self._running_seqs = np.array([s for r in self.running for s in r.seqs], dtype=np.int64)
        return self._running_seqs

    # -- fast-forward and commit --------------------------------------------------------------
    def headroom(self, plan: StepPlan, max_steps: int) -> int:
        """How many identical steps of ``plan`` (>= 1) can run before the scheduler must decide.

        A decode batch stays the same until a sequence finishes or one would lack a block,
        so the simulator may charge that many steps at once; a real executor takes one.
        """
        if plan.kind != DECODE or max_steps <= 1:
            return 1
        until_finish = int(self.seq_table.remaining[plan.seqs].min())
        cap = min(max_steps, until_finish)
        if cap <= 1:
            return 1
        return 1 + self.kv.decode_headroom(plan.seqs, plan.context_lens + 1, cap - 1)

    def complete(self, plan: StepPlan, steps: int = 1) -> list[Request]:
        """Apply ``steps`` executions of ``plan``; return the requests that finished."""
        table = self.seq_table
        if steps > 1:
            self.kv.append(plan.seqs, plan.context_lens + 1, steps - 1)
        table.num_tokens[plan.seqs] += steps
        table.remaining[plan.seqs] -= steps
        done = np.flatnonzero(table.remaining[plan.seqs] == 0)
        if not len(done):
            return []
        finished = []
        for seq in plan.seqs[done].tolist():
            request = self.owner[seq]
            if request.status is Status.RUNNING and not table.remaining[request.seqs].any():
                finished.append(request)
                request.status = Status.FINISHED
                for s in request.seqs:
                    self.kv.free(s)
                    del self.owner[s]
        self.running = [r for r in self.running if r.status is Status.RUNNING]
        self._running_seqs = None
        return finished
