"""`simcli` with fast-forward off: every engine step is its own SimPy event.

python benchmarks/vidur/kvsim_no_ff.py run ...   (the same options as `simcli run`)
"""

import sys

import kvsim.sim.engine as engine

engine.MAX_STEPS_PER_EVENT = 1

from kvsim.cli import main  # noqa: E402  (after the patch, so that no step runs without it)

if __name__ == "__main__":
    sys.argv[0] = "simcli"
    main()
