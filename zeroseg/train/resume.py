"""What `--resume` continues: the run folder you name, with its saved settings, and nothing else.

A run folder is self-describing: `config.json` holds the `TrainConfig` with absolute paths (so the
folder can be copied, renamed or resumed from any working directory), and `--out` always names the
folder that is resumed. Flags given with `--resume` either agree with the saved ones, are safe to
change (`RESUME_ADJUSTABLE`; `--steps` only upwards) or are refused in one line naming them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Collection
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from zeroseg.errors import ZerosegError
from zeroseg.train.config import TrainConfig
from zeroseg.utils.atomic import atomic_write_bytes, atomic_write_json

CONFIG_NAME, METRICS_NAME = "config.json", "metrics.jsonl"
#: Settings that may differ on --resume without changing what is being trained.
RESUME_ADJUSTABLE: frozenset[str] = frozenset(
    {"out", "steps", "stop_after_steps", "log_every", "save_every", "num_workers", "device", "extra"}
)
#: TrainConfig fields that hold paths (made absolute when a run starts).
PATH_FIELDS: tuple[str, ...] = ("data", "out", "teacher_cache", "encoder_weights")
#: Spelling of each field as a command-line flag, where it is not --field-name.
FLAG_NAMES: dict[str, str] = {
    "warmup_fraction": "--warmup",
    "weights": "--loss-weights",
    "num_workers": "--workers",
    "compile": "--compile",
    "stop_after_steps": "--stop-after-steps",
}


def flag_name(field_name: str) -> str:
    """The CLI flag of a TrainConfig field ("--batch-size")."""
    return FLAG_NAMES.get(field_name, "--" + field_name.replace("_", "-"))


def _absolute(value: str | None, base: Path | None = None) -> str | None:
    """`value` as an absolute path if it names (or, with a glob, patterns) a file system path."""
    if value is None or value == "":
        return value
    path = Path(os.path.expanduser(value))
    if path.is_absolute():
        return str(path)
    if base is not None and (base / path).exists():
        return str((base / path).resolve())
    return str(Path.cwd() / path) if base is None else value


def _teacher_absolute(spec: str | None, base: Path | None = None) -> str | None:
    """A teacher given as a file becomes absolute; open_clip specs (MODEL:TAG) stay as they are."""
    if spec is None:
        return None
    if base is None and Path(spec).expanduser().is_file():
        return str(Path(spec).expanduser().resolve())
    if base is not None and not Path(spec).is_absolute() and (base / spec).is_file():
        return str((base / spec).resolve())
    return spec


def absolute_config(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with its paths made absolute against the current directory (what config.json stores)."""
    changes: dict[str, Any] = {name: _absolute(getattr(cfg, name)) for name in PATH_FIELDS}
    changes["teacher"] = _teacher_absolute(cfg.teacher)
    return replace(cfg, **changes)


def write_run_config(run: Path, cfg: TrainConfig) -> None:
    """Write `config.json` atomically."""
    atomic_write_json(run / CONFIG_NAME, cfg.to_dict())


def read_run_config(run: Path) -> TrainConfig:
    """The saved `TrainConfig` of a run; relative paths (older runs) resolve against the run folder.

    Raises:
        ZerosegError: config.json is missing, not JSON, or not a training config.
    """
    path = run / CONFIG_NAME
    if not path.is_file():
        raise ZerosegError(f"{path} is missing: this run cannot be resumed; start a new run in another --out")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        saved = TrainConfig.from_dict(data)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ZerosegError(
            f"{path} is damaged ({type(exc).__name__}); it cannot be resumed: restore it or start a new run"
        ) from None
    changes: dict[str, Any] = {name: _absolute(getattr(saved, name), run) for name in PATH_FIELDS}
    changes["teacher"] = _teacher_absolute(saved.teacher, run)
    return replace(saved, **changes)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return list(a) == list(b)
    return a == b


def resume_config(
    given: TrainConfig,
    run: Path,
    explicit: Collection[str] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> TrainConfig:
    """The config to resume `run` with: the saved one, `out` = `run`, plus the adjustable flags given.

    Args:
        given: the config built from this command's flags.
        run: the run folder named by `--out` (the one resumed, whatever config.json says).
        explicit: the fields the user set on this command line (None: those that differ from the
            TrainConfig defaults).
        on_note: told about each setting that changes (e.g. "--steps 20 (was 10)").

    Raises:
        ZerosegError: config.json is missing or damaged, or flags conflict with the saved run.
    """
    saved = read_run_config(run)
    given = absolute_config(given)
    defaults = TrainConfig(data="", out="")
    if explicit is None:
        explicit = {
            f.name
            for f in fields(TrainConfig)
            if not _same(getattr(given, f.name), getattr(defaults, f.name))
        }
    explicit = set(explicit) & {f.name for f in fields(TrainConfig)}  # e.g. not --quiet / --resume
    conflicts = []
    for name in sorted(explicit - RESUME_ADJUSTABLE):
        mine, theirs = getattr(given, name), getattr(saved, name)
        if name == "data" and not Path(str(theirs)).is_absolute():
            continue  # an older run saved a path relative to a directory we cannot know: trust --data
        if not _same(mine, theirs):
            conflicts.append(f"{flag_name(name)} {mine} (run: {theirs})")
    if conflicts:
        raise ZerosegError(
            f"--resume continues {run} with its saved settings, but {'; '.join(conflicts)} differ: drop "
            "them, or start a new run in another --out"
        )
    changes: dict[str, Any] = {"out": str(Path(run).resolve()), "stop_after_steps": given.stop_after_steps}
    for name in ("steps", "log_every", "save_every", "num_workers", "device", "data"):
        if name in explicit and not _same(getattr(given, name), getattr(saved, name)):
            changes[name] = getattr(given, name)
            if on_note is not None and name != "data":
                on_note(f"{flag_name(name)} {getattr(given, name)} (was {getattr(saved, name)}) on resume")
    return replace(saved, **changes).validate()


def check_resume_steps(cfg: TrainConfig, step: int, total: int, run: Path) -> None:
    """Refuse a total below the step the run already reached."""
    if total < step:
        asked = f"--steps {cfg.steps}" if cfg.steps is not None else f"{total} steps"
        raise ZerosegError(
            f"{asked} is below the step {run} already reached ({step}); pass --steps {step} or more"
        )


def trim_metrics(run: Path, step: int) -> None:
    """Drop the metrics rows after `step` (written by a run that was killed before it saved)."""
    path = run / METRICS_NAME
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(line)
    atomic_write_bytes(path, ("\n".join(kept) + "\n" if kept else "").encode())
