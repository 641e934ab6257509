"""Capacity planning: how many replicas of which hardware serve a traffic within latency SLOs,
and what they cost.

For each configuration of the search space (GPU kind x tensor parallelism x the other listed
options), the planner

1. finds the most load one replica carries within the SLOs: a bisection on the request rate,
   per seed, every probe a simulation of ``requests_per_replica`` requests judged over its
   steady-state window (warm-up and drain excluded, as ``steady_state`` defines it). A probe
   passes when the queue is stable and every SLO holds. Stability is read from the queue's
   trend, not from how long the run was: the slope of each request's queueing delay (arrival
   to first scheduled) regressed on its arrival time. A stable queue's delay does not grow;
   an overloaded one's grows by (1 - served / offered) seconds per second;
2. for each target rate, takes ``ceil(target / capacity)`` replicas (the capacity of the
   worst seed), then checks that count by simulating the whole cluster at the target rate
   over the same seeds, adding replicas while the check fails and removing them while one
   fewer still passes, so the answer is the smallest count the cluster simulation accepts;
3. prices the replicas' GPU-hours from a price table, per hour and per million output tokens.

A range of target rates shares step 1: a replica's capacity does not depend on the target, so
the bisection runs once, from the largest target down. Probes run as points of the sweep
executor (``run_sweep``: local processes or Ray), one round of every configuration, seed and
target at a time. The bisection and the replica search are plain functions of a judge
(``bisect_capacity``, ``smallest_passing``), so they are tested on synthetic thresholds.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from kvsim.config import SimConfig, option_name
from kvsim.engine.metrics import STATUS_COMPLETED, STATUS_REJECTED, time_per_output_token
from kvsim.errors import KvsimError
from kvsim.experiments.ray_pool import ray_session
from kvsim.experiments.sweep import grid_points, run_sweep
from kvsim.hardware import load_gpu

#: The options a plan may search over (each a list); every other run option takes one value.
SEARCH_AXES = (
    "gpu",
    "tensor_parallel",
    "block_size",
    "policy",
    "scheduler",
    "max_num_seqs",
    "max_num_batched_tokens",
    "router",
)
#: Options the planner sets itself at every probe.
PLANNER_OWNED = ("rate", "seed", "num_replicas", "num_requests", "duration")
#: Requests per replica in every probe (a cluster of n replicas gets n times as many), so that
#: each replica sees as long a stretch of traffic at every rate: long enough that an overload
#: of a few percent shows in the queue's trend, and that a state a replica falls into only now
#: and then (a full cache that preemptions keep full) is met as often in the cluster check as
#: in the bisection.
DEFAULT_REQUESTS_PER_REPLICA = 3000
#: A probe is unstable when queueing delay grows faster than this, seconds per second of
#: arrivals: a replica that serves less than 99% of what arrives. A stable queue's fitted
#: slope stays orders of magnitude below it; an overloaded one's is 1 - served / offered.
MAX_QUEUE_DRIFT = 0.01
PRICES_FILE = Path(__file__).with_name("gpu_prices.json")

SLO_METRICS = {"ttft": "TTFT", "tpot": "TPOT", "e2e": "e2e latency"}
SLO_STATS = ("mean", "p50", "p90", "p99", "max")
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s)?\s*$")


# -- the question ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Slo:
    """One latency objective: ``stat`` of ``metric`` over the measured requests at most
    ``limit_s``; a single request meets it when its own ``metric`` is at most ``limit_s``."""

    metric: str
    stat: str
    limit_s: float

    @classmethod
    def parse(cls, text: str) -> "Slo":
        """``ttft:p90:2s``, ``tpot:mean:100ms``, ``e2e:p99:30`` (seconds without a unit)."""
        parts = text.split(":")
        if len(parts) != 3:
            raise KvsimError(f"--slo {text!r} must be METRIC:STAT:LIMIT, e.g. ttft:p90:2s")
        metric, stat, limit = (p.strip().lower() for p in parts)
        if metric not in SLO_METRICS:
            raise KvsimError(f"--slo {text!r}: metric must be one of {', '.join(SLO_METRICS)}")
        if stat not in SLO_STATS:
            raise KvsimError(f"--slo {text!r}: statistic must be one of {', '.join(SLO_STATS)}")
        match = _DURATION.match(limit)
        if not match:
            raise KvsimError(f"--slo {text!r}: limit must be a time such as 2s or 100ms")
        seconds = float(match.group(1)) / (1000 if match.group(2) == "ms" else 1)
        if not 0 < seconds < math.inf:
            raise KvsimError(f"--slo {text!r}: limit must be positive")
        return cls(metric, stat, seconds)

    @property
    def key(self) -> str:
        """Column name of the measured statistic: ``ttft_p90_s``."""
        return f"{self.metric}_{self.stat}_s"

    @property
    def name(self) -> str:
        """``p90 TTFT``."""
        return f"{self.stat} {SLO_METRICS[self.metric]}"

    @property
    def label(self) -> str:
        limit = f"{self.limit_s * 1e3:g} ms" if self.limit_s < 1 else f"{self.limit_s:g} s"
        return f"{self.name} <= {limit}"


@dataclass(frozen=True)
class PriceTable:
    """Dollars per GPU-hour by GPU name, with where the numbers come from."""

    prices: dict[str, float]
    date: str
    source: str
    path: str  # as the user named it; the shipped table by its place in the package

    def per_gpu_hour(self, gpu: str) -> float:
        return self.prices[gpu]


def load_prices(path: str | Path | None = None) -> PriceTable:
    """The shipped table (``gpu_prices.json``), or a file of the same form: ``{"date": ...,
    "source": ..., "prices": {"a100-80gb": 2.3, ...}}``, dollars per GPU-hour."""
    path = Path(path) if path is not None else PRICES_FILE
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise KvsimError(f"cannot read price table {path}: {err}") from None
    prices = raw.get("prices") if isinstance(raw, dict) else None
    if not isinstance(prices, dict) or not prices:
        raise KvsimError(f"price table {path} must hold an object 'prices': {{GPU name: dollars per hour}}")
    for gpu, price in prices.items():
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not 0 < price < math.inf:
            raise KvsimError(
                f"price table {path}: the price of {gpu} must be a positive number (got {price!r})"
            )
    return PriceTable(
        {str(gpu).lower(): float(p) for gpu, p in prices.items()},
        str(raw.get("date", "undated")),
        str(raw.get("source", "not stated")),
        f"{path.parent.parent.name}/{path.parent.name}/{path.name}" if path == PRICES_FILE else str(path),
    )


@dataclass(frozen=True)
class PlanSpec:
    """What the user asks: the traffic and fixed options (``base``), the configurations to
    compare (each a dict of ``SEARCH_AXES`` values), the target rates (ascending; each gets
    its own answer), the SLOs, and how hard to look."""

    base: dict
    configs: tuple[dict, ...]
    target_rates: tuple[float, ...]
    slos: tuple[Slo, ...]
    min_goodput: float | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    requests_per_replica: int = DEFAULT_REQUESTS_PER_REPLICA
    tolerance: float = 0.05
    max_replicas: int = 64
    prices: PriceTable = field(default_factory=load_prices)
    #: per configuration, why it cannot run at all ("" if it can): kept in the table, not searched
    problems: tuple[str, ...] = ()

    def config(self, hardware: dict, num_replicas: int = 1, **planner) -> SimConfig:
        """The run of ``hardware`` with ``num_replicas`` replicas and the planner's settings."""
        return SimConfig(
            **{**self.base, **hardware},
            num_replicas=num_replicas,
            num_requests=num_replicas * self.requests_per_replica,
            **planner,
        )


def make_spec(
    grid: dict[str, list],
    target_rates: Sequence[float],
    slo_texts: list[str],
    min_goodput: float | None = None,
    seeds: int = 3,
    requests_per_replica: int = DEFAULT_REQUESTS_PER_REPLICA,
    tolerance: float = 0.05,
    max_replicas: int = 64,
    prices: str | Path | None = None,
) -> PlanSpec:
    """The plan of ``grid`` (option -> values, as ``simcli plan`` parses them), every input
    checked before any simulation: lists only on search axes, no planner-owned option, target
    rates positive and distinct, a valid configuration at the largest target for every
    combination, a price for every GPU."""
    for name, values in grid.items():
        if name in PLANNER_OWNED:
            raise KvsimError(f"plan: {option_name(name)} is set by the planner (use --target-rate, --seeds)")
        if len(values) > 1 and name not in SEARCH_AXES:
            raise KvsimError(
                f"plan: {option_name(name)} takes one value (lists: {', '.join(map(option_name, SEARCH_AXES))})"
            )
    if grid.get("arrival") == ["trace"]:
        raise KvsimError("plan: --arrival trace replays fixed timestamps; the planner needs to set the rate")
    if not slo_texts:
        raise KvsimError("plan: give at least one --slo, e.g. --slo ttft:p90:2s")
    slos = tuple(Slo.parse(text) for text in slo_texts)
    if len({(s.metric, s.stat) for s in slos}) != len(slos):
        raise KvsimError("plan: an --slo is given twice")
    if not target_rates:
        raise KvsimError("plan: give at least one --target-rate")
    for rate in target_rates:
        _check_positive("--target-rate", rate)
    if len(set(target_rates)) != len(target_rates):
        raise KvsimError(f"plan: --target-rate {', '.join(map(str, target_rates))} names a rate twice")
    if min_goodput is not None and not (_finite(min_goodput) and 0 < min_goodput <= 1):
        raise KvsimError(f"plan: --goodput must be a share in (0, 1] (got {min_goodput})")
    if not (_finite(tolerance) and 0 < tolerance < 1):
        raise KvsimError(f"plan: --tolerance must be in (0, 1) (got {tolerance})")
    for flag, count in (
        ("--seeds", seeds),
        ("--max-replicas", max_replicas),
        ("--requests-per-replica", requests_per_replica),
    ):
        if count < 1:
            raise KvsimError(f"plan: {flag} must be at least 1 (got {count})")
    table = load_prices(prices)
    base = {name: values[0] for name, values in grid.items() if name not in SEARCH_AXES}
    axes = {name: values for name, values in grid.items() if name in SEARCH_AXES}
    spec = PlanSpec(
        base,
        tuple(grid_points(axes)),
        tuple(sorted(map(float, target_rates))),
        slos,
        min_goodput,
        tuple(range(seeds)),
        requests_per_replica,
        float(tolerance),
        max_replicas,
        table,
    )
    for hardware in spec.configs:
        # The largest run the plan may make: the whole cluster at the largest target.
        spec.config(hardware, rate=spec.target_rates[-1], num_replicas=max_replicas).validate()
        gpu = load_gpu(spec.config(hardware).gpu).name
        if gpu not in table.prices:
            raise KvsimError(
                f"plan: no price for GPU {gpu} in {table.path} (it prices {', '.join(table.prices)})"
            )
    problems = tuple(run_problem(spec.config(h, rate=spec.target_rates[-1])) for h in spec.configs)
    if all(problems):
        raise KvsimError(f"plan: no configuration can run: {problems[0]}")
    return replace(spec, problems=problems)


def run_problem(config: SimConfig) -> str:
    """Why ``config`` cannot run at all ('' if it can): a model whose weights do not fit, a
    tensor-parallel degree the model cannot split into, a profile for another setting. Found
    by simulating one request, which costs next to nothing, with its notes silenced (the
    probes repeat them)."""
    from kvsim.experiments.run import run

    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            run(config.with_overrides(num_requests=1, num_replicas=1))
        except KvsimError as err:
            return str(err)
    return ""


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _check_positive(flag: str, value: float) -> None:
    if not _finite(value) or value <= 0:
        raise KvsimError(f"plan: {flag} must be a positive number (got {value})")


# -- judging one run ------------------------------------------------------------------------------
def queue_drift(arrival: np.ndarray, delay: np.ndarray) -> float:
    """Least-squares slope of queueing delay on arrival time: seconds of extra delay per second
    of arrivals (0 for fewer than two distinct arrival times)."""
    if len(arrival) < 2 or np.ptp(arrival) == 0:
        return 0.0
    centred = arrival - arrival.mean()
    return float((centred * (delay - delay.mean())).sum() / (centred**2).sum())


@dataclass(frozen=True)
class Verdict:
    """A run judged over its measurement window: the SLO statistics (``Slo.key`` -> seconds),
    the share of requests that met every SLO, the queue's drift, and whether it passes."""

    stats: dict[str, float]
    goodput: float
    drift: float
    stable: bool
    meets: bool


def judge(
    requests: pd.DataFrame, window_start: float, slos: tuple[Slo, ...], min_goodput: float | None
) -> Verdict:
    """``requests`` (``Recorder.requests_frame()`` columns) judged over those that arrived from
    ``window_start`` on. Statistics are over the completed ones; a rejected request misses
    every SLO in the goodput share. A run passes when its queue is stable, each statistic is
    within its limit, and (if asked) the goodput share reaches ``min_goodput``."""
    measured = requests[requests["arrival"] >= window_start]
    done = measured[measured["status"] == STATUS_COMPLETED]
    tpot_all = np.full(len(done), np.nan)
    multi = done["output_len"].to_numpy() > 1
    tpot_all[multi] = time_per_output_token(
        done["first_token"].to_numpy(), done["finish"].to_numpy(), done["output_len"].to_numpy()
    )
    per_request = {"ttft": done["ttft"].to_numpy(), "tpot": tpot_all, "e2e": done["e2e_latency"].to_numpy()}
    stats = {slo.key: _statistic(per_request[slo.metric], slo.stat) for slo in slos}
    met = np.ones(len(done), dtype=bool)
    for slo in slos:
        values = per_request[slo.metric]
        met &= np.isnan(values) | (values <= slo.limit_s)  # one-token requests have no TPOT
    goodput = float(met.sum()) / len(measured) if len(measured) else float("nan")
    scheduled = measured[measured["admitted"].notna() & (measured["status"] != STATUS_REJECTED)]
    arrival = scheduled["arrival"].to_numpy()
    drift = queue_drift(arrival, scheduled["admitted"].to_numpy() - arrival)
    stable = drift <= MAX_QUEUE_DRIFT
    within = all(stats[slo.key] <= slo.limit_s for slo in slos)  # NaN (nothing measured) fails
    enough = min_goodput is None or goodput >= min_goodput
    return Verdict(stats, goodput, drift, stable, bool(stable and within and enough))


def _statistic(values: np.ndarray, stat: str) -> float:
    values = values[~np.isnan(values)]
    if not len(values):
        return float("nan")
    if stat == "mean":
        return float(values.mean())
    if stat == "max":
        return float(values.max())
    return float(np.percentile(values, float(stat[1:])))


def plan_point(point: dict) -> dict:
    """One probe, in a worker: simulate ``point['settings']`` and judge it against
    ``point['slos']``. The warnings and notes the run gave (a derived profile's extrapolation,
    a roofline fallback) come back in the row, so that the planner prints each once."""
    from kvsim.experiments.run import run

    settings = point["settings"]
    row = dict(settings)
    notes = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(notes):
        warnings.simplefilter("always")
        try:
            result = run(SimConfig(**settings))
        except KvsimError as err:
            return {**row, "meets": False, "notes": [], "error": str(err)}
    summary = result.summary
    last_arrival = float(np.nanmax(result.recorder.arrival))
    window = summary["steady_window_s"]
    start = last_arrival - window if window == window else -math.inf  # NaN: judge every request
    verdict = judge(result.recorder.requests_frame(), start, point["slos"], point["min_goodput"])
    row.update(
        {
            "meets": verdict.meets,
            "stable": verdict.stable,
            "queue_drift": verdict.drift,
            "goodput": verdict.goodput,
            **verdict.stats,
            "steady_throughput_req_s": summary["steady_throughput_req_s"],
            "steady_throughput_output_tok_s": summary["steady_throughput_output_tok_s"],
            "cost_model": result.cost_model.name,
            "cost_model_kind": result.cost_model.kind,
            "notes": sorted(
                {str(w.message) for w in caught} | set(filter(None, notes.getvalue().splitlines()))
            ),
            "error": "",
        }
    )
    return row


def distinct_notes(messages) -> list[str]:
    """Each kind of message once: messages that differ only in their numbers (a cost
    extrapolated at one context length, then at another) are one, the first of them shown
    with how many more there were."""
    kinds: dict[str, list[str]] = {}
    for message in sorted(set(messages)):
        kinds.setdefault(re.sub(r"\d+(?:\.\d+)?", "#", message), []).append(message)
    return [first + (f" (and {len(rest)} more like it)" if rest else "") for first, *rest in kinds.values()]


# -- searching ------------------------------------------------------------------------------------
#: After the first overloaded probe, the next one goes this far above what it served: an
#: overloaded replica serves about its capacity, so the bracket shrinks to near it in one
#: probe instead of halving down from the target.
OVERLOAD_MARGIN = 1.1


@dataclass
class Bracket:
    """A bisection's state: ``lo`` is the highest rate seen to pass (0: none yet), ``hi`` the
    lowest seen to fail (None: none yet, so the next probe is the target itself). ``guess``:
    a rate to probe next instead of the midpoint, once (from the first overloaded probe)."""

    target: float
    lo: float = 0.0
    hi: float | None = None
    guess: float | None = None

    def next_rate(self) -> float:
        if self.hi is None:
            return self.target
        guess, self.guess = self.guess, None
        if guess is not None and self.lo < guess < self.hi:
            return guess
        return (self.lo + self.hi) / 2

    def record(self, rate: float, passed: bool, overloaded_served: float | None = None) -> None:
        """A probe at ``rate``; ``overloaded_served``: what it served when its queue grew."""
        if passed:
            self.lo = max(self.lo, rate)
            return
        if self.hi is None and overloaded_served is not None:
            self.guess = OVERLOAD_MARGIN * overloaded_served
        self.hi = rate if self.hi is None else min(self.hi, rate)

    def done(self, tolerance: float, floor: float) -> bool:
        """Settled: one replica carries the target; or the bracket is within ``tolerance`` of
        its top; or even ``floor`` (the rate below which a replica is of no use) fails."""
        if self.hi is None:
            return self.lo >= self.target
        return self.hi - self.lo <= tolerance * self.hi or self.hi <= floor

    @property
    def capacity(self) -> float:
        """The most load seen to pass (0 when none did)."""
        return self.lo


def bisect_capacity(
    keys: list,
    judge_round: Callable[[list[tuple]], list[tuple[bool, float | None]]],
    target: float,
    tolerance: float,
    floor: float,
) -> dict:
    """Each key's capacity by bisection on the rate, all keys in lockstep: every round calls
    ``judge_round([(key, rate), ...])`` once, so that the caller runs the round's probes in
    parallel; it answers (passed, served rate if the queue grew, else None) per probe.
    Returns key -> Bracket."""
    brackets = {key: Bracket(target) for key in keys}
    while True:
        open_keys = [k for k, b in brackets.items() if not b.done(tolerance, floor)]
        if not open_keys:
            return brackets
        probes = [(k, brackets[k].next_rate()) for k in open_keys]
        for (key, rate), (passed, overloaded_served) in zip(probes, judge_round(probes)):
            brackets[key].record(rate, passed, overloaded_served)


def smallest_passing(
    start: dict, judge_round: Callable[[list[tuple]], list[bool]], limit: int
) -> dict[object, int | None]:
    """Each key's smallest count in [1, limit] that passes, searched from ``start[key]``: up
    while it fails, down while one fewer passes (passing is taken to be monotone in the
    count). ``judge_round([(key, count), ...])`` judges one round. None: even ``limit`` fails."""
    passes: dict = {key: {} for key in start}
    current = {key: min(max(1, n), limit) for key, n in start.items()}
    answer: dict = {}
    while current:
        probes = list(current.items())
        for (key, n), passed in zip(probes, judge_round(probes)):
            passes[key][n] = passed
            known = passes[key]
            if passed and (n == 1 or known.get(n - 1) is False):
                answer[key], _ = n, current.pop(key)
            elif passed:
                current[key] = n - 1
            elif known.get(n + 1) or n == limit:
                answer[key], _ = (n + 1 if known.get(n + 1) else None), current.pop(key)
            else:
                current[key] = n + 1
    return answer


# -- the plan -------------------------------------------------------------------------------------
@dataclass
class ConfigPlan:
    """One configuration's answer at one target rate."""

    hardware: dict
    gpu: str
    tensor_parallel: int
    capacities: list[float]  # per seed, req/s one replica carries (0: none of the rates tried)
    target_rate: float
    replicas: int | None  # the smallest count the cluster check accepted; None: none up to the limit
    check: list[dict]  # the cluster check's rows at ``replicas`` (one per seed)
    fewer_check: list[dict]  # the rows at one replica fewer (empty when replicas is 1)
    price_per_gpu_hour: float
    error: str = ""

    @property
    def capacity(self) -> float:
        """The capacity the replica count starts from: the worst seed's."""
        return min(self.capacities) if self.capacities else 0.0

    @property
    def gpus(self) -> int | None:
        return None if self.replicas is None else self.replicas * self.tensor_parallel

    @property
    def cost_per_hour(self) -> float:
        return math.nan if self.gpus is None else self.gpus * self.price_per_gpu_hour

    @property
    def output_tok_s(self) -> float:
        return (
            float(np.mean([r["steady_throughput_output_tok_s"] for r in self.check]))
            if self.check
            else math.nan
        )

    @property
    def cost_per_million_output_tokens(self) -> float:
        return self.cost_per_hour / (self.output_tok_s * 3600) * 1e6 if self.check else math.nan

    def worst(self, key: str) -> float:
        """The check's statistic ``key`` at its worst seed (what is held against the SLO)."""
        return max(r[key] for r in self.check) if self.check else math.nan

    @property
    def goodput(self) -> float:
        return min(r["goodput"] for r in self.check) if self.check else math.nan

    @property
    def spread(self) -> float:
        """The seeds' capacities' range as a share of their mean (0 for one seed)."""
        caps = self.capacities
        return (max(caps) - min(caps)) / np.mean(caps) if caps and np.mean(caps) > 0 else math.nan


@dataclass
class PlanResult:
    spec: PlanSpec
    configs: list[ConfigPlan]  # every configuration at every target rate
    points: pd.DataFrame  # every simulation the plan ran, with its verdict and purpose
    #: distinct warnings of the runs the answers rest on (each configuration's accepted cluster
    #: check at each target), each once; every run's own are in ``points``
    notes: list[str]
    cost_models: dict[str, str]  # name -> kind ("measured", "derived", "analytic") of those used

    def at(self, target: float) -> list[ConfigPlan]:
        """The configurations' answers at ``target``, one of the spec's target rates."""
        return [c for c in self.configs if c.target_rate == target]

    def ranked(self, target: float) -> list[ConfigPlan]:
        """The configurations that meet the SLOs at ``target``, cheapest per hour first (then
        per token), then those that do not."""
        return sorted(
            self.at(target),
            key=lambda c: (c.replicas is None, c.cost_per_hour, c.cost_per_million_output_tokens),
        )

    def cheapest(self, target: float) -> ConfigPlan | None:
        best = next(iter(self.ranked(target)), None)
        return best if best is not None and best.replicas is not None else None

    def table(self) -> pd.DataFrame:
        """One row per configuration and target rate: the targets in ascending order, each
        target's configurations ranked."""
        rows = []
        for target in self.spec.target_rates:
            for c in self.ranked(target):
                rows.append(
                    {
                        "target_rate": target,
                        **c.hardware,
                        "capacity_req_s": c.capacity,
                        "capacity_seed_min_req_s": min(c.capacities, default=math.nan),
                        "capacity_seed_max_req_s": max(c.capacities, default=math.nan),
                        "replicas": c.replicas,
                        "gpus": c.gpus,
                        "cost_per_hour": c.cost_per_hour,
                        "cost_per_million_output_tokens": c.cost_per_million_output_tokens,
                        **{f"{s.key}_at_target": c.worst(s.key) for s in self.spec.slos},
                        "goodput_at_target": c.goodput,
                        "error": c.error,
                    }
                )
        return pd.DataFrame(rows)

    def write_tables(self, out: Path) -> None:
        """``plan.csv`` (the ranked table) and ``points.csv`` (every simulation) in ``out``."""
        out.mkdir(parents=True, exist_ok=True)
        self.table().to_csv(out / "plan.csv", index=False)
        notes = self.points["notes"].map(lambda n: "; ".join(n) if isinstance(n, list) else "")
        self.points.assign(notes=notes).to_csv(out / "points.csv", index=False)

    def pareto(self, slo: Slo, target: float) -> list[ConfigPlan]:
        """The configurations no other beats, at ``target``, on both cost per hour and
        ``slo``'s statistic."""
        feasible = [c for c in self.at(target) if c.replicas is not None]
        return [
            c
            for c in feasible
            if not any(
                o is not c
                and o.cost_per_hour <= c.cost_per_hour
                and o.worst(slo.key) <= c.worst(slo.key)
                and (o.cost_per_hour < c.cost_per_hour or o.worst(slo.key) < c.worst(slo.key))
                for o in feasible
            )
        ]


def plan_capacity(
    spec: PlanSpec,
    jobs: int,
    on_round: Callable[[str, int], None] = lambda what, n: None,
    executor: str = "local",
    address: str | None = None,
) -> PlanResult:
    """Answer ``spec``: bisection per configuration and seed, once for every target (a
    replica's capacity does not depend on the target), then at each target the cluster check
    and the cost. ``on_round(what, points)`` is called before each round of simulations; the
    rounds run on ``executor`` (``run_sweep``'s), all of them in one Ray session on Ray."""
    all_rows: list[dict] = []

    def simulate(purpose: str, settings: list[dict]) -> list[dict]:
        on_round(purpose, len(settings))
        points = [{"settings": s, "slos": spec.slos, "min_goodput": spec.min_goodput} for s in settings]
        table = run_sweep(points, jobs, point=plan_point, executor=executor, address=address)
        rows = table.to_dict("records")
        all_rows.extend({"purpose": purpose, **row} for row in rows)
        return rows

    errors: dict[int, str] = {}

    def bisection_round(probes: list[tuple]) -> list[tuple[bool, float | None]]:
        settings = [
            spec.config(spec.configs[i], rate=rate, seed=seed, num_replicas=1).to_dict()
            for (i, seed), rate in probes
        ]
        rows = simulate("capacity", settings)
        for ((i, _), _), row in zip(probes, rows):
            if row["error"]:
                errors.setdefault(i, row["error"])
        return [
            (
                not row["error"] and bool(row["meets"]),
                None if row["error"] or row["stable"] else row["steady_throughput_req_s"],
            )
            for row in rows
        ]

    checks: dict[tuple[tuple[int, float], int], list[dict]] = {}

    def check_round(probes: list[tuple]) -> list[bool]:
        settings = [
            spec.config(spec.configs[i], rate=target, seed=seed, num_replicas=n).to_dict()
            for (i, target), n in probes
            for seed in spec.seeds
        ]
        rows = simulate("cluster check", settings)
        verdicts = []
        for j, (key, n) in enumerate(probes):
            seeds_rows = rows[j * len(spec.seeds) : (j + 1) * len(spec.seeds)]
            checks[(key, n)] = seeds_rows
            verdicts.append(all(not r["error"] and bool(r["meets"]) for r in seeds_rows))
        return verdicts

    errors.update({i: problem for i, problem in enumerate(spec.problems) if problem})
    # One replica has no router to use: configurations that differ only in it share a bisection.
    one_replica = [{k: v for k, v in h.items() if k != "router"} for h in spec.configs]
    shared = [one_replica.index(settings) for settings in one_replica]
    keys = [
        (i, seed)
        for i in range(len(spec.configs))
        if i not in errors and shared[i] == i
        for seed in spec.seeds
    ]
    # The bisection starts at the largest target (a replica carrying it needs no help at any
    # target) and gives up below the smallest target's share of the most replicas.
    floor = spec.target_rates[0] / spec.max_replicas
    with ray_session(jobs, address) if executor == "ray" else contextlib.nullcontext():
        brackets = bisect_capacity(keys, bisection_round, spec.target_rates[-1], spec.tolerance, floor)
        errors.update({i: errors[shared[i]] for i in range(len(spec.configs)) if shared[i] in errors})
        capacities = {
            i: [brackets[(shared[i], s)].capacity for s in spec.seeds] if i not in errors else []
            for i in range(len(spec.configs))
        }
        start = {
            (i, target): math.ceil(target / min(caps) - 1e-9)
            for i, caps in capacities.items()
            if caps and min(caps) > 0 and i not in errors
            for target in spec.target_rates
        }
        replicas = smallest_passing(start, check_round, spec.max_replicas) if start else {}

    configs = []
    for target in spec.target_rates:
        for i, hardware in enumerate(spec.configs):
            config = spec.config(hardware)
            n = replicas.get((i, target))
            error = errors.get(i, "")
            if not error and n is None:
                error = (
                    f"no rate down to {floor:.3g} req/s met the SLOs on one replica"
                    if (i, target) not in start
                    else f"{spec.max_replicas} replicas do not meet the SLOs at {target:g} req/s"
                )
            configs.append(
                ConfigPlan(
                    hardware,
                    load_gpu(config.gpu).name,
                    config.tensor_parallel,
                    capacities[i],
                    target,
                    n,
                    checks.get(((i, target), n), []) if n is not None else [],
                    checks.get(((i, target), n - 1), []) if n is not None and n > 1 else [],
                    spec.prices.per_gpu_hour(load_gpu(config.gpu).name),
                    error,
                )
            )
    points = pd.DataFrame(all_rows)
    notes = distinct_notes(note for c in configs for row in c.check for note in row["notes"])
    cost_models = {
        row["cost_model"]: row["cost_model_kind"]
        for row in all_rows
        if isinstance(row.get("cost_model"), str)
    }
    return PlanResult(spec, configs, points, notes, cost_models)
