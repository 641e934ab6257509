"""Beam search's parent draw (``BeamModel``) and how the scheduler forks and drops beams by it.

The draw is checked against the distribution its docstring defines, written out here:
new beam j keeps parent j with probability ``stay``, otherwise draws another rank r != j
with probability proportional to ``(r + 1) ** -skew``. With a fixed seed the frequencies are
deterministic; the tolerance is 5 binomial standard deviations of each frequency.
"""

import numpy as np
import pytest
from scripted_beams import ScriptedBeams

from kvsim.policies.beam import BeamModel
from kvsim.policies.paged import PagedKVManager
from kvsim.policies.request import Request
from kvsim.policies.scheduler import DECODE, PREFILL, Scheduler

WIDTH = 4
DRAWS = 4000  # parent draws of WIDTH beams each


def expected_parents(stay: float, skew: float, width: int) -> np.ndarray:
    """P[j, r]: probability that new beam j's parent is current rank r, by the definition."""
    drawn = np.array([[0.0 if r == j else (r + 1) ** -skew for r in range(width)] for j in range(width)])
    return stay * np.eye(width) + (1 - stay) * drawn / drawn.sum(axis=1, keepdims=True)


def observed_parents(model: BeamModel, width: int) -> np.ndarray:
    """Frequencies F[j, r] of parent rank r for new beam j over DRAWS draws."""
    rng = model.rng(request_id=0)
    counts = np.zeros((width, width))
    for _ in range(DRAWS):
        counts[np.arange(width), model.parents(rng, width)] += 1
    return counts / DRAWS


@pytest.mark.parametrize("stay, skew", [(0.0, 1.0), (0.0, 2.0), (0.5, 1.0), (0.3, 0.0)])
def test_parent_draw_follows_the_documented_distribution(stay, skew):
    expected = expected_parents(stay, skew, WIDTH)
    observed = observed_parents(BeamModel(stay=stay, skew=skew, seed=11), WIDTH)
    tolerance = 5 * np.sqrt(expected * (1 - expected) / DRAWS)
    assert (np.abs(observed - expected) <= tolerance).all(), (observed, expected)


def test_every_rank_fathers_beams_and_better_ranks_more_often():
    """Without ``stay``, every parent comes from the draw: all ranks occur, the best most."""
    observed = observed_parents(BeamModel(stay=0.0, skew=1.0, seed=5), WIDTH).mean(axis=0)
    assert (observed > 0).all()
    assert (np.diff(observed) < 0).all()


def test_a_beam_that_leaves_its_lineage_takes_another_beams():
    """Without ``stay`` no beam keeps its own parent, at every width (the fit relies on it)."""
    model = BeamModel(stay=0.0, skew=0.5)
    rng = model.rng(0)
    for width in (2, 3, 6):
        for _ in range(50):
            parents = model.parents(rng, width)
            assert (parents != np.arange(width)).all() and ((0 <= parents) & (parents < width)).all()


def test_stay_one_keeps_every_beam_on_its_own_parent():
    model = BeamModel(stay=1.0, skew=3.0)
    rng = model.rng(0)
    for _ in range(20):
        assert model.parents(rng, WIDTH).tolist() == list(range(WIDTH))


def test_draws_depend_only_on_seed_and_request():
    """A request forks the same way under every policy: its draws come from (seed, id)."""

    def draws(seed, request_id):
        model = BeamModel(seed=seed)
        rng = model.rng(request_id)
        return [model.parents(rng, WIDTH).tolist() for _ in range(30)]

    assert draws(1, 7) == draws(1, 7)
    assert draws(1, 7) != draws(1, 8) and draws(1, 7) != draws(2, 7)


def test_reselection_forks_a_parent_chosen_c_times_c_minus_1_times_and_drops_the_unchosen():
    """Beams 0..3 after one decode step share the prompt's block and own one block each.
    Parents (2, 0, 2, 2): beam 2 continues and is forked twice, beam 0 continues, beams 1
    and 3 are dropped. The three copies of beam 2 then share its partial last block: on the
    next step two of them copy it and the last writes in place."""
    kv = PagedKVManager(num_blocks=16, block_size=4, watermark=0.0)
    s = Scheduler(kv, max_num_seqs=8, max_num_batched_tokens=64, beam=ScriptedBeams(script=(2, 0, 2, 2)))
    request = Request(0, prompt_len=4, output_len=4, width=WIDTH, beam=True)
    s.add_request(request)
    plan = s.schedule()
    assert plan.kind == PREFILL
    s.complete(plan)
    old = list(request.seqs)
    assert s.counters.forks == WIDTH - 1
    prompt_block = kv.block_tables[old[0]][0]

    plan = s.schedule()
    assert plan.kind == DECODE and plan.block_copies == 0  # each beam starts a block of its own
    s.complete(plan)  # 6 tokens each: the prompt block plus one own block, 2 of 4 slots used
    new = request.seqs
    assert new[:2] == [old[2], old[0]]
    children = new[2:]
    assert not set(children) & set(old)
    assert s.counters.forks == WIDTH - 1 + 2
    for child in children:
        assert kv.block_tables[child] == kv.block_tables[old[2]] and s.owner[child] is request
        assert s.seq_table.num_tokens[child] == s.seq_table.num_tokens[old[2]]
        assert s.seq_table.remaining[child] == s.seq_table.remaining[old[2]]
    for dropped in (old[1], old[3]):
        assert dropped not in kv.block_tables and dropped not in s.owner
    assert kv.allocator.ref_count[prompt_block] == WIDTH
    assert kv.allocator.num_free == 16 - 3  # prompt block, beam 2's block, beam 0's block

    plan = s.schedule()
    assert plan.block_copies == 2
    s.complete(plan)
    while (plan := s.schedule()) is not None:
        s.complete(plan)
    assert not s.has_work() and kv.allocator.num_free == 16 and not s.owner
