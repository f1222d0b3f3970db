"""The parity gate: each exported graph in ONNX Runtime (CPU) against PyTorch and the reference head.

The gate images (`gate_cases`): four ShapeWorld scenes in one batch, three non-square images of
odd size in a batch of three, and one image of a single patch, at the bundle's input sizes, each
labelled at its own (original) size. PyTorch side: the traced wrappers in eager mode and the
reference of the bundle's head per image (`reference_head`: `segment_head_ref` for the paper's,
`dense_head_ref` on `patch_tokens_ref` for the dense one), which is what `zeroseg.Segmenter(head=...)`
runs on the CPU. Figures: max abs error of the segment embeddings and of the assignment maps
(image_encoder), label-map pixel agreement and segment-probability error (segmenter), max abs error
of the text embeddings (text_encoder). Below a threshold the export fails with one line naming the
graph and the figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from zeroseg.errors import ZerosegError
from zeroseg.export.core.resize import preprocess_images
from zeroseg.export.core.specs import segmenter_feed
from zeroseg.preprocess import inference_size

if TYPE_CHECKING:
    import torch
    from PIL import Image

#: Default pixel-agreement thresholds of the label maps (fp32 against PyTorch; int8 against fp32).
FP32_AGREEMENT = 0.999
INT8_AGREEMENT = 0.98
#: Largest tolerated error of the unit text embeddings (fp32).
TEXT_MAX_ERROR = 1e-4
#: Prompts whose embeddings the text graph must reproduce: short, long, truncated, odd characters.
PROBE_PROMPTS = (
    "a photo of a red.",
    "blue",
    "a drawing of the cyan square on a grey background, seen from far away.",
    "x " * 90,
    "zebra crossing, 42 & café",
)
#: The probe vocabulary of the gate when no --labels are given.
PROBE_CLASSES = (("background",), ("red",), ("green",), ("blue",), ("yellow",), ("magenta",), ("cyan",))
#: Seed of the sample scenes every gate (and Triton's perf request) draws.
SCENE_SEED = 4242
SCENE_SIZE = 128


@dataclass
class GateCase:
    """One batch of the gate: [0, 1] pixels at the network size and the size to label them at."""

    name: str
    pixels: np.ndarray  # (B, 3, H, W) float32
    out_size: tuple[int, int]


def _smooth_images(n: int, height: int, width: int, seed: int) -> list:
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (max(1, height // 6), max(1, width // 6), 3), dtype=np.uint8)
        out.append(Image.fromarray(small).resize((width, height), Image.BILINEAR))
    return out


def sample_scenes(n: int, seed: int = SCENE_SEED, size: int = SCENE_SIZE) -> list[Image.Image]:
    """Scenes 0..n-1 of ShapeWorld's scenes data set `seed` (`zeroseg.data.scenes`), as PIL RGB images.

    The parity gates of every exporter and Triton's sample request use them.
    """
    from PIL import Image

    from zeroseg.data.scenes import generate_scene

    return [Image.fromarray(generate_scene(seed, size, index=i).image) for i in range(n)]


def gate_cases(short_side: int, patch: int, seed: int = SCENE_SEED) -> list[GateCase]:
    """The eight gate images (see the module docstring), preprocessed like the runtime does."""
    scenes = sample_scenes(4, seed)
    odd = _smooth_images(3, 53, 37, seed)
    one = _smooth_images(1, 2 * patch + 5, 3 * patch - 1, seed + 1)
    cases = []
    for name, images in (("shapeworld x4", scenes), ("non-square 53x37 x3", odd)):
        size = inference_size(images[0].height, images[0].width, short_side, patch)
        cases.append(GateCase(name, preprocess_images(images, size), (images[0].height, images[0].width)))
    cases.append(GateCase("one patch", preprocess_images(one, (patch, patch)), (one[0].height, one[0].width)))
    return cases


def gate_images(cases: list[GateCase]) -> int:
    return sum(c.pixels.shape[0] for c in cases)


def reference_head(
    head: str,
    segments: torch.Tensor,
    text: torch.Tensor,
    logit_scale: float,
    maps: torch.Tensor,
    size: tuple[int, int],
    bg_thresh: float,
    label_offset: int,
):
    """The reference `HeadResult` of `head` ("paper" or "dense") on a batch: `zeroseg.Segmenter`'s
    labels of that head on the CPU; the dense head's index and prob are per patch (B, h, w)."""
    from zeroseg.kernels.reference import dense_head_ref, patch_tokens_ref, segment_head_ref

    if head == "dense":
        return dense_head_ref(patch_tokens_ref(segments, maps), text, logit_scale, size, bg_thresh,
                              bg_label=0, label_offset=label_offset)  # fmt: skip
    return segment_head_ref(segments, text, logit_scale, maps, size, bg_thresh, bg_label=0,
                            label_offset=label_offset)  # fmt: skip


def torch_reference(
    encoder: torch.nn.Module,
    case: GateCase,
    text: torch.Tensor,
    logit_scale: float,
    bg_thresh: float,
    label_offset: int,
    head: str = "paper",
) -> dict[str, np.ndarray]:
    """PyTorch's outputs of one case: embeddings, maps, and `head`'s reference labels per image
    (segment labels and probs per segment, or per patch flattened row-major for the dense head)."""
    import torch

    labels, seg_labels, probs = [], [], []
    with torch.no_grad():
        segments, maps = encoder(torch.from_numpy(case.pixels))
        for j in range(segments.shape[0]):
            out = reference_head(head, segments[j : j + 1], text, logit_scale, maps[j : j + 1], case.out_size,
                                 bg_thresh, label_offset)  # fmt: skip
            labels.append(out.labels[0].numpy())
            seg_labels.append((out.index[0].flatten() + label_offset).numpy())
            probs.append(out.prob[0].flatten().numpy())
    return {
        "segments": segments.numpy(),
        "maps": maps.numpy(),
        "labels": np.stack(labels),
        "segment_labels": np.stack(seg_labels),
        "segment_probs": np.stack(probs),
    }


def run_segmenter(session, case: GateCase, text: np.ndarray, bg_thresh: float, label_offset: int):
    """segmenter.onnx outputs (labels, segment_labels, segment_probs) of one case."""
    return session.run(None, segmenter_feed(case.pixels, text, bg_thresh, label_offset, case.out_size))


def image_parity(
    encoder: torch.nn.Module,
    encoder_session,
    segmenter_session,
    cases: list[GateCase],
    text: torch.Tensor,
    *,
    logit_scale: float,
    bg_thresh: float,
    label_offset: int,
    head: str = "paper",
) -> tuple[dict, list[np.ndarray]]:
    """Figures of image_encoder.onnx and segmenter.onnx (with `head`) against PyTorch; also the torch
    label maps."""
    emb_err = map_err = prob_err = 0.0
    map_mismatch = map_total = agree = total = 0
    per_case, torch_labels = [], []
    text_np = text.numpy()
    for case in cases:
        ref = torch_reference(encoder, case, text, logit_scale, bg_thresh, label_offset, head)
        segments, maps = encoder_session.run(None, {"pixels": case.pixels})
        labels, _, probs = run_segmenter(segmenter_session, case, text_np, bg_thresh, label_offset)
        e = float(np.abs(segments - ref["segments"]).max())
        m = float(np.abs(maps - ref["maps"]).max())
        a = int((labels == ref["labels"]).sum())
        emb_err, map_err = max(emb_err, e), max(map_err, m)
        prob_err = max(prob_err, float(np.abs(probs - ref["segment_probs"]).max()))
        map_mismatch += int((maps != ref["maps"]).sum())
        map_total += maps.size
        agree, total = agree + a, total + labels.size
        torch_labels.append(ref["labels"])
        per_case.append(
            {
                "case": case.name,
                "batch": int(case.pixels.shape[0]),
                "input_hw": list(case.pixels.shape[2:]),
                "output_hw": list(case.out_size),
                "embeddings_max_abs_error": e,
                "assignment_max_abs_error": m,
                "pixel_agreement": a / labels.size,
            }
        )
    figures = {
        "images": gate_images(cases),
        "classes": int(text.shape[0]),
        "image_encoder": {
            "embeddings_max_abs_error": emb_err,
            "assignment_max_abs_error": map_err,
            "assignment_mismatch_fraction": map_mismatch / max(1, map_total),
        },
        "segmenter": {
            "pixel_agreement": agree / max(1, total),
            "pixels": total,
            "segment_probs_max_abs_error": prob_err,
        },
        "cases": per_case,
    }
    return figures, torch_labels


def text_parity(text_graph: torch.nn.Module, session, tokenize) -> dict:
    """Max abs error of text_encoder.onnx against PyTorch on the probe prompts."""
    import torch

    tokens = tokenize(list(PROBE_PROMPTS))
    with torch.no_grad():
        want = text_graph(tokens).numpy()
    got = session.run(None, {"token_ids": tokens.numpy()})[0]
    return {"prompts": len(PROBE_PROMPTS), "max_abs_error": float(np.abs(got - want).max())}


def int8_agreement(session, cases: list[GateCase], text: np.ndarray, bg_thresh, label_offset, fp32_labels):
    """Pixel agreement of an int8 segmenter's label maps with the fp32 (PyTorch) ones."""
    agree = total = 0
    for case, want in zip(cases, fp32_labels, strict=True):
        labels = run_segmenter(session, case, text, bg_thresh, label_offset)[0]
        agree += int((labels == want).sum())
        total += labels.size
    return agree / max(1, total)


def check_gate(
    graph: str, figure: str, value: float, threshold: float, *, higher_is_better: bool = True
) -> None:
    """Raise the one-line gate error when `value` misses `threshold`."""
    ok = value >= threshold if higher_is_better else value <= threshold
    if not ok:
        cmp = "<" if higher_is_better else ">"
        shown = (
            f"{value:.4%} {cmp} {threshold:.2%}" if higher_is_better else f"{value:.3g} {cmp} {threshold:.3g}"
        )
        raise ZerosegError(f"parity gate failed: {graph} {figure} {shown}; nothing was written")
