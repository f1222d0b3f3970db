"""`export_executorch`: a checkpoint -> an ExecuTorch bundle (`segmenter.pte` + manifest), gated on parity.

What is lowered: `zeroseg.export.graphs.SegmenterGraph`, the end-to-end wrapper the ONNX and
AOTInductor bundles export, through `SizedSegmenterGraph` (the output size as the lengths of two
carrier inputs, bounded by `--max-output-side`: ExecuTorch plans every buffer at its largest size
and cannot size one from a value read with `.item()`). The input is static, batch 1: one method per
`--aspects` entry (default 4:3, 3:4 and 1:1: at short side 256, 256x344, 344x256 and 256x256), each
the input size of an image of that aspect at `--short-side`; a runtime picks the method of an
image's input size and refuses any other in one line (a bounded dynamic input would plan the
attention of the largest one). Captured by `torch.export` in
XNNPACK's ops (`lower.xnnpack_friendly`), lowered by `to_edge_transform_and_lower` with the
XNNPACK partitioner; what XNNPACK took and what stayed on portable kernels is counted into the
manifest (`exporter.delegation`).

`--int8` adds `segmenter.int8.pte`: PT2E static quantization with `XNNPACKQuantizer`'s symmetric
per-channel config on the image encoder (the head stays fp32), calibrated on the images the ONNX
int8 path uses (`--calib DIR` or 64 ShapeWorld scenes), gated on label agreement with fp32
PyTorch (>= 98 %).

The bundle: segmenter.pte (+ segmenter.int8.pte), text_encoder.pt (new class names), with --labels
vocab.npz and vocab.bin (the C++ runner's label space), manifest.json (format
`zeroseg-executorch-bundle`). Written to a temporary folder, renamed into place after the gates.
"""

from __future__ import annotations

import datetime
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from zeroseg.errors import ZerosegError
from zeroseg.export.aoti.export import package_entries, static_gate_cases
from zeroseg.export.core import parity
from zeroseg.export.core.formats import BY_NAME
from zeroseg.export.core.manifest import BundleManifest, write_manifest
from zeroseg.export.executorch import lower
from zeroseg.infer.labels import DEFAULT_BG_THRESH, LabelSpace
from zeroseg.utils.atomic import staged_folder

EXECUTORCH_FORMAT = BY_NAME["executorch"].key
PROGRAM_NAME = "segmenter.pte"
INT8_NAME = "segmenter.int8.pte"
TEXT_NAME = "text_encoder.pt"
INT8_AGREEMENT = 0.98
#: Default bounds of the output size and the class count, per head: every planned buffer is sized
#: for them (the dense head upsamples one map per class, the paper's one per segment).
DEFAULT_MAX_OUTPUT_SIDE = {"paper": 2048, "dense": 1024}
DEFAULT_MAX_CLASSES = {"paper": 1024, "dense": 32}
#: Default static aspects (width, height): landscape and portrait photos, squares.
DEFAULT_ASPECTS = ((4, 3), (3, 4), (1, 1))


@dataclass(frozen=True)
class ExecuTorchSettings:
    """What `zeroseg-export executorch` was asked for (see `zeroseg.export.cli.executorch`)."""

    checkpoint: Path
    out: Path
    labels: list[list[str]] | None = None
    short_side: int | None = None
    int8: bool = False
    calib: Path | None = None
    max_output_side: int | None = None
    max_classes: int | None = None
    force: bool = False
    tolerance: float | None = None
    int8_tolerance: float | None = None
    progress: bool = True
    labels_file: Path | None = None
    strict_vocab: bool = False
    head: str | None = None  # paper | dense (None: the checkpoint's own)
    aspects: tuple[tuple[int, int], ...] = DEFAULT_ASPECTS


def input_sizes(aspects, short_side: int, patch: int) -> list[tuple[int, int]]:
    """The distinct static input sizes (H, W) of `aspects` ((W, H) ratios) at `short_side`."""
    from zeroseg.preprocess import inference_size

    return list(dict.fromkeys(inference_size(h, w, short_side, patch) for w, h in aspects))


def parse_aspects(text: str) -> tuple[tuple[int, int], ...]:
    """'4:3,3:4,1:1' -> ((4, 3), (3, 4), (1, 1)); one line for anything else."""
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        w, sep, h = part.partition(":")
        if not sep or not w.strip().isdigit() or not h.strip().isdigit() or int(w) < 1 or int(h) < 1:
            raise ZerosegError(f"--aspects takes W:H pairs like 4:3,3:4,1:1, got {part!r}")
        out.append((int(w), int(h)))
    if not out or len(out) > 8:
        raise ZerosegError(f"--aspects takes 1 to 8 W:H pairs, got {text!r}")
    return tuple(out)


def _check_settings(settings: ExecuTorchSettings, default_head: str) -> ExecuTorchSettings:
    """The settings with the head (`default_head`, the checkpoint's, when none is asked for) and its
    default bounds filled in; one line for any bad value."""
    from zeroseg.export.core.calibration import check_calib_folder
    from zeroseg.infer.factory import head_name

    head = default_head if settings.head is None else head_name(settings.head)
    for flag, value in (("--tolerance", settings.tolerance), ("--int8-tolerance", settings.int8_tolerance)):
        if value is not None and not 0.0 < value <= 1.0:
            raise ZerosegError(f"{flag} is a pixel-agreement fraction in (0, 1], got {value}")
    side = DEFAULT_MAX_OUTPUT_SIDE[head] if settings.max_output_side is None else settings.max_output_side
    classes = DEFAULT_MAX_CLASSES[head] if settings.max_classes is None else settings.max_classes
    if not 1 <= side <= 16384:
        raise ZerosegError(f"--max-output-side must be in 1..16384, got {side}")
    if not 2 <= classes <= 65536:
        raise ZerosegError(f"--max-classes must be in 2..65536 (the background counts), got {classes}")
    if settings.calib is not None:
        if not settings.int8:
            raise ZerosegError("--calib is for --int8: add --int8 or drop --calib")
        check_calib_folder(Path(settings.calib))
    if settings.labels and len(settings.labels) + 1 > classes:
        raise ZerosegError(
            f"{len(settings.labels)} labels (+ background) exceed --max-classes {classes}; raise it"
        )
    return replace(settings, head=head, max_output_side=side, max_classes=classes)


def export_executorch(settings: ExecuTorchSettings, *, log=print) -> BundleManifest:
    """Lower a checkpoint's end-to-end segmenter to an ExecuTorch bundle folder.

    Args:
        settings: the checkpoint, the output folder and the options (`ExecuTorchSettings`).
        log: where progress lines and the parity figures go.

    Returns:
        The bundle's manifest (also written as `<out>/manifest.json`).

    Raises:
        ZerosegError: ExecuTorch missing, any bad input or a failed gate (one line; nothing left behind).
    """
    from zeroseg.checkpoint import load_checkpoint
    from zeroseg.export.core.folders import check_out_folder, check_sides
    from zeroseg.export.core.vocab import check_labels
    from zeroseg.export.onnx.bundle import export_inputs
    from zeroseg.infer.factory import head_name

    lower.require_executorch()
    if settings.head is not None:
        head_name(settings.head)
    out = Path(settings.out)
    check_out_folder(out, settings.force, inputs=export_inputs(settings))
    ckpt = load_checkpoint(settings.checkpoint, with_train_state=False)
    settings = _check_settings(settings, ckpt.config.default_head)
    patch = ckpt.student_config.patch_size
    short_side = ckpt.preprocess.test_short_side if settings.short_side is None else settings.short_side
    sizes = input_sizes(settings.aspects, short_side, patch)
    check_sides(short_side, max(max(s) for s in sizes), patch)
    check_labels(ckpt, settings.labels, strict=settings.strict_vocab)
    started = time.perf_counter()
    with staged_folder(out, what="the bundle") as tmp:
        manifest = _build(ckpt, settings, tmp, sizes=sizes, short_side=short_side, log=log)
    log(f"wrote {out} ({len(manifest.files) + 1} files, {time.perf_counter() - started:.0f} s)")
    return manifest


def _build(
    ckpt, settings: ExecuTorchSettings, folder: Path, *, sizes, short_side: int, log
) -> BundleManifest:
    """Capture, lower, gate (fp32, then int8) and describe into `folder`."""
    from zeroseg.export.aoti.export import _write_vocab
    from zeroseg.export.onnx.export import GraphModules
    from zeroseg.utils.atomic import atomic_torch_save

    cfg = ckpt.student_config
    modules = GraphModules.of(ckpt, settings.head)
    bounds = (settings.max_output_side, settings.max_classes)
    graphs = {
        lower.method_name(s): (s, lower.sized_graph(modules.segmenter, s, cfg.patch_size)) for s in sizes
    }
    started = time.perf_counter()
    programs = {name: lower.capture(g, s, cfg.out_dim, *bounds) for name, (s, g) in graphs.items()}
    report = lower.write_program(programs, folder / PROGRAM_NAME)
    shapes = ", ".join(f"{h}x{w}" for h, w in sizes)
    log(f"lowered {PROGRAM_NAME} in {time.perf_counter() - started:.0f} s (static {shapes}, {settings.head} "
        f"head): {lower.describe(report)}")  # fmt: skip
    atomic_torch_save(folder / TEXT_NAME, ckpt.text)
    vocab = _write_vocab(ckpt, modules, settings.labels, folder)
    gate = _Gate(ckpt, modules, settings)
    figures = gate.check(folder / PROGRAM_NAME, sizes, "fp32", log=log)
    exporter = {
        "name": "executorch.exir.to_edge_transform_and_lower", "capture": "torch.export.export",
        "partitioner": "XnnpackPartitioner",
        "static_inputs": [{"batch": 1, "hw": list(s), "method": lower.method_name(s)} for s in sizes],
        "aspects_wh": [list(a) for a in settings.aspects], "max_output_side": settings.max_output_side,
        "max_classes": settings.max_classes, "delegation": report,
        "output_size": "the lengths of the uint8 inputs rows (H) and cols (W), bounded by max_output_side",
    }  # fmt: skip
    int8 = None
    if settings.int8:
        int8 = _add_int8(ckpt, settings, graphs, gate, folder, log=log)
        exporter["int8_delegation"] = int8.pop("delegation")
    manifest = _describe(ckpt, modules, settings, folder, sizes, exporter, figures, vocab, short_side, int8)
    write_manifest(folder, manifest)
    return manifest


class _Gate:
    """Label agreement of a `.pte` with PyTorch on the static gate cases (AOTInductor's)."""

    def __init__(self, ckpt, modules, settings: ExecuTorchSettings) -> None:
        from zeroseg.text import encode_classes

        config = ckpt.config
        self.ckpt, self.modules, self.settings = ckpt, modules, settings
        self.bg_thresh = DEFAULT_BG_THRESH if config.bg_thresh is None else config.bg_thresh
        self.space = LabelSpace.build(
            settings.labels or [list(c) for c in parity.PROBE_CLASSES], bg_prompt=config.bg_prompt
        )
        prompts = [list(p) for p in self.space.prompts]
        self.text = encode_classes(modules.text_encoder, prompts, list(ckpt.templates))

    def check(self, path: Path, sizes, precision: str, *, log) -> dict:
        """Run the program on the cases, log the figures, enforce the gate; returns the figures."""
        from zeroseg.export.aoti.export import package_parity
        from zeroseg.export.executorch.runtime import Program

        settings = self.settings
        if precision == "fp32":
            tol = parity.FP32_AGREEMENT if settings.tolerance is None else settings.tolerance
            note = "default" if settings.tolerance is None else "--tolerance"
        else:
            tol = INT8_AGREEMENT if settings.int8_tolerance is None else settings.int8_tolerance
            note = "default" if settings.int8_tolerance is None else "--int8-tolerance"
        program = Program(path, settings.max_output_side, settings.max_classes)
        cases = [c for s in sizes for c in static_gate_cases(s)]
        figures = package_parity(
            program, self.modules.encoder, cases, self.text, logit_scale=self.ckpt.logit_scale,
            bg_thresh=self.bg_thresh, label_offset=self.space.label_offset, head=settings.head,
        )  # fmt: skip
        figures.update(threshold=tol, threshold_note=note)
        seg = figures["segmenter"]
        log(f"parity (ExecuTorch {precision}, {settings.head} head, {figures['images']} images, "
            f"{figures['classes']} classes): label agreement with PyTorch {seg['pixel_agreement']:.4%} "
            f"(gate >= {tol:.2%}); segment probs max abs error "
            f"{seg['segment_probs_max_abs_error']:.2e}")  # fmt: skip
        parity.check_gate(path.name, "label-map pixel agreement", seg["pixel_agreement"], tol)
        return figures


def _add_int8(ckpt, settings, graphs: dict, gate: _Gate, folder: Path, *, log) -> dict:
    """Quantize, lower and gate segmenter.int8.pte (every method); returns the manifest's `int8` entry."""
    from zeroseg.export.core.calibration import calibration_set
    from zeroseg.export.core.resize import preprocess_images

    started = time.perf_counter()
    programs = {}
    with tempfile.TemporaryDirectory(prefix="zeroseg-calib-") as work:
        calib = calibration_set(settings.calib, Path(work))
        for name, (size, graph) in graphs.items():
            pixels = [preprocess_images([img], size) for img in calib.images]
            programs[name] = lower.quantize(graph, size, ckpt.student_config.out_dim, pixels,
                                            settings.max_output_side, settings.max_classes,
                                            progress=settings.progress)  # fmt: skip
    report = lower.write_program(programs, folder / INT8_NAME)
    log(f"lowered {INT8_NAME} in {time.perf_counter() - started:.0f} s: {lower.describe(report)}")
    figures = gate.check(folder / INT8_NAME, [s for s, _ in graphs.values()], "int8", log=log)
    return {
        "file": INT8_NAME, "recipe": lower.INT8_RECIPE, "calibration": calib.source,
        "pixel_agreement_with_torch_fp32": figures["segmenter"]["pixel_agreement"],
        "threshold": figures["threshold"], "threshold_note": figures["threshold_note"],
        "parity": figures, "delegation": report,
    }  # fmt: skip


def _describe(
    ckpt, modules, settings, folder, sizes, exporter, figures, vocab, short_side, int8
) -> BundleManifest:
    """The bundle's manifest, built after the gates so that `files` hashes what ships."""
    from zeroseg.export.core.specs import segmenter_spec
    from zeroseg.export.core.versions import file_hashes, versions

    cfg = ckpt.student_config
    spec = segmenter_spec(cfg.num_segments, cfg.out_dim, settings.head).to_dict()
    spec["file"] = PROGRAM_NAME
    if int8 is not None:
        spec["int8_file"] = INT8_NAME
    spec["inputs"][0]["dims"] = [1, 3, "H", "W"]
    spec["inputs"][0]["note"] = "one of exporter.static_inputs' hw, the .pte method of that name"
    spec["inputs"] = spec["inputs"][:4] + [
        {"name": "rows", "dtype": "uint8", "dims": ["H_out"], "note": "only its length is read"},
        {"name": "cols", "dtype": "uint8", "dims": ["W_out"], "note": "only its length is read"},
    ]
    for t in spec["outputs"]:
        t["dims"][0] = 1
    note = "(1, 3, H, W) at one of the static sizes; the normalisation is folded into the program"
    max_side = max(max(s) for s in sizes)
    return BundleManifest(
        versions={**versions(), "executorch": lower.executorch_version()},
        exporter=exporter,
        graphs={"segmenter": spec},
        **package_entries(ckpt, modules, settings.checkpoint, short_side, max_side, note),
        parity=figures,
        files=file_hashes(folder),
        vocab=vocab,
        int8=int8,
        head=settings.head,
        format=EXECUTORCH_FORMAT,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )  # fmt: skip
