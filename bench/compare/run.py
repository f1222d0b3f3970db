"""`zeroseg-bench [CKPT|BUNDLE]`: every backend side by side in one run, the table users choose from.

One process builds every backend that can run here (`zeroseg.bench.compare.backends`; the others are listed
with the reason), then measures them **interleaved**: each repeat times every (batch size, backend)
series in turn, the backend order rotated by one per repeat, so drift and a neighbour's load hit
all of them alike and the speed-up over torch eager is a ratio of series taken seconds apart. Per
backend and batch size it reports the latency of the whole pipeline and of its stages (p50 / p90 /
p99, mean and sd; warm-up excluded), images/s, the speed-up over torch per repeat (flagged when it
flips across 1.0 between repeats), peak memory, and accuracy: pixel agreement with torch fp32 and
mIoU on a dataset (a generated ShapeWorld val split by default), both on the same images. The cold
first call (compilation included) and the time to prepare each backend are kept apart.

Where the time goes: the student forward's FLOPs with attention counted (`flops`), the fraction of
the CPU's fp32 or int8 peak each row reaches (`peak`), ONNX Runtime's per-op profile of the fastest
ONNX Runtime row (`profile`), and a status per requested backend, ✅ / ❎ / ❌ (`rows.status_block`).

The timed inputs are generated ShapeWorld scenes held in memory as PIL images (no disk I/O inside a
timed loop), segmented into `classes` with the vocabulary already cached.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from zeroseg.bench.common import (
    SCHEMA_VERSION,
    check_image_budget,
    check_non_negative,
    check_positive,
    file_info,
    scene_images,
)
from zeroseg.bench.compare import backends as bk
from zeroseg.bench.compare.flops import int8_share, network_flops
from zeroseg.bench.compare.measure import Memory, Recorder, StageClock, embedding_cosine, pixel_agreement
from zeroseg.bench.compare.peak import cpu_peaks
from zeroseg.bench.compare.rows import build_rows, status_block, summarize
from zeroseg.bench.env import collect_env, mark_end
from zeroseg.errors import ZerosegError
from zeroseg.utils.device import resolve_device

DEFAULT_CLASSES = "background,red,green,blue,yellow,magenta,cyan"
#: The default dataset: ShapeWorld val scenes as the proof draws them (seed 999, 128 px).
DATASET_SEED, DATASET_SIZE = 999, 128
INT8_MODES = ("dynamic", "static")
#: The int8 export gate for a random-weight student (its labels are near ties; see `artefacts`).
RANDOM_INT8_TOLERANCE = 0.01


@dataclass(frozen=True)
class CompareSettings:
    """One side-by-side run (image_size is the source images' (height, width))."""

    source: Path | None = None
    backends: tuple[str, ...] | None = None
    batch_sizes: tuple[int, ...] = (1, 4)
    short_side: int | None = None
    image_size: tuple[int, int] = (480, 640)
    classes: str = DEFAULT_CLASSES
    warmup: int = 2
    iters: int = 10
    repeat: int = 3
    threads: int = 0
    device: str = "cpu"
    dataset: Path | None = None
    dataset_images: int = 50
    int8: str = "static"
    teacher: str | None = None
    bundles: dict[str, Path] = field(default_factory=dict)
    preset: str | None = None
    seed: int = 0
    progress: bool = True

    def validate(self) -> CompareSettings:
        """One-line errors for out-of-range values, before anything is loaded."""
        for b in self.batch_sizes:
            check_positive(b, "--batch-sizes")
        check_non_negative(self.warmup, "--warmup")
        check_positive(self.iters, "--iters")
        check_positive(self.repeat, "--repeat")
        check_non_negative(self.threads, "--threads")
        check_positive(self.dataset_images, "--dataset-images")
        if self.short_side is not None:
            check_positive(self.short_side, "--short-side")
        if self.preset is not None and self.source is not None:
            raise ZerosegError("pass a checkpoint or bundle, or --preset (a random-weight student), not both")
        if self.int8 not in INT8_MODES:
            raise ZerosegError(f"--int8 must be one of {', '.join(INT8_MODES)}, got {self.int8!r}")
        if self.dataset is not None and not Path(self.dataset).is_dir():
            raise ZerosegError(f"--dataset {self.dataset} is not a folder: pass a VOC-layout dataset folder")
        for kind, folder in self.bundles.items():
            if not Path(folder).is_dir():
                raise ZerosegError(f"--{kind}-bundle {folder} is not a folder: pass an exported bundle")
        check_image_budget(self.image_size, max(self.batch_sizes, default=1))
        return self


def resolve_source(s: CompareSettings) -> tuple[Path | None, dict[str, Path], bool]:
    """(checkpoint, given bundles, is-the-bundled-model) of the positional CKPT|BUNDLE argument."""
    from zeroseg.bundled import bundled_checkpoint, resolve_model_path

    bundles = {k: Path(v) for k, v in s.bundles.items()}
    if s.preset is not None:
        from zeroseg.bench.compare.engines import random_checkpoint
        from zeroseg.model.config import PRESETS

        if s.preset not in PRESETS:
            raise ZerosegError(f"--preset must be one of {', '.join(PRESETS)}, got {s.preset!r}")
        return random_checkpoint(s.preset, short_side=s.short_side, seed=s.seed), bundles, False
    if s.source is None:
        return bundled_checkpoint(), bundles, True
    path = resolve_model_path(s.source)
    bundled = path == bundled_checkpoint()
    if path.is_dir():
        kind = bundle_kind(path)
        return None, {**bundles, kind: path}, False
    if not path.is_file():
        raise ZerosegError(f"{s.source} does not exist: pass a checkpoint file or an exported bundle folder")
    from zeroseg.checkpoint import load_checkpoint

    load_checkpoint(path, with_train_state=False)  # a truncated or foreign file: its one-line error
    return path, bundles, bundled


def _short_side(checkpoint: Path) -> int:
    """The checkpoint's tuned inference short side: every backend runs at the same one."""
    from zeroseg.checkpoint import load_checkpoint

    return int(load_checkpoint(checkpoint, with_train_state=False).preprocess.test_short_side)


def bundle_kind(folder: Path) -> str:
    """ "onnx", "aoti" or "trt" for an exported bundle folder (its manifest's format), or a one-line error."""
    from zeroseg.export.core.formats import detect_format

    return detect_format(folder).name


def default_dataset(count: int) -> Path:
    """A generated ShapeWorld val split of `count` scenes in the cache (written once)."""
    from zeroseg.bench.compare.engines import cache_root
    from zeroseg.shapeworld.write import write_scenes
    from zeroseg.utils.atomic import staged_folder

    root = cache_root() / f"shapeworld-val-{DATASET_SEED}-{DATASET_SIZE}-{count}"
    if not (root / "ImageSets").is_dir():
        with staged_folder(root, what="the dataset") as tmp:
            write_scenes(tmp, n=count, seed=DATASET_SEED, size=DATASET_SIZE, val_fraction=1.0)
    return root


@torch.no_grad()
def run_compare(settings: CompareSettings, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build, time and score every backend as `settings` says; the JSON-able result."""
    from zeroseg.bench.compare.engines import artefacts
    from zeroseg.classes import parse_labels_option
    from zeroseg.data.voc import VOCDataset

    s = settings.validate()
    if s.threads:
        torch.set_num_threads(s.threads)
    device = resolve_device(s.device)
    checkpoint, given, bundled = resolve_source(s)
    short_side = s.short_side if s.short_side is not None or checkpoint is None else _short_side(checkpoint)
    classes = parse_labels_option(s.classes, None)
    dataset = None  # a random-weight student: no mIoU, only agreement between engines
    if s.preset is None:
        dataset_root = Path(s.dataset) if s.dataset is not None else default_dataset(s.dataset_images)
        dataset = VOCDataset(dataset_root, "val")
    env = collect_env(device, runtimes=True)
    src = bk.Source(checkpoint=checkpoint, bundles=given, device=device, threads=s.threads or 0,
                    short_side=short_side, labels=[list(c) for c in classes if c != ("background",)],
                    int8=s.int8, teacher=s.teacher, bundled=bundled)  # fmt: skip
    # a random-weight student: int8 labels flip on near ties, so int8 is judged by embedding cosine
    loose = RANDOM_INT8_TOLERANCE if s.preset is not None else None
    get = artefacts(checkpoint, given, labels=src.labels, short_side=short_side, int8=s.int8,
                    threads=s.threads or None, int8_tolerance=loose, calib=s.dataset, log=log)  # fmt: skip
    wanted = s.backends or bk.DEFAULT_NAMES
    segs, info, skipped = _prepare(wanted, src, get, device, log=log)
    if s.preset is not None:
        for facts in info.values():
            if facts["precision"] == "int8":
                facts["gate"] = None
    if not segs:
        raise ZerosegError("no backend could run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    images = scene_images(max(s.batch_sizes), s.image_size, s.seed)
    for name, seg in segs.items():  # the cold call: compilation, first allocations
        t0 = time.perf_counter()
        seg(images[:1], classes)
        info[name]["first_call_ms"] = (time.perf_counter() - t0) * 1e3
    samples, memory = _interleaved(segs, images, classes, s, device)
    _accuracy(segs, info, dataset, images, classes, s, log)
    torch_seg = segs.get("torch")
    if torch_seg is not None:
        size = torch_seg.input_size(*s.image_size)
        for name, seg in segs.items():
            cos = embedding_cosine(torch_seg, seg, images[:1], size) if name != "torch" else None
            if cos is not None:
                info[name]["embedding_cosine"] = cos
    flops = _flops(segs, info, src, get, images, s.image_size)
    peak = cpu_peaks(env["cpu"]["flags"], env["cpu"]["usable_cpus"]) if device.type == "cpu" else None
    rows = build_rows(segs, info, samples, memory, s.batch_sizes, peak)
    profile = _profile(segs, rows, images, classes, log)
    return {
        "schema": f"zeroseg-bench/compare/v{SCHEMA_VERSION}",
        "command": "compare",
        "env": mark_end(env),
        "settings": {
            **_settings_block(s, checkpoint, given, dataset, segs),
            "short_side": short_side,
        },  # fmt: skip
        "flops": flops,
        "cpu_peak": peak,
        "backends": {name: info[name] for name in segs},
        "skipped": [{"backend": k, "reason": v} for k, v in skipped.items()],
        "status": status_block(wanted, info, skipped, {n: bk.BACKENDS[n].precision for n in wanted}),
        "rows": rows,
        "ort_profile": profile,
        "summary": summarize(rows),
    }


def _flops(segs: dict, info: dict, src: bk.Source, get, images, image_hw) -> dict | None:
    """The student forward's FLOPs per image, attention included (`flops.network_flops`), counted on
    the torch row's segmenter (or one built for it); each row's per-image GFLOP and int8 share set."""
    counter = segs.get("torch")
    if counter is None and src.checkpoint is not None:
        try:
            counter = bk.build("torch", src, get)
        except ZerosegError:  # no count rather than no run
            counter = None
    flops = network_flops(counter, images, counter.input_size(*image_hw)) if counter is not None else None
    for name, facts in info.items():
        same_network = flops and name not in bk.BASELINE_ROWS
        facts["gflop_per_image"] = flops["gflop_per_image"] if same_network else None
        if facts["precision"] == "int8":
            facts["int8_share"] = int8_share(flops, bk.BACKENDS[name].int8_ops)
    return flops


def _profile(segs: dict, rows: list[dict], images, classes, log) -> dict | None:
    """ONNX Runtime's per-op profile of the fastest ONNX Runtime row at the smallest batch size."""
    from zeroseg.bench.compare.profile import ort_profile

    batch = min((r["batch_size"] for r in rows), default=1)
    ort_rows = [r for r in rows if r["backend"].startswith("onnxruntime") and r["batch_size"] == batch]
    if not ort_rows:
        return None
    best = min(ort_rows, key=lambda r: r["latency_ms"]["p50"])["backend"]
    try:
        got = ort_profile(segs[best], images[:1], classes, session_env=lambda: bk.session_env(best))
    except Exception as exc:  # a profile is extra information: its failure must not lose the run
        log(f"  ONNX Runtime profile of {best} failed: {exc}")
        return {"backend": best, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return {"backend": best, **got}


def _prepare(wanted, src: bk.Source, get, device, *, log) -> tuple[dict, dict, dict]:
    """Build every wanted backend that can run; (segmenters, facts, {skipped name: reason}).

    The exported bundles are made first, with autograd on as in `zeroseg-export` (the AOTInductor
    compile of the dynamic graph fails under `torch.no_grad` on torch 2.14: "materialize_symints:
    no producer").
    """
    segs, info, skipped = {}, {}, {}
    memory = Memory(device)
    reasons = {name: bk.unavailable(name, src) for name in wanted}
    export_s: dict[str, float] = {}
    for kind in dict.fromkeys(bk.ARTEFACT[n] for n in wanted if reasons[n] is None and bk.ARTEFACT[n]):
        t0 = time.perf_counter()
        try:
            with torch.enable_grad():  # as `zeroseg-export` runs: AOTInductor fails under no_grad
                get(kind)
        except ZerosegError as exc:
            for n in wanted:
                if bk.ARTEFACT[n] == kind and reasons[n] is None:
                    reasons[n] = f"could not be exported: {exc}"
        export_s[kind] = time.perf_counter() - t0
    for name in wanted:
        reason = reasons[name]
        if reason is None:
            before = memory.current()
            t0 = time.perf_counter()
            try:
                segs[name] = bk.build(name, src, get)
            except ZerosegError as exc:  # a failed export gate, a bundle that will not load, ...
                reason = f"could not be built: {exc}"
            else:
                spec = bk.BACKENDS[name]
                info[name] = {"precision": spec.precision, "fused": spec.fused, "gate": spec.gate,
                              "what": spec.what, "export_s": export_s.get(bk.ARTEFACT[name] or "", 0.0),
                              "prepare_s": time.perf_counter() - t0,
                              "load_mb": max(0, memory.current() - before) / 2**20,
                              **_engine_facts(name, segs[name])}  # fmt: skip
        if reason is not None:
            skipped[name] = reason
            log(f"  {name}: not run ({reason})")
    return segs, info, skipped


def _engine_facts(name: str, seg) -> dict[str, Any]:
    """What an engine did to the graph: its fused attention ops (ONNX Runtime rows), the OpenVINO
    CPU plugin's runtime layers (their `Subgraph` nodes are its fused attention), when known."""
    facts: dict[str, Any] = {}
    if name.startswith("onnxruntime"):
        facts["graph_fused_ops"] = bk.graph_fused_ops(seg)
    for key in ("runtime_layers", "attention_subgraphs"):  # OpenVINOSegmenter's
        method = getattr(seg, key, None)
        if callable(method):
            try:
                facts[key] = method()
            except Exception as exc:  # extra information only
                facts[key] = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
    return facts


def _interleaved(segs: dict, images, classes, s: CompareSettings, device) -> tuple[dict, dict]:
    """samples[name][batch][stage] = one list per repeat; memory[name][batch] = MiB of the first repeat."""
    names = list(segs)
    clocks = {name: StageClock(seg, device) for name, seg in segs.items()}
    samples = {n: {b: {} for b in s.batch_sizes} for n in names}
    memory = {n: {} for n in names}
    probe = Memory(device)
    total = s.repeat * len(s.batch_sizes) * len(names)
    try:
        with tqdm(total=total, desc="timing", unit="series", disable=not s.progress) as bar:
            for rep in range(s.repeat):
                order = names[rep % len(names) :] + names[: rep % len(names)]
                for b in s.batch_sizes:
                    batch = images[:b]
                    for name in order:
                        bar.set_postfix(backend=name, batch=b)
                        if rep == 0:
                            probe.start()
                        got = clocks[name].series(batch, classes, b, warmup=s.warmup, iters=s.iters)
                        if rep == 0:
                            memory[name][b] = probe.stop()
                        for stage, values in got.items():
                            samples[name][b].setdefault(stage, []).append(values)
                        bar.update(1)
    finally:
        for clock in clocks.values():
            clock.close()
    return samples, memory


def _accuracy(segs: dict, info: dict, dataset, images, classes, s: CompareSettings, log) -> None:
    """mIoU on the dataset and pixel agreement with torch (dataset + timed images), per backend.

    One image per call: the labels do not depend on the batch, and an engine's memory does (an
    unfused attention graph holds its largest batch's score matrices in its arena: at 512 px, 8
    images of the bundled model's global-attention blocks took the 24 GiB machine out of memory)."""
    from zeroseg.evaluation.evaluate import evaluate

    labels: dict[str, list] = {}
    for name, seg in tqdm(segs.items(), desc="accuracy", unit="backend", disable=not s.progress):
        recorder = Recorder(seg)
        info[name]["miou"] = None
        if dataset is not None:
            info[name]["miou"] = evaluate(
                recorder, dataset, limit=s.dataset_images, progress=False, batch_size=1
            ).miou
        extra = [r.labels for r in seg(images, classes, batch_size=1)]
        labels[name] = recorder.labels + [np.asarray(x) for x in extra]
    reference = labels.get("torch")
    for name in segs:
        gate = info[name]["gate"]
        same_network = reference and name not in bk.BASELINE_ROWS
        agreement = pixel_agreement(reference, labels[name]) if same_network else None
        info[name]["pixel_agreement"] = agreement
        info[name]["below_gate"] = bool(agreement is not None and gate is not None and agreement < gate)
        if info[name]["below_gate"]:
            log(f"  {name}: pixel agreement {agreement:.4%} is BELOW its gate {gate:.2%}")


def _settings_block(s: CompareSettings, checkpoint, given, dataset, segs) -> dict:
    data = {k: v for k, v in asdict(s).items() if k not in ("source", "bundles", "dataset", "image_size")}
    data.update(
        batch_sizes=list(s.batch_sizes),
        backends_requested=list(s.backends) if s.backends else "all available",
        checkpoint=file_info(checkpoint) if checkpoint is not None else None,
        bundles_given={k: str(v) for k, v in given.items()},
        image_size_hw=list(s.image_size),
        network_input_hw={n: list(seg.input_size(*s.image_size)) for n, seg in segs.items()},
        dataset=None
        if dataset is None
        else {
            "root": str(dataset.root),
            "split": "val",
            "generated": s.dataset is None,
            "images": min(len(dataset), s.dataset_images),
        },  # fmt: skip
        inputs="ShapeWorld scenes (zeroseg.shapeworld), in memory as PIL RGB; vocabulary cached",
        timing="time.perf_counter around seg(images, classes, batch_size=B) and around each stage "
        "method inside it (device synchronised); warm-up calls discarded; ms per batch",
        interleaving="each repeat times every (batch, backend) series in turn, backend order rotated",
    )
    return data
