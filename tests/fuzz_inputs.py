"""Input corruption shared by the operators' fuzz tests (all functions modify their arrays in place)."""
import numpy as np


def corrupt_label_rows(rng, label, fraction, bad_classes, extra_kinds=()):
    """Damage about ``fraction`` of the valid rows of ``label (B, M, 5+)`` (``[cls, x0, y0, x1, y1, ...]``).

    Each chosen row gets one of: a non-finite coordinate, zero area, inverted corners, a class from
    ``bad_classes``, or one of ``extra_kinds`` (callables taking the row view), picked uniformly.
    """
    rows = label[:, :, 0] >= 0
    for b, r in zip(*np.nonzero(rows & (rng.random(rows.shape) < fraction))):
        kind = int(rng.integers(4 + len(extra_kinds)))
        if kind == 0:
            label[b, r, 1 + rng.integers(4)] = rng.choice([np.nan, np.inf, -np.inf])
        elif kind == 1:
            label[b, r, 3:5] = label[b, r, 1:3]                        # zero area
        elif kind == 2:
            label[b, r, 1:5] = label[b, r, [3, 4, 1, 2]]               # inverted
        elif kind == 3:
            label[b, r, 0] = rng.choice(bad_classes)
        else:
            extra_kinds[kind - 4](label[b, r])
    return label


def sprinkle(rng, arrays_and_values, every):
    """Overwrite about one element in ``every`` (at least one) of each array with one of its bad values.

    ``arrays_and_values``: pairs ``(array, values)``; the arrays must be contiguous (views are written).
    """
    for array, values in arrays_and_values:
        flat = array.reshape(-1)
        hits = rng.choice(flat.size, size=max(1, flat.size // every), replace=False)
        flat[hits] = rng.choice(values, size=hits.size)


def degenerate_anchors(rng, anchor):
    """Give a tenth of the anchors of ``anchor (1, N, 4)`` zero width and another tenth inverted corners."""
    n = anchor.shape[1]
    some = rng.choice(n, size=max(1, n // 10), replace=False)
    anchor[0, some, 2] = anchor[0, some, 0]                 # zero width
    some = rng.choice(n, size=max(1, n // 10), replace=False)
    anchor[0, some] = anchor[0, some][:, [2, 3, 0, 1]]      # inverted
