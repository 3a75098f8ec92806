"""VOC and COCO metrics: hand-computed fixtures, GluonCV's VOC metrics and pycocotools as oracles."""
import json

import mxnet as mx  # noqa: F401  (gluoncv needs mxnet imported first)
import numpy as np
import pytest
from gluoncv.utils.metrics.voc_detection import VOC07MApMetric, VOCMApMetric
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ssdkit.metrics import COCOEvaluator, VOCMeanAP, average_precision, match_image, pairwise_iou

NAMES = ["a", "b", "c", "d", "e"]


def _pad(rows, width, length):
    out = -np.ones((length, width), dtype=np.float64)
    if len(rows):
        out[:len(rows)] = rows
    return out


def random_batch(rng, *, batch=6, max_gt=6, max_det=12, num_classes=5, size=500.0):
    """Pixel detections (B, K, 6) and labels (B, M, 6) with difficult flags, empty images, a class
    (the last) that never has ground truth, and detections jittered from ground truths so that
    true positives, duplicates and misses all occur."""
    labels, dets = [], []
    for b in range(batch):
        n_gt = rng.integers(0, max_gt + 1)
        xy = rng.uniform(0, size - 160, (n_gt, 2))
        wh = rng.uniform(8, 150, (n_gt, 2))
        gt_cls = rng.integers(0, num_classes - 1, n_gt)
        difficult = rng.random(n_gt) < 0.25
        gt = np.column_stack([gt_cls, xy, xy + wh, difficult])
        n_det = 0 if b == 1 else rng.integers(0, max_det + 1)  # image 1 never has detections
        src = rng.integers(0, max(n_gt, 1), n_det)
        from_gt = (rng.random(n_det) < 0.7) & (n_gt > 0)
        boxes = np.where(from_gt[:, None], gt[src % max(n_gt, 1), 1:5] if n_gt else 0.0, 0.0)
        boxes = boxes + rng.normal(0, 12, (n_det, 4)) * from_gt[:, None]
        rand_xy = rng.uniform(0, size - 160, (n_det, 2))
        rand_boxes = np.column_stack([rand_xy, rand_xy + rng.uniform(8, 150, (n_det, 2))])
        boxes = np.where(from_gt[:, None], boxes, rand_boxes)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1.0)
        cls = np.where(from_gt & (rng.random(n_det) < 0.9), gt[src % max(n_gt, 1), 0] if n_gt else 0,
                       rng.integers(0, num_classes, n_det))
        det = np.column_stack([cls, rng.random(n_det), boxes])
        labels.append(_pad(gt, 6, max_gt))
        dets.append(_pad(det, 6, max_det))
    return np.stack(dets), np.stack(labels)


def gluoncv_values(metric_cls, dets, labels, shift=0.0):
    """GluonCV's per-class AP and mAP; ``shift`` is subtracted from xmax/ymax (GluonCV adds 1)."""
    metric = metric_cls(iou_thresh=0.5, class_names=NAMES)
    pred = dets[:, :, 2:6].copy()
    gt = labels[:, :, 1:5].copy()
    pred[:, :, 2:] -= shift
    gt[:, :, 2:] -= shift
    metric.update(pred, dets[:, :, 0], dets[:, :, 1], gt, labels[:, :, 0], labels[:, :, 5])
    return metric.get()


# --- hand-computed fixtures -------------------------------------------------------------------------

def _two_gt_three_det():
    labels = np.array([[[0, 0, 0, 10, 10, 0], [0, 20, 20, 30, 30, 0]]], dtype=np.float64)
    dets = np.array([[[0, 0.9, 0, 0, 10, 10],      # TP on gt 0
                      [0, 0.8, 1, 0, 10, 10],      # IoU 0.9 with gt 0, already taken: FP
                      [0, 0.7, 20, 21, 30, 30]]])  # IoU 0.9 with gt 1: TP
    return dets, labels


def test_hand_fixture_pr_curve_and_both_aps():
    dets, labels = _two_gt_three_det()
    for use_07, expected in ((False, 0.5 * 1 + 0.5 * 2 / 3),       # envelope 1 to recall .5, 2/3 to 1
                             (True, (6 * 1 + 5 * 2 / 3) / 11)):    # t = 0..0.5 -> 1, t = 0.6..1 -> 2/3
        metric = VOCMeanAP(["a"], use_07_metric=use_07)
        metric.update(dets, labels)
        names, values = metric.get()
        assert names == ["a", "mAP"]
        np.testing.assert_allclose(values, [expected, expected], rtol=0, atol=1e-12)
    recall, precision = metric.pr_curves()[0]
    np.testing.assert_allclose(recall, [0.5, 0.5, 1.0], atol=1e-12)
    np.testing.assert_allclose(precision, [1.0, 0.5, 2 / 3], atol=1e-12)


def test_detection_order_in_a_row_does_not_matter():
    dets, labels = _two_gt_three_det()
    reversed_dets = dets[:, ::-1].copy()
    a, b = VOCMeanAP(["a"]), VOCMeanAP(["a"])
    a.update(dets, labels)
    b.update(reversed_dets, labels)
    assert a.get() == b.get()


def test_difficult_is_neither_tp_nor_fp():
    labels = np.array([[[0, 0, 0, 10, 10, 1], [0, 20, 20, 30, 30, 0]]], dtype=np.float64)
    dets = np.array([[[0, 0.9, 0, 0, 10, 10],       # on the difficult gt: ignored
                      [0, 0.8, 20, 20, 30, 30],     # TP
                      [0, 0.7, 50, 50, 60, 60]]])   # FP
    outcome = match_image(dets[0, :, 0].astype(int), dets[0, :, 1], dets[0, :, 2:],
                          labels[0, :, 0].astype(int),
                          labels[0, :, 1:5], labels[0, :, 5] > 0)
    np.testing.assert_array_equal(outcome, [-1, 1, 0])
    metric = VOCMeanAP(["a"], use_07_metric=False)
    metric.update(dets, labels)
    recall, precision = metric.pr_curves()[0]
    np.testing.assert_allclose(recall, [1.0, 1.0])  # one non-difficult gt
    np.testing.assert_allclose(precision, [1.0, 0.5])
    assert metric.get()[1][0] == pytest.approx(1.0, abs=1e-12)


def test_class_without_gt_is_nan_and_left_out_of_map():
    dets, labels = _two_gt_three_det()
    dets = np.concatenate([dets, [[[1, 0.95, 0, 0, 10, 10]]]], axis=1)  # class 1 detected, never labelled
    metric = VOCMeanAP(["a", "b", "c"], use_07_metric=False)
    metric.update(dets, labels)
    _, values = metric.get()
    assert np.isnan(values[1]) and np.isnan(values[2])
    assert values[3] == pytest.approx(values[0], abs=1e-12)
    assert metric.pr_curves()[1] is None


def test_class_with_gt_but_no_detection_scores_zero():
    dets, labels = _two_gt_three_det()
    labels = np.concatenate([labels, [[[1, 40, 40, 50, 50, 0]]]], axis=1)
    for use_07 in (True, False):
        metric = VOCMeanAP(["a", "b"], use_07_metric=use_07)
        metric.update(dets, labels)
        _, values = metric.get()
        assert values[1] == 0.0
        assert values[2] == pytest.approx(values[0] / 2, abs=1e-12)


def test_07_thresholds_are_the_devkits():
    # Recall 0.3 exactly does not reach the devkit's fourth threshold 0.30000000000000004.
    recall = np.array([0.1, 0.2, 0.3])
    assert average_precision(recall, np.ones(3), use_07_metric=True) == pytest.approx(3 / 11, abs=1e-12)
    assert average_precision(recall, np.ones(3), use_07_metric=False) == pytest.approx(0.3, abs=1e-12)
    assert average_precision(np.zeros(0), np.zeros(0), use_07_metric=True) == 0.0


def test_box_offset_convention():
    gt, det = np.array([[0.0, 0, 9, 9]]), np.array([[0.0, 0, 4, 9]])
    assert pairwise_iou(det, gt)[0, 0] == pytest.approx(36 / 81, abs=1e-12)
    assert pairwise_iou(det, gt, box_offset=1)[0, 0] == pytest.approx(50 / 100, abs=1e-12)
    labels = np.array([[[0, 0, 0, 9, 9]]], dtype=np.float64)
    dets = np.array([[[0, 0.5, 0, 0, 4, 9]]], dtype=np.float64)
    continuous, devkit = VOCMeanAP(["a"]), VOCMeanAP(["a"], box_offset=1)
    continuous.update(dets, labels)
    devkit.update(dets, labels)
    assert continuous.get()[1][0] == 0.0 and devkit.get()[1][0] == pytest.approx(1.0)


def test_padding_empty_images_mxnet_input_and_reset():
    dets, labels = _two_gt_three_det()
    padded_dets = np.concatenate([dets, -np.ones((1, 4, 6))], axis=1)
    padded_labels = np.concatenate([labels, -np.ones((1, 3, 6))], axis=1)
    empty_image_dets = np.concatenate([padded_dets, -np.ones((1, 7, 6))], axis=0)
    empty_image_labels = np.concatenate([padded_labels, -np.ones((1, 5, 6))], axis=0)
    ref = VOCMeanAP(["a"])
    ref.update(dets, labels)
    metric = VOCMeanAP(["a"])
    metric.update(mx.nd.array(empty_image_dets), mx.nd.array(empty_image_labels))
    assert metric.get() == ref.get()
    metric.reset()
    assert np.isnan(metric.get()[1][-1])
    with pytest.raises(ValueError, match="class id 3"):
        metric.update(np.array([[[3, 0.5, 0, 0, 1, 1]]]), labels)


def test_batching_does_not_change_the_result():
    dets, labels = random_batch(np.random.default_rng(7), batch=8)
    whole, split = VOCMeanAP(NAMES, use_07_metric=False), VOCMeanAP(NAMES, use_07_metric=False)
    whole.update(dets, labels)
    for start in range(0, 8, 3):
        split.update(list(dets[start:start + 3]), list(labels[start:start + 3]))
    np.testing.assert_array_equal(whole.get()[1], split.get()[1])
    ragged = VOCMeanAP(NAMES, use_07_metric=False)  # unpadded per-image arrays, some empty
    ragged.update([d[d[:, 0] >= 0] for d in dets], [g[g[:, 0] >= 0] for g in labels])
    np.testing.assert_array_equal(whole.get()[1], ragged.get()[1])


# --- GluonCV as the oracle --------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("use_07,gluon_cls", [(True, VOC07MApMetric), (False, VOCMApMetric)])
def test_matches_gluoncv_devkit_convention(seed, use_07, gluon_cls):
    dets, labels = random_batch(np.random.default_rng(seed))
    metric = VOCMeanAP(NAMES, use_07_metric=use_07, box_offset=1)
    for b in range(0, len(dets), 2):  # several updates
        metric.update(dets[b:b + 2], labels[b:b + 2])
    names, values = metric.get()
    ref_names, ref_values = gluoncv_values(gluon_cls, dets, labels)
    assert names == ref_names
    assert np.isnan(values[4])  # the last class never has ground truth
    assert 0.05 < values[-1] < 0.95  # a fixture with hits and misses
    np.testing.assert_allclose(values, ref_values, rtol=0, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("seed", [10, 11, 12])
@pytest.mark.parametrize("use_07,gluon_cls", [(True, VOC07MApMetric), (False, VOCMApMetric)])
def test_matches_gluoncv_continuous_convention(seed, use_07, gluon_cls):
    # Continuous IoU on (x1, y1, x2, y2) is GluonCV's +1 IoU on (x1, y1, x2 - 1, y2 - 1).
    dets, labels = random_batch(np.random.default_rng(seed), batch=10)
    metric = VOCMeanAP(NAMES, use_07_metric=use_07)
    metric.update(dets, labels)
    _, values = metric.get()
    _, ref_values = gluoncv_values(gluon_cls, dets, labels, shift=1.0)
    np.testing.assert_allclose(values, ref_values, rtol=0, atol=1e-6, equal_nan=True)
    devkit = VOCMeanAP(NAMES, use_07_metric=use_07, box_offset=1)
    devkit.update(dets, labels)
    assert devkit.get()[1] != values  # the convention matters on these boxes


def test_many_detections_match_gluoncv():
    dets, labels = random_batch(np.random.default_rng(99), batch=4, max_gt=40, max_det=400)
    metric = VOCMeanAP(NAMES, use_07_metric=False, box_offset=1)
    metric.update(dets, labels)
    _, ref_values = gluoncv_values(VOCMApMetric, dets, labels)
    np.testing.assert_allclose(metric.get()[1], ref_values, rtol=0, atol=1e-6, equal_nan=True)


# --- COCO -------------------------------------------------------------------------------------------

def _pycocotools_stats(gt_path, res_path, image_ids=None):
    gt = COCO(str(gt_path))
    dt = gt.loadRes(str(res_path))
    coco_eval = COCOeval(gt, dt, iouType="bbox")
    if image_ids is not None:
        coco_eval.params.imgIds = image_ids
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return coco_eval.stats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco_matches_pycocotools_on_the_written_json(seed, tmp_path):
    rng = np.random.default_rng(seed)
    dets, labels = random_batch(rng, batch=8, max_det=20)
    sizes = np.column_stack([rng.uniform(500, 700, 8), rng.uniform(500, 700, 8)])
    scale = np.concatenate([np.ones((8, 2)), sizes, sizes], axis=1)[:, None, :]
    scale_l = np.concatenate([np.ones((8, 1)), sizes, sizes, np.ones((8, 1))], axis=1)[:, None, :]
    dets_n = np.where(dets[:, :, :1] >= 0, dets / scale, -1.0)
    labels_n = np.where(labels[:, :, :1] >= 0, labels / scale_l, -1.0)
    categories = [3, 7, 12, 40, 90]
    evaluator = COCOEvaluator(class_names=NAMES, category_ids=categories)
    for b in range(0, 8, 4):
        evaluator.update(dets_n[b:b + 4], labels_n[b:b + 4], image_sizes=sizes[b:b + 4])
    names, values = evaluator.get()
    assert names[:6] == ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    assert 0.05 < values[1] < 0.95
    evaluator.write_ground_truth(tmp_path / "gt.json")
    evaluator.write_results(tmp_path / "results.json")
    results = json.loads((tmp_path / "results.json").read_text())
    assert {r["category_id"] for r in results} <= set(categories)
    assert {r["image_id"] for r in results} <= set(range(1, 9))
    # The first kept detection in pixels and [x, y, w, h].
    first = dets[0][dets[0, :, 0] >= 0][0]
    np.testing.assert_allclose(results[0]["bbox"], [*first[2:4], *(first[4:6] - first[2:4])], atol=1e-6)
    assert results[0]["category_id"] == categories[int(first[0])]
    np.testing.assert_allclose(values, _pycocotools_stats(tmp_path / "gt.json", tmp_path / "results.json"),
                               rtol=0, atol=1e-6)

    # Same ground truth given as a file, a subset of its images evaluated, pixel boxes.
    subset = COCOEvaluator(gt=str(tmp_path / "gt.json"), normalized=False)
    assert subset.category_ids == tuple(sorted(categories)) and subset.class_names == tuple(NAMES)
    subset.update(dets[2:6], image_ids=[3, 4, 5, 6])
    reference = _pycocotools_stats(tmp_path / "gt.json", tmp_path / "results.json", image_ids=[3, 4, 5, 6])
    np.testing.assert_allclose(subset.get()[1], reference, rtol=0, atol=1e-6)


def test_coco_perfect_and_empty_detections():
    labels = np.array([[[0, 0.1, 0.1, 0.5, 0.6], [1, 0.5, 0.5, 0.9, 0.9]]])
    dets = np.array([[[0, 0.9, 0.1, 0.1, 0.5, 0.6], [1, 0.8, 0.5, 0.5, 0.9, 0.9], [-1, -1, -1, -1, -1, -1]]])
    evaluator = COCOEvaluator(class_names=["a", "b"])
    evaluator.update(dets, labels, image_sizes=[[640, 480]])
    _, values = evaluator.get()
    assert values[0] == pytest.approx(1.0) and values[1] == pytest.approx(1.0)
    np.testing.assert_allclose(evaluator.per_class_ap(), [1.0, 1.0])
    gt = evaluator.ground_truth()
    assert [a["id"] for a in gt["annotations"]] == [1, 2]
    np.testing.assert_allclose(gt["annotations"][0]["bbox"], [64, 48, 256, 240])
    same = COCOEvaluator(class_names=["a", "b"])
    same.update(mx.nd.array(dets), mx.nd.array(labels), image_ids=[42], image_sizes=mx.nd.array([[640, 480]]))
    np.testing.assert_allclose(same.get()[1], values, atol=1e-12)
    evaluator.reset()
    evaluator.update(-np.ones((1, 3, 6)), labels, image_sizes=[[640, 480]])
    _, values = evaluator.get()
    assert values[0] == 0.0 and values[1] == 0.0
    assert evaluator.results() == []


def test_coco_errors_name_the_fix():
    with pytest.raises(ValueError, match="class_names"):
        COCOEvaluator()
    evaluator = COCOEvaluator(class_names=["a"])
    with pytest.raises(ValueError, match="image_sizes"):
        evaluator.update(-np.ones((1, 1, 6)), -np.ones((1, 1, 5)))
    evaluator.update(-np.ones((1, 1, 6)), -np.ones((1, 1, 5)), image_ids=[5], image_sizes=[[10, 10]])
    with pytest.raises(ValueError, match="already added"):
        evaluator.update(-np.ones((2, 1, 6)), -np.ones((2, 1, 5)), image_ids=[6, 5],
                         image_sizes=[[10, 10]] * 2)
    with pytest.raises(ValueError, match="class id 1"):
        evaluator.update(-np.ones((2, 1, 6)), [-np.ones((1, 5)), np.array([[1, 0, 0, 1, 1]])],
                         image_ids=[6, 7], image_sizes=[[10, 10]] * 2)
    assert sorted(evaluator._images) == [5]  # failed batches left nothing behind
    with_file = COCOEvaluator(gt=evaluator.ground_truth())
    with pytest.raises(ValueError, match=r"\[9\] are not in the gt file"):
        with_file.update(-np.ones((1, 1, 6)), image_ids=[9])


def test_coco_hand_fixture_with_a_crowd_ground_truth():
    # Pixel boxes of 10 x 10 (all "small"). d1 hits gt 0 exactly, d2 duplicates it (IoU .82), d3 hits
    # gt 1 at IoU .82; a difficult gt becomes iscrowd and the top-scoring detection on it is ignored.
    labels = np.array([[[0, 0, 0, 10, 10, 0], [0, 20, 20, 30, 30, 0], [0, 50, 50, 60, 60, 1]]])
    dets = np.array([[[0, 0.95, 50, 50, 60, 60], [0, 0.9, 0, 0, 10, 10],
                      [0, 0.8, 0, 0, 10, 8.2], [0, 0.7, 20, 20, 30, 28.2]]])
    evaluator = COCOEvaluator(class_names=["a"], normalized=False)
    evaluator.update(dets, labels, image_sizes=[[100, 100]])
    assert [a["iscrowd"] for a in evaluator.ground_truth()["annotations"]] == [0, 0, 1]
    # 101 recall points: precision 1 up to recall .5 (51 points), 2/3 after it (50 points) while
    # IoU .82 counts (thresholds .50 .. .80), recall stops at .5 for .85, .90, .95. AR1 keeps only
    # the top detection, the ignored one.
    both = (51 + 50 * 2 / 3) / 101
    half = 51 / 101
    names, values = evaluator.get()
    mean = (7 * both + 3 * half) / 10
    expected = {"AP": mean, "AP50": both, "AP75": both, "APs": mean,
                "APm": -1.0, "APl": -1.0, "AR1": 0.0, "AR100": (7 * 1.0 + 3 * 0.5) / 10}
    got = dict(zip(names, values))
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key
    np.testing.assert_allclose(evaluator.per_class_ap(iou=0.5), [both], atol=1e-9)
    with pytest.raises(ValueError, match="iou 0.42"):
        evaluator.per_class_ap(iou=0.42)
