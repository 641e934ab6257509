"""Allocation policies by name. Each policy lives in its own module and registers itself there."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from kvsim.errors import KvsimError
from kvsim.policies.beam import BeamModel
from kvsim.policies.scheduler import Scheduler

# Modules that define policies; importing one registers its policies.
POLICY_MODULES = ("kvsim.policies.paged", "kvsim.policies.contiguous", "kvsim.policies.ft")


@dataclass(frozen=True)
class PolicyContext:
    """What every policy is built from: the cache's size and the batch limits."""

    num_blocks: int
    block_size: int
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    watermark: float = 0.01
    ft_batch_size: int | None = None  # FasterTransformer's batch; None: the most that fit
    # Sharing and preemption (used by policies whose KV manager supports sharing)
    preemption: str = "recompute"  # or "swap"
    swap_blocks: int = 0  # CPU swap space, in blocks
    prefix_caching: bool = False
    shared_prefix: bool = False  # requests start with a service-defined prefix, computed once
    beam: BeamModel = BeamModel()
    # The step scheduler: "v0" (a prefill or a decode per step, as the paper measured) or
    # "v1" (a token budget, chunked prefill, mixed steps: policy paged only)
    scheduler: str = "v0"
    long_prefill_token_threshold: int = 0  # v1: most prompt tokens of one request per step (0: the budget)
    max_num_partial_prefills: int = 1  # v1: most requests with an unfinished prompt at once


@dataclass(frozen=True)
class Policy:
    name: str
    description: str
    build: Callable[[PolicyContext], Scheduler]
    #: Does it ever preempt? A policy that reserves a request's whole life at admission
    #: does not, so ``--preemption`` / ``--swap-space`` mean nothing to it.
    preempts: bool = True


_POLICIES: dict[str, Policy] = {}


def register(name: str, description: str, preempts: bool = True):
    def decorator(build: Callable[[PolicyContext], Scheduler]):
        _POLICIES[name] = Policy(name, description, build, preempts)
        return build

    return decorator


def available_policies() -> dict[str, Policy]:
    for module in POLICY_MODULES:
        importlib.import_module(module)
    return dict(_POLICIES)


def get_policy(name: str) -> Policy:
    policies = available_policies()
    if name not in policies:
        raise KvsimError(f"unknown policy {name!r} (available: {', '.join(policies)})")
    return policies[name]
