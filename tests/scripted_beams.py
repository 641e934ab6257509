"""A beam model without chance, shared by the tests that count beam forks and copies by hand."""

from dataclasses import dataclass

import numpy as np

from kvsim.policies.beam import BeamModel


@dataclass(frozen=True)
class ScriptedBeams(BeamModel):
    """Every reselection picks the same parents, ``script`` (one per beam), whatever it draws."""

    script: tuple[int, ...] = ()

    def parents(self, rng, width):
        return np.array(self.script)
