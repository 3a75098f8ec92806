"""Box steps shared by the numpy references of the FPN two-stage ops (FPNProposal, RCNNDetection).

They mirror ``src/operators/common/bbox.h`` (``BoxDecodeLogClamped``, ``ClipBoxToImage``) operation
for operation in float32, centre ``(x0 + x1) * 0.5`` included, so that the references reproduce the
operators' boxes to the last bit or two and NMS decisions near the threshold agree.
``ssdkit.boxes.decode`` is the same coder written for readability (centre ``x0 + w / 2``, no clamp).
"""
import numpy as np

LOG_SIZE_CLAMP = np.float32(np.log(1000.0 / 16.0))
"""Detectron's upper clamp of decoded log-size deltas ``t_w * std_w``, ``t_h * std_h``."""


def _exp(x):
    # exp in float64 rounded to float32: agrees with glibc's expf (correctly rounded but in rare cases)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.exp(x.astype(np.float64)).astype(np.float32)


def decode_log_clamped(anchors, deltas, stds, max_log_size=LOG_SIZE_CLAMP):
    """Decode regressions against pixel anchors, log-size deltas clamped from above.

    Parameters
    ----------
    anchors : (..., 4) corner boxes ``(x0, y0, x1, y1)``
    deltas : (..., 4) regressions ``(t_x, t_y, t_w, t_h)``
    stds : 4 floats, the coder's standard deviations (variances)
    max_log_size : float, ``t_w * std_w`` and ``t_h * std_h`` above it are replaced by it (NaN stays)

    Returns
    -------
    (..., 4) float32 corner boxes, not clipped.
    """
    a = np.asarray(anchors, dtype=np.float32)
    t = np.asarray(deltas, dtype=np.float32)
    v = np.asarray(stds, dtype=np.float32)
    half = np.float32(0.5)
    with np.errstate(invalid="ignore", over="ignore"):
        aw, ah = a[..., 2] - a[..., 0], a[..., 3] - a[..., 1]
        ax, ay = (a[..., 0] + a[..., 2]) * half, (a[..., 1] + a[..., 3]) * half
        ox = t[..., 0] * v[0] * aw + ax
        oy = t[..., 1] * v[1] * ah + ay
        lw, lh = t[..., 2] * v[2], t[..., 3] * v[3]
        limit = np.float32(max_log_size)
        lw = np.where(lw > limit, limit, lw)
        lh = np.where(lh > limit, limit, lh)
        ow = _exp(lw) * aw * half
        oh = _exp(lh) * ah * half
        out = np.stack([ox - ow, oy - oh, ox + ow, oy + oh], axis=-1)
    return out.astype(np.float32)


def clip_to_image(boxes, height, width):
    """Clip corner boxes ``(..., 4)`` to ``[0, width] x [0, height]``; NaN stays NaN."""
    b = np.asarray(boxes, dtype=np.float32)
    hi = np.array([width, height, width, height], dtype=np.float32)
    with np.errstate(invalid="ignore"):
        out = np.where(b < 0, np.float32(0), np.where(b > hi, hi, b))
    return out.astype(np.float32)


def check_im_info(im_info):
    """Check the ``im_info (B, 3)`` input of an FPN operator, as the operators do.

    Parameters
    ----------
    im_info : (B, 3) rows ``[valid_height, valid_width, scale]``

    Returns
    -------
    (B, 3) float32 ``im_info``.

    Raises
    ------
    ValueError
        naming the first row whose valid height or width is NaN, inf or <= 0 (the operators raise
        an MXNet error with the same text: ``common/two_stage.h`` ``CheckImInfoValues``). The scale
        column is not checked.
    """
    im_info = np.asarray(im_info, dtype=np.float32)
    size = im_info[:, :2]
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(size) & (size > 0)).all(axis=1)
    if bad.any():
        b = int(np.flatnonzero(bad)[0])
        raise ValueError("im_info row %d = (%g, %g, %g) is not [valid_height, valid_width, scale] with a "
                         "finite positive height and width" % ((b,) + tuple(float(v) for v in im_info[b])))
    return im_info


def roi_images(rois, batch):
    """Image of every rois row (``common/two_stage.h`` ``RoiImage``, used by ProposalTarget and RCNNDetection).

    Parameters
    ----------
    rois : (R, 5) rows ``[batch_index, x0, y0, x1, y1]``
    batch : int, number of images

    Returns
    -------
    (R,) int64 image index; -1 where the batch index is not an integer in [0, batch) (NaN, 2.5, -1),
    a coordinate is NaN or inf, or the box has no positive width and height (padding, inverted).
    """
    rois = np.asarray(rois, dtype=np.float32).reshape(-1, 5)
    b = rois[:, 0]
    with np.errstate(invalid="ignore"):
        index_ok = (b >= 0) & (b < batch) & (np.floor(np.nan_to_num(b)) == b)
        box_ok = (np.all(np.isfinite(rois[:, 1:5]), axis=1)
                  & (rois[:, 3] > rois[:, 1]) & (rois[:, 4] > rois[:, 2]))
    return np.where(index_ok & box_ok, np.nan_to_num(b), -1).astype(np.int64)
