"""`simcli run --timeline FILE` writes a valid trace-event file (what Perfetto and chrome://tracing
load) holding every step and every request of the run; `--plots` writes the run's figures."""

import json
from collections import defaultdict

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kvsim.cli import EXIT_BAD_INPUT, app

runner = CliRunner()
US = 1e6
# What the trace-event format requires of each kind ("phase") of event kvsim writes.
REQUIRED = {
    "X": {"name", "ph", "pid", "tid", "ts", "dur"},  # complete slice
    "C": {"name", "ph", "pid", "ts", "args"},  # counter
    "b": {"name", "ph", "pid", "ts", "cat"},  # nestable async begin (plus id or id2)
    "e": {"name", "ph", "pid", "ts", "cat"},  # nestable async end
    "i": {"name", "ph", "pid", "ts", "s"},  # instant
    "M": {"name", "ph", "pid", "args"},  # metadata
}


def strict_load(text: str) -> dict:
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def check_trace_format(events: list[dict]) -> dict:
    """Asserts the trace-event format's rules; returns each async slice as
    (pid, id, name) -> [(begin ts, end ts), ...]."""
    slices_by_track = defaultdict(list)
    counters = defaultdict(list)
    open_async = defaultdict(list)
    async_slices = defaultdict(list)
    for event in events:
        phase = event["ph"]
        assert phase in REQUIRED, event
        missing = REQUIRED[phase] - event.keys()
        assert not missing, (missing, event)
        if phase == "M":
            assert event["name"] in ("process_name", "thread_name", "process_sort_index")
            continue
        assert isinstance(event["ts"], (int, float)) and event["ts"] >= 0, event
        if phase == "X":
            assert event["dur"] >= 0, event
            slices_by_track[(event["pid"], event["tid"])].append((event["ts"], event["dur"]))
        elif phase == "C":
            assert event["args"] and all(isinstance(v, (int, float)) for v in event["args"].values()), event
            counters[(event["pid"], event["name"])].append(event["ts"])
        elif phase == "i":
            assert event["s"] in ("g", "p", "t"), event
        else:
            assert ("id" in event) != ("id2" in event), event
            key = (event["cat"], event["pid"], json.dumps(event.get("id", event.get("id2"))))
            stack = open_async[key]
            if phase == "b":
                stack.append((event["name"], event["ts"]))
            else:
                assert stack, f"async end without a begin: {event}"
                name, begin = stack.pop()
                assert name == event["name"] and event["ts"] >= begin, (name, event)
                async_slices[(event["pid"], key[2], name)].append((begin, event["ts"]))
    for track, slices in slices_by_track.items():
        starts = [ts for ts, _ in slices]
        assert starts == sorted(starts), f"slices of {track} out of time order"
        for (ts, dur), (next_ts, _) in zip(slices, slices[1:]):
            assert ts + dur <= next_ts + 1e-3, f"overlapping slices on {track} at {ts}"
    for track, times in counters.items():
        assert times == sorted(times), f"counter {track} out of time order"
    assert not any(open_async.values()), "async slices left open"
    return async_slices


def run_with_timeline(tmp_path, *args) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    out, trace = tmp_path / "run", tmp_path / "timeline.json"
    result = runner.invoke(app, ["run", *args, "--out", str(out), "--timeline", str(trace)])
    assert result.exit_code == 0, result.output
    return (
        strict_load(trace.read_text()),
        pd.read_csv(out / "requests.csv"),
        pd.read_csv(out / "iterations.csv"),
    )


def check_run_in_trace(doc: dict, requests: pd.DataFrame, steps: pd.DataFrame, replicas: int) -> None:
    events = doc["traceEvents"]
    async_slices = check_trace_format(events)
    # One step slice per recorded step (or run of steps), on its replica, lasting as long.
    slices = [e for e in events if e["ph"] == "X"]
    assert len(slices) == len(steps)
    for replica in range(replicas):
        mine = steps[steps.replica == replica]
        on_track = [e for e in slices if e["pid"] == replica]
        assert len(on_track) == len(mine)
        assert abs(sum(e["dur"] for e in on_track) - US * mine.duration.sum()) < 1e-3 * max(1, len(mine))
        assert sum(e["args"]["steps"] for e in on_track) == mine.steps.sum()
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert {f"replica {i}" for i in range(replicas)} <= names
    # Every request: a completed one as an async slice from arrival to finish on its replica,
    # its phases inside it; a rejected one as an instant with its reason.
    lifetimes = {name: spans for (pid, _, name), spans in async_slices.items() if name.startswith("request ")}
    for r in requests.itertuples():
        if r.status == "completed":
            (begin, end), *more = lifetimes[f"request {r.request_id}"]
            assert not more
            assert abs(begin - US * r.arrival) < 1e-2 and abs(end - US * r.finish) < 1e-2
        else:
            rejected = [e for e in events if e["ph"] == "i" and e["args"]["request_id"] == r.request_id]
            assert len(rejected) == 1 and rejected[0]["args"]["reason"] == r.reject_reason
    assert len(lifetimes) == (requests.status == "completed").sum()
    # Each phase lies inside its request's lifetime.
    for (pid, rid, name), spans in async_slices.items():
        if name in ("queued", "prefill", "decode"):
            outer = [
                s
                for (p, i, n), ss in async_slices.items()
                if (p, i) == (pid, rid) and n.startswith("request ")
                for s in ss
            ]
            assert all(any(o[0] <= b and e <= o[1] for o in outer) for b, e in spans)


@settings(max_examples=6, deadline=None)
@given(
    rate=st.sampled_from([1.0, 4.0, 16.0]),
    replicas=st.integers(1, 3),
    scheduler=st.sampled_from(["v0", "v1"]),
    seed=st.integers(0, 1000),
)
def test_the_timeline_is_a_valid_trace_of_every_step_and_request(
    tmp_path_factory, rate, replicas, scheduler, seed
):
    tmp_path = tmp_path_factory.mktemp("timeline")
    args = ["--num-requests", "40", "--rate", str(rate), "--num-replicas", str(replicas)]
    args += ["--scheduler", scheduler, "--seed", str(seed)]
    doc, requests, steps = run_with_timeline(tmp_path, *args)
    check_run_in_trace(doc, requests, steps, replicas)
    assert doc["otherData"]["config"]["num_replicas"] == replicas


def test_rejected_and_preempted_requests_are_in_the_timeline(tmp_path):
    # v0 with a budget of 512 tokens rejects every longer prompt; a small cache preempts.
    args = ["--num-requests", "60", "--rate", "20", "--scheduler", "v0", "--max-num-batched-tokens", "512"]
    doc, requests, steps = run_with_timeline(tmp_path, *args, "--gpu-memory-utilization", "0.7")
    assert (requests.status == "rejected").any() and requests.preemptions.sum() > 0
    check_run_in_trace(doc, requests, steps, 1)


def test_plots_are_written_beside_the_run(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", "--num-requests", "50", "--rate", "4", "--out", str(out), "--plots"])
    assert result.exit_code == 0, result.output
    for name in ("kv_and_queue.png", "latency_cdf.png", "request_scatter.png"):
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000, name


def test_plots_without_out_and_a_directory_as_timeline_are_refused(tmp_path):
    for args, message in (
        (["--plots"], "--plots needs --out"),
        (["--timeline", str(tmp_path)], f"--timeline {tmp_path} is a directory"),
    ):
        result = runner.invoke(app, ["run", "--num-requests", "5", *args])
        assert result.exit_code == EXIT_BAD_INPUT and message in result.stderr, result.output
