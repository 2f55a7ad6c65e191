"""The ``torsh-gen`` command: global options, config file, command groups, error handling.

Defaults for any command option can come from a config file: ``torsh-gen.toml`` in the
current folder or a parent, else ``$XDG_CONFIG_HOME/torsh-gen/config.toml`` (default
``~/.config/torsh-gen/config.toml``). Each table names a command::

    [inspect]
    format = "json"

Errors users can act on print as one line on stderr with exit code 2 (bad input) or
another non-zero code; ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import os
import sys
import tomllib
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer

from torsh_gen import __version__
from torsh_gen.cli import bench, compile, convert, inspect, ops, optimize, run, scaffold, validate
from torsh_gen.cli import prune as prune_cli
from torsh_gen.cli import quantize as quantize_cli
from torsh_gen.cli import system as system_cli
from torsh_gen.cli import targets as targets_cli
from torsh_gen.cli.common import STATE

app = typer.Typer(
    name="torsh-gen",
    help="Build-time model compiler and code generator.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.add_typer(inspect.app)
app.add_typer(run.app)
app.add_typer(convert.app)
app.add_typer(ops.app)
app.add_typer(optimize.app)
app.add_typer(validate.app)
app.add_typer(bench.app)
app.add_typer(compile.app)
app.add_typer(prune_cli.app)
app.add_typer(quantize_cli.app)
app.add_typer(system_cli.app)
app.add_typer(targets_cli.app)
if scaffold.GENERATORS:  # the group appears once one generator is built
    app.add_typer(scaffold.app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"torsh-gen {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show details and tracebacks on errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only results.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """torsh-gen: load a model, inspect, run, convert it."""
    STATE["verbose"] = verbose
    STATE["quiet"] = quiet


def config_path(cwd: Path | None = None) -> Path | None:
    """The config file in effect: torsh-gen.toml in cwd or a parent, else the user's one."""
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "torsh-gen.toml"
        if candidate.is_file():
            return candidate
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    user = base / "torsh-gen" / "config.toml"
    return user if user.is_file() else None


def load_config(path: Path | None, command: Any) -> dict[str, Any]:
    """The config file as click's default_map: command → parameter name → value.

    Keys are option names as typed on the command line (``format``, ``input-shape``);
    unknown commands or options are errors, so a typo does not pass silently.
    """
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as e:
        raise typer.BadParameter(f"config file {path} is not valid TOML: {e}") from None
    result: dict[str, Any] = {}
    for cmd_name, opts in data.items():
        sub = command.commands.get(cmd_name) if hasattr(command, "commands") else None
        if sub is None or not isinstance(opts, dict):
            raise typer.BadParameter(f"config file {path}: [{cmd_name}] is not a torsh-gen command")
        names = {o.lstrip("-").replace("_", "-"): p.name for p in sub.params for o in getattr(p, "opts", []) if o.startswith("--")}
        mapped = {}
        for key, value in opts.items():
            param = names.get(key.replace("_", "-"))
            if param is None:
                raise typer.BadParameter(f"config file {path}: '{key}' is not an option of '{cmd_name}'")
            mapped[param] = value
        result[cmd_name] = mapped
    return result


_GLOBAL_FLAGS = ("--verbose", "-v", "--quiet", "-q")


def hoist_global_flags(args: list[str]) -> list[str]:
    """Move --verbose/--quiet to the front so they work after the command name too."""
    flags = [a for a in args if a in _GLOBAL_FLAGS]
    return flags + [a for a in args if a not in _GLOBAL_FLAGS]


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    from torsh_gen.errors import TorshGenError

    args = hoist_global_flags(sys.argv[1:] if argv is None else list(argv))
    verbose = "--verbose" in args or "-v" in args
    command = typer.main.get_command(app)
    try:
        default_map = load_config(config_path(), command)
        command.main(args=args, prog_name="torsh-gen", default_map=default_map)
    except TorshGenError as e:
        _fail(str(e), e.exit_code, verbose)
    except typer.BadParameter as e:
        _fail(e.format_message(), 2, verbose)
    except KeyboardInterrupt:
        _fail("interrupted", 130, False)
    except MemoryError:
        _fail("out of memory; bind smaller shapes with --input-shape or use a bigger machine", 1, verbose)
    except Exception as e:  # an internal error: still one line unless --verbose
        _fail(f"internal error: {type(e).__name__}: {e} (rerun with --verbose for the traceback and report it)", 1, verbose)


def _fail(message: str, code: int, verbose: bool) -> None:
    if verbose:
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
