"""The numba kernel of com.example::MyGelu: what compiled artifacts run.

An artifact compiled by torsh-gen imports ``compute`` from this module and calls it as
``compute(*inputs, **attributes)`` (attributes fixed at compile time); it must return the
output array (a tuple for several outputs). This module may import numpy, numba and this
package, never torsh-gen: artifacts run without it.

It starts out as a working kernel computing the same example math as ``reference.py``
(``y = x * sigmoid(alpha * x)``). Replace the loop body with your op's math, and keep
``reference.py`` in step: the tests compare the two.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _kernel(x: np.ndarray, alpha: float, out: np.ndarray) -> None:
    for i in range(x.size):
        v = x[i]
        out[i] = v / (1.0 + np.exp(-alpha * v))


def compute(x: np.ndarray, *, alpha: float = 1.0) -> np.ndarray:
    """``x * sigmoid(alpha * x)`` elementwise, in ``x``'s dtype (float16/32/64)."""
    x = np.asarray(x)
    work = x.astype(np.float32) if x.dtype == np.float16 else x  # numba has no float16 math
    out = np.empty(x.shape, work.dtype)
    _kernel(np.ascontiguousarray(work).reshape(-1), float(alpha), out.reshape(-1))
    return out.astype(x.dtype, copy=False)
