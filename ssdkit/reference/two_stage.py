"""Input conventions shared by the numpy references of the FPN two-stage operators.

They mirror ``src/operators/common/two_stage.h`` and ``common/ground_truth.h``: the ``im_info`` check,
which ``rois`` rows belong to which image, which ``label`` rows are ground truths. The box coder and
the clip to the image are :mod:`ssdkit.boxes` (``decode(..., max_log_size=LOG_SIZE_CLAMP)``,
``clip_to_image``).
"""
import numpy as np


def ground_truth_rows(label, class_limit=np.inf):
    """The label rows of one image that are ground truths (``common/ground_truth.h``).

    Parameters
    ----------
    label : (M, W >= 5) rows ``[cls, x0, y0, x1, y1, ...]``, padded with rows of class -1
    class_limit : classes must be in ``[0, class_limit)``; ``inf`` accepts any finite id >= 0

    Returns
    -------
    (G,) int indices of the rows before the first padding row whose class is in range and whose
    box is finite with ``x1 > x0`` and ``y1 > y0``.
    """
    rows = []
    for r, row in enumerate(np.asarray(label, dtype=np.float32)):
        if row[0] == -1:
            break
        box = row[1:5]
        if (0 <= row[0] < class_limit and np.all(np.isfinite(box))
                and box[2] > box[0] and box[3] > box[1]):
            rows.append(r)
    return np.asarray(rows, dtype=np.int64)


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
