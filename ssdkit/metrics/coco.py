"""COCO detection metrics through pycocotools, from ssdkit detection and label tensors.

The evaluator collects detections (and, without an annotation file, ground truths) in pixels, then
runs pycocotools' ``COCOeval`` on exactly the records it can write out with ``write_results`` /
``write_ground_truth``: evaluating those json files with pycocotools directly gives the same numbers.

With ``segm=True`` it also collects instance masks (stored as COCO RLE) and gives mask AP
(``COCOeval`` with ``iouType="segm"``) next to box AP. The segm results hold ``segmentation`` and no
``bbox`` (COCO's upload format for that task; with a ``bbox`` pycocotools would size detections by their
box instead of their mask for APs/APm/APl), so bbox and segm results are two lists / files.

Category ids: our class id ``i`` (0-based, contiguous) is the dataset's ``category_ids[i]``; the default
is the sorted category ids of the annotation file (COCO's 80 classes, ids 1..90), or ``1..C`` when the
ground truth is built from labels.
"""
import contextlib
import copy
import io
import json

import numpy as np
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ssdkit.masks import encode_rle
from ssdkit.metrics.voc import per_image

IOU_TYPES = ("bbox", "segm")
"""pycocotools' overlap kinds this evaluator computes: boxes, and instance masks (``segm=True``)."""

COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                     "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
"""Names of ``COCOeval.stats`` in order: AP over IoU .50:.05:.95, at .50, at .75, for small / medium /
large objects, then recall with 1 / 10 / 100 detections per image and per size."""


def _as_numpy(x):
    if hasattr(x, "asnumpy"):
        x = x.asnumpy()
    return np.asarray(x)


def _quiet(fn, *args):
    """Run a pycocotools call without its progress prints; returns (result, printed text)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = fn(*args)
    return result, buffer.getvalue()


def _coco_from_dict(dataset):
    coco = COCO()
    coco.dataset = dataset
    _quiet(coco.createIndex)
    return coco


def _to_xywh(boxes, width, height, normalized):
    """(N, 4) corners -> (N, 4) float64 ``[x, y, w, h]`` in pixels."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if normalized:
        boxes = boxes * np.array([width, height, width, height], dtype=np.float64)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def _rles(masks, count, height, width, what):
    """``masks`` ((count, H, W) bool / 0-1 array, or a list of count COCO RLE dicts) -> list of RLE dicts
    of an ``height x width`` image (ValueError naming ``what`` otherwise)."""
    if isinstance(masks, (list, tuple)) and (not masks or isinstance(masks[0], dict)):
        rles = [dict(r, counts=r["counts"].decode("ascii") if isinstance(r["counts"], bytes) else r["counts"])
                for r in masks]
        sizes = {tuple(int(v) for v in r["size"]) for r in rles}
    else:
        masks = _as_numpy(masks)
        if masks.ndim != 3:
            raise ValueError("COCOEvaluator.update: %s must be (K, H, W) arrays or lists of RLE dicts; got "
                             "shape %s" % (what, masks.shape))
        rles = encode_rle(masks)
        sizes = {tuple(masks.shape[1:])} if len(masks) else set()
    if len(rles) != count:
        raise ValueError("COCOEvaluator.update: %d %s for %d rows with a class id >= 0; give one mask per such "
                         "row, in row order" % (len(rles), what, count))
    if sizes - {(int(height), int(width))}:
        raise ValueError("COCOEvaluator.update: %s of size %s for an image of %d x %d (H x W); masks are in the "
                         "image's pixels" % (what, sorted(sizes), height, width))
    return rles


class COCOEvaluator:
    """Accumulating COCO bbox (and segm) evaluation (pycocotools).

    Parameters
    ----------
    class_names : sequence of str, optional
        Name of each 0-based class id. Required when ``gt`` is None; defaults to the annotation file's
        category names (in ``category_ids`` order) otherwise.
    category_ids : sequence of int, optional
        Dataset category id of each class id (see the module docstring).
    gt : str, dict, or pycocotools COCO, optional
        Ground truth: an instances json path, its loaded dict, or a COCO object. Only the images that
        received an ``update`` are evaluated. Without it, ground truths come from ``update(labels=...)``.
    normalized : bool
        True if boxes given to ``update`` are normalised to [0, 1] (scaled by the image size),
        False if they are already pixels.
    segm : bool
        Also evaluate instance masks: ``update`` then takes ``masks`` (and ``gt_masks`` without ``gt``),
        and ``get("segm")`` gives mask AP. A ``gt`` file must then hold a ``segmentation`` for every
        annotation.

    Notes
    -----
    Ground truths built from labels get ``area = w * h`` in pixels, or the mask's pixel count with
    ``segm`` (COCO's convention; it sizes objects for APs/APm/APl of both kinds); a ``difficult`` one
    becomes ``iscrowd=1``, pycocotools' only way to ignore a box (a detection on it is neither TP nor FP,
    and its overlap is measured as intersection over the detection's area).
    """

    def __init__(self, *, class_names=None, category_ids=None, gt=None, normalized=True, segm=False):
        self.normalized = bool(normalized)
        self.segm = bool(segm)
        self.iou_types = IOU_TYPES if self.segm else IOU_TYPES[:1]
        if gt is None:
            if class_names is None:
                raise ValueError("COCOEvaluator: give class_names when the ground truth comes from labels "
                                 "(gt=None), or pass gt=<instances json>.")
            self._gt = None
        else:
            if isinstance(gt, str):
                gt = _quiet(COCO, gt)[0]
            elif isinstance(gt, dict):
                # segm evaluation replaces polygons by RLE in the gt annotations: keep the caller's dict intact
                gt = _coco_from_dict(copy.deepcopy(gt) if self.segm else gt)
            self._gt = gt
            if self.segm:
                missing = [a["id"] for a in gt.dataset.get("annotations", []) if not a.get("segmentation")]
                if missing:
                    raise ValueError("COCOEvaluator: segm=True but the gt annotations %s have no segmentation; "
                                     "give an instances file with masks, or segm=False" % missing[:10])
            if category_ids is None:
                category_ids = sorted(gt.getCatIds())
            if class_names is None:
                class_names = [gt.cats[c]["name"] for c in category_ids]
        self.class_names = tuple(str(n) for n in class_names)
        if category_ids is None:
            category_ids = range(1, len(self.class_names) + 1)
        self.category_ids = tuple(int(c) for c in category_ids)
        if len(self.category_ids) != len(self.class_names):
            raise ValueError(f"COCOEvaluator: {len(self.category_ids)} category ids for "
                             f"{len(self.class_names)} class names; give one id per class.")
        self.reset()

    def reset(self):
        """Forget every update."""
        self._images = {}  # image id -> (width, height)
        self._dets = []  # (N, 7) float64 rows [image_id, category_id, score, x, y, w, h]
        self._gts = []  # (M, 7) float64 rows [image_id, category_id, iscrowd, x, y, w, h]
        self._det_rles = []  # with segm: per image, the RLE dict of each row of _dets
        self._gt_rles = []  # with segm and no gt file: per image, the RLE dict of each row of _gts
        self._next_id = 1
        self._evals = {}  # iou type -> COCOeval
        self.summary = ""  # pycocotools' printed bbox summary after evaluate()
        self.summaries = {}  # iou type -> pycocotools' printed summary

    def update(self, detections, labels=None, *, image_ids=None, image_sizes=None, masks=None, gt_masks=None):
        """Add one batch of images.

        Parameters
        ----------
        detections : (B, K, 6) rows ``[cls_id, score, xmin, ymin, xmax, ymax]``, ``cls_id < 0`` empty
            (or a list of B ``(K_i, 6)`` arrays).
        labels : (B, M, 5|6), optional
            Rows ``[cls, xmin, ymin, xmax, ymax(, difficult)]`` padded with -1 rows. Required without
            ``gt``, not allowed with it.
        image_ids : (B,) int, optional
            Dataset image ids. Required with ``gt``; without it, images are numbered 1, 2, ... in order.
        image_sizes : (B, 2), optional
            ``(width, height)`` in pixels of each image. Taken from ``gt`` when it has them; required to
            build ground truths or to scale normalised boxes otherwise.
        masks : list of B, with ``segm`` (required then, refused otherwise)
            Per image, one mask per detection row with ``cls_id >= 0``, in row order: a ``(K_b, H, W)``
            bool (or 0/1) array in the image's pixels, or a list of K_b COCO RLE dicts.
        gt_masks : list of B, with ``segm`` and ``labels``
            Per image, one mask per label row with ``cls >= 0``, in row order, as ``masks``.
        """
        detections = per_image(detections, 6)
        labels = per_image(labels, None) if labels is not None else None
        batch = len(detections)
        if (labels is None) == (self._gt is None):
            raise ValueError("COCOEvaluator.update: pass labels exactly when the evaluator has no gt "
                             "annotation file.")
        if image_ids is None:
            if self._gt is not None:
                raise ValueError("COCOEvaluator.update: image_ids are required with a gt annotation file.")
            image_ids = np.arange(self._next_id, self._next_id + batch)
        image_ids = [int(i) for i in _as_numpy(image_ids).reshape(-1)]
        unknown = [i for i in image_ids if self._gt is not None and i not in self._gt.imgs]
        if unknown:
            raise ValueError(f"COCOEvaluator.update: image ids {unknown} are not in the gt file.")
        if image_sizes is None:
            if self._gt is None:
                raise ValueError("COCOEvaluator.update: image_sizes (B, 2) [width, height] are required "
                                 "when the ground truth is built from labels.")
            image_sizes = [(self._gt.imgs.get(i, {}).get("width", np.nan),
                            self._gt.imgs.get(i, {}).get("height", np.nan)) for i in image_ids]
            if self.normalized and np.isnan(np.asarray(image_sizes, dtype=np.float64)).any():
                raise ValueError("COCOEvaluator.update: the gt file has no width/height for some images; "
                                 "pass image_sizes to scale normalised boxes.")
        image_sizes = _as_numpy(image_sizes).reshape(-1, 2).astype(np.float64)
        num_labels = batch if labels is None else len(labels)
        if not len(image_ids) == len(image_sizes) == num_labels == batch:
            raise ValueError(f"COCOEvaluator.update: {batch} images of detections, {num_labels} of labels, "
                             f"{len(image_ids)} image ids and {len(image_sizes)} image sizes; give one per "
                             "image.")
        repeated = sorted({i for i in image_ids if i in self._images or image_ids.count(i) > 1})
        if repeated:
            raise ValueError(f"COCOEvaluator.update: image ids {repeated} were already added; each image "
                             "is evaluated once.")
        self._check_masks(masks, gt_masks, labels, batch)
        lookup = np.asarray(self.category_ids, dtype=np.float64)
        dets, gts = [], []  # build everything first: a bad batch leaves the evaluator unchanged
        det_rles, gt_rles = [], []
        for b, (image_id, (width, height)) in enumerate(zip(image_ids, image_sizes)):
            det = detections[b][detections[b][:, 0] >= 0]
            dets.append(self._rows(image_id, lookup, det[:, 0], det[:, 1], det[:, 2:6], width, height))
            if self.segm:
                det_rles.append(_rles(masks[b], len(det), height, width, "masks"))
            if labels is not None:
                gt = labels[b][labels[b][:, 0] >= 0]
                crowd = (gt[:, 5] > 0).astype(np.float64) if gt.shape[1] > 5 else np.zeros(len(gt))
                gts.append(self._rows(image_id, lookup, gt[:, 0], crowd, gt[:, 1:5], width, height))
                if self.segm:
                    gt_rles.append(_rles(gt_masks[b], len(gt), height, width, "gt_masks"))
        self._images.update((i, (float(w), float(h))) for i, (w, h) in zip(image_ids, image_sizes))
        self._next_id = max(self._next_id, max(image_ids, default=0) + 1)
        self._dets.extend(dets)
        self._gts.extend(gts)
        self._det_rles.extend(det_rles)
        self._gt_rles.extend(gt_rles)
        self._evals = {}

    def _check_masks(self, masks, gt_masks, labels, batch):
        if not self.segm:
            if masks is not None or gt_masks is not None:
                raise ValueError("COCOEvaluator.update: masks given to an evaluator without segm; create it "
                                 "with segm=True to evaluate masks.")
            return
        if masks is None or len(masks) != batch:
            raise ValueError("COCOEvaluator.update: segm=True needs masks, one entry per image (%d); got %s"
                             % (batch, "none" if masks is None else len(masks)))
        if labels is not None and (gt_masks is None or len(gt_masks) != batch):
            raise ValueError("COCOEvaluator.update: segm=True with labels needs gt_masks, one entry per image "
                             "(%d); got %s" % (batch, "none" if gt_masks is None else len(gt_masks)))
        if labels is None and gt_masks is not None:
            raise ValueError("COCOEvaluator.update: gt_masks come from the gt file here; do not pass them.")

    def _rows(self, image_id, lookup, cls, extra, boxes, width, height):
        cls = cls.astype(np.int64)
        if cls.size and cls.max() >= len(lookup):
            raise ValueError(f"COCOEvaluator.update: class id {cls.max()} but only {len(lookup)} "
                             "classes were given.")
        out = np.empty((cls.size, 7), dtype=np.float64)
        out[:, 0] = image_id
        out[:, 1] = lookup[cls]
        out[:, 2] = extra
        out[:, 3:] = _to_xywh(boxes, width, height, self.normalized)
        return out

    def _check_iou_type(self, iou_type):
        if iou_type not in self.iou_types:
            raise ValueError("COCOEvaluator: iou_type %r is not one of %s%s" % (
                iou_type, list(self.iou_types), "" if self.segm else " (create the evaluator with segm=True "
                "for mask AP)"))

    def results(self, iou_type="bbox"):
        """Detections so far in the COCO results format: a list of dicts with ``image_id``,
        ``category_id`` (the dataset's), ``score`` and ``bbox`` ``[x, y, w, h]`` in pixels, or for
        ``iou_type="segm"`` ``segmentation`` (compressed RLE, counts as str) instead of ``bbox``."""
        self._check_iou_type(iou_type)
        rows = np.concatenate(self._dets) if self._dets else np.zeros((0, 7))
        if iou_type == "segm":
            rles = [r for image in self._det_rles for r in image]
            return [{"image_id": int(r[0]), "category_id": int(r[1]), "segmentation": rle, "score": float(r[2])}
                    for r, rle in zip(rows, rles)]
        return [{"image_id": int(r[0]), "category_id": int(r[1]),
                 "bbox": [float(v) for v in r[3:7]], "score": float(r[2])} for r in rows]

    def ground_truth(self):
        """The ground truth as a COCO instances dict (only without a gt file): ``images``, ``annotations``
        (ids from 1, since pycocotools reserves 0 for "unmatched"; with ``segm`` a ``segmentation`` RLE
        each and the mask's area), ``categories``."""
        if self._gt is not None:
            return self._gt.dataset
        rows = np.concatenate(self._gts) if self._gts else np.zeros((0, 7))
        images = [{"id": i, "width": w, "height": h} for i, (w, h) in sorted(self._images.items())]
        annotations = [{"id": k + 1, "image_id": int(r[0]), "category_id": int(r[1]),
                        "bbox": [float(v) for v in r[3:7]], "area": float(r[5] * r[6]),
                        "iscrowd": int(r[2])} for k, r in enumerate(rows)]
        if self.segm:
            rles = [r for image in self._gt_rles for r in image]
            areas = coco_mask.area([dict(r, counts=r["counts"].encode("ascii")) for r in rles]) if rles else []
            for ann, rle, area in zip(annotations, rles, areas):
                ann.update(segmentation=rle, area=float(area))
        categories = [{"id": c, "name": n} for c, n in zip(self.category_ids, self.class_names)]
        return {"images": images, "annotations": annotations, "categories": categories}

    def write_results(self, path, iou_type="bbox"):
        """Write ``results(iou_type)`` as a COCO results json (what the COCO evaluation server takes)."""
        results = self.results(iou_type)
        with open(path, "w") as f:
            json.dump(results, f)

    def write_ground_truth(self, path):
        """Write ``ground_truth()`` as a COCO instances json."""
        with open(path, "w") as f:
            json.dump(self.ground_truth(), f)

    def evaluate(self, iou_type="bbox"):
        """Run COCOeval (``iou_type`` "bbox" or, with ``segm``, "segm") over the images updated so far;
        returns the COCOeval object.

        With no detection at all, AP and AR are 0 for every class that has ground truth
        (pycocotools cannot load an empty result list, so the empty result set is built directly).
        """
        self._check_iou_type(iou_type)
        if iou_type in self._evals:
            return self._evals[iou_type]
        if not self._images:
            raise ValueError("COCOEvaluator.evaluate: no image was added; call update first.")
        gt = self._gt if self._gt is not None else _coco_from_dict(self.ground_truth())
        results = self.results(iou_type)
        if results:
            dt = _quiet(gt.loadRes, results)[0]
        else:
            dt = _coco_from_dict({"images": list(gt.dataset["images"]), "annotations": [],
                                  "categories": list(gt.dataset["categories"])})
        coco_eval = COCOeval(gt, dt, iouType=iou_type)
        coco_eval.params.imgIds = sorted(self._images)
        _quiet(coco_eval.evaluate)
        _quiet(coco_eval.accumulate)
        _, self.summaries[iou_type] = _quiet(coco_eval.summarize)
        if iou_type == "bbox":
            self.summary = self.summaries[iou_type]
        self._evals[iou_type] = coco_eval
        return coco_eval

    def get(self, iou_type="bbox"):
        """COCO metrics of boxes, or with ``iou_type="segm"`` of masks.

        Returns
        -------
        names : list of str, ``COCO_METRIC_NAMES``
        values : list of float, the matching ``COCOeval.stats``; -1 where pycocotools has nothing to
            measure (e.g. APs without small objects).
        """
        stats = self.evaluate(iou_type).stats
        return list(COCO_METRIC_NAMES), [float(v) for v in stats]

    def per_class_ap(self, iou=None, iou_type="bbox"):
        """(C,) float64 AP per class id, averaged over IoU .50:.95 (or at one ``iou`` such as 0.5),
        all areas, 100 detections, of boxes (or masks: ``iou_type="segm"``); ``nan`` for a class without
        ground truth."""
        coco_eval = self.evaluate(iou_type)
        precision = coco_eval.eval["precision"]  # (T IoUs, R recalls, K cats, A areas, M maxDets)
        if iou is not None:
            t = np.flatnonzero(np.isclose(coco_eval.params.iouThrs, iou))
            if t.size == 0:
                raise ValueError(f"COCOEvaluator.per_class_ap: iou {iou} is not one of "
                                 f"{list(np.round(coco_eval.params.iouThrs, 2))}.")
            precision = precision[t]
        cat_index = {c: k for k, c in enumerate(coco_eval.params.catIds)}
        out = np.full(len(self.category_ids), np.nan)
        for i, c in enumerate(self.category_ids):
            if c in cat_index:
                p = precision[:, :, cat_index[c], 0, -1]
                if (p > -1).any():
                    out[i] = p[p > -1].mean()
        return out
