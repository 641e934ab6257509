"""Sweep speed: points per minute of `simcli sweep` with local worker processes and on a local Ray.

Each configuration runs the same grid as a whole `simcli sweep` process (start-up, imports,
Ray's start and stop, writing the CSV all inside the timed span), alternated round by round
so that drift in the machine's speed hits all alike; the table gives the best and the median
round. The grid: OPT-13B on an A100-40GB (the defaults), 1,000 built-in ShareGPT requests per
point, rates 0.5-2 req/s x block sizes 8, 16, 32 (12 points). Every configuration's CSV is
checked to be the same bytes as the first's: the executors give the same rows.

    python benchmarks/bench_sweep.py [--rounds 3] [--json benchmarks/results/sweep_HOST.json]

Ray configurations are left out when ray is not importable (pip install -e ".[ray]").
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRID = ["--rate", "0.5,1,1.5,2", "--block-size", "8,16,32", "--num-requests", "1000"]
POINTS = 12


def configurations() -> list[tuple[str, list[str]]]:
    cores = os.cpu_count() or 1
    jobs = sorted({1, 2, cores})
    found = [(f"local, {j} process{'es' * (j > 1)}", ["--jobs", str(j)]) for j in jobs]
    if importlib.util.find_spec("ray") is not None:
        found += [
            (f"local Ray, {j} CPU{'s' * (j > 1)}", ["--executor", "ray", "--jobs", str(j)]) for j in jobs
        ]
    return found


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
        platform.processor(),
    )


def timed_sweep(args: list[str], out: Path) -> float:
    command = [sys.executable, "-m", "kvsim.cli", "sweep", *GRID, *args, "--out", str(out)]
    started = time.monotonic()
    subprocess.run(command, check=True, cwd=REPO, capture_output=True)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    configs = configurations()
    seconds: dict[str, list[float]] = {name: [] for name, _ in configs}
    reference = None
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, extra in configs:
                out = Path(tmp) / f"{round_}-{len(seconds[name])}-{name.replace(' ', '_')}.csv"
                seconds[name].append(timed_sweep(extra, out))
                reference = reference or out.read_bytes()
                if out.read_bytes() != reference:
                    raise SystemExit(f"{name}: the sweep's CSV differs from the first configuration's")
                print(f"round {round_ + 1}: {name}: {seconds[name][-1]:.1f} s", file=sys.stderr)
    rows = [
        {
            "configuration": name,
            "best_s": min(times),
            "median_s": statistics.median(times),
            "points_per_minute_best": 60 * POINTS / min(times),
            "points_per_minute_median": 60 * POINTS / statistics.median(times),
        }
        for name, times in seconds.items()
    ]
    print("| configuration | best s | median s | points/min (best) | points/min (median) |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['configuration']} | {row['best_s']:.1f} | {row['median_s']:.1f} "
            f"| {row['points_per_minute_best']:.1f} | {row['points_per_minute_median']:.1f} |"
        )
    if args.json:
        ray = importlib.util.find_spec("ray") is not None
        document = {
            "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "cpu": cpu_name(), "python": platform.python_version()},
            "load_average_after": os.getloadavg(),
            "ray": __import__("ray").__version__ if ray else None,
            "commit": subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
            ).stdout.strip(),
            "grid": GRID,
            "points": POINTS,
            "rounds": args.rounds,
            "results": rows,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
