"""SSD augmentation (ssdkit.dataset.augment): boxes keep enclosing their objects' pixels, crops obey
their IoU constraints, mirror flips, the fill is the mean, a fixed seed reproduces the output."""
import numpy as np
import pytest

from ssdkit.boxes import box_iou
from ssdkit.dataset.augment import (NO_AUGMENT, SSD_CROP_SAMPLERS, Augmentation, CropSampler,
                                    Normalization, augment_detection, crop_boxes,
                                    photometric_distort, photometric_params, sample_crop,
                                    to_chw_normalized, warp_crop)

PALETTE = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255),
                    (0, 255, 255)], np.uint8)
BACKGROUND = (128, 128, 128)
FILL = Normalization().fill
GEOMETRY_ONLY = Augmentation(distort_prob=0.0)


def draw_scene(rng, height=90, width=120, count=4):
    """Non-overlapping solid rectangles in distinct colours on grey.

    Returns image (H, W, 3) uint8 RGB and boxes (count, 4) tight pixel corners (object k has colour
    PALETTE[k]).
    """
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BACKGROUND
    cells = [(r, c) for r in range(2) for c in range(3)]
    chosen = rng.choice(len(cells), size=count, replace=False)
    ch, cw = height // 2, width // 3
    boxes = []
    for k, cell in enumerate(chosen):
        r, c = cells[cell]
        h = int(rng.integers(6, ch - 4))
        w = int(rng.integers(6, cw - 4))
        y0 = r * ch + 2 + int(rng.integers(0, ch - 4 - h + 1))
        x0 = c * cw + 2 + int(rng.integers(0, cw - 4 - w + 1))
        image[y0:y0 + h, x0:x0 + w] = PALETTE[k]
        boxes.append((x0, y0, x0 + w, y0 + h))
    return image, np.array(boxes, np.float32)


def object_pixels(image, k, tol=50):
    """(N, 2) float pixel centres (x, y) whose colour is within ``tol`` of PALETTE[k]."""
    diff = np.abs(image.astype(np.int32) - PALETTE[k].astype(np.int32)).max(axis=2)
    ys, xs = np.nonzero(diff <= tol)
    return np.stack([xs + 0.5, ys + 0.5], axis=1)


def assert_boxes_enclose_objects(image, boxes, keep, tol_px=1.5):
    """Every kept object's pixels lie inside its returned box (boxes normalised to ``image``)."""
    h, w = image.shape[:2]
    scale = np.array([w, h, w, h])
    for box, k in zip(boxes, keep):
        pix = object_pixels(image, k)
        b = box * scale
        assert b[2] > b[0] and b[3] > b[1], "empty box kept for object %d" % k
        if len(pix) == 0:
            continue
        lo, hi = pix.min(axis=0), pix.max(axis=0)  # (x, y) extents of the object's pixel centres
        assert np.all(lo >= b[:2] - tol_px) and np.all(hi <= b[2:] + tol_px), (k, b, lo, hi)


def test_boxes_enclose_object_pixels_under_geometric_augmentation():
    kept_total, dropped_total, changed = 0, 0, 0
    for seed in range(150):
        rng = np.random.default_rng(seed)
        image, boxes = draw_scene(rng)
        out, out_boxes, keep = augment_detection(image, boxes, rng, GEOMETRY_ONLY, (96, 80), fill=FILL)
        assert out.shape == (80, 96, 3) and out.dtype == np.uint8
        assert out_boxes.shape == (len(keep), 4)
        assert np.all(out_boxes >= 0) and np.all(out_boxes <= 1)
        assert_boxes_enclose_objects(out, out_boxes, keep)
        # the visible part of a kept rectangle fills its box (tight, not only enclosing)
        for box, k in zip(out_boxes, keep):
            pix = object_pixels(out, k)
            if len(pix) > 20:
                tight = np.array([pix[:, 0].min() - .5, pix[:, 1].min() - .5,
                                  pix[:, 0].max() + .5, pix[:, 1].max() + .5])
                assert box_iou(tight[None], (box * [96, 80, 96, 80])[None])[0, 0] > 0.6
        kept_total += len(keep)
        dropped_total += len(boxes) - len(keep)
        changed += not np.allclose(out_boxes, boxes[keep] / [120, 90, 120, 90], atol=1e-3)
    assert kept_total > 200 and dropped_total > 20 and changed > 100


def test_no_augment_is_a_plain_resize():
    rng = np.random.default_rng(3)
    image, boxes = draw_scene(rng)
    out, out_boxes, keep = augment_detection(image, boxes, rng, NO_AUGMENT, (240, 180))
    np.testing.assert_array_equal(keep, np.arange(len(boxes)))
    np.testing.assert_allclose(out_boxes, boxes / [120, 90, 120, 90], atol=1e-6)
    assert_boxes_enclose_objects(out, out_boxes, keep, tol_px=1.0)
    same, _, _ = augment_detection(image, boxes, rng, NO_AUGMENT, (120, 90))
    np.testing.assert_array_equal(same, image)


def test_crops_respect_their_iou_constraints():
    # boxes large enough for every sampler (IoU 0.9 needs a crop close to one box)
    boxes = np.array([[5, 5, 100, 80], [60, 40, 110, 85], [5, 60, 20, 80]], np.float32)
    seen = set()
    for seed in range(400):
        rect, index = sample_crop(boxes, 120, 90, SSD_CROP_SAMPLERS, np.random.default_rng(seed))
        seen.add(index)
        w, h = rect[2] - rect[0], rect[3] - rect[1]
        assert rect[0] >= 0 and rect[1] >= 0 and rect[2] <= 120 + 1e-9 and rect[3] <= 90 + 1e-9
        if index == -1:
            np.testing.assert_allclose(rect, [0, 0, 120, 90])
            continue
        sampler = SSD_CROP_SAMPLERS[index]
        scale = np.sqrt(w * h / (120 * 90))
        aspect = (w / 120) / (h / 90)
        assert sampler.min_scale - 1e-9 <= scale <= sampler.max_scale + 1e-9
        assert sampler.min_aspect - 1e-9 <= aspect <= sampler.max_aspect + 1e-9
        iou = box_iou(rect[None], boxes)[0]
        if sampler.min_iou is not None:
            assert iou.max() >= sampler.min_iou, (index, iou)
        _, keep = crop_boxes(boxes, rect)
        assert len(keep) >= 1
    assert seen == set(range(-1, len(SSD_CROP_SAMPLERS)))


def test_crop_with_impossible_constraint_falls_back_to_whole_image():
    boxes = np.array([[0, 0, 10, 10]], np.float32)
    samplers = (CropSampler(min_iou=0.9, min_scale=0.95),)  # a near-full crop never has IoU 0.9 here
    for seed in range(20):
        rect, index = sample_crop(boxes, 100, 100, samplers, np.random.default_rng(seed))
        assert index == -1
    rect, index = sample_crop(np.zeros((0, 4)), 100, 100, samplers, np.random.default_rng(0))
    assert index == -1


def test_crop_boxes_keeps_centres_inside_and_clips():
    boxes = np.array([[0, 0, 10, 10], [8, 8, 30, 30], [45, 45, 60, 60]], np.float32)
    out, keep = crop_boxes(boxes, np.array([4.0, 4.0, 50.0, 50.0]))
    np.testing.assert_array_equal(keep, [0, 1])  # centre (52.5, 52.5) of box 2 is outside
    np.testing.assert_allclose(out, [[0, 0, 6, 6], [4, 4, 26, 26]])


def test_mirror_flips_image_and_boxes():
    rng = np.random.default_rng(5)
    image, boxes = draw_scene(rng)
    mirror = Augmentation(distort_prob=0, expand_prob=0, crop_samplers=(), mirror_prob=1.0)
    out, out_boxes, keep = augment_detection(image, boxes, rng, mirror, (120, 90))
    np.testing.assert_array_equal(out, image[:, ::-1])
    expected = boxes[:, [2, 1, 0, 3]] / [120, 90, 120, 90]
    expected[:, [0, 2]] = 1 - expected[:, [0, 2]]
    np.testing.assert_allclose(out_boxes, expected, atol=1e-6)
    # resized and mirrored == mirror of the resized image
    flipped = warp_crop(image, np.array([10.0, 5.0, 100.0, 80.0]), (64, 48), mirror=True)
    plain = warp_crop(image, np.array([10.0, 5.0, 100.0, 80.0]), (64, 48))
    assert np.abs(flipped.astype(int) - plain[:, ::-1].astype(int)).max() <= 1


def test_expand_fills_with_the_mean_and_shrinks_boxes():
    rng = np.random.default_rng(1)
    image, boxes = draw_scene(rng)
    expand = Augmentation(distort_prob=1.0, expand_prob=1.0, max_expand_ratio=3.0, crop_samplers=(),
                           mirror_prob=0.0)
    for seed in range(20):
        out, out_boxes, keep = augment_detection(image, boxes, np.random.default_rng(seed), expand,
                                                 (120, 90), fill=FILL)
        assert len(keep) == len(boxes)
        ratio = (boxes[:, 2] - boxes[:, 0]) / 120 / (out_boxes[:, 2] - out_boxes[:, 0])
        assert np.all(ratio > 1) and np.all(ratio < 3) and np.ptp(ratio) < 1e-4
        # pixels well outside the placed image keep the exact mean colour despite distortion
        scale = ratio[0]
        ox = out_boxes[0, 0] * 120 - boxes[0, 0] / scale
        oy = out_boxes[0, 1] * 90 - boxes[0, 1] / scale
        mask = np.ones((90, 120), bool)
        rows = slice(max(0, int(oy) - 1), int(oy + 90 / scale) + 2)
        cols = slice(max(0, int(ox) - 1), int(ox + 120 / scale) + 2)
        mask[rows, cols] = False
        assert mask.sum() > 0
        assert np.all(out[mask] == FILL)


def test_photometric_distortion():
    rng = np.random.default_rng(2)
    image, _ = draw_scene(rng)
    assert photometric_distort(image, rng, NO_AUGMENT) is image
    # brightness only: exact shift, saturated
    bright = Augmentation(distort_prob=1.0, contrast_range=(1, 1), saturation_range=(1, 1), hue_delta=0)
    params = photometric_params(np.random.default_rng(9), bright)
    np.testing.assert_allclose(params[:, :3], np.eye(3), atol=1e-9)
    out = photometric_distort(image, np.random.default_rng(9), bright)
    expected = np.clip(np.rint(image.astype(float) + params[0, 3]), 0, 255)
    np.testing.assert_array_equal(out, expected)
    # hue and saturation keep greys grey and keep luma
    colour = Augmentation(distort_prob=1.0, brightness_delta=0, contrast_range=(1, 1))
    luma = np.array([0.299, 0.587, 0.114])
    for seed in range(10):
        params = photometric_params(np.random.default_rng(seed), colour)
        np.testing.assert_allclose(params[:, :3] @ [100, 100, 100], [100] * 3, atol=1e-6)
        np.testing.assert_allclose(luma @ params[:, :3], luma, atol=1e-3)
    # full distortion changes pixels and is reproducible
    full = Augmentation(distort_prob=1.0)
    a = photometric_distort(image, np.random.default_rng(4), full)
    b = photometric_distort(image, np.random.default_rng(4), full)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - image).mean() > 2


def test_fixed_seed_reproduces_output():
    image, boxes = draw_scene(np.random.default_rng(0))
    cfg = Augmentation()
    runs = [augment_detection(image, boxes, np.random.default_rng(seed), cfg, (64, 64))
            for seed in (11, 11, 12)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert not (np.array_equal(runs[0][0], runs[2][0]) and np.array_equal(runs[0][1], runs[2][1]))


def test_to_chw_normalized():
    image = np.array([[[255, 0, 10]]], np.uint8)
    norm = Normalization(mean=(1.0, 2.0, 3.0), std=(2.0, 4.0, 0.5))
    out = to_chw_normalized(image, norm)
    assert out.shape == (3, 1, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0, 0], [127.0, -0.5, 14.0])
    assert Normalization().fill == (124, 116, 104)


@pytest.mark.parametrize("size", [(300, 300), (96, 64)])
def test_empty_image_labels(size):
    image = np.zeros((50, 70, 3), np.uint8)
    for seed in range(10):
        out, out_boxes, keep = augment_detection(image, np.zeros((0, 4)), np.random.default_rng(seed),
                                                 Augmentation(), size)
        assert out.shape == (size[1], size[0], 3) and out_boxes.shape == (0, 4) and len(keep) == 0
