"""Shared by the target-operator fuzz tests: corrupt some ground-truth rows of a label batch in place."""
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
