#!/usr/bin/env python3
"""Regenerate every figure that README.md and docs/*.md quote, from the commands that give it.

    python docs/regenerate.py                  # rerun everything, rewrite the figures in place
    python docs/regenerate.py --check          # rerun, change nothing, exit 1 listing what drifted
    python docs/regenerate.py --cheap --check  # only the figures that take seconds (CI runs this)
    python docs/regenerate.py --list           # every figure: its command, cheap or not

A quoted figure sits between markers, inline or as a block of lines:

    <!-- figure: NAME -->VALUE<!-- /figure -->

    <!-- begin: NAME -->
    ...lines...
    <!-- end: NAME -->

Each NAME is defined below: the simcli commands (or kvsim functions) it comes from and how it is
written. Every value is recomputed and written between its markers; the text outside markers is
never touched. Conclusions that depend on figures (who saturates where, which preemption mode
wins and by how much) are written here, from the figures. Besides the markers, the script writes
the example of `simcli compare --out` in docs/compare/ (compare.csv and the three PNGs).

Deterministic: the same code gives the same bytes (the simulator is seeded; no timings are
quoted). PNGs carry their matplotlib version; with another version the pixels can differ, so a
PNG drawn by another matplotlib is reported, not failed.

Simulations run as `simcli` subprocesses (the interpreter running this script, `-m kvsim.cli`),
so what is quoted is what a user sees. Workload figures read ../shared/data (or $KVSIM_DATA);
without it they are skipped.

Not regenerated here, and dated where they are quoted: GPU measurements of record (kernels,
validation campaigns, benchmarks/RESULTS.md). Shipped profiles' own fit reports and the
cross-GPU transfer errors are recomputed from the profile files in the repository.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import io
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("KVSIM_DATA", ROOT.parent / "shared" / "data"))


def markdown_files() -> list[Path]:
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        ROOT / "docs" / "validation" / "README.md",
    ]


# -- sources: the commands figures come from ------------------------------------------------------


@dataclass(frozen=True)
class Simcli:
    """`simcli VERB ARGS`; its subclass says what is read of it (see ``_run``)."""

    verb: ClassVar[str]
    args: tuple[str, ...] = ()
    cheap: bool = False
    needs_data: bool = False

    @property
    def command(self) -> str:
        return " ".join((f"simcli {self.verb}", *self.args))


@dataclass(frozen=True)
class Sim(Simcli):
    """`simcli run ARGS`: what it prints (its summary table) and its summary.json."""

    verb = "run"
    cheap: bool = True


@dataclass(frozen=True)
class Compare(Simcli):
    """`simcli compare ARGS --out DIR`: compare.csv and the figures it writes."""

    verb = "compare"


@dataclass(frozen=True)
class RunFiles(Simcli):
    """`simcli run ARGS --out DIR` with --plots or --timeline DIR/NAME: the files it writes."""

    verb = "run"


@dataclass(frozen=True)
class Local:
    """A computation in this process (kvsim's API, profile files, the shared data)."""

    name: str
    fn: Callable = field(compare=False, hash=False)
    command: str = ""
    cheap: bool = True
    needs_data: bool = False


def _args(text: str) -> tuple[str, ...]:
    return tuple(text.split())


DEFAULT = Sim()
RATE_2_4 = Sim(_args("--rate 2.4"))
N4 = Sim(_args("--num-requests 500 --rate 1 --n 4"))
N4_SWAP = Sim(_args("--num-requests 500 --rate 1 --n 4 --preemption swap"))
BEAM = Sim(_args("--num-requests 500 --rate 1 --beam-width 4"), cheap=False)
BEAM_ORACLE = Sim(_args("--num-requests 500 --rate 1 --beam-width 4 --policy orca-oracle"), cheap=False)
PREFIX = Sim(_args("--num-requests 1000 --rate 2 --prefix-len 512 --scheduler v0"))
CHAT = Sim(_args("--num-requests 1000 --rate 2 --trace chatbot --scheduler v0"))
CHAT_CACHED = Sim(_args("--num-requests 1000 --rate 2 --trace chatbot --scheduler v0 --prefix-caching"))
RATE_4 = Sim(_args("--num-requests 1000 --rate 4 --scheduler v0"))
RATE_4_SWAP = Sim(_args("--num-requests 1000 --rate 4 --scheduler v0 --preemption swap"))
BEAM_2 = Sim(_args("--num-requests 500 --rate 2 --beam-width 4"), cheap=False)
BEAM_2_SWAP = Sim(_args("--num-requests 500 --rate 2 --beam-width 4 --preemption swap"), cheap=False)
POLICIES = Compare(
    _args(
        "--policies paged,orca-oracle,orca-pow2,orca-max,ft --trace sharegpt "
        "--rate 0.5,1,1.5,2 --num-requests 3000"
    )
)
BEAM_POLICIES = Compare(
    _args("--policies paged,orca-oracle --beam-width 4 --trace sharegpt --rate 0.5,1 --num-requests 500")
)


def _profiles() -> dict[str, dict]:
    """Every shipped profile, by name (without its measurements: only what is quoted)."""
    from kvsim.cost.profile import shipped_profiles

    out = {}
    for path in shipped_profiles():
        doc = json.loads(path.read_text())
        doc.pop("measurements", None)
        out[path.stem] = doc
    return out


def _transfer() -> list[dict]:
    """benchmarks/calibration/transfer_check.py's results (it recomputes them from the profiles)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "transfer.json"
        _call(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "calibration" / "transfer_check.py"),
                "--json",
                str(out),
            ]
        )
        return json.loads(out.read_text())


def _describe(prompt: np.ndarray, output: np.ndarray) -> dict[str, float]:
    """derive_builtin's statistics: means, numpy quantiles, Spearman rank correlation."""
    from scipy import stats

    row = {"spearman": float(stats.spearmanr(prompt, output).statistic)}
    for name, v in (("input", prompt), ("output", output)):
        row[f"{name} mean"] = float(v.mean())
        row |= {f"{name} p{q}": float(np.quantile(v, q / 100)) for q in (10, 50, 90, 99)}
    return row


SAMPLES = 100_000  # the built-ins are described from this many requests, seed 0


def _builtin_lengths() -> dict:
    """The built-in workloads as kvsim generates them, and their stored summaries."""
    from kvsim.workloads import build_trace
    from kvsim.workloads.builtin import load_summary, sample_sharegpt
    from kvsim.workloads.streams import take_lengths

    out = {}
    for name in ("sharegpt", "alpaca"):
        trace = build_trace(name, num_requests=SAMPLES, seed=0)
        out[name] = {
            "stats": _describe(trace.prompt_len, trace.output_len),
            "summary": load_summary(name),
            "at_cap": int(
                ((trace.prompt_len + trace.output_len) == load_summary(name)["max_total_len"]).sum()
            ),
        }
    # The output draw is truncated where the total would pass 2048; without that, how many break it.
    summary = dict(load_summary("sharegpt"), max_total_len=10**9)
    prompt, output = take_lengths(lambda rng: sample_sharegpt(summary, rng, 8192), SAMPLES, seed=0)
    out["sharegpt"]["untruncated_over"] = float(np.mean(prompt + output > 2048))
    return out


def _sharegpt_data() -> dict:
    table = pd.read_csv(DATA / "sharegpt_opt_lengths.csv")
    kept = table[table.input_len + table.output_len <= 2048]
    return {
        "rows": len(table),
        "kept": len(kept),
        "stats": _describe(kept.input_len.to_numpy(), kept.output_len.to_numpy()),
    }


def _vidur_clip() -> dict:
    from kvsim.workloads import build_trace, clip_to_context

    trace = clip_to_context(build_trace(str(DATA / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv")), 4096)
    return {
        name: {"mean": float(v.mean()), "median": float(np.median(v)), "p99": float(np.quantile(v, 0.99))}
        for name, v in (("prompt", trace.prompt_len), ("output", trace.output_len))
    }


# The planner's question of docs/schedulers.md: v0 against v1 across load, and v1's budget.
STUDY_SETTING = dict(
    model="llama-2-7b",
    gpu="h100-sxm-80gb",
    trace=str(DATA / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv"),
    over_length="clip",
    num_requests=2000,
)
STUDY_RATES = (1.0, 2.0, 3.0, 3.4, 4.0)
STUDY_BUDGETS = (512, 1024, 2048, 4096, 8192, 16384)
STUDY_BUDGET_RATE = 3.4
SLO_TTFT_S, SLO_TPOT_S = 1.0, 0.05  # the SLO of the goodput column: both, per request


def _schedulers() -> dict:
    """Every point of the study, in-process (``kvsim.experiments.run``): the summary, and
    goodput (requests per second that met both SLOs)."""
    from kvsim.config import SimConfig
    from kvsim.experiments.run import run

    def point(**settings) -> dict:
        result = run(SimConfig(**STUDY_SETTING, **settings))
        requests = result.recorder.requests_frame()
        done = requests[requests.status == "completed"]
        tpot = (done.finish - done.first_token) / (done.output_len - 1).clip(lower=1)
        met = int(((done.ttft <= SLO_TTFT_S) & (tpot <= SLO_TPOT_S)).sum())
        m = result.summary
        return {**m, "budget": result.policy_context.max_num_batched_tokens, "goodput": met / m["duration_s"]}

    return {
        "load": {
            scheduler: [point(rate=rate, scheduler=scheduler) for rate in STUDY_RATES]
            for scheduler in ("v0", "v1")
        },
        "budget": [
            point(rate=STUDY_BUDGET_RATE, scheduler="v1", max_num_batched_tokens=b) for b in STUDY_BUDGETS
        ],
    }


SCHEDULERS = Local(
    "schedulers",
    _schedulers,
    "run(SimConfig(llama-2-7b, h100-sxm-80gb, Vidur's ShareGPT clipped to 4096, 2000 requests, "
    "scheduler v0|v1, rate, budget)) over the study's grid (docs/regenerate.py)",
    cheap=False,
    needs_data=True,
)
V1_CAMPAIGNS = ("opt-13b", "llama-2-7b")


def _beam_fit() -> dict:
    """The savings at the beam model's defaults in the fit's setting (kvsim/experiments/beam_fit.py)."""
    from kvsim.experiments.beam_fit import PAPER_BEAM_SAVING, PAPER_SAMPLING_SAVING, savings

    measured = {
        kind: {row[option]: row["sharing_saving_per_step"] for row in savings({option: sorted(paper)})}
        for kind, option, paper in (
            ("beam", "beam_width", PAPER_BEAM_SAVING),
            ("n", "n", PAPER_SAMPLING_SAVING),
        )
    }
    return {**measured, "paper": {"beam": PAPER_BEAM_SAVING, "n": PAPER_SAMPLING_SAVING}}


BEAM_FIT = Local(
    "beam-fit",
    _beam_fit,
    "kvsim.experiments.beam_fit.savings(beam_width 2,4,6 | n 2,4,6) at the defaults "
    "(OPT-13B, A100-40GB, Alpaca, v0, 300 requests at 5 req/s, seed 0)",
)


def _validation_v1() -> dict:
    """The v1 campaigns of record (docs/validation/v1/): their tables as table.py prints
    them, and the figures quoted from them."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "validation_table", ROOT / "docs" / "validation" / "table.py"
    )
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    folders = {m: ROOT / "docs" / "validation" / "v1" / m for m in V1_CAMPAIGNS}
    return {
        "tables": {m: table.tables(f) for m, f in folders.items()},
        "results": {m: pd.read_csv(f / "validation.csv") for m, f in folders.items()},
        "steps": {m: table.step_error_summary(pd.read_csv(f / "steps.csv")) for m, f in folders.items()},
    }


def _cross_machine() -> dict:
    """The cross-machine campaign (docs/validation/cross-machine/): its tables as
    cross_machine.py prints them, and the rows quoted."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "cross_machine", ROOT / "docs" / "validation" / "cross_machine.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    machines = module.machines()
    return {
        "drift_table": module.drift_table(),
        "campaign_table": module.campaign_table(),
        "machines": len(machines),
        "drift": {(m.name, model): module.drift(m, model) for m in machines for model in module.MODELS},
        "campaign": {
            (m.name, model, "shipped" if row["profile"].startswith("shipped") else "adjusted"): row
            for m in machines
            for model in module.MODELS
            for row in module.campaign(m, model)
        },
        "gpu_uuid": {
            name: re.search(r"GPU UUID\s*:\s*(\S+)", path.read_text())[1]
            for name, path in (
                ("calibration", ROOT / "benchmarks" / "calibration" / "h200-2026-12-03.nvidia-smi.txt"),
                *((m.name, m / "nvidia-smi.txt") for m in machines),
            )
        },
    }


CROSS_MACHINE = Local("cross-machine", _cross_machine, "python docs/validation/cross_machine.py", cheap=False)


VALIDATION_V1 = Local(
    "validation-v1",
    _validation_v1,
    "python docs/validation/table.py docs/validation/v1/opt-13b docs/validation/v1/llama-2-7b",
)


def _api_example() -> dict:
    """docs/api.md's example: its code, and what running it prints."""
    path = ROOT / "docs" / "examples" / "api_example.py"
    return {"code": path.read_text(), "printed": _call([sys.executable, str(path)])}


PROFILES = Local("profiles", _profiles, "the shipped profiles (kvsim/cost/profiles/*.json)")
API_EXAMPLE = Local("api-example", _api_example, "python docs/examples/api_example.py")
TRANSFER = Local("transfer", _transfer, "python benchmarks/calibration/transfer_check.py --json FILE")
BUILTINS = Local(
    "builtins", _builtin_lengths, "kvsim.workloads.build_trace(sharegpt|alpaca, num_requests=100000, seed=0)"
)
SHAREGPT_DATA = Local(
    "sharegpt-data", _sharegpt_data, "../shared/data/sharegpt_opt_lengths.csv", needs_data=True
)
VIDUR_CLIP = Local(
    "vidur-clip",
    _vidur_clip,
    "clip_to_context(sharegpt_8k_filtered_stats_llama2_tokenizer.csv, 4096)",
    needs_data=True,
)


# -- running them ---------------------------------------------------------------------------------


def _call(argv: list[str]) -> str:
    env = dict(os.environ, COLUMNS="250", NO_COLOR="1", TERM="dumb")
    done = subprocess.run(argv, check=False, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed with status {done.returncode}:\n{done.stderr}")
    return done.stdout


@dataclass
class SimResult:
    printed: dict[str, str]  # the summary table's rows as printed: label -> value
    document: dict  # summary.json

    @property
    def m(self) -> dict:
        return self.document["metrics"]


def _printed_rows(text: str) -> dict[str, str]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if line.startswith("│") and len(cells) == 2:
            rows[cells[0]] = cells[1]
    return rows


def _run(source, tmp: Path):
    if isinstance(source, Local):
        return source.fn()
    out = tmp / hashlib.sha256(source.command.encode()).hexdigest()[:16]
    if isinstance(source, RunFiles):  # --timeline NAME is written in the output directory
        args = [str(out / arg) if arg.endswith(".json") else arg for arg in source.args]
        _call([sys.executable, "-m", "kvsim.cli", "run", *args, "--out", str(out)])
        return {path.name: path.read_bytes() for path in sorted(out.iterdir())}
    if isinstance(source, Sim):
        text = _call([sys.executable, "-m", "kvsim.cli", "run", *source.args, "--out", str(out)])
        return SimResult(_printed_rows(text), json.loads((out / "summary.json").read_text()))
    _call([sys.executable, "-m", "kvsim.cli", "compare", *source.args, "--out", str(out), "--jobs", "1"])
    return {path.name: path.read_bytes() for path in sorted(out.iterdir())}


def _timed(source, tmp: Path):
    started = time.monotonic()
    result = _run(source, tmp)
    return result, time.monotonic() - started


def run_sources(sources, jobs: int, verbose: bool = False) -> dict:
    """Each source's result; simulations in ``jobs`` processes at a time."""
    order = sorted(sources, key=lambda s: (s.cheap, s.command))  # the slow ones first
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {s: pool.submit(_timed, s, Path(tmp)) for s in order}
        results = {}
        for source, future in futures.items():
            results[source], took = future.result()
            if verbose:
                print(f"{took:6.1f} s  {source.command}", file=sys.stderr)
        return results


# -- figures --------------------------------------------------------------------------------------


@dataclass
class Figure:
    name: str
    deps: tuple
    render: Callable  # (results) -> str
    block: bool  # a block of lines (between begin/end) or an inline value

    @property
    def cheap(self) -> bool:
        return all(d.cheap for d in self.deps)

    @property
    def needs_data(self) -> bool:
        return any(d.needs_data for d in self.deps)


FIGURES: dict[str, Figure] = {}


class Results(dict):
    """The results a figure declared; reading another is a bug in its declaration."""

    def __init__(self, results: dict, allowed: tuple):
        super().__init__({s: results[s] for s in allowed})

    def __missing__(self, key):
        raise KeyError(f"figure reads {getattr(key, 'command', key)!r} without declaring it")


def figure(name: str, *deps, block: bool = False):
    def register(fn):
        FIGURES[name] = Figure(name, deps, fn, block)
        return fn

    return register


def inline(name: str, source: Sim, fn: Callable[[SimResult], str]) -> None:
    FIGURES[name] = Figure(name, (source,), lambda r: fn(r[source]), block=False)


def pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}%"


def spread(values, fmt: str = "{:.1f}", unit: str = "%") -> str:
    """'lo-hi' of ``values`` as written (one value if they round alike)."""
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return f"{lo}{unit}" if lo == hi else f"{lo}-{hi}{unit}"


def wrap(text: str, first: str = "", rest: str = "") -> str:
    """``text`` as one paragraph of lines of at most 95 characters (``first``, ``rest``: indents)."""
    return textwrap.fill(
        " ".join(text.split()),
        width=95,
        initial_indent=first,
        subsequent_indent=rest,
        break_on_hyphens=False,
        break_long_words=False,
    )


def printed_block(r: Results, *entries, gap: bool = True) -> str:
    """Commands as typed, each followed by the rows of its summary that matter, as printed.
    ``entries``: (source, labels) or (source, labels, comment)."""
    width = max(len(e[0].command) for e in entries)
    lines = []
    for i, (source, labels, *comment) in enumerate(entries):
        if gap and i:
            lines.append("")
        command = f"{source.command:<{width}}  # {comment[0]}" if comment else source.command
        lines.append(f"    {command}")
        lines += [f"    {label:<22} {r[source].printed[label]}" for label in labels]
    return "\n".join(lines)


# Default run and KV capacity (README) ------------------------------------------------------------
inline("default.throughput", DEFAULT, lambda s: f"{s.m['throughput_req_s']:.2f}")
inline("default.offered", DEFAULT, lambda s: f"{s.document['workload']['offered_rate']:.2f}")
inline("default.kv-usage", DEFAULT, lambda s: pct(s.m["mean_kv_usage"], 0))
inline("default.preemptions", DEFAULT, lambda s: f"{s.m['preemptions']:,}")
inline("rate-2.4.kv-usage", RATE_2_4, lambda s: pct(s.m["mean_kv_usage"], 0))
inline("rate-2.4.preemptions", RATE_2_4, lambda s: f"{s.m['preemptions']:,}")
inline("rate-2.4.throughput", RATE_2_4, lambda s: f"{s.m['throughput_req_s']:.2f}")
# The paper's capacity: its vLLM's budget (v0's 2,560 tokens) sizes the activations.
PAPER_DEFAULT = Sim(_args("--scheduler v0"))
inline("capacity.gib", PAPER_DEFAULT, lambda s: f"{s.document['kv_capacity']['kv_cache_bytes'] / 2**30:.2f}")
inline("capacity.blocks", PAPER_DEFAULT, lambda s: f"{s.document['kv_capacity']['num_blocks']:,}")
inline("capacity.slots", PAPER_DEFAULT, lambda s: f"{s.document['kv_capacity']['num_slots']:,}")
PAPER_SLOTS = 15_700  # the vLLM paper: ~12 GB, 15.7K token slots for OPT-13B on an A100-40GB
inline(
    "capacity.vs-paper",
    PAPER_DEFAULT,
    lambda s: pct(abs(s.document["kv_capacity"]["num_slots"] - PAPER_SLOTS) / PAPER_SLOTS),
)


# Sharing (README and docs/sharing.md) ------------------------------------------------------------
ROW = (
    "completed / rejected",
    "throughput",
    "normalized latency",
    "KV cache usage",
    "preemptions",
    "preempted by",
    "sharing",
    "prefix cache",
)


@figure("readme.sampling", N4, block=True)
def _(r):
    return printed_block(r, (N4, ["sharing"]))


@figure("readme.beam", BEAM, BEAM_ORACLE, block=True)
def _(r):
    labels = ["throughput", "normalized latency", "sharing"]
    return printed_block(r, (BEAM, labels), (BEAM_ORACLE, labels))


@figure("readme.prefix", PREFIX, block=True)
def _(r):
    return printed_block(r, (PREFIX, ["completed / rejected", "sharing", "prefix cache"]))


inline("prefix.rejected", PREFIX, lambda s: f"{s.m['rejected']:,}")


@figure("readme.prefix-caching", CHAT, CHAT_CACHED, block=True)
def _(r):
    return printed_block(
        r, (CHAT, ["normalized latency"]), (CHAT_CACHED, ["normalized latency", "prefix cache"]), gap=False
    )


@figure("readme.swap", RATE_4, RATE_4_SWAP, block=True)
def _(r):
    labels = ["throughput", "normalized latency"]
    return printed_block(r, (RATE_4, labels, "recompute"), (RATE_4_SWAP, labels, "swap"), gap=False)


def versus(swap: SimResult, recompute: SimResult) -> tuple[str, str]:
    """(verdict, clause): which preemption mode served more, and by how much, as a clause whose
    subject is that mode (or both)."""
    ratio = swap.m["throughput_req_s"] / recompute.m["throughput_req_s"]
    if ratio >= 1.05:
        return "swap", f"swapping serves {ratio:.1f}x the throughput of recomputing"
    if ratio <= 1 / 1.05:
        return "recompute", f"recomputing serves {1 / ratio:.1f}x the throughput of swapping"
    return "either", (
        f"the two serve about the same throughput ({swap.m['throughput_req_s']:.2f} and "
        f"{recompute.m['throughput_req_s']:.2f} req/s)"
    )


@figure("readme.beam-answer", BEAM, BEAM_ORACLE, BEAM_2, BEAM_2_SWAP, block=True)
def _(r):
    beam, oracle, rec, swap = r[BEAM], r[BEAM_ORACLE], r[BEAM_2], r[BEAM_2_SWAP]
    verdict, sentence = versus(swap, rec)
    advice = {"swap": "swap", "recompute": "recompute", "either": "it hardly matters"}[verdict]
    head = wrap(f"""**How much memory does beam search with width 4 save on ShareGPT, and should I swap or
        recompute?** Sharing saves {pct(beam.m["sharing_memory_saving"])} of the blocks the four beams
        would hold without it: at 1 req/s paged serves {beam.m["throughput_req_s"]:.2f} req/s at
        {beam.m["normalized_latency_s_per_token"] * 1e3:.0f} ms/token with its cache
        {pct(beam.m["mean_kv_usage"], 0)} full on average, while Orca (Oracle), holding four private
        copies, serves {oracle.m["throughput_req_s"]:.2f} req/s at
        {oracle.m["normalized_latency_s_per_token"]:.1f} s/token. At 2 req/s the cache runs out and
        groups are preempted; here, {advice}:""")
    labels = ["throughput", "normalized latency", "preemptions"]
    block = printed_block(
        r, (BEAM_2, labels, "recompute"), (BEAM_2_SWAP, labels + ["preempted by"], "swap"), gap=False
    )
    tail = wrap(f"""Recomputing a group redoes all four beams' tokens
        ({rec.m["recomputed_tokens"]:,} tokens recomputed here); {sentence}. The answer depends on
        PCIe bandwidth and block size (the profile scales the H100's measured swaps to the A100's
        32 GB/s); run the pair on your own setting, or `simcli compare --policies paged,orca-oracle
        --beam-width 4 --rate ...` to see the sharing policies against contiguous ones.""")
    return f"{head}\n\n{block}\n\n{tail}"


@figure("sharing.sampling", N4, block=True)
def _(r):
    return printed_block(r, (N4, ["completed / rejected", "throughput", "preemptions", "sharing"]))


@figure("sharing.beam", BEAM, block=True)
def _(r):
    return printed_block(
        r, (BEAM, ["completed / rejected", "throughput", "normalized latency", "KV cache usage", "sharing"])
    )


inline("beam.saving", BEAM, lambda s: pct(s.m["sharing_memory_saving"]))


@figure("sharing.beam-fit", BEAM_FIT, block=True)
def _(r):
    fit = r[BEAM_FIT]
    lines = ["| sharing | kvsim | paper (Fig. 15) | kvsim − paper |", "| --- | ---: | ---: | ---: |"]
    for kind, label in (("beam", "beam width {} (fitted)"), ("n", "parallel sampling n = {} (check)")):
        for width, saving in fit[kind].items():
            paper = fit["paper"][kind][width]
            lines.append(
                f"| {label.format(width)} | {pct(saving, 2)} | {pct(paper, 2)} | "
                f"{100 * (saving - paper):+.2f} points |"
            )
    worst = {
        kind: max(abs(saving - fit["paper"][kind][width]) for width, saving in fit[kind].items())
        for kind in ("beam", "n")
    }
    lines += [
        "",
        f"The fitted widths are within {100 * worst['beam']:.1f} points of the paper's values; parallel "
        f"sampling, with nothing fitted, is within {100 * worst['n']:.1f} points.",
    ]
    return "\n".join(lines)


@figure("sharing.beam-oracle", BEAM_ORACLE, block=True)
def _(r):
    return printed_block(r, (BEAM_ORACLE, ["throughput", "normalized latency", "sharing"]))


@figure("sharing.prefix", PREFIX, block=True)
def _(r):
    return printed_block(r, (PREFIX, ["completed / rejected", "throughput", "sharing", "prefix cache"]))


@figure("sharing.prefix-caching", CHAT, CHAT_CACHED, block=True)
def _(r):
    return printed_block(
        r,
        (CHAT, ["normalized latency", "preemptions"]),
        (CHAT_CACHED, ["normalized latency", "preemptions", "prefix cache"]),
    )


inline("chat.ttft", CHAT, lambda s: f"{s.m['ttft_s_mean']:.0f}")


@figure("sharing.swap", RATE_4, RATE_4_SWAP, block=True)
def _(r):
    return printed_block(
        r,
        (RATE_4, ["throughput", "normalized latency", "preemptions"]),
        (RATE_4_SWAP, ["throughput", "normalized latency", "preempted by"]),
    )


@figure("sharing.beam-swap", BEAM_2, BEAM_2_SWAP, block=True)
def _(r):
    return printed_block(
        r,
        (BEAM_2, ["throughput", "normalized latency", "preemptions"], "recompute"),
        (BEAM_2_SWAP, ["throughput", "normalized latency", "preempted by"]),
    )


@figure("sharing.beam-swap-verdict", BEAM_2, BEAM_2_SWAP, block=True)
def _(r):
    rec, swap = r[BEAM_2], r[BEAM_2_SWAP]
    n = rec.m["completed"] + rec.m["rejected"]
    _, clause = versus(swap, rec)
    return wrap(f"""Recomputing: {rec.m["preemptions"]:,} preemptions for {n:,} requests
        ({rec.m["preemptions"] / n:.0f} each on average), each redoing all four beams' tokens,
        {rec.m["recomputed_tokens"]:,} recomputed tokens in all. Swapping keeps the work done and
        preempts {swap.m["preemptions"]:,} times. In the end {clause}, and normalized latency is
        {swap.m["normalized_latency_s_per_token"] * 1e3:,.0f} ms/token with swapping against
        {rec.m["normalized_latency_s_per_token"] * 1e3:,.0f} with recomputing.""")


@figure("sharing.sampling-swap", N4, N4_SWAP, block=True)
def _(r):
    return printed_block(
        r,
        (N4, ["normalized latency", "preemptions"], "recompute"),
        (N4_SWAP, ["normalized latency", "preempted by"]),
    )


@figure("sharing.swap-verdict", RATE_4, RATE_4_SWAP, BEAM_2, BEAM_2_SWAP, N4, N4_SWAP)
def _(r):
    cases = {
        "plain ShareGPT": (RATE_4, RATE_4_SWAP),
        "beam search": (BEAM_2, BEAM_2_SWAP),
        "parallel sampling": (N4, N4_SWAP),
    }
    better = [
        name
        for name, (rec, swap) in cases.items()
        if r[swap].m["normalized_latency_s_per_token"] < r[rec].m["normalized_latency_s_per_token"]
    ]
    if len(better) == len(cases):
        return "swapping beats recomputing (lower normalized latency) in all three cases"
    if not better:
        return "recomputing beats swapping (lower normalized latency) in all three cases"
    return (
        f"swapping beats recomputing (lower normalized latency) in {len(better)} of the three "
        f"cases ({', '.join(better)})"
    )


# Schedulers (README, docs/schedulers.md) ------------------------------------------------------------
def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.0f}"


@figure("schedulers.load", SCHEDULERS, block=True)
def _(r):
    lines = [
        "| req/s offered | scheduler | served req/s | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | TPOT p99 ms "
        "| preemptions |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, rate in enumerate(STUDY_RATES):
        for scheduler in ("v0", "v1"):
            m = r[SCHEDULERS]["load"][scheduler][i]
            lines.append(
                f"| {rate:g} | {scheduler} ({m['budget']:,}) | {m['throughput_req_s']:.2f} | {_ms(m['ttft_s_p50'])} "
                f"| {_ms(m['ttft_s_p99'])} | {_ms(m['tpot_s_p50'])} | {_ms(m['tpot_s_p99'])} | {m['preemptions']:,} |"
            )
    return "\n".join(lines)


@figure("schedulers.budget", SCHEDULERS, block=True)
def _(r):
    lines = [
        f"| v1 budget (tokens per step) | served req/s | goodput req/s (TTFT <= {SLO_TTFT_S:g} s, "
        f"TPOT <= {SLO_TPOT_S * 1e3:g} ms) | TTFT p99 ms | TPOT p99 ms |",
        "|---|---|---|---|---|",
    ]
    for m in r[SCHEDULERS]["budget"]:
        lines.append(
            f"| {m['budget']:,} | {m['throughput_req_s']:.2f} | {m['goodput']:.2f} | {_ms(m['ttft_s_p99'])} "
            f"| {_ms(m['tpot_s_p99'])} |"
        )
    return "\n".join(lines)


@figure("schedulers.best-budget", SCHEDULERS)
def _(r):
    best = max(r[SCHEDULERS]["budget"], key=lambda m: m["goodput"])
    return f"{best['budget']:,}"


@figure("schedulers.best-goodput", SCHEDULERS)
def _(r):
    return f"{max(m['goodput'] for m in r[SCHEDULERS]['budget']):.2f}"


# The v1 validation campaigns of record (README, docs/validation/README.md) -------------------------
BELOW_SATURATION = 3  # the first three points of each v1 campaign


@figure("validation.v1.tables", VALIDATION_V1, block=True)
def _(r):
    return "\n\n".join(f"#### {m}\n\n{text}" for m, text in r[VALIDATION_V1]["tables"].items())


@figure("validation.v1.mixed-step-error", VALIDATION_V1)
def _(r):
    return spread([100 * s["mixed"]["mean_abs"] for s in r[VALIDATION_V1]["steps"].values()])


@figure("validation.v1.opt-norm-worst", VALIDATION_V1)
def _(r):
    errors = r[VALIDATION_V1]["results"]["opt-13b"].normalized_latency_s_per_token_rel_error[
        :BELOW_SATURATION
    ]
    return pct(errors.abs().max())


# The campaign goal below saturation: (column, most relative error, what it is called).
V1_GOAL = (
    ("throughput_req_s_rel_error", 0.05, "throughput"),
    ("normalized_latency_s_per_token_rel_error", 0.05, "mean normalized latency"),
    ("ttft_s_p90_rel_error", 0.10, "TTFT p90"),
    ("tpot_s_p90_rel_error", 0.10, "TPOT p90"),
)


@figure("validation.v1.verdict", VALIDATION_V1)
def _(r):
    """Which models meet the goal at every point below saturation, and where the others miss."""
    verdicts = []
    for model, results in r[VALIDATION_V1]["results"].items():
        below = results.iloc[:BELOW_SATURATION]
        misses = [
            f"{name} at {rate:g} req/s ({100 * error:+.1f}%)"
            for column, limit, name in V1_GOAL
            for rate, error in zip(below.rate, below[column])
            if abs(error) > limit
        ]
        verdicts.append(
            f"{model} meets it at all {len(below)}"
            if not misses
            else f"{model} misses it in {', '.join(misses)}"
        )
    return "; ".join(verdicts)


@figure("validation.v1.llama-vidur-norm", VALIDATION_V1)
def _(r):
    results = r[VALIDATION_V1]["results"]["llama-2-7b"]
    vidur = results[results.trace.str.contains("sharegpt_8k")]
    return f"{100 * vidur.normalized_latency_s_per_token_rel_error.iloc[0]:+.1f}%"


# The cross-machine campaign (docs/validation/README.md, README) ----------------------------------


@figure("validation.cross-machine.drift", CROSS_MACHINE, block=True)
def _(r):
    return r[CROSS_MACHINE]["drift_table"]


@figure("validation.cross-machine.campaign", CROSS_MACHINE, block=True)
def _(r):
    return r[CROSS_MACHINE]["campaign_table"]


def _campaign_error(machine: str, model: str, profile: str, metric: str):
    def render(r):
        row = r[CROSS_MACHINE]["campaign"][machine, model, profile]
        return f"{100 * row[f'{metric}_rel_error']:+.1f}%"

    return render


for _machine, _profiles in (("machine-2", ("shipped", "adjusted")), ("machine-3", ("shipped",))):
    for _model in ("opt-13b", "llama-2-7b"):
        for _profile in _profiles:
            for _metric, _short in (
                ("normalized_latency_s_per_token", "norm"),
                ("e2e_latency_s_p90", "e2e-p90"),
            ):
                figure(f"validation.cross-machine.{_machine}.{_model}.{_profile}.{_short}", CROSS_MACHINE)(
                    _campaign_error(_machine, _model, _profile, _metric)
                )


@figure("validation.cross-machine.gpus", CROSS_MACHINE)
def _(r):
    uuid = r[CROSS_MACHINE]["gpu_uuid"]
    return f"{uuid['calibration']} calibrated, {uuid['machine-3']} validated"


@figure("validation.cross-machine.opt-host", CROSS_MACHINE)
def _(r):
    drift = [r[CROSS_MACHINE]["drift"][m, "opt-13b"] for m in ("machine-1", "machine-2")]
    return (
        spread([d["host_ms"] for d in drift], "{:.2f}", " ms")
        + f" against the profile's {drift[0]['host_profile_ms']:.2f} ms"
    )


@figure("validation.cross-machine.gpu-part", CROSS_MACHINE)
def _(r):
    drift = [100 * d["gpu"] for d in r[CROSS_MACHINE]["drift"].values()]
    return f"{min(drift):+.1f}% to {max(drift):+.1f}%"


@figure("validation.cross-machine.engine", CROSS_MACHINE)
def _(r):
    factors = [
        d["engine_factor"]
        for (machine, _), d in r[CROSS_MACHINE]["drift"].items()
        if d["engine_factor"] and machine in ("machine-1", "machine-2")
    ]
    return spread(factors, "{:.2f}", "x")


@figure("validation.cross-machine.machine-3.host", CROSS_MACHINE)
def _(r):
    return "; ".join(
        f"{MODEL_NAMES[model]} {d['host_ms']:.2f} ms against {d['host_profile_ms']:.2f} ms, engine work "
        f"{d['engine_factor']:.2f}x"
        for (machine, model), d in r[CROSS_MACHINE]["drift"].items()
        if machine == "machine-3"
    )


@figure("validation.cross-machine.opt-ttft", CROSS_MACHINE)
def _(r):
    rows = [row for key, row in r[CROSS_MACHINE]["campaign"].items() if key[1] == "opt-13b"]
    return spread([100 * row["ttft_s_p90_rel_error"] for row in rows], "{:+.1f}")


# Tensor parallelism (README, docs/parallelism.md) ----------------------------------------------------
TABLE1 = {  # the vLLM paper's Table 1: (model, GPU, GPUs) -> its KV token slots
    ("opt-66b", "a100-40gb", 4): 9_700,
    ("opt-175b", "a100-80gb", 8): 60_100,
}
TABLE1_RUNS = {
    key: Sim(_args(f"--model {key[0]} --gpu {key[1]} --tp {key[2]} --scheduler v0 --num-requests 20"))
    for key in TABLE1
}
TP_RATES = (4, 16, 32)
TP_SPLITS = ((4, 2), (8, 1))  # (GPUs per replica, replicas): eight GPUs either way
TP_RUNS = {
    (gpu, tp, replicas, rate): Sim(
        _args(
            f"--model llama-2-70b --gpu {gpu} --tp {tp} --num-replicas {replicas} --rate {rate} --num-requests 1000"
        ),
        cheap=False,
    )
    for gpu in ("a100-80gb", "h200-141gb")
    for tp, replicas in TP_SPLITS
    for rate in TP_RATES
}


@figure("parallel.table1", *TABLE1_RUNS.values(), block=True)
def _(r):
    lines = [
        "| model | GPUs | KV token slots (paper) | kvsim | off | KV cache, all GPUs (GiB) |",
        "|---|---|---|---|---|---|",
    ]
    for (model, gpu, tp), source in TABLE1_RUNS.items():
        cap = r[source].document["kv_capacity"]
        paper = TABLE1[(model, gpu, tp)]
        lines.append(
            f"| {model} | {tp}x {gpu} | {paper:,} | {cap['num_slots']:,} | "
            f"{pct(cap['num_slots'] / paper - 1)} | {tp * cap['kv_cache_bytes'] / 2**30:.1f} |"
        )
    return "\n".join(lines)


@figure("parallel.opt175-room", TABLE1_RUNS[("opt-175b", "a100-80gb", 8)])
def _(r):
    """Why OPT-175B on 8 A100-80GB falls short of the paper's slots, from the run's own capacity."""
    cap = r[TABLE1_RUNS[("opt-175b", "a100-80gb", 8)]].document["kv_capacity"]
    gib = 2**30
    room = (cap["usable_bytes"] - cap["weight_bytes"]) / gib
    needed = TABLE1[("opt-175b", "a100-80gb", 8)] * cap["block_bytes"] / cap["block_size"] / gib
    return (
        f"{cap['usable_bytes'] / gib:.1f} GiB usable per GPU, less a {cap['weight_bytes'] / gib:.1f} GiB shard "
        f"of the weights, leaves at most {room:.1f} GiB per GPU for the cache even with no activations; "
        f"the paper's slots need {needed:.1f} GiB per GPU"
    )


@figure("parallel.tp4-vs-tp8", *TP_RUNS.values(), block=True)
def _(r):
    lines = [
        "| GPU | req/s offered | split | served req/s | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | TPOT p99 ms | collectives, share of busy time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (gpu, tp, replicas, rate), source in TP_RUNS.items():
        m = r[source].m
        lines.append(
            f"| {gpu} | {rate} | {replicas} x TP {tp} | {m['throughput_req_s']:.2f} | {_ms(m['ttft_s_p50'])} | "
            f"{_ms(m['ttft_s_p99'])} | {_ms(m['tpot_s_p50'])} | {_ms(m['tpot_s_p99'])} | "
            f"{pct(m['comm_fraction'])} |"
        )
    return "\n".join(lines)


# Policy comparison (README, docs/compare.md, docs/compare/) ---------------------------------------
NAMES = {
    "paged": "paged",
    "orca-oracle": "Orca (Oracle)",
    "orca-pow2": "Orca (Pow2)",
    "orca-max": "Orca (Max)",
    "ft": "FasterTransformer",
}
KEEPS_UP = 0.95  # a policy keeps up with a rate when it serves at least 95% of it


def compare_table(files: dict) -> pd.DataFrame:
    from io import BytesIO

    return pd.read_csv(BytesIO(files["compare.csv"]))


def row(table: pd.DataFrame, policy: str, rate: float) -> pd.Series:
    return table[(table.policy == policy) & (table.rate == rate)].iloc[0]


def keeps_up(table: pd.DataFrame, policy: str) -> list[float]:
    rows = table[table.policy == policy]
    return [float(x.rate) for x in rows.itertuples() if x.throughput_req_s >= KEEPS_UP * x.rate]


def saturation(table: pd.DataFrame, policy: str, plural: bool = False) -> str:
    """Where ``policy`` stops keeping up, in words, from the rates tried (``plural``: the verb
    for two policies)."""
    rates = sorted(table.rate.unique())
    ok = keeps_up(table, policy)
    first_bad = next((x for x in rates if x not in ok), None)
    if first_bad is None:
        return f"{'keep' if plural else 'keeps'} up with every rate tried"
    if first_bad == rates[0]:
        return f"{'are' if plural else 'is'} saturated at every rate tried, {rates[0]:g} req/s included"
    last_ok = max(x for x in ok if x < first_bad)
    verb = "saturate" if plural else "saturates"
    if rates.index(first_bad) == 1:
        return f"{verb} already at {first_bad:g} req/s"
    return f"{verb} between {last_ok:g} and {first_bad:g} req/s"


def two(table: pd.DataFrame, a: str, b: str) -> str:
    """'A and B saturate ...' when both saturate alike, else 'A saturates ... and B ...'."""
    if saturation(table, a) == saturation(table, b):
        return f"{NAMES[a]} and {NAMES[b]} {saturation(table, a, plural=True)}"
    return f"{NAMES[a]} {saturation(table, a)} and {NAMES[b]} {saturation(table, b)}"


def pair(a: float, b: float, fmt: str, unit: str) -> str:
    """'x and y UNIT', or 'x UNIT each' when they are written alike."""
    x, y = fmt.format(a), fmt.format(b)
    return f"{x}{unit} each" if x == y else f"{x} and {y}{unit}"


def s_per_token(value: float) -> str:
    return f"{value:.3g}" if value < 1 else f"{value:.2f}"


@figure("compare.summary", POLICIES, block=True)
def _(r):
    """README's paragraph on docs/compare: the paged policy, the contiguous ones, low load."""
    t = compare_table(r[POLICIES])
    top, low = t.rate.max(), t.rate.min()
    paged, oracle, pow2, ft = (row(t, p, top) for p in ("paged", "orca-oracle", "orca-pow2", "ft"))
    mx_at = min((x for x in sorted(t.rate.unique()) if x not in keeps_up(t, "orca-max")), default=top)
    mx_row = row(t, "orca-max", mx_at)
    n = int(paged.completed + paged.rejected)
    close = [p for p in NAMES if low in keeps_up(t, p)]
    close_text = ", ".join(
        f"{NAMES[p]} {s_per_token(row(t, p, low).normalized_latency_s_per_token)}" for p in close
    )
    return wrap(f"""What kvsim printed (OPT-13B, A100-40GB, {n:,} ShareGPT requests, cost model
        `profile:opt-13b@a100-40gb (derived)`): paged {saturation(t, "paged")}; at {top:g} req/s it
        serves {paged.throughput_req_s:.2f} req/s at {s_per_token(paged.normalized_latency_s_per_token)}
        s/token with a mean batch of {paged.mean_batch_size:.1f}, and its cache is
        {pct(paged.waste_token_states)} token states, {pct(paged.waste_internal_fragmentation)} internal
        fragmentation and {pct(paged.waste_external_and_other)} free.
        {two(t, "orca-oracle", "orca-pow2")}: at {top:g} req/s they serve
        {pair(oracle.throughput_req_s, pow2.throughput_req_s, "{:.2f}", " req/s")} at
        {s_per_token(oracle.normalized_latency_s_per_token)} and
        {s_per_token(pow2.normalized_latency_s_per_token)} s/token, batches of
        {oracle.mean_batch_size:.1f} and {pow2.mean_batch_size:.1f}; the oracle wastes nothing inside
        its ranges, yet {pct(oracle.waste_external_and_other)} of its cache is free but unplaceable
        (external fragmentation), and Pow2 turns part of that into
        {pct(pow2.waste_internal_fragmentation)} internal fragmentation. Orca (Max)
        {saturation(t, "orca-max")} ({mx_row.throughput_req_s:.2f} req/s served at {mx_at:g} req/s,
        batch {mx_row.mean_batch_size:.1f}) with {pct(mx_row.waste_internal_fragmentation)} internal
        fragmentation and {pct(mx_row.waste_token_states)} token states. FasterTransformer
        {saturation(t, "ft")}: it serves {spread(t[t.policy == "ft"].throughput_req_s, "{:.2f}", " req/s")}
        with {ft.mean_batch_size:.1f} running requests on average, since a batch's short requests
        finish early and their slots ({pct(ft.waste_external_and_other)} of the cache) wait for its
        longest one. At {low:g} req/s, normalized latency in s/token: {close_text}.""")


def ft_batch(table: pd.DataFrame) -> int:
    """FasterTransformer's batch: the most whole-context ranges the cache holds (OPT: 2,048 tokens)."""
    from kvsim.models import load_model
    from kvsim.policies.ft import max_reservations

    return max_reservations(int(table.num_slots.iloc[0]), load_model("opt-13b").max_model_len)


@figure("compare.ft-batch", POLICIES)
def _(r):
    return f"{ft_batch(compare_table(r[POLICIES])):,}"


@figure("compare.findings", POLICIES, block=True)
def _(r):
    """docs/compare.md's findings, one bullet per policy group."""
    t = compare_table(r[POLICIES])
    rates = sorted(t.rate.unique())
    top, low = rates[-1], rates[0]
    paged, oracle, pow2, ft = (row(t, p, top) for p in ("paged", "orca-oracle", "orca-pow2", "ft"))
    oracle_ok = max(keeps_up(t, "orca-oracle"), default=low)
    o1, p1, g1 = (row(t, p, oracle_ok) for p in ("orca-oracle", "orca-pow2", "paged"))
    mx_at = min((x for x in rates if x not in keeps_up(t, "orca-max")), default=top)
    mx = row(t, "orca-max", mx_at)
    ft_low = row(t, "ft", low)
    bullets = [
        f"""**Paged {saturation(t, "paged")}**: at {top:g} req/s it serves {paged.throughput_req_s:.2f}
        req/s with a normalized latency of {s_per_token(paged.normalized_latency_s_per_token)} s/token
        and a mean batch of {paged.mean_batch_size:.1f} requests. Its cache is
        {pct(paged.waste_token_states)} token states and {pct(paged.waste_internal_fragmentation)}
        internal fragmentation; the remaining {pct(paged.waste_external_and_other)} is free.""",
        f"""**{two(t, "orca-oracle", "orca-pow2")}**: at {oracle_ok:g} req/s they serve
        {pair(o1.throughput_req_s, p1.throughput_req_s, "{:.2f}", " req/s")} at
        {s_per_token(o1.normalized_latency_s_per_token)} and
        {s_per_token(p1.normalized_latency_s_per_token)} s/token (paged:
        {s_per_token(g1.normalized_latency_s_per_token)}); at {top:g} req/s they serve
        {pair(oracle.throughput_req_s, pow2.throughput_req_s, "{:.2f}", " req/s")}, with normalized latencies of
        {s_per_token(oracle.normalized_latency_s_per_token)} and
        {s_per_token(pow2.normalized_latency_s_per_token)} s/token and mean batches of
        {oracle.mean_batch_size:.1f} and {pow2.mean_batch_size:.1f}. Even the oracle, which wastes
        nothing inside its ranges, leaves {pct(oracle.waste_external_and_other)} of the cache free there:
        the buddy allocator cannot place the next range in the space that is left (external
        fragmentation). Pow2 trades part of that for {pct(pow2.waste_internal_fragmentation)} internal
        fragmentation.""",
        f"""**Orca (Max) {saturation(t, "orca-max")}** ({mx.throughput_req_s:.2f} req/s served at
        {mx_at:g} req/s, {s_per_token(mx.normalized_latency_s_per_token)} s/token, batch
        {mx.mean_batch_size:.1f}): {pct(mx.waste_internal_fragmentation)} of its cache is internal
        fragmentation and only {pct(mx.waste_token_states)} holds token states.""",
        f"""**FasterTransformer {saturation(t, "ft")}** (it serves
        {spread(t[t.policy == "ft"].throughput_req_s, "{:.2f}", " req/s")}; at {low:g} req/s
        {s_per_token(ft_low.normalized_latency_s_per_token)} s/token): its batch of at most
        {ft_batch(t)} averages {ft.mean_batch_size:.1f} running requests
        ({ft_low.mean_batch_size:.1f} at {low:g} req/s), because the short requests of a batch finish
        early and their slots ({pct(ft.waste_external_and_other)} of the cache at {top:g} req/s) stay
        unusable until its longest request is done.""",
        "At {:g} req/s, normalized latency in s/token: {}.".format(
            low,
            ", ".join(
                f"{NAMES[p]} {s_per_token(row(t, p, low).normalized_latency_s_per_token)}" for p in NAMES
            ),
        ),
    ]
    return "\n".join(wrap(b, "- ", "  ") for b in bullets)


def compare_rows(table: pd.DataFrame) -> str:
    head = (
        "| policy | rate | tput req/s | norm lat s/tok | mean batch | token states | reservation | "
        "internal frag. | external & other | memory saved by sharing | block copies |"
    )
    lines = [head, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for x in table.itertuples():
        lines.append(
            f"| {x.policy} | {x.rate:g} | {x.throughput_req_s:.2f} | "
            f"{s_per_token(x.normalized_latency_s_per_token)} | {x.mean_batch_size:.1f} | "
            f"{pct(x.waste_token_states)} | {pct(x.waste_reservation)} | "
            f"{pct(x.waste_internal_fragmentation)} | {pct(x.waste_external_and_other)} | "
            f"{pct(x.sharing_memory_saving)} | {x.block_copies:,} |"
        )
    return "\n".join(lines)


@figure("compare.beam-table", BEAM_POLICIES, block=True)
def _(r):
    return compare_rows(compare_table(r[BEAM_POLICIES]))


@figure("compare.beam-verdict", BEAM_POLICIES, block=True)
def _(r):
    t = compare_table(r[BEAM_POLICIES])
    top = t.rate.max()
    paged, oracle = row(t, "paged", top), t[t.policy == "orca-oracle"]
    return wrap(f"""Paged {saturation(t, "paged")}: the four beams share
        {pct(paged.sharing_memory_saving)} of the blocks they would otherwise hold, and
        {pct(paged.waste_external_and_other)} of its cache is still free at {top:g} req/s. Orca
        (Oracle) reserves four full ranges (prompt + output) per request, so its batch averages
        {spread(oracle.mean_batch_size, "{:.1f}", "")} requests; it
        {saturation(t, "orca-oracle")}, serving {spread(oracle.throughput_req_s, "{:.2f}", " req/s")},
        and copying beams' KV costs it {int(oracle.block_copies.max()):,} block copies against
        paged's {int(paged.block_copies):,} copy-on-write copies.""")


inline_compare = [
    ("beam-compare.token-states", "waste_token_states"),
    ("beam-compare.free", "waste_external_and_other"),
]
for _name, _key in inline_compare:
    FIGURES[_name] = Figure(
        _name,
        (BEAM_POLICIES,),
        lambda r, key=_key: pct(row(compare_table(r[BEAM_POLICIES]), "paged", 1.0)[key]),
        block=False,
    )


# Capacity planning (README) -----------------------------------------------------------------------
PLAN_ARGS = "--model llama-2-13b --gpu a100-80gb,h100-sxm-80gb --target-rate 20 --slo ttft:p90:2s --slo tpot:mean:100ms"


def _plan() -> dict:
    """`simcli plan PLAN_ARGS --out DIR`: what it printed, and its files. Run here rather than
    by ``_call``: the README shows its stderr too (the warnings about the profiles the answer
    rests on), and its table at a width that fits the page."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "kvsim.cli", "plan", *PLAN_ARGS.split(), "--out", tmp]
        env = dict(os.environ, COLUMNS="110", NO_COLOR="1", TERM="dumb")
        done = subprocess.run(argv, check=False, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed with status {done.returncode}:\n{done.stderr}")
        files = {path.name: path.read_bytes() for path in sorted(Path(tmp).iterdir())}
    return {**files, "stdout": done.stdout.replace(tmp, "docs/plan"), "stderr": done.stderr}


PLAN = Local("plan", _plan, f"simcli plan {PLAN_ARGS}", cheap=False)


@figure("readme.plan", PLAN, block=True)
def _(r):
    """The command as typed, then everything it printed, warnings included."""
    printed = "\n".join(line.rstrip() for line in (r[PLAN]["stdout"] + r[PLAN]["stderr"]).splitlines())
    return textwrap.indent(f"$ simcli plan {PLAN_ARGS} --out docs/plan\n{printed}", "    ")


def _plan_row(r, gpu: str) -> pd.Series:
    table = pd.read_csv(io.BytesIO(r[PLAN]["plan.csv"]))
    return table[table["gpu"] == gpu].iloc[0]


@figure("plan.a100-replicas", PLAN)
def _(r):
    return f"{int(_plan_row(r, 'a100-80gb')['replicas'])}"


@figure("plan.a100-capacity", PLAN)
def _(r):
    row = _plan_row(r, "a100-80gb")
    return f"{row['capacity_seed_min_req_s']:.2f}-{row['capacity_seed_max_req_s']:.2f}"


@figure("plan.cheapest", PLAN)
def _(r):
    best = pd.read_csv(io.BytesIO(r[PLAN]["plan.csv"])).iloc[0]
    return f"{int(best['replicas'])} x {best['gpu']} at ${best['cost_per_hour']:.2f} per hour"


# Python API (docs/api.md) ------------------------------------------------------------------------
@figure("api.example", API_EXAMPLE, block=True)
def _(r):
    """The example as it is in docs/examples/api_example.py, then what it printed."""
    example = r[API_EXAMPLE]
    code, printed = example["code"].rstrip("\n"), example["printed"].rstrip("\n")
    return f"```python\n{code}\n```\n\nprints\n\n```\n{printed}\n```"


def _paper_page(*settings: str) -> dict:
    """`simcli report paper [SETTINGS] --out DIR`: the page and its figures, by name."""
    with tempfile.TemporaryDirectory() as tmp:
        _call([sys.executable, "-m", "kvsim.cli", "report", "paper", *settings, "--out", tmp])
        return {path.name: path.read_bytes() for path in sorted(Path(tmp).iterdir())}


PAPER = Local("paper", lambda: _paper_page("--quick"), "simcli report paper --quick", cheap=False)
# The full settings: more rates and requests, and OPT-66B and OPT-175B over their GPUs.
PAPER_FULL = Local("paper-full", _paper_page, "simcli report paper", cheap=False)
PAPER_FILES = (
    "README.md",
    "fig2_kv_breakdown.png",
    "fig12_opt-13b_sharegpt.png",
    "fig12_opt-13b_alpaca.png",
    "fig13_sharegpt.png",
    "fig13_alpaca.png",
    "fig14_n.png",
    "fig14_beam_width.png",
    "fig15_saving.png",
    "fig16_prefix.png",
    "fig17_chatbot.png",
    "fig18b_block_size.png",
    "fig19a_microbenchmark.png",
    "fig19b_end_to_end.png",
)
PAPER_FULL_FILES = (
    *PAPER_FILES,
    *(f"fig12_{model}_{trace}.png" for model in ("opt-66b", "opt-175b") for trace in ("sharegpt", "alpaca")),
)

# Shared GPU (docs/gpushare.md): Paella's load sweep and fairness sweep on the shipped H200 chains --
GPUSHARE_JOBS = 500  # jobs per point (Paella ran 3,000; the doc says so)
GPUSHARE_LOADS = "0.5,1,1.5,2,3"
GPUSHARE_POLICIES = "cuda-multi-stream,paella-srpt"
GPUSHARE_MIXES = ("paella-8", "extremes")
GPUSHARE_THRESHOLDS = "1,2,4,8,16,inf"
GPUSHARE_FAIRNESS_LOAD = 1.5
#: A policy sustains a load while its p99 stays within this multiple of its p99 at the lowest load.
GPUSHARE_P99_MULTIPLE = 2
GPUSHARE_COMMANDS = {
    **{
        f"load-{mix}": f"simcli gpushare load --mix {mix} --policies {GPUSHARE_POLICIES} "
        f"--load {GPUSHARE_LOADS} --num-jobs {GPUSHARE_JOBS} --jobs 2"
        for mix in GPUSHARE_MIXES
    },
    "fairness-extremes": f"simcli gpushare fairness --mix extremes --thresholds {GPUSHARE_THRESHOLDS} "
    f"--load {GPUSHARE_FAIRNESS_LOAD} --num-jobs {GPUSHARE_JOBS} --jobs 2",
}


def _gpushare() -> dict:
    """Each command's files, renamed COMMAND-KEY_FILE (load-extremes_load.csv, ...)."""
    files = {}
    for key, command in GPUSHARE_COMMANDS.items():
        with tempfile.TemporaryDirectory() as tmp:
            _call([sys.executable, "-m", "kvsim.cli", *command.split()[1:], "--out", tmp])
            files |= {f"{key}_{path.name}": path.read_bytes() for path in sorted(Path(tmp).iterdir())}
    return files


GPUSHARE = Local("gpushare", _gpushare, " ; ".join(GPUSHARE_COMMANDS.values()), cheap=False)
GPUSHARE_FILES = (
    "load-paella-8_load.png",
    "load-extremes_load.png",
    "fairness-extremes_fairness.png",
)


def _gpushare_csv(r, name: str):
    import pandas as pd

    return pd.read_csv(io.BytesIO(r[GPUSHARE][name]))


# Against the real GPU (docs/gpushare.md): what `simcli gpushare compare-real` wrote beside the
# committed measurement of docs/gpushare/real/run.sh.
GPUSHARE_REAL_DIR = ROOT / "docs" / "gpushare" / "real" / "extremes"
GPUSHARE_REAL = Local(
    "gpushare-real",
    lambda: (GPUSHARE_REAL_DIR / "compare.csv").read_bytes(),
    f"simcli gpushare compare-real {GPUSHARE_REAL_DIR.relative_to(ROOT)} (the measurement: docs/gpushare/real/run.sh)",
)


@figure("gpushare.real", GPUSHARE_REAL, block=True)
def _(r):
    """Every measured point over all jobs: measured and simulated mean, p99 and throughput, and the
    simulation's error; whether the measured GPU kept up with the arrivals."""
    import pandas as pd

    table = pd.read_csv(io.BytesIO(r[GPUSHARE_REAL]))
    lines = [
        "| policy | load | kept up | mean measured | simulated | error | p99 measured | simulated | error "
        "| throughput measured | error |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in table[table.model == "all"].itertuples(index=False):
        lines.append(
            f"| {row.policy} | {row.load:g} | {'yes' if row.below_saturation else 'no'} "
            f"| {row.latency_mean_s_measured * 1e3:.2f} ms | {row.latency_mean_s_simulated * 1e3:.2f} ms "
            f"| {pct(row.latency_mean_s_error)} | {row.latency_p99_s_measured * 1e3:.2f} ms "
            f"| {row.latency_p99_s_simulated * 1e3:.2f} ms | {pct(row.latency_p99_s_error)} "
            f"| {row.throughput_jobs_s_measured:.0f} jobs/s | {pct(row.throughput_jobs_s_error)} |"
        )
    return "\n".join(lines)


# The co-location benchmark of each shipped kernel profile, and how well its fitted
# interference reproduces it (the profiler writes both).
GPUSHARE_PROFILES_DIR = ROOT / "kvsim" / "gpushare" / "profiles"
GPUSHARE_COLOCATION = Local(
    "gpushare-colocation",
    lambda: json.dumps(
        {path.name: json.loads(path.read_text()) for path in sorted(GPUSHARE_PROFILES_DIR.glob("*.json"))}
    ).encode(),
    "the shipped kernel profiles (kvsim/gpushare/profiles/, written by simcli gpushare profile)",
)


@figure("gpushare.colocation", GPUSHARE_COLOCATION, block=True)
def _(r):
    """Per shipped profile: the pass alone (launched on an idle GPU), the measured slowdown of
    2, 4 and 8 copies launched together, the fitted interference and the simulated slowdown's
    error per copy count."""
    profiles = json.loads(r[GPUSHARE_COLOCATION])
    lines = [
        "| model | alone | 2 copies | 4 copies | 8 copies | interference | error at 2 | at 4 | at 8 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for doc in profiles.values():
        colocated, errors = doc["colocated_us"], doc["interference_fit"]["slowdown_error"]
        slowdowns = [f"{colocated[k] / colocated['1']:.2f}x" for k in ("2", "4", "8")]
        lines.append(
            f"| {doc['model']} | {colocated['1']:.0f} us | {' | '.join(slowdowns)} | {doc['interference']:.2f} "
            f"| {' | '.join(pct(errors[k]) for k in ('2', '4', '8'))} |"
        )
    return "\n".join(lines)


# The real run's own record (docs/gpushare/real/extremes/measure.json): each model's whole graph
# alone, and per point the host's launch call to the job's start on the GPU (host clock against
# the GPU's) and the two clocks' offset at the point's end.
GPUSHARE_REAL_MEASURE = Local(
    "gpushare-real-measure",
    lambda: (GPUSHARE_REAL_DIR / "measure.json").read_bytes(),
    "docs/gpushare/real/extremes/measure.json (written by simcli gpushare measure)",
)


@figure("gpushare.real.passes", GPUSHARE_REAL_MEASURE, GPUSHARE_COLOCATION)
def _(r):
    """A job's whole graph queued behind other work, as its shipped profile prices it and as the
    measurement timed it (queued behind the job's blocks), per model of the measured mix."""
    measure, profiles = json.loads(r[GPUSHARE_REAL_MEASURE]), json.loads(r[GPUSHARE_COLOCATION])
    profiled_us = {
        m: profiles[f"{m}@{measure['gpu']}.json"]["graph_pass_us"] for m in measure["alone_s"]["measured"]
    }
    return ", ".join(
        f"{model} {profiled_us[model]:.0f} us in the profile against {seconds * 1e6:.0f} us measured"
        for model, seconds in measure["alone_s"]["measured"].items()
    )


# The probe of the profiler's slower graphs (docs/gpushare/real/cupti_probe.py, its output beside it).
GPUSHARE_CUPTI_PROBE = Local(
    "gpushare-cupti-probe",
    lambda: (ROOT / "docs" / "gpushare" / "real" / "cupti-probe.log").read_bytes(),
    "python docs/gpushare/real/cupti_probe.py (on an H200; its output committed as cupti-probe.log)",
)


@figure("gpushare.real.cupti", GPUSHARE_CUPTI_PROBE)
def _(r):
    text = r[GPUSHARE_CUPTI_PROBE].decode()
    before, after, anew = (
        [float(v) for v in re.findall(r"[\d.]+", group)] for group in re.findall(r"\[([^\]]*)\]", text)
    )
    return ", ".join(
        f"{model} {b:.0f} us before, {a:.0f} us after on the same graphs, {n:.0f} us on graphs captured anew"
        for model, b, a, n in zip(("resnet18", "inception_v3"), before, after, anew)
    )


@figure("gpushare.real.multi-stream-launch", GPUSHARE_REAL_MEASURE)
def _(r):
    points = json.loads(r[GPUSHARE_REAL_MEASURE])["points"]
    points = [p for p in points if p["policy"] == "cuda-multi-stream"]
    launch = spread([p["launch_to_start_p50_s"] * 1e6 for p in points], "{:.0f}", " us")
    offset = spread([abs(p["clock_offset_s"]) * 1e6 for p in points], "{:.0f}", " us")
    return f"{launch} (medians by point), while the host's and the GPU's clocks were {offset} apart at the points' ends"


@figure("gpushare.load", GPUSHARE, block=True)
def _(r):
    """Per mix and policy: p99 over all jobs at the lowest load, and the highest swept load whose p99
    stays within GPUSHARE_P99_MULTIPLE times that."""
    lines = [
        f"| mix | policy | p99 at load {GPUSHARE_LOADS.split(',')[0]} | highest load with p99 within "
        f"{GPUSHARE_P99_MULTIPLE}x of it | its throughput | p99 at load {GPUSHARE_LOADS.split(',')[-1]} |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for mix in GPUSHARE_MIXES:
        table = _gpushare_csv(r, f"load-{mix}_load.csv")
        for policy, rows in table[table.model == "all"].groupby("policy", sort=False):
            rows = rows.sort_values("load")
            base = rows.latency_p99_s.iloc[0]
            within = rows[rows.latency_p99_s <= GPUSHARE_P99_MULTIPLE * base]
            best = within.iloc[-1]
            lines.append(
                f"| {mix} | {policy} | {base * 1e3:.2f} ms | {best.load:g} | {best.throughput_jobs_s:.0f} jobs/s "
                f"| {rows.latency_p99_s.iloc[-1] * 1e3:.2f} ms |"
            )
    return "\n".join(lines)


@figure("gpushare.fairness", GPUSHARE, block=True)
def _(r):
    table = _gpushare_csv(r, "fairness-extremes_fairness.csv")
    models = [m for m in table.model.unique() if m != "all"]
    lines = [
        "| fairness threshold | " + " | ".join(f"{m} mean latency" for m in models) + " | Jain's index |",
        "| --- |" + " --- |" * (len(models) + 1),
    ]
    for threshold, rows in table.groupby("threshold", sort=False):
        means = rows.set_index("model").latency_mean_s
        cells = " | ".join(f"{means[m] * 1e3:.3f} ms" for m in models)
        lines.append(f"| {threshold:g} | {cells} | {rows.jain_index.iloc[0]:.3f} |")
    return "\n".join(lines)


def _ms_unit(seconds: float, digits: int = 2) -> str:
    """Milliseconds with their unit, for prose (tables use `_ms`: bare numbers under an ms header)."""
    return f"{seconds * 1e3:.{digits}f} ms"


@figure("gpushare.load.reading", GPUSHARE, block=True)
def _(r):
    """Reading (a): per mix, which of the two policies sustains more load by the table's measure,
    then, at the highest load, whose p99 per model and whose mean over all jobs is lower, since
    the p99 over all jobs is the tail of the models that make the longest jobs."""
    hardware, software = GPUSHARE_POLICIES.split(",")
    top = float(GPUSHARE_LOADS.split(",")[-1])
    parts = []
    for mix in GPUSHARE_MIXES:
        table = _gpushare_csv(r, f"load-{mix}_load.csv")
        sustained = {}
        for policy, rows in table[table.model == "all"].groupby("policy", sort=False):
            rows = rows.sort_values("load")
            sustained[policy] = rows[
                rows.latency_p99_s <= GPUSHARE_P99_MULTIPLE * rows.latency_p99_s.iloc[0]
            ].load.iloc[-1]
        verdict = (
            "more load than"
            if sustained[software] > sustained[hardware]
            else "less load than"
            if sustained[software] < sustained[hardware]
            else "the same load as"
        )
        at_top = table[table.load == top].set_index(["model", "policy"])
        p99 = at_top.latency_p99_s.unstack("policy")
        models = p99.drop(index="all")
        lower = models[models[software] < models[hardware]]
        higher = models[models[software] >= models[hardware]]
        mean = at_top.latency_mean_s.unstack("policy").loc["all"]
        text = (
            f"On {mix}, `{software}` sustains {verdict} `{hardware}` by this measure "
            f"({sustained[software]:g} against {sustained[hardware]:g}). At load {top:g} it lowers the p99 of "
            f"{len(lower)} of its {len(models)} models"
        )
        if len(lower):
            best = (lower[software] / lower[hardware]).idxmin()
            text += (
                f" ({best}: {_ms_unit(lower.loc[best, hardware])} to {_ms_unit(lower.loc[best, software])})"
            )
        if len(higher):
            text += " and raises " + _and(
                [
                    f"{m}'s ({_ms_unit(higher.loc[m, hardware])} to {_ms_unit(higher.loc[m, software])})"
                    for m in higher.index
                ]
            )
        text += (
            f"; the mean over all jobs goes from {_ms_unit(mean[hardware])} to {_ms_unit(mean[software])}."
        )
        parts.append(text)
    return (
        "**Reading (a).** "
        + " ".join(parts)
        + " SRPT serves the jobs with the most work left last: where the p99 over all jobs falls among"
        " those (the longest models make more than 1% of the jobs), it is the measure on which SRPT looks"
        " worst."
    )


@figure("gpushare.fairness.reading", GPUSHARE, block=True)
def _(r):
    """Reading (b): each model's mean latency and Jain's index from pure SRPT to the lowest swept
    threshold, and whether the threshold evens the slowdowns out or helps the model already ahead."""
    table = _gpushare_csv(r, "fairness-extremes_fairness.csv")
    per = table[table.model != "all"]
    thresholds = sorted(per.threshold.unique())
    loose, tight = thresholds[-1], thresholds[0]
    mean = per.pivot(index="model", columns="threshold", values="latency_mean_s")
    slowdown = per.pivot(index="model", columns="threshold", values="slowdown")
    jain = table.drop_duplicates("threshold").set_index("threshold").jain_index
    helped = (mean[tight] / mean[loose]).idxmin()
    moves = [
        f"{m}'s{' mean latency' if m == helped else ''} from {_ms_unit(mean.loc[m, loose], 3)} to "
        f"{_ms_unit(mean.loc[m, tight], 3)}"
        for m in [helped, *mean.index.drop(helped)]
    ]
    text = (
        f"**Reading (b).** At load {GPUSHARE_FAIRNESS_LOAD:g}, tightening the threshold from {loose:g} to "
        f"{tight:g} moves {_and(moves)}: it favours {helped}. Jain's index goes from {jain[loose]:.3f} to "
        f"{jain[tight]:.3f}"
    )
    if slowdown[loose].idxmin() == helped:
        text += f", away from equal slowdowns: {helped}'s was already the lower one."
    else:
        text += ", toward equal slowdowns."
    return text


# Generated files: docs/paper/ is `simcli report paper --quick --out docs/paper` (the page and its
# figures), docs/paper/full/ the same at the full settings; docs/compare/ is `simcli compare --out docs/compare` of POLICIES; docs/run/ is the
# default run's figures (`--plots`) and the timeline of a small run of two replicas.
RUN_PLOTS = RunFiles(_args("--plots"))
RUN_TIMELINE = RunFiles(_args("--num-requests 60 --num-replicas 2 --timeline timeline.json"))
FILES = {
    **{
        f"docs/compare/{name}": (POLICIES, name)
        for name in ("compare.csv", "latency_vs_rate.png", "waste_breakdown.png", "batch_size.png")
    },
    **{
        f"docs/run/{name}": (RUN_PLOTS, name)
        for name in ("kv_and_queue.png", "latency_cdf.png", "request_scatter.png")
    },
    "docs/run/timeline.json": (RUN_TIMELINE, "timeline.json"),
    **{f"docs/paper/{name}": (PAPER, name) for name in PAPER_FILES},
    **{f"docs/paper/full/{name}": (PAPER_FULL, name) for name in PAPER_FULL_FILES},
    **{f"docs/plan/{name}": (PLAN, name) for name in ("plan.csv", "pareto.png")},
    **{f"docs/gpushare/{name}": (GPUSHARE, name) for name in GPUSHARE_FILES},
}


# Calibration (README, docs/calibration.md): shipped profiles and the transfer check ---------------
GPU_NAMES = {
    "h100-sxm-80gb": "H100",
    "h200-141gb": "H200",
    "a100-40gb": "A100-40GB",
    "a100-80gb": "A100-80GB",
}
GOAL_MAPE, GOAL_WORST = 0.03, 0.10


def measured(profiles: dict) -> list[tuple[str, dict]]:
    from kvsim.hardware import BUILTIN_GPUS
    from kvsim.models import BUILTIN_CONFIGS

    models, gpus = list(BUILTIN_CONFIGS), list(BUILTIN_GPUS)
    rows = [(name, doc) for name, doc in profiles.items() if doc["provenance"]["kind"] == "measured"]
    # a tensor-parallel shard's profile (MODEL-tpN) sorts after its whole model's
    whole = lambda doc: re.sub(r"-tp\d+$", "", doc["model"]["name"])  # noqa: E731
    return sorted(
        rows,
        key=lambda x: (models.index(whole(x[1])), x[1]["tensor_parallel"], gpus.index(x[1]["gpu"]["name"])),
    )


def mape_worst(entry: dict) -> str:
    return f"{pct(entry['mape'])} / {pct(entry['max_ape'])}"


@figure("calibration.profiles", PROFILES, block=True)
def _(r):
    lines = [
        (
            "| profile | decode held out (MAPE / worst) | prefill held out | copy (fitted) | swap (fitted) "
            "| all held out | engine | calibration time |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, doc in measured(r[PROFILES]):
        f, e = doc["fit_report"], doc["coefficients"]["engine"]
        lines.append(
            f"| {name} | {mape_worst(f['decode']['heldout'])} | {mape_worst(f['prefill']['heldout'])} | "
            f"{mape_worst(f['copy']['fitted'])} | {mape_worst(f['swap']['fitted'])} | "
            f"{mape_worst(f['overall_heldout'])} | {e['fixed'] * 1e3:.2f} ms + {e['seqs'] * 1e6:.2f} us/seq | "
            f"{doc['calibration']['total_seconds']:.0f} s |"
        )
    return "\n".join(lines)


def _held_out_counts(profiles):
    counts = {
        (d["fit_report"]["decode"]["heldout"]["n"], d["fit_report"]["prefill"]["heldout"]["n"])
        for _, d in measured(profiles)
    }
    return counts


@figure("calibration.heldout-n", PROFILES)
def _(r):
    counts = _held_out_counts(r[PROFILES])
    if len(counts) != 1:
        return "varying numbers of held-out points per profile (see each file's fit_report)"
    ((decode, prefill),) = counts
    return f"n = {decode} held-out decode and {prefill} held-out prefill points per profile"


def runner_model(doc: dict) -> str:
    """A profile's model, and "-eager" where its runner ran eagerly: a different engine, judged
    apart from the model's CUDA-graph profiles."""
    return doc["model"]["name"] + ("" if doc.get("graphs", True) else "-eager")


def goal_groups(profiles: dict) -> tuple[list[str], list[str]]:
    """Models (eager runners apart) whose every measured profile meets the held-out goal, and
    the others."""
    by_model: dict[str, list[dict]] = {}
    for _, doc in measured(profiles):
        by_model.setdefault(runner_model(doc), []).append(doc)
    meet = [
        m
        for m, docs in by_model.items()
        if all(
            d["fit_report"]["overall_heldout"]["mape"] <= GOAL_MAPE
            and d["fit_report"]["overall_heldout"]["max_ape"] <= GOAL_WORST
            for d in docs
        )
    ]
    return meet, [m for m in by_model if m not in meet]


MODEL_NAMES = {
    "opt-13b": "OPT-13B",
    "llama-2-7b": "Llama-2-7B",
    "llama-2-13b": "Llama-2-13B",
    "llama-3-8b": "Llama-3-8B",
    "opt-13b-eager": "OPT-13B's eager profile",
    "llama-2-13b-eager": "Llama-2-13B's eager profile",
}


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _missed_on(docs: list[dict]) -> str:
    kinds = [
        k
        for k in ("decode", "prefill")
        if any(
            d["fit_report"][k]["heldout"]["mape"] > GOAL_MAPE
            or d["fit_report"][k]["heldout"]["max_ape"] > GOAL_WORST
            for d in docs
        )
    ]
    return _and(kinds) if kinds else "held-out points"


@figure("calibration.goal", PROFILES)
def _(r):
    """README: who meets the held-out goal, with the ranges of their errors."""
    profiles = r[PROFILES]
    meet, miss = goal_groups(profiles)
    docs = {m: [d for _, d in measured(profiles) if runner_model(d) == m] for m in meet + miss}
    parts = []
    if meet:
        allh = [d["fit_report"]["overall_heldout"] for m in meet for d in docs[m]]
        parts.append(
            f"{_and([MODEL_NAMES.get(m, m) for m in meet])} meet it on every GPU they were measured on (all held-out "
            f"points {spread([a['mape'] * 100 for a in allh], unit='% mean')}, "
            f"{spread([a['max_ape'] * 100 for a in allh], unit='% worst')})"
        )
    for m in miss:
        kinds = _missed_on(docs[m])
        worst = [d["fit_report"][k]["heldout"] for d in docs[m] for k in ("decode", "prefill") if k in kinds]
        parts.append(
            f"{MODEL_NAMES.get(m, m)} misses on {kinds} "
            f"({spread([w['mape'] * 100 for w in worst], unit='% mean')}, "
            f"{spread([w['max_ape'] * 100 for w in worst], '{:.0f}', '% worst')})"
        )
    return "; ".join(parts)


@figure("calibration.goal-bold", PROFILES)
def _(r):
    meet, miss = goal_groups(r[PROFILES])
    text = (
        f"**{_and([MODEL_NAMES.get(m, m) for m in meet])} meet it on every GPU they were measured on.**"
        if meet
        else "**None meets it.**"
    )
    docs = {m: [d for _, d in measured(r[PROFILES]) if d["model"]["name"] == m] for m in miss}
    return text + "".join(f" {MODEL_NAMES.get(m, m)} misses on {_missed_on(docs[m])}." for m in miss)


# The decode step against its floor, from the committed runner benchmark (benchmarks/KERNELS.md).
RUNNER_H200 = Local(
    "runner-h200",
    lambda: (ROOT / "benchmarks" / "results" / "runner_h200.json").read_bytes(),
    "benchmarks/results/runner_h200.json (python3 benchmarks/bench_kernels.py --only runner "
    "--models opt-13b llama-2-7b)",
)


def _runner_at_512(r) -> dict[tuple[str, int], dict]:
    """The runner benchmark's rows at 512 tokens of context, by (model, batch)."""
    return {
        (row["model"], row["batch"]): row
        for row in json.loads(r[RUNNER_H200])["runner"]
        if row["context"] == 512
    }


@figure("kernels.runner-h200", RUNNER_H200)
def _(r):
    rows = _runner_at_512(r)

    def point(model: str, batch: int) -> str:
        row = rows[model, batch]
        over = row["graph_ms"] / row["weight_kv_floor_ms"] - 1
        return f"{row['graph_ms']:.2f} ms against {row['weight_kv_floor_ms']:.2f} ms ({over:+.0%})"

    env = json.loads(r[RUNNER_H200])["environment"]
    return f"{env['gpu']}, {env['date']}: " + "; ".join(
        f"{MODEL_NAMES[m]} {point(m, 1)} at batch 1 and {point(m, 64)} at batch 64"
        for m in ("opt-13b", "llama-2-7b")
    )


def _h200_decode_batch_1() -> dict[str, dict]:
    """The batch-1 decode step at 512 tokens of context (the runner's synchronous wall time) as
    the shipped single-GPU H200 profiles of OPT-13B and Llama-2-7B measured it, with their dates."""
    out = {}
    for model in ("opt-13b", "llama-2-7b"):
        doc = json.loads((ROOT / "kvsim" / "cost" / "profiles" / f"{model}@h200-141gb.json").read_text())
        (step,) = (m for m in doc["measurements"]["decode"] if (m["batch"], m["total_context"]) == (1, 512))
        out[model] = {"wall_s": step["wall_s"], "date": doc["created"][:10]}
    return out


H200_DECODE_BATCH_1 = Local(
    "h200-decode-batch-1",
    _h200_decode_batch_1,
    "the shipped H200 profiles' decode measurements (kvsim/cost/profiles/*@h200-141gb.json)",
)


@figure("calibration.h200-vs-runner", H200_DECODE_BATCH_1, RUNNER_H200)
def _(r):
    rows, date = _runner_at_512(r), json.loads(r[RUNNER_H200])["environment"]["date"]
    return "; ".join(
        f"{MODEL_NAMES[m]} {v['wall_s'] * 1e3:.2f} ms in its profile of {v['date']}, "
        f"{rows[m, 1]['graph_ms']:.2f} ms in the runner benchmark of {date}"
        for m, v in r[H200_DECODE_BATCH_1].items()
    )


@figure("calibration.time", PROFILES)
def _(r):
    return spread([d["calibration"]["total_seconds"] for _, d in measured(r[PROFILES])], "{:.0f}", " s")


@figure("calibration.a100-ratios", PROFILES)
def _(r):
    ratios = r[PROFILES]["opt-13b@a100-40gb"]["provenance"]["ratios"]
    return f"compute ×{ratios['compute']:.2f}, memory ×{ratios['memory']:.2f}, PCIe ×{ratios['pcie']:.1f}"


@figure("calibration.h200-ratios", PROFILES)
def _(r):
    from kvsim.hardware import load_gpu

    a, b = load_gpu("h100-sxm-80gb"), load_gpu("h200-141gb")
    ratios = {
        "memory": a.hbm_bandwidth / b.hbm_bandwidth,
        "compute": a.fp16_flops / b.fp16_flops,
        "PCIe": a.pcie_bandwidth / b.pcie_bandwidth,
    }
    same = [k for k, v in ratios.items() if abs(v - 1) < 5e-3]
    other = [f"{k} ×{v:.2f}" for k, v in ratios.items() if k not in same]
    return ", ".join(other) + (f", {' and '.join(same)} ×1.0" if same else "")


def transfer_rows(results: list[dict]) -> list[dict]:
    from kvsim.models import BUILTIN_CONFIGS

    order = list(BUILTIN_CONFIGS)
    return sorted(results, key=lambda x: (order.index(x["model"]), x["source"] != "h100-sxm-80gb"))


@figure("calibration.transfer", TRANSFER, block=True)
def _(r):
    lines = [
        "| model | direction | decode | prefill | block copy | swap |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for x in transfer_rows(r[TRANSFER]):
        cells = []
        for kind in ("decode", "prefill", "copy", "swap"):
            t, u = mape_worst(x["errors"][kind]["transferred"]), mape_worst(x["errors"][kind]["unchanged"])
            cells.append(t if t == u else f"{t} ({u})")
        direction = f"{GPU_NAMES[x['source']]} → {GPU_NAMES[x['target']]}"
        lines.append(f"| {x['model']} | {direction} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _transfer_range(results, kind: str, which: str, fmt: str = "{:.1f}") -> str:
    return spread([100 * x["errors"][kind][which]["mape"] for x in results], fmt)


for _kind in ("decode", "prefill"):
    for _which, _fmt in (("transferred", "{:.1f}"), ("unchanged", "{:.0f}")):
        _name = f"transfer.{_kind}.{_which}"
        FIGURES[_name] = Figure(
            _name,
            (TRANSFER,),
            lambda r, k=_kind, w=_which, f=_fmt: _transfer_range(r[TRANSFER], k, w, f),
            block=False,
        )


@figure("transfer.llama-2-13b-copies", TRANSFER)
def _(r):
    return spread(
        [
            100 * x["errors"]["copy"]["transferred"]["mape"]
            for x in r[TRANSFER]
            if x["model"] == "llama-2-13b"
        ],
        "{:.0f}",
    )


@figure("calibration.fit-range", PROFILES)
def _(r):
    values = [
        100 * d["fit_report"][k]["heldout"]["mape"]
        for _, d in measured(r[PROFILES])
        for k in ("decode", "prefill")
    ]
    return spread(values)


@figure("calibration.llama-3-8b-h100-copy", PROFILES)
def _(r):
    return pct(r[PROFILES]["llama-3-8b@h100-sxm-80gb"]["fit_report"]["copy"]["fitted"]["mape"], 0)


# Derived A100 profiles against Vidur's A100 operator timings (docs/calibration.md): the committed
# comparison, since Vidur's data is not in the repository.
A100_OPERATORS = Local(
    "a100-operators",
    lambda: pd.read_csv(ROOT / "benchmarks" / "results" / "a100_operators.csv"),
    "python benchmarks/calibration/a100_operators.py VIDUR_CHECKOUT (benchmarks/results/a100_operators.csv)",
)
A100_OPERATOR_TOKENS = {
    "decode": (1, 16, 64, 128, 256),
    "prefill": (16, 128, 256, 512, 1024, 2048, 4096, 8192),
}


def signed_pct(x: float) -> str:
    """``x`` as a whole signed percentage ("+0%", never "-0%"); blank where there is none."""
    return "" if pd.isna(x) else f"{round(100 * x):+d}%"


@figure("calibration.a100-operators", A100_OPERATORS, block=True)
def _(r):
    table = r[A100_OPERATORS]
    models = list(dict.fromkeys(table["model"]))
    # the rule's own error, for models Vidur measured on the source GPU as well
    ruled = {m for m in models if table.loc[table["model"] == m, "rule_error"].notna().any()}
    source = GPU_NAMES[table["source_gpu"].iloc[0]]
    header = ["step", "tokens"]
    for m in models:
        header += [f"{m} kvsim / Vidur (ms)", "error"] + ([f"on the {source}", "rule"] if m in ruled else [])
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    by_point = table.set_index(["model", "step", "tokens"])
    for step, counts in A100_OPERATOR_TOKENS.items():
        for n in counts:
            cells = []
            for m in models:
                x = by_point.loc[(m, step, n)] if (m, step, n) in by_point.index else None
                width = 4 if m in ruled else 2
                if x is None:
                    cells += [""] * width
                    continue
                cells += [f"{x['kvsim_a100_ms']:.1f} / {x['vidur_a100_ms']:.1f}", signed_pct(x["a100_error"])]
                cells += [signed_pct(x["source_error"]), signed_pct(x["rule_error"])] if m in ruled else []
            if any(cells):
                lines.append("| " + " | ".join([step, str(n), *cells]) + " |")
    return "\n".join(lines)


@figure("calibration.a100-operators.commit", A100_OPERATORS)
def _(r):
    return f"`{r[A100_OPERATORS]['vidur_commit'].iloc[0][:12]}`"


@figure("calibration.a100-operators.mean", A100_OPERATORS)
def _(r):
    """Mean |error| of the derived A100 profile, by model and step, over all token counts."""
    table = r[A100_OPERATORS]
    parts = [
        f"{model} {step} {pct(rows['a100_error'].abs().mean(), 0)} ({len(rows)} token counts "
        f"{rows['tokens'].min()}-{rows['tokens'].max()})"
        for (model, step), rows in table.groupby(["model", "step"], sort=False)
    ]
    return "; ".join(parts)


@figure("calibration.a100-operators.rule", A100_OPERATORS)
def _(r):
    """Mean |rule error| and its range, by step, where Vidur measured the source GPU too."""
    table = r[A100_OPERATORS].dropna(subset=["rule_error"])
    return "; ".join(
        f"{step} {pct(rows['rule_error'].abs().mean(), 0)} "
        f"({signed_pct(rows['rule_error'].min())} to {signed_pct(rows['rule_error'].max())})"
        for step, rows in table.groupby("step", sort=False)
    )


@figure("calibration.a100-operators.vidur-ratios", A100_OPERATORS, PROFILES)
def _(r):
    """Vidur's own A100 over H100 time at its fewest and most prefill tokens, beside the
    bandwidth and FLOP ratios the transfer rule used for the derived profile."""
    table = r[A100_OPERATORS].dropna(subset=["rule_error"])
    prefill = table[table["step"] == "prefill"].sort_values("tokens")
    fewest, most = prefill.iloc[0], prefill.iloc[-1]
    ratios = r[PROFILES][f"{fewest['model']}@a100-80gb"]["provenance"]["ratios"]
    measured = lambda x: x["vidur_a100_ms"] / x["vidur_source_ms"]
    return (
        f"×{measured(fewest):.2f} at {fewest['tokens']} token (the rule's HBM ratio: ×{ratios['memory']:.2f}) "
        f"and ×{measured(most):.2f} at {most['tokens']} tokens (its FLOP ratio: ×{ratios['compute']:.2f})"
    )


@figure("calibration.a100-operators.largest-prefill", A100_OPERATORS)
def _(r):
    table = r[A100_OPERATORS].dropna(subset=["rule_error"])
    x = table[table["step"] == "prefill"].sort_values("tokens").iloc[-1]
    return (
        f"{signed_pct(x['a100_error'])} on the A100 and {signed_pct(x['source_error'])} on the "
        f"{GPU_NAMES[x['source_gpu']]} at {x['tokens']} tokens"
    )


# Workloads (README, docs/workloads.md) ------------------------------------------------------------
STATS = [
    ("input mean", "input mean"),
    ("input p10", "input p10"),
    ("input median", "input p50"),
    ("input p90", "input p90"),
    ("input p99", "input p99"),
    ("output mean", "output mean"),
    ("output p10", "output p10"),
    ("output median", "output p50"),
    ("output p90", "output p90"),
    ("output p99", "output p99"),
]


def _difference(data: float, builtin: float) -> str:
    if round(data, 2) == round(builtin, 2):
        return "0"
    return f"{100 * (builtin - data) / data:+.1f}%".replace("-", "−")


@figure("workloads.sharegpt-table", BUILTINS, SHAREGPT_DATA, block=True)
def _(r):
    data, built = r[SHAREGPT_DATA]["stats"], r[BUILTINS]["sharegpt"]["stats"]
    lines = ["| statistic | data | built-in | difference |", "| --- | ---: | ---: | ---: |"]
    for label, key in STATS:
        fmt = "{:.2f}" if "mean" in key else "{:.0f}"
        lines.append(
            f"| {label} | {fmt.format(data[key])} | {fmt.format(built[key])} | "
            f"{_difference(data[key], built[key])} |"
        )
    d, b = data["spearman"], built["spearman"]
    lines.append(f"| Spearman(input, output) | {_num(d)} | {_num(b)} | {_num(b - d, sign=True)} |")
    return "\n".join(lines)


@figure("workloads.alpaca-table", BUILTINS, block=True)
def _(r):
    a = r[BUILTINS]["alpaca"]
    lines = [
        "| | sigma (assumed) | mu (solved) | target mean | built-in mean | median | p90 | p99 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for part in ("input", "output"):
        s, stats = a["summary"][part], a["stats"]
        lines.append(
            f"| {part} | {s['sigma']:.1f} | {s['mu']:.6f} | {s['target_mean']:.2f} | "
            f"{stats[part + ' mean']:.2f} | {stats[part + ' p50']:.0f} | {stats[part + ' p90']:.0f} | "
            f"{stats[part + ' p99']:.0f} |"
        )
    return "\n".join(lines)


def _num(x: float, sign: bool = False) -> str:
    """Three decimals, with a typographic minus as the docs write it."""
    return (f"{x:+.3f}" if sign else f"{x:.3f}").replace("-", "−")


FIGURES["alpaca.spearman"] = Figure(
    "alpaca.spearman", (BUILTINS,), lambda r: _num(r[BUILTINS]["alpaca"]["stats"]["spearman"]), False
)
FIGURES["alpaca.at-cap"] = Figure(
    "alpaca.at-cap", (BUILTINS,), lambda r: f"{r[BUILTINS]['alpaca']['at_cap']:,}", False
)
FIGURES["sharegpt.untruncated"] = Figure(
    "sharegpt.untruncated", (BUILTINS,), lambda r: pct(r[BUILTINS]["sharegpt"]["untruncated_over"]), False
)
FIGURES["sharegpt.summary-size"] = Figure(
    "sharegpt.summary-size",
    (BUILTINS,),
    lambda r: str(
        sum(np.size(v) for k, v in r[BUILTINS]["sharegpt"]["summary"].items() if k != "description")
    ),
    False,
)
FIGURES["sharegpt.rows"] = Figure(
    "sharegpt.rows", (SHAREGPT_DATA,), lambda r: f"{r[SHAREGPT_DATA]['rows']:,}", False
)
FIGURES["sharegpt.kept"] = Figure(
    "sharegpt.kept", (SHAREGPT_DATA,), lambda r: f"{r[SHAREGPT_DATA]['kept']:,}", False
)


@figure("sharegpt.readme", BUILTINS, SHAREGPT_DATA)
def _(r):
    b, d = r[BUILTINS]["sharegpt"]["stats"], r[SHAREGPT_DATA]["stats"]
    return (
        f"mean input {b['input mean']:.1f} / output {b['output mean']:.1f} tokens against the data's "
        f"{d['input mean']:.1f} / {d['output mean']:.1f}, Spearman {b['spearman']:.3f} vs {d['spearman']:.3f}"
    )


@figure("vidur.clip", VIDUR_CLIP)
def _(r):
    p, o = r[VIDUR_CLIP]["prompt"], r[VIDUR_CLIP]["output"]
    return (
        f"prompt mean / median / p99 = {p['mean']:.1f} / {p['median']:.0f} / {p['p99']:.0f} and output "
        f"{o['mean']:.1f} / {o['median']:.0f} / {o['p99']:.0f}"
    )


# -- markers in the documents ---------------------------------------------------------------------
INLINE = re.compile(r"<!-- figure: (?P<name>[\w.-]+) -->(?P<value>.*?)<!-- /figure -->")
BLOCK = re.compile(r"<!-- begin: (?P<name>[\w.-]+) -->\n(?P<value>.*?)\n<!-- end: (?P=name) -->", re.DOTALL)


def markers(text: str) -> list[tuple[str, bool]]:
    return [(m["name"], False) for m in INLINE.finditer(text)] + [
        (m["name"], True) for m in BLOCK.finditer(text)
    ]


def substitute(text: str, values: dict[str, str]) -> tuple[str, list[tuple[str, str, str]]]:
    """``text`` with every marked figure in ``values`` replaced; and (name, old, new) per change."""
    changes = []

    def inline(m):
        name = m["name"]
        if name not in values:
            return m[0]
        if values[name] != m["value"]:
            changes.append((name, m["value"], values[name]))
        return f"<!-- figure: {name} -->{values[name]}<!-- /figure -->"

    def block(m):
        name = m["name"]
        if name not in values:
            return m[0]
        new = f"\n{values[name]}\n"
        if new != m["value"]:
            changes.append((name, m["value"].strip("\n"), values[name]))
        return f"<!-- begin: {name} -->\n{new}\n<!-- end: {name} -->"

    return BLOCK.sub(block, INLINE.sub(inline, text)), changes


def png_software(data: bytes) -> str:
    """The Software text chunk of a PNG (matplotlib writes its version there)."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"tEXt":
            key, _, value = data[pos + 8 : pos + 8 + length].partition(b"\0")
            if key == b"Software":
                return value.decode("latin-1")
        pos += 12 + length
    return ""


def describe_change(name: str, old: str, new: str) -> str:
    if "\n" not in old and "\n" not in new:
        return f"  {name}: {old!r} -> {new!r}"
    diff = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
    return f"  {name}:\n" + "\n".join(f"      {line}" for line in list(diff)[2:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 listing every figure that differs"
    )
    parser.add_argument("--cheap", action="store_true", help="only the figures that take seconds to compute")
    parser.add_argument("--jobs", type=int, default=2, help="commands run at a time")
    parser.add_argument(
        "--list", action="store_true", help="list the figures and their commands, run nothing"
    )
    parser.add_argument("--verbose", action="store_true", help="print each command's run time")
    args = parser.parse_args(argv)

    texts = {path: path.read_text() for path in markdown_files()}
    used: dict[str, list[str]] = {}
    for path, text in texts.items():
        for name, is_block in markers(text):
            if name not in FIGURES:
                print(f"{path.relative_to(ROOT)}: unknown figure {name!r}", file=sys.stderr)
                return 2
            if FIGURES[name].block != is_block:
                print(
                    f"{path.relative_to(ROOT)}: figure {name!r} is a {'block' if FIGURES[name].block else 'inline value'}",
                    file=sys.stderr,
                )
                return 2
            used.setdefault(name, []).append(str(path.relative_to(ROOT)))

    if args.list:
        for name, fig in sorted(FIGURES.items()):
            where = ", ".join(sorted(set(used.get(name, [])))) or "(not quoted)"
            kind = "cheap" if fig.cheap else "slow"
            print(f"{name} [{kind}] in {where}")
            for dep in fig.deps:
                print(f"    {dep.command}")
        for path, (source, _) in FILES.items():
            kind = "cheap" if source.cheap else "slow"
            print(f"{path} [{kind}]\n    {source.command} --out {Path(path).parent}")
        return 0

    skipped = []
    wanted = []
    for name in used:
        fig = FIGURES[name]
        if args.cheap and not fig.cheap:
            skipped.append(f"{name} (not cheap)")
        elif fig.needs_data and not DATA.is_dir():
            skipped.append(f"{name} (no data at {DATA})")
        else:
            wanted.append(name)
    files = {} if args.cheap else FILES
    sources = {d for name in wanted for d in FIGURES[name].deps} | {s for s, _ in files.values()}
    started = time.monotonic()
    results = run_sources(sources, args.jobs, args.verbose)
    values = {name: FIGURES[name].render(Results(results, FIGURES[name].deps)) for name in wanted}

    drift = []
    for path, text in texts.items():
        new, changes = substitute(text, values)
        rel = path.relative_to(ROOT)
        drift += [f"{rel}:\n{describe_change(*c)}" for c in changes]
        if changes and not args.check:
            path.write_text(new)
    for rel, (source, name) in files.items():
        path, new = ROOT / rel, results[source][name]
        old = path.read_bytes() if path.exists() else b""
        if old == new:
            continue
        if rel.endswith(".png") and old and png_software(old) != png_software(new):
            skipped.append(f"{rel} (drawn by {png_software(old)!r}, this is {png_software(new)!r})")
            if args.check:
                continue
        drift.append(f"{rel}: {len(old):,} -> {len(new):,} bytes")
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(new)

    took = time.monotonic() - started
    print(
        f"{len(values)} figures{'' if args.cheap else f' and {len(files)} files'} from "
        f"{len(sources)} commands in {took:.0f} s",
        file=sys.stderr,
    )
    for item in skipped:
        print(f"skipped: {item}", file=sys.stderr)
    if not drift:
        print("every figure is up to date", file=sys.stderr)
        return 0
    print(("out of date" if args.check else "rewritten") + ":\n" + "\n".join(drift), file=sys.stderr)
    return 1 if args.check else 0


if __name__ == "__main__":
    sys.exit(main())
