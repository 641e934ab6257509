"""A run as a trace for Perfetto (ui.perfetto.dev) or chrome://tracing: the trace-event JSON format.

Built after the run from the tables it recorded (``iterations.csv``'s steps, ``requests.csv``'s
requests), so that tracing costs the simulation nothing. Each replica is a process with:

- a ``steps`` thread: every engine step as a complete slice named by its batch (a run of
  identical decode steps, which the simulator charges as one event, is one slice);
- counter tracks ``KV blocks used`` and ``waiting requests``, as each step left them;
- each request routed to it as an async slice from arrival to its last token, with its phases
  nested inside: ``queued`` (arrival to first scheduled), ``prefill`` (to the first token) and
  ``decode`` (to the last). A preempted request stays in its phase; its args count preemptions.

Rejected requests are instant events on a ``rejected`` process, with the reason.
Times are microseconds of simulated time, as the format wants.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from kvsim.engine.metrics import KV_SLOT_COLUMNS, STATUS_COMPLETED, STATUS_REJECTED, STEP_COLUMNS

US_PER_S = 1e6
STEPS_THREAD = 0
REQUEST_CATEGORY = "request"
KV_COUNTER, QUEUE_COUNTER = "KV blocks used", "waiting requests"
# Step columns that a slice carries as args: all but its place and length (the slice itself)
# and the cache's slot breakdown (the KV counter track shows the cache).
STEP_ARGS = tuple(
    column
    for column in STEP_COLUMNS
    if column not in ("replica", "start", "duration", "kv_blocks_logical", *KV_SLOT_COLUMNS)
)


def _us(seconds: float) -> float:
    # Nanosecond resolution keeps the file small and its bytes stable.
    return round(float(seconds) * US_PER_S, 3)


def _plain(value):
    """A JSON-safe scalar: numpy types as Python ones, NaN (unmeasured) as null."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def step_label(step) -> str:
    """A step's slice name: its kind and its batch, the first thing one looks for in a timeline."""
    if step.kind == "prefill":
        return f"prefill {step.batch_size} req, {step.tokens} tok"
    if step.kind == "decode":
        return f"decode {step.num_seqs} seqs" + (f" x{step.steps} steps" if step.steps > 1 else "")
    return f"mixed {step.num_chunks} chunks + {step.decode_tokens} decodes, {step.tokens} tok"


def _metadata(pid: int, name: str, thread: str | None) -> list[dict]:
    events = [
        {"name": "process_name", "ph": "M", "pid": pid, "tid": STEPS_THREAD, "args": {"name": name}},
        {
            "name": "process_sort_index",
            "ph": "M",
            "pid": pid,
            "tid": STEPS_THREAD,
            "args": {"sort_index": pid},
        },
    ]
    if thread is not None:
        events.append(
            {"name": "thread_name", "ph": "M", "pid": pid, "tid": STEPS_THREAD, "args": {"name": thread}}
        )
    return events


def _step_events(steps: pd.DataFrame) -> list[dict]:
    events = []
    for step in steps.itertuples(index=False):
        pid, end = int(step.replica), step.start + step.duration
        events.append(
            {
                "name": step_label(step),
                "cat": step.kind,
                "ph": "X",
                "pid": pid,
                "tid": STEPS_THREAD,
                "ts": _us(step.start),
                # From the rounded ends, so that back-to-back steps stay back to back.
                "dur": round(_us(end) - _us(step.start), 3),
                "args": {column: _plain(getattr(step, column)) for column in STEP_ARGS},
            }
        )
        for counter, value in ((KV_COUNTER, step.kv_blocks_used), (QUEUE_COUNTER, step.num_waiting)):
            events.append(
                {"name": counter, "ph": "C", "pid": pid, "ts": _us(end), "args": {"value": _plain(value)}}
            )
    return events


def _async(phase: str, name: str, request_id: int, pid: int, ts: float, args: dict | None = None) -> dict:
    event = {
        "name": name,
        "cat": REQUEST_CATEGORY,
        "ph": phase,
        "id2": {"local": hex(request_id)},  # process-scoped: the request shows under its replica
        "pid": pid,
        "tid": STEPS_THREAD,
        "ts": _us(ts),
    }
    if args:
        event["args"] = args
    return event


def _request_events(requests: pd.DataFrame, rejected_pid: int) -> list[dict]:
    events = []
    for r in requests.itertuples(index=False):
        rid = int(r.request_id)
        if r.status == STATUS_REJECTED:
            events.append(
                {
                    "name": f"rejected request {rid}",
                    "cat": REQUEST_CATEGORY,
                    "ph": "i",
                    "s": "p",
                    "pid": rejected_pid,
                    "tid": STEPS_THREAD,
                    "ts": _us(r.arrival),
                    "args": {"request_id": rid, "reason": r.reject_reason},
                }
            )
            continue
        if r.status != STATUS_COMPLETED:
            continue
        pid, name = int(r.replica), f"request {rid}"
        args = {
            "request_id": rid,
            "prompt_len": int(r.prompt_len),
            "output_len": int(r.output_len),
            "ttft_s": _plain(r.ttft),
            "e2e_latency_s": _plain(r.e2e_latency),
            "preemptions": int(r.preemptions),
        }
        events.append(_async("b", name, rid, pid, r.arrival, args))
        for phase, start, end in (
            ("queued", r.arrival, r.admitted),
            ("prefill", r.admitted, r.first_token),
            ("decode", r.first_token, r.finish),
        ):
            if end > start:
                events += [_async("b", phase, rid, pid, start), _async("e", phase, rid, pid, end)]
        events.append(_async("e", name, rid, pid, r.finish))
    return events


def trace_events(requests: pd.DataFrame, steps: pd.DataFrame, num_replicas: int) -> list[dict]:
    """Every event of the trace: metadata first, then the timed events in time order (a stable
    sort, so a request's nested begins and ends at one instant keep their order)."""
    rejected_pid = num_replicas
    metadata = [e for pid in range(num_replicas) for e in _metadata(pid, f"replica {pid}", "steps")]
    if (requests["status"] == STATUS_REJECTED).any():
        metadata += _metadata(rejected_pid, "rejected", None)
    timed = _step_events(steps) + _request_events(requests, rejected_pid)
    return metadata + sorted(timed, key=lambda event: event["ts"])


def write_timeline(
    requests: pd.DataFrame, steps: pd.DataFrame, num_replicas: int, path: Path, about: dict
) -> Path:
    """Write the trace to ``path``, one event per line; ``about`` (what was simulated) goes in
    the file's ``otherData``, which Perfetto shows as the trace's metadata."""
    events = trace_events(requests, steps, num_replicas)
    lines = ",\n".join(json.dumps(event, separators=(",", ":")) for event in events)
    header = json.dumps({"displayTimeUnit": "ms", "otherData": about}, separators=(",", ":"))
    path.write_text(f'{header[:-1]},"traceEvents":[\n{lines}\n]}}\n')
    return path
