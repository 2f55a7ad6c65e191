"""The jinja environment for the Python backend's templates (``templates/python``).

Templates ship in the wheel as the package ``torsh_gen.templates`` (in a source checkout
``torsh_gen/templates`` links to the top-level ``templates/`` folder). StrictUndefined
turns a missing variable into an error instead of silently empty output.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jinja2


@functools.cache
def environment() -> jinja2.Environment:
    """The shared environment; templates are looked up by file name (``model.py.j2``)."""
    try:
        loader: jinja2.BaseLoader = jinja2.PackageLoader("torsh_gen.templates", "python")
    except (ModuleNotFoundError, ValueError):
        loader = jinja2.FileSystemLoader(Path(__file__).resolve().parents[3] / "templates" / "python")
    return jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(name: str, **values: object) -> str:
    """Render template ``name`` with ``values``."""
    return environment().get_template(name).render(**values)
