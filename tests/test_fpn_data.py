"""Two-stage (FPN) data: aspect-preserving resize and flip keep boxes on their objects' pixels, im_info
is [h, w, scale], padding is zeros / -1 rows, the iterator batches, validates and reproduces."""
import cv2
import mxnet as mx
import numpy as np
import pytest

from ssdkit.dataset.augment import NO_AUGMENT, Augmentation, Normalization
from ssdkit.dataset.records import Record
from ssdkit.dataset.two_stage import (batch_shape, make_sample, normalized_labels, pad_batch, resize_scale,
                                      transform_two_stage, two_stage_augment)
from ssdkit.dataset.two_stage_iter import TwoStageIter

PALETTE = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)], np.uint8)
NORM = Normalization()
MIRROR = Augmentation(distort_prob=0.0, expand_prob=0.0, crop_samplers=(), mirror_prob=1.0)
FLIP_HALF = Augmentation(distort_prob=0.0, expand_prob=0.0, crop_samplers=(), mirror_prob=0.5)


def draw_scene(rng, height, width, count):
    """Grey image with ``count`` solid rectangles in column bands; object k has colour PALETTE[k].

    Returns image (H, W, 3) uint8 RGB and boxes (count, 4) tight pixel corners.
    """
    image = np.full((height, width, 3), 128, np.uint8)
    band = width // count
    boxes = []
    for k in range(count):
        w = int(rng.integers(6, band - 4))
        h = int(rng.integers(8, height - 6))
        x0 = k * band + 2 + int(rng.integers(0, band - 4 - w + 1))
        y0 = int(rng.integers(2, height - h - 2))
        image[y0:y0 + h, x0:x0 + w] = PALETTE[k]
        boxes.append((x0, y0, x0 + w, y0 + h))
    return image, np.array(boxes, np.float32)


def object_extent(image, k, tol=60):
    """(x0, y0, x1, y1) tight pixel-corner extent of the pixels of colour PALETTE[k], or None."""
    diff = np.abs(image.astype(np.int32) - PALETTE[k].astype(np.int32)).max(axis=2)
    ys, xs = np.nonzero(diff <= tol)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def test_resize_scale_and_batch_shape_by_hand():
    assert resize_scale(120, 90, 60, 100) == (pytest.approx(60 / 90), 80, 60)      # short side -> 60
    assert resize_scale(90, 120, 60, 100) == (pytest.approx(60 / 90), 60, 80)      # portrait
    assert resize_scale(300, 100, 60, 120) == (pytest.approx(0.4), 120, 40)        # long side capped
    assert resize_scale(640, 480, 800, 1333) == (pytest.approx(800 / 480), 1067, 800)
    assert resize_scale(1000, 200, 800, 1333) == (pytest.approx(1.333), 1333, 267)
    assert batch_shape(800, 1333) == (1344, 1344)
    assert batch_shape(256, 256) == (256, 256)
    assert batch_shape(100, 130) == (192, 192)
    with pytest.raises(ValueError, match="short <= long"):
        batch_shape(200, 100)
    with pytest.raises(ValueError, match="positive"):
        resize_scale(0, 10, 5, 5)


@pytest.mark.parametrize("size,short,long", [((90, 120), 60, 100), ((120, 70), 96, 128), ((50, 160), 64, 128)])
@pytest.mark.parametrize("mirror", [False, True])
def test_boxes_follow_resize_and_flip(size, short, long, mirror):
    height, width = size
    rng = np.random.default_rng(height + width + mirror)
    image, boxes = draw_scene(rng, height, width, 4)
    out, out_boxes, keep, scale = transform_two_stage(image, boxes, np.random.default_rng(0), short=short,
                                                      long=long, augment=MIRROR if mirror else NO_AUGMENT)
    expected_scale, w, h = resize_scale(width, height, short, long)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    assert scale == pytest.approx(expected_scale) and min(w, h) <= short and max(w, h) <= long
    assert min(w, h) == short or max(w, h) == long
    np.testing.assert_array_equal(keep, np.arange(len(boxes)))
    # exact geometry: x' = x w / W, y' = y h / H, mirrored x' -> w - x'
    expected = boxes * np.array([w / width, h / height, w / width, h / height])
    if mirror:
        expected[:, [0, 2]] = w - expected[:, [2, 0]]
    np.testing.assert_allclose(out_boxes, expected, atol=1e-3)
    # and the boxes sit on the drawn objects' pixels (to the resampling blur)
    for k, box in enumerate(out_boxes):
        extent = object_extent(out, k)
        assert extent is not None
        assert np.abs(extent - box).max() <= 1.5, (k, extent, box)


def test_boxes_outside_are_dropped_and_clipped():
    image = np.zeros((40, 60, 3), np.uint8)
    boxes = np.array([[-10, 5, 20, 30], [55, 10, 80, 20], [10, 10, 20, 20]], np.float32)  # 2nd: centre outside
    out, out_boxes, keep, scale = transform_two_stage(image, boxes, np.random.default_rng(0), short=80, long=200)
    assert scale == 2.0 and out.shape == (80, 120, 3)
    np.testing.assert_array_equal(keep, [0, 2])
    np.testing.assert_allclose(out_boxes, [[0, 10, 40, 60], [20, 20, 40, 40]], atol=1e-4)


def test_zoom_out_and_crops_are_refused():
    with pytest.raises(ValueError, match="expand_prob = 0"):
        two_stage_augment(Augmentation())
    with pytest.raises(ValueError, match="crop"):
        two_stage_augment(Augmentation(expand_prob=0.0))
    assert two_stage_augment(None) is NO_AUGMENT
    assert two_stage_augment(FLIP_HALF) is FLIP_HALF


def test_sample_im_info_and_padding():
    rng = np.random.default_rng(3)
    image, boxes = draw_scene(rng, 90, 120, 3)
    sample = make_sample(image, boxes, [2, 0, 1], [False, True, False], np.random.default_rng(0), short=60,
                         long=100, normalization=NORM)
    np.testing.assert_allclose(sample.im_info, [60, 80, 60 / 90], rtol=1e-6)
    assert sample.data.shape == (3, 60, 80) and sample.label.shape == (3, 6)
    np.testing.assert_allclose(sample.label[:, 0], [2, 0, 1])
    np.testing.assert_allclose(sample.label[:, 5], [0, 1, 0])
    np.testing.assert_allclose(sample.label[:, 1:5], boxes * (80 / 120), atol=1e-3)
    resized = cv2.resize(image, (80, 60), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    expected = ((resized - np.array(NORM.mean)) / np.array(NORM.std)).transpose(2, 0, 1)
    np.testing.assert_allclose(sample.data, expected, atol=0.05)      # warpAffine vs resize rounding

    other = make_sample(image[:, :60], np.zeros((0, 4)), [], [], np.random.default_rng(0), short=60, long=100,
                        normalization=NORM)
    data, im_info, label = pad_batch([sample, other], (3, 128, 128), max_objects=4)
    assert data.shape == (2, 3, 128, 128) and im_info.shape == (2, 3) and label.shape == (2, 4, 6)
    np.testing.assert_array_equal(data[0, :, :60, :80], sample.data)
    assert np.all(data[0, :, 60:] == 0) and np.all(data[0, :, :, 80:] == 0)
    np.testing.assert_allclose(im_info[1], [90, 60, 1.0])           # 90x60 portrait: already short 60
    np.testing.assert_array_equal(label[0, :3], sample.label)
    assert np.all(label[0, 3:] == -1) and np.all(label[1] == -1)
    with pytest.raises(ValueError, match="raise max_objects"):
        pad_batch([sample], (3, 128, 128), max_objects=2)
    with pytest.raises(ValueError, match="batch_shape"):
        pad_batch([sample], (3, 64, 64), max_objects=4)


def test_normalized_labels():
    label = np.full((2, 3, 6), -1.0, np.float32)
    label[0, 0] = [1, 8, 6, 40, 30, 0]
    label[1, 0] = [0, 0, 0, 60, 20, 1]
    im_info = np.array([[60, 80, 0.5], [20, 60, 1.0]], np.float32)
    out = normalized_labels(label, im_info)
    np.testing.assert_allclose(out[0, 0], [1, 0.1, 0.1, 0.5, 0.5, 0])
    np.testing.assert_allclose(out[1, 0], [0, 0, 0, 1, 1, 1])
    assert np.all(out[:, 1:] == -1) and label[0, 0, 1] == 8       # a new array


# ---------------------------------------------------------------- the iterator
SIZES = [(90, 120), (120, 90), (60, 160), (100, 100), (80, 140)]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_stage")
    rng = np.random.default_rng(0)
    records, images = [], []
    for i, (h, w) in enumerate(SIZES):
        count = 2 + i % 3
        image, boxes = draw_scene(rng, h, w, count)
        path = str(root / ("img%d.png" % i))
        cv2.imwrite(path, image[..., ::-1])
        records.append(Record(path=path, width=w, height=h, boxes=boxes, classes=np.arange(count),
                              difficult=np.zeros(count, bool), image_id=str(i)))
        images.append(image)
    return records, images


def _epoch(it):
    it.reset()
    out = [(b.data[0].asnumpy(), b.data[1].asnumpy(), b.label[0].asnumpy(), b.pad) for b in it]
    return [np.concatenate([o[i] for o in out]) for i in range(3)] + [[o[3] for o in out]]


def test_iterator_validation_batches(scenes):
    records, images = scenes
    it = TwoStageIter(records, batch_size=2, short=64, long=128, max_objects=5)
    assert [(d.name, d.shape) for d in it.provide_data] == [("data", (2, 3, 128, 128)), ("im_info", (2, 3))]
    assert [(d.name, d.shape) for d in it.provide_label] == [("label", (2, 5, 6))]
    assert it.num_batches == 3
    data, im_info, label, pads = _epoch(it)
    it.close()
    assert pads == [0, 0, 1] and data.shape == (6, 3, 128, 128)
    for i, record in enumerate(records):            # no flip in validation: exactly the plain transform
        sample = make_sample(images[i], record.boxes, record.classes, record.difficult, np.random.default_rng(0),
                             short=64, long=128, normalization=NORM)
        h, w = sample.data.shape[1:]
        np.testing.assert_allclose(im_info[i], sample.im_info, rtol=1e-6)
        assert min(h, w) == 64 or max(h, w) == 128
        np.testing.assert_allclose(data[i, :, :h, :w], sample.data, atol=1e-5)
        assert np.all(data[i, :, h:, :] == 0) and np.all(data[i, :, :, w:] == 0)
        np.testing.assert_allclose(label[i, :record.num_objects], sample.label, atol=1e-5)
        assert np.all(label[i, record.num_objects:] == -1)
    np.testing.assert_array_equal(data[5], data[4])    # the last batch repeats its first sample
    np.testing.assert_array_equal(label[5], label[4])


def test_iterator_flips_deterministically_and_boxes_stay_on_objects(scenes):
    records, _ = scenes
    kwargs = dict(batch_size=2, short=64, long=128, max_objects=5, augment=FLIP_HALF, shuffle=True,
                  last_batch="discard")
    a = TwoStageIter(records, seed=4, num_workers=2, **kwargs)
    b = TwoStageIter(records, seed=4, num_workers=1, **kwargs)
    first, again = _epoch(a), _epoch(b)
    for x, y in zip(first[:3], again[:3]):
        np.testing.assert_array_equal(x, y)
    flipped = plain = 0
    for _ in range(3):
        data, im_info, label, pads = _epoch(a)
        assert pads == [0, 0] and data.shape[0] == 4
        images = data.transpose(0, 2, 3, 1) * np.array(NORM.std) + np.array(NORM.mean)
        for image, info, lab in zip(images, im_info, label):
            h, w = int(info[0]), int(info[1])
            for row in lab[lab[:, 0] >= 0]:
                extent = object_extent(np.clip(np.rint(image[:h, :w]), 0, 255), int(row[0]))
                assert extent is not None and np.abs(extent - row[1:5]).max() <= 1.5, (extent, row)
            # objects were drawn left to right by class: a flip reverses the order
            valid = lab[lab[:, 0] >= 0]
            order = valid[np.argsort(valid[:, 1]), 0]
            flipped += bool(np.all(np.diff(order) < 0))
            plain += bool(np.all(np.diff(order) > 0))
    a.close()
    b.close()
    assert flipped >= 2 and plain >= 2 and flipped + plain == 12


def test_iterator_rejects_bad_settings(scenes):
    records, _ = scenes
    with pytest.raises(ValueError, match="expand_prob"):
        TwoStageIter(records, batch_size=2, short=64, long=128, augment=Augmentation())
    with pytest.raises(ValueError, match="img2.png resizes to 128x48"):
        TwoStageIter(records, batch_size=2, short=64, long=128, data_shape=(3, 128, 96))
    # too few label rows is no error: they grow to the largest object count, no image is refused
    most = max(r.num_objects for r in records)
    assert most > 1 and TwoStageIter(records, batch_size=2, short=64, long=128, max_objects=1).max_objects == most


def test_module_binds_the_iterator_inputs(scenes):
    """data, im_info and label reach a Module under their names."""
    records, _ = scenes
    it = TwoStageIter(records, batch_size=2, short=64, long=128, max_objects=5)
    data, im_info, label = mx.sym.var("data"), mx.sym.var("im_info"), mx.sym.var("label")
    out = mx.sym.Group([mx.sym.BlockGrad(mx.sym.sum(data, axis=(1, 2, 3))), mx.sym.BlockGrad(im_info),
                        mx.sym.BlockGrad(label)])
    mod = mx.mod.Module(out, data_names=["data", "im_info"], label_names=["label"], context=mx.cpu())
    mod.bind(data_shapes=it.provide_data, label_shapes=it.provide_label, for_training=False)
    mod.init_params()
    batch = next(iter(it))
    mod.forward(batch, is_train=False)
    np.testing.assert_array_equal(mod.get_outputs()[1].asnumpy(), batch.data[1].asnumpy())
    np.testing.assert_array_equal(mod.get_outputs()[2].asnumpy(), batch.label[0].asnumpy())
    it.close()
