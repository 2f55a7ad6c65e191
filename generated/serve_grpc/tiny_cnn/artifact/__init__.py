"""artifact: a model compiled by torsh-gen 0.1.0 (target cpu).

    from artifact import run
    outputs = run(image=...)

``run(**inputs)`` returns a dict of numpy arrays, in graph order. ``Model`` is the
reusable form: construct it once (it maps the weights and preallocates buffers) and
call ``Model.run`` many times. ``INPUTS``/``OUTPUTS`` describe the signature; symbolic
dimensions (strings) take any size, consistently across inputs. This package needs
numpy, numba; it does not need torsh-gen.
"""

from __future__ import annotations

import os

# numba's OpenMP threads: let a worker spin ~3 ms (libgomp's documented default of
# 300,000 spins) before it sleeps. Without the explicit setting, the workers sleep
# between the kernels of a call after any idle pause, and a memory-bound model ran 2x
# slower for the next 20 calls (benchmarks/NOTES.md). Read once, when libgomp loads;
# a value the user set wins.
os.environ.setdefault("GOMP_SPINCOUNT", "300000")

from .model import INPUTS, OUTPUTS, Model

__all__ = ["INPUTS", "OUTPUTS", "Model", "run"]

_default: Model | None = None


def run(**inputs):
    """Run the model on named inputs with a shared ``Model`` instance."""
    global _default
    if _default is None:
        _default = Model()
    return _default.run(**inputs)
