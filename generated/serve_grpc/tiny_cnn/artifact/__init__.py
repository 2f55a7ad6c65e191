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

from .model import INPUTS, OUTPUTS, Model

__all__ = ["INPUTS", "OUTPUTS", "Model", "run"]

_default: Model | None = None


def run(**inputs):
    """Run the model on named inputs with a shared ``Model`` instance."""
    global _default
    if _default is None:
        _default = Model()
    return _default.run(**inputs)
