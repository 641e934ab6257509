"""Simulator speed: simulated requests per wall-second and peak memory.

Two settings, each at several sizes, every point in a fresh process so that peak memory
(ru_maxrss) belongs to that point alone:

* paper:  OPT-13B on an A100-40GB, paged, block 16, built-in ShareGPT, 2 req/s (near saturation)
* vidur:  Llama-2-7B on an A100-80GB, paged, block 16, Vidur's ShareGPT trace
          (../shared/data/sharegpt_8k_filtered_stats_llama2_tokenizer.csv) at 1.5 req/s,
          over-length requests clipped the way Vidur clips them

    python benchmarks/bench_sim.py [--sizes 1000,10000,100000] [--markdown]

Wall time covers building the workload and simulating (what a sweep point costs), not
interpreter start-up or imports.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VIDUR_TRACE = REPO.parent / "shared" / "data" / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv"

SETTINGS = {
    "paper": dict(model="opt-13b", gpu="a100-40gb", trace="sharegpt", rate=2.0),
    "vidur": dict(model="llama-2-7b", gpu="a100-80gb", trace=str(VIDUR_TRACE), rate=1.5,
                  over_length="clip"),
}


def _point(setting: str, num_requests: int, queue) -> None:
    from kvsim.config import SimConfig
    from kvsim.experiments.run import run

    config = SimConfig(**SETTINGS[setting], num_requests=num_requests, policy="paged", block_size=16)
    start = time.perf_counter()
    result = run(config)
    wall = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    s = result.summary
    queue.put({"setting": setting, "requests": num_requests, "wall_s": round(wall, 3),
               "requests_per_wall_s": round(num_requests / wall),
               "peak_rss_mib": round(peak_mib), "simulated_s": round(s["duration_s"], 1),
               "engine_steps": s["num_steps"], "step_events": s["num_step_events"],
               "throughput_req_s": round(s["throughput_req_s"], 3),
               "preemptions": s["preemptions"]})


def measure(setting: str, num_requests: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_point, args=(setting, num_requests, queue))
    proc.start()
    row = queue.get()
    proc.join()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--settings", default="paper,vidur")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    rows = [measure(setting, int(n)) for setting in args.settings.split(",")
            for n in args.sizes.split(",")]
    machine = f"{platform.processor() or platform.machine()}, {mp.cpu_count()} cores, Python {platform.python_version()}"
    if args.markdown:
        columns = list(rows[0])
        print(f"Machine: {machine}\n")
        print("| " + " | ".join(columns) + " |")
        print("|" + "---|" * len(columns))
        for row in rows:
            print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    else:
        print(json.dumps({"machine": machine, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
