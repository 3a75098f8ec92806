"""Drawing detections on images (OpenCV), precision/recall plots (matplotlib, Agg) and AP tables.

Images are OpenCV's ``(H, W, 3)`` uint8 BGR arrays. Plots use ``matplotlib.figure.Figure`` with the
Agg canvas directly, so nothing here touches pyplot's global state or needs a display.
"""
import math

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def class_colors(num_classes):
    """One distinct colour per class id: hues evenly spaced around the HSV circle.

    Returns
    -------
    (C, 3) uint8 BGR colours; class ``i`` is ``colors[i]``.
    """
    hues = (np.arange(num_classes) * 180 // max(num_classes, 1)).astype(np.uint8)
    hsv = np.stack([hues, np.full_like(hues, 255), np.full_like(hues, 255)], axis=-1)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2BGR)[0]


def _as_numpy(x):
    if hasattr(x, "asnumpy"):
        x = x.asnumpy()
    return np.asarray(x)


def _draw_boxes(image, cls, boxes, scores, *, class_names, normalized, colors, thickness, font_scale):
    """Draw ``(N,)`` classes, ``(N, 4)`` corner boxes and optional ``(N,)`` scores on a copy of image."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"draw: expected an (H, W, 3) uint8 BGR image, got {image.shape} {image.dtype}; "
                         "convert with np.uint8 / cv2.cvtColor first.")
    canvas = np.ascontiguousarray(image).copy()
    height, width = canvas.shape[:2]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if normalized:
        boxes = boxes * np.array([width, height, width, height], dtype=np.float64)
    pixels = np.round(boxes).astype(np.int64)
    if colors is None:
        num = int(cls.max()) + 1 if cls.size else 1
        num = max(num, len(class_names) if class_names is not None else 0)
        colors = class_colors(num)
    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i in range(len(cls)):
        c = int(cls[i])
        color = tuple(int(v) for v in colors[c % len(colors)])
        x0, y0, x1, y1 = (int(v) for v in pixels[i])
        cv2.rectangle(canvas, (x0, y0), (x1, y1), color, thickness)
        name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
        text = name if scores is None else f"{name} {scores[i]:.2f}"
        (tw, th), baseline = cv2.getTextSize(text, font, font_scale, 1)
        # Label above the box, or just inside its top when there is no room above.
        top = y0 - th - baseline if y0 - th - baseline >= 0 else y0
        cv2.rectangle(canvas, (x0, top), (x0 + tw, top + th + baseline), color, cv2.FILLED)
        luminance = 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2]
        ink = (0, 0, 0) if luminance > 128 else (255, 255, 255)
        cv2.putText(canvas, text, (x0, top + th), font, font_scale, ink, 1, cv2.LINE_AA)
    return canvas


def draw_masks(image, masks, classes, *, colors=None, alpha=0.5):
    """Fill instance masks translucently in their class colours.

    Parameters
    ----------
    image : (H, W, 3) uint8 BGR image (not modified).
    masks : (N, H, W) bool, drawn in order (later ones on top where they overlap)
    classes : (N,) int class id of each mask
    colors : (C, 3) uint8 BGR, optional; ``class_colors`` by default
    alpha : float in [0, 1], weight of the colour in a mask pixel (``(1 - alpha) image + alpha colour``)

    Returns
    -------
    (H, W, 3) uint8 BGR copy of the image with the masks filled.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"draw_masks: expected an (H, W, 3) uint8 BGR image, got {image.shape} {image.dtype}.")
    masks = np.asarray(masks, dtype=bool)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    if masks.ndim != 3 or masks.shape[1:] != image.shape[:2] or len(masks) != len(classes):
        raise ValueError(f"draw_masks: masks {masks.shape} must be (N, H, W) with the image's H, W "
                         f"{image.shape[:2]} and one class per mask ({len(classes)} given).")
    if colors is None:
        colors = class_colors(int(classes.max()) + 1 if classes.size else 1)
    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    canvas = np.ascontiguousarray(image).copy()
    for mask, c in zip(masks, classes):
        ys, xs = np.nonzero(mask)
        color = colors[c % len(colors)].astype(np.float32)
        canvas[ys, xs] = np.round((1.0 - alpha) * canvas[ys, xs] + alpha * color).astype(np.uint8)
    return canvas


def draw_detections(image, detections, *, class_names=None, score_thresh=0.5, normalized=True,
                    colors=None, thickness=2, font_scale=0.5, masks=None, mask_alpha=0.5):
    """Draw labelled detection boxes (and their instance masks).

    Parameters
    ----------
    image : (H, W, 3) uint8 BGR image (not modified).
    detections : (K, 6) rows ``[cls_id, score, xmin, ymin, xmax, ymax]``; rows with ``cls_id < 0`` or
        ``score < score_thresh`` are skipped. Boxes are normalised to [0, 1] if ``normalized`` else pixels.
    class_names : sequence of str, optional
        Label text per class id (the id itself otherwise).
    colors : (C, 3) uint8 BGR, optional
        Colour per class id; ``class_colors`` by default.
    thickness : int
        Box line width in pixels.
    font_scale : float
        OpenCV font scale of the ``"name 0.87"`` labels.
    masks : (K, H, W) bool, optional
        Instance mask of each detection row (in the image's pixels), filled translucently in the class
        colour (:func:`draw_masks`) under the boxes; skipped rows' masks are not drawn.
    mask_alpha : float, the fill's colour weight

    Returns
    -------
    (H, W, 3) uint8 BGR copy of the image with the boxes, highest score drawn last (on top).
    """
    det = _as_numpy(detections).reshape(-1, 6)
    keep = np.flatnonzero((det[:, 0] >= 0) & (det[:, 1] >= score_thresh))
    keep = keep[np.argsort(det[keep, 1], kind="stable")]
    det = det[keep]
    cls = det[:, 0].astype(np.int64)
    if colors is None:
        num = max(int(cls.max()) + 1 if cls.size else 1, len(class_names) if class_names is not None else 0)
        colors = class_colors(num)
    if masks is not None:
        masks = _as_numpy(masks)
        rows = len(_as_numpy(detections).reshape(-1, 6))
        if len(masks) != rows:
            raise ValueError(f"draw_detections: {len(masks)} masks for {rows} detection rows; give one mask per "
                             "row.")
        image = draw_masks(image, masks[keep], cls, colors=colors, alpha=mask_alpha)
    return _draw_boxes(image, cls, det[:, 2:6], det[:, 1], class_names=class_names,
                       normalized=normalized, colors=colors, thickness=thickness, font_scale=font_scale)


def draw_labels(image, labels, *, class_names=None, normalized=True, colors=None, thickness=2,
                font_scale=0.5):
    """Draw ground-truth boxes with their class names.

    Parameters
    ----------
    image : (H, W, 3) uint8 BGR image (not modified).
    labels : (M, 5|6) rows ``[cls, xmin, ymin, xmax, ymax(, difficult)]``; rows with ``cls < 0`` are
        padding.
    Other parameters as in ``draw_detections``.

    Returns
    -------
    (H, W, 3) uint8 BGR copy with the boxes drawn.
    """
    lab = _as_numpy(labels)
    lab = lab.reshape(-1, lab.shape[-1])
    lab = lab[lab[:, 0] >= 0]
    return _draw_boxes(image, lab[:, 0].astype(np.int64), lab[:, 1:5], None, class_names=class_names,
                       normalized=normalized, colors=colors, thickness=thickness, font_scale=font_scale)


def save_detections(path, image, detections, **kwargs):
    """``draw_detections`` then write the result to ``path`` (PNG for a ``.png`` name); returns path.

    Keyword arguments go to ``draw_detections``.
    """
    canvas = draw_detections(image, detections, **kwargs)
    if not cv2.imwrite(str(path), canvas):
        raise OSError(f"save_detections: OpenCV could not write {path}; check the folder exists and the "
                      "extension is an image format (.png, .jpg).")
    return path


def pr_curve_figure(curves, *, class_names=None, aps=None, title=None, size=(6.0, 5.0), dpi=100):
    """A matplotlib Figure with one precision/recall line per class.

    Parameters
    ----------
    curves : list of ``(recall, precision)`` pairs of ``(N_c,)`` arrays, ``None`` for a class to skip
        (what ``VOCMeanAP.pr_curves()`` returns).
    class_names : sequence of str, optional
        Legend names per class (ids otherwise).
    aps : (C,) float, optional
        AP per class, shown in the legend.
    title : str, optional
    size : (width, height) in inches
    dpi : int

    Returns
    -------
    matplotlib.figure.Figure with an Agg canvas and one Axes (recall on x, precision on y, both [0, 1]).
    """
    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for c, curve in enumerate(curves):
        if curve is None:
            continue
        recall, precision = (np.asarray(v, dtype=np.float64) for v in curve)
        name = class_names[c] if class_names is not None else str(c)
        if aps is not None and not math.isnan(aps[c]):
            name = f"{name} (AP {aps[c]:.3f})"
        ax.plot(recall, np.nan_to_num(precision), label=name, linewidth=1.5)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    if ax.lines:
        ax.legend(loc="lower left", fontsize="small")
    return fig


def plot_pr_curves(path, curves, **kwargs):
    """Save ``pr_curve_figure(curves, **kwargs)`` to ``path`` (format from the extension); returns path."""
    fig = pr_curve_figure(curves, **kwargs)
    fig.savefig(str(path), dpi=fig.dpi)
    return path


def format_ap_table(names, values, *, digits=4):
    """A plain-text table of AP values, e.g. from ``VOCMeanAP.get()``.

    Parameters
    ----------
    names : sequence of str, class names with the summary (e.g. ``"mAP"``) last
    values : sequence of float, same length; ``nan`` (no ground truth) is shown as ``-``
    digits : int, decimals shown

    Returns
    -------
    str: one ``name  value`` line per class, a rule, then the summary line.
    """
    if len(names) != len(values) or not names:
        raise ValueError(f"format_ap_table: {len(names)} names for {len(values)} values; give one name per "
                         "value, the summary last.")
    cells = ["-" if math.isnan(v) else f"{v:.{digits}f}" for v in values]
    name_w = max(len("class"), *(len(n) for n in names))
    value_w = max(len("AP"), *(len(c) for c in cells))
    rule = f"{'-' * name_w}  {'-' * value_w}"
    lines = [f"{'class':<{name_w}}  {'AP':>{value_w}}", rule]
    lines += [f"{n:<{name_w}}  {c:>{value_w}}" for n, c in zip(names[:-1], cells[:-1])]
    lines += [rule, f"{names[-1]:<{name_w}}  {cells[-1]:>{value_w}}"]
    return "\n".join(lines)
