"""Mask post-processing and evaluation: paste_masks against a per-pixel reference and OpenCV's resize,
RLE against pycocotools, segm AP against pycocotools run directly on the written json and hand cases."""
import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ssdkit.masks import decode_rle, encode_rle, paste_masks
from ssdkit.metrics import COCOEvaluator


# --- paste_masks --------------------------------------------------------------------------------------

def paste_reference(probs, boxes, height, width, threshold):
    """Pixel by pixel: the centre (c + 0.5, r + 0.5) inside the box -> bilinear sample of the map at the
    centre's cell coordinate (cell j's centre at x0 + (j + 0.5) w / S), clamped to the border cells."""
    num, size, _ = probs.shape
    out = np.zeros((num, height, width), bool)
    for k in range(num):
        x0, y0, x1, y1 = boxes[k]
        for r in range(height):
            for c in range(width):
                px, py = c + 0.5, r + 0.5
                if not (x0 <= px < x1 and y0 <= py < y1):
                    continue
                u = min(max((px - x0) * size / (x1 - x0) - 0.5, 0.0), size - 1.0)
                v = min(max((py - y0) * size / (y1 - y0) - 0.5, 0.0), size - 1.0)
                total = 0.0
                for j in (int(np.floor(u)), int(np.floor(u)) + 1):
                    for i in (int(np.floor(v)), int(np.floor(v)) + 1):
                        weight = max(0.0, 1 - abs(u - j)) * max(0.0, 1 - abs(v - i))
                        if weight > 0:
                            total += weight * probs[k, min(i, size - 1), min(j, size - 1)]
                out[k, r, c] = total >= threshold
    return out


def test_paste_matches_per_pixel_reference():
    rng = np.random.default_rng(0)
    height, width, size = 23, 31, 7
    xy = rng.uniform(-6, 25, (12, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0.5, 20, (12, 2))], axis=1)
    boxes[3] = [5, 5, 5, 9]                       # empty box
    boxes[4] = [40, 2, 50, 10]                    # right of the image
    probs = rng.random((12, size, size)).astype(np.float32)
    got = paste_masks(probs, boxes, height, width, threshold=0.5)
    want = paste_reference(probs.astype(np.float64), boxes, height, width, 0.5)
    assert got.shape == (12, height, width) and got.dtype == bool
    # float32 vs float64 sums may fall either side of the threshold only where the value is at it
    assert (got != want).sum() <= 2
    assert not got[3].any() and not got[4].any()


def test_full_map_pastes_to_exactly_the_box_pixels():
    boxes = np.array([[2.0, 3.0, 9.0, 7.0], [2.4, 3.6, 9.5, 7.49], [-3.2, 10.1, 4.2, 30.0], [0.0, 0.0, 20.0, 16.0]])
    got = paste_masks(np.ones((4, 28, 28), np.float32), boxes, 16, 20)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        cols = (np.arange(20) + 0.5 >= x0) & (np.arange(20) + 0.5 < x1)
        rows = (np.arange(16) + 0.5 >= y0) & (np.arange(16) + 0.5 < y1)
        np.testing.assert_array_equal(got[k], rows[:, None] & cols[None, :])
    assert got[0].sum() == 7 * 4 and got[3].all()


def test_paste_in_integer_box_equals_opencv_bilinear_resize():
    # OpenCV's INTER_LINEAR uses the same half-pixel centres and border replication
    rng = np.random.default_rng(1)
    probs = rng.random((3, 14, 14)).astype(np.float32)
    boxes = np.array([[4, 6, 4 + 37, 6 + 21], [0, 0, 50, 40], [10, 3, 17, 30]], np.float64)
    got = paste_masks(probs, boxes, 40, 50, threshold=0.4)
    for k, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
        resized = cv2.resize(probs[k], (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        want = np.zeros((40, 50), bool)
        want[y0:y1, x0:x1] = resized >= 0.4
        near = np.zeros((40, 50), bool)
        near[y0:y1, x0:x1] = np.abs(resized - 0.4) < 1e-5
        assert ((got[k] != want) & ~near).sum() == 0


def test_paste_threshold_and_shape_errors():
    probs = np.full((1, 4, 4), 0.5, np.float32)
    box = np.array([[0, 0, 4, 4]])
    assert paste_masks(probs, box, 4, 4, threshold=0.5).all()
    assert not paste_masks(probs, box, 4, 4, threshold=0.51).any()
    assert paste_masks(np.zeros((0, 28, 28)), np.zeros((0, 4)), 5, 6).shape == (0, 5, 6)
    with pytest.raises(ValueError, match="one map per box"):
        paste_masks(np.zeros((2, 28, 28)), np.zeros((1, 4)), 5, 6)


def test_encode_rle_round_trips_and_matches_pycocotools():
    rng = np.random.default_rng(2)
    masks = rng.random((3, 17, 11)) < 0.3
    rles = encode_rle(masks)
    assert all(r["size"] == [17, 11] and isinstance(r["counts"], str) for r in rles)
    json.dumps(rles)
    np.testing.assert_array_equal(decode_rle(rles), masks)
    direct = coco_mask.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    assert [r["counts"] for r in rles] == [d["counts"].decode() for d in direct]
    np.testing.assert_allclose(coco_mask.area([dict(r, counts=r["counts"].encode()) for r in rles]),
                               masks.sum(axis=(1, 2)))
    assert encode_rle(np.zeros((0, 4, 4), bool)) == []


# --- segm AP ------------------------------------------------------------------------------------------

def _ellipse_masks(boxes, height, width):
    masks = np.zeros((len(boxes), height, width), np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        centre = (int(round((x0 + x1) / 2)), int(round((y0 + y1) / 2)))
        axes = (max(1, int((x1 - x0) / 2)), max(1, int((y1 - y0) / 2)))
        cv2.ellipse(masks[k], centre, axes, 0, 0, 360, 1, -1)
    return masks


def random_mask_batch(rng, *, batch=5, height=60, width=80, num_classes=3):
    """Pixel label rows (B, M, 6) with difficult flags and their ellipse masks; detections jittered from
    them (masks of the jittered boxes, sometimes rectangles) plus random ones, with their masks."""
    labels, gt_masks, dets, det_masks = [], [], [], []
    for b in range(batch):
        n = rng.integers(0, 5)
        xy = rng.uniform(0, [width - 25, height - 25], (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(6, 24, (n, 2))], axis=1)
        cls = rng.integers(0, num_classes, n)
        gt = np.column_stack([cls, boxes, rng.random(n) < 0.2])
        labels.append(np.concatenate([gt, -np.ones((5 - n, 6))]))
        gt_masks.append(_ellipse_masks(boxes, height, width))
        m = rng.integers(0, 7) if b != 1 else 0
        src = rng.integers(0, max(n, 1), m)
        jitter = boxes[src % max(n, 1)] + rng.normal(0, 2, (m, 4)) if n else rng.uniform(0, 40, (m, 4))
        jitter[:, 2:] = np.maximum(jitter[:, 2:], jitter[:, :2] + 3)
        det_cls = np.where(rng.random(m) < 0.85, cls[src % max(n, 1)] if n else 0, rng.integers(0, num_classes, m))
        masks = _ellipse_masks(jitter, height, width)
        rect = rng.random(m) < 0.3
        for k in np.flatnonzero(rect):
            x0, y0, x1, y1 = np.round(jitter[k]).astype(int)
            masks[k, max(y0, 0):y1, max(x0, 0):x1] = 1
        det = np.column_stack([det_cls, rng.random(m), jitter])
        dets.append(np.concatenate([det, -np.ones((7 - m, 6))]))
        det_masks.append(masks)
    return np.stack(dets), np.stack(labels), det_masks, gt_masks


def _pycocotools_stats(gt_path, results_path, iou_type):
    gt = COCO(str(gt_path))
    dt = gt.loadRes(str(results_path))
    coco_eval = COCOeval(gt, dt, iouType=iou_type)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return coco_eval.stats


def test_segm_ap_equals_pycocotools_run_on_the_written_json(tmp_path):
    rng = np.random.default_rng(3)
    evaluator = COCOEvaluator(class_names=["a", "b", "c"], normalized=False, segm=True)
    for _ in range(2):
        dets, labels, det_masks, gt_masks = random_mask_batch(rng)
        evaluator.update(dets, labels, image_sizes=np.tile([80, 60], (len(dets), 1)), masks=det_masks,
                         gt_masks=gt_masks)
    evaluator.write_ground_truth(tmp_path / "gt.json")
    for iou_type in ("bbox", "segm"):
        evaluator.write_results(tmp_path / (iou_type + ".json"), iou_type)
        names, values = evaluator.get(iou_type)
        direct = _pycocotools_stats(tmp_path / "gt.json", tmp_path / (iou_type + ".json"), iou_type)
        np.testing.assert_array_equal(values, direct)
    assert 0.05 < evaluator.get("segm")[1][0] < 0.95            # neither trivial nor empty
    assert evaluator.get("segm")[1][0] != evaluator.get("bbox")[1][0]
    segm = json.loads((tmp_path / "segm.json").read_text())
    assert segm and all("bbox" not in r and isinstance(r["segmentation"]["counts"], str) for r in segm)
    gt = json.loads((tmp_path / "gt.json").read_text())
    first = gt["annotations"][0]
    assert first["area"] == coco_mask.area(dict(first["segmentation"], counts=first["segmentation"]["counts"].encode()))


def _square(height, width, x0, y0, side):
    mask = np.zeros((1, height, width), bool)
    mask[0, y0:y0 + side, x0:x0 + side] = True
    return mask


@pytest.mark.parametrize("shift, ap", [(0, 1.0), (2, 0.4), (5, 0.0)])
def test_segm_ap_of_a_shifted_square_is_hand_computable(shift, ap):
    # a 10 x 10 square against itself shifted by s columns: IoU (10 - s) / (10 + s), so 1, 2/3 (a match at
    # the IoU thresholds .50 .. .65, 4 of 10) and 1/3 (none); the boxes are equal, box AP stays 1
    label = np.array([[[0, 10, 10, 20, 20, 0]]], np.float64)
    det = np.array([[[0, 0.9, 10, 10, 20, 20]]], np.float64)
    evaluator = COCOEvaluator(class_names=["a"], normalized=False, segm=True)
    evaluator.update(det, label, image_sizes=[[40, 30]], masks=[_square(30, 40, 10 + shift, 10, 10)],
                     gt_masks=[_square(30, 40, 10, 10, 10)])
    assert evaluator.get("segm")[1][0] == pytest.approx(ap, abs=1e-12)
    assert evaluator.get("bbox")[1][0] == pytest.approx(1.0)
    assert evaluator.per_class_ap(iou_type="segm")[0] == pytest.approx(ap, abs=1e-12)


def test_segm_with_a_polygon_gt_file_and_rle_masks(tmp_path):
    # a gt file with COCO polygons; detections given as RLE dicts
    gt = {"images": [{"id": 7, "width": 40, "height": 30}],
          "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 10, 10, 10], "area": 100.0,
                           "iscrowd": 0, "segmentation": [[10, 10, 20, 10, 20, 20, 10, 20]]}],
          "categories": [{"id": 3, "name": "a"}]}
    evaluator = COCOEvaluator(gt=gt, normalized=False, segm=True)
    det = np.array([[[0, 0.9, 10, 10, 20, 20], [0, 0.5, 0, 0, 5, 5]]], np.float64)
    masks = encode_rle(np.concatenate([_square(30, 40, 10, 10, 10), _square(30, 40, 0, 0, 5)]))
    evaluator.update(det, image_ids=[7], masks=[masks])
    assert evaluator.get("segm")[1][1] == pytest.approx(1.0)     # AP50
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    evaluator.write_results(tmp_path / "segm.json", "segm")
    np.testing.assert_array_equal(evaluator.get("segm")[1],
                                  _pycocotools_stats(tmp_path / "gt.json", tmp_path / "segm.json", "segm"))


def test_segm_inputs_are_checked():
    label = np.array([[[0, 10, 10, 20, 20, 0]]], np.float64)
    det = np.array([[[0, 0.9, 10, 10, 20, 20], [-1, -1, -1, -1, -1, -1]]], np.float64)
    square = _square(30, 40, 10, 10, 10)
    box_only = COCOEvaluator(class_names=["a"], normalized=False)
    with pytest.raises(ValueError, match="segm=True"):
        box_only.update(det, label, image_sizes=[[40, 30]], masks=[square])
    box_only.update(det, label, image_sizes=[[40, 30]])
    with pytest.raises(ValueError, match="iou_type 'segm'"):
        box_only.get("segm")
    evaluator = COCOEvaluator(class_names=["a"], normalized=False, segm=True)
    with pytest.raises(ValueError, match="needs masks"):
        evaluator.update(det, label, image_sizes=[[40, 30]], gt_masks=[square])
    with pytest.raises(ValueError, match="2 masks for 1 rows"):
        evaluator.update(det, label, image_sizes=[[40, 30]], masks=[np.concatenate([square, square])],
                         gt_masks=[square])
    with pytest.raises(ValueError, match="image of 31 x 40"):
        evaluator.update(det, label, image_sizes=[[40, 31]], masks=[square], gt_masks=[square])
    assert not evaluator._images                                   # a refused batch changes nothing
    with pytest.raises(ValueError, match="no segmentation"):
        COCOEvaluator(gt={"images": [{"id": 1, "width": 4, "height": 4}],
                          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2],
                                           "area": 4, "iscrowd": 0}],
                          "categories": [{"id": 1, "name": "a"}]}, segm=True)


# --- drawing ------------------------------------------------------------------------------------------

def test_masks_are_filled_translucently_in_the_class_colour():
    from ssdkit.visualize import class_colors, draw_detections, draw_masks

    image = np.full((40, 60, 3), 100, np.uint8)
    masks = np.zeros((3, 40, 60), bool)
    masks[0, 5:35, 5:25] = True
    masks[1, 36:40, 30:50] = True                  # below the score threshold: not drawn
    masks[2, 30:33, 20:24] = True                  # overlaps mask 0 with a higher score: on top
    dets = np.array([[1, 0.9, 5, 5, 25, 35], [0, 0.2, 30, 36, 50, 40], [0, 0.95, 20, 30, 24, 33]], np.float64)
    drawn = draw_detections(image, dets, normalized=False, masks=masks, thickness=1, class_names=["a", "b"])
    colors = class_colors(2).astype(np.float64)
    once = np.round(0.5 * 100 + 0.5 * colors[1])
    np.testing.assert_array_equal(drawn[33, 10], once)                     # mask 0, off the labels and lines
    np.testing.assert_array_equal(drawn[38, 40], [100, 100, 100])           # the skipped row's mask
    np.testing.assert_array_equal(drawn[38, 2], [100, 100, 100]) 
    both = draw_masks(image, masks[[0, 2]], [1, 0], alpha=0.5)
    np.testing.assert_array_equal(both[31, 21], np.round(0.5 * once + 0.5 * colors[0]))
    filled = draw_masks(image, masks[:1], [1], alpha=1.0, colors=colors.astype(np.uint8))
    assert (filled[masks[0]] == colors[1]).all() and (filled[~masks[0]] == 100).all()
    with pytest.raises(ValueError, match="one mask per row"):
        draw_detections(image, dets, normalized=False, masks=masks[:2])


# --- a mask model end to end: evaluate, Detector, deploy, demo ---------------------------------------

CLASSES = ["circle", "ring", "box", "triangle", "star", "cross"]


def _box_pixels(box, height, width):
    """(H, W) bool: the pixels whose centres ``(i + 0.5)`` lie in the continuous box ``[x0, x1) x [y0, y1)``."""
    x0, y0, x1, y1 = box
    cols = (np.arange(width) + 0.5 >= x0) & (np.arange(width) + 0.5 < x1)
    rows = (np.arange(height) + 0.5 >= y0) & (np.arange(height) + 0.5 < y1)
    return rows[:, None] & cols[None, :]


def _write_mask_checkpoint(prefix, config):
    """``prefix-0001.params`` of ``config``'s mask inference graph (random weights, BatchNorm identity) whose
    mask predictor is 0 with bias +10: every mask probability is ~1, so each pasted mask is exactly its box's
    pixels; zero box predictors, so detections are anchor boxes. Like tests/untrained_models.py, but only
    the inference graph is built (the training graph needs the MaskTarget operator)."""
    import mxnet as mx

    from ssdkit.api.family import family_of
    from ssdkit.api.model_files import write_meta

    family = family_of(config)
    meta = dict(family.meta_fields(config), class_names=CLASSES)
    symbol = family.inference_symbol(meta)
    inputs = dict(family.inference_shapes(meta, 1))
    arg_shapes, _, aux_shapes = symbol.infer_shape(**inputs)
    rng = np.random.default_rng(0)
    blob = {}
    for name, shape in zip(symbol.list_arguments(), arg_shapes):
        if name in inputs:
            continue
        value = (np.ones(shape) if name.endswith("gamma") else np.zeros(shape) if name.endswith(("beta", "bias"))
                 else rng.normal(0, 0.05, shape))
        if name in ("mask_predictor_weight", "rpn_bbox_pred_weight", "rcnn_bbox_pred_weight"):
            value = np.zeros(shape)                 # full masks; boxes are anchors (not degenerate)
        if name == "mask_predictor_bias":
            value = np.full(shape, 10.0)
        blob["arg:" + name] = mx.nd.array(value)
    for name, shape in zip(symbol.list_auxiliary_states(), aux_shapes):
        blob["aux:" + name] = mx.nd.ones(shape) if name.endswith("var") else mx.nd.zeros(shape)
    mx.nd.save(prefix + "-0001.params", blob)
    write_meta(prefix, config, CLASSES)
    return prefix


@pytest.fixture(scope="module")
def mask_model(tmp_path_factory):
    from ssdkit.config import apply_overrides, load_config
    from ssdkit.dataset.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("mask_model")
    synthetic = make_synthetic_dataset(str(root / "data"), num_train=1, num_test=3, seed=5, image_size=(112, 176))
    config = apply_overrides(load_config("fpn_resnet18_synthetic"), {
        "data.root": synthetic.devkit, "model.resize_short": 128, "model.resize_long": 160, "data.batch_size": 2,
        "data.num_workers": 1, "fpn.mask": True, "fpn.mask_channels": 16, "fpn.mask_convs": 1,
        "fpn.test_max_detections": 20})
    return config, _write_mask_checkpoint(str(root / "mask"), config)


def test_mask_model_evaluation_writes_segm_ap_that_pycocotools_reproduces(mask_model, tmp_path, capsys):
    import evaluate
    from ssdkit.api.data import load_split
    from ssdkit.dataset.masks import decode_masks

    config, prefix = mask_model
    out = str(tmp_path / "eval")
    assert evaluate.main(["--config", "fpn_resnet18_synthetic", "--data-root", config.data.root, "--prefix", prefix,
                          "--epoch", "1", "--batch-size", "2", "--num-workers", "1", "--no-progress",
                          "--output", out]) == 0
    result = json.load(open(f"{out}/metrics.json"))
    assert "COCO mask AP: %.4f" % result["coco_segm"]["AP"] in capsys.readouterr().out
    assert set(result["coco_segm"]) == set(result["coco"]) and result["images"] == 3
    for iou_type, results_file in (("segm", "coco_segm_results.json"), ("bbox", "coco_results.json")):
        direct = _pycocotools_stats(f"{out}/coco_ground_truth.json", f"{out}/{results_file}", iou_type)
        key = "coco_segm" if iou_type == "segm" else "coco"
        np.testing.assert_array_equal([result[key][n] for n in COCO_NAMES], direct)
    boxes = json.load(open(f"{out}/coco_results.json"))
    segms = json.load(open(f"{out}/coco_segm_results.json"))
    assert len(boxes) == len(segms) > 3
    records = load_split(config, "val").records
    for box, segm in zip(boxes, segms):        # full-probability masks paste to their boxes in the original image
        assert (box["image_id"], box["category_id"], box["score"]) == (segm["image_id"], segm["category_id"],
                                                                       segm["score"])
        record = records[box["image_id"]]
        assert segm["segmentation"]["size"] == [record.height, record.width]
        x, y, w, h = box["bbox"]
        np.testing.assert_array_equal(decode_rle([segm["segmentation"]])[0],
                                      _box_pixels((x, y, x + w, y + h), record.height, record.width))
    assert sum(decode_rle([s["segmentation"]]).sum() > 100 for s in segms) > 3
    gt = json.load(open(f"{out}/coco_ground_truth.json"))
    first = [a for a in gt["annotations"] if a["image_id"] == 0]
    np.testing.assert_array_equal(decode_rle([a["segmentation"] for a in first]), decode_masks(records[0]))


COCO_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def test_detector_deploy_and_demo_give_masks_in_the_original_image(mask_model, tmp_path):
    import demo
    from ssdkit.api.data import load_split
    from ssdkit.api.deploy import deploy_model
    from ssdkit.dataset.image import load_image_rgb
    from ssdkit.detector import Detector
    from ssdkit.masks import Instances
    from ssdkit.visualize import draw_detections

    config, prefix = mask_model
    record = load_split(config, "val").records[0]
    detector = Detector(prefix, epoch=1, score_thresh=0.0)
    assert detector.with_masks
    found = detector.detect(record.path)
    assert isinstance(found, Instances) and len(found) > 5
    assert found.masks.shape == (len(found), record.height, record.width) and found.masks.dtype == bool
    assert found.masks.any(axis=(1, 2)).all()
    for row, mask in zip(found.rows, found.masks):
        np.testing.assert_array_equal(mask, _box_pixels(row[2:6], record.height, record.width))
    listed = detector.to_json(found)
    np.testing.assert_array_equal(decode_rle([d["mask"] for d in listed]), found.masks)
    json.dumps(listed)

    deployed = deploy_model(prefix, str(tmp_path / "deploy" / "mask"), epoch=1)
    assert len(json.load(open(deployed["symbol"]))["heads"]) == 2
    again = Detector(str(tmp_path / "deploy" / "mask"), deploy=True, score_thresh=0.0).detect(record.path)
    np.testing.assert_array_equal(again.rows, found.rows)
    np.testing.assert_array_equal(again.masks, found.masks)

    assert demo.main(["--prefix", prefix, "--epoch", "1", "--images", record.path, "--output",
                      str(tmp_path / "demo"), "--score-thresh", "0.3"]) == 0
    shown = Detector(prefix, epoch=1, score_thresh=0.3).detect(record.path)
    report = json.load(open(tmp_path / "demo" / "detections.json"))[record.path]
    assert len(report) == len(shown) > 0 and all("mask" in d for d in report)
    drawn = cv2.imread(str(tmp_path / "demo" / (record.image_id + "_det.png")))
    bgr = cv2.cvtColor(load_image_rgb(record.path), cv2.COLOR_RGB2BGR)
    expected = draw_detections(bgr, shown.rows, class_names=CLASSES, score_thresh=0.3, normalized=False,
                               masks=shown.masks)
    np.testing.assert_array_equal(drawn, expected)
    assert (drawn != draw_detections(bgr, shown.rows, class_names=CLASSES, score_thresh=0.3,
                                     normalized=False)).any()


def test_mask_model_on_data_without_masks_evaluates_boxes_with_a_warning(mask_model, tmp_path, caplog):
    import dataclasses

    from ssdkit.api.evaluate import evaluate_detector
    from ssdkit.dataset.synthetic import make_synthetic_dataset

    config, prefix = mask_model
    plain = make_synthetic_dataset(str(tmp_path / "data"), num_train=1, num_test=2, seed=6, image_size=(112, 176),
                                   masks=False)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=plain.devkit))
    result = evaluate_detector(config, prefix, epoch=1, progress=False, output_dir=str(tmp_path / "eval"))
    assert "coco" in result and "coco_segm" not in result
    assert "mask model but 2 of the 2 evaluation images have no instance masks" in caplog.text
