"""The Ray Data side of `zeroseg segment-dataset`: an actor pool running `process_batch`.

The items (ids and paths, not pixels) go into `ray.data.from_items`; `map_batches` with the callable
class `SegmentActor` decodes, segments and writes each batch on an actor that built its segmenter once,
and returns the batch's index rows to the driver. The outputs folder must be visible to every node
(one machine, or shared storage). An actor that dies (a crash, a lost node) is restarted and its batch
retried (`max_restarts` / `max_task_retries`), a bounded number of times.
"""

from __future__ import annotations

import importlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from zeroseg.errors import ZerosegError
from zeroseg.serve.cluster import actor_cpus, cluster_cpus, default_actors, import_ray
from zeroseg.serve.dataset.sources import Item
from zeroseg.serve.dataset.writer import Job, process_batch
from zeroseg.serve.model import ModelSpec

#: Restarts of a dead actor and retries of its batch before the run fails.
MAX_RESTARTS = 3


class SegmentActor:
    """One segmenter per actor; `__call__` segments and writes a batch of items."""

    def __init__(self, spec: ModelSpec, job: Job, threads: int = 1, crash_once: str | None = None) -> None:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.segmenter = spec.build(threads)
        self.job = job
        self.crash_once = crash_once

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Segment and write the batch's items (JSON in column `item`); their index rows (column `row`)."""
        if self.crash_once and not os.path.exists(self.crash_once):
            Path(self.crash_once).write_text(f"{os.getpid()}\n")
            os._exit(1)  # fault injection: the actor dies mid-batch
        items = [Item(**json.loads(text)) for text in batch["item"]]
        rows = process_batch(self.segmenter, items, self.job)
        return {"row": np.array([json.dumps(r) for r in rows], dtype=object)}


def run_on_ray(
    spec: ModelSpec,
    job: Job,
    items: list[Item],
    *,
    actors: int | None,
    on_rows: Callable[[list[dict]], None],
    crash_once: str | None = None,
) -> None:
    """Segment `items` on the connected Ray cluster's actor pool; `on_rows` gets each batch's index rows.

    Args:
        spec: the model each actor builds.
        job: classes, output folder and options.
        items: what to segment.
        actors: pool size (default: one per cluster CPU).
        on_rows: called in the driver as batches finish (any order).
        crash_once: see `zeroseg.serve.dataset.run.segment_dataset`.

    Raises:
        ZerosegError: a batch failed with a user-facing error.
    """
    import logging

    ray = import_ray()
    data = importlib.import_module("ray.data")
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    context = data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    total = cluster_cpus()
    pool = (
        actors if actors is not None else min(default_actors(total), math.ceil(len(items) / job.batch_size))
    )
    cpus = actor_cpus(total, pool)
    blocks = max(1, min(len(items), math.ceil(len(items) / job.batch_size)))
    ds = data.from_items([{"item": json.dumps(asdict(it))} for it in items], override_num_blocks=blocks)
    ds = ds.map_batches(
        SegmentActor,
        fn_constructor_kwargs={
            "spec": spec,
            "job": job,
            "threads": max(1, int(cpus)),
            "crash_once": crash_once,
        },
        batch_size=job.batch_size,
        batch_format="numpy",
        concurrency=pool,
        num_cpus=cpus,
        max_restarts=MAX_RESTARTS,
        max_task_retries=MAX_RESTARTS,
    )
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            on_rows([json.loads(text) for text in batch["row"]])
    except ray.exceptions.RayError as exc:
        cause = _zeroseg_cause(exc)
        if cause is None:
            raise
        raise ZerosegError(str(cause)) from None


def _zeroseg_cause(exc: BaseException) -> ZerosegError | None:
    """The ZerosegError inside a Ray error, if one caused it."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, ZerosegError):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__
        seen += 1
    return None
