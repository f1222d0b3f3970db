"""`export_onnx`: a checkpoint -> a bundle folder, gated on parity with PyTorch.

`build_bundle` fills a folder in order: the graphs (`zeroseg.export.onnx.export`), the vocabulary, the
parity gate (`zeroseg.export.core.parity`), the int8 variants (`zeroseg.export.onnx.int8`), the manifest.
`export_onnx` validates every input first, builds into a temporary folder beside `--out` and
renames it into place only after the gate passed; a failure (or Ctrl-C) removes it, and an existing
`--out` is replaced only with force, once the new bundle is complete.
"""

from __future__ import annotations

import datetime
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from zeroseg.errors import ZerosegError
from zeroseg.export.core import parity
from zeroseg.export.core.folders import check_out_folder, check_sides
from zeroseg.export.core.manifest import BundleManifest, sha256_file, write_manifest
from zeroseg.export.core.versions import file_hashes, versions
from zeroseg.export.core.vocab import check_labels, vocabulary_file
from zeroseg.export.onnx.export import OPSETS, ExportSettings, GraphModules, export_graphs
from zeroseg.export.onnx.runtime import open_session
from zeroseg.infer.factory import head_name
from zeroseg.infer.labels import DEFAULT_BG_THRESH, LabelSpace
from zeroseg.utils.atomic import staged_folder

RESIZE = (
    "bicubic, antialias=True, align_corners=False, then clamped to [0, 1] (PyTorch F.interpolate, as "
    "zeroseg.Segmenter; numpy port in zeroseg.export.core.resize, matching it to ~1e-6)"
)
EXPORTER_WHY = (
    "torch.export capture: symbolic batch / height / width (multiples of the patch) that fail loudly "
    "instead of specialising; the TorchScript exporter is deprecated in torch 2.14"
)


def _threshold(given: float | None, default: float, flag: str) -> tuple[float, str]:
    if given is None:
        return default, f"default {default:.2%}"
    return given, f"set by {flag} (default {default:.2%})"


def model_entry(ckpt) -> dict:
    """The manifest's `model` entry: the checkpoint's config minus its training state, with sizes."""
    data = ckpt.config.to_dict()
    data.pop("train", None)
    cfg = ckpt.student_config
    inference = dict(data.get("inference", {}))
    inference.setdefault("bg_thresh", DEFAULT_BG_THRESH)
    return {**data, "inference": inference, "num_segments": cfg.num_segments, "embed_dim": cfg.out_dim}


@dataclass(frozen=True)
class _GateResult:
    """What the fp32 parity gate measured, and what the int8 step re-uses to gate its graphs."""

    figures: dict  # the manifest's `parity` entry
    torch_labels: list[np.ndarray]  # PyTorch's label maps of the cases
    cases: list[parity.GateCase]
    text: torch.Tensor  # (C, D) class embeddings of `space`
    space: LabelSpace
    bg_thresh: float


def build_bundle(
    ckpt, settings: ExportSettings, folder: Path, *, short_side: int, log=print
) -> BundleManifest:
    """Export, gate and describe a checkpoint into `folder` (see the module docstring).

    Args:
        ckpt: the loaded checkpoint.
        settings: the export options.
        folder: an empty folder to fill.
        short_side: the bundle's network input short side (validated).
        log: receives progress lines and the figures.

    Returns:
        The manifest written into `folder`.
    """
    modules = GraphModules.of(ckpt, settings.head)
    graphs = export_graphs(
        ckpt, modules, folder, max_side=settings.max_side, opset=settings.opset, progress=settings.progress,
        fuse_attention=settings.fuse_attention,
    )  # fmt: skip
    vocab = None
    if settings.labels:
        vocab = vocabulary_file(modules.text_encoder, list(ckpt.templates), settings.labels, folder)
    gate = _parity_gate(ckpt, modules, settings, folder, graphs, short_side=short_side, log=log)
    manifest = _describe_bundle(ckpt, modules, settings, folder, graphs, gate.figures, vocab, short_side)
    if settings.int8:
        from zeroseg.export.onnx.int8 import add_int8

        manifest = add_int8(
            manifest, folder, settings, gate.cases, gate.text, gate.space, gate.bg_thresh, gate.torch_labels,
            log=log,
        )  # fmt: skip
    write_manifest(folder, manifest)
    return manifest


def _parity_gate(
    ckpt, modules: GraphModules, settings: ExportSettings, folder: Path, graphs: dict, *, short_side: int, log
) -> _GateResult:
    """Run the exported fp32 graphs against PyTorch on the gate cases, log the figures and enforce the gate.

    Kept apart from the manifest so that the int8 step can gate against the same cases and labels.

    Raises:
        ZerosegError: the segmenter's label agreement or the text encoder's error misses its gate.
    """
    from zeroseg.text import encode_classes

    config = ckpt.config
    bg_thresh = DEFAULT_BG_THRESH if config.bg_thresh is None else config.bg_thresh
    space = LabelSpace.build(
        settings.labels or [list(c) for c in parity.PROBE_CLASSES], bg_prompt=config.bg_prompt
    )
    text = encode_classes(modules.text_encoder, [list(p) for p in space.prompts], list(ckpt.templates))
    cases = parity.gate_cases(short_side, ckpt.student_config.patch_size)
    tol, tol_note = _threshold(settings.tolerance, parity.FP32_AGREEMENT, "--tolerance")
    sessions = {
        name: open_session(folder / g["file"], threads=settings.threads) for name, g in graphs.items()
    }
    with tqdm(total=2, desc="parity", disable=not settings.progress, file=sys.stderr) as bar:
        figures, torch_labels = parity.image_parity(
            modules.encoder, sessions["image_encoder"], sessions["segmenter"], cases, text,
            logit_scale=ckpt.logit_scale, bg_thresh=bg_thresh, label_offset=space.label_offset,
            head=settings.head,
        )  # fmt: skip
        bar.update()
        figures["text_encoder"] = parity.text_parity(
            modules.text, sessions["text_encoder"], modules.text_encoder.tokenize
        )
        bar.update()
    figures.update(threshold=tol, threshold_note=tol_note, text_max_error=parity.TEXT_MAX_ERROR,
                   head=settings.head)  # fmt: skip
    seg, enc = figures["segmenter"], figures["image_encoder"]
    log(
        f"parity (fp32, {settings.head} head, {figures['images']} images, {figures['classes']} classes): "
        f"label agreement "
        f"{seg['pixel_agreement']:.4%} (gate >= {tol:.2%}, {tol_note}); embeddings max abs error "
        f"{enc['embeddings_max_abs_error']:.2e}, assignment {enc['assignment_max_abs_error']:.2e}, "
        f"text {figures['text_encoder']['max_abs_error']:.2e}"
    )
    parity.check_gate("segmenter.onnx", "label-map pixel agreement", seg["pixel_agreement"], tol)
    parity.check_gate(
        "text_encoder.onnx", "max abs error", figures["text_encoder"]["max_abs_error"], parity.TEXT_MAX_ERROR,
        higher_is_better=False,
    )  # fmt: skip
    return _GateResult(figures, torch_labels, cases, text, space, bg_thresh)


def _describe_bundle(
    ckpt,
    modules: GraphModules,
    settings: ExportSettings,
    folder: Path,
    graphs: dict,
    figures: dict,
    vocab: dict | None,
    short_side: int,
) -> BundleManifest:
    """The fp32 bundle's manifest: graphs, preprocessing, text tower, model, source and parity figures.

    Built after the gate so that `files` hashes exactly what the bundle ships (the int8 step adds to it).
    """
    cfg = ckpt.student_config
    preprocess = {
        "mean": list(ckpt.preprocess.mean),
        "std": list(ckpt.preprocess.std),
        "short_side": short_side,
        "max_side": settings.max_side,
        "patch_multiple": cfg.patch_size,
        "resize": RESIZE,
        "input": "RGB float32 in [0, 1], (B, 3, H, W), H and W multiples of patch_multiple; the "
        "normalisation is folded into the graphs",
    }
    text_cfg = modules.text_encoder.config
    return BundleManifest(
        versions=versions(),
        exporter={"name": "torch.onnx.export", "dynamo": True, "why": EXPORTER_WHY, "opset": settings.opset,
                  "trace": "batch 2, non-square input unlike the pos-embed grid", "optimize": True},
        graphs=graphs,
        preprocess=preprocess,
        text={
            "tokenizer": text_cfg["tokenizer"], "context_length": modules.text_encoder.context_length,
            "token_subset": text_cfg.get("token_subset"), "templates": list(ckpt.templates),
            "logit_scale": ckpt.logit_scale, "embed_dim": cfg.out_dim,
        },
        model=model_entry(ckpt),
        source={
            "checkpoint": str(Path(settings.checkpoint).absolute()),
            "sha256": sha256_file(settings.checkpoint),
        },
        parity=figures,
        files=file_hashes(folder),
        vocab=vocab,
        head=settings.head,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )  # fmt: skip


def export_inputs(settings) -> dict[str, Path | None]:
    """What an export of `settings` (ONNX or AOTInductor) reads, for `check_out_folder`."""
    return {
        "the checkpoint": settings.checkpoint,
        "the --labels-file": getattr(settings, "labels_file", None),
        "the --calib folder": getattr(settings, "calib", None),
    }


def export_onnx(settings: ExportSettings, *, log=print) -> BundleManifest:
    """Export a checkpoint's image, text and end-to-end graphs into a bundle folder.

    Args:
        settings: the checkpoint, the output folder and the options (`ExportSettings`).
        log: where progress lines and the parity figures go.

    Returns:
        The bundle's manifest (also written as `<out>/manifest.json`).

    Raises:
        ZerosegError: any bad input or a failed parity gate (one line; nothing is left behind).
    """
    from zeroseg.checkpoint import load_checkpoint

    if settings.head is not None:
        settings = replace(settings, head=head_name(settings.head))
    out = Path(settings.out)
    check_out_folder(out, settings.force, inputs=export_inputs(settings))
    if settings.int8 is not None and settings.int8 not in ("dynamic", "static"):
        raise ZerosegError(f"--int8 must be dynamic or static, got {settings.int8!r}")
    if settings.int8_attention is not None:
        from zeroseg.export.onnx.quantize import check_attention_choice

        check_attention_choice(settings.int8_attention, settings.int8)
    if settings.calib is not None and settings.int8 is None:
        raise ZerosegError("--calib is for int8: add --int8 static (or dynamic, to measure the mIoU change)")
    if settings.opset not in OPSETS:
        raise ZerosegError(f"--opset must be in {OPSETS.start}..{OPSETS.stop - 1}, got {settings.opset}")
    for flag, value in (("--tolerance", settings.tolerance), ("--int8-tolerance", settings.int8_tolerance)):
        if value is not None and not 0.0 < value <= 1.0:
            raise ZerosegError(f"{flag} is a pixel-agreement fraction in (0, 1], got {value}")
    ckpt = load_checkpoint(settings.checkpoint, with_train_state=False)
    settings = replace(settings, head=settings.head or ckpt.config.default_head)
    patch = ckpt.student_config.patch_size
    short_side = ckpt.preprocess.test_short_side if settings.short_side is None else settings.short_side
    check_sides(short_side, settings.max_side, patch)
    check_labels(ckpt, settings.labels, strict=settings.strict_vocab)
    if settings.calib is not None:
        from zeroseg.export.core.calibration import check_calib_folder

        check_calib_folder(Path(settings.calib))

    started = time.perf_counter()
    with staged_folder(out, what="the bundle") as tmp:
        manifest = build_bundle(ckpt, settings, tmp, short_side=short_side, log=log)
    log(f"wrote {out} ({len(manifest.files) + 1} files, {time.perf_counter() - started:.0f} s)")
    return manifest
