"""Vidur's generated requests as a kvsim trace file, and the work a Vidur run did.

    python vidur_arrivals.py VIDUR_OUT_DIR ARRIVALS.csv [--extend N] [--seed S]
    python vidur_arrivals.py VIDUR_OUT_DIR --work

VIDUR_OUT_DIR is a run's --metrics_config_output_dir (the newest timestamped folder inside is
read). The CSV has Vidur's arrival times and (clipped) token counts, one row per request, in
arrival order: replayed by `simcli run --arrival trace`, kvsim serves exactly Vidur's requests.

--extend N continues the trace to N requests the way Vidur's generators would if its length
trace did not run out: gaps drawn as Vidur's Poisson generator draws them (exponential at 1.5
req/s, each capped at 3 / 1.5 s), lengths taken again from Vidur's rows in the same order.

--work prints what the run simulated: batches (model iterations; needs a run made with
--metrics_config_keep_individual_batch_metrics), completed requests and the simulated span.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

QPS = 1.5


def run_dir(out: str) -> Path:
    runs = sorted(p for p in Path(out).iterdir() if p.is_dir())
    if not runs:
        sys.exit(f"{out}: no Vidur run folder")
    return runs[-1]


def requests(folder: Path) -> pd.DataFrame:
    metrics = pd.read_csv(folder / "request_metrics.csv").sort_values("Request Id")
    arrivals = pd.read_csv(folder / "plots" / "request_arrival_time_series.csv")["Time (sec)"]
    times = np.sort(arrivals.to_numpy())
    if len(times) != len(metrics):
        sys.exit(f"{folder}: {len(times)} arrivals but {len(metrics)} requests")
    return pd.DataFrame(
        {
            "arrived_at": times,
            "num_prefill_tokens": metrics["request_num_prefill_tokens"].to_numpy(),
            "num_decode_tokens": metrics["request_num_decode_tokens"].to_numpy(),
        }
    )


def extend(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    more = n - len(frame)
    if more <= 0:
        return frame.head(n)
    rng = np.random.default_rng(seed)
    gaps = np.minimum(rng.exponential(1 / QPS, more), 3 / QPS)
    times = frame["arrived_at"].iloc[-1] + np.cumsum(gaps)
    rows = np.arange(len(frame), n) % len(frame)
    tail = pd.DataFrame(
        {
            "arrived_at": times,
            "num_prefill_tokens": frame["num_prefill_tokens"].to_numpy()[rows],
            "num_decode_tokens": frame["num_decode_tokens"].to_numpy()[rows],
        }
    )
    return pd.concat([frame, tail], ignore_index=True)


def work(folder: Path) -> dict:
    metrics = pd.read_csv(folder / "request_metrics.csv")
    batches_file = folder / "batch_metrics.csv"
    batches = pd.read_csv(batches_file) if batches_file.exists() else None
    arrivals = np.sort(
        pd.read_csv(folder / "plots" / "request_arrival_time_series.csv")["Time (sec)"].to_numpy()
    )
    completions = pd.read_csv(folder / "plots" / "request_completion_time_series.csv")["Time (sec)"]
    span = arrivals[-1] - arrivals[0]
    return {
        "completed": int(len(metrics)),
        "iterations": None if batches is None else int(len(batches)),
        "mean_batch_size": None if batches is None else round(float(batches["batch_size"].mean()), 2),
        "simulated_s": round(float(completions.max()), 1),
        "offered_rate": round((len(arrivals) - 1) / span, 4),
        "restarts": int(metrics["request_num_restarts"].sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vidur_out")
    parser.add_argument("arrivals_csv", nargs="?")
    parser.add_argument("--extend", type=int)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work", action="store_true")
    args = parser.parse_args()
    folder = run_dir(args.vidur_out)
    if args.work:
        print(json.dumps(work(folder)))
        return
    frame = requests(folder)
    if args.extend:
        frame = extend(frame, args.extend, args.seed)
    frame.to_csv(args.arrivals_csv, index=False)
    span = frame["arrived_at"].iloc[-1] - frame["arrived_at"].iloc[0]
    print(f"{args.arrivals_csv}: {len(frame)} requests, offered {(len(frame) - 1) / span:.4f} req/s")


if __name__ == "__main__":
    main()
