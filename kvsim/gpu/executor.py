"""The real thing: a continuous-batching loop that runs the simulator's own scheduler and block
manager on a GPU through the model runner.

It replays a trace offline: a request becomes visible once the executor's clock passes its
arrival time, and the clock advances by each step's measured wall time (scheduling, input
preparation, the GPU work and sampling), so idle gaps are skipped rather than slept. Each
step's time splits into the runner's part (block moves, the forward pass, reading the
sampled tokens back) and the engine's own (scheduling and bookkeeping around it), which
calibration measures as a cost term of its own. Output
lengths are forced, as in the simulator. It records into the simulator's ``Recorder``, so
both write the same files and ``simcli validate`` compares like with like.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from kvsim.calibration.cost_model import CostModel
from kvsim.errors import KvsimError
from kvsim.gpu.runner import ModelRunner
from kvsim.policies.request import Request
from kvsim.sim.requests import RequestFactory
from kvsim.policies.scheduler import PREFILL, Scheduler, StepPlan
from kvsim.sim.metrics import Recorder
from kvsim.workloads.trace import Trace


STEP_COLUMNS = ("kind", "num_seqs", "tokens", "measured_s", "engine_s", "predicted_s")


class RealExecutor:
    """``step_clock``: None measures each step's wall time; a function of the plan gives the
    time instead (tests use the cost model, to compare schedules)."""

    def __init__(self, scheduler: Scheduler, runner: ModelRunner,
                 step_clock: Callable[[StepPlan], float] | None = None,
                 predictor: CostModel | None = None, seed: int = 0) -> None:
        if not hasattr(scheduler.kv, "block_tables"):
            raise KvsimError("the real executor runs block-table (paged) policies only")
        self.scheduler, self.runner = scheduler, runner
        self.step_clock, self.predictor = step_clock, predictor
        self.rng = np.random.default_rng(seed)
        self.tokens: dict[int, list[int]] = {}  # sequence id -> its token ids so far
        self.step_times: list[tuple] = []  # one STEP_COLUMNS row per step

    def run(self, trace: Trace, intake_check: Callable[[Request], str] = lambda r: "") -> Recorder:
        recorder = Recorder(len(trace))
        self._requests = RequestFactory(trace)
        scheduler, clock, next_id = self.scheduler, 0.0, 0
        while next_id < len(trace) or scheduler.has_work():
            if not scheduler.has_work():
                clock = max(clock, float(trace.arrival_time[next_id]))
            while next_id < len(trace) and trace.arrival_time[next_id] <= clock:
                self._arrive(trace, next_id, recorder, intake_check)
                next_id += 1
            if not scheduler.has_work():
                continue
            started = time.perf_counter()
            plan = scheduler.schedule()
            if plan is None:
                raise RuntimeError("requests wait but nothing can be scheduled")
            paused = time.perf_counter()
            # Instrumentation, not serving work: the clock stops while the cache is measured.
            usage = scheduler.kv_usage(plan)  # one step: the cache as it runs, as the simulator records
            resumed = time.perf_counter()
            runner_s = self._execute(plan)
            finished = scheduler.complete(plan, 1)
            wall = time.perf_counter() - started - (resumed - paused)
            measured = self.step_clock(plan) if self.step_clock else wall
            self._log_step(plan, measured, engine_s=wall - runner_s)
            start, clock = clock, clock + measured
            recorder.record_step(0, scheduler, plan, start, clock, 1, kv_slots=usage.slots())
            if finished:
                recorder.finished(finished, clock)
                for request in finished:
                    for seq in request.seqs:
                        self.tokens.pop(seq, None)
        return recorder

    def _arrive(self, trace: Trace, rid: int, recorder: Recorder, intake_check) -> None:
        request = self._requests(rid)
        recorder.arrive(request, float(trace.arrival_time[rid]))
        reason = intake_check(request) or self.scheduler.rejection_reason(request)
        if reason:
            recorder.reject(request, reason)
            return
        self.scheduler.add_request(request)

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
        Returns the seconds spent in the runner, until the sampled tokens are on the host."""
        tables = self.scheduler.kv.block_tables
        seqs = plan.seqs.tolist()
        block_tables = [tables[s] for s in seqs]
        context = plan.context_lens.tolist()
        if plan.kind == PREFILL:
            cached = (plan.context_lens - plan.new_tokens).tolist()
            inputs = [self._token_ids(s, n)[c:n] for s, n, c in zip(seqs, context, cached)]
        else:
            inputs = [self._token_ids(s, n)[n - 1] for s, n in zip(seqs, context)]
        started = time.perf_counter()
        runner, transfers = self.runner, plan.transfers
        if transfers.swap_out:
            runner.swap_out(transfers.swap_out)
        if transfers.swap_in:
            runner.swap_in(transfers.swap_in)
        if transfers.copies:
            runner.copy_blocks(transfers.copies)
        if plan.kind == PREFILL:
            logits = runner.prefill(inputs, block_tables, cached)
        else:
            logits = runner.decode(inputs, [n - 1 for n in context], block_tables)
        sampled = logits.argmax(dim=-1).tolist()  # waits for the GPU
        runner_s = time.perf_counter() - started
        for seq, n, token in zip(seqs, context, sampled):
            tokens = self.tokens[seq]
            del tokens[n:]
            tokens.append(token)
        return runner_s

    def _log_step(self, plan: StepPlan, measured: float, engine_s: float) -> None:
        predicted = float(self.predictor.plan_durations(plan, 1)[0]) if self.predictor else float("nan")
        self.step_times.append((plan.kind, len(plan.seqs), int(plan.new_tokens.sum()), measured,
                                engine_s, predicted))
