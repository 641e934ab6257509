"""Where one simulated event's wall time goes: microseconds per event, by part of the step.

Runs the Vidur setting of ``bench_sim.py`` (Llama-2-7B on an A100-80GB, paged, block 16,
Vidur's ShareGPT trace at 1.5 req/s) in-process, with a timer around each part of the step
protocol (``kvsim.engine.core``) and of the scheduler and cost model beneath it. A part's
time includes the parts it calls, so nested rows are shown indented under their parent;
"clock and loop" is what is left of the simulation: SimPy, the replica's loop, arrivals.
The timers themselves add about half a microsecond a call; compare rows from runs of this
same script, not with the whole-run figures of RESULTS.md.

    python benchmarks/profile_event.py [--requests 10000] [--repeats 3] [--scheduler v0|v1] [--markdown]

Point PYTHONPATH at another checkout to profile that version (the step protocol's method
names are the same since the engine core of issue 12).
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections import defaultdict
from pathlib import Path

from kvsim.config import SimConfig
from kvsim.cost.cost_model import CostModel
from kvsim.engine import core
from kvsim.experiments import run as run_module
from kvsim.policies.registry import available_policies
from kvsim.policies.scheduler import Scheduler

available_policies()  # imports every policy module, so the schedulers they build are known

REPO = Path(__file__).resolve().parents[1]
TRACE = REPO.parent / "shared" / "data" / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv"

# (label, class, method, depth): a method's time includes those indented below it.
PARTS = [
    ("begin step", core.EngineCore, "begin_step", 0),
    ("schedule the batch", Scheduler, "schedule", 1),
    ("headroom (fast-forward)", Scheduler, "headroom", 1),
    ("observe the cache", core.EngineCore, "observe_cache", 0),
    ("price the step (cost model)", CostModel, "plan_durations", 0),
    ("end step", core.EngineCore, "end_step", 0),
    ("advance sequences", Scheduler, "advance", 1),
    ("retire finished", Scheduler, "retire", 1),
    ("record the step", core.EngineCore, "record", 0),
    ("intake arrivals", core.EngineCore, "intake", 0),
]


def profile(num_requests: int, scheduler: str | None) -> tuple[dict[str, float], float, int]:
    spent: dict[str, float] = defaultdict(float)
    originals = []
    for label, cls, name, _ in PARTS:
        # the class and each subclass that overrides the method (the v1 scheduler's own)
        for owner in [cls, *(sub for sub in cls.__subclasses__() if name in vars(sub))]:
            method = getattr(owner, name)
            originals.append((owner, name, method))

            def timed(*args, _method=method, _label=label, **kwargs):
                start = time.perf_counter()
                try:
                    return _method(*args, **kwargs)
                finally:
                    spent[_label] += time.perf_counter() - start

            setattr(owner, name, timed)
    simulate, total = run_module.simulate, {}

    def timed_simulate(*args, **kwargs):
        start = time.perf_counter()
        result = simulate(*args, **kwargs)
        total["s"] = time.perf_counter() - start
        return result

    run_module.simulate = timed_simulate
    try:
        config = SimConfig(
            model="llama-2-7b",
            gpu="a100-80gb",
            trace=str(TRACE),
            rate=1.5,
            num_requests=num_requests,
            max_num_seqs=128,
            max_num_batched_tokens=4096,
            block_size=16,
            over_length="clip",
            policy="paged",
            **({"scheduler": scheduler} if scheduler else {}),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = run_module.run(config)
    finally:
        run_module.simulate = simulate
        for cls, name, method in originals:
            setattr(cls, name, method)
    return spent, total["s"], result.summary["num_step_events"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3, help="runs; each part's minimum is kept")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument(
        "--scheduler", default="v0", help="v0 or v1; 'none' for a checkout older than --scheduler (v0 only)"
    )
    args = parser.parse_args()
    scheduler = None if args.scheduler == "none" else args.scheduler
    runs = [profile(args.requests, scheduler) for _ in range(args.repeats)]
    events = runs[0][2]
    best = {label: min(r[0][label] for r in runs) for label, *_ in PARTS}
    simulated = min(r[1] for r in runs)
    top = sum(best[label] for label, _, _, depth in PARTS if depth == 0)
    rows = [(("  " * depth) + label, best[label]) for label, _, _, depth in PARTS]
    rows += [("clock and loop (the rest)", simulated - top), ("whole simulation", simulated)]
    if args.markdown:
        print(f"| part ({args.requests:,} requests, {events:,} events) | us per event |")
        print("|---|---|")
        for label, seconds in rows:
            print(f"| {label.replace('  ', '&nbsp;&nbsp;')} | {seconds / events * 1e6:.1f} |")
    else:
        print(
            f"{args.requests:,} requests, {events:,} step events; microseconds per event (min of {args.repeats})"
        )
        for label, seconds in rows:
            print(f"  {label:32s} {seconds / events * 1e6:8.1f}")


if __name__ == "__main__":
    main()
