"""The one exception hierarchy of torsh-gen.

Every error a user can cause is a ``TorshGenError`` whose message says what is wrong and
what to do; the CLI prints it as one line and exits with ``exit_code``.
"""

from __future__ import annotations


class TorshGenError(Exception):
    """Base of all errors torsh-gen reports to users."""

    exit_code = 1


class InputError(TorshGenError):
    """Bad input from the user: a file, an option, an array (exit code 2)."""

    exit_code = 2


class ModelLoadError(InputError):
    """A model file that cannot be read: not a model, truncated, corrupted, too large."""


class GraphError(InputError):
    """A graph that breaks the IR's rules: undefined values, cycles, inconsistent types."""


class UnsupportedOpError(TorshGenError):
    """An op (or op version) that torsh-gen does not implement."""

    exit_code = 3


class ExecutionError(TorshGenError):
    """An op failed while running a graph; the message names the node."""


class FormatError(ModelLoadError):
    """A .torsh file that is malformed, truncated or from an unknown format version."""
