"""Shared plumbing for the three console scripts (`zeroseg`, `zeroseg-export`, `zeroseg-bench`).

`run_app` turns a `ZerosegError` into one line on stderr and exit status 2 (no traceback), and makes
Ctrl-C exit with 130 quietly.
"""

from __future__ import annotations

import sys

import typer

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


def run_app(app: typer.Typer) -> None:
    """Run a Typer app; user errors become a one-line message and exit status 2."""
    try:
        app()
    except ZerosegError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
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
