"""`zeroseg segment-dataset`: segment a whole data set, in-process or on a Ray actor pool.

Per image it writes `<out>_labels.png` and `<out>.json` with the same content `zeroseg segment`
writes for that image (the same label PNG format, the same JSON fields), mirroring the source's
folders, and at the end one `_zeroseg/index.jsonl` (id, source, size, class fractions, status, error;
sorted by id), atomically. The run's own files live in `_zeroseg/` (`RUN_FOLDER`), apart from the
images' outputs, so that no image name can overwrite them (`check_output_names`).

Resuming: every output is written atomically and the JSON last, so an image is complete when its
JSON names it with this run's classes and its label PNG exists; `--resume` skips those and redoes the
rest. `_zeroseg/run.json` records the classes and the model, and a resumed run must match it. While a
run is going, `_zeroseg/index.partial.jsonl` logs each finished batch (it is removed once the index is
written). An unreadable image is a failed row with the reason, never the end of the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from zeroseg.errors import ZerosegError
from zeroseg.infer.base import SegmenterBase
from zeroseg.infer.labels import LabelSpace, check_bg_thresh
from zeroseg.infer.visualize import label_png_bits
from zeroseg.serve.dataset.sources import Item, list_items
from zeroseg.serve.dataset.writer import (
    RUN_FOLDER,
    Job,
    check_output_names,
    complete_row,
    output_paths,
    process_batch,
)
from zeroseg.serve.model import ModelSpec
from zeroseg.utils.atomic import atomic_write_bytes, atomic_write_json
from zeroseg.utils.writable import ensure_writable_dir

INDEX_NAME = "index.jsonl"
PARTIAL_NAME = "index.partial.jsonl"
RUN_NAME = "run.json"
RUN_SCHEMA = "zeroseg/segment-dataset/v1"


@dataclass
class Summary:
    """What a run did."""

    total: int
    done: int
    skipped: int
    failed: int
    seconds: float
    index: Path

    @property
    def images_per_s(self) -> float:
        """Images segmented per second of the run (skipped ones not counted)."""
        return self.done / self.seconds if self.seconds > 0 else 0.0


def _run_config(spec: ModelSpec, job: Job) -> dict:
    model = {k: v for k, v in spec.describe().items() if k not in ("device", "backend")}
    return {
        "schema": RUN_SCHEMA,
        "classes": job.classes,
        "bg_thresh": job.bg_thresh,
        "bg_prompt": job.bg_prompt,
        "model": model,
    }


def _check_out(out: Path, sources: Sequence[str]) -> None:
    if out.exists() and not out.is_dir():
        raise ZerosegError(f"--out {out} is a file; pass a folder for the outputs")
    real_out = Path(os.path.realpath(out))
    for src in sources:
        folder = Path(os.path.realpath(src))
        if folder.is_dir() and (real_out == folder or folder in real_out.parents):
            raise ZerosegError(
                f"--out {out} is inside SOURCE {src}: its outputs would be read as inputs; "
                "choose another folder"
            )
    ensure_writable_dir(out, "--out", create=False)
    ensure_writable_dir(out / RUN_FOLDER, "--out", create=False)


def _plan(
    out: Path, items: list[Item], job: Job, config: dict, resume: bool
) -> tuple[list[Item], list[dict]]:
    """The items still to do and the rows of those already complete."""
    run_file = out / RUN_FOLDER / RUN_NAME
    if run_file.exists():
        if not resume:
            raise ZerosegError(
                f"{out} holds a previous run ({RUN_FOLDER}/{RUN_NAME}); pass --resume to finish it, or "
                "choose another --out"
            )
        try:
            previous = json.loads(run_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if previous != config:
            raise ZerosegError(
                f"--resume: {out} was written with other classes, threshold or model "
                f"({RUN_FOLDER}/{RUN_NAME}); "
                "pass the same options, or choose another --out"
            )
    names = list(LabelSpace.build(job.classes, bg_prompt=False).names)
    todo, done = [], []
    for item in items:
        row = complete_row(item, job, names) if resume else None
        if row is not None:
            done.append(row)
            continue
        if not resume and any(p.exists() for p in output_paths(item, out)):
            raise ZerosegError(
                f"{output_paths(item, out)[1]} already exists; pass --resume to finish that run, "
                "or choose another --out"
            )
        todo.append(item)
    return todo, done


def segment_dataset(
    spec: ModelSpec,
    sources: Sequence[str],
    out: str | os.PathLike,
    classes: list[list[str]],
    *,
    bg_thresh: float | None = None,
    bg_prompt: bool | None = None,
    batch_size: int = 8,
    ray_address: str | None = None,
    actors: int | None = None,
    resume: bool = False,
    progress: bool | None = None,
    crash_once: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Summary:
    """Segment every image of `sources` into `out`, in-process or on a Ray actor pool.

    Args:
        spec: the model (`ModelSpec.from_options`).
        sources: one folder, one list file, or .tar shards / globs (`zeroseg.serve.dataset.sources`).
        out: the output folder.
        classes: parsed class entries (`zeroseg.classes.parse_labels_option`).
        bg_thresh / bg_prompt: as for `zeroseg segment` (default: the model's).
        batch_size: images per segmenter call (and per Ray task).
        ray_address: None runs in this process without importing Ray; `local`, `auto` or a cluster
            address (`ray://head:10001`) runs a Ray Data actor pool there.
        actors: actor pool size (default: one per cluster CPU); each gets a share of the CPUs.
        resume: skip images whose outputs are complete, redo the rest.
        progress: a tqdm bar on stderr (None: only on a terminal).
        crash_once: fault injection for tests: the first Ray batch kills its actor after creating this
            file (Ray restarts the actor and retries the batch).
        log: where to print a line about the plan.

    Returns:
        The `Summary` (images done, skipped, failed, time, the index path).

    Raises:
        ZerosegError: bad sources or options, an existing run without --resume, or Ray unavailable.
    """
    if batch_size <= 0:
        raise ZerosegError(f"--batch-size must be positive, got {batch_size}")
    if bg_thresh is not None:
        check_bg_thresh(bg_thresh)
    LabelSpace.build(classes, bg_prompt=False)  # refuse a misplaced 'background' before any work
    out = Path(out)
    items = list_items(list(sources))
    check_output_names(items)  # no image's outputs over another's folder or the run's own files
    _check_out(out, sources)
    job = Job(
        classes=classes,
        out=str(out),
        bg_thresh=bg_thresh,
        bg_prompt=bg_prompt,
        batch_size=batch_size,
        bits=label_png_bits(len(LabelSpace.build(classes, bg_prompt=False).names)),
        extra=spec.json_extra(),
    )
    config = _run_config(spec, job)
    todo, rows = _plan(out, items, job, config, resume)
    segmenter = spec.build() if todo else None  # a broken model is one line here, before any output
    with contextlib.ExitStack() as stack:
        if todo and ray_address is not None:
            from zeroseg.serve.cluster import connected

            stack.enter_context(connected(ray_address))  # unreachable or no Ray: one line, nothing written
        ensure_writable_dir(out / RUN_FOLDER, "--out")
        atomic_write_json(out / RUN_FOLDER / RUN_NAME, config)
        run = _Run(spec, job, items, todo, rows, ray_address, actors, progress, crash_once)
        return run.go(segmenter, log)


@dataclass
class _Run:
    """A planned run: the items still `todo` and the `rows` of those already complete."""

    spec: ModelSpec
    job: Job
    items: list[Item]
    todo: list[Item]
    rows: list[dict]
    ray_address: str | None
    actors: int | None
    progress: bool | None
    crash_once: str | None

    def go(self, segmenter: SegmenterBase | None, log: Callable[[str], None] | None) -> Summary:
        """Segment `todo` (in-process or on Ray), log rows as batches finish, write the index."""
        out, todo = Path(self.job.out), self.todo
        if log is not None:
            where = "in-process" if self.ray_address is None else f"on Ray ({self.ray_address})"
            log(
                f"{len(self.items)} images: {len(self.rows)} already complete, {len(todo)} to segment {where}"
            )
        start = time.perf_counter()
        partial = out / RUN_FOLDER / PARTIAL_NAME
        bar = _progress(len(todo), self.progress)
        with open(partial, "a", encoding="utf-8") as log_file:

            def finished(batch_rows: list[dict]) -> None:
                self.rows.extend(batch_rows)
                log_file.write("".join(json.dumps(r) + "\n" for r in batch_rows))
                log_file.flush()
                os.fsync(log_file.fileno())
                bar.update(len(batch_rows))

            try:
                if todo and self.ray_address is None:
                    for i in range(0, len(todo), self.job.batch_size):
                        finished(process_batch(segmenter, todo[i : i + self.job.batch_size], self.job))
                elif todo:
                    from zeroseg.serve.dataset.ray_pool import run_on_ray

                    del segmenter  # the actors build their own
                    run_on_ray(self.spec, self.job, todo, actors=self.actors, on_rows=finished,
                               crash_once=self.crash_once)  # fmt: skip
            finally:
                bar.close()
        seconds = time.perf_counter() - start
        order = {item.id: i for i, item in enumerate(self.items)}
        unique = {r["id"]: r for r in self.rows}  # one row per image, whatever was retried
        rows = sorted(unique.values(), key=lambda r: order[r["id"]])
        index = out / RUN_FOLDER / INDEX_NAME
        atomic_write_bytes(index, "".join(json.dumps(r) + "\n" for r in rows).encode())
        partial.unlink(missing_ok=True)
        failed = sum(r["status"] != "ok" for r in rows)
        skipped = len(self.items) - len(todo)
        return Summary(len(self.items), len(todo), skipped, failed, seconds, index)


def _progress(total: int, enabled: bool | None):
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="img",
        desc="segment-dataset",
        disable=None if enabled is None else not enabled,
        dynamic_ncols=True,
        leave=False,
    )


def read_index(path: str | os.PathLike) -> list[dict]:
    """The rows of an `index.jsonl`."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
