"""`zeroseg-bench frontier SPEC`: the latency of every setting of the ShapeWorld frontier, interleaved.

The proof (`python -m zeroseg.shapeworld.proof --frontier`) scores every method per short side and
writes a spec: the settings (method, head, short side, the background threshold and prompt picked
on tune), the student checkpoint, the teacher and its templates, a few val scenes and the thread
count. This command times them all at batch 1 in one process:

* the student methods (a head of a checkpoint: the trained model, or a design of it such as the
  windowed encoder) on every engine that runs here: PyTorch eager, and ONNX Runtime and OpenVINO on
  an ONNX bundle exported (with its own parity gate) per method into the spec's `export_dir`; an engine
  counts for a setting only when its labels agree with PyTorch's on ≥ `GATE` of the pixels of the
  spec's scenes, and each setting keeps its fastest such engine;
* the training-free baselines on PyTorch eager, their only engine;
* every (setting, engine) once per round, the order rotated per round, `ROUNDS` rounds after
  `WARMUP` calls each (`time_settings`), so machine load falls on all alike; medians are kept.

Output JSON: per method, short side -> the chosen engine's median ms and every engine's median;
every student engine's agreement; the environment (CPU model and flags, threads, load at start and
end, OMP_WAIT_POLICY).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from zeroseg.bench.compare.measure import pixel_agreement
from zeroseg.errors import ZerosegError

#: an engine's least pixel agreement with PyTorch eager to count for a setting
GATE = 0.999
#: timing rounds (every setting once per round) and discarded warm-up calls per setting
ROUNDS, WARMUP = 15, 2
#: the student's engines: PyTorch eager, then the runtimes of an ONNX bundle
ENGINES: tuple[str, ...] = ("torch", "onnxruntime", "openvino")

Call = Callable[[Image.Image], Any]


def time_settings(settings: dict[str, Call], images: list[Image.Image], *, rounds: int = ROUNDS,
                  warmup: int = WARMUP, log: Callable[[str], None] = print) -> dict[str, float]:  # fmt: skip
    """Median milliseconds of each setting's call on one image, the settings interleaved.

    Every round calls each setting once, the order rotated by one per round and the image cycling
    through `images`, so a change of load during the run falls on every setting alike.
    """
    keys = list(settings)
    for key in keys:
        for k in range(warmup):
            settings[key](images[k % len(images)])
    times: dict[str, list[float]] = {key: [] for key in keys}
    for r in range(rounds):
        shift = r % len(keys)
        for key in keys[shift:] + keys[:shift]:
            start = time.perf_counter()
            settings[key](images[r % len(images)])
            times[key].append((time.perf_counter() - start) * 1000.0)
        log(f"frontier timing: round {r + 1}/{rounds}")
    return {key: statistics.median(v) for key, v in times.items()}


def _call(segmenter, classes: list[list[str]], row: dict) -> Call:
    """One image at batch 1 with the setting's background threshold and prompt."""
    return lambda image: segmenter([image], classes, bg_thresh=row["bg_thresh"], bg_prompt=row["bg_prompt"])


def _export(checkpoint: Path, head: str, out: Path, threads: int, log) -> Path:
    """The ONNX bundle of `checkpoint` with `head` in `out` (its exporter's parity gate included)."""
    from zeroseg.export.onnx.bundle import export_onnx
    from zeroseg.export.onnx.export import ExportSettings

    if not (out / "manifest.json").is_file():
        export_onnx(ExportSettings(checkpoint=checkpoint, out=out, head=head, force=True, threads=threads,
                                   progress=False), log=log)  # fmt: skip
    return out


def _student_engines(spec: dict, method: dict, side: int, threads: int, log) -> dict[str, Any]:
    """engine -> the student method's segmenter at `side`, for every engine that loads here."""
    from zeroseg.export.loader import load

    checkpoint, head = Path(method["checkpoint"]), method["head"]
    built = {"torch": load(checkpoint, device="cpu", threads=threads, short_side=side, head=head)}
    bundle = _export(checkpoint, head, Path(spec["export_dir"]) / method["export"], threads, log)
    for runtime in ENGINES[1:]:
        try:
            built[runtime] = load(bundle, runtime=runtime, threads=threads, short_side=side)
        except (ZerosegError, ImportError) as err:  # e.g. OpenVINO not installed: that engine is absent
            log(f"frontier timing: {runtime} unavailable ({str(err).splitlines()[0]})")
    return built


def _student_settings(spec: dict, images, classes, threads: int, log) -> tuple[dict[str, Call], dict]:
    """The student's (method, side, engine) calls that pass the gate, and every engine's agreement."""
    calls, agree = {}, {}
    for name, method in spec["student"]["methods"].items():
        for side, row in method["settings"].items():
            engines = _student_engines(spec, method, int(side), threads, log)
            options = {"bg_thresh": row["bg_thresh"], "bg_prompt": row["bg_prompt"], "batch_size": 1}
            reference = [r.labels for r in engines["torch"](images, classes, **options)]
            for engine, seg in engines.items():
                key = f"{name}|{side}|{engine}"
                ran = engine == "torch"  # the reference itself
                labels = reference if ran else [r.labels for r in seg(images, classes, **options)]
                agree[key] = pixel_agreement(reference, labels)
                if agree[key] >= GATE:
                    calls[key] = _call(seg, classes, row)
    return calls, agree


def _baseline_settings(spec: dict, classes) -> dict[str, Call]:
    """Every baseline's (method, side) call on PyTorch eager, sharing one teacher."""
    from zeroseg.infer.factory import baseline_mode
    from zeroseg.infer.maskclip import MaskCLIPSegmenter
    from zeroseg.teacher.load import load_teacher

    teacher = load_teacher(spec["baselines"]["teacher"])
    calls = {}
    for method, sides in spec["baselines"]["settings"].items():
        for side, row in sides.items():
            seg = MaskCLIPSegmenter(teacher, short_side=int(side), mode=baseline_mode(method),
                                    templates=spec["baselines"]["templates"])  # fmt: skip
            calls[f"{method}|{side}|torch"] = _call(seg, classes, row)
    return calls


def run_frontier(spec: dict, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Time every setting of a frontier spec (see the module docstring); returns the JSON result."""
    from zeroseg.bench.env import collect_env, mark_end

    threads = int(spec["threads"])
    torch.set_num_threads(threads)
    env = collect_env(torch.device("cpu"), runtimes=True)
    images = [Image.open(p).convert("RGB") for p in spec["images"]]
    classes = spec["classes"]
    calls, agree = _student_settings(spec, images, classes, threads, log)
    calls.update(_baseline_settings(spec, classes))
    log(f"frontier timing: {len(calls)} settings x {ROUNDS} rounds, interleaved")
    medians = time_settings(calls, images, log=log)
    methods: dict[str, dict] = {}
    for key, ms in medians.items():
        method, side, engine = key.split("|")
        entry = methods.setdefault(method, {"ms": {}, "engine": {}, "engines": {}})
        entry["engines"].setdefault(side, {})[engine] = ms
        if side not in entry["ms"] or ms < entry["ms"][side]:
            entry["ms"][side], entry["engine"][side] = ms, engine
    env["threads"] = threads
    env["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "(unset)")
    return {"schema": "zeroseg-bench/frontier/v1", "command": "frontier", "methods": methods,
            "agreement": agree, "gate": GATE, "rounds": ROUNDS, "env": mark_end(env)}  # fmt: skip
