"""Shared plumbing for the three console scripts (`zeroseg`, `zeroseg-export`, `zeroseg-bench`).

`run_app` turns a `ZerosegError` into one line on stderr and exit status 2 (no traceback), and makes
Ctrl-C exit with 130 quietly.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
import typer.main

from zeroseg.errors import ZerosegError


def new_app(help_text: str) -> typer.Typer:
    """A Typer app with our defaults: no rich tracebacks, help on -h too."""
    return typer.Typer(
        help=help_text,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


def fail(message: str) -> None:
    """Raise the user-facing error for a bad argument."""
    raise ZerosegError(message)


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C with a command-specific line to print (e.g. how to resume)."""


def _report_interrupts(command: Any) -> None:
    """Make `command` print its "interrupted" line before exiting 130.

    Typer turns a KeyboardInterrupt inside a command into a silent `Exit(130)`; wrapping the
    (group's) `invoke` catches it first, whichever sub-command was running.
    """
    if getattr(command, "_zeroseg_interrupts", False):
        return
    original = command.invoke

    def invoke(ctx: typer.Context) -> Any:
        try:
            return original(ctx)
        except KeyboardInterrupt as exc:
            message = str(exc) if isinstance(exc, Interrupted) and str(exc) else "interrupted"
            typer.echo(message, err=True)
            raise typer.Exit(130) from None

    command.invoke = invoke  # type: ignore[method-assign]
    command._zeroseg_interrupts = True  # type: ignore[attr-defined]


def run_app(app: typer.Typer) -> None:
    """Run a Typer app; user errors become a one-line message and exit status 2, Ctrl-C prints
    "interrupted" (or the command's own line) and exits 130."""
    command = typer.main.get_command(app)
    _report_interrupts(command)
    try:
        command(prog_name=app.info.name or None)
    except ZerosegError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:  # outside a command (e.g. while importing)
        typer.echo("interrupted", err=True)
        sys.exit(130)


def parse_int_list(text: str, what: str) -> tuple[int, ...]:
    """Parse "1,2,3" into positive ints, or fail naming `what`."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ZerosegError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise ZerosegError(f"{what} must be positive integers, got {text!r}")
    return values
