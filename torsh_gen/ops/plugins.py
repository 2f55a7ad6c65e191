"""Op plugins: packages that register ops through the ``torsh_gen.ops`` entry-point group.

A plugin (``torsh-gen scaffold op`` writes one) declares, in its pyproject::

    [project.entry-points."torsh_gen.ops"]
    my_op = "my_op_package.spec"

Loading the entry point imports that module, whose ``@op`` classes register themselves
like the built-in families do. The registry calls ``load_plugins`` once, the first time it
is consulted, so commands that never look an op up never import plugins. A plugin that
fails to import is reported in one warning line and skipped: one broken package must not
stop every command.
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points

GROUP = "torsh_gen.ops"
log = logging.getLogger(__name__)

#: Entry points loaded so far: name → value ("module" or "module:attr").
loaded: dict[str, str] = {}


def load_plugins() -> None:
    """Import every installed ``torsh_gen.ops`` entry point (each registers its ops)."""
    for ep in sorted(entry_points(group=GROUP), key=lambda e: (e.name, e.value)):
        _load(ep)


def _load(ep: EntryPoint) -> None:
    if ep.name in loaded:
        return
    try:
        ep.load()
    except Exception as e:  # a broken plugin: warn, keep the built-in ops working
        first = str(e).splitlines()[0] if str(e) else ""
        log.warning(
            "torsh-gen: op plugin %r (%s) failed to load and is skipped: %s%s",
            ep.name, ep.value, type(e).__name__, f": {first}" if first else "",
        )
        return
    loaded[ep.name] = ep.value
