"""The `lipsync` command: parses arguments, calls the library, prints. No pipeline logic lives here.

Each subcommand lives in its own module in this package and is registered in COMMANDS.
Conventions: `--json` prints exactly one JSON document on stdout; progress, warnings and errors go to
stderr; exit codes come from the error tree in pipeline.errors.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import click

from .. import __version__
from ..errors import LipsyncError, ValidationError
from ..safetext import printable
from ..secrets import RedactingFilter, record_environment, redact

ERROR_SHOWN = 2000  # characters of an error message shown (a provider's text can be any length)

# module name in pipeline.cli -> click command attribute
COMMANDS = {
    "probe": "probe",
    "prepare": "prepare",
    "submit": "submit",
    "animate": "animate",
    "speakers": "speakers",
    "emulator": "emulator",
    "run": "run",
    "status": "status",
    "init": "init",
    "verify": "verify",
    "report": "report",
    "review": "review",
    "plan": "plan",
    "cluster": "cluster",
}


def setup_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s" if verbose else "%(message)s"))
    root = logging.getLogger("lipsync")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def emit_json(doc: Any) -> None:
    """Print the one JSON document of a --json run on stdout."""
    click.echo(redact(json.dumps(doc, indent=2, ensure_ascii=False, default=str)))


_P = ParamSpec("_P")
_R = TypeVar("_R")


def handle_errors(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn a LipsyncError into a one-line message on stderr (or the JSON error document) and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        as_json = bool(kwargs.get("as_json"))
        try:
            return fn(*args, **kwargs)
        except LipsyncError as err:
            if as_json:
                emit_json({"ok": False, "error": err.to_dict()})
            click.echo(f"error: {printable(redact(err.render()), ERROR_SHOWN)}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")


class LazyGroup(click.Group):
    """Imports a subcommand's module only when it is used, so `lipsync probe` never loads the emulator.

    Also maps click's usage errors (a missing option, a bad value) to exit 6, bad input: click's own code for
    them is 2, which this CLI reserves for timeouts.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,  # ignored: this group always handles the exits itself
        **extra: Any,
    ) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            if isinstance(code, int) and code:  # a command's ctx.exit(code)
                sys.exit(code)
            return code
        except click.exceptions.NoArgsIsHelpError as err:
            err.show()
            sys.exit(0)
        except click.UsageError as err:
            err.show()
            sys.exit(ValidationError.exit_code)
        except click.ClickException as err:
            err.show()
            sys.exit(err.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(130)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                return None
            raise
        command: click.Command = getattr(module, COMMANDS[name])
        return command


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="lipsync")
@click.option("-v", "--verbose", is_flag=True, help="More detail on stderr.")
def main(verbose: bool) -> None:
    """Conform footage, lip-sync it through a PixVerse-model provider, and hand off the result."""
    # `kill` stops any command as cleanly as Ctrl-C: work in flight is recorded, half-written files removed.
    # Ctrl-C itself too, even when started by a parent that ignores SIGINT (Python then keeps it ignored).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    record_environment()
    setup_logging(verbose)
