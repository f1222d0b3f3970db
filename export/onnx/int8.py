"""The int8 variants of a bundle's image graphs, their agreement with fp32 and the mIoU change.

`add_int8` quantises image_encoder.onnx and segmenter.onnx (`zeroseg.export.onnx.quantize`), gates the
int8 label maps against the fp32 ones on the parity images (default >= 98 % of pixels, looser than
fp32's gate and said so in the output), and, when the calibration images come with VOC masks, scores
fp32 and int8 mIoU on them with `zeroseg.evaluation.evaluate` through `OnnxSegmenter`. With
`--int8-attention` (static only) the attention products are quantised too and the int8 graphs are
unfused (`zeroseg.export.onnx.quantize`); each graph's `int8_fused_ops` records what its int8 file holds.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from zeroseg.export.core import parity
from zeroseg.export.core.calibration import calibration_set
from zeroseg.export.core.manifest import BundleManifest, write_manifest
from zeroseg.export.core.resize import preprocess_images
from zeroseg.export.core.specs import segmenter_feed
from zeroseg.export.onnx.fuse import file_op_counts
from zeroseg.export.onnx.quantize import ATTENTION_CHOICES, quantize_graph
from zeroseg.export.onnx.runtime import open_session
from zeroseg.preprocess import inference_size


def _feeds(images, short_side: int, patch: int, text: np.ndarray, bg_thresh: float, offset: int):
    enc, seg = [], []
    for img in images:
        pixels = preprocess_images([img], inference_size(img.height, img.width, short_side, patch))
        enc.append({"pixels": pixels})
        seg.append(segmenter_feed(pixels, text, bg_thresh, offset, (img.height, img.width)))
    return enc, seg


def _miou(folder: Path, manifest: BundleManifest, voc_root: Path, split: str, threads) -> dict:
    from zeroseg.data.voc import VOCDataset
    from zeroseg.evaluation.evaluate import evaluate
    from zeroseg.export.core.versions import file_hashes
    from zeroseg.export.onnx.runtime import OnnxSegmenter

    write_manifest(folder, dataclasses.replace(manifest, files=file_hashes(folder)))  # provisional
    data = VOCDataset(voc_root, split)
    scores = {}
    for precision in ("fp32", "int8"):
        seg = OnnxSegmenter(folder, precision=precision, threads=threads)
        scores[precision] = evaluate(seg, data, progress=False).miou
    return {
        "dataset": str(voc_root), "split": split, "images": len(data), "mIoU_fp32": scores["fp32"],
        "mIoU_int8": scores["int8"], "mIoU_change": scores["int8"] - scores["fp32"],
    }  # fmt: skip


def add_int8(
    manifest: BundleManifest,
    folder: Path,
    settings,
    cases: list[parity.GateCase],
    text: torch.Tensor,
    space,
    bg_thresh: float,
    torch_labels: list[np.ndarray],
    *,
    log=print,
) -> BundleManifest:
    """Write the int8 graphs into `folder` and return the manifest with their entries and figures.

    Args:
        manifest: the fp32 bundle's manifest so far.
        folder: the bundle folder being built.
        settings: the export options (int8 mode, calib folder, int8 tolerance, threads).
        cases: the parity gate's images; text: their class embeddings; space: their label space.
        bg_thresh: the gate's background threshold.
        torch_labels: PyTorch's fp32 label maps of the cases.
        log: receives the figures.
    """
    from zeroseg.export.core.versions import file_hashes

    mode = settings.int8
    choice = getattr(settings, "int8_attention", None)
    attention = ATTENTION_CHOICES[choice] if choice else ()
    tol, tol_note = _int8_threshold(settings.int8_tolerance)
    text_np = text.numpy()
    pre = manifest.preprocess
    graphs = {k: dict(v) for k, v in manifest.graphs.items()}
    with tempfile.TemporaryDirectory(prefix="zeroseg-calib-") as work:
        calib = calibration_set(settings.calib, Path(work))
        enc_feeds, seg_feeds = _feeds(
            calib.images, pre["short_side"], pre["patch_multiple"], text_np, bg_thresh, space.label_offset
        )
        feeds = {"image_encoder": enc_feeds, "segmenter": seg_feeds}
        _quantize_graphs(folder, graphs, mode, feeds, progress=settings.progress, attention=attention)
        agreement, emb_err = _int8_errors(
            folder,
            graphs,
            cases,
            text_np,
            bg_thresh,
            space.label_offset,
            torch_labels,
            threads=settings.threads,
        )
        figures = {
            "mode": mode,
            "attention": choice,
            "recipe": _recipe(mode, choice),
            "calibration": calib.source if mode == "static" else None,
            "pixel_agreement_with_fp32": agreement,
            "embeddings_max_abs_error_vs_fp32": emb_err,
            "threshold": tol,
            "threshold_note": tol_note,
        }
        what = f"{mode}{f' + attention {choice}' if choice else ''}"
        log(
            f"int8 {what}: label agreement with fp32 {agreement:.4%} (looser gate >= {tol:.2%}, {tol_note}); "
            f"embeddings max abs error vs fp32 {emb_err:.2e}"
        )
        parity.check_gate(f"segmenter.int8.onnx ({what})", "label agreement with fp32", agreement, tol)
        manifest = dataclasses.replace(manifest, graphs=graphs, files=file_hashes(folder))
        if calib.voc_root is not None:
            figures["miou"] = _miou(folder, manifest, calib.voc_root, calib.split, settings.threads)
            m = figures["miou"]
            log(
                f"int8 {what}: mIoU on {m['images']} images ({calib.source}) fp32 {m['mIoU_fp32']:.4f}, "
                f"int8 {m['mIoU_int8']:.4f} (change {m['mIoU_change']:+.4f})"
            )
    return dataclasses.replace(manifest, int8=figures, files=file_hashes(folder))


def _int8_threshold(given: float | None) -> tuple[float, str]:
    """The int8 gate's agreement threshold and how it was set (its default is looser than fp32's)."""
    if given is None:
        return parity.INT8_AGREEMENT, f"default {parity.INT8_AGREEMENT:.0%}"
    return given, f"set by --int8-tolerance (default {parity.INT8_AGREEMENT:.0%})"


def _recipe(mode: str, attention: str | None = None) -> str:
    """The manifest's one-line description of how `mode` ("dynamic" or "static") quantised the graphs
    and, with `attention` ("qk" or "qk+pv"), which attention products."""
    products = {"qk": "Q.K^T (P.V in float)", "qk+pv": "Q.K^T and P.V"}.get(attention or "", "")
    what = (
        f"attention expanded (unfused), then weight MatMul/Gemm/Conv and the attention products {products} "
        "(u8 x u8 QDQ; head, LayerNorm, Softmax in float); "
        if attention
        else "weight MatMul/Gemm/Conv only (attention, fused or not, head, LayerNorm, Softmax in float); "
    )
    return (
        "quant_pre_process, then "
        + what
        + ("dynamic: s8 weights per tensor" if mode == "dynamic" else "static QDQ: u8 activations, "
           "s8 weights per tensor, MinMax calibration")
        + "; weights reduced to 7 bits (no u8 x s8 saturation on x86 without VNNI)"
    )  # fmt: skip


def _quantize_graphs(
    folder: Path,
    graphs: dict,
    mode: str,
    feeds: dict[str, list[dict]],
    *,
    progress: bool,
    attention: tuple[str, ...] = (),
) -> None:
    """Write `<graph>.int8.onnx` beside each graph of `feeds` and record it as the graph's `int8_file`.

    `feeds` are the calibration inputs per graph (used by static mode only); every int8 graph is
    checked with the ONNX checker so that a broken file fails the export rather than a later load.
    """
    import onnx

    jobs = tuple(feeds.items())
    for name, graph_feeds in tqdm(
        jobs, desc=f"int8 {mode}", unit="graph", disable=not progress, file=sys.stderr
    ):
        src = folder / graphs[name]["file"]
        dst = folder / Path(graphs[name]["file"]).name.replace(".onnx", ".int8.onnx")
        quantize_graph(
            src, dst, mode, calibration=graph_feeds if mode == "static" else None, attention=attention
        )
        onnx.checker.check_model(str(dst), full_check=True)
        graphs[name]["int8_file"] = dst.name
        graphs[name]["int8_fused_ops"] = file_op_counts(dst)


def _int8_errors(
    folder: Path,
    graphs: dict,
    cases: list[parity.GateCase],
    text: np.ndarray,
    bg_thresh: float,
    label_offset: int,
    torch_labels: list[np.ndarray],
    *,
    threads,
) -> tuple[float, float]:
    """(label agreement of the int8 segmenter with PyTorch's fp32 labels, max abs embedding error of the
    int8 image encoder against the fp32 one) on the parity gate's cases."""
    seg = open_session(folder / graphs["segmenter"]["int8_file"], threads=threads)
    agreement = parity.int8_agreement(seg, cases, text, bg_thresh, label_offset, torch_labels)
    enc = open_session(folder / graphs["image_encoder"]["int8_file"], threads=threads)
    fp32 = open_session(folder / graphs["image_encoder"]["file"], threads=threads)
    emb_err = max(
        float(np.abs(enc.run(None, {"pixels": c.pixels})[0] - fp32.run(None, {"pixels": c.pixels})[0]).max())
        for c in cases
    )
    return agreement, emb_err
