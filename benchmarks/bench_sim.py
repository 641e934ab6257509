"""Simulator speed: simulated requests per wall-second and peak memory.

Two modes.

``--vs-vidur``: kvsim beside Vidur (github.com/microsoft/vidur, run from a checkout of its own),
both as whole processes that write their outputs, alternated (Vidur, kvsim, kvsim with
fast-forward off, Vidur, kvsim, ...) so that drift in the machine's speed hits both alike. For
each size, a first Vidur run (not timed; it also warms Vidur's predictor cache and keeps its
per-batch metrics, to count iterations) generates the requests; kvsim replays exactly those
requests and arrival times (``--arrival trace``); then one kvsim warm-up run and RUNS counted
rounds. Wall seconds from a monotonic clock around each process; peak RSS and CPU seconds from
the OS (``os.wait4``). See benchmarks/RESULTS.md and benchmarks/vidur/.

    python benchmarks/bench_sim.py --vs-vidur --vidur-checkout /tmp/vidur \
        --vidur-python /tmp/vidur-venv/bin/python --sizes 1000,10000,30731:100000 --runs 5

(a size ``V:K`` runs Vidur at V requests and kvsim at K, the trace extended by Vidur's rule).

Default mode: each point in a fresh process, in-process timing of building the workload and
simulating (not interpreter start-up or imports), two settings, each under the v0 and v1
schedulers (their own default budgets, unless the setting sets one):

* paper:  OPT-13B on an A100-40GB, paged, block 16, built-in ShareGPT, 2 req/s (near saturation)
* vidur:  Llama-2-7B on an A100-80GB, paged, block 16, Vidur's ShareGPT trace
          (../shared/data/sharegpt_8k_filtered_stats_llama2_tokenizer.csv) at 1.5 req/s,
          over-length requests clipped the way Vidur clips them

    python benchmarks/bench_sim.py [--sizes 1000,10000,100000] [--markdown]

``--table results.json`` prints the side-by-side table of benchmarks/RESULTS.md from a
``--vs-vidur`` run's results.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VIDUR_TRACE = REPO.parent / "shared" / "data" / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv"

SETTINGS = {
    "paper": dict(model="opt-13b", gpu="a100-40gb", trace="sharegpt", rate=2.0),
    "vidur": dict(model="llama-2-7b", gpu="a100-80gb", trace=str(VIDUR_TRACE), rate=1.5, over_length="clip"),
}


def _point(setting: str, scheduler: str, num_requests: int, queue) -> None:
    from kvsim.config import SimConfig
    from kvsim.experiments.run import run

    config = SimConfig(
        **SETTINGS[setting], num_requests=num_requests, policy="paged", block_size=16, scheduler=scheduler
    )
    start = time.perf_counter()
    result = run(config)
    wall = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    s = result.summary
    queue.put(
        {
            "setting": setting,
            "scheduler": scheduler,
            "budget": result.policy_context.max_num_batched_tokens,
            "requests": num_requests,
            "wall_s": round(wall, 3),
            "requests_per_wall_s": round(num_requests / wall),
            "peak_rss_mib": round(peak_mib),
            "simulated_s": round(s["duration_s"], 1),
            "engine_steps": s["num_steps"],
            "step_events": s["num_step_events"],
            "throughput_req_s": round(s["throughput_req_s"], 3),
            "preemptions": s["preemptions"],
        }
    )


def measure(setting: str, scheduler: str, num_requests: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_point, args=(setting, scheduler, num_requests, queue))
    proc.start()
    row = queue.get()
    proc.join()
    return row


# ---- kvsim beside Vidur, whole processes -------------------------------------------------

HERE = Path(__file__).resolve().parent
KVSIM_ARGS = [  # Vidur's vllm replica scheduler is v0's: a prefill or a decode per step
    "--scheduler",
    "v0",
    "--model",
    "llama-2-7b",
    "--gpu",
    "a100-80gb",
    "--arrival",
    "trace",
    "--max-num-seqs",
    "128",
    "--max-num-batched-tokens",
    "4096",
    "--block-size",
    "16",
]


def timed(cmd: list[str], log: Path) -> dict:
    """Run one whole process; wall from a monotonic clock, peak RSS and CPU from the OS."""
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}; see {log}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mib": usage.ru_maxrss / 1024}


def kvsim_work(out: Path) -> dict:
    import csv

    summary = json.loads((out / "summary.json").read_text())["metrics"]
    with open(out / "iterations.csv", newline="") as f:
        steps = sum(int(row["steps"]) for row in csv.DictReader(f))
    return {
        "completed": summary["completed"],
        "iterations": steps,
        "events": summary["num_step_events"],
        "simulated_s": round(summary["duration_s"], 1),
    }


def vs_vidur(args) -> None:
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    vidur_sh = [str(HERE / "vidur" / "run_vidur.sh"), args.vidur_checkout, args.vidur_python]
    cache = str(work / "vidur_cache")
    rows = []
    for spec in args.sizes.split(","):
        n_vidur, _, n_kvsim = spec.partition(":")
        n_vidur, n_kvsim = int(n_vidur), int(n_kvsim or n_vidur)
        ref = work / f"vidur_ref_{n_vidur}"
        if not ref.is_dir():  # the first, untimed Vidur run: warms its cache, counts its batches
            timed(
                vidur_sh + [str(n_vidur), str(ref), cache, "--metrics_config_keep_individual_batch_metrics"],
                work / f"vidur_ref_{n_vidur}.log",
            )
        helper = [sys.executable, str(HERE / "vidur" / "vidur_arrivals.py"), str(ref)]
        arrivals = work / f"arrivals_{n_kvsim}.csv"
        subprocess.run(helper + [str(arrivals), "--extend", str(n_kvsim)], check=True)
        v_work = json.loads(
            subprocess.run(helper + ["--work"], check=True, capture_output=True, text=True).stdout
        )
        kvsim_cmd = lambda out: ["simcli", "run", *KVSIM_ARGS, "--trace", str(arrivals), "--out", str(out)]
        noff_cmd = lambda out: [
            sys.executable,
            str(HERE / "vidur" / "kvsim_no_ff.py"),
            "run",
            *KVSIM_ARGS,
            "--trace",
            str(arrivals),
            "--out",
            str(out),
        ]
        sides = {"Vidur": lambda out: vidur_sh + [str(n_vidur), str(out), cache], "kvsim": kvsim_cmd}
        if n_kvsim in args.no_ff_sizes:
            sides["kvsim, fast-forward off"] = noff_cmd
        for name, cmd in sides.items():  # kvsim warm-up (Vidur's is the reference run above)
            if name != "Vidur":
                out = work / f"warm_{n_kvsim}"
                shutil.rmtree(out, ignore_errors=True)
                timed(cmd(out), work / "warm.log")
        runs = {name: [] for name in sides}
        for i in range(args.runs):
            for name, cmd in sides.items():
                out = (
                    work
                    / f"run_{name.split(',')[0]}{'_noff' if ',' in name else ''}_{spec.replace(':', '_')}"
                )
                shutil.rmtree(out, ignore_errors=True)
                r = timed(cmd(out), work / f"{out.name}.log")
                runs[name].append(r)
                print(
                    f"{spec} {name} run {i + 1}: {r['wall_s']:.2f} s, {r['peak_rss_mib']:.0f} MiB", flush=True
                )
        for name, rs in runs.items():
            n = n_vidur if name == "Vidur" else n_kvsim
            w = (
                v_work
                if name == "Vidur"
                else kvsim_work(work / f"run_kvsim{'_noff' if ',' in name else ''}_{spec.replace(':', '_')}")
            )
            walls = [r["wall_s"] for r in rs]
            med, best = statistics.median(walls), min(walls)
            row = {
                "simulator": name,
                "requests": n,
                "runs": len(rs),
                "wall_min_s": round(best, 2),
                "wall_median_s": round(med, 2),
                "wall_max_s": round(max(walls), 2),
                "req_per_s_median": round(n / med, 1),
                "req_per_s_best": round(n / best, 1),
                "iter_per_s_median": round(w["iterations"] / med) if w.get("iterations") else None,
                "peak_rss_mib_median": round(statistics.median(r["peak_rss_mib"] for r in rs)),
                "peak_rss_mib_max": round(max(r["peak_rss_mib"] for r in rs)),
                "cpu_s_median": round(statistics.median(r["cpu_s"] for r in rs), 2),
                **w,
                "iter_per_request": round(w["iterations"] / w["completed"], 2)
                if w.get("iterations")
                else None,
            }
            if name != "Vidur":  # pair by pair: (kvsim req/s) / (Vidur req/s) in the same round
                ratios = [
                    (n_kvsim / r["wall_s"]) / (n_vidur / v["wall_s"]) for r, v in zip(rs, runs["Vidur"])
                ]
                row["req_s_ratio_vs_vidur_min"] = round(min(ratios), 1)
                row["req_s_ratio_vs_vidur_median"] = round(statistics.median(ratios), 1)
            rows.append({"size": spec, **row})
            print(json.dumps(rows[-1]), flush=True)
    (work / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"wrote {work / 'results.json'}")


def vidur_table(rows: list[dict]) -> str:
    """The side-by-side table of benchmarks/RESULTS.md, from a ``--vs-vidur`` results.json."""
    header = (
        "| size | simulator | runs | wall s, median (min) | CPU s, median | requests / wall-s "
        "| iterations / wall-s | peak RSS MiB | iterations | iterations / request | step events "
        "| simulated s | completed | ratio vs Vidur, median (min) |"
    )
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for r in rows:
        ratio = (
            f"{r['req_s_ratio_vs_vidur_median']}× ({r['req_s_ratio_vs_vidur_min']}×)"
            if "req_s_ratio_vs_vidur_median" in r
            else "—"
        )
        cells = [
            r["size"],
            r["simulator"],
            r["runs"],
            f"{r['wall_median_s']:.2f} ({r['wall_min_s']:.2f})",
            f"{r['cpu_s_median']:.2f}",
            f"{r['req_per_s_median']:,.0f}",
            f"{r['iter_per_s_median']:,}",
            r["peak_rss_mib_median"],
            f"{r['iterations']:,}",
            r["iter_per_request"],
            f"{r['events']:,}" if r.get("events") else "—",
            f"{r['simulated_s']:,.1f}",
            f"{r['completed']:,}",
            ratio,
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--settings", default="paper,vidur")
    parser.add_argument("--schedulers", default="v0,v1", help="each point under each (default mode)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="fresh processes per point; the fastest (default mode)"
    )
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--vs-vidur", action="store_true", help="kvsim beside Vidur, whole processes")
    parser.add_argument("--vidur-checkout", default="/tmp/vidur")
    parser.add_argument("--vidur-python", default="/tmp/vidur-venv/bin/python")
    parser.add_argument("--runs", type=int, default=5, help="counted rounds (--vs-vidur)")
    parser.add_argument(
        "--no-ff-sizes", default="1000,10000", help="kvsim sizes also run with fast-forward off (--vs-vidur)"
    )
    parser.add_argument("--work", default="/tmp/kvsim-vs-vidur", help="scratch folder (--vs-vidur)")
    parser.add_argument("--table", type=Path, help="print RESULTS.md's table from a --vs-vidur results.json")
    args = parser.parse_args()
    if args.table:
        print(vidur_table(json.loads(args.table.read_text())))
        return
    if args.vs_vidur:
        args.no_ff_sizes = {int(n) for n in args.no_ff_sizes.split(",") if n}
        if args.sizes == "1000,10000,100000":
            args.sizes = "1000,10000,30731:100000"
        vs_vidur(args)
        return
    rows = [
        min(
            (measure(setting, scheduler, int(n)) for _ in range(args.repeats)),  # fastest of the repeats
            key=lambda row: row["wall_s"],
        )
        for setting in args.settings.split(",")
        for n in args.sizes.split(",")
        for scheduler in args.schedulers.split(",")
    ]
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
