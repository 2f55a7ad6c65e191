"""torsh-gen: a build-time model compiler and code generator."""

__version__ = "0.1.0"


def __getattr__(name: str):  # noqa: ANN202
    """``torsh_gen.from_torch`` without importing torch until it is used."""
    if name == "from_torch":
        from torsh_gen.frontends.torch import from_torch

        return from_torch
    raise AttributeError(f"module 'torsh_gen' has no attribute {name!r}")
