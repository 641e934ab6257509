#!/usr/bin/env python3
"""Refit the beam-search model's defaults (``--beam-stay``, ``--beam-skew``) to the vLLM paper's
Fig. 15 and print the fit, its residuals and the parallel-sampling check.

    python benchmarks/calibration/fit_beam.py [--jobs 2]

Deterministic (seeded runs); the grid and setting are in kvsim/experiments/beam_fit.py. The
fitted values are the defaults in kvsim/config.py and kvsim/policies/beam.py: change them there
when this prints others.
"""

from __future__ import annotations

import argparse

from kvsim.experiments.beam_fit import (
    FIT_SETTING,
    PAPER_BEAM_SAVING,
    PAPER_SAMPLING_SAVING,
    fit_beam,
    sampling_check,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    print("setting:", ", ".join(f"{k} {v}" for k, v in FIT_SETTING.items()))
    fit, rows = fit_beam(jobs=args.jobs)
    print(
        f"{len(rows)} runs; best stay {fit.stay:g}, skew {fit.skew:g}, rms residual {100 * fit.rms:.2f} points"
    )
    for width, paper in PAPER_BEAM_SAVING.items():
        print(f"  beam width {width}: kvsim {fit.saving[width]:.2%}, paper {paper:.2%}")
    for n, saving in sampling_check(args.jobs).items():
        print(f"  n {n} (check): kvsim {saving:.2%}, paper {PAPER_SAMPLING_SAVING[n]:.2%}")


if __name__ == "__main__":
    main()
