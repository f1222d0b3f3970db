"""zeroseg.utils.console: the plumbing of the three console scripts (numeric options, usage errors)."""

from __future__ import annotations

import importlib
import math

import pytest
import typer.core
import typer.main
from helpers import assert_one_line_error, run_console
from typer.testing import CliRunner

from zeroseg.errors import ZerosegError
from zeroseg.utils.console import accepted_range, check_number, iter_params, numeric_kind, param_name

#: prog -> the module holding its Typer `app` and console `main`.
SCRIPTS = {
    "zeroseg": "zeroseg.cli",
    "zeroseg-export": "zeroseg.export.cli",
    "zeroseg-bench": "zeroseg.bench.cli",
}


def _numeric_options() -> list[tuple[str, str, object]]:
    """(prog, command, parameter) of every int and float parameter of every command of every script."""
    found = []
    for prog, module in SCRIPTS.items():
        command = typer.main.get_command(importlib.import_module(module).app)
        for sub, param in iter_params(command):
            if numeric_kind(param) is not None and sub is not command:
                found.append((prog, sub.name, param))
    return found


NUMERIC = _numeric_options()


def _bad_values(param) -> list[str]:
    """Values `param` must refuse: NaN and +-inf for a float; below / above its range for an int."""
    if numeric_kind(param) is float:
        return ["nan", "inf", "-inf", "1e999"]
    low, high = accepted_range(param)
    values = ["x"]
    if low > -math.inf:
        values += [str(int(low) - 1), str(int(low) - 4)]
    if high < math.inf:
        values.append(str(int(high) + 1))
    return values


CASES = [
    pytest.param(prog, name, param_name(param), value, id=f"{prog} {name} {param_name(param)} {value}")
    for prog, name, param in NUMERIC
    for value in _bad_values(param)
]


def test_the_discovery_finds_the_options_the_issue_names():
    names = {(prog, name, param_name(p)) for prog, name, p in NUMERIC}
    assert ("zeroseg", "serve", "--batch-wait-ms") in names and ("zeroseg", "segment", "--threads") in names
    assert ("zeroseg-export", "triton", "--max-batch") in names and (
        "zeroseg-bench",
        "serve",
        "--seconds",
    ) in names
    assert sum(numeric_kind(p) is float for *_, p in NUMERIC) >= 20 and len(NUMERIC) >= 90


@pytest.mark.parametrize(("prog", "command", "option", "value"), CASES)
def test_every_numeric_option_refuses_what_it_cannot_mean_before_the_command_runs(
    prog, command, option, value, capsys, monkeypatch, tmp_path
):
    def ran(self, ctx):
        raise AssertionError(f"{ctx.command_path} ran with {option} {value}")

    monkeypatch.setattr(typer.core.TyperCommand, "invoke", ran)
    monkeypatch.chdir(tmp_path)
    main = importlib.import_module(SCRIPTS[prog]).main
    result = run_console(main, prog, [command, option, value], capsys, monkeypatch)
    assert_one_line_error(result, option)
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize(
    ("prog", "command", "param"), [pytest.param(*n, id=f"{n[0]} {n[1]}") for n in NUMERIC]
)
def test_every_numeric_default_is_accepted(prog, command, param):
    check_number(param, param.default)  # an option whose default it refuses could never run


def test_the_rule_in_words():
    by_name = {(name, param_name(p)): p for _, name, p in NUMERIC}
    for key, low in (
        (("segment", "--threads"), 1),
        (("triton", "--max-batch"), 0),
        (("train", "--workers"), 0),
    ):
        assert accepted_range(by_name[key])[0] == low
    with pytest.raises(ZerosegError, match=r"^--batch-wait-ms must be a finite number, got nan$"):
        check_number(by_name[("serve", "--batch-wait-ms")], float("nan"))
    with pytest.raises(ZerosegError, match=r"^--threads must be a positive integer, got -3$"):
        check_number(by_name[("segment", "--threads")], -3)
    with pytest.raises(ZerosegError, match=r"^--max-batch must be an integer >= 0, got -1$"):
        check_number(by_name[("triton", "--max-batch")], -1)


def test_typers_own_runner_gets_the_checks_too():
    from zeroseg.cli import app

    result = CliRunner().invoke(app, ["serve", "--batch-wait-ms", "nan"])
    assert isinstance(result.exception, ZerosegError) and "--batch-wait-ms" in str(result.exception)


@pytest.mark.parametrize(
    ("prog", "args", "fragments"),
    [
        (
            "zeroseg",
            ["segment", "--no-such-option"],
            ["no such option", "--no-such-option", "zeroseg segment -h"],
        ),
        ("zeroseg", ["segment"], ["missing argument", "checkpoint"]),
        ("zeroseg", ["no-such-command"], ["no such command"]),
        ("zeroseg", ["segment", "bundled", "x.jpg", "--threads", "three"], ["--threads", "integer", "three"]),
        ("zeroseg-export", ["onnx", "bundled", "--out"], ["--out", "requires an argument"]),
        ("zeroseg-export", ["triton"], ["missing argument", "bundle"]),
        ("zeroseg-export", ["onnx", "--opset", "twenty"], ["--opset", "integer"]),
        ("zeroseg-bench", ["latency", "--nope"], ["no such option", "--nope"]),
        ("zeroseg-bench", ["serve", "--seconds", "long"], ["--seconds", "number"]),
        ("zeroseg-bench", ["head", "--iters", "0"], ["--iters", "integer >= 1"]),
        ("zeroseg-bench", ["head", "--no-such"], ["unrecognized", "--no-such"]),
    ],
)
def test_usage_errors_are_one_line(prog, args, fragments, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    main = importlib.import_module(SCRIPTS[prog]).main
    result = run_console(main, prog, args, capsys, monkeypatch)
    assert_one_line_error(result, *fragments)
    assert "Usage:" not in result.err and "╭" not in result.err


@pytest.mark.parametrize("prog", list(SCRIPTS))
def test_help_still_prints_and_exits_0(prog, capsys, monkeypatch):
    main = importlib.import_module(SCRIPTS[prog]).main
    result = run_console(main, prog, ["-h"], capsys, monkeypatch)
    assert result.code == 0 and "Usage" in result.out
