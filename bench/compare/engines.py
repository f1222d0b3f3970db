"""The exported bundles the bench runs, made on the fly from the checkpoint and kept in a cache folder.

`zeroseg-bench` with a checkpoint (the bundled one by default) needs its ONNX bundle, AOTInductor
package or TensorRT engine; rather than asking the user to export first, it exports each one the
first time it is needed into `$XDG_CACHE_HOME/zeroseg/bench/<kind>-<key>/` (never the source tree)
with the same exporters and parity gates as `zeroseg-export`. The key hashes the checkpoint's bytes,
the options, the torch version and zeroseg's own Python sources, so a change to any of them
exports afresh; `zeroseg.utils.cache.build_once` lets two bench runs share one export.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import torch

from zeroseg.errors import ZerosegError
from zeroseg.utils.atomic import atomic_write_bytes
from zeroseg.utils.cache import build_once, cache_dir, source_digest

#: What an exporter's refusal says when its graph missed the parity gate (then cached as `REFUSED`).
GATE_FAILED = "parity gate failed"
#: The file beside a cached bundle that holds its export's refusal.
REFUSED = "refused.txt"
#: The package's source folders whose code shapes an exported graph (zeroseg/, kernels/, export/).
_PACKAGES = ("zeroseg", "zeroseg.kernels", "zeroseg.export")


def cache_root() -> Path:
    """`$XDG_CACHE_HOME/zeroseg/bench` (default `~/.cache/zeroseg/bench`)."""
    return cache_dir("bench")


def _source_files() -> list[Path]:
    """The Python files of `_PACKAGES`, each package's sorted."""
    import importlib

    files: list[Path] = []
    for name in _PACKAGES:
        root = Path(importlib.import_module(name).__file__).parent
        files.extend(sorted(root.rglob("*.py")))
    return files


def cache_key(checkpoint: Path, kind: str, options: dict) -> str:
    """16 hex digits naming one export: checkpoint bytes, kind, options, torch version, sources."""
    head = f"{kind}|{sorted(options.items())}|{torch.__version__}"
    return source_digest(head, Path(checkpoint).read_bytes(), *_source_files())


def cached_export(
    kind: str, checkpoint: Path, options: dict, export: Callable[[Path], None], *, log=print
) -> Path:
    """The bundle folder of `kind` for `checkpoint`, calling `export(path)` when it is not cached.

    `export` writes the complete bundle at the path it is given (a temporary one beside the cache
    folder, installed onto it once `export` returned: `zeroseg.utils.cache.build_once`). An export
    its parity gate refused is cached too, as the refusal (`REFUSED`): the same key gives the same
    graph and the same verdict, so later runs skip it at once rather than export again (minutes, and
    the export's memory left in the bench's process would blur every backend's load figure).
    """
    bundle = cache_root() / f"{kind}-{cache_key(checkpoint, kind, options)}" / "bundle"
    refused = bundle.parent / REFUSED
    if refused.is_file():
        raise ZerosegError(f"{refused.read_text().strip()} (cached refusal: {refused})")

    def build(out: Path) -> None:
        log(f"exporting the {kind} bundle into {bundle} (once; cached for later runs)")
        try:
            export(out)
        except ZerosegError as exc:
            if GATE_FAILED in str(exc):
                atomic_write_bytes(refused, str(exc).encode())
            raise

    return build_once(bundle, build)


def artefacts(
    checkpoint: Path | None,
    given: dict[str, Path],
    *,
    labels: list[list[str]],
    short_side: int | None,
    int8: str,
    threads: int | None,
    int8_tolerance: float | None = None,
    calib: Path | None = None,
    log=print,
) -> Callable[[str], Path]:
    """A function `kind -> bundle folder` ("onnx", its A/B variants "onnx-unfused", "onnx-int8-attn",
    "onnx-int8-qk", "aoti", "executorch", "trt") for `backends.build`.

    Args:
        checkpoint: what to export from (None: only `given` bundles can be used).
        given: bundles the user passed, used as they are.
        labels: classes stored in the bundles' vocabularies (`--labels` of the exporters).
        short_side: network input short side the bundles are made for (None: the checkpoint's).
        int8: the ONNX bundle's int8 mode ("dynamic" | "static").
        threads: ONNX Runtime threads of the export's parity gate.
        int8_tolerance: the int8 graphs' label-agreement gate (None: the exporter's default); a
            random-weight student's labels are near ties, so its int8 export is gated loosely and
            judged by the embedding cosine instead.
        calib: static int8's calibration images (the bench's `--dataset`; None: the exporter's
            default, 64 generated ShapeWorld scenes, the bundled model's own domain).
        log: progress lines.

    Returns:
        The getter; it exports into the cache (`cached_export`) on first use of a kind.
    """
    made: dict[str, Path] = dict(given)

    def onnx(out: Path, **variant) -> None:
        from zeroseg.export.onnx.bundle import export_onnx
        from zeroseg.export.onnx.export import ExportSettings

        options = {"int8": int8, **variant}  # a variant's int8 (None, "static") replaces --int8
        if options["int8"] is not None:
            options["calib"] = calib
        settings = ExportSettings(checkpoint=checkpoint, out=out, labels=labels, short_side=short_side,
                                  int8_tolerance=int8_tolerance, threads=threads, force=True, progress=True,
                                  **options)  # fmt: skip
        export_onnx(settings, log=log)

    def aoti(out: Path) -> None:
        from zeroseg.export.aoti.export import AotiSettings, export_aoti

        # portable: a run-time thread count (and the dynamic + specialised-threads build fails to
        # compile on torch 2.14: "materialize_symints: no producer")
        settings = AotiSettings(checkpoint=checkpoint, out=out, labels=labels, short_side=short_side,
                                dynamic=True, portable=True, force=True, progress=True)  # fmt: skip
        export_aoti(settings, log=log)

    def executorch(out: Path) -> None:
        from zeroseg.export.executorch.export import ExecuTorchSettings, export_executorch

        # one bundle for both rows: fp32 segmenter.pte and the int8 program, calibrated like ONNX's
        settings = ExecuTorchSettings(checkpoint=checkpoint, out=out, labels=labels, short_side=short_side,
                                      int8=True, calib=calib, int8_tolerance=int8_tolerance, force=True,
                                      progress=True)  # fmt: skip
        export_executorch(settings, log=log)

    def trt(out: Path) -> None:  # NOT VERIFIED: needs TensorRT and a GPU (README "TensorRT")
        from zeroseg.export.tensorrt.export import TrtSettings, export_trt

        export_trt(TrtSettings(source=get("onnx"), out=out, precision="fp16", force=True), log=log)

    # the A/B bundles: fp32 with attention left as MatMul / Softmax / MatMul; static int8 incl. attention
    variants = {"onnx-unfused": {"int8": None, "fuse_attention": False},
                "onnx-int8-attn": {"int8": "static", "int8_attention": "qk+pv"},
                "onnx-int8-qk": {"int8": "static", "int8_attention": "qk"}}  # fmt: skip
    builders = {"onnx": onnx, "aoti": aoti, "executorch": executorch, "trt": trt}
    builders.update({kind: functools.partial(onnx, **v) for kind, v in variants.items()})
    options = {"labels": labels, "short_side": short_side}
    calibrated = {"calib": str(Path(calib).resolve())} if calib is not None else {}  # in the key when given
    int8_key = {"int8_tolerance": int8_tolerance, **calibrated}
    extra = {"onnx": {"int8": int8, **int8_key}, "aoti": {"portable": True}, "trt": {},
             "executorch": {"int8": True, **int8_key},
             **{kind: {**v, **int8_key} for kind, v in variants.items()}}  # fmt: skip

    def get(what: str) -> Path:
        if what not in made:
            if checkpoint is None:
                raise ZerosegError(f"no {what} bundle was given and no checkpoint to export one from")
            made[what] = cached_export(what, checkpoint, {**options, **extra[what]}, builders[what], log=log)
        return made[what]

    return get


def random_checkpoint(preset: str, *, short_side: int | None = None, seed: int = 0, log=print) -> Path:
    """A checkpoint of a randomly initialised `preset` student (e.g. `base`: ViT-B/16), cached.

    For timing engines at a model's real size where no trained weights exist: the student's weights
    are seeded random, the text tower is the bundled ShapeWorld teacher's (so the vocabulary still
    encodes), the inference short side `short_side` (default: the preset's training crop x 2).
    Labels and mIoU of such a model mean nothing; agreement between engines still does.
    """
    from zeroseg.bundled import bundled_teacher
    from zeroseg.checkpoint import CheckpointConfig, save_checkpoint
    from zeroseg.classes import SHAPEWORLD_TEMPLATES
    from zeroseg.model.config import student_preset
    from zeroseg.model.student import ZeroSegStudent
    from zeroseg.preprocess import Preprocess
    from zeroseg.teacher.load import load_teacher

    teacher = load_teacher(str(bundled_teacher()))
    cfg = student_preset(preset, out_dim=teacher.embed_dim)
    side = int(short_side) if short_side is not None else 2 * cfg.image_size
    path = cache_root() / f"random-{preset}-{side}-seed{seed}.pt"
    if not path.is_file():
        log(f"writing a randomly initialised {preset} checkpoint to {path} (once)")
        torch.manual_seed(seed)
        config = CheckpointConfig(
            student=cfg, preprocess=Preprocess(train_size=cfg.image_size, test_short_side=side),
            templates=tuple(SHAPEWORLD_TEMPLATES), logit_scale=teacher.logit_scale,
            teacher={"name": "bundled ShapeWorld teacher (text tower only)", "random_student": preset},
        )  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        state = ZeroSegStudent(cfg).state_dict()
        save_checkpoint(path, config=config, student=state, text=teacher.text_state(), inference_only=True)
    return path
