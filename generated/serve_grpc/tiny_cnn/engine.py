"""The inference engine: the model compiled by torsh-gen into ``artifact/`` (numpy + numba).

``Engine.run`` takes checked inputs by name and returns the outputs by name, in the
model's order. It is safe to call from several threads.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from .signature import OUTPUTS, example_inputs

log = logging.getLogger(__name__)

ENGINE = "compiled"


class Engine:
    """Loads the model once; ``run`` computes one request (or one micro-batch)."""

    def __init__(self, threads: int = 0) -> None:
        import numba

        from .artifact import Model

        # numba's thread count is per calling thread, so run() applies it each time.
        self._threads = min(threads, numba.config.NUMBA_NUM_THREADS) if threads else 0

        self._model = Model()
        # A compiled Model reuses preallocated buffers, so one call runs at a time.
        self._lock = threading.Lock()

    def run(self, inputs: dict) -> dict:
        """Outputs by name for inputs already checked against the signature."""
        with self._lock:
            if self._threads:
                import numba

                numba.set_num_threads(self._threads)
            results = self._model.run(**inputs)
        # Copy out of the model's reusable buffers before the next call overwrites them.
        return {spec.name: np.array(results[spec.name], copy=True) for spec in OUTPUTS}

    def warm_up(self) -> None:
        """Run once on example inputs so the first request does not pay for compilation."""
        try:
            self.run(example_inputs())
        except Exception as exc:  # a model may reject size-1 dims; serving still works
            log.warning("warm-up run failed (%s); the first request will be slower", exc)
