"""Iteration-level (continuous batching) scheduler with vLLM's original semantics.

Each step is either a prefill of newly admitted requests or one decode step of every
running request, never both. Admission is first-come-first-served: the head of the queue
waits until its prompt fits, and nobody overtakes it. When a decode step needs a block
and none is free, the most recently admitted running request is preempted all-or-nothing:
recomputed later, or swapped to CPU memory and back (``preemption_mode``).

A request is a *group* of sequences sharing its prompt: parallel samples or beams. A group
is admitted, scheduled, preempted and swapped as a whole, and counts all its sequences
against max-num-seqs. With a KV policy that supports sharing, the group's sequences are
forks of one prompt (copy-on-write); otherwise each gets a private copy of the prompt's KV.

The scheduler knows nothing of time or GPUs: the simulator drives it with a cost model,
and a real executor can drive the very same object with real kernels.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from kvsim.errors import KvsimError
from kvsim.policies.beam import BeamModel
from kvsim.policies.kv_manager import (
    BlockTransfers,
    CacheUsage,
    KVCacheManager,
    PrivateCopyKVManager,
    SharingKVManager,
)
from kvsim.policies.prefix_cache import block_hashes
from kvsim.policies.request import Request, Status


class StepKind(str, Enum):
    """What a step computes: prompts or prompt chunks (prefill), one token of each sequence in
    it (decode), or both at once (mixed: the v1 scheduler's chunked prefill)."""

    PREFILL = "prefill"
    DECODE = "decode"
    MIXED = "mixed"


PREFILL, DECODE, MIXED = StepKind.PREFILL, StepKind.DECODE, StepKind.MIXED
PREEMPTION_MODES = ("recompute", "swap")


@dataclass
class StepPlan:
    """One engine step: what runs, and what the cost model needs to price it."""

    kind: StepKind
    requests: list[Request]
    seqs: np.ndarray  # sequence ids in the batch
    new_tokens: np.ndarray  # tokens computed per sequence this step (1 for decode)
    context_lens: np.ndarray  # tokens attended per sequence (new + cached)
    preempted: list[Request] = field(default_factory=list)
    block_copies: int = 0
    swap_in_blocks: int = 0
    swap_out_blocks: int = 0
    # Every sequence the step advances, when more than ``seqs`` (a group's prompt is
    # prefilled once for all its sequences); None means ``seqs``.
    advanced: np.ndarray | None = None
    transfers: BlockTransfers = field(default_factory=BlockTransfers)  # the moves themselves
    # Chunked prefill (v1). Which entries sample a token (None: all; a chunk that leaves
    # part of its prompt for later does not), the requests whose prompt starts and whose
    # prompt completes in this step (None: a v0 prefill, where every request does both),
    # and how many entries compute prompt tokens.
    samples: np.ndarray | None = None
    prompts_started: list[Request] | None = None
    prompts_done: list[Request] | None = None
    num_chunks: int | None = None

    @property
    def started(self) -> list[Request]:
        """Requests scheduled for the first time (or again after a recompute) in this step."""
        if self.prompts_started is not None:
            return self.prompts_started
        return self.requests if self.kind is PREFILL else []

    @property
    def first_tokens(self) -> list[Request]:
        """Requests whose prompt completes in this step: it samples their first token."""
        if self.prompts_done is not None:
            return self.prompts_done
        return self.requests if self.kind is PREFILL else []

    @property
    def chunks(self) -> int:
        """Entries computing prompt tokens (v0: every sequence of a prefill)."""
        if self.num_chunks is not None:
            return self.num_chunks
        return len(self.seqs) if self.kind is PREFILL else 0


@dataclass
class EventCounts:
    """Sharing and preemption events of a run (a scheduler's, or a cluster's summed)."""

    block_copies: int = 0  # copy-on-write copies and private prompt and beam copies
    forks: int = 0  # sequences forked from another's blocks (samples, beams)
    prefix_lookup_blocks: int = 0  # full prompt blocks looked up in the prefix cache
    prefix_hit_blocks: int = 0  # ... and found there
    prefill_tokens_saved: int = 0  # prompt tokens not computed thanks to cached blocks
    preempted_swap: int = 0  # preemptions by swapping the group out
    preempted_recompute: int = 0  # preemptions by dropping the group's KV
    swap_space_full: int = 0  # swaps turned into recomputes for want of CPU blocks
    swap_out_blocks: int = 0
    swap_in_blocks: int = 0

    def add(self, other: "EventCounts") -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


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

    #: Does a prompt longer than the step's token budget run in chunks (v1), or can it never
    #: run (v0: a prompt is prefilled in one step)?
    chunks_prompts = False

    def __init__(
        self,
        kv: KVCacheManager,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        preemption: bool = True,
        preemption_mode: str = "recompute",
        beam: BeamModel = BeamModel(),
        prefix_caching: bool = False,
        batch_level: bool = False,
    ) -> None:
        self.kv = kv
        #: Request-level batching (FasterTransformer behind a dynamic batcher): a new batch
        #: is admitted only once the running one has drained.
        self.batch_level = batch_level
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        # Policies that reserve a request's whole life at admission never run out mid-flight.
        self.preemption = preemption
        if preemption_mode not in PREEMPTION_MODES:
            raise KvsimError(
                f"--preemption must be one of {', '.join(PREEMPTION_MODES)} (got {preemption_mode!r})"
            )
        #: The policy's sharing capability, or None: then every sequence of a group holds a
        #: private copy of the prompt, and nothing is forked, cached by prefix or swapped.
        self.sharing = kv if isinstance(kv, SharingKVManager) else None
        if self.sharing is None and not isinstance(kv, PrivateCopyKVManager):
            raise TypeError(
                f"{type(kv).__name__} must share blocks (SharingKVManager) or keep "
                "private copies (PrivateCopyKVManager)"
            )
        if preemption_mode == "swap" and self.sharing is None:
            raise KvsimError("--preemption swap needs a block-table policy (paged)")
        self.preemption_mode = preemption_mode
        self.beam = beam
        self.prefix_caching = prefix_caching and self.sharing is not None
        self.seq_table = SequenceTable()
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []  # in priority (arrival) order
        self.swapped: deque[Request] = deque()  # preempted to CPU, oldest first
        self._running_seqs: np.ndarray | None = None  # cache; rebuilt when `running` changes
        self.owner: dict[int, Request] = {}  # sequence id -> its request, while it lives
        self.counters = EventCounts()  # sharing and preemption events, for the summary
        self._live_beams = 0  # beam-search requests in the system: they re-select every step
        self._swap_out = 0  # blocks swapped out while planning the current step

    # -- intake -------------------------------------------------------------------------
    def rejection_reason(self, request: Request) -> str:
        """Why this request can never run here ('' if it can)."""
        if not self.chunks_prompts and request.prompt_len > self.max_num_batched_tokens:
            return (
                f"prompt of {request.prompt_len} tokens exceeds max-num-batched-tokens "
                f"{self.max_num_batched_tokens}"
            )
        if request.width > self.max_num_seqs:
            return f"a group of {request.width} sequences exceeds max-num-seqs {self.max_num_seqs}"
        held = self._group_memory(request)
        if not self.kv.fits_alone(held, request.prompt_len):
            return f"needs {sum(held)} token slots; the whole KV cache has {self.kv.num_slots}"
        return ""

    def _group_memory(self, request: Request) -> list[int]:
        """Token slots each piece of the group's own memory holds at its end: a sharing policy
        holds the prompt's full blocks once and each sequence the rest; otherwise every
        sequence holds a whole copy."""
        if request.width == 1:
            return [request.max_tokens]
        block = self.kv.block_size
        shared = request.prompt_len // block * block if self.sharing else 0
        return ([shared] if shared else []) + [request.max_tokens - shared] * request.width

    def add_request(self, request: Request) -> None:
        lengths = request.sample_output_lens or (request.output_len,) * request.width
        request.seqs = [self.seq_table.add(request.prompt_len, n) for n in lengths]
        for seq in request.seqs:
            self.owner[seq] = request
        if request.beam:
            request.beam_rng = self.beam.rng(request.request_id)
            self._live_beams += 1
        request.status = Status.WAITING
        self.waiting.append(request)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self.swapped)

    # -- what an arrival can change ------------------------------------------------------
    # A decode run keeps its batch and only takes blocks, so an admission refused at its
    # start stays refused to its end: a clock charging the run at once need not cut it for
    # an arrival that could not be admitted anyway. These checks may say yes to a request
    # the step then refuses (that costs a cut), never no to one it would admit.
    def admissions_open(self) -> bool:
        """Could any request arriving now be admitted before the running batch changes? Not
        while another waits (first come, first served), a preempted group waits on the CPU,
        a request-level batch runs, the batch is full, or there is no free block to take."""
        return not (
            self.waiting
            or self.swapped
            or (self.batch_level and self.running)
            or self.num_running_seqs >= self.max_num_seqs
            or not self.kv.can_admit(1, 1)
        )

    def could_admit(self, request: Request) -> bool:
        """Could ``request``, just queued, be admitted before the running batch changes?
        With a prefix that cached blocks might serve, only its last block is sure to be
        needed; a group without sharing is not checked (its copies are placed together)."""
        if len(self.waiting) > 1 or self.waiting[0] is not request:
            return False
        if self.swapped or (self.batch_level and self.running):
            return False
        if self.num_running_seqs + len(request.seqs) > self.max_num_seqs:
            return False
        if self.sharing is None and request.width > 1:
            return True
        may_hit = request.token_ids is not None and (self.prefix_caching or request.shared_prefix_len)
        # Sure to be needed: the whole prompt, unless cached blocks may serve all but its last
        # block, or the prompt runs in chunks of which the first may be one token.
        sure = 1 if may_hit or self.chunks_prompts else request.prompt_len
        return self.kv.can_admit(sure, request.max_tokens)

    @property
    def num_running_seqs(self) -> int:
        return len(self._batch_seqs())

    # -- one step -------------------------------------------------------------------------
    def schedule(self) -> StepPlan | None:
        """Choose the next step's batch and reserve KV room for it (None: nothing to run)."""
        self._swap_out = 0
        plan = self._schedule_prefill()
        if plan is None and (self.running or self.swapped):
            plan = self._schedule_decode()
        return plan

    def _schedule_prefill(self) -> StepPlan | None:
        if not self.waiting or self.swapped:  # vLLM: no admissions while a group waits on the CPU
            return None
        if self.batch_level and self.running:
            return None
        admitted: list[Request] = []
        rows: list[tuple[int, int, int]] = []  # (seq, tokens computed, tokens attended)
        batched_tokens = 0
        num_seqs = self.num_running_seqs
        while self.waiting:
            request = self.waiting[0]
            prompt = self._prefill_tokens(request)
            if admitted and batched_tokens + prompt > self.max_num_batched_tokens:
                break
            if num_seqs + len(request.seqs) > self.max_num_seqs:
                break
            cached = self._admit(request)
            if cached is None:
                break
            self.waiting.popleft()
            if request.num_preemptions:
                request.recomputed_tokens += prompt - request.prompt_len
            request.status = Status.RUNNING
            admitted.append(request)
            rows.extend(self._prefill_rows(request, cached))
            batched_tokens += prompt
            num_seqs += len(request.seqs)
        if not admitted:
            return None
        self.running.extend(admitted)
        self._running_seqs = None
        seqs, new, context = (np.array(column, dtype=np.int64) for column in zip(*rows))
        advanced = None
        if len(seqs) < sum(len(r.seqs) for r in admitted):
            advanced = np.array([s for r in admitted for s in r.seqs], dtype=np.int64)
        copies, moves = self._take_moves()
        return StepPlan(
            PREFILL,
            admitted,
            seqs,
            new_tokens=new,
            context_lens=context,
            block_copies=copies,
            advanced=advanced,
            transfers=moves,
        )

    def _prefill_tokens(self, request: Request) -> int:
        """Tokens the group's prefill computes: the root's, plus what each other sequence
        generated beyond the shared prompt (nonzero only when recomputing)."""
        tokens = self.seq_table.num_tokens
        return int(tokens[request.seqs[0]]) + sum(
            int(tokens[s]) - request.prompt_len for s in request.seqs[1:]
        )

    def _prefill_rows(self, request: Request, cached: int) -> list[tuple[int, int, int]]:
        tokens = self.seq_table.num_tokens
        root = request.seqs[0]
        rows = [(root, int(tokens[root]) - cached, int(tokens[root]))]
        for seq in request.seqs[1:]:
            if tokens[seq] > request.prompt_len:
                rows.append((seq, int(tokens[seq]) - request.prompt_len, int(tokens[seq])))
        return rows

    # -- admission: the whole group or nothing ------------------------------------------------
    def _admit(self, request: Request) -> int | None:
        """Allocate the group's KV for its prefill; return the root's cached prompt tokens
        (0 without prefix sharing), or None, holding nothing, if it does not fit now."""
        kv, tokens = self.sharing, self.seq_table.num_tokens
        root, others = request.seqs[0], request.seqs[1:]
        if kv is None:
            table = self.seq_table
            seqs = request.seqs
            tokens = [int(table.num_tokens[s]) for s in seqs]
            finals = [int(table.num_tokens[s] + table.remaining[s]) - 1 for s in seqs]
            return 0 if self.kv.admit_group(seqs, tokens, finals) else None
        # A group's root holds the prompt only; its generated tokens (recompute) come after the forks.
        root_tokens = request.prompt_len if others else int(tokens[root])
        names = self._prompt_names(request)
        if names is None:
            if not kv.can_admit(root_tokens, request.max_tokens):
                return None
            kv.admit(root, root_tokens, request.max_tokens)
            cached = 0
        else:
            cached = kv.admit_cached(root, root_tokens, names, request.shared_prefix_len // kv.block_size)
            if cached is None:
                return None
        if others:
            for seq in others:
                kv.fork(root, seq)
            seqs = np.array(request.seqs, dtype=np.int64)
            if (tokens[seqs] > request.prompt_len).any() and not self._grow(seqs, request.prompt_len):
                for seq in request.seqs:
                    kv.free(seq)
                return None
        # Only an admission that holds is counted: a refused one is retried every step.
        self.counters.forks += len(others)
        if names is not None:
            self.counters.prefix_lookup_blocks += min(len(names), (root_tokens - 1) // kv.block_size)
            self.counters.prefix_hit_blocks += cached // kv.block_size
            self.counters.prefill_tokens_saved += cached
        return cached

    def _grow(self, seqs: np.ndarray, prompt_len: int) -> bool:
        """Extend freshly forked sequences to their own lengths (recompute of a group): first
        the token after the prompt, which copies the shared tail, then the rest."""
        tokens = self.seq_table.num_tokens[seqs]
        for target in (np.minimum(tokens, prompt_len + 1), tokens):
            if self.kv.decode_headroom(seqs, target, 1) < 1:
                return False
            self.kv.append(seqs, target, 1)
        return True

    def _prompt_names(self, request: Request) -> list[int] | None:
        """Hashes of the prompt's full blocks that may be found shared (None: nothing to look up)."""
        if request.token_ids is None or not (self.prefix_caching or request.shared_prefix_len):
            return None
        if request.block_names is None:
            count = request.prompt_len if self.prefix_caching else request.shared_prefix_len
            request.block_names = block_hashes(request.token_ids(count), self.kv.block_size)
        return request.block_names

    def _take_moves(self) -> tuple[int, BlockTransfers]:
        """The step's block moves, and the block copies it pays for: copy-on-write copies
        and the private prompt and beam copies of a policy without sharing."""
        moves = self.kv.take_step_moves()
        copies = moves.num_copies
        self.counters.block_copies += copies
        return copies, moves

    def _schedule_decode(self) -> StepPlan | None:
        seqs = self._batch_seqs()
        tokens = self.seq_table.num_tokens[seqs]
        preempted: list[Request] = []
        swapped_in = 0
        if not self.kv.try_append(seqs, tokens):  # the running batch's room first, then swap-ins'
            preempted = self._make_room()
            seqs = self._batch_seqs()
            tokens = self.seq_table.num_tokens[seqs]
            self.kv.append(seqs, tokens, 1)
        if not preempted and self.swapped:  # vLLM: swap back in only in a step that preempts nobody
            swapped_in = self._swap_in()
            seqs = self._batch_seqs()
            tokens = self.seq_table.num_tokens[seqs]
        if not len(seqs):
            return None
        copies, moves = self._take_moves()
        return StepPlan(
            DECODE,
            list(self.running),
            seqs,
            new_tokens=np.ones_like(seqs),
            context_lens=tokens,
            preempted=preempted,
            block_copies=copies,
            swap_in_blocks=swapped_in,
            swap_out_blocks=self._swap_out,
            transfers=moves,
        )

    def _swap_in(self) -> int:
        """Bring swapped groups back, oldest first, while they fit (with room for their next
        token: ``can_swap_in``), reserving that room; return the blocks moved."""
        moved = 0
        num_seqs = self.num_running_seqs
        while self.swapped:
            request = self.swapped[0]
            # With nothing running, the watermark must not keep the cache's only group out.
            if num_seqs + len(request.seqs) > self.max_num_seqs or not self.sharing.can_swap_in(
                request.seqs, keep_watermark=bool(self.running)
            ):
                break
            self.swapped.popleft()
            moved += self.sharing.swap_in(request.seqs)
            group = np.array(request.seqs, dtype=np.int64)
            self.kv.append(group, self.seq_table.num_tokens[group], 1)
            request.status = Status.RUNNING
            self.running.append(request)
            num_seqs += len(request.seqs)
        self._running_seqs = None
        self.counters.swap_in_blocks += moved
        return moved

    def _can_step(self, request: Request) -> bool:
        """Is there room for one decode step of the whole group (copies included)?"""
        tokens = self.seq_table.num_tokens
        if len(request.seqs) == 1:
            return self.kv.can_append(request.seqs[0], int(tokens[request.seqs[0]]))
        seqs = np.array(request.seqs, dtype=np.int64)
        return self.kv.decode_headroom(seqs, tokens[seqs], 1) >= 1

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
            while not self._can_step(request):
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
        """Swap the group out if so configured and the CPU swap space has room; otherwise
        recompute: drop the KV and re-queue at the head, tokens so far as the new prompt."""
        request.num_preemptions += 1
        if self.preemption_mode == "swap":
            sharing = self.sharing
            if sharing.swap_out_blocks(request.seqs) <= sharing.swap_space.num_free:
                moved = sharing.swap_out(request.seqs)
                self._swap_out += moved
                self.counters.swap_out_blocks += moved
                self.counters.preempted_swap += 1
                request.status = Status.SWAPPED
                self.swapped.append(request)
                return
            self.counters.swap_space_full += 1
        self.counters.preempted_recompute += 1
        for seq in request.seqs:
            self.kv.free(seq)
        request.status = Status.WAITING
        self.waiting.appendleft(request)

    def _batch_seqs(self) -> np.ndarray:
        if self._running_seqs is None:
            self._running_seqs = np.array([s for r in self.running for s in r.seqs], dtype=np.int64)
        return self._running_seqs

    def kv_usage(self, plan: StepPlan, written_only: bool = False) -> CacheUsage:
        """How the running sequences hold the cache while ``plan`` runs, from the KV policy's
        own state.

        A sequence the step advances counts its newest token as stored (its KV is being
        written); one that sits a prefill step out has not written its newest token's KV.
        ``written_only`` leaves every newest token out, which between ``advance`` and
        ``retire`` gives the cache during a decode run's last step.
        """
        seqs = self._batch_seqs()
        if plan.kind is DECODE and not written_only:  # the step's own context, as it runs
            return self.kv.usage(seqs, plan.context_lens)
        tokens = self.seq_table.num_tokens[seqs]  # a copy: adjusted in place below
        if written_only:
            tokens -= 1
        elif plan.kind == PREFILL:
            # The admitted groups were appended to the running list; the rest sit it out.
            tokens[: len(seqs) - sum(len(r.seqs) for r in plan.requests)] -= 1
        return self.kv.usage(seqs, tokens)

    # -- fast-forward and commit --------------------------------------------------------------
    def headroom(self, plan: StepPlan, max_steps: int) -> int:
        """How many identical steps of ``plan`` (>= 1) can run before the scheduler must decide.

        A decode batch stays the same until a sequence finishes or one would lack a block,
        so the simulator may charge that many steps at once; a real executor takes one.

        That holds only if every request this step turned away stays turned away. Admission
        and swap-in need free blocks, and a decode run only takes blocks, so a refusal made
        in this step lasts until something finishes. A step that preempted made no such
        refusal: it re-queued its victims and skipped swap-in (vLLM swaps in only in a step
        that preempts nobody), so the very next step decides afresh. And under prefix caching
        with prompts in chunks (v1), a refused request may fit once the run evicts its cached
        blocks: its first chunk must hold every block it hits, so fewer hits can mean fewer
        blocks. While one waits, the run stops before it would evict a cached block.
        """
        if plan.kind != DECODE or max_steps <= 1:
            return 1
        # Preemptions, copies, swaps and beam re-selection change the next step: one at a time.
        if (
            plan.preempted
            or plan.block_copies
            or plan.swap_in_blocks
            or plan.swap_out_blocks
            or (self._live_beams and any(r.beam for r in plan.requests))
        ):
            return 1
        until_finish = int(self.seq_table.remaining[plan.seqs].min())
        cap = min(max_steps, until_finish)
        if cap <= 1:
            return 1
        keep_cached = bool(self.waiting) and self.prefix_caching and self.chunks_prompts
        return 1 + self.kv.decode_headroom(plan.seqs, plan.context_lens + 1, cap - 1, keep_cached)

    def complete(self, plan: StepPlan, steps: int = 1) -> list[Request]:
        """Apply ``steps`` executions of ``plan``; return the requests that finished."""
        self.advance(plan, steps)
        return self.retire(plan)

    def advance(self, plan: StepPlan, steps: int) -> None:
        """Apply ``steps`` executions of ``plan`` to the sequences and the cache; nothing is
        freed yet, so the cache as it stood during the run's last step can still be read."""
        table = self.seq_table
        seqs = plan.seqs if plan.advanced is None else plan.advanced
        if steps > 1:
            self.kv.append(plan.seqs, plan.context_lens + 1, steps - 1)
        table.num_tokens[seqs] += steps
        table.remaining[seqs] -= steps

    def retire(self, plan: StepPlan) -> list[Request]:
        """After ``advance``: re-select beams, free the sequences that ended; return the
        requests that finished."""
        table = self.seq_table
        seqs = plan.seqs if plan.advanced is None else plan.advanced
        if self._live_beams and plan.kind == DECODE:
            for request in plan.requests:
                if request.beam and request.status is Status.RUNNING and table.remaining[request.seqs[0]]:
                    self._reselect_beams(request)
                    self._running_seqs = None
        done = (table.remaining[seqs] == 0).nonzero()[0]
        if not len(done):
            return []
        finished = []
        for seq in seqs[done].tolist():
            request = self.owner[seq]
            if request.status is not Status.RUNNING:
                continue
            self._release(request, seq)
            request.seqs.remove(seq)
            if not request.seqs:  # samples of independent lengths end one by one
                finished.append(request)
                request.status = Status.FINISHED
                self._live_beams -= request.beam
        self.running = [r for r in self.running if r.status is Status.RUNNING]
        self._running_seqs = None
        return finished

    def _release(self, request: Request, seq: int) -> None:
        """A sequence ends. With prefix caching, a lone sequence's full blocks (prompt and
        output: a chatbot's next turn starts with them) are named before they are freed."""
        if self.prefix_caching and request.token_ids is not None and len(request.seqs) == 1:
            stored = int(self.seq_table.num_tokens[seq]) - 1
            self.sharing.name_blocks(seq, block_hashes(request.token_ids(stored), self.kv.block_size))
        self.kv.free(seq)
        del self.owner[seq]

    def _reselect_beams(self, request: Request) -> None:
        """New beams choose parents (see ``BeamModel``): a parent chosen c times continues and
        is forked c - 1 times, one chosen 0 times is dropped. Without sharing, the beams keep
        their own memory and a new beam copies its parent's KV into it instead."""
        old = request.seqs
        parents = self.beam.parents(request.beam_rng, len(old)).tolist()
        if self.sharing is None:
            table = self.seq_table
            for beam, parent in enumerate(parents):
                if parent != beam:
                    self.kv.copy_from_parent(int(table.num_tokens[old[parent]] - 1))
            return
        table = self.seq_table
        continued: set[int] = set()
        new: list[int] = []
        for parent in (old[p] for p in parents):
            if parent not in continued:
                continued.add(parent)
                new.append(parent)
                continue
            child = table.add(int(table.num_tokens[parent]), int(table.remaining[parent]))
            self.sharing.fork(parent, child)
            self.owner[child] = request
            new.append(child)
        for seq in old:
            if seq not in continued:
                self.kv.free(seq)
                del self.owner[seq]
        self.counters.forks += len(new) - len(continued)
        request.seqs = new
