"""The numpy reference kernel of com.example::MyGelu.

torsh-gen runs it to interpret models (``torsh-gen run``), to fold constants, and as the
oracle the tests compare the numba kernel (``kernels.py``) with. It is written for
clarity, not speed. Edit it together with ``kernels.py``: both must compute the same thing.

Example math, to replace with your op's: ``y = x * sigmoid(alpha * x)`` (SiLU for
alpha = 1, close to GELU for alpha = 1.702).
"""

from __future__ import annotations

import numpy as np


def compute(x: np.ndarray, *, alpha: float = 1.0) -> np.ndarray:
    """``x * sigmoid(alpha * x)`` elementwise, in float64, returned in ``x``'s dtype."""
    x = np.asarray(x)
    xd = x.astype(np.float64)
    y = xd / (1.0 + np.exp(-alpha * xd))
    return np.asarray(y, dtype=x.dtype)
