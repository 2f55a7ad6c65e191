"""The Python backend (target ``cpu``): a standalone numpy/numba source package.

The backend is data plus small hooks (DESIGN rule 4): the op → emitter table
(``emitters``), the dtype map (``context.NP_DTYPES``), the reference-kernel fallback for
ops without an emitter (``reference``), and the package writer whose prologue and
epilogue are the templates in ``templates/python``. ``write_package`` is the entry point.
"""

from torsh_gen.backends.python.kernel_cache import precompile
from torsh_gen.backends.python.package import ArtifactInfo, PackageResult, write_package

__all__ = ["ArtifactInfo", "PackageResult", "precompile", "write_package"]
