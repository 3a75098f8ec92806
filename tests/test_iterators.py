"""Training / validation iterators (FolderDetIter over image files, RecordDetIter over .rec through
MXNet's ImageDetRecordIter): shapes and -1 padding, identical normalisation, no-aug output equal to
the raw records, augmentation really happening (and keeping boxes on their objects), determinism,
bad images skipped."""
import warnings

import cv2
import mxnet as mx
import numpy as np
import pytest

from ssdkit.dataset.augment import Augmentation, Normalization
from ssdkit.dataset.folder_iter import FolderDetIter
from ssdkit.dataset.recordio import pack_recordio
from ssdkit.dataset.synthetic import make_synthetic_dataset
from ssdkit.dataset.validation import DataError
from ssdkit.dataset.voc import load_voc
from ssdkit.dataset.rec_iter import (RecordDetIter, accepted_keywords, check_keywords,
                                     det_record_iter_kwargs, strip_det_labels)
from ssdkit.dataset.records import Record

PALETTE = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)], np.uint8)
H, W = 90, 120
NUM_IMAGES = 10
MAX_OBJECTS = 6
NORM = Normalization()
GEOMETRY_ONLY = Augmentation(distort_prob=0.0)


def _scene(rng, count):
    """Grey image with ``count`` solid rectangles, object k coloured PALETTE[k] and of class k."""
    image = np.full((H, W, 3), 128, np.uint8)
    boxes = []
    for k in range(count):  # one object per 24-px column band: never overlapping
        w, h = int(rng.integers(8, 20)), int(rng.integers(10, 60))
        x0 = 24 * k + 2 + int(rng.integers(0, 20 - w + 1))
        y0 = int(rng.integers(2, H - h - 2))
        image[y0:y0 + h, x0:x0 + w] = PALETTE[k]
        boxes.append((x0, y0, x0 + w, y0 + h))
    return image, np.array(boxes, np.float32).reshape(-1, 4)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """NUM_IMAGES PNG scenes, their Records and a .rec/.idx of the same images."""
    root = tmp_path_factory.mktemp("scenes")
    rng = np.random.default_rng(0)
    records, images = [], []
    rec_path = str(root / "scenes.rec")
    writer = mx.recordio.MXIndexedRecordIO(str(root / "scenes.idx"), rec_path, "w")
    for i in range(NUM_IMAGES):
        count = 1 + i % 5
        image, boxes = _scene(rng, count)
        path = str(root / ("img%02d.png" % i))
        cv2.imwrite(path, image[..., ::-1])
        record = Record(path=path, width=W, height=H, boxes=boxes, classes=np.arange(count),
                        difficult=np.arange(count) % 2 == 1, image_id=str(i))
        records.append(record)
        images.append(image)
        label = np.concatenate([[2, 6], record.normalized_label().ravel()]).astype(np.float32)
        header = mx.recordio.IRHeader(0, label, i, 0)
        writer.write_idx(i, mx.recordio.pack_img(header, image[..., ::-1], img_fmt=".png"))
    writer.close()
    return records, images, rec_path


def _expected(records, images, indices):
    data = np.stack([(images[i] - np.array(NORM.mean)) / np.array(NORM.std) for i in indices])
    label = np.full((len(indices), MAX_OBJECTS, 6), -1.0)
    for j, i in enumerate(indices):
        lab = records[i].normalized_label()
        label[j, :len(lab)] = lab
    return data.transpose(0, 3, 1, 2), label


def _epoch(it):
    it.reset()
    datas, labels, pads = [], [], []
    for batch in it:
        datas.append(batch.data[0].asnumpy())
        labels.append(batch.label[0].asnumpy())
        pads.append(batch.pad)
    return np.concatenate(datas), np.concatenate(labels), pads


def _assert_boxes_on_objects(data, labels, tol_px=2.0):
    """Un-normalise each image and check every labelled object's pixels lie inside its box."""
    images = data.transpose(0, 2, 3, 1) * np.array(NORM.std) + np.array(NORM.mean)
    h, w = images.shape[1:3]
    checked = 0
    for image, label in zip(images, labels):
        for row in label[label[:, 0] >= 0]:
            k = int(row[0])
            diff = np.abs(image - PALETTE[k]).max(axis=2)
            ys, xs = np.nonzero(diff <= 50)
            box = row[1:5] * [w, h, w, h]
            assert box[2] > box[0] and box[3] > box[1]
            if len(xs):
                lo = np.array([xs.min(), ys.min()]) + 0.5  # pixel centres
                hi = np.array([xs.max(), ys.max()]) + 0.5
                assert np.all(lo >= box[:2] - tol_px) and np.all(hi <= box[2:] + tol_px), (k, box, lo, hi)
                checked += 1
    return checked


# ---------------------------------------------------------------- ImageDetRecordIter keywords
def test_record_iter_keywords_are_whitelisted():
    names = accepted_keywords()
    assert {"rand_crop_prob", "num_crop_sampler", "min_crop_overlaps", "rand_pad_prob",
            "rand_mirror_prob", "mean_r", "std_b"} <= names
    assert "rand_crop" not in names and "rand_mirror" not in names
    with pytest.raises(ValueError, match="rand_crop"):
        check_keywords({"rand_crop": 1, "rand_mirror_prob": 0.5})
    kw = det_record_iter_kwargs(Augmentation(), NORM)
    assert set(kw) <= names
    assert kw["rand_crop_prob"] > 0 and kw["num_crop_sampler"] == 6 and kw["rand_pad_prob"] == 0.5
    assert kw["min_crop_overlaps"] == (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
    assert kw["rand_mirror_prob"] == 0.5 and kw["max_pad_scale"] == 4.0
    assert "rand_crop_prob" not in det_record_iter_kwargs(Augmentation(crop_samplers=()), NORM)
    with pytest.raises(ValueError, match="rand_mirror"):
        RecordDetIter("unused.rec", batch_size=2, data_shape=(3, 8, 8), max_objects=1,
                      extra={"rand_mirror": 1})


def test_strip_det_labels():
    raw = np.array([[3, 60, 80, 8, 2, 6, 1, .1, .2, .3, .4, 0, -1, -1, -1, -1, -1, -1],
                    [3, 60, 80, 14, 2, 6, 0, .5, .5, .6, .6, 1, 2, .1, .1, .2, .2, 0]], np.float32)
    out = strip_det_labels(raw, max_objects=3)
    assert out.shape == (2, 3, 6)
    np.testing.assert_allclose(out[0, 0], [1, .1, .2, .3, .4, 0])
    assert np.all(out[0, 1:] == -1) and np.all(out[1, 2] == -1)
    np.testing.assert_allclose(out[1, 1], [2, .1, .1, .2, .2, 0])
    with pytest.raises(ValueError, match="object width"):
        strip_det_labels(raw, max_objects=3, object_width=5)


# ---------------------------------------------------------------- validation (no augmentation)
def test_no_aug_output_equals_raw_records_in_both_iterators(dataset):
    records, images, rec_path = dataset
    expected_data, expected_label = _expected(records, images, range(NUM_IMAGES))
    rec = RecordDetIter(rec_path, batch_size=4, data_shape=(3, H, W), max_objects=MAX_OBJECTS)
    folder = FolderDetIter(records, batch_size=4, data_shape=(3, H, W), max_objects=MAX_OBJECTS)
    for it in (rec, folder):
        assert it.provide_data[0].name == "data" and it.provide_data[0].shape == (4, 3, H, W)
        assert it.provide_label[0].name == "label" and it.provide_label[0].shape == (4, MAX_OBJECTS, 6)
        data, label, pads = _epoch(it)
        assert pads == [0, 0, 2]  # 10 images in batches of 4: the last batch repeats 2
        np.testing.assert_allclose(data[:NUM_IMAGES], expected_data, atol=1e-4)
        np.testing.assert_allclose(label[:NUM_IMAGES], expected_label, atol=1e-6)
    folder.close()


def test_validation_resize_matches_between_iterators(dataset):
    records, _, rec_path = dataset
    rec = RecordDetIter(rec_path, batch_size=5, data_shape=(3, 64, 80), max_objects=MAX_OBJECTS)
    folder = FolderDetIter(records, batch_size=5, data_shape=(3, 64, 80), max_objects=MAX_OBJECTS)
    d1, l1, _ = _epoch(rec)
    d2, l2, _ = _epoch(folder)
    folder.close()
    np.testing.assert_allclose(l1, l2, atol=1e-6)
    diff = np.abs(d1 - d2) * np.array(NORM.std)[:, None, None]  # back on the 0-255 scale
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 3.0


# ---------------------------------------------------------------- the .rec iterator augments
def test_record_iter_really_augments(dataset):
    records, images, rec_path = dataset
    expected_data, expected_label = _expected(records, images, range(NUM_IMAGES))
    it = RecordDetIter(rec_path, batch_size=5, data_shape=(3, H, W), max_objects=MAX_OBJECTS,
                       augment=Augmentation(), seed=3)
    labels_differ = pixels_differ = 0
    for _ in range(3):
        data, label, _ = _epoch(it)
        assert label.shape == (NUM_IMAGES, MAX_OBJECTS, 6)
        for i in range(NUM_IMAGES):
            labels_differ += not np.allclose(label[i], expected_label[i], atol=1e-3)
            pixels_differ += np.abs(data[i] - expected_data[i]).mean() > 0.05
        valid = label[label[:, :, 0] >= 0]
        assert np.all(valid[:, 1:5] >= 0) and np.all(valid[:, 1:5] <= 1)
        assert np.all(valid[:, 3] > valid[:, 1]) and np.all(valid[:, 4] > valid[:, 2])
        assert np.all(np.isin(valid[:, 5], [0, 1]))
        assert np.all(label[label[:, :, 0] < 0] == -1)
    assert labels_differ >= 15 and pixels_differ >= 20


def test_record_iter_geometric_augmentation_keeps_boxes_on_objects(dataset):
    _, _, rec_path = dataset
    # zoom-out + mirror: boxes are exact to a pixel
    pad_mirror = Augmentation(distort_prob=0.0, crop_samplers=())
    it = RecordDetIter(rec_path, batch_size=5, data_shape=(3, H, W), max_objects=MAX_OBJECTS,
                       augment=pad_mirror, seed=1)
    checked = sum(_assert_boxes_on_objects(*_epoch(it)[:2], tol_px=1.5) for _ in range(3))
    assert checked > 50
    # with crops: ImageDetRecordIter cuts whole source pixels but moves boxes by the exact crop,
    # so a box may be off by up to one source pixel (here up to ~4.7 output pixels when upscaled)
    it = RecordDetIter(rec_path, batch_size=5, data_shape=(3, H, W), max_objects=MAX_OBJECTS,
                       augment=GEOMETRY_ONLY, seed=1)
    checked = sum(_assert_boxes_on_objects(*_epoch(it)[:2], tol_px=5.5) for _ in range(3))
    assert checked > 40


def test_record_iter_mirror_only_flips_boxes(dataset):
    records, images, rec_path = dataset
    _, expected_label = _expected(records, images, range(NUM_IMAGES))
    mirror = Augmentation(distort_prob=0, expand_prob=0, crop_samplers=(), mirror_prob=1.0)
    data, label, _ = _epoch(RecordDetIter(rec_path, batch_size=5, data_shape=(3, H, W),
                                          max_objects=MAX_OBJECTS, augment=mirror))
    flipped = expected_label.copy()
    valid = flipped[:, :, 0] >= 0
    flipped[..., 1], flipped[..., 3] = 1 - expected_label[..., 3], 1 - expected_label[..., 1]
    np.testing.assert_allclose(label[valid], flipped[valid], atol=1e-6)
    expected_data, _ = _expected(records, images, range(NUM_IMAGES))
    np.testing.assert_allclose(data, expected_data[..., ::-1], atol=1e-4)


def _rec_with_bad_image(tmp_path, bad_bytes):
    path = str(tmp_path / "bad.rec")
    writer = mx.recordio.MXIndexedRecordIO(str(tmp_path / "bad.idx"), path, "w")
    for i in range(4):
        header = mx.recordio.IRHeader(0, np.array([2, 6, 0, .1, .1, .5, .5, 0], np.float32), i, 0)
        image = np.full((20, 20, 3), 100, np.uint8)
        writer.write_idx(i, mx.recordio.pack(header, bad_bytes) if i == 2
                         else mx.recordio.pack_img(header, image, img_fmt=".png"))
    writer.close()
    return path


def test_record_iter_skips_a_record_whose_image_is_not_whole(tmp_path):
    path = _rec_with_bad_image(tmp_path, b"\xff\xd8 not a jpeg, no end marker")
    it = RecordDetIter(path, batch_size=2, data_shape=(3, 20, 20), max_objects=2)
    assert it.check.report.files("truncated_image") == ["bad.rec record 2"]
    data, label, pads = _epoch(it)
    assert pads == [0, 1] and it.check.num_records == 3


def test_record_iter_bad_image_raises_an_error_naming_the_fix(tmp_path):
    # JPEG signature and end marker: passes the fast end-marker check, fails in the C++ decoder
    path = _rec_with_bad_image(tmp_path, b"\xff\xd8 not a jpeg at all \xff\xd9")
    with pytest.raises(DataError, match="(?s)bad.rec.*check_images='decode'.*pack_recordio"):
        _epoch(RecordDetIter(path, batch_size=2, data_shape=(3, 20, 20), max_objects=2))
    it = RecordDetIter(path, batch_size=2, data_shape=(3, 20, 20), max_objects=2, check_images="decode")
    assert it.check.report.files("corrupt_image") == ["bad.rec record 2"]
    assert _epoch(it)[2] == [0, 1]


def test_record_iter_label_rows_follow_the_data(dataset):
    records, _, rec_path = dataset
    it = RecordDetIter(rec_path, batch_size=5, data_shape=(3, H, W), max_objects=3)
    assert it.max_objects == 5 and it.provide_label[0].shape == (5, 5, 6)  # img04 holds 5 objects
    _, label, _ = _epoch(it)
    for lab, record in zip(label, records):
        np.testing.assert_allclose(lab[:record.num_objects], record.normalized_label(), atol=1e-6)
        assert (lab[record.num_objects:] == -1).all()


# ---------------------------------------------------------------- the folder iterator
def test_folder_iter_augments_and_keeps_boxes_on_objects(dataset):
    records, images, _ = dataset
    expected_data, expected_label = _expected(records, images, range(NUM_IMAGES))
    it = FolderDetIter(records, batch_size=4, data_shape=(3, H, W), max_objects=MAX_OBJECTS,
                       augment=GEOMETRY_ONLY, shuffle=False, seed=5, last_batch="discard")
    checked, differ = 0, 0
    for _ in range(4):
        data, label, pads = _epoch(it)
        assert pads == [0, 0] and label.shape == (8, MAX_OBJECTS, 6)
        checked += _assert_boxes_on_objects(data, label, tol_px=1.5)
        differ += sum(not np.allclose(label[i], expected_label[i], atol=1e-3) for i in range(8))
    it.close()
    assert checked > 50 and differ > 16


def test_folder_iter_is_deterministic_per_seed(dataset):
    records, _, _ = dataset
    kwargs = dict(batch_size=3, data_shape=(3, 48, 64), max_objects=MAX_OBJECTS,
                  augment=Augmentation(), shuffle=True)
    a = FolderDetIter(records, seed=7, num_workers=2, **kwargs)
    b = FolderDetIter(records, seed=7, num_workers=1, **kwargs)
    c = FolderDetIter(records, seed=8, num_workers=2, **kwargs)
    ea1, eb1, ec1 = _epoch(a), _epoch(b), _epoch(c)
    ea2 = _epoch(a)
    for x, y in zip(ea1[:2], eb1[:2]):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(ea1[0], ec1[0])
    assert not np.array_equal(ea1[0], ea2[0])  # a new epoch draws new augmentations
    for it in (a, b, c):
        it.close()


def test_folder_iter_skips_bad_images_with_a_counted_warning(dataset, tmp_path):
    records, images, _ = dataset
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 definitely not a jpeg")
    bad = [Record(path=str(broken), width=W, height=H),
           Record(path=str(tmp_path / "missing.png"), width=W, height=H)]
    mixed = records[:3] + bad[:1] + records[3:5] + bad[1:]
    it = FolderDetIter(mixed, batch_size=5, data_shape=(3, H, W), max_objects=MAX_OBJECTS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data, label, pads = _epoch(it)
    it.close()
    assert it.num_skipped == 2
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 2 and "broken.jpg" in messages[0] and "missing.png" in messages[1]
    assert pads == [0]
    expected_data, expected_label = _expected(records, images, range(5))
    np.testing.assert_allclose(data, expected_data, atol=1e-4)
    np.testing.assert_allclose(label, expected_label, atol=1e-6)


def test_folder_iter_label_rows_follow_the_data(dataset):
    records, _, _ = dataset
    it = FolderDetIter(records, batch_size=5, data_shape=(3, H, W), max_objects=4)
    assert it.max_objects == 5 and it.provide_label[0].shape == (5, 5, 6)  # img04 holds 5 objects
    _, label, _ = _epoch(it)
    it.close()
    np.testing.assert_allclose(label[4], records[4].normalized_label(), atol=1e-6)


def test_module_trains_from_folder_iter(dataset):
    records, _, _ = dataset
    it = FolderDetIter(records, batch_size=5, data_shape=(3, 32, 32), max_objects=MAX_OBJECTS,
                       augment=Augmentation(), last_batch="discard")
    data, label = mx.sym.var("data"), mx.sym.var("label")
    conv = mx.sym.Convolution(data, num_filter=2, kernel=(3, 3), name="conv")
    box = mx.sym.slice_axis(label, axis=2, begin=1, end=5)
    loss = mx.sym.MakeLoss(mx.sym.mean(mx.sym.square(mx.sym.mean(conv) - mx.sym.mean(box))))
    mod = mx.mod.Module(loss, data_names=["data"], label_names=["label"], context=mx.cpu())
    mod.fit(it, num_epoch=2, optimizer="sgd", optimizer_params={"learning_rate": 0.1},
            eval_metric=mx.metric.Loss())
    it.close()
    assert np.isfinite(mod.get_params()[0]["conv_weight"].asnumpy()).all()


def test_iterators_agree_on_a_packed_synthetic_dataset(tmp_path):
    """The readers' pack_recordio output (JPEG, 6-wide labels) reads back through RecordDetIter like
    the image files through FolderDetIter."""
    synth = make_synthetic_dataset(str(tmp_path), num_train=6, num_test=0, image_size=(80, 120))
    records = load_voc(synth.devkit, "2007/trainval", class_names=synth.class_file).records
    packed = pack_recordio(records, str(tmp_path / "train"))
    assert packed.num_images == 6
    max_objects = max(r.num_objects for r in records)
    shape = (3, 64, 64)
    d1, l1, _ = _epoch(RecordDetIter(packed.rec, batch_size=3, data_shape=shape, max_objects=max_objects))
    folder = FolderDetIter(records, batch_size=3, data_shape=shape, max_objects=max_objects)
    d2, l2, _ = _epoch(folder)
    folder.close()
    np.testing.assert_allclose(l1, l2, atol=1e-5)
    for label, record in zip(l2, records):
        np.testing.assert_allclose(label[:record.num_objects], record.normalized_label(), atol=1e-5)
        assert np.all(label[record.num_objects:] == -1)
    # same pixels up to the JPEG re-encoding of the .rec and resize rounding (0-255 scale)
    diff = np.abs(d1 - d2) * np.array(NORM.std)[:, None, None]
    assert diff.mean() < 3.0


def test_folder_iter_knows_its_batch_count(tmp_path):
    from ssdkit.dataset.records import Record

    path = str(tmp_path / "a.png")
    cv2.imwrite(path, np.zeros((20, 30, 3), np.uint8))
    records = [Record(path=path, width=30, height=20)] * 5
    for last_batch, expected in (("pad", 3), ("discard", 2)):
        it = FolderDetIter(records, batch_size=2, data_shape=(3, 16, 16), last_batch=last_batch, num_workers=1)
        assert it.num_batches == expected == sum(1 for _ in it)
