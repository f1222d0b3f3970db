"""The proof's inference settings: one grid for every method, picked on *tune*, scored once on val.

Each method (a trained student, the untrained one, the MaskCLIP-style baseline) gets the same grid
of short sides, background thresholds and "background" prompt on/off; the setting with the best
tune mIoU is then scored, once, on each held-out val split. The network's output does not depend on
the vocabulary, the threshold or the prompt, so each image's forward pass is computed once per short
side and reused across the grid (`cached_network`): the grid costs heads, not networks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from zeroseg.data.voc import VOCDataset
from zeroseg.evaluation.evaluate import evaluate

#: background thresholds tried for every method (finer than the first proof's six values)
THRESHOLDS = (0.0, 0.3, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
#: network short sides: the scenes' own 128 px up to 4x (inference above the training size helps
#: every method on these small scenes)
SHORT_SIDES = (128, 256, 384, 512)


def _digest(*parts: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part)
    return h.digest()


@contextmanager
def cached_network(segmenter: Any) -> Iterator[None]:
    """Memoise `segmenter.preprocess` and `segmenter.forward` on identical inputs while the block runs.

    Keys are the inputs' sizes and a digest of their bytes, so a hit returns exactly what the stage
    would have computed; the instance attributes are removed again on exit.
    """
    preprocess, forward = segmenter.preprocess, segmenter.forward
    pixels_memo: dict[tuple, Any] = {}
    output_memo: dict[tuple, Any] = {}

    def remembered_preprocess(images, size):
        key = (tuple(size), _digest(*(f"{im.mode}{im.size}".encode() + im.tobytes() for im in images)))
        if key not in pixels_memo:
            pixels_memo[key] = preprocess(images, size)
        return pixels_memo[key]

    def remembered_forward(pixels):
        key = (tuple(pixels.shape), _digest(pixels.cpu().numpy().tobytes()))
        if key not in output_memo:
            output_memo[key] = forward(pixels)
        return output_memo[key]

    segmenter.preprocess, segmenter.forward = remembered_preprocess, remembered_forward
    try:
        yield
    finally:
        del segmenter.preprocess, segmenter.forward


def tune_and_score(
    make_segmenter: Callable[[int], Any],
    tune: VOCDataset,
    vals: dict[str, VOCDataset],
    *,
    short_sides: tuple[int, ...] = SHORT_SIDES,
    thresholds: tuple[float, ...] = THRESHOLDS,
) -> dict[str, Any]:
    """Pick (short side, background threshold, "background" prompt) on `tune`, score each val once.

    Args:
        make_segmenter: builds the method at one network short side.
        tune: the split the settings are picked on (by mIoU; ties keep the first setting).
        vals: the held-out splits, by name, each scored once with the picked setting.
        short_sides: the short sides tried.
        thresholds: the background thresholds tried.

    Returns:
        The picked setting, its tune mIoU, and per val split its mIoU and per-class IoU.
    """
    only = tune_and_score_variants(
        make_segmenter, tune, vals, variants=("",), apply=lambda _seg, _v: None,
        short_sides=short_sides, thresholds=thresholds,
    )  # fmt: skip
    return only[""]


def tune_and_score_variants(
    make_segmenter: Callable[[int], Any],
    tune: VOCDataset,
    vals: dict[str, VOCDataset],
    *,
    variants: Sequence[str],
    apply: Callable[[Any, str], None],
    short_sides: tuple[int, ...] = SHORT_SIDES,
    thresholds: tuple[float, ...] = THRESHOLDS,
) -> dict[str, dict[str, Any]]:
    """`tune_and_score` for variants of one network (e.g. two heads) that share its forward passes.

    Args:
        make_segmenter: builds the method at one network short side.
        tune: the split the settings are picked on, per variant.
        vals: the held-out splits, each scored once per variant with its picked setting.
        variants: the variants' names.
        apply: apply(segmenter, variant) switches a segmenter to a variant in place (its network
            output must not depend on the variant).
        short_sides: the short sides tried.
        thresholds: the background thresholds tried.

    Returns:
        variant -> what `tune_and_score` returns.
    """
    best: dict[str, tuple] = {v: (-1.0,) for v in variants}
    results: dict[str, dict[str, Any]] = {}
    with ExitStack() as stack:
        segmenters = {}
        for side in short_sides:
            segmenters[side] = segmenter = make_segmenter(side)
            stack.enter_context(cached_network(segmenter))
            for variant in variants:
                apply(segmenter, variant)
                for prompt in (True, False):
                    for thresh in thresholds:
                        report = evaluate(segmenter, tune, bg_thresh=thresh, bg_prompt=prompt, progress=False)
                        if report.miou > best[variant][0]:
                            best[variant] = (report.miou, side, thresh, prompt)
        for variant in variants:
            miou, side, thresh, prompt = best[variant]
            apply(segmenters[side], variant)
            scores = {}
            for name, val in vals.items():
                report = evaluate(segmenters[side], val, bg_thresh=thresh, bg_prompt=prompt, progress=False)
                scores[name] = {"mIoU": report.miou, "per_class_IoU": report.to_dict()["per_class_IoU"]}
            results[variant] = {"tune_mIoU": miou, "short_side": side, "bg_thresh": thresh,
                                "bg_prompt": prompt, "val": scores}  # fmt: skip
    return results
