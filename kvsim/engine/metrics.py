"""What a run records, per request and per engine step, and the summary computed from it.

Steps are recorded as runs: a decode run of ``steps`` identical-batch steps is one row
(the simulator charges it as one event), a prefill step is a row of one step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from kvsim.policies.request import Request
from kvsim.policies.scheduler import DECODE, EventCounts

if TYPE_CHECKING:  # pandas is imported where a frame is asked for: a run's summary and files need none
    import pandas as pd

# The cache's token slots by use, averaged over the run of steps (see ``CacheUsage``).
KV_SLOT_COLUMNS = ("kv_token_states", "kv_reserved", "kv_internal_fragmentation", "kv_free")
# Summary keys of the time-averaged breakdown, in KV_SLOT_COLUMNS order (the paper's Fig. 2):
# free slots are the "external fragmentation & other" that no waiting request could use.
WASTE_KEYS = (
    "waste_token_states",
    "waste_reservation",
    "waste_internal_fragmentation",
    "waste_external_and_other",
)
STEP_COLUMNS = (
    "replica",
    "start",
    "duration",
    "comm_s",  # of the duration, collectives between a tensor-parallel replica's GPUs
    "kind",
    "steps",
    "batch_size",
    "num_seqs",
    "tokens",
    "prefill_tokens",  # prompt tokens computed (whole prompts, or v1's chunks)
    "decode_tokens",  # sequences decoding one token
    "num_chunks",  # sequences computing prompt tokens
    "kv_blocks_used",
    "num_waiting",
    "num_preempted",
    "block_copies",
    "swap_in_blocks",
    "swap_out_blocks",
    *KV_SLOT_COLUMNS,
    "kv_blocks_logical",
)
STATUS_COMPLETED, STATUS_REJECTED, STATUS_PENDING = "completed", "rejected", "pending"


class Recorder:
    def __init__(self, num_requests: int) -> None:
        n = num_requests
        self.arrival = np.full(n, np.nan)
        self.admitted = np.full(n, np.nan)  # first time scheduled
        self.first_token = np.full(n, np.nan)
        self.finish = np.full(n, np.nan)
        self.prompt_len = np.zeros(n, dtype=np.int64)
        self.output_len = np.zeros(n, dtype=np.int64)
        self.replica = np.full(n, -1, dtype=np.int64)
        self.preemptions = np.zeros(n, dtype=np.int64)
        self.recomputed_tokens = np.zeros(n, dtype=np.int64)
        self.status = np.full(n, STATUS_PENDING, dtype=object)
        self.reject_reason = np.full(n, "", dtype=object)
        self.steps: list[tuple] = []
        self._step_columns: tuple[int, dict[str, np.ndarray]] = (-1, {})  # (of so many steps, columns)
        self.counters = EventCounts()  # the schedulers' sharing and preemption events, summed

    def arrive(self, request: Request, now: float) -> None:
        rid = request.request_id
        self.arrival[rid] = now
        self.prompt_len[rid] = request.prompt_len
        self.output_len[rid] = request.output_len

    def reject(self, request: Request, reason: str) -> None:
        self.status[request.request_id] = STATUS_REJECTED
        self.reject_reason[request.request_id] = reason

    def record_step(
        self,
        replica: int,
        plan,
        start: float,
        end: float,
        steps: int,
        kv_slots: tuple,
        kv_blocks_used: int,
        kv_blocks_logical: int,
        num_waiting: int,
        comm_s: float = 0.0,
    ) -> None:
        """One executed run of ``steps`` steps of ``plan``, as ``EngineCore.end_step`` saw it:
        ``kv_slots`` is the cache by use over the run (``KV_SLOT_COLUMNS``; NaN if unmeasured),
        the block counts and queue length are those after the run's requests retired."""
        self.scheduled(plan.started, start, replica)
        self.sampled_first(plan.first_tokens, end)
        # A decode step computes one token per sequence: no sum over its batch needed.
        tokens = len(plan.seqs) if plan.kind is DECODE else int(plan.new_tokens.sum())
        chunks = plan.chunks
        decodes = len(plan.seqs) - chunks
        self.steps.append(
            (
                replica,
                start,
                end - start,
                comm_s,
                plan.kind.value,
                steps,
                len(plan.requests),
                len(plan.seqs),
                tokens,
                tokens - decodes,
                decodes,
                chunks,
                kv_blocks_used,
                num_waiting,
                len(plan.preempted),
                plan.block_copies,
                plan.swap_in_blocks,
                plan.swap_out_blocks,
                *kv_slots,
                kv_blocks_logical,
            )
        )

    def scheduled(self, requests: list[Request], start: float, replica: int) -> None:
        """These requests' prompts start computing at ``start`` (the first time counts)."""
        for request in requests:
            rid = request.request_id
            if np.isnan(self.admitted[rid]):
                self.admitted[rid] = start
                self.replica[rid] = replica

    def sampled_first(self, requests: list[Request], end: float) -> None:
        """These requests' prompts are computed: their first token is out at ``end``."""
        for request in requests:
            if np.isnan(self.first_token[request.request_id]):
                self.first_token[request.request_id] = end

    def prefilled(self, requests: list[Request], start: float, end: float, replica: int) -> None:
        """Whole prompts computed in one step from ``start`` to ``end``."""
        self.scheduled(requests, start, replica)
        self.sampled_first(requests, end)

    def finished(self, requests: list[Request], now: float) -> None:
        for request in requests:
            rid = request.request_id
            self.finish[rid] = now
            self.status[rid] = STATUS_COMPLETED
            self.preemptions[rid] = request.num_preemptions
            self.recomputed_tokens[rid] = request.recomputed_tokens

    # -- outputs --------------------------------------------------------------------------
    def request_columns(self) -> dict[str, np.ndarray]:
        """requests.csv's columns, in order."""
        return {
            "request_id": np.arange(len(self.arrival)),
            "status": self.status.astype(str),
            "replica": self.replica,
            "prompt_len": self.prompt_len,
            "output_len": self.output_len,
            "arrival": self.arrival,
            "admitted": self.admitted,
            "first_token": self.first_token,
            "finish": self.finish,
            "ttft": self.first_token - self.arrival,
            "e2e_latency": self.finish - self.arrival,
            "preemptions": self.preemptions,
            "recomputed_tokens": self.recomputed_tokens,
            "reject_reason": self.reject_reason.astype(str),
        }

    def step_columns(self) -> dict[str, np.ndarray]:
        """iterations.csv's columns (``STEP_COLUMNS``), built once per number of steps (the
        summary and the written outputs both read them)."""
        if self._step_columns[0] != len(self.steps):
            columns = zip(*self.steps) if self.steps else ((),) * len(STEP_COLUMNS)
            arrays = {name: np.array(values) for name, values in zip(STEP_COLUMNS, columns)}
            self._step_columns = (len(self.steps), arrays)
        return self._step_columns[1]

    def requests_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.request_columns())

    def steps_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.step_columns())


def _percentiles(values: np.ndarray, prefix: str) -> dict:
    if not len(values):
        return {f"{prefix}_{k}": float("nan") for k in ("mean", "p50", "p90", "p99", "max")}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        f"{prefix}_mean": float(values.mean()),
        f"{prefix}_p50": float(p50),
        f"{prefix}_p90": float(p90),
        f"{prefix}_p99": float(p99),
        f"{prefix}_max": float(values.max()),
    }


def time_per_output_token(first_token: np.ndarray, finish: np.ndarray, output_len: np.ndarray) -> np.ndarray:
    """Seconds per output token after the first, of the completed requests given that have more
    than one (a single-token request has no time between tokens)."""
    multi = output_len > 1
    return (finish[multi] - first_token[multi]) / (output_len[multi] - 1)


def _waste_breakdown(steps: dict[str, np.ndarray]) -> dict:
    """Time-averaged share of the cache per use; the shares sum to 1 by construction, since
    every step's categories account for every slot."""
    measured = ~np.isnan(np.array([steps[column] for column in KV_SLOT_COLUMNS], dtype=float)).any(axis=0)
    duration = steps["duration"][measured]
    slot_seconds = np.array([(steps[column][measured] * duration).sum() for column in KV_SLOT_COLUMNS])
    total = slot_seconds.sum()
    return {key: float(v / total) if total > 0 else float("nan") for key, v in zip(WASTE_KEYS, slot_seconds)}


#: The steady-state window skips this much of the arrivals' start (the vLLM paper skips the
#: first minute), or a tenth of the arrival span when that is shorter.
WARM_UP_S = 60.0


def steady_state(recorder: Recorder) -> dict:
    """Throughput in the steady state: completions while requests still arrive, after the
    warm-up, per second of that window. The whole-run figure also counts the drain after the
    last arrival, so an idle system reads below the offered rate; this one does not. And the
    normalized latency of the requests that arrive after the warm-up (the vLLM paper's
    measure: its first requests find an empty system)."""
    arrivals = recorder.arrival[~np.isnan(recorder.arrival)]
    first, last = (float(arrivals.min()), float(arrivals.max())) if len(arrivals) else (0.0, 0.0)
    start = first + min(WARM_UP_S, (last - first) / 10)
    window = last - start
    if window <= 0:  # a single arrival, or all at once: no steady state to measure
        keys = (
            "steady_window_s",
            "steady_throughput_req_s",
            "steady_throughput_output_tok_s",
            "steady_normalized_latency_s_per_token",
        )
        return dict.fromkeys(keys, float("nan"))
    completed = recorder.status == STATUS_COMPLETED
    inside = completed & (recorder.finish >= start) & (recorder.finish <= last)
    after_warm_up = completed & (recorder.arrival >= start)
    latency = recorder.finish[after_warm_up] - recorder.arrival[after_warm_up]
    return {
        "steady_window_s": window,
        "steady_throughput_req_s": float(inside.sum()) / window,
        "steady_throughput_output_tok_s": float(recorder.output_len[inside].sum()) / window,
        "steady_normalized_latency_s_per_token": float((latency / recorder.output_len[after_warm_up]).mean())
        if len(latency)
        else float("nan"),
    }


def served_summary(
    arrival: np.ndarray,
    first_token: np.ndarray,
    finish: np.ndarray,
    prompt_len: np.ndarray,
    output_len: np.ndarray,
    first_arrival: float,
) -> dict:
    """Throughput over the span from ``first_arrival`` to the last finish, and the latency
    distributions, of the completed requests given (as arrays): the part of a run's summary
    that its requests' timelines alone determine (``validate`` re-prices a measured campaign
    from them)."""
    e2e = finish - arrival
    span = float(finish.max() - first_arrival) if len(finish) else 0.0
    rate = lambda amount: amount / span if span > 0 else float("nan")  # noqa: E731
    return {
        "duration_s": span,
        "throughput_req_s": rate(len(finish)),
        "throughput_output_tok_s": rate(output_len.sum()),
        "throughput_total_tok_s": rate(output_len.sum() + prompt_len.sum()),
        **_percentiles(first_token - arrival, "ttft_s"),
        **_percentiles(time_per_output_token(first_token, finish, output_len), "tpot_s"),
        **_percentiles(e2e, "e2e_latency_s"),
        "normalized_latency_s_per_token": float((e2e / output_len).mean()) if len(finish) else float("nan"),
    }


def summarize(recorder: Recorder, num_blocks: int, num_replicas: int = 1) -> dict:
    """The metrics of a run: throughput, latency distributions, batch size, KV usage.
    ``busy_fraction`` is a replica's share of the span spent running steps, averaged over
    the ``num_replicas`` replicas (idle ones count as idle)."""
    done = recorder.status == STATUS_COMPLETED
    first_arrival = float(np.nanmin(recorder.arrival)) if len(recorder.arrival) else 0.0
    served = served_summary(
        recorder.arrival[done],
        recorder.first_token[done],
        recorder.finish[done],
        recorder.prompt_len[done],
        recorder.output_len[done],
        first_arrival,
    )
    span = served["duration_s"]

    steps = recorder.step_columns()
    num_steps = int(steps["steps"].sum())
    busy = float(steps["duration"].sum())
    if num_steps:
        mean_batch = float((steps["batch_size"] * steps["steps"]).sum() / num_steps)
        mean_kv = float((steps["kv_blocks_used"] * steps["duration"]).sum() / busy) / num_blocks
        peak_kv = float(steps["kv_blocks_used"].max()) / num_blocks
    else:
        mean_batch = mean_kv = peak_kv = 0.0
    return {
        "completed": int(done.sum()),
        "rejected": int((recorder.status == STATUS_REJECTED).sum()),
        **served,
        **steady_state(recorder),
        "mean_batch_size": mean_batch,
        "num_steps": num_steps,
        "num_step_events": len(recorder.steps),
        "busy_fraction": busy / (span * num_replicas) if span > 0 else float("nan"),
        # of the busy time, collectives between a tensor-parallel replica's GPUs
        "comm_fraction": float(steps["comm_s"].sum()) / busy if busy > 0 else float("nan"),
        "mean_kv_usage": mean_kv,
        "peak_kv_usage": peak_kv,
        "preemptions": int(recorder.preemptions.sum()),
        "recomputed_tokens": int(recorder.recomputed_tokens.sum()),
        **sharing_summary(recorder, steps),
        **_waste_breakdown(steps),
    }


def sharing_summary(recorder: Recorder, steps: dict[str, np.ndarray]) -> dict:
    """Copy-on-write, prefix-sharing and preemption counters, and the memory sharing saved.

    ``sharing_memory_saving`` = 1 - (time-averaged blocks used) / (time-averaged blocks the
    live sequences would hold if nothing were shared): a ratio of time averages, so busy
    periods weigh in proportion to their length. ``sharing_saving_per_step`` is the vLLM
    paper's Fig. 15 measure instead: 1 - 1 / (mean over engine steps holding blocks of
    logical / physical blocks), every step weighing the same.
    """
    c = recorder.counters
    logical = float((steps["kv_blocks_logical"] * steps["duration"]).sum())
    used = float((steps["kv_blocks_used"] * steps["duration"]).sum())
    lookups = c.prefix_lookup_blocks
    holding = steps["kv_blocks_used"] > 0
    held_steps = steps["steps"][holding]
    ratio = (steps["kv_blocks_logical"][holding] / steps["kv_blocks_used"][holding] * held_steps).sum()
    return {
        "sharing_memory_saving": 1 - used / logical if logical > 0 else 0.0,
        "sharing_saving_per_step": 1 - float(held_steps.sum() / ratio) if holding.any() else 0.0,
        "block_copies": c.block_copies,
        "forks": c.forks,
        "prefix_hit_rate": c.prefix_hit_blocks / lookups if lookups else float("nan"),
        "prefill_tokens_saved": c.prefill_tokens_saved,
        "preempted_by_swap": c.preempted_swap,
        "preempted_by_recompute": c.preempted_recompute,
        "swap_space_full_fallbacks": c.swap_space_full,
        "swap_out_blocks": c.swap_out_blocks,
        "swap_in_blocks": c.swap_in_blocks,
    }
