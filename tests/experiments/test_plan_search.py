"""The planner's parts on cheap synthetic situations: the bisection and the replica search on
known thresholds, the stability test on simulated queues whose load is known, the judging of
a run against SLOs, and the parsing of SLOs and price tables."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvsim.errors import KvsimError
from kvsim.experiments.plan import (
    MAX_QUEUE_DRIFT,
    Slo,
    bisect_capacity,
    distinct_notes,
    judge,
    load_prices,
    queue_drift,
    smallest_passing,
)


def threshold_judge(capacities: dict, served: dict | None = None, log: list | None = None):
    """A round judge for ``bisect_capacity``: key k passes at rate r iff r <= capacities[k];
    a failing probe reports ``served[k]`` as what it served while overloaded (or nothing)."""

    def judge_round(probes):
        if log is not None:
            log.append(probes)
        return [(rate <= capacities[key], None if served is None else served[key]) for key, rate in probes]

    return judge_round


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.floats(0.2, 40.0),
    tolerance=st.sampled_from([0.01, 0.03, 0.05, 0.2]),
    served=st.one_of(st.none(), st.floats(0.0, 100.0)),
)
def test_bisection_brackets_the_threshold_within_tolerance(capacity, tolerance, served):
    """Whatever an overloaded probe claims to have served (a guess only places the next probe),
    the answer is a rate that passed, the bracket holds the threshold, and it is as tight as
    asked."""
    target, floor = 20.0, 0.1
    brackets = bisect_capacity(
        ["k"], threshold_judge({"k": capacity}, {"k": served}), target, tolerance, floor
    )
    b = brackets["k"]
    if capacity >= target:
        assert b.capacity == target and b.hi is None
        return
    assert b.lo <= capacity < b.hi
    assert b.hi - b.lo <= tolerance * b.hi


def test_bisection_gives_zero_when_even_the_floor_fails():
    b = bisect_capacity(["k"], threshold_judge({"k": 0.01}), 20.0, 0.05, floor=0.5)["k"]
    assert b.capacity == 0 and b.hi <= 0.5


def test_an_overloaded_probe_s_throughput_saves_rounds():
    """When an overloaded replica serves its capacity, the next probe goes just above it: the
    bracket closes in fewer rounds than halving down from the target."""
    capacity = 5.2
    plain, informed = [], []
    bisect_capacity(["k"], threshold_judge({"k": capacity}, log=plain), 20.0, 0.05, 0.1)
    bisect_capacity(["k"], threshold_judge({"k": capacity}, {"k": capacity}, informed), 20.0, 0.05, 0.1)
    assert len(informed) < len(plain)


def test_bisection_runs_all_keys_in_lockstep():
    """One judge call per round covers every open key (so their probes run in parallel)."""
    capacities = {("a", 0): 3.0, ("a", 1): 3.3, ("b", 0): 11.0}
    log = []
    brackets = bisect_capacity(list(capacities), threshold_judge(capacities, log=log), 20.0, 0.05, 0.1)
    assert log[0] == [(key, 20.0) for key in capacities]
    assert all(len({key for key, _ in round_}) == len(round_) for round_ in log)
    assert all(brackets[k].lo <= c < brackets[k].hi for k, c in capacities.items())


@settings(max_examples=200, deadline=None)
@given(needed=st.integers(1, 30), start=st.integers(1, 30), limit=st.integers(1, 30))
def test_smallest_passing_finds_the_threshold_from_any_start(needed, start, limit):
    """Passing iff count >= needed: the search answers ``needed`` (None beyond the limit), and
    it has seen one fewer fail."""
    seen = {}

    def judge_round(probes):
        for key, n in probes:
            seen[n] = n >= needed
        return [n >= needed for _, n in probes]

    answer = smallest_passing({"k": start}, judge_round, limit)["k"]
    if needed > limit:
        assert answer is None
    else:
        assert answer == needed
        assert answer == 1 or seen[answer - 1] is False


def lindley_queue(load: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Arrival times and queueing delays of a single server with Poisson arrivals (rate 1)
    and exponential service of mean ``load`` (Lindley's recursion)."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0, n)
    service = rng.exponential(load, n)
    delay = np.zeros(n)
    for i in range(1, n):
        delay[i] = max(0.0, delay[i - 1] + service[i - 1] - gaps[i])
    return np.cumsum(gaps), delay


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_queue_drift_tells_a_loaded_stable_queue_from_an_overloaded_one(seed):
    arrival, delay = lindley_queue(0.9, 20_000, seed)
    assert abs(queue_drift(arrival, delay)) < MAX_QUEUE_DRIFT
    arrival, delay = lindley_queue(1.1, 20_000, seed)
    # delay grows by (service - gap) per arrival: 1.1 - 1 seconds per second of arrivals
    assert queue_drift(arrival, delay) == pytest.approx(0.1, rel=0.3)
    assert queue_drift(arrival, delay) > MAX_QUEUE_DRIFT


def test_queue_drift_of_a_single_instant_is_zero():
    assert queue_drift(np.array([3.0, 3.0]), np.array([0.0, 5.0])) == 0.0


def requests_frame(arrival, delay, ttft_extra, tpot, output_len, status=None) -> pd.DataFrame:
    arrival = np.asarray(arrival, float)
    admitted = arrival + np.asarray(delay, float)
    first = admitted + np.asarray(ttft_extra, float)
    output_len = np.asarray(output_len)
    finish = first + np.asarray(tpot, float) * (output_len - 1)
    return pd.DataFrame(
        {
            "status": status if status is not None else ["completed"] * len(arrival),
            "arrival": arrival,
            "admitted": admitted,
            "first_token": first,
            "finish": finish,
            "ttft": first - arrival,
            "e2e_latency": finish - arrival,
            "output_len": output_len,
        }
    )


def test_judge_measures_the_window_and_counts_rejections_against_goodput():
    rng = np.random.default_rng(0)
    n = 400
    arrival = np.sort(rng.uniform(0, 400, n))
    ttft = rng.uniform(0.1, 3.0, n)
    tpot = rng.uniform(0.02, 0.15, n)
    output_len = rng.integers(1, 50, n)
    status = np.where(rng.random(n) < 0.05, "rejected", "completed")
    frame = requests_frame(arrival, np.zeros(n), ttft, tpot, output_len, status)
    slos = (Slo.parse("ttft:p90:2s"), Slo.parse("tpot:mean:100ms"))
    verdict = judge(frame, 100.0, slos, min_goodput=None)

    inside = (arrival >= 100.0) & (status == "completed")
    multi = inside & (output_len > 1)
    assert verdict.stats["ttft_p90_s"] == pytest.approx(np.percentile(ttft[inside], 90))
    assert verdict.stats["tpot_mean_s"] == pytest.approx(tpot[multi].mean())
    met = inside & (ttft <= 2.0) & ((tpot <= 0.1) | (output_len == 1))
    assert verdict.goodput == pytest.approx(met.sum() / (arrival >= 100.0).sum())
    assert verdict.stable
    assert verdict.meets == (verdict.stats["ttft_p90_s"] <= 2.0 and verdict.stats["tpot_mean_s"] <= 0.1)
    demanding = judge(frame, 100.0, slos, min_goodput=min(1.0, verdict.goodput + 0.01))
    assert not demanding.meets


def test_judge_fails_a_growing_queue_even_within_the_slos():
    """The overload a short run hides: latencies still within the limits, but the queue grows."""
    arrival = np.linspace(0, 100, 500)
    frame = requests_frame(arrival, 0.05 * arrival, np.full(500, 0.1), np.full(500, 0.03), np.full(500, 20))
    verdict = judge(frame, 10.0, (Slo.parse("ttft:p90:10s"),), None)
    assert verdict.stats["ttft_p90_s"] < 10 and not verdict.stable and not verdict.meets


@pytest.mark.parametrize(
    "text, expected",
    [
        ("ttft:p90:2s", Slo("ttft", "p90", 2.0)),
        ("TPOT:mean:100ms", Slo("tpot", "mean", 0.1)),
        ("e2e:p99:30", Slo("e2e", "p99", 30.0)),
    ],
)
def test_slo_parses(text, expected):
    assert Slo.parse(text) == expected


@pytest.mark.parametrize(
    "text", ["ttft:p90", "lat:p90:2s", "ttft:p95:2s", "ttft:p90:fast", "ttft:p90:0s", "ttft:p90:-1s"]
)
def test_bad_slo_is_refused(text):
    with pytest.raises(KvsimError, match="--slo"):
        Slo.parse(text)


def test_shipped_prices_state_their_date_and_source():
    table = load_prices()
    assert table.date and table.source and table.prices
    assert all(price > 0 for price in table.prices.values())


@pytest.mark.parametrize(
    "content",
    ["[1, 2]", '{"prices": {}}', '{"prices": {"a100-80gb": -1}}', '{"prices": {"x": "cheap"}}', "{"],
)
def test_bad_price_tables_are_refused(tmp_path, content):
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(KvsimError, match="price table"):
        load_prices(path)


def test_notes_that_differ_only_in_numbers_are_one():
    notes = distinct_notes(
        ["cost at 56126 is extrapolated", "cost at 57000 is extrapolated", "other", "other"]
    )
    assert notes == ["cost at 56126 is extrapolated (and 1 more like it)", "other"]


def test_cost_per_token_follows_the_price(tmp_path):
    """A table twice as dear doubles the cost of the same plan (the arithmetic, not a run)."""
    from kvsim.experiments.plan import ConfigPlan

    check = [{"steady_throughput_output_tok_s": 1000.0}]
    cheap = ConfigPlan({"gpu": "a100-80gb"}, "a100-80gb", 2, [5.0], 10.0, 3, check, [], 1.5)
    dear = ConfigPlan({"gpu": "a100-80gb"}, "a100-80gb", 2, [5.0], 10.0, 3, check, [], 3.0)
    assert cheap.cost_per_hour == 3 * 2 * 1.5
    assert dear.cost_per_million_output_tokens == 2 * cheap.cost_per_million_output_tokens
    assert cheap.cost_per_million_output_tokens == pytest.approx(9.0 / (1000 * 3600) * 1e6)
    assert math.isnan(ConfigPlan({}, "x", 1, [0.0], 10.0, None, [], [], 1.0).cost_per_hour)
    json.dumps(cheap.hardware)


def test_a_configuration_that_cannot_run_is_kept_aside_not_searched():
    """Llama-2-70B's weights do not fit one A100-80GB; split over four GPUs they do."""
    from kvsim.experiments.plan import make_spec

    spec = make_spec(
        {"model": ["llama-2-70b"], "gpu": ["a100-80gb"], "tensor_parallel": [1, 4]}, [10.0], ["ttft:p90:2s"]
    )
    assert [bool(problem) for problem in spec.problems] == [True, False]
    with pytest.raises(KvsimError, match="no configuration can run"):
        make_spec({"model": ["llama-2-70b"], "gpu": ["a100-80gb"]}, [10.0], ["ttft:p90:2s"])


def test_ranking_and_pareto_front():
    """Cheapest first, failures last; the front keeps what no other beats on cost and latency."""
    from kvsim.experiments.plan import ConfigPlan, PlanResult, PlanSpec

    slo = Slo.parse("ttft:p90:2s")

    def config(name, replicas, price, ttft):
        check = [{"steady_throughput_output_tok_s": 100.0, slo.key: ttft, "goodput": 1.0}]
        return ConfigPlan({"gpu": name}, name, 1, [1.0], 10.0, replicas, check if replicas else [], [], price)

    cheap_slow, dear_fast, dominated = (
        config("a", 4, 1.0, 1.5),
        config("b", 2, 5.0, 0.2),
        config("c", 4, 2.0, 1.8),
    )
    failing = config("d", None, 0.1, 0.0)
    spec = PlanSpec({}, ({},), (10.0,), (slo,))
    result = PlanResult(spec, [dominated, failing, dear_fast, cheap_slow], pd.DataFrame(), [], {})
    assert result.ranked(10.0) == [cheap_slow, dominated, dear_fast, failing]
    assert result.cheapest(10.0) is cheap_slow
    assert set(map(id, result.pareto(slo, 10.0))) == {id(cheap_slow), id(dear_fast)}


def test_routers_share_one_bisection_and_each_get_a_cluster_check():
    """One replica has no router to use: two routers cost one bisection, not two, and each is
    still checked as a cluster."""
    from kvsim.experiments.plan import make_spec, plan_capacity

    grid = {"model": ["opt-13b"], "gpu": ["a100-40gb"], "router": ["round-robin", "least-loaded"]}
    spec = make_spec(grid, [3.0], ["ttft:p90:2s"], seeds=1, requests_per_replica=150, tolerance=0.2)
    result = plan_capacity(spec, jobs=2)
    probes = result.points[result.points["purpose"] == "capacity"]
    assert set(probes["router"]) == {"round-robin"}
    checks = result.points[result.points["purpose"] == "cluster check"]
    assert set(checks["router"]) == {"round-robin", "least-loaded"}
    assert result.configs[0].capacities == result.configs[1].capacities


def test_the_printed_plan_names_the_answer_and_why_others_fail():
    from rich.console import Console

    from kvsim.experiments.plan import ConfigPlan, PlanResult, PlanSpec
    from kvsim.reports.plan_report import print_plan

    slo = Slo.parse("ttft:p90:2s")
    row = {
        "steady_throughput_output_tok_s": 100.0,
        slo.key: 0.5,
        "goodput": 1.0,
        "cost_model": "m",
        "meets": True,
    }
    fewer = [{**row, slo.key: 30.0, "meets": False, "stable": False}]
    ok = ConfigPlan({"gpu": "a100-80gb"}, "a100-80gb", 1, [2.5, 2.9], 10.0, 4, [row], fewer, 2.0)
    broken = ConfigPlan(
        {"gpu": "a100-40gb"}, "a100-40gb", 1, [], 10.0, None, [], [], 1.0, "weights do not fit"
    )
    spec = PlanSpec({}, ({"gpu": "a100-80gb"}, {"gpu": "a100-40gb"}), (10.0,), (slo,), seeds=(0, 1))
    console = Console(record=True, width=200)
    print_plan(console, PlanResult(spec, [ok, broken], pd.DataFrame(), [], {"m": "measured"}))
    text = console.export_text()
    assert "Answer: 4 x a100-80gb (4 GPUs)" in text
    assert "3 replicas do not: 1 of 2 seeds miss" in text
    assert "a100-40gb: weights do not fit" in text
    assert "2.50-2.90" in text


def test_a_range_prints_an_answer_per_target_and_a_shared_failure_once():
    from rich.console import Console

    from kvsim.experiments.plan import ConfigPlan, PlanResult, PlanSpec
    from kvsim.reports.plan_report import print_plan

    slo = Slo.parse("ttft:p90:2s")
    row = {"steady_throughput_output_tok_s": 100.0, slo.key: 0.5, "goodput": 1.0, "cost_model": "m"}
    configs = [
        answer
        for target, replicas in ((5.0, 2), (10.0, 4))
        for answer in (
            ConfigPlan({"gpu": "a100-80gb"}, "a100-80gb", 1, [2.9], target, replicas, [row], [], 2.0),
            ConfigPlan(
                {"gpu": "a100-40gb"}, "a100-40gb", 1, [], target, None, [], [], 1.0, "weights do not fit"
            ),
        )
    ]
    spec = PlanSpec({}, ({"gpu": "a100-80gb"}, {"gpu": "a100-40gb"}), (5.0, 10.0), (slo,), seeds=(0,))
    console = Console(record=True, width=200)
    print_plan(console, PlanResult(spec, configs, pd.DataFrame(), [], {"m": "measured"}))
    text = console.export_text()
    assert "Answer: 2 x a100-80gb (2 GPUs) serve 5 req/s" in text
    assert "Answer: 4 x a100-80gb (4 GPUs) serve 10 req/s" in text
    assert text.count("a100-40gb: weights do not fit") == 1
