"""Mask-based copy-paste augmentation (issue 20, item 4): boxes and masks stay consistent, occluded instances
are dropped, the jitter does what its settings say, prob 0 changes nothing, bad settings are refused."""
import dataclasses

import cv2
import numpy as np
import pytest

from ssdkit.api.data import copy_paste_of
from ssdkit.api.ssd import ssd_iterator
from ssdkit.config import AugmentConfig, apply_overrides
from ssdkit.config.loader import load_config
from ssdkit.dataset.copy_paste import CopyPaste, copy_paste, tight_boxes


def _reference_box(mask):
    """Tight pixel-corner box of a mask with numpy (the second implementation of ``tight_boxes``)."""
    rows, cols = np.nonzero(mask)
    return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], np.float32)


def _interior(mask):
    """Pixels at least 2 px inside a mask (outside the image counts as outside): away from bilinear edges."""
    return cv2.erode(mask, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0


def _scene(seed, count=5, height=72, width=96):
    """Random image with ``count`` painted rectangles / disks; masks are the visible parts (disjoint)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    label = np.full((height, width), -1)
    yy, xx = np.mgrid[:height, :width]
    for k in range(count):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        rx, ry = rng.uniform(4, 20), rng.uniform(4, 16)
        shape = ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 < 1 if k % 2 else \
            (abs(xx + 0.5 - cx) < rx) & (abs(yy + 0.5 - cy) < ry)
        image[shape] = rng.integers(0, 256, 3)
        label[shape] = k
    masks = np.stack([label == k for k in range(count)]).astype(np.uint8)
    masks = masks[masks.reshape(count, -1).any(axis=1)]
    return image, tight_boxes(masks), np.arange(len(masks), dtype=np.int32), np.zeros(len(masks), bool), masks


def _run(scene, seed, **settings):
    return copy_paste(*scene, np.random.default_rng(seed), CopyPaste(**settings))


@pytest.mark.parametrize("mode", ["move", "copy"])
def test_every_kept_box_is_the_tight_box_of_its_mask_and_masks_stay_disjoint(mode):
    applied = 0
    for seed in range(12):
        scene = _scene(seed)
        image, boxes, classes, difficult, masks = _run(scene, seed, prob=1.0, max_instances=3, scale=(0.5, 2.0),
                                                       rotation=45.0, translate=0.3, min_visible=0.2, mode=mode)
        applied += image is not scene[0]
        assert image.shape == scene[0].shape and image.dtype == np.uint8
        assert masks.shape == (len(boxes),) + image.shape[:2] and masks.dtype == np.uint8
        assert len(classes) == len(difficult) == len(boxes) and boxes.dtype == np.float32
        assert set(np.unique(masks)) <= {0, 1}
        assert masks.sum(axis=0).max() <= 1                      # pasted on top: no pixel claimed twice
        for box, mask in zip(boxes, masks):
            assert mask.any()
            np.testing.assert_array_equal(box, _reference_box(mask))
        if mode == "move":                                      # instances move in place: same rows, order
            assert set(classes) <= set(scene[2]) and list(classes) == sorted(classes)
    assert applied >= 10


def test_copy_mode_changes_pixels_only_under_pastes_and_keeps_untouched_boxes():
    """Copy mode keeps the originals: pixels change only where a kept mask lies (with min_visible 0 a copy is
    dropped only when fully covered by a later one), and an original no paste touched keeps its input box."""
    for seed in range(8):
        scene = _scene(seed)
        image, boxes, classes, _, masks = _run(scene, seed, prob=1.0, max_instances=2, scale=(0.7, 1.4),
                                               rotation=30.0, translate=0.4, min_visible=0.0, mode="copy")
        originals = len(scene[2])
        assert image is not scene[0]                            # applied (prob 1, every paste lands inside)
        assert 0 < len(classes) <= originals + 2 and set(classes) <= set(scene[2])
        assert len(classes) > len(set(classes))                 # at least one class appears twice: a copy
        changed = (image != scene[0]).any(axis=2)
        assert changed.any() and not (changed & ~masks.any(axis=0)).any()
        for k in range(originals):
            rows = np.flatnonzero(classes == k)
            if len(rows) and np.array_equal(masks[rows[0]], scene[4][k]):
                np.testing.assert_array_equal(boxes[rows[0]], scene[1][k])


def test_an_instance_its_own_copy_covers_is_dropped_and_the_copy_is_exact():
    """Identity jitter in copy mode: the copy lands on its source, which is then fully covered and dropped;
    the image is unchanged and the copy's mask and box are the source's."""
    scene = _scene(3)
    image, boxes, classes, difficult, masks = _run(scene, 0, prob=1.0, max_instances=1, scale=(1.0, 1.0),
                                                   rotation=0.0, translate=0.0, min_visible=0.5, mode="copy")
    np.testing.assert_array_equal(image, scene[0])
    assert len(classes) == len(scene[2])
    source = classes[-1]
    assert source not in classes[:-1]                           # the covered original is gone
    np.testing.assert_array_equal(masks[-1], scene[4][source])
    np.testing.assert_array_equal(boxes[-1], scene[1][source])
    others = [k for k in scene[2] if k != source]
    np.testing.assert_array_equal(classes[:-1], others)
    np.testing.assert_array_equal(masks[:-1], scene[4][others])


def _two_squares(gap_width):
    """A 20x20 square (class 0) and, right of it, a 10x10 one (class 1) whose left half lies within 10 px."""
    image = np.zeros((100, 120, 3), np.uint8)
    masks = np.zeros((2, 100, 120), np.uint8)
    masks[0, 40:60, 40:60] = 1
    masks[1, 45:55, 60 + gap_width:70 + gap_width] = 1
    image[masks[0] > 0] = (200, 30, 30)
    image[masks[1] > 0] = (30, 200, 30)
    return image, tight_boxes(masks), np.array([0, 1], np.int32), np.array([False, True]), masks


@pytest.mark.parametrize("min_visible, kept", [(0.6, False), (0.4, True)])
def test_partly_covered_instance_is_kept_or_dropped_by_min_visible(min_visible, kept):
    """Square 0 scaled x2 in place covers columns 30..69: square 1 (columns 65..74) keeps half its area."""
    scene = _two_squares(5)
    seen = 0
    for seed in range(10):
        image, boxes, classes, difficult, masks = _run(scene, seed, prob=1.0, max_instances=1, scale=(2.0, 2.0),
                                                       rotation=0.0, translate=0.0, min_visible=min_visible)
        if not np.array_equal(boxes[0], [30, 30, 70, 70]):
            continue                                            # square 1 was the one jittered
        seen += 1
        assert classes[0] == 0 and masks[0].sum() == 40 * 40
        if kept:
            np.testing.assert_array_equal(classes, [0, 1])
            np.testing.assert_array_equal(difficult, [False, True])
            np.testing.assert_array_equal(boxes[1], [70, 45, 75, 55])
            assert masks[1].sum() == 50
        else:
            np.testing.assert_array_equal(classes, [0])
        # the scaled square's pixels are its colour, and nothing else changed outside both squares' areas
        interior = _interior(masks[0])
        assert interior.sum() == 36 * 36 and (image[interior] == (200, 30, 30)).all()
        outside = ~cv2.dilate(scene[4].max(axis=0), np.ones((3, 3), np.uint8)).astype(bool) & ~masks.any(axis=0)
        np.testing.assert_array_equal(image[outside], scene[0][outside])
    assert seen >= 2


def test_an_instance_an_earlier_paste_hid_is_not_revived_by_its_own_jitter():
    """Both squares jittered x2 in place: whichever goes first, square 1 ends half covered (below min_visible
    0.6) and is dropped; jittering the hidden remains must not make them a new, fully visible instance."""
    scene = _two_squares(5)
    for seed in range(8):
        _, boxes, classes, _, masks = _run(scene, seed, prob=1.0, max_instances=2, scale=(2.0, 2.0), rotation=0.0,
                                           translate=0.0, min_visible=0.6)
        np.testing.assert_array_equal(classes, [0])
        np.testing.assert_array_equal(boxes, [[30, 30, 70, 70]])
        assert masks.sum() == 40 * 40


def test_fully_covered_neighbour_is_dropped():
    """Square 0 scaled x3 in place covers columns 20..79: square 1 (columns 61..70) is gone."""
    scene = _two_squares(1)
    seen = 0
    for seed in range(10):
        _, boxes, classes, _, masks = _run(scene, seed, prob=1.0, max_instances=1, scale=(3.0, 3.0), rotation=0.0,
                                           translate=0.0, min_visible=0.0)
        if np.array_equal(boxes[0], [20, 20, 80, 80]):
            seen += 1
            np.testing.assert_array_equal(classes, [0])
            assert masks.shape == (1, 100, 120)
    assert seen >= 2


@pytest.mark.parametrize("side", [20, 80])          # 80: a region past INPAINT_SIZE (48), inpainted downscaled
def test_move_mode_inpaints_the_old_place_from_its_surroundings(side):
    """A red square on grey moved away: its old pixels (and a one-pixel rim) not under the moved square become
    the grey around them; pixels away from both places are untouched."""
    image = np.full((160, 200, 3), 100, np.uint8)
    masks = np.zeros((1, 160, 200), np.uint8)
    masks[0, 80 - side // 2:80 + side // 2, 100 - side // 2:100 + side // 2] = 1
    image[masks[0] > 0] = (220, 20, 20)
    scene = (image, tight_boxes(masks), np.zeros(1, np.int32), np.zeros(1, bool), masks)
    for seed in range(4):
        out, boxes, _, _, moved = _run(scene, seed, prob=1.0, scale=(1.0, 1.0), rotation=0.0, translate=0.5,
                                       min_visible=0.0, mode="move")
        np.testing.assert_array_equal(boxes, tight_boxes(moved))
        assert not np.array_equal(boxes, scene[1])
        old = cv2.dilate(masks[0], np.ones((3, 3), np.uint8)) > 0
        error = np.abs(out[old & (moved[0] == 0)].astype(int) - 100)     # Telea's fill is within a few levels
        assert error.max() <= 8 and error.mean() < 2
        interior = _interior(moved[0])
        assert (out[interior] == (220, 20, 20)).all()
        away = ~old & ~cv2.dilate(moved[0], np.ones((3, 3), np.uint8)).astype(bool)
        np.testing.assert_array_equal(out[away], image[away])


def test_jitter_scales_and_shifts_within_its_ranges():
    """A disk (rotation-invariant) scaled by 1.5 and shifted by at most 0.1 of the image: its copy's box has
    1.5 times its size and a centre within the shift range (1 px of rasterisation slack)."""
    height, width = 120, 160
    yy, xx = np.mgrid[:height, :width]
    mask = (((xx + 0.5 - 80) ** 2 + (yy + 0.5 - 60) ** 2) < 20 ** 2).astype(np.uint8)[None]
    image = np.zeros((height, width, 3), np.uint8)
    image[mask[0] > 0] = 255
    scene = (image, tight_boxes(mask), np.zeros(1, np.int32), np.zeros(1, bool), mask)
    shifts = []
    for seed in range(6):
        out, boxes, classes, _, masks = _run(scene, seed, prob=1.0, scale=(1.5, 1.5), rotation=180.0, translate=0.1,
                                             min_visible=0.0, mode="copy")
        copy = boxes[-1]
        np.testing.assert_allclose(copy[2:] - copy[:2], [60, 60], atol=1.0)
        shift = 0.5 * (copy[:2] + copy[2:]) - (80, 60)
        assert abs(shift[0]) <= 0.1 * width + 1 and abs(shift[1]) <= 0.1 * height + 1
        shifts.append(shift)
        interior = _interior(masks[-1])
        assert (out[interior] == 255).all()                     # the copy carries the instance's pixels
    assert np.ptp(np.array(shifts), axis=0).min() > 2           # the shift is drawn, not fixed


def test_same_seed_same_result_and_inputs_untouched():
    scene = _scene(7)
    before = [a.copy() for a in scene]
    settings = dict(prob=1.0, max_instances=3, rotation=20.0, translate=0.2)
    first = _run(scene, 5, **settings)
    second = _run(scene, 5, **settings)
    other = _run(scene, 6, **settings)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(first, other))
    for a, b in zip(scene, before):
        np.testing.assert_array_equal(a, b)


def test_prob_zero_is_the_identity_and_draws_nothing():
    scene = _scene(1)
    rng = np.random.default_rng(11)
    state = rng.bit_generator.state
    out = copy_paste(*scene, rng, CopyPaste(prob=0.0, max_instances=5, rotation=90.0))
    assert all(a is b for a, b in zip(out, scene))
    assert rng.bit_generator.state == state
    empty = (scene[0], np.zeros((0, 4), np.float32), np.zeros(0, np.int32), np.zeros(0, bool),
             np.zeros((0,) + scene[0].shape[:2], np.uint8))
    out = copy_paste(*empty, np.random.default_rng(0), CopyPaste(prob=1.0))
    assert all(a is b for a, b in zip(out, empty))


def test_masks_of_the_wrong_shape_are_refused():
    image, boxes, classes, difficult, masks = _scene(2)
    with pytest.raises(ValueError, match="masks must be"):
        copy_paste(image, boxes, classes, difficult, masks[:, :-1], np.random.default_rng(0), CopyPaste(prob=1.0))
    with pytest.raises(ValueError, match="one row per instance"):
        copy_paste(image, boxes, classes[:-1], difficult, masks, np.random.default_rng(0), CopyPaste(prob=1.0))


BAD_SETTINGS = [("prob", 1.5), ("prob", -0.1), ("max_instances", 0), ("scale", (1.2, 0.8)), ("scale", (0.0, 1.0)),
                ("scale", (1.0,)), ("rotation", -1.0), ("rotation", 200.0), ("translate", 1.5),
                ("min_visible", 2.0), ("mode", "swap")]


@pytest.mark.parametrize("name, value", BAD_SETTINGS)
def test_bad_settings_are_refused_in_the_config_and_the_dataclass(name, value):
    with pytest.raises(ValueError, match="augment.copy_paste_%s" % name):
        CopyPaste(**{name: value})
    with pytest.raises(ValueError, match="augment.copy_paste_%s" % name):
        AugmentConfig(**{"copy_paste_" + name: value})


def test_config_section_becomes_the_copy_paste_settings(tmp_path):
    """``copy_paste_of``: None when off; otherwise every ``augment.copy_paste_*`` key, with the same defaults."""
    assert copy_paste_of(AugmentConfig()) is None
    defaults = copy_paste_of(AugmentConfig(copy_paste_prob=0.5))
    assert defaults == dataclasses.replace(CopyPaste(), prob=0.5)
    keys = {"copy_paste_" + f.name for f in dataclasses.fields(CopyPaste)}
    assert keys <= {f.name for f in dataclasses.fields(AugmentConfig)}
    path = tmp_path / "cp.toml"
    path.write_text('[augment]\ncopy_paste_prob = 0.5\ncopy_paste_scale = [0.5, 1.5]\ncopy_paste_rotation = 10\n'
                    'copy_paste_mode = "copy"\ncopy_paste_max_instances = 4\n')
    settings = copy_paste_of(load_config(str(path)).augment)
    assert settings == CopyPaste(prob=0.5, scale=(0.5, 1.5), rotation=10.0, mode="copy", max_instances=4)
    path.write_text("[augment]\ncopy_paste_scale = [2.0, 1.0]\n")
    with pytest.raises(ValueError, match="cp.toml.*augment.copy_paste_scale"):
        load_config(str(path))


def test_readme_example_lists_every_key_with_its_default():
    """The README's copy-paste block: every ``augment.copy_paste_*`` key, at its default except the switch."""
    import os
    import tomllib

    text = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    block = text.split("### Copy-paste augmentation", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    values = tomllib.loads(block)
    assert set(values) == {"copy_paste_" + f.name for f in dataclasses.fields(CopyPaste)}
    settings = copy_paste_of(AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}))
    assert settings == dataclasses.replace(CopyPaste(), prob=values["copy_paste_prob"])


def test_label_rows_leave_room_for_copies():
    """Copy mode may add ``max_instances`` objects to an image: the label padding grows by that much."""
    from types import SimpleNamespace

    from ssdkit.api.data import label_rows
    from ssdkit.config import Config, DataConfig

    dataset = SimpleNamespace(records=[SimpleNamespace(num_objects=n) for n in (3, 70, 5)])

    def rows(**augment):
        return label_rows(Config(data=DataConfig(max_objects=64), augment=AugmentConfig(**augment)), dataset)

    assert rows() == rows(copy_paste_prob=0.5, copy_paste_mode="move") == 70
    assert rows(copy_paste_prob=0.5, copy_paste_mode="copy", copy_paste_max_instances=4) == 74
    assert rows(copy_paste_prob=0.0, copy_paste_mode="copy", copy_paste_max_instances=4) == 70


def test_two_stage_sample_with_copy_paste_keeps_labels_and_masks_together():
    """Through ``make_sample`` (copy-paste, then flip at scale 1): one mask per label row, each mask's tight box
    equal to its label box; ``prob = 0`` gives the very sample of ``copy_paste=None``."""
    from ssdkit.dataset.augment import Augmentation, Normalization
    from ssdkit.dataset.two_stage import make_sample

    augment = Augmentation(distort_prob=0.0, expand_prob=0.0, crop_samplers=(), mirror_prob=0.5)
    for seed in range(4):
        image, boxes, classes, difficult, masks = _scene(seed)
        sample = make_sample(image, boxes, classes, difficult, np.random.default_rng(seed), short=72, long=96,
                             normalization=Normalization(), augment=augment, masks=masks,
                             copy_paste=CopyPaste(prob=1.0, max_instances=3, mode="copy", translate=0.3))
        assert sample.masks.shape[0] == len(sample.label) > 0
        for row, mask in zip(sample.label, sample.masks):
            np.testing.assert_allclose(_reference_box(mask), row[1:5], atol=1e-4)
        plain = make_sample(image, boxes, classes, difficult, np.random.default_rng(seed), short=72, long=96,
                            normalization=Normalization(), augment=augment, masks=masks)
        off = make_sample(image, boxes, classes, difficult, np.random.default_rng(seed), short=72, long=96,
                          normalization=Normalization(), augment=augment, masks=masks, copy_paste=CopyPaste())
        for a, b in zip((plain.data, plain.label, plain.masks), (off.data, off.label, off.masks)):
            np.testing.assert_array_equal(a, b)


def test_ssd_training_refuses_copy_paste_it_cannot_apply():
    """SSD iterators have no instance masks: a copy-paste probability is refused, not silently ignored."""
    config = apply_overrides(load_config("tiny_256_synthetic"), {"augment.copy_paste_prob": 0.5})
    with pytest.raises(ValueError, match="copy_paste_prob = 0.5 .*SSD network tiny.*set augment.copy_paste_prob = 0"):
        ssd_iterator(config, "train", dataset=None)
