"""mIoU with mmseg semantics: hand-worked numbers, an independent confusion-matrix oracle, edge cases."""

import math

import numpy as np
import pytest
import torch

from zeroseg.errors import ZerosegError
from zeroseg.evaluation.metrics import SegmentationMeter, confusion_matrix, intersect_and_union

# label / prediction, 3 classes, one ignored pixel. Valid (label, pred) pairs:
# (0,0) (0,1) (1,1) (1,1) (2,0)
LABEL = np.array([[0, 0, 1], [1, 2, 255]])
PRED = np.array([[0, 1, 1], [1, 0, 2]])


def test_intersect_and_union_hand_computed():
    inter, union, area_pred, area_label = intersect_and_union(PRED, LABEL, 3)
    # intersect: class 0 once, class 1 twice, class 2 never
    assert inter.tolist() == [1, 2, 0]
    assert area_pred.tolist() == [2, 3, 0]
    assert area_label.tolist() == [2, 2, 1]
    # union = pred + label - intersect
    assert union.tolist() == [3, 3, 1]
    assert inter.dtype == np.int64


def test_meter_hand_computed():
    meter = SegmentationMeter(3)
    meter.update(PRED, LABEL)
    np.testing.assert_allclose(meter.iou(), [1 / 3, 2 / 3, 0.0])
    np.testing.assert_allclose(meter.accuracy(), [1 / 2, 1.0, 0.0])
    s = meter.summary()
    assert s["mIoU"] == pytest.approx(1 / 3)
    assert s["aAcc"] == pytest.approx(3 / 5)
    assert s["mAcc"] == pytest.approx(0.5)
    assert (s["num_images"], s["num_pixels"], s["evaluated_pixels"], s["ignored_pixels"]) == (1, 6, 5, 1)
    assert s["out_of_range_pixels"] == 0


def test_class_absent_from_both_is_nan_and_excluded():
    meter = SegmentationMeter(4)  # class 3 never appears
    meter.update(PRED, LABEL)
    assert math.isnan(meter.iou()[3]) and math.isnan(meter.accuracy()[3])
    s = meter.summary()
    assert s["IoU"][3] is None and s["Acc"][3] is None
    assert s["mIoU"] == pytest.approx(1 / 3)  # mean over the 3 defined classes only


def test_class_only_in_prediction_has_iou_zero():
    pred = PRED.copy()
    pred[0, 0] = 3  # class 3 predicted on a pixel labelled 0
    meter = SegmentationMeter(4)
    meter.update(pred, LABEL)
    iou = meter.iou()
    assert iou[3] == 0.0
    assert math.isnan(meter.accuracy()[3])  # no labelled pixel: accuracy undefined
    # class 0 lost its only hit: I=0, U = pred 1 + label 2 = 3
    assert iou[0] == 0.0
    assert meter.summary()["mIoU"] == pytest.approx((0 + 2 / 3 + 0 + 0) / 4)


def _reference_confusion(preds, labels, k, ignore=255):
    """Independent oracle: loop-built confusion matrix, labels outside [0, k) ignored."""
    cm = np.zeros((k, k), np.int64)
    for p, t in zip(preds, labels, strict=True):
        for pv, tv in zip(p.ravel().tolist(), t.ravel().tolist(), strict=True):
            if tv == ignore or not 0 <= tv < k:
                continue
            cm[tv, pv] += 1
    return cm


def test_against_confusion_matrix_oracle_on_random_maps():
    rng = np.random.default_rng(0)
    k = 6
    preds, labels = [], []
    for _ in range(5):
        h, w = rng.integers(5, 30, size=2)
        label = rng.integers(0, k - 1, size=(h, w))  # class 5 never labelled
        label[rng.random((h, w)) < 0.15] = 255
        label[rng.random((h, w)) < 0.03] = 9  # out of range: ignored and counted
        pred = np.where(rng.random((h, w)) < 0.6, np.clip(label, 0, k - 1), rng.integers(0, k, size=(h, w)))
        preds.append(pred)
        labels.append(label)
    meter = SegmentationMeter(k)
    for p, t in zip(preds, labels, strict=True):
        meter.update(p, t)
    cm = _reference_confusion(preds, labels, k)
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
        acc = inter / cm.sum(1)
    np.testing.assert_allclose(meter.iou(), iou, equal_nan=True)
    np.testing.assert_allclose(meter.accuracy(), acc, equal_nan=True)
    s = meter.summary()
    assert s["mIoU"] == pytest.approx(np.nanmean(iou))
    assert s["mAcc"] == pytest.approx(np.nanmean(acc))
    assert s["aAcc"] == pytest.approx(inter.sum() / cm.sum())
    assert s["out_of_range_pixels"] == sum(int((t == 9).sum()) for t in labels)
    assert s["ignored_pixels"] == sum(int((t == 255).sum()) for t in labels)
    np.testing.assert_array_equal(
        sum(confusion_matrix(p, t, k) for p, t in zip(preds, labels, strict=True)), cm
    )
    # dataset-level sums, not a mean of per-image IoUs
    per_image = [SegmentationMeter(k) for _ in preds]
    for m, p, t in zip(per_image, preds, labels, strict=True):
        m.update(p, t)
    merged = SegmentationMeter(k)
    for m in per_image:
        merged.merge(m)
    np.testing.assert_allclose(merged.iou(), meter.iou(), equal_nan=True)


def test_out_of_range_label_is_ignored_and_counted():
    label = np.array([[0, 1], [7, 255]])
    pred = np.array([[0, 1], [2, 2]])
    meter = SegmentationMeter(3)
    meter.update(pred, label)
    assert meter.out_of_range_pixels == 1 and meter.ignored_pixels == 1
    assert meter.area_label.tolist() == [1, 1, 0]
    assert meter.area_pred.tolist() == [1, 1, 0]  # the prediction at the out-of-range pixel is not counted
    assert "warning: 1 labelled pixels" in meter.format_table(["a", "b", "c"])


def test_prediction_out_of_range_is_an_error():
    with pytest.raises(ZerosegError, match="outside 0..2"):
        intersect_and_union(np.array([[0, 3]]), np.array([[0, 1]]), 3)
    with pytest.raises(ZerosegError, match="outside"):
        SegmentationMeter(3).update(np.array([[-1, 0]]), np.array([[0, 1]]))


def test_bad_inputs_raise():
    with pytest.raises(ZerosegError, match="shape"):
        intersect_and_union(np.zeros((2, 2), int), np.zeros((2, 3), int), 3)
    with pytest.raises(ZerosegError, match="integer"):
        intersect_and_union(np.zeros((2, 2)), np.zeros((2, 2), int), 3)
    with pytest.raises(ZerosegError, match="num_classes"):
        SegmentationMeter(0)
    meter = SegmentationMeter(3)
    with pytest.raises(ZerosegError, match="class names"):
        meter.format_table(["a", "b"])
    with pytest.raises(ZerosegError, match="merge"):
        meter.merge(SegmentationMeter(4))


def test_torch_and_batched_inputs():
    meter = SegmentationMeter(3)
    meter.update(torch.from_numpy(np.stack([PRED, PRED])), torch.from_numpy(np.stack([LABEL, LABEL])))
    assert meter.num_images == 2
    np.testing.assert_allclose(meter.iou(), [1 / 3, 2 / 3, 0.0])
    assert meter.summary(background_index=0)["mIoU_fg"] == pytest.approx(1 / 3)


def test_format_table_and_empty_meter():
    meter = SegmentationMeter(4)
    assert meter.summary()["mIoU"] is None  # nothing evaluated: undefined, not 0
    meter.update(PRED, LABEL)
    table = meter.format_table(["background", "red", "green", "blue"])
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["class", "IoU", "%"]
    assert any(line.startswith("red") and "66.67" in line for line in lines)
    assert any(line.startswith("blue") and "n/a" in line for line in lines)
    assert "mIoU 33.33" in table and "aAcc 60.00" in table
