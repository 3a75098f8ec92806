"""ProposalTarget: a hand-computed fixture, the numpy reference (candidate kinds, labels and
class-specific box targets exactly; sampling by its counts and order), ground truths as proposals,
padding and batch routing, reproducibility under mx.random.seed, robustness, errors."""
import math

import mxnet as mx
import numpy as np
import pytest

import op_cases

from fuzz_inputs import corrupt_label_rows

import ssdkit  # noqa: F401  (registers mx.nd.ProposalTarget)
from ssdkit import ops
from ssdkit.reference.proposal_target import (BACKGROUND, FOREGROUND, image_candidates, proposal_target,
                                              slot_mask)

BOX_TOL = dict(rtol=1e-5, atol=1e-5)


def run_op(rois, label, **kwargs):
    """Our operator on numpy inputs -> (rois_out, labels, box_target, box_weight) numpy arrays."""
    out = mx.nd.ProposalTarget(mx.nd.array(rois), mx.nd.array(label), **kwargs)
    return tuple(o.asnumpy() for o in out)


def random_labels(rng, batch, max_gt, size, num_classes, counts=None):
    """(B, M, 6) pixel labels padded with -1 (6th column: difficult)."""
    label = -np.ones((batch, max_gt, 6), dtype=np.float32)
    for b in range(batch):
        k = int(rng.integers(0, max_gt + 1)) if counts is None else counts[b]
        centre = rng.uniform(0.1, 0.9, (k, 2)) * size
        wh = rng.uniform(16, 0.5 * size, (k, 2))
        label[b, :k, 0] = rng.integers(0, num_classes, k)
        label[b, :k, 1:5] = np.concatenate([centre - wh / 2, centre + wh / 2], axis=1)
        label[b, :k, 5] = rng.integers(0, 2, k)
    return label


def random_rois(rng, label, per_image, size, padding=0.2):
    """(B * per_image, 5) proposals: jittered ground truths, random boxes and zero-area padding rows."""
    batch = label.shape[0]
    rows = []
    for b in range(batch):
        gts = label[b, label[b, :, 0] >= 0, 1:5]
        for _ in range(per_image):
            u = rng.random()
            if u < padding:
                rows.append([b, 0, 0, 0, 0])
            elif u < 0.6 and len(gts):
                g = gts[rng.integers(len(gts))]
                wh = g[2:] - g[:2]
                jitter = rng.normal(0, 0.15, 4) * np.concatenate([wh, wh])
                with np.errstate(invalid="ignore"):
                    rows.append([b, *(g + jitter)])
            else:
                xy = rng.uniform(0, size, 2)
                wh = rng.uniform(4, size / 2, 2)
                rows.append([b, *xy, *(xy + wh)])
    rois = np.asarray(rows, dtype=np.float32)
    rng.shuffle(rois)            # images interleaved: routing is by the batch index column
    return rois


def check_against_reference(got, rois, label, num_classes, batch_rois=512, fg_fraction=0.25, **kwargs):
    """Every output row is a candidate of the right kind with the reference's label and targets;
    counts and order follow the sampling rule."""
    rois_out, labels, box_target, box_weight = got
    batch = label.shape[0]
    width = 4 * (num_classes + 1)
    assert rois_out.shape == (batch * batch_rois, 5) and labels.shape == (batch * batch_rois,)
    assert box_target.shape == box_weight.shape == (batch * batch_rois, width)
    for b in range(batch):
        rows = slice(b * batch_rois, (b + 1) * batch_rois)
        boxes, kinds, ref_labels, ref_targets = image_candidates(rois, label, b, num_classes, **kwargs)
        n_fg = min((kinds == FOREGROUND).sum(), int(batch_rois * fg_fraction))
        n_bg = min((kinds == BACKGROUND).sum(), batch_rois - n_fg)
        out_boxes, out_labels = rois_out[rows, 1:5], labels[rows]
        np.testing.assert_array_equal(rois_out[rows, 0], b)
        np.testing.assert_array_equal(out_labels[n_fg + n_bg:], -1)
        np.testing.assert_array_equal(out_boxes[n_fg + n_bg:], 0)
        np.testing.assert_array_equal(box_target[rows][n_fg + n_bg:], 0)
        assert (out_labels[:n_fg] > 0).all() and (out_labels[n_fg:n_fg + n_bg] == 0).all()
        used = np.zeros(len(boxes), bool)
        last = {FOREGROUND: -1, BACKGROUND: -1}
        for i in range(n_fg + n_bg):
            kind = FOREGROUND if i < n_fg else BACKGROUND
            # the first unused candidate of that kind with this box (rows are in candidate order)
            same = np.flatnonzero(np.all(boxes == out_boxes[i], axis=1) & (kinds == kind) & ~used)
            same = same[same > last[kind]]
            assert len(same), "row %d of image %d is not a %s candidate" % (i, b, kind)
            j = same[0]
            used[j] = True
            last[kind] = j
            assert out_labels[i] == ref_labels[j]
            np.testing.assert_allclose(box_target[rows][i], ref_targets[j], **BOX_TOL)
        np.testing.assert_array_equal(box_weight[rows][:n_fg], slot_mask(out_labels[:n_fg], num_classes))
        np.testing.assert_array_equal(box_weight[rows][n_fg:], 0)
    return rois_out


# ---------------------------------------------------------------------------------------------
# Hand-computed fixture
# ---------------------------------------------------------------------------------------------

HAND_LABEL = -np.ones((2, 3, 5), dtype=np.float32)
HAND_LABEL[0, 0] = [2, 0, 0, 10, 10]
HAND_LABEL[0, 1] = [0, 20, 20, 40, 40]
HAND_ROIS = np.array([[0, 0, 0, 10, 10],      # IoU 1 with gt 0 -> fg, class 2
                      [0, 0, 0, 10, 20],      # IoU 0.5 with gt 0 -> fg (>= 0.5)
                      [1, 0, 0, 10, 10],      # image 1 (no ground truth) -> background there
                      [0, 20, 20, 40, 30],    # IoU 0.5 with gt 1 -> fg, class 0
                      [0, 0, 0, 10, 30],      # IoU 1/3 with gt 0 -> bg
                      [0, 5, 5, 5, 9],        # zero area -> ignored
                      [0, 50, 50, 60, 60]],   # IoU 0 -> bg
                     dtype=np.float32)


def test_hand_fixture():
    rois, labels, target, weight = run_op(HAND_ROIS, HAND_LABEL, num_classes=3, batch_images=2,
                                          batch_rois=8, fg_fraction=0.75)
    # image 0: fg rois 0, 1, 3, then the two ground truths; bg rois 4 and 6; one padding row
    np.testing.assert_array_equal(rois[:8], [[0, 0, 0, 10, 10], [0, 0, 0, 10, 20], [0, 20, 20, 40, 30],
                                             [0, 0, 0, 10, 10], [0, 20, 20, 40, 40], [0, 0, 0, 10, 30],
                                             [0, 50, 50, 60, 60], [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(labels[:8], [3, 3, 1, 3, 1, 0, 0, -1])
    # image 1: its one roi is background, the rest padding
    np.testing.assert_array_equal(rois[8:], [[1, 0, 0, 10, 10]] + [[1, 0, 0, 0, 0]] * 7)
    np.testing.assert_array_equal(labels[8:], [0] + [-1] * 7)
    t = target.reshape(16, 4, 4)
    # roi 1: centre (5, 10), 10x20 -> gt 0: centre (5, 5), 10x10, stds (0.1, 0.1, 0.2, 0.2)
    np.testing.assert_allclose(t[1, 3], [0, -2.5, 0, math.log(0.5) / 0.2], rtol=1e-5, atol=1e-6)
    # roi 3: centre (30, 25), 20x10 -> gt 1: centre (30, 30), 20x20
    np.testing.assert_allclose(t[2, 1], [0, 5, 0, math.log(2) / 0.2], rtol=1e-5, atol=1e-6)
    t_others = t.copy()
    t_others[1, 3] = 0
    t_others[2, 1] = 0
    np.testing.assert_allclose(t_others, 0, atol=1e-6)       # exact matches encode to 0
    w = weight.reshape(16, 4, 4)[..., 0]
    np.testing.assert_array_equal(w[:5], [[0, 0, 0, 1], [0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0]])
    np.testing.assert_array_equal(w[5:], 0)
    check_against_reference((rois, labels, target, weight), HAND_ROIS, HAND_LABEL, 3, batch_rois=8,
                            fg_fraction=0.75)


def test_hand_fixture_thresholds_and_no_gt_proposals():
    # bg_thresh_lo 0.1 drops roi 6 (IoU 0) and image 1's roi; without ground truths as proposals
    # the foregrounds are rois 0, 1, 3 only.
    rois, labels, _, _ = run_op(HAND_ROIS, HAND_LABEL, num_classes=3, batch_rois=8, fg_fraction=0.75,
                                bg_thresh_lo=0.1, add_gt_as_proposals=False)
    np.testing.assert_array_equal(labels, [3, 3, 1, 0, -1, -1, -1, -1] + [-1] * 8)
    np.testing.assert_array_equal(rois[3], [0, 0, 0, 10, 30])
    # fg_thresh above 0.5: rois 1 and 3 (IoU 0.5) are neither fg nor bg (bg_thresh_hi 0.5)
    _, labels, _, _ = run_op(HAND_ROIS, HAND_LABEL, num_classes=3, batch_rois=8, fg_fraction=0.75,
                             fg_thresh=0.6, add_gt_as_proposals=False)
    np.testing.assert_array_equal(labels[:8], [3, 0, 0, -1, -1, -1, -1, -1])


def test_ground_truths_are_added_as_proposals():
    # Every roi is padding: image 0's foregrounds are its ground truths, with zero box targets.
    rois = np.array([[0, 0, 0, 0, 0], [1, 3, 3, 3, 3]], dtype=np.float32)
    out_rois, labels, target, weight = run_op(rois, HAND_LABEL, num_classes=3, batch_rois=8)
    np.testing.assert_array_equal(labels, [3, 1] + [-1] * 14)          # int(8 * 0.25) = 2 fg
    np.testing.assert_array_equal(out_rois[:2], [[0, 0, 0, 10, 10], [0, 20, 20, 40, 40]])
    np.testing.assert_array_equal(target, 0)
    np.testing.assert_array_equal(weight[0].reshape(4, 4)[:, 0], [0, 0, 0, 1])
    _, labels, _, _ = run_op(rois, HAND_LABEL, num_classes=3, batch_rois=8, add_gt_as_proposals=0)
    np.testing.assert_array_equal(labels, -1)
    # one foreground allowed: one of the two ground truths, the other is not a background
    _, labels, _, _ = run_op(rois, HAND_LABEL, num_classes=3, batch_rois=4)
    assert labels[0] in (1, 3) and (labels[1:] == -1).all()


def test_batch_index_routing_and_invalid_rows():
    label = HAND_LABEL.copy()
    label[1, 0] = [1, 100, 100, 140, 150]
    good = np.array([[1, 100, 100, 140, 150], [0, 0, 0, 10, 10]], dtype=np.float32)
    bad = np.array([[2, 0, 0, 10, 10], [-1, 0, 0, 10, 10], [0.5, 0, 0, 10, 10], [np.nan, 0, 0, 10, 10],
                    [np.inf, 0, 0, 10, 10], [0, 0, 0, np.nan, 10], [0, -np.inf, 0, 10, 10],
                    [1, 140, 100, 100, 150], [0, 5, 5, 5, 9]], dtype=np.float32)
    kwargs = dict(num_classes=3, batch_rois=16, fg_fraction=0.5, add_gt_as_proposals=False)
    clean = run_op(good, label, **kwargs)
    dirty = run_op(np.concatenate([bad[:4], good[:1], bad[4:], good[1:]]), label, **kwargs)
    for a, b in zip(clean, dirty):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(clean[1][[0, 1, 16, 17]], [3, -1, 2, -1])
    np.testing.assert_array_equal(clean[0][16], [1, 100, 100, 140, 150])


# ---------------------------------------------------------------------------------------------
# Random cases against the numpy reference
# ---------------------------------------------------------------------------------------------

SETTINGS = [
    dict(num_classes=5),
    dict(num_classes=3, batch_rois=64, fg_fraction=0.5, fg_thresh=0.6, bg_thresh_hi=0.5, bg_thresh_lo=0.1),
    dict(num_classes=20, batch_rois=128, stds=(0.2, 0.3, 0.4, 0.5), add_gt_as_proposals=False),
    dict(num_classes=1, batch_rois=32, fg_fraction=1.0, fg_thresh=0.3, bg_thresh_hi=0.3),
    dict(num_classes=4, batch_rois=16, fg_fraction=0.0),
]


@pytest.mark.parametrize("case", range(len(SETTINGS)))
def test_random_cases_match_reference(case):
    rng = np.random.default_rng(40 + case)
    kwargs = dict(SETTINGS[case])
    num_classes = kwargs.pop("num_classes")
    batch = int(rng.integers(1, 4))
    label = random_labels(rng, batch, 8, 400, num_classes, counts=[int(rng.integers(0, 9)) for _ in range(batch)])
    rois = random_rois(rng, label, 600, 400)
    got = run_op(rois, label, num_classes=num_classes, batch_images=batch, **kwargs)
    check_against_reference(got, rois, label, num_classes, **kwargs)


def test_foreground_fraction_caps_the_foregrounds():
    rng = np.random.default_rng(5)
    label = random_labels(rng, 2, 4, 400, 6, counts=[4, 4])
    rois = random_rois(rng, label, 1000, 400, padding=0.0)
    rois[:, 1:] = np.repeat(label[rois[:, 0].astype(int), 0, 1:5], 1, axis=0)   # all rois = a gt
    _, labels, _, _ = run_op(rois, label, num_classes=6)
    for b in range(2):
        row = labels[b * 512:(b + 1) * 512]
        assert (row > 0).sum() == 128 and (row == 0).sum() == 0 and (row == -1).sum() == 384


def test_reference_sampler_obeys_the_same_rules():
    rng = np.random.default_rng(6)
    label = random_labels(rng, 3, 6, 300, 4)
    rois = random_rois(rng, label, 300, 300)
    got = proposal_target(rois, label, 4, batch_rois=64, rng=rng)
    check_against_reference(got, rois, label, 4, batch_rois=64)


# ---------------------------------------------------------------------------------------------
# Randomness
# ---------------------------------------------------------------------------------------------

def sampling_case():
    rng = np.random.default_rng(12)
    label = random_labels(rng, 3, 8, 400, 5, counts=[8, 5, 0])
    rois = random_rois(rng, label, 1000, 400, padding=0.05)
    return rois, label


def test_reproducible_under_mx_random_seed_and_different_across_seeds():
    rois, label = sampling_case()
    kwargs = dict(num_classes=5, batch_rois=64)          # 16 fg of many; 48 bg of many
    mx.random.seed(21)
    first = run_op(rois, label, **kwargs)
    second = run_op(rois, label, **kwargs)
    mx.random.seed(21)
    again = run_op(rois, label, **kwargs)
    mx.random.seed(22)
    other = run_op(rois, label, **kwargs)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    for b in range(3):
        rows = slice(b * 64, (b + 1) * 64)
        assert not np.array_equal(first[0][rows], second[0][rows])
        assert not np.array_equal(first[0][rows], other[0][rows])
    check_against_reference(other, rois, label, 5, batch_rois=64)


def test_thread_counts_give_identical_samples():
    rois, label = sampling_case()
    before = ops.num_threads()
    try:
        ops.set_num_threads(1)
        mx.random.seed(4)
        one = run_op(rois, label, num_classes=5, batch_rois=64)
        ops.set_num_threads(3)
        mx.random.seed(4)
        three = run_op(rois, label, num_classes=5, batch_rois=64)
    finally:
        ops.set_num_threads(before)
    for a, b in zip(one, three):
        np.testing.assert_array_equal(a, b)


def test_more_images_than_cpu_random_states():
    # 1030 images > 1024 states: images b and b + 1024 share a state and run in order.
    label = np.repeat(HAND_LABEL[:1], 1030, axis=0)
    rois = np.concatenate([np.concatenate([np.full((7, 1), b), HAND_ROIS[:, 1:]], axis=1)
                           for b in range(1030)]).astype(np.float32)
    kwargs = dict(num_classes=3, batch_rois=4, fg_fraction=0.5)
    mx.random.seed(31)
    got = run_op(rois, label, **kwargs)
    mx.random.seed(31)
    again = run_op(rois, label, **kwargs)
    check_against_reference(got, rois, label, 3, batch_rois=4, fg_fraction=0.5)
    for a, b in zip(got, again):
        np.testing.assert_array_equal(a, b)
    assert len({tuple(r.ravel()) for r in got[0].reshape(1030, 4, 5)[:, :, 1:]}) > 1   # different samples


# ---------------------------------------------------------------------------------------------
# Robustness and errors
# ---------------------------------------------------------------------------------------------

def test_fuzz_bad_values_give_defined_output():
    rng = np.random.default_rng(77)
    for it in range(25):
        batch, num_classes = int(rng.integers(1, 4)), int(rng.integers(1, 5))
        label = random_labels(rng, batch, 6, 200, num_classes + 2)         # some classes >= C
        corrupt_label_rows(rng, label, 0.4, [np.nan, np.inf, -2, 1e9, 2.5])
        rois = random_rois(rng, label, 80, 200)
        bad = rng.random(rois.shape) < 0.03
        rois[bad] = rng.choice([np.nan, np.inf, -np.inf, 7.5], bad.sum())
        copies = (rois.copy(), label.copy())
        kwargs = dict(batch_rois=int(rng.choice([8, 64])), fg_thresh=float(rng.choice([0.5, 0.7])))
        got = run_op(rois, label, num_classes=num_classes, **kwargs)
        np.testing.assert_array_equal(rois, copies[0])
        np.testing.assert_array_equal(label, copies[1])
        assert all(np.isfinite(g).all() for g in got), it
        assert ((got[1] >= -1) & (got[1] <= num_classes)).all()
        check_against_reference(got, rois, label, num_classes, **kwargs)


def test_inputs_are_not_modified():
    rois, label = sampling_case()
    arrays = [mx.nd.array(rois), mx.nd.array(label)]
    mx.nd.ProposalTarget(*arrays, num_classes=5)[0].wait_to_read()
    np.testing.assert_array_equal(arrays[0].asnumpy(), rois)
    np.testing.assert_array_equal(arrays[1].asnumpy(), label)


@pytest.mark.parametrize("shapes, kwargs, message", [
    (((10, 4), (2, 3, 5)), {"num_classes": 3}, "rois must have shape"),
    (((2, 10, 5), (2, 3, 5)), {"num_classes": 3}, "rois must have shape"),
    (((10, 5), (2, 3, 4)), {"num_classes": 3}, "label must have shape"),
    (((10, 5), (2, 3)), {"num_classes": 3}, "label must have shape"),
    (((10, 5), (2, 3, 5)), {}, "'num_classes' is required"),
    (((10, 5), (2, 3, 5)), {"num_classes": 0}, "num_classes"),
    (((10, 5), (2, 3, 5)), {"num_classes": 3, "batch_images": 3}, "batch_images"),
    (((10, 5), (2, 3, 5)), {"num_classes": 3, "batch_rois": 0}, "batch_rois"),
    (((10, 5), (2, 3, 5)), {"num_classes": 3, "fg_fraction": -0.1}, "fg_fraction"),
    (((10, 5), (2, 3, 5)), {"num_classes": 3, "bg_thresh_lo": 0.6}, "bg_thresh_lo"),
    (((10, 5), (2, 3, 5)), {"num_classes": 3, "fg_thresh": float("nan")}, "fg_thresh"),
    (((10, 5), (2, 3, 5)), {"num_classes": 3, "stds": (0.1, 0.1, 0.2)}, "stds"),
    (((10, 5), (2, 3, 5)), {"num_classes": 3, "add_gt_as_proposals": "maybe"}, "boolean"),
    (((10, 5), (2, 3, 5)), {"num_classes": 3, "batch_roi": 64}, "unknown attribute"),
])
def test_bad_shapes_and_attributes_are_mxnet_errors(shapes, kwargs, message):
    arrays = [mx.nd.zeros(s) for s in shapes]
    with pytest.raises(mx.MXNetError, match=message) as info:
        mx.nd.ProposalTarget(*arrays, **kwargs)[0].wait_to_read()
    assert str(info.value).count("ProposalTarget:") == 1


def test_non_float32_input_is_an_error():
    with pytest.raises(mx.MXNetError, match="float32"):
        mx.nd.ProposalTarget(mx.nd.zeros((4, 5), dtype="float16"), mx.nd.zeros((1, 2, 5)),
                             num_classes=2)[0].wait_to_read()


def test_symbol_shapes_and_zero_backward():
    rois, label = sampling_case()
    sym = mx.sym.ProposalTarget(mx.sym.var("rois"), mx.sym.var("label"), num_classes=5, batch_images=3,
                                batch_rois=32)
    _, out_shapes, _ = sym.infer_shape(rois=rois.shape, label=label.shape)
    assert out_shapes == [(96, 5), (96,), (96, 24), (96, 24)]
    exe = sym.simple_bind(mx.cpu(), rois=rois.shape, label=label.shape)
    exe.arg_dict["rois"][:] = rois
    exe.arg_dict["label"][:] = label
    for grad in exe.grad_arrays:
        grad[:] = 7.0
    exe.forward(is_train=True)
    exe.backward([mx.nd.ones(o.shape) for o in exe.outputs])
    check_against_reference([o.asnumpy() for o in exe.outputs], rois, label, 5, batch_rois=32)
    for name, grad in zip(sym.list_arguments(), exe.grad_arrays):
        np.testing.assert_array_equal(grad.asnumpy(), 0, err_msg=name)


@pytest.mark.parametrize("case", op_cases.cases_for("ProposalTarget"), ids=lambda c: c.name)
def test_op_cases_match_reference(case):
    # the cases the GPU self-test and `pytest -m gpu` run (tests/op_cases.py) against the reference rules
    kwargs = op_cases.case_kwargs(case)
    num_classes = kwargs.pop("num_classes")
    kwargs.pop("batch_images")
    got = op_cases.run_case(case, mx.cpu())
    check_against_reference(got, *case.inputs, num_classes, **kwargs)
    assert (got[1] > 0).any() and (got[1] == 0).any()
