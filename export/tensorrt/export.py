"""`export_trt`: a checkpoint or ONNX bundle -> a folder with a TensorRT engine and its engine.json.

Order (nothing is written until every check passed, then everything goes into a temporary folder
renamed into place at the end):

1. flags, `--out`, the source (a zeroseg checkpoint, exported first with `export_onnx`, or a bundle
   folder verified against its manifest; a bare .onnx file is refused), the profile, the timing
   cache, the calibration folder;
2. TensorRT and a GPU (unless `--onnx-only`): without them, one line and a non-zero exit;
3. the bundle copied to `<out>/onnx/` (the text side and preprocessing of `TRTSegmenter`);
4. the TensorRT-ready graph at the precision (`precision`) and its ONNX Runtime parity against
   the bundle's fp32 graph, gated (fp32 >= 99.9 %, fp16 >= 99.5 %, int8 >= 98 % of pixels);
5. the engine (`build`), then engine.json.

The engine is the image encoder; the head runs in PyTorch (`TRTSegmenter`), so it is the one
`--head` names (default: the source's own: a bundle's, or the head a checkpoint records, else the
paper's), recorded in engine.json's
`head` and gated with that head's reference labels.

Layout: `image_encoder.<precision>.onnx`, `image_encoder.engine`, `engine.json`, `onnx/`.
"""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from zeroseg.errors import ZerosegError
from zeroseg.export.core.manifest import MANIFEST_NAME, sha256_file
from zeroseg.export.tensorrt.manifest import ENGINE_FILE, HARDWARE_COMPAT, write_engine_json
from zeroseg.export.tensorrt.precision import PRECISIONS
from zeroseg.export.tensorrt.profiles import Profile, Shape, derive_profile
from zeroseg.utils.atomic import staged_folder

FP16_AGREEMENT = 0.995
BUNDLE_DIR = "onnx"


@dataclass(frozen=True)
class TrtSettings:
    """What `zeroseg-export trt` was asked for (see `zeroseg.export.cli.tensorrt`)."""

    source: Path
    out: Path
    precision: str = "fp32"
    min_shape: Shape | None = None
    opt_shape: Shape | None = None
    max_shape: Shape | None = None
    workspace_mb: int = 4096
    timing_cache: Path | None = None
    hardware_compat: str = "none"
    version_compatible: bool = False
    calib: Path | None = None
    onnx_only: bool = False
    force: bool = False
    threads: int | None = None
    progress: bool = True
    head: str | None = None  # paper | dense; None: the source's own (a bundle's, a checkpoint's recorded one)


@dataclass
class Source:
    """A resolved `trt` source: the bundle (or the checkpoint to export one from) and its geometry."""

    kind: str  # "bundle" | "checkpoint"
    path: Path
    patch: int
    native_grid: int
    short_side: int
    max_side: int
    sha256: str
    head: str = "paper"  # the source's own head (a bundle's graph's, a checkpoint's recorded one)


def resolve_source(path: Path) -> Source:
    """Check a `trt` source: a zeroseg checkpoint or ONNX bundle folder; anything else is refused.

    Args:
        path: the CKPT|BUNDLE argument.

    Returns:
        The `Source`.
    """
    from zeroseg.export.core.manifest import read_manifest, verified_file

    path = Path(path)
    if not path.exists():
        raise ZerosegError(f"not found: {path} (pass a zeroseg checkpoint or a zeroseg-export onnx bundle)")
    if path.is_dir():
        manifest = read_manifest(path)
        verified_file(path, manifest, manifest.graph_file("image_encoder"))
        student = manifest.model["student"]
        return Source("bundle", path, manifest.patch, int(student["image_size"]) // manifest.patch,
                      manifest.short_side, int(manifest.preprocess["max_side"]),
                      sha256_file(path / MANIFEST_NAME), manifest.head)  # fmt: skip
    if path.suffix.lower() == ".onnx":
        raise ZerosegError(
            f"{path} is a bare ONNX file: zeroseg-export trt builds only graphs zeroseg wrote; pass the "
            "bundle folder (zeroseg-export onnx --out DIR) or the checkpoint"
        )
    from zeroseg.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path, with_train_state=False)
    cfg = ckpt.student_config
    return Source("checkpoint", path, cfg.patch_size, cfg.image_size // cfg.patch_size,
                  ckpt.preprocess.test_short_side, 2048, sha256_file(path),
                  ckpt.config.default_head)  # fmt: skip


def check_settings(settings: TrtSettings) -> tuple[Source, Profile]:
    """Every check that needs neither TensorRT nor any writing (step 1 of the module docstring)."""
    from zeroseg.export.core.folders import check_out_folder
    from zeroseg.infer.factory import head_name

    if settings.head is not None:
        head_name(settings.head)
    if settings.precision not in PRECISIONS:
        raise ZerosegError(f"--precision must be one of {', '.join(PRECISIONS)}, got {settings.precision!r}")
    if settings.hardware_compat not in HARDWARE_COMPAT:
        raise ZerosegError(f"--hardware-compat must be none or ampere+, got {settings.hardware_compat!r}")
    if settings.workspace_mb <= 0:
        raise ZerosegError(f"--workspace must be a positive number of MiB, got {settings.workspace_mb}")
    if settings.calib is not None and settings.precision != "int8":
        raise ZerosegError("--calib is for --precision int8 (static Q/DQ calibration)")
    inputs = {"the source": settings.source, "the --calib folder": settings.calib,
              "the --timing-cache": settings.timing_cache}  # fmt: skip
    check_out_folder(Path(settings.out), settings.force, inputs=inputs)
    source = resolve_source(settings.source)
    pos_error = None
    if source.kind == "bundle":
        import onnx

        from zeroseg.export.tensorrt.precision import pos_embed_error

        graph = source.path / "image_encoder.onnx"
        pos_error = lambda h, w: pos_embed_error(onnx.load(str(graph)), h, w)  # noqa: E731
    profile = derive_profile(
        patch=source.patch, native_grid=source.native_grid, short_side=source.short_side,
        max_side=source.max_side, min_shape=settings.min_shape, opt_shape=settings.opt_shape,
        max_shape=settings.max_shape, pos_embed_error=pos_error,
    )  # fmt: skip
    cache = settings.timing_cache
    if cache is not None and (cache.is_dir() or not cache.absolute().parent.is_dir()):
        raise ZerosegError(f"--timing-cache {cache} must be a file in an existing folder")
    if settings.calib is not None:
        from zeroseg.export.core.calibration import check_calib_folder

        check_calib_folder(Path(settings.calib))
    return source, profile


def parity_cases(short_side: int, patch: int, profile: Profile) -> list:
    """The parity gate's cases that fit the profile, plus two ShapeWorld scenes at the opt shape."""
    from zeroseg.export.core import parity
    from zeroseg.export.core.resize import preprocess_images

    cases = [c for c in parity.gate_cases(short_side, patch) if profile.covers((1, 3, *c.pixels.shape[2:]))]
    _, h, w = profile.opt
    images = parity.sample_scenes(2)
    pixels = preprocess_images(images, (h, w))
    cases.append(parity.GateCase(f"shapeworld x2 at opt {h}x{w}", pixels, (128, 128)))
    return cases


def _graph(
    settings: TrtSettings, bundle: Path, work: Path, profile: Profile, log, head: str = "paper"
) -> tuple[Path, dict]:  # fmt: skip
    """Write the TensorRT-ready graph into `work` and measure its parity (step 4)."""
    import onnx
    import torch

    from zeroseg.export.core import parity
    from zeroseg.export.core.manifest import read_manifest
    from zeroseg.export.onnx.fuse import unfuse_attention
    from zeroseg.export.onnx.runtime import OnnxSegmenter, open_session
    from zeroseg.export.tensorrt import precision as trt_precision

    manifest = read_manifest(bundle)
    model = onnx.load(str(bundle / manifest.graph_file("image_encoder")))
    unfuse_attention(model)  # TensorRT's parser knows no com.microsoft ops: plain MatMul/Softmax again
    rewritten = trt_precision.make_parseable(model)
    dst = work / f"image_encoder.{settings.precision}.onnx"
    fp32 = work / ".image_encoder.fp32.tmp.onnx"
    onnx.save(model, str(fp32))
    details: dict = {"pos_embed_rewritten": rewritten}
    if settings.precision == "fp32":
        os.replace(fp32, dst)
    elif settings.precision == "fp16":
        onnx.save(trt_precision.fp16_graph(model), str(dst))
        details["fp32_op_types"] = list(trt_precision.FP16_OP_BLOCK_LIST)
        details["fp32_scopes"] = ["input/output normalisation", *trt_precision.HEAD_SCOPES]
    else:
        from zeroseg.export.core.calibration import calibration_set
        from zeroseg.export.core.resize import preprocess_images
        from zeroseg.preprocess import inference_size

        with tempfile.TemporaryDirectory(prefix="zeroseg-calib-") as tmp:
            calib = calibration_set(settings.calib, Path(tmp))
        sizes = [
            inference_size(im.height, im.width, manifest.short_side, manifest.patch) for im in calib.images
        ]
        feeds = [{"pixels": preprocess_images([im], s)} for im, s in zip(calib.images, sizes, strict=True)]
        details["quantized_nodes"] = trt_precision.int8_graph(fp32, dst, feeds)
        details["calibration"] = calib.source
        fp32.unlink()
    check = onnx.load(str(dst))
    onnx.checker.check_model(check)
    if trt_precision.antialiased_resizes(check):
        raise ZerosegError(f"{dst.name} still has an antialiased Resize; TensorRT cannot parse it")
    seg = OnnxSegmenter(bundle, threads=settings.threads)
    space, text = seg.encode_classes([list(c) for c in parity.PROBE_CLASSES if c[0] != "background"])
    cases = parity_cases(manifest.short_side, manifest.patch, profile)
    figures = trt_precision.precision_parity(
        open_session(bundle / manifest.graph_file("image_encoder"), threads=settings.threads),
        open_session(dst, threads=settings.threads), cases, torch.from_numpy(text),
        logit_scale=float(manifest.text["logit_scale"]), bg_thresh=seg.default_bg_thresh,
        label_offset=space.label_offset, head=head,
    )  # fmt: skip
    gates = {"fp32": parity.FP32_AGREEMENT, "fp16": FP16_AGREEMENT, "int8": parity.INT8_AGREEMENT}
    gate = gates[settings.precision]
    figures.update(reference="the bundle's fp32 image_encoder.onnx (gated against PyTorch)", threshold=gate,
                   runtime="ONNX Runtime CPU", head=head, **details)  # fmt: skip
    log(
        f"parity ({settings.precision} graph vs fp32, ONNX Runtime CPU, {figures['images']} images): label "
        f"agreement {figures['pixel_agreement']:.4%} (gate >= {gate:.2%}); embeddings max abs error "
        f"{figures['embeddings_max_abs_error']:.2e}; assignment cells changed "
        f"{figures['assignment_mismatch_fraction']:.3%}"
    )
    parity.check_gate(dst.name, "label agreement with fp32", figures["pixel_agreement"], gate)
    return dst, figures


def export_trt(settings: TrtSettings, *, log=print) -> dict:
    """Build a TensorRT engine (or, with onnx_only, just its graph) into `settings.out`.

    Args:
        settings: the source, the output folder and the options.
        log: receives progress lines, the parity figures and the trtexec command.

    Returns:
        The engine.json content.
    """
    from zeroseg.export.tensorrt import build as trt_build
    from zeroseg.infer.factory import head_name

    source, profile = check_settings(settings)
    head = head_name(settings.head or source.head)
    if not settings.onnx_only:
        reason = trt_build.tensorrt_unavailable()
        if reason is not None:
            raise ZerosegError(f"{reason}; nothing was written (--onnx-only writes the graph without it)")
    out = Path(settings.out)
    with staged_folder(out, what="a folder") as tmp:
        bundle = tmp / BUNDLE_DIR
        if source.kind == "bundle":
            shutil.copytree(source.path, bundle)
        else:
            from zeroseg.export.onnx.bundle import export_onnx
            from zeroseg.export.onnx.export import ExportSettings

            export_onnx(ExportSettings(checkpoint=source.path, out=bundle, threads=settings.threads,
                                       progress=settings.progress, head=head), log=log)  # fmt: skip
        graph, figures = _graph(settings, bundle, tmp, profile, log, head)
        cache = None if settings.timing_cache is None else str(settings.timing_cache)
        line = trt_build.trtexec_command(graph.name, ENGINE_FILE, profile, workspace_mb=settings.workspace_mb,
                                         timing_cache=cache, hardware_compat=settings.hardware_compat,
                                         version_compatible=settings.version_compatible)  # fmt: skip
        log(f"trtexec equivalent (run in {out}): {line}")
        engine = trt_meta = device = None
        if not settings.onnx_only:
            import tensorrt as trt

            plan = trt_build.build_engine(
                graph, [profile], workspace_mb=settings.workspace_mb, timing_cache=settings.timing_cache,
                hardware_compat=settings.hardware_compat, version_compatible=settings.version_compatible,
                progress=settings.progress, log=log,
            )  # fmt: skip
            (tmp / ENGINE_FILE).write_bytes(plan)
            name, cc = trt_build.gpu_identity()
            engine = {"file": ENGINE_FILE, "sha256": sha256_file(tmp / ENGINE_FILE), "bytes": len(plan)}
            trt_meta = {"version": trt.__version__, "hardware_compatibility": settings.hardware_compat,
                        "version_compatible": settings.version_compatible}  # fmt: skip
            device = {"name": name, "compute_capability": f"{cc[0]}.{cc[1]}"}
        data = {
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "precision": settings.precision,
            "head": head,
            "profiles": [profile.to_dict()],
            "tensorrt": trt_meta,
            "device": device,
            "engine": engine,
            "graph": {"file": graph.name, "sha256": sha256_file(graph)},
            "bundle": BUNDLE_DIR,
            "source": {"kind": source.kind, "path": str(source.path.absolute()), "sha256": source.sha256},
            "builder": {"workspace_mb": settings.workspace_mb, "timing_cache": cache},
            "parity": figures,
            "trtexec": line,
        }
        write_engine_json(tmp, data)
    log(f"wrote {out}" + (" (graph only: --onnx-only)" if settings.onnx_only else ""))
    return data
