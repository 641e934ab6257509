"""The real thing: a continuous-batching loop that runs the simulator's own scheduler and block
manager on a GPU through the model runner.

It replays a trace offline: a request becomes visible once the executor's clock passes its
arrival time, and the clock advances by each step's measured wall time (scheduling, input
preparation, the GPU work and sampling), so idle gaps are skipped rather than slept. Each
step's time splits into the runner's part (block moves, the forward pass, reading the
sampled tokens back) and the engine's own (scheduling and bookkeeping around it), which
calibration measures as a cost term of its own. Output
lengths are forced, as in the simulator. It is a clock around the same ``EngineCore`` the
simulator's replicas are, so both schedule and record alike and ``simcli validate``
compares like with like.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from kvsim.cost.cost_model import CostModel
from kvsim.engine.core import EngineCore, IntakeCheck
from kvsim.engine.metrics import Recorder
from kvsim.engine.requests import RequestFactory
from kvsim.errors import KvsimError
from kvsim.gpu.runner import ModelRunner
from kvsim.policies.kv_manager import BlockTableManager
from kvsim.policies.scheduler import DECODE, MIXED, Scheduler, StepPlan
from kvsim.workloads.trace import Trace

STEP_COLUMNS = ("kind", "num_seqs", "tokens", "measured_s", "engine_s", "predicted_s")


class RealExecutor:
    """``step_clock``: None measures each step's wall time; a function of the plan gives the
    time instead (tests use the cost model, to compare schedules)."""

    def __init__(
        self,
        scheduler: Scheduler,
        runner: ModelRunner,
        step_clock: Callable[[StepPlan], float] | None = None,
        predictor: CostModel | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(scheduler.kv, BlockTableManager):
            raise KvsimError("the real executor runs block-table (paged) policies only")
        self.scheduler, self.runner = scheduler, runner
        self.step_clock, self.predictor = step_clock, predictor
        self.rng = np.random.default_rng(seed)
        self.tokens: dict[int, list[int]] = {}  # sequence id -> its token ids so far
        self.step_times: list[tuple] = []  # one STEP_COLUMNS row per step

    def run(self, trace: Trace, intake_check: IntakeCheck = lambda r: "") -> Recorder:
        recorder = Recorder(len(trace))
        core = EngineCore(self.scheduler, recorder, intake_check=intake_check)
        make_request = RequestFactory(trace)
        arrivals = trace.arrival_time
        clock, next_id = 0.0, 0
        while next_id < len(trace) or core.has_work():
            if not core.has_work():
                clock = max(clock, float(arrivals[next_id]))
            while next_id < len(trace) and arrivals[next_id] <= clock:
                core.intake(make_request(next_id), float(arrivals[next_id]))
                next_id += 1
            if not core.has_work():
                continue
            started = time.perf_counter()
            step = core.begin_step(1)
            paused = time.perf_counter()
            # Instrumentation, not serving work: the clock stops while the cache is measured.
            core.observe_cache(step)
            resumed = time.perf_counter()
            runner_s = self._execute(step.plan)
            finished = core.end_step(step, 1)
            wall = time.perf_counter() - started - (resumed - paused)
            measured = self.step_clock(step.plan) if self.step_clock else wall
            self._log_step(step.plan, measured, engine_s=wall - runner_s)
            start, clock = clock, clock + measured
            core.record(step, start, clock)
            if finished:  # ended sequences have left the scheduler's owner map
                self.tokens = {seq: ids for seq, ids in self.tokens.items() if seq in self.scheduler.owner}
        core.close()
        return recorder

    def _token_ids(self, seq: int, count: int) -> list[int]:
        """The sequence's token ids, at least ``count`` of them. Step time does not depend on
        their values, so ids a sequence has not produced itself (a fork's, a beam's new
        parent's) are drawn at random rather than tracked through every fork."""
        tokens = self.tokens.setdefault(seq, [])
        if len(tokens) < count:
            tokens.extend(self.rng.integers(0, self.runner.spec.vocab_size, count - len(tokens)).tolist())
        return tokens

    def _execute(self, plan: StepPlan) -> float:
        """Move the plan's blocks, run its batch on the GPU, keep each sequence's next token.
        Returns the seconds spent in the runner, until the sampled tokens are on the host.

        A prefill runs each sequence's new tokens after its cached ones; a decode one token
        of each; a mixed step (v1) both at once, an entry of one new token as a decode. A
        prompt chunk that leaves part of its prompt for later samples nothing."""
        tables = self.scheduler.kv.block_tables
        seqs = plan.seqs.tolist()
        context = plan.context_lens.tolist()
        cached = (plan.context_lens - plan.new_tokens).tolist()
        if plan.kind is DECODE:
            chunk_rows, decode_rows = [], list(range(len(seqs)))
        elif plan.kind is MIXED:
            one = (plan.new_tokens == 1).tolist()
            chunk_rows = [i for i, decode in enumerate(one) if not decode]
            decode_rows = [i for i, decode in enumerate(one) if decode]
        else:
            chunk_rows, decode_rows = list(range(len(seqs))), []
        chunk_inputs = [self._token_ids(seqs[i], context[i])[cached[i] : context[i]] for i in chunk_rows]
        decode_inputs = [self._token_ids(seqs[i], context[i])[context[i] - 1] for i in decode_rows]
        chunk_tables = [tables[seqs[i]] for i in chunk_rows]
        decode_tables = [tables[seqs[i]] for i in decode_rows]
        decode_positions = [context[i] - 1 for i in decode_rows]
        started = time.perf_counter()
        runner, transfers = self.runner, plan.transfers
        if transfers.swap_out:
            runner.swap_out(transfers.swap_out)
        if transfers.swap_in:
            runner.swap_in(transfers.swap_in)
        if transfers.copies:
            runner.copy_blocks(transfers.copies)
        if not decode_rows:
            logits = runner.prefill(chunk_inputs, chunk_tables, [cached[i] for i in chunk_rows])
        elif not chunk_rows:
            logits = runner.decode(decode_inputs, decode_positions, decode_tables)
        else:
            logits = runner.mixed(
                chunk_inputs,
                chunk_tables,
                [cached[i] for i in chunk_rows],
                decode_inputs,
                decode_positions,
                decode_tables,
            )
        sampled = logits.argmax(dim=-1).tolist()  # waits for the GPU
        runner_s = time.perf_counter() - started
        samples = [True] * len(seqs) if plan.samples is None else plan.samples.tolist()
        for i, token in zip(chunk_rows + decode_rows, sampled):
            if samples[i]:
                tokens = self.tokens[seqs[i]]
                del tokens[context[i] :]
                tokens.append(token)
        return runner_s

    def _log_step(self, plan: StepPlan, measured: float, engine_s: float) -> None:
        predicted = float(self.predictor.plan_durations(plan, 1)[0]) if self.predictor else float("nan")
        self.step_times.append(
            (plan.kind, len(plan.seqs), int(plan.new_tokens.sum()), measured, engine_s, predicted)
        )
