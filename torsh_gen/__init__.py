"""torsh-gen: a build-time model compiler and code generator."""

__version__ = "0.1.0"
