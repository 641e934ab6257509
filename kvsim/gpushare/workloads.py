"""Paella's workloads: which model each job is for, and when it arrives.

Jobs arrive with log-normal gaps (sigma 1.5 or 2 in Paella: bursty), mu = ln(mean gap) -
sigma^2/2 so that the mean gap is exactly 1/rate; the first job arrives at t = 0. Each job's
model is drawn independently with the mix's probabilities. A model holds at most ``caps`` of
its jobs outstanding (admitted, not finished); a job arriving beyond that waits at its client
until one finishes, and its latency counts from its arrival.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvsim.errors import KvsimError


@dataclass(frozen=True)
class Mix:
    name: str
    models: tuple[str, ...]
    probabilities: tuple[float, ...]
    caps: tuple[int, ...]  # most outstanding jobs per model


#: Paella's eight torchvision models (torchvision's builder names), the ones
#: ``simcli gpushare profile`` measures by default.
PAELLA_MODELS = (
    "mobilenet_v2",
    "densenet121",
    "googlenet",
    "inception_v3",
    "resnet18",
    "resnet34",
    "resnet50",
    "squeezenet1_1",
)
#: How each is built to run as Paella served it, and as kvsim measures and replays it: batch 1
#: of one 224x224 image, and no auxiliary classifier heads (they only run in training).
INPUT_SHAPE = (1, 3, 224, 224)
BUILD_OPTIONS = {
    "googlenet": {"aux_logits": False, "init_weights": False},
    "inception_v3": {"aux_logits": False, "init_weights": False},
}

MIXES: dict[str, Mix] = {
    mix.name: mix
    for mix in (
        Mix(
            "paella-8",
            PAELLA_MODELS,
            (0.257, 0.0706, 0.0546, 0.0138, 0.272, 0.168, 0.0745, 0.0895),
            (36, 10, 8, 2, 38, 24, 10, 13),
        ),
        Mix("extremes", ("resnet18", "inception_v3"), (0.952, 0.048), (119, 6)),
    )
}


def load_mix(name: str) -> Mix:
    if name not in MIXES:
        raise KvsimError(f"unknown mix {name!r} (mixes: {', '.join(MIXES)})")
    return MIXES[name]


@dataclass(frozen=True)
class JobStream:
    arrivals: np.ndarray  # seconds, non-decreasing, the first 0
    model_index: np.ndarray  # index into the mix's models


def generate_jobs(mix: Mix, rate: float, num_jobs: int, sigma: float, seed: int) -> JobStream:
    """``num_jobs`` jobs at mean rate ``rate`` (jobs/s); the same arguments give the same jobs.
    Gaps and models come from separate streams of ``seed``: another rate changes the gaps'
    scale only, never which model each job is for."""
    gaps_rng, models_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    mu = np.log(1.0 / rate) - sigma**2 / 2
    gaps = gaps_rng.lognormal(mu, sigma, num_jobs - 1)
    probabilities = np.asarray(mix.probabilities) / sum(mix.probabilities)
    models = models_rng.choice(len(mix.models), size=num_jobs, p=probabilities)
    return JobStream(np.concatenate([[0.0], np.cumsum(gaps)]), models)
