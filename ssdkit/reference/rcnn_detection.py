"""numpy reference of the RCNNDetection operator (see ``src/operators/rcnn_detection/rcnn_detection-inl.h``).

Per image (the roi rows whose batch index is the image, :func:`ssdkit.reference.two_stage.roi_images`)
and per foreground class: candidates with a finite score > ``score_threshold``, class-specific decode (log-size clamp),
clip to ``im_info`` (unless ``clip=False``), NaN boxes dropped, greedy NMS; then the best ``max_detections`` of all classes
(ties by class id, then roi row), optionally divided by the image size, padded with rows of -1.
"""
import numpy as np

from ssdkit.boxes import LOG_SIZE_CLAMP, clip_to_image, decode
from ssdkit.reference.nms import nms, rank_descending
from ssdkit.reference.two_stage import check_im_info, roi_images


def rcnn_detection(rois, cls_prob, bbox_pred, im_info, *, stds=(0.1, 0.1, 0.2, 0.2), score_threshold=0.05,
                   nms_threshold=0.5, max_detections=100, normalize=True, clip=True):
    """Final detections of a two-stage detector.

    Parameters
    ----------
    rois : (M, 5) ``[batch_index, x0, y0, x1, y1]`` pixel rois
    cls_prob : (M, C+1) class probabilities, channel 0 the background
    bbox_pred : (M, 4*(C+1)) class-specific regressions
    im_info : (B, 3) ``[valid_height, valid_width, scale]``; a NaN, inf or non-positive height or width is a
        ValueError (:func:`ssdkit.reference.two_stage.check_im_info`), as it is an error of the operator
    other arguments : as the operator's attributes

    Returns
    -------
    (B, max_detections, 6) float32 rows ``[cls_id, score, x0, y0, x1, y1]``, rows of -1 as padding.
    """
    rois = np.asarray(rois, dtype=np.float32)
    prob = np.asarray(cls_prob, dtype=np.float32)
    m, channels = prob.shape
    deltas = np.asarray(bbox_pred, dtype=np.float32).reshape(m, channels, 4)
    im_info = check_im_info(im_info)
    batch = im_info.shape[0]
    k = max_detections
    out = np.full((batch, k, 6), -1, dtype=np.float32)
    images = roi_images(rois, batch)
    for b in range(batch):
        rows = np.flatnonzero(images == b)
        height, width = im_info[b, 0], im_info[b, 1]
        table = []  # per class: (kept, 6) rows in pixels, best first
        for c in range(channels - 1):
            scores = prob[rows, c + 1]
            with np.errstate(invalid="ignore"):
                cand = rows[np.isfinite(scores) & (scores > np.float32(score_threshold))]
            boxes = decode(rois[cand, 1:], deltas[cand, c + 1], stds, max_log_size=LOG_SIZE_CLAMP)
            if clip:
                boxes = clip_to_image(boxes, height, width)
            ok = ~np.isnan(boxes).any(axis=1)
            cand, boxes = cand[ok], boxes[ok]
            keep = nms(boxes, prob[cand, c + 1], nms_threshold, max_keep=k)
            rows_c = np.empty((len(keep), 6), dtype=np.float32)
            rows_c[:, 0] = c
            rows_c[:, 1] = prob[cand[keep], c + 1]
            rows_c[:, 2:] = boxes[keep]
            table.append(rows_c)
        table = np.concatenate(table) if table else np.zeros((0, 6), np.float32)
        best = table[rank_descending(table[:, 1])[:k]]  # stable: ties stay in class, then roi order
        if normalize:
            best[:, 2:] /= np.array([width, height, width, height], dtype=np.float32)
        out[b, :len(best)] = best
    return out
