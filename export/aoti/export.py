"""`export_aoti`: a checkpoint -> an AOTInductor bundle (`segmenter.pt2` + manifest), gated on parity.

What is compiled: `zeroseg.export.graphs.SegmenterGraph`, the same end-to-end wrapper the ONNX
bundle exports (pixels in [0, 1] + text embeddings + threshold + label offset + output size ->
labels, the reference head's semantics; `--head paper|dense` picks the head inside it, recorded in
the manifest's `head`), captured by `torch.export` and compiled by
`torch._inductor.aoti_compile_and_package` with freezing on (weights folded as constants, as
PyTorch recommends for CPU). Its inputs and outputs are `zeroseg.export.core.specs.segmenter_spec`.

Output size: kept a graph input (an int64 tensor of 2) read with `.item()`, so Inductor compiles
the head for *unbacked* output sizes: one package paints any output size, checked by the gate at
several sizes. Input size: `--dynamic` makes batch, height and width symbolic (height and width as
patch x Dim, i.e. multiples of the patch); without it the package is static at batch 1 and the
input size of a 640x480 landscape image at `--short-side` (256 -> 256x344), and the runtimes refuse
any other size with one line (resizing to it silently would change the results).

CPU portability (the options are recorded in the manifest, `exporter.inductor`): by default
Inductor compiles with `-march=native`, the build host's widest vector ISA, and kernels specialised
to the build's `torch.get_num_threads()`. `--portable` sets `cpp.march="x86-64-v3"` (AVX2, FMA,
BMI2: any x86-64 from Haswell / Zen 1 on), `cpp.simdlen=256` (AVX2 kernels even on an AVX-512 host)
and `cpp.dynamic_threads=True` (the thread count is read at run time).

The bundle: segmenter.pt2, text_encoder.pt (the checkpoint's text tower, for new class names),
with --labels also vocab.npz (`zeroseg.export.core.vocab.vocabulary_file`) and vocab.bin (the label
space's text embeddings for the C++ runner, `zeroseg.export.core.vocab`), and manifest.json (the
ONNX bundle's `BundleManifest`, format `zeroseg-aoti-bundle`). It is written to a temporary folder
and renamed into place only after the gate passed; a failure leaves nothing behind.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from zeroseg.errors import ZerosegError
from zeroseg.export.aoti.compile import compile_package, compiler_version, describe_inductor, inductor_options
from zeroseg.export.core import parity
from zeroseg.export.core.formats import BY_NAME
from zeroseg.export.core.manifest import BundleManifest, sha256_file, write_manifest
from zeroseg.export.core.resize import preprocess_images
from zeroseg.export.core.specs import segmenter_feed, segmenter_spec
from zeroseg.infer.labels import DEFAULT_BG_THRESH, LabelSpace
from zeroseg.preprocess import inference_size
from zeroseg.utils.atomic import staged_folder

if TYPE_CHECKING:
    from zeroseg.export.onnx.export import GraphModules

AOTI_FORMAT = BY_NAME["aoti"].key
PACKAGE_NAME = "segmenter.pt2"
TEXT_NAME = "text_encoder.pt"
#: Static packages take the input size of an image of this (height, width) at the short side.
STATIC_ASPECT = (480, 640)
SIZE_RULE = (
    "scale = short_side / min(H, W); each side = max(patch, round_half_even(side * scale / patch) * "
    "patch) in float64 (Python's round); if the longer side exceeds max_side, both sides are scaled "
    "by max_side / longer and floored to the patch (zeroseg.infer.base.SegmenterBase.input_size)"
)
RESIZE = (
    "[0, 1] = uint8 / 255 in float32; PyTorch F.interpolate(mode='bicubic', antialias=True, "
    "align_corners=False) (Keys a = -0.5, support 2 x scale when downsampling, weights normalised), "
    "the width pass first, a pass skipped when its size is unchanged; then clamped to [0, 1]"
)


@dataclass(frozen=True)
class AotiSettings:
    """What `zeroseg-export aoti` was asked for (see `zeroseg.export.cli.aoti` for each option)."""

    checkpoint: Path
    out: Path
    labels: list[list[str]] | None = None
    short_side: int | None = None
    dynamic: bool = False
    portable: bool = False
    max_side: int = 2048
    force: bool = False
    tolerance: float | None = None
    progress: bool = True
    labels_file: Path | None = None  # where --labels came from (an input --out may not destroy)
    strict_vocab: bool = False
    head: str | None = None  # the head inside the package: paper | dense (None: the checkpoint's own)


def static_size(short_side: int, patch: int) -> tuple[int, int]:
    """Input (H, W) of a static package: a 640x480 image at `short_side` (256 -> 256x344)."""
    return inference_size(*STATIC_ASPECT, short_side, patch)


def capture(
    graph: torch.nn.Module, *, patch: int, embed_dim: int, size: tuple[int, int] | None, max_side: int
):
    """`torch.export` of a SegmenterGraph: dynamic batch/height/width when `size` is None, else static.

    Args:
        graph: the `SegmenterGraph`.
        patch: the patch size (height and width are multiples of it).
        embed_dim: the text embedding width.
        size: the static input (H, W) at batch 1, or None for dynamic shapes.
        max_side: largest side a dynamic package accepts.

    Returns:
        The `torch.export.ExportedProgram`.
    """
    from zeroseg.export.onnx.export import classes_dim, pixel_dims, trace_pixels

    gen = torch.Generator().manual_seed(1)
    text = torch.nn.functional.normalize(torch.randn(3, embed_dim, generator=gen), dim=-1)
    if size is None:
        grid = graph.encoder.student.cfg.image_size // patch  # the pos-embed grid, not to be traced
        pixels, pdims = trace_pixels(patch, grid), pixel_dims(patch, max_side)
    else:
        pixels, pdims = torch.rand(1, 3, *size, generator=gen), None
    args = (pixels, text, torch.tensor(0.5), torch.tensor(1), torch.tensor([45, 61]))
    dims = {"pixels": pdims, "text_embeddings": {0: classes_dim()}, "bg_thresh": None,
            "label_offset": None, "output_size": None}  # fmt: skip
    try:
        with torch.no_grad():
            return torch.export.export(graph.eval(), args, dynamic_shapes=dims)
    except Exception as exc:
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ZerosegError(f"torch.export failed on the segmenter: {line[:300]}") from None


def static_gate_cases(size: tuple[int, int], seed: int = parity.SCENE_SEED) -> list[parity.GateCase]:
    """Gate of a static package: five ShapeWorld scenes at its size, labelled at 128x128 and 480x640."""
    cases = []
    for i, img in enumerate(parity.sample_scenes(5, seed)):
        out = (img.height, img.width) if i < 4 else STATIC_ASPECT
        cases.append(
            parity.GateCase(f"shapeworld {i} -> {out[0]}x{out[1]}", preprocess_images([img], size), out)
        )
    return cases


def run_case(runner, case: parity.GateCase, text: torch.Tensor, bg_thresh: float, label_offset: int):
    """The package's (labels, segment_labels, segment_probs) of one gate case, as numpy."""
    feed = segmenter_feed(case.pixels, text.numpy(), bg_thresh, label_offset, case.out_size)
    with torch.no_grad():
        outs = runner(*(torch.from_numpy(np.ascontiguousarray(v)) for v in feed.values()))
    return [o.numpy() for o in outs]


def package_parity(runner, encoder, cases, text: torch.Tensor, *, logit_scale: float, bg_thresh: float,
                   label_offset: int, head: str = "paper") -> dict:  # fmt: skip
    """Label-map pixel agreement (and segment-prob error) of the package against PyTorch.

    Args:
        runner: the loaded package (callable on the segmenter's inputs).
        encoder: the PyTorch `ImageEncoderGraph`.
        cases: the gate batches.
        text: (C, D) text embeddings.
        logit_scale, bg_thresh, label_offset: the head's settings.
        head: the package's head ("paper" or "dense"): PyTorch's side runs its reference.

    Returns:
        The figures for the manifest's `parity` entry.
    """
    agree = total = 0
    prob_err = 0.0
    per_case = []
    for case in cases:
        ref = parity.torch_reference(encoder, case, text, logit_scale, bg_thresh, label_offset, head)
        labels, _, probs = run_case(runner, case, text, bg_thresh, label_offset)
        a = int((labels == ref["labels"]).sum())
        agree, total = agree + a, total + labels.size
        prob_err = max(prob_err, float(np.abs(probs - ref["segment_probs"]).max()))
        per_case.append({"case": case.name, "batch": int(case.pixels.shape[0]),
                         "input_hw": list(case.pixels.shape[2:]), "output_hw": list(case.out_size),
                         "pixel_agreement": a / labels.size})  # fmt: skip
    return {
        "images": parity.gate_images(cases),
        "classes": int(text.shape[0]),
        "segmenter": {"pixel_agreement": agree / max(1, total), "pixels": total,
                      "segment_probs_max_abs_error": prob_err},
        "cases": per_case,
        "head": head,
    }  # fmt: skip


def export_aoti(settings: AotiSettings, *, log=print) -> BundleManifest:
    """Compile a checkpoint's end-to-end segmenter into an AOTInductor bundle folder.

    Args:
        settings: the checkpoint, the output folder and the options (`AotiSettings`).
        log: where progress lines and the parity figures go.

    Returns:
        The bundle's manifest (also written as `<out>/manifest.json`).

    Raises:
        ZerosegError: any bad input or a failed parity gate (one line; nothing is left behind).
    """
    from zeroseg.checkpoint import load_checkpoint
    from zeroseg.export.core.folders import check_out_folder, check_sides
    from zeroseg.export.core.vocab import check_labels
    from zeroseg.export.onnx.bundle import export_inputs
    from zeroseg.infer.factory import head_name

    if settings.head is not None:
        settings = replace(settings, head=head_name(settings.head))
    out = Path(settings.out)
    check_out_folder(out, settings.force, inputs=export_inputs(settings))
    if settings.tolerance is not None and not 0.0 < settings.tolerance <= 1.0:
        raise ZerosegError(f"--tolerance is a pixel-agreement fraction in (0, 1], got {settings.tolerance}")
    ckpt = load_checkpoint(settings.checkpoint, with_train_state=False)
    settings = replace(settings, head=settings.head or ckpt.config.default_head)
    patch = ckpt.student_config.patch_size
    short_side = ckpt.preprocess.test_short_side if settings.short_side is None else settings.short_side
    check_sides(short_side, settings.max_side, patch)
    check_labels(ckpt, settings.labels, strict=settings.strict_vocab)
    started = time.perf_counter()
    with staged_folder(out, what="the bundle") as tmp:
        manifest = _build(ckpt, settings, tmp, short_side=short_side, log=log)
    log(f"wrote {out} ({len(manifest.files) + 1} files, {time.perf_counter() - started:.0f} s)")
    return manifest


def _build(ckpt, settings: AotiSettings, folder: Path, *, short_side: int, log) -> BundleManifest:
    """Capture, compile, gate and describe into `folder` (see the module docstring)."""
    from zeroseg.export.onnx.export import GraphModules
    from zeroseg.utils.atomic import atomic_torch_save

    cfg = ckpt.student_config
    modules = GraphModules.of(ckpt, settings.head)
    size = None if settings.dynamic else static_size(short_side, cfg.patch_size)
    program = capture(modules.segmenter, patch=cfg.patch_size, embed_dim=cfg.out_dim, size=size,
                      max_side=settings.max_side)  # fmt: skip
    options = inductor_options(settings.portable)
    seconds = compile_package(program, folder / PACKAGE_NAME, options, dynamic=size is None,
                              progress=settings.progress)  # fmt: skip
    shape = "dynamic" if size is None else f"static {size[0]}x{size[1]}"
    log(f"compiled {PACKAGE_NAME} in {seconds:.0f} s ({shape}, {settings.head} head)")
    atomic_torch_save(folder / TEXT_NAME, ckpt.text)
    vocab = _write_vocab(ckpt, modules, settings.labels, folder)
    figures = _package_gate(ckpt, modules, settings, folder, size=size, short_side=short_side, log=log)
    exporter = {
        "name": "torch._inductor.aoti_compile_and_package", "capture": "torch.export.export",
        "dynamic": size is None, "static_input": None if size is None else {"batch": 1, "hw": list(size)},
        "static_aspect_hw": list(STATIC_ASPECT), "inductor": describe_inductor(options),
        "output_size": "graph input, read with .item(): compiled for unbacked (any) output sizes",
        "compile_seconds": round(seconds, 1),
    }  # fmt: skip
    manifest = _describe_package(ckpt, modules, settings, folder, size, exporter, figures, vocab, short_side)
    write_manifest(folder, manifest)
    return manifest


def _write_vocab(ckpt, modules: GraphModules, labels: list[list[str]] | None, folder: Path) -> dict | None:
    """With `--labels`, write vocab.npz and the C++ runner's vocab.bin; return the manifest's `vocab` entry.

    vocab.bin holds the whole label space's text embeddings (background prompt included), so the C++
    runner needs no text tower for the exported labels.
    """
    from zeroseg.export.core.vocab import vocabulary_file, write_vocab_bin
    from zeroseg.text import encode_classes

    if not labels:
        return None
    templates = list(ckpt.templates)
    vocab = vocabulary_file(modules.text_encoder, templates, labels, folder)
    space = LabelSpace.build([list(e) for e in labels], bg_prompt=ckpt.config.bg_prompt)
    text = encode_classes(modules.text_encoder, [list(p) for p in space.prompts], templates)
    vocab["label_space"] = write_vocab_bin(folder, space, text.numpy())
    return vocab


def _package_gate(
    ckpt,
    modules: GraphModules,
    settings: AotiSettings,
    folder: Path,
    *,
    size: tuple[int, int] | None,
    short_side: int,
    log,
) -> dict:
    """Load the compiled package, compare its label maps with PyTorch's, log the figures and enforce the gate.

    Returns:
        The manifest's `parity` entry.

    Raises:
        ZerosegError: the label-map pixel agreement is below the tolerance.
    """
    from zeroseg.text import encode_classes

    config = ckpt.config
    bg_thresh = DEFAULT_BG_THRESH if config.bg_thresh is None else config.bg_thresh
    space = LabelSpace.build(
        settings.labels or [list(c) for c in parity.PROBE_CLASSES], bg_prompt=config.bg_prompt
    )
    text = encode_classes(modules.text_encoder, [list(p) for p in space.prompts], list(ckpt.templates))
    patch = ckpt.student_config.patch_size
    cases = parity.gate_cases(short_side, patch) if size is None else static_gate_cases(size)
    tol = parity.FP32_AGREEMENT if settings.tolerance is None else settings.tolerance
    runner = torch._inductor.aoti_load_package(str(folder / PACKAGE_NAME))
    figures = package_parity(runner, modules.encoder, cases, text, logit_scale=ckpt.logit_scale,
                             bg_thresh=bg_thresh, label_offset=space.label_offset,
                             head=settings.head)  # fmt: skip
    figures.update(threshold=tol, threshold_note="default" if settings.tolerance is None else "--tolerance")
    seg = figures["segmenter"]
    log(f"parity (AOTInductor, {settings.head} head, {figures['images']} images, {figures['classes']} "
        f"classes): label agreement {seg['pixel_agreement']:.4%} (gate >= {tol:.2%}); segment probs max abs "
        f"error {seg['segment_probs_max_abs_error']:.2e}")  # fmt: skip
    parity.check_gate(PACKAGE_NAME, "label-map pixel agreement", seg["pixel_agreement"], tol)
    return figures


def package_entries(ckpt, modules, checkpoint, short_side: int, max_side: int, input_note: str) -> dict:
    """The manifest entries every end-to-end package bundle (AOTInductor, ExecuTorch) fills alike:
    preprocess (the size rule and the resize a runtime must reproduce), text, model and source."""
    from zeroseg.export.onnx.bundle import model_entry

    cfg = ckpt.student_config
    text_cfg = modules.text_encoder.config
    return {
        "preprocess": {
            "mean": list(ckpt.preprocess.mean), "std": list(ckpt.preprocess.std), "short_side": short_side,
            "max_side": max_side, "patch_multiple": cfg.patch_size, "size_rule": SIZE_RULE, "resize": RESIZE,
            "input": f"RGB float32 in [0, 1], {input_note}",
        },
        "text": {
            "tokenizer": text_cfg["tokenizer"], "context_length": modules.text_encoder.context_length,
            "token_subset": text_cfg.get("token_subset"), "templates": list(ckpt.templates),
            "logit_scale": ckpt.logit_scale, "embed_dim": cfg.out_dim, "encoder_file": TEXT_NAME,
        },
        "model": model_entry(ckpt),
        "source": {"checkpoint": str(Path(checkpoint).absolute()), "sha256": sha256_file(checkpoint)},
    }  # fmt: skip


def _describe_package(
    ckpt,
    modules: GraphModules,
    settings: AotiSettings,
    folder: Path,
    size: tuple[int, int] | None,
    exporter: dict,
    figures: dict,
    vocab: dict | None,
    short_side: int,
) -> BundleManifest:
    """The AOTInductor bundle's manifest; a static package's spec is pinned to batch 1 at `size`.

    Built after the gate so that `files` hashes exactly what the bundle ships.
    """
    from zeroseg.export.core.versions import file_hashes, versions

    cfg = ckpt.student_config
    spec = segmenter_spec(cfg.num_segments, cfg.out_dim, settings.head).to_dict()
    spec["file"] = PACKAGE_NAME
    if size is not None:  # static input: batch 1 at `size`
        spec["inputs"][0]["dims"] = [1, 3, *size]
        for t in spec["outputs"]:
            t["dims"][0] = 1
    note = "(B, 3, H, W), contiguous; the normalisation is folded into the package"
    return BundleManifest(
        versions={**versions(), "compiler": compiler_version()},
        exporter=exporter,
        graphs={"segmenter": spec},
        **package_entries(ckpt, modules, settings.checkpoint, short_side, settings.max_side, note),
        parity=figures,
        files=file_hashes(folder),
        vocab=vocab,
        head=settings.head,
        format=AOTI_FORMAT,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )  # fmt: skip
