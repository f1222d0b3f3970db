"""Shared plumbing for the three console scripts (`zeroseg`, `zeroseg-export`, `zeroseg-bench`).

`run_app` turns a `ZerosegError` or a usage error (an unknown option, a missing argument, a value of
the wrong type) into one line `error: ...` on stderr and exit status 2 (no traceback, no usage box),
and makes Ctrl-C exit with 130 quietly.

Every app `new_app` makes checks its numeric options before any command runs (`check_numeric_options`):
a float must be finite (never NaN or +-inf), and an integer must be >= 1 (a count: threads, workers,
batch sizes, replicas, ...) unless its option declares its own range with typer's `min=` / `max=`
(`min=0` where 0 means "off" or "the default", as for seeds and warm-up calls).
"""

from __future__ import annotations

import math
import sys
import typing
from collections.abc import Iterator
from typing import Any

import typer
import typer.core
import typer.main

from zeroseg.errors import ZerosegError

try:  # typer >= 0.20 carries its own copy of click
    from typer._click import exceptions as _click_errors
except ImportError:  # pragma: no cover - older typer runs on click
    from click import exceptions as _click_errors  # type: ignore[no-redef]


class CheckedGroup(typer.core.TyperGroup):
    """The command group of every zeroseg app: its numeric options are checked (`check_numeric_options`)
    however it is run (`run_app`, typer's `CliRunner`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        check_numeric_options(self)


def new_app(help_text: str) -> typer.Typer:
    """A Typer app with our defaults: no rich tracebacks, help on -h too, numeric options checked."""
    return typer.Typer(
        help=help_text,
        cls=CheckedGroup,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


def iter_params(command: Any) -> Iterator[tuple[Any, Any]]:
    """(command, parameter) for every parameter of a click command and of its sub-commands."""
    for sub in getattr(command, "commands", {}).values():
        yield from iter_params(sub)
    for param in command.params:
        yield command, param


def numeric_kind(param: Any) -> type | None:
    """`int` or `float` for a numeric parameter (or a list / tuple of one kind of number), else None."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None:
        kind = descriptor.annotation
        items = set(typing.get_args(kind))
        if typing.get_origin(kind) in (list, tuple) and len(items) == 1:
            kind = items.pop()
    else:  # pragma: no cover - click parameter types (older typer)
        kind = {"float": float, "integer": int}.get(getattr(param.type, "name", ""))
    return kind if kind in (int, float) else None


def accepted_range(param: Any) -> tuple[float, float]:
    """The closed range a numeric parameter accepts: its declared `min=` / `max=`, else [1, inf) for an
    integer (a count) and any finite number for a float."""
    info = getattr(getattr(param, "type_descriptor", None), "parameter_info", None)
    low, high = (info.min, info.max) if info is not None else (getattr(param.type, "min", None), None)
    if numeric_kind(param) is int and low is None and high is None:
        return 1, math.inf
    return (-math.inf if low is None else low), (math.inf if high is None else high)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def describe_accepted(param: Any) -> str:
    """What a numeric parameter accepts, in words: 'a positive integer', 'a finite number in [0, 1]'."""
    low, high = accepted_range(param)
    noun = "an integer" if numeric_kind(param) is int else "a finite number"
    if noun == "an integer" and (low, high) == (1, math.inf):
        return "a positive integer"
    if low > -math.inf and high < math.inf:
        return f"{noun} in [{_number(low)}, {_number(high)}]"
    if low > -math.inf:
        return f"{noun} >= {_number(low)}"
    return f"{noun} <= {_number(high)}" if high < math.inf else noun


def param_name(param: Any) -> str:
    """How the user writes a parameter: its long option (`--batch-size`) or an argument's name."""
    options = [o for o in getattr(param, "opts", []) if o.startswith("--")]
    return max(options, key=len) if options else str(param.human_readable_name)


def check_number(param: Any, value: Any) -> None:
    """Refuse a parsed value outside what `param` accepts (`describe_accepted`).

    Raises:
        ZerosegError: "--batch-wait-ms must be a finite number, got nan".
    """
    kind = numeric_kind(param)
    low, high = accepted_range(param)
    for item in value if isinstance(value, list | tuple) else (value,):
        if item is None or isinstance(item, bool) or not isinstance(item, int | float):
            continue
        if (kind is float and not math.isfinite(item)) or not low <= item <= high:
            raise ZerosegError(f"{param_name(param)} must be {describe_accepted(param)}, got {item}")


def check_numeric_options(command: Any) -> Any:
    """Make every numeric parameter of `command` (and its sub-commands) refuse what `describe_accepted`
    excludes, as it is parsed: before the command runs, so nothing is started or written.

    Idempotent; returns `command`.
    """
    for _, param in iter_params(command):
        if numeric_kind(param) is None or getattr(param, "_zeroseg_checked", False):
            continue
        original = param.callback

        def callback(ctx: Any, param: Any, value: Any, original: Any = original) -> Any:
            check_number(param, value)
            return value if original is None else original(ctx, param, value)

        param.callback = callback
        param._zeroseg_checked = True
    return command


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

    def invoke(ctx: typer.Context) -> None:  # a command's return value is not an exit status
        try:
            original(ctx)
        except KeyboardInterrupt as exc:
            message = str(exc) if isinstance(exc, Interrupted) and str(exc) else "interrupted"
            typer.echo(message, err=True)
            raise typer.Exit(130) from None

    command.invoke = invoke  # type: ignore[method-assign]
    command._zeroseg_interrupts = True  # type: ignore[attr-defined]


def usage_line(exc: Any) -> str:
    """A click usage error in one line: what is wrong and where the help is.

    A numeric value typer itself refused (not a number, outside a declared `min=` / `max=`) is worded
    as `check_number` words it.
    """
    param = getattr(exc, "param", None)
    if param is not None and numeric_kind(param) is not None:
        errors = getattr(exc.__cause__, "errors", None)  # typer's pydantic ValidationError
        given = errors()[0].get("input") if callable(errors) and errors() else None
        message = f"{param_name(param)} must be {describe_accepted(param)}"
        message += "" if given is None else f", got {given}"
    else:
        message = " ".join(exc.format_message().split()).rstrip(".")
        message = message[:1].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)
    return message if ctx is None else f"{message}; see '{ctx.command_path} -h'"


def run_app(app: typer.Typer) -> None:
    """Run a Typer app; user errors (a `ZerosegError` or a usage error) become a one-line message and
    exit status 2, Ctrl-C prints "interrupted" (or the command's own line) and exits 130."""
    command = check_numeric_options(typer.main.get_command(app))
    _report_interrupts(command)
    try:
        status = command.main(prog_name=app.info.name or None, standalone_mode=False)
    except ZerosegError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except _click_errors.UsageError as exc:
        if type(exc).__name__ != "NoArgsIsHelpError":  # `zeroseg` alone: its help was printed
            typer.echo(f"error: {usage_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    except _click_errors.ClickException as exc:
        typer.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except KeyboardInterrupt:  # outside a command (e.g. while importing)
        typer.echo("interrupted", err=True)
        sys.exit(130)
    if status:  # typer.Exit(code) inside a command, or 130 after Ctrl-C
        sys.exit(status)


def parse_int_list(text: str, what: str) -> tuple[int, ...]:
    """Parse "1,2,3" into positive ints, or fail naming `what`."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ZerosegError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise ZerosegError(f"{what} must be positive integers, got {text!r}")
    return values
