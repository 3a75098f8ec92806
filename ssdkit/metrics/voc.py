"""Pascal VOC detection metric: per-class average precision and mAP (VOC07 11-point or VOC12 area).

Matching follows the VOC devkit, image by image and class by class: detections are taken in
decreasing score; each one is assigned to the ground truth of its class it overlaps most; if that
IoU is at least ``iou_thresh`` the detection is

- ignored (neither true nor false positive) when that ground truth is ``difficult``,
- a true positive when that ground truth was not claimed by a higher-scoring detection,
- a false positive otherwise (a duplicate; it does not fall back to its second-best ground truth);

below the threshold it is a false positive. Recall is counted against the non-difficult ground truths.
A class without any non-difficult ground truth has AP ``nan`` and is left out of the mAP.

IoU convention
--------------
``box_offset`` is added to every width and height (``w = xmax - xmin + box_offset``):

- ``box_offset=0`` (default): continuous coordinates. Use it for normalised boxes, and for pixel boxes
  unless you need the official devkit number.
- ``box_offset=1``: the VOC devkit's integer-pixel convention, which GluonCV's ``VOCMApMetric`` and
  ``VOC07MApMetric`` also apply (they add 1 to xmax/ymax). Use it only with pixel coordinates; with it,
  pixel boxes give exactly the devkit's / GluonCV's numbers.

Ties in score are broken by arrival order (the earlier row or image first).
"""
import numpy as np

_ELEVEN_POINTS = np.arange(0.0, 1.1, 0.1)
"""The VOC07 recall thresholds, built exactly as the Python ports of the devkit (py-faster-rcnn's
``voc_eval``, GluonCV) build them, ``0.30000000000000004`` and all: a recall of exactly 0.3 does not
reach the fourth threshold there, nor here."""


def _as_numpy(x):
    """An ``mx.nd.NDArray`` or array-like -> numpy array (no copy for numpy input)."""
    if hasattr(x, "asnumpy"):
        x = x.asnumpy()
    return np.asarray(x)


def per_image(batch, width):
    """A ``(B, N, width)`` array (numpy or NDArray) or a list of B ``(N_i, width)`` arrays -> list of B
    2-D numpy arrays; ``width=None`` keeps each array's own last dimension."""
    if hasattr(batch, "asnumpy"):
        batch = batch.asnumpy()
    out = []
    for item in batch:
        item = _as_numpy(item)
        cols = width if width is not None else (item.shape[-1] if item.ndim else 0)
        out.append(item.reshape(-1, cols) if item.size else np.zeros((0, max(cols, 5))))
    return out


def pairwise_iou(a, b, box_offset=0.0):
    """IoU of every box in ``a`` with every box in ``b``, in float64.

    Parameters
    ----------
    a : (N, 4) corners ``(xmin, ymin, xmax, ymax)``
    b : (M, 4) corners
    box_offset : float
        Added to widths, heights and intersection sides (1 for the VOC devkit pixel convention).

    Returns
    -------
    (N, M) float64 IoU; 0 where the boxes do not overlap or the union is not positive.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + box_offset
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + box_offset
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area_a = (a[:, 2] - a[:, 0] + box_offset) * (a[:, 3] - a[:, 1] + box_offset)
    area_b = (b[:, 2] - b[:, 0] + box_offset) * (b[:, 3] - b[:, 1] + box_offset)
    union = area_a[:, None] + area_b[None, :] - inter
    safe = np.where(union > 0, union, 1.0)
    return np.where(union > 0, inter / safe, 0.0)


def match_image(det_cls, det_scores, det_boxes, gt_cls, gt_boxes, gt_difficult, *,
                iou_thresh=0.5, box_offset=0.0):
    """VOC matching of one image's detections against its ground truths (all classes at once).

    Parameters
    ----------
    det_cls : (K,) int class id of each detection (no padding rows)
    det_scores : (K,) float confidence
    det_boxes : (K, 4) corners
    gt_cls : (M,) int class id of each ground truth (no padding rows)
    gt_boxes : (M, 4) corners
    gt_difficult : (M,) bool
    iou_thresh : float
        Minimum IoU for a match.
    box_offset : float
        See the module docstring.

    Returns
    -------
    outcome : (K,) int8, in the input order: 1 true positive, 0 false positive, -1 ignored
        (its best match is a difficult ground truth).
    """
    num_det = det_cls.shape[0]
    outcome = np.zeros(num_det, dtype=np.int8)
    if num_det == 0 or gt_cls.shape[0] == 0:
        return outcome
    order = np.argsort(-det_scores, kind="stable")
    iou = pairwise_iou(det_boxes[order], gt_boxes, box_offset)
    iou[det_cls[order][:, None] != gt_cls[None, :]] = -1.0  # only same-class pairs may match
    best = iou.argmax(axis=1)
    matched = iou[np.arange(num_det), best] >= iou_thresh
    sorted_outcome = np.zeros(num_det, dtype=np.int8)
    difficult = matched & gt_difficult[best]
    sorted_outcome[difficult] = -1
    # Among the detections whose best match is a given non-difficult ground truth, only the first
    # in score order is a true positive; np.unique returns first occurrences.
    claim = np.flatnonzero(matched & ~difficult)
    _, first = np.unique(best[claim], return_index=True)
    sorted_outcome[claim[first]] = 1
    outcome[order] = sorted_outcome
    return outcome


def average_precision(recall, precision, *, use_07_metric):
    """Area under a precision/recall curve, VOC style.

    Parameters
    ----------
    recall : (N,) nondecreasing recall after each detection, in decreasing-score order
    precision : (N,) precision after each detection
    use_07_metric : bool
        True: mean of the best precision at recall >= 0, 0.1, ..., 1 (VOC07 11-point).
        False: exact area under the monotone (right-maximum) precision envelope (VOC10-12).

    Returns
    -------
    float AP in [0, 1].
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.nan_to_num(np.asarray(precision, dtype=np.float64))
    if use_07_metric:
        if recall.size == 0:
            return 0.0
        envelope = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at or after i
        first = np.searchsorted(recall, _ELEVEN_POINTS, side="left")  # first index with rec >= t
        reached = first < recall.size
        return float(np.sum(envelope[first[reached]]) / 11.0)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


class VOCMeanAP:
    """Accumulating Pascal VOC mAP.

    Parameters
    ----------
    class_names : sequence of str
        Name of each 0-based class id; its length is the number of classes.
    iou_thresh : float
        IoU needed for a true positive (0.5 in VOC).
    use_07_metric : bool
        True for the VOC07 11-point AP, False for the VOC12 area under the curve.
    box_offset : float
        0 for continuous (normalised or pixel) coordinates, 1 for the devkit's integer-pixel widths
        (matches GluonCV's metrics exactly); see the module docstring.

    Examples
    --------
    >>> metric = VOCMeanAP(["cat", "dog"], use_07_metric=False)
    >>> metric.update(detections, labels)          # once per batch
    >>> names, values = metric.get()               # [..., "mAP"], [AP_cat, AP_dog, mAP]
    """

    def __init__(self, class_names, *, iou_thresh=0.5, use_07_metric=True, box_offset=0.0):
        self.class_names = tuple(str(n) for n in class_names)
        self.iou_thresh = float(iou_thresh)
        self.use_07_metric = bool(use_07_metric)
        self.box_offset = float(box_offset)
        self.reset()

    @property
    def num_classes(self):
        return len(self.class_names)

    def reset(self):
        """Forget every update."""
        self._n_pos = np.zeros(self.num_classes, dtype=np.int64)
        self._cls, self._scores, self._tp = [], [], []

    def update(self, detections, labels):
        """Add one batch.

        Parameters
        ----------
        detections : (B, K, 6) rows ``[cls_id, score, xmin, ymin, xmax, ymax]``; rows with
            ``cls_id < 0`` are empty. A list of B ``(K_i, 6)`` arrays is accepted too.
        labels : (B, M, 5) or (B, M, 6) rows ``[cls, xmin, ymin, xmax, ymax(, difficult)]``, padded with
            rows whose ``cls < 0``; the same coordinate frame as ``detections``. A list of B ``(M_i, 5|6)``
            arrays is accepted too.
        """
        detections = per_image(detections, 6)
        labels = per_image(labels, None)
        if len(detections) != len(labels):
            raise ValueError(f"VOCMeanAP.update: {len(detections)} detection images but "
                             f"{len(labels)} label images; pass one entry per image for both.")
        for det, gt in zip(detections, labels):
            det = det[det[:, 0] >= 0]
            gt = gt[gt[:, 0] >= 0]
            det_cls = det[:, 0].astype(np.int64)
            gt_cls = gt[:, 0].astype(np.int64)
            for name, ids in (("detection", det_cls), ("label", gt_cls)):
                if ids.size and ids.max() >= self.num_classes:
                    raise ValueError(f"VOCMeanAP.update: {name} class id {ids.max()} but only "
                                     f"{self.num_classes} class names were given.")
            difficult = gt[:, 5] > 0 if gt.shape[1] > 5 else np.zeros(len(gt), dtype=bool)
            self._n_pos += np.bincount(gt_cls[~difficult], minlength=self.num_classes)
            outcome = match_image(det_cls, det[:, 1], det[:, 2:6], gt_cls, gt[:, 1:5], difficult,
                                  iou_thresh=self.iou_thresh, box_offset=self.box_offset)
            keep = outcome >= 0  # ignored detections change neither recall nor precision
            self._cls.append(det_cls[keep])
            self._scores.append(det[keep, 1].astype(np.float64))
            self._tp.append(outcome[keep].astype(bool))

    def pr_curves(self):
        """Precision/recall curve of every class, from all updates so far.

        Returns
        -------
        list of ``(recall, precision)`` per class id, each a pair of ``(N_c,)`` float64 arrays over the
        class's N_c counted detections in decreasing score; ``None`` for a class with no non-difficult
        ground truth.
        """
        cls = np.concatenate(self._cls) if self._cls else np.zeros(0, dtype=np.int64)
        scores = np.concatenate(self._scores) if self._scores else np.zeros(0)
        tp = np.concatenate(self._tp) if self._tp else np.zeros(0, dtype=bool)
        # One sort for all classes: by class, then decreasing score, then arrival order.
        order = np.lexsort((np.arange(cls.size), -scores, cls))
        cls, tp = cls[order], tp[order]
        bounds = np.searchsorted(cls, np.arange(self.num_classes + 1))
        curves = []
        for c in range(self.num_classes):
            if self._n_pos[c] == 0:
                curves.append(None)
                continue
            hits = tp[bounds[c]:bounds[c + 1]]
            tp_cum = np.cumsum(hits, dtype=np.float64)
            rank = np.arange(1, hits.size + 1, dtype=np.float64)
            curves.append((tp_cum / self._n_pos[c], tp_cum / rank))
        return curves

    def average_precisions(self):
        """(C,) float64 AP per class id; ``nan`` for a class with no non-difficult ground truth."""
        return np.array([np.nan if curve is None else
                         average_precision(*curve, use_07_metric=self.use_07_metric)
                         for curve in self.pr_curves()], dtype=np.float64)

    def get(self):
        """Per-class AP and their mean.

        Returns
        -------
        names : list of str, the class names then ``"mAP"``
        values : list of float, AP per class (``nan`` without ground truth) then the mean over classes
            that have ground truth (``nan`` if none has).
        """
        aps = self.average_precisions()
        valid = ~np.isnan(aps)
        mean_ap = float(aps[valid].mean()) if valid.any() else float("nan")
        return list(self.class_names) + ["mAP"], [float(v) for v in aps] + [mean_ap]
