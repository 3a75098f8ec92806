"""RecordIO packing: labels, .lst, and the round trip through mx.io.ImageDetRecordIter."""
import os
import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import pytest

from ssdkit.dataset.coco import load_coco
from ssdkit.dataset.image import load_image_rgb
from ssdkit.dataset.prepare import prepare_dataset
from ssdkit.dataset.recordio import detection_label, pack_recordio, parse_detection_label, read_recordio
from ssdkit.dataset.records import Record
from ssdkit.dataset.synthetic import make_synthetic_dataset
from ssdkit.dataset.voc import load_voc

SHAPE = 160
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("rec"))
    info = make_synthetic_dataset(root, num_train=16, num_test=4, seed=5, image_size=(128, 200))
    voc = load_voc(info.devkit, "2007/trainval", class_names=info.class_file)
    return info, voc


def test_detection_label_hand_computed():
    rec = Record(path="x.jpg", width=100, height=50, boxes=[[10, 5, 60, 25], [0, 0, 100, 50]],
                 classes=[2, 0], difficult=[False, True])
    np.testing.assert_allclose(detection_label(rec), [2, 6, 2, .1, .1, .6, .5, 0, 0, 0, 0, 1, 1, 1], atol=1e-7)
    np.testing.assert_allclose(detection_label(rec, with_difficult=False), [2, 5, 2, .1, .1, .6, .5, 0, 0, 0, 1, 1],
                               atol=1e-7)
    empty = Record(path="y.jpg", width=10, height=10)
    np.testing.assert_array_equal(detection_label(empty), [2, 6, -1, -1, -1, -1, -1, -1])
    assert parse_detection_label(detection_label(empty)).shape == (0, 6)
    np.testing.assert_allclose(parse_detection_label(detection_label(rec))[:, 1:5] * [100, 50, 100, 50], rec.boxes,
                               atol=1e-4)


def test_pack_and_read_back(synth, tmp_path):
    _, voc = synth
    res = pack_recordio(voc, str(tmp_path / "out" / "train"))
    assert (res.num_images, res.num_objects) == (16, sum(r.num_objects for r in voc))
    back = read_recordio(str(tmp_path / "out" / "train"))
    assert len(back) == 16
    for orig, got in zip(voc, back):
        assert (got.width, got.height) == (orig.width, orig.height)
        np.testing.assert_allclose(got.boxes, orig.boxes, atol=1e-3)
        np.testing.assert_array_equal(got.classes, orig.classes)
        np.testing.assert_array_equal(got.difficult, orig.difficult)
    with open(res.lst) as f:
        lines = [line.rstrip("\n").split("\t") for line in f]
    assert [int(line[0]) for line in lines] == list(range(16))
    assert [line[-1] for line in lines] == [r.path for r in voc]
    for line, rec in zip(lines, voc):
        np.testing.assert_allclose([float(v) for v in line[1:-1]], detection_label(rec), atol=1e-5)


def _iterate(rec_path, batch_size, **aug):
    it = mx.io.ImageDetRecordIter(path_imgrec=rec_path, batch_size=batch_size, data_shape=(3, SHAPE, SHAPE),
                                  label_pad_width=64, label_pad_value=-1, shuffle=False, **aug)
    batches = []
    for batch in it:
        batches.append((batch.data[0].asnumpy(), batch.label[0].asnumpy(), batch.pad))
    return batches


def test_image_det_record_iter_round_trip(synth, tmp_path):
    """No augmentation: every image comes back in order with its boxes and classes."""
    _, voc = synth
    res = pack_recordio(voc, str(tmp_path / "train"))
    batches = _iterate(res.rec, batch_size=4)
    assert len(batches) == 4
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    for i, rec in enumerate(voc):
        row = labels[i]
        # [3, H, W, raw label length] then the packed label [2, 6, cls, xmin, ymin, xmax, ymax, difficult, ...]
        np.testing.assert_array_equal(row[:4], [3, SHAPE, SHAPE, 2 + 6 * rec.num_objects])
        objects = parse_detection_label(row[4:4 + int(row[3])])
        np.testing.assert_array_equal(objects[:, 0], rec.classes)
        np.testing.assert_array_equal(objects[:, 5] > 0.5, rec.difficult)
        pixels = objects[:, 1:5] * [rec.width, rec.height, rec.width, rec.height]
        np.testing.assert_allclose(pixels, rec.boxes, atol=1e-3)
        assert (row[4 + int(row[3]):] == -1).all()
        # the image is this record's picture (RGB, resized), not a neighbour's
        expected = cv2.resize(load_image_rgb(rec.path), (SHAPE, SHAPE)).astype(np.float32).transpose(2, 0, 1)
        own = np.abs(images[i] - expected).mean()
        other = np.abs(images[(i + 1) % len(voc)] - expected).mean()
        assert own < 4 and other > 8 * own, (own, other)


def test_coco_json_packs_the_same_labels_as_voc(synth, tmp_path):
    info, voc = synth
    coco = load_coco(info.coco_annotations["trainval"], info.image_dir)
    assert coco.class_names == voc.class_names and len(coco) == len(voc)
    for a, b in zip(voc, coco):
        assert a.path == b.path
        np.testing.assert_array_equal(detection_label(a), detection_label(b))
    pack_recordio(voc, str(tmp_path / "voc"))
    pack_recordio(coco, str(tmp_path / "coco"))
    with open(str(tmp_path / "voc.rec"), "rb") as f1, open(str(tmp_path / "coco.rec"), "rb") as f2:
        assert f1.read() == f2.read()


def test_empty_gray_and_rgba_images_pack_and_iterate(synth, tmp_path):
    _, voc = synth
    src = load_image_rgb(voc[0].path)
    gray_path, rgba_path = str(tmp_path / "gray.png"), str(tmp_path / "rgba.png")
    cv2.imwrite(gray_path, cv2.cvtColor(src, cv2.COLOR_RGB2GRAY))
    cv2.imwrite(rgba_path, cv2.cvtColor(src, cv2.COLOR_RGB2BGRA))
    h, w = src.shape[:2]
    records = [Record(path=voc[0].path, width=w, height=h),  # no objects
               Record(path=gray_path, width=w, height=h, boxes=voc[0].boxes, classes=voc[0].classes,
                      difficult=voc[0].difficult),
               Record(path=rgba_path, width=w, height=h, boxes=voc[0].boxes, classes=voc[0].classes,
                      difficult=voc[0].difficult),
               voc[1]]
    res = pack_recordio(records, str(tmp_path / "mixed"))
    back = read_recordio(str(tmp_path / "mixed"))
    assert back[0].num_objects == 0 and back[1].num_objects == voc[0].num_objects
    reader = mx.recordio.MXIndexedRecordIO(res.idx, res.rec, "r")
    _, payload = mx.recordio.unpack(reader.read_idx(2))
    reader.close()
    assert payload[:2] == b"\xff\xd8"  # re-encoded as JPEG
    # with augmentation on, an image without objects must not stop the iterator mid-epoch
    aug = dict(rand_crop_prob=1.0, num_crop_sampler=1, min_crop_scales=(0.3,), max_crop_scales=(1.0,),
               min_crop_overlaps=(0.5,), max_crop_overlaps=(1.0,), max_crop_trials=(25,), rand_pad_prob=0.5,
               max_pad_scale=2.0, rand_mirror_prob=0.5)
    for _ in range(3):
        (batch,) = _iterate(res.rec, batch_size=4, **aug)
        assert batch[0].shape == (4, 3, SHAPE, SHAPE)
    (plain,) = _iterate(res.rec, batch_size=4)
    assert (plain[1][0, 6:] == -1).all() and (plain[1][1, 6] >= 0)


def test_prepare_dataset_library_and_cli(synth, tmp_path):
    info, voc = synth
    target = str(tmp_path / "syn")
    results = prepare_dataset("voc", target, train=["2007/trainval"], val=["2007/test"], root=info.devkit,
                              class_names=info.class_file)
    assert results["train"].num_images == 16 and results["val"].num_images == 4
    for split in ("train", "val"):
        for ext in (".lst", ".rec", ".idx"):
            assert os.path.getsize("%s_%s%s" % (target, split, ext)) > 0
    with open(target + "_classes.txt") as f:
        assert tuple(f.read().split()) == voc.class_names

    cli = str(tmp_path / "cli")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "prepare_dataset.py"), "--dataset", "coco",
                           "--train", info.coco_annotations["trainval"], "--train-images", info.image_dir,
                           "--val", info.coco_annotations["test"], "--val-images", info.image_dir,
                           "--target", cli], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "train: 16 images" in proc.stdout and "val: 4 images" in proc.stdout
    with open(target + "_train.rec", "rb") as f1, open(cli + "_train.rec", "rb") as f2:
        assert f1.read() == f2.read()


def test_pack_skips_images_that_changed_since_loading(synth, tmp_path):
    _, voc = synth
    gone = Record(path=str(tmp_path / "deleted.jpg"), width=10, height=10)
    resized = Record(path=voc[2].path, width=voc[2].width + 1, height=voc[2].height)
    res = pack_recordio([voc[0], gone, resized, voc[1]], str(tmp_path / "skip"), workers=2)
    assert res.num_images == 2 and res.skipped == (gone.path, resized.path)
    back = read_recordio(str(tmp_path / "skip"))
    assert [r.image_id for r in back] == ["0", "1"]
    np.testing.assert_array_equal(back[1].classes, voc[1].classes)
