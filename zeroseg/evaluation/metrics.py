"""Semantic-segmentation metrics with mmseg's `IoUMetric` semantics (no mmseg dependency).

- Pixels whose label is `ignore_index` (255) are left out; so are labels outside [0, num_classes),
  which are counted (`SegmentationMeter.out_of_range_pixels`) so callers can warn about a class-file
  mismatch. A prediction outside [0, num_classes) is an error.
- Intersection, union, predicted and labelled areas are summed over the whole data set, then
  IoU_c = I_c / U_c and Acc_c = I_c / label_c. A class absent from both prediction and label has
  U_c = 0: its IoU is NaN and it is left out of the mean (mIoU = nan-mean, as mmseg). A class only
  predicted has IoU 0. aAcc = sum I / sum label (pixel accuracy).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from zeroseg.errors import ZerosegError


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _prepare(pred, label, num_classes: int, ignore_index: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Valid (pred, label) pixel pairs as int64 vectors, and the count of out-of-range labels."""
    if num_classes < 1:
        raise ZerosegError(f"num_classes must be >= 1, got {num_classes}")
    pred, label = _as_numpy(pred), _as_numpy(label)
    if pred.shape != label.shape:
        raise ZerosegError(f"prediction shape {pred.shape} differs from label shape {label.shape}")
    for name, arr in (("prediction", pred), ("label", label)):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise ZerosegError(f"{name} must hold integer class ids, got dtype {arr.dtype}")
    pred = pred.reshape(-1).astype(np.int64, copy=False)
    label = label.reshape(-1).astype(np.int64, copy=False)
    if pred.size and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
        raise ZerosegError(
            f"prediction holds class ids {int(pred.min())}..{int(pred.max())} outside 0..{num_classes - 1}; "
            "the model's class list and the data set's must match"
        )
    not_ignored = label != ignore_index
    valid = not_ignored & (label >= 0) & (label < num_classes)
    out_of_range = int(np.count_nonzero(not_ignored & ~valid))
    return pred[valid], label[valid], out_of_range


def confusion_matrix(pred, label, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """int64 (num_classes, num_classes) counts: rows = label, columns = prediction."""
    p, t, _ = _prepare(pred, label, num_classes, ignore_index)
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def intersect_and_union(
    pred, label, num_classes: int, ignore_index: int = 255
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class (area_intersect, area_union, area_pred, area_label), int64 (num_classes,) each.

    `pred` and `label` are integer maps of the same shape (numpy or torch). Pixels with label
    `ignore_index` or outside [0, num_classes) are left out; a prediction outside raises ZerosegError.
    """
    p, t, _ = _prepare(pred, label, num_classes, ignore_index)
    return _areas(p, t, num_classes)


def _areas(p: np.ndarray, t: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    area_intersect = np.bincount(t[p == t], minlength=k)
    area_pred = np.bincount(p, minlength=k)
    area_label = np.bincount(t, minlength=k)
    return area_intersect, area_pred + area_label - area_intersect, area_pred, area_label


class SegmentationMeter:
    """Accumulates intersections and unions over a data set; reports mmseg's aAcc / mIoU / mAcc.

    Per class it sums the intersection, union, predicted and labelled areas of every `update`
    (int64 arrays `area_*`), plus image and pixel counts (`num_images`, `num_pixels`,
    `ignored_pixels`, `out_of_range_pixels`). `iou`, `accuracy`, `aacc` and `miou` read the scores
    off the sums; `summary` and `format_table` report them; `merge` adds another meter's counts.

    Args:
        num_classes: the number of classes; labels are 0 .. num_classes - 1.
        ignore_index: the label value left out of the counts.

    Raises:
        ZerosegError: num_classes < 1.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ZerosegError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        """Zero every count."""
        k = self.num_classes
        self.area_intersect = np.zeros(k, np.int64)
        self.area_union = np.zeros(k, np.int64)
        self.area_pred = np.zeros(k, np.int64)
        self.area_label = np.zeros(k, np.int64)
        self.num_images = 0
        self.num_pixels = 0
        self.ignored_pixels = 0
        self.out_of_range_pixels = 0  # labels not ignore_index and outside [0, num_classes)

    def update(self, pred, label) -> None:
        """Add one prediction / label pair (H, W), or a batch (N, H, W).

        Args:
            pred: integer class ids (numpy or torch), all in [0, num_classes).
            label: integer ground truth of the same shape; `ignore_index` and out-of-range values are
                left out (the latter counted in `out_of_range_pixels`).

        Raises:
            ZerosegError: shapes differ, a map is not integer, or a prediction is out of range.
        """
        p, t, bad = _prepare(pred, label, self.num_classes, self.ignore_index)
        inter, union, area_pred, area_label = _areas(p, t, self.num_classes)
        self.area_intersect += inter
        self.area_union += union
        self.area_pred += area_pred
        self.area_label += area_label
        shape = _as_numpy(label).shape
        self.num_images += shape[0] if len(shape) == 3 else 1
        total = int(np.prod(shape))
        self.num_pixels += total
        self.out_of_range_pixels += bad
        self.ignored_pixels += total - t.size - bad

    def merge(self, other: SegmentationMeter) -> None:
        """Add another meter's counts (e.g. from a worker)."""
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise ZerosegError("cannot merge meters with different num_classes or ignore_index")
        for name in ("area_intersect", "area_union", "area_pred", "area_label"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("num_images", "num_pixels", "ignored_pixels", "out_of_range_pixels"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def iou(self) -> np.ndarray:
        """Per-class IoU (float64); NaN where the class is absent from both prediction and label."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.area_union > 0, self.area_intersect / np.maximum(self.area_union, 1), np.nan)

    def accuracy(self) -> np.ndarray:
        """Per-class accuracy (recall) I / label area; NaN where the class has no labelled pixel."""
        return np.where(self.area_label > 0, self.area_intersect / np.maximum(self.area_label, 1), np.nan)

    def aacc(self) -> float:
        """Pixel accuracy over all evaluated pixels; NaN when there were none."""
        evaluated = int(self.area_label.sum())
        return float(self.area_intersect.sum() / evaluated) if evaluated else float("nan")

    def miou(self, exclude: Sequence[int] = ()) -> float:
        """Mean IoU over classes with a defined IoU, leaving out the class ids in `exclude`.

        Args:
            exclude: class ids to leave out (e.g. background for a foreground mIoU).

        Returns:
            The nan-mean of the per-class IoUs, a fraction in [0, 1]; NaN when none is defined.
        """
        iou = self.iou()
        keep = np.ones(self.num_classes, bool)
        keep[list(exclude)] = False
        return _nanmean(iou[keep])

    def summary(self, *, background_index: int | None = None) -> dict:
        """JSON-able results as fractions in [0, 1]; undefined values (NaN) become None.

        Args:
            background_index: the background class id, to add mIoU_fg (mIoU without that class).

        Returns:
            A dict with aAcc, mIoU, mAcc, IoU and Acc (per-class lists), the class, image and pixel
            counts and, with `background_index`, mIoU_fg.
        """
        out = {
            "aAcc": _none(self.aacc()),
            "mIoU": _none(self.miou()),
            "mAcc": _none(_nanmean(self.accuracy())),
            "IoU": [_none(v) for v in self.iou()],
            "Acc": [_none(v) for v in self.accuracy()],
            "num_classes": self.num_classes,
            "num_images": self.num_images,
            "num_pixels": self.num_pixels,
            "evaluated_pixels": int(self.area_label.sum()),
            "ignored_pixels": self.ignored_pixels,
            "out_of_range_pixels": self.out_of_range_pixels,
        }
        if background_index is not None:
            out["mIoU_fg"] = _none(self.miou(exclude=[background_index]))
        return out

    def format_table(self, class_names: Sequence[str]) -> str:
        """A plain-text table: one row per class (IoU %, Acc %, labelled / predicted pixels), then totals.

        Raises:
            ZerosegError: `class_names` does not have `num_classes` names.
        """
        if len(class_names) != self.num_classes:
            raise ZerosegError(
                f"{len(class_names)} class names given for a meter of {self.num_classes} classes; "
                "use the class file the evaluation ran with"
            )
        width = max(5, *(len(str(n)) for n in class_names))

        def pct(v: float) -> str:
            return "   n/a" if np.isnan(v) else f"{100.0 * v:6.2f}"

        head = f"{'class':<{width}}  {'IoU %':>6}  {'Acc %':>6}  {'label px':>12}  {'pred px':>12}"
        lines = [head, "-" * len(head)]
        for name, iou, acc, n_label, n_pred in zip(
            class_names, self.iou(), self.accuracy(), self.area_label, self.area_pred, strict=True
        ):
            lines.append(f"{name:<{width}}  {pct(iou)}  {pct(acc)}  {int(n_label):>12}  {int(n_pred):>12}")
        lines.append("-" * len(head))
        lines.append(
            f"aAcc {pct(self.aacc()).strip()}  mIoU {pct(self.miou()).strip()}  "
            f"mAcc {pct(_nanmean(self.accuracy())).strip()}  ({self.num_images} images, "
            f"{int(self.area_label.sum())} pixels evaluated, {self.ignored_pixels} ignored)"
        )
        if self.out_of_range_pixels:
            lines.append(
                f"warning: {self.out_of_range_pixels} labelled pixels had class ids >= {self.num_classes} "
                "and were ignored"
            )
        return "\n".join(lines)


def chance_mious(class_pixels: Sequence[int] | np.ndarray) -> tuple[float, float]:
    """Chance-level mIoUs from ground-truth pixel counts per class (ignore pixels excluded).

    Labelling every pixel class 0 scores p_0 on class 0 and 0 on every other class present;
    labelling pixels at random with the classes' frequencies has expected IoU_c = p_c / (2 - p_c).
    Classes absent from the ground truth are left out, as the nan-mean of `SegmentationMeter`
    leaves them out.

    Args:
        class_pixels: labelled pixels per class id (e.g. `SegmentationMeter.area_label`).

    Returns:
        (mIoU of labelling everything class 0, expected mIoU of frequency-matched random labels).

    Raises:
        ZerosegError: there are no labelled pixels.
    """
    counts = np.asarray(class_pixels, dtype=np.float64)
    present = counts > 0
    if not present.any():
        raise ZerosegError("no labelled pixels: cannot compute a chance level")
    p = counts / counts.sum()
    return float(p[0] / present.sum()), float(np.mean((p / (2 - p))[present]))


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _none(value) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value
