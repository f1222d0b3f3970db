"""`zeroseg`: train, cache the teacher, segment, evaluate, ShapeWorld data and the demo.

Each sub-command lives in its own module under `zeroseg.cli` and registers itself here, so
this file stays an index.
"""

from __future__ import annotations

import importlib

from zeroseg.utils.console import new_app, run_app

app = new_app("ZeroSeg: label-free open-vocabulary segmentation distilled from CLIP.")

#: Modules under zeroseg.cli, each with a `register(app)` function.
COMMAND_MODULES: tuple[str, ...] = (
    "train",
    "cache",
    "synth",
    "pretrain",
    "segment",
    "evaluate",
    "demo",
    "segment_dataset",
    "serve",
)

for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"zeroseg.cli.{_name}")
    except ModuleNotFoundError as _exc:  # a command still being written
        if _exc.name != f"zeroseg.cli.{_name}":
            raise
        continue
    _module.register(app)


def main() -> None:
    """Console entry point."""
    run_app(app)
