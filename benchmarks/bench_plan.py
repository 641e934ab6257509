#!/usr/bin/env python3
"""How long `simcli plan` takes to answer issue 16's question on this machine.

    python benchmarks/bench_plan.py [--runs N] [--jobs J]

The question: how many A100-80GB replicas serve Llama-2-13B at 20 req/s of ShareGPT with p90
TTFT under 2 s and mean TPOT under 100 ms (the goal: under five minutes on a 2-core laptop).
Each run is a whole `simcli plan` process; it prints wall seconds, the CPU seconds of the
process and its workers (``os.wait4``), and the 1-minute load average before and after, since
other work on the machine stretches the wall time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

QUESTION = (
    "plan --model llama-2-13b --gpu a100-80gb --target-rate 20 --slo ttft:p90:2s --slo tpot:mean:100ms"
).split()


def timed_plan(jobs: int) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the process tree, the answer line) of one plan."""
    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-m", "kvsim.cli", *QUESTION, "--jobs", str(jobs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, COLUMNS="200"),
    )
    printed = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"simcli plan failed with status {os.waitstatus_to_exitcode(status)}")
    answer = next((line for line in printed.splitlines() if line.startswith("Answer:")), "(no answer)")
    return wall, usage.ru_utime + usage.ru_stime, answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; simcli {' '.join(QUESTION)} --jobs {args.jobs}")
    for run in range(args.runs):
        load_before = os.getloadavg()[0]
        wall, cpu, answer = timed_plan(args.jobs)
        print(
            f"run {run + 1}: wall {wall:.0f} s, CPU {cpu:.0f} s, load {load_before:.1f} -> "
            f"{os.getloadavg()[0]:.1f}; {answer}"
        )


if __name__ == "__main__":
    main()
