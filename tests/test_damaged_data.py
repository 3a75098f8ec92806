"""Damaged and inconsistent data (issue 21): every case is found at load time or at decode, skipped
with a per-kind count naming the file / record in the logged summary, or refused in strict mode.

Each test damages a copy of a small synthetic dataset (VOC + COCO json written by
:func:`ssdkit.dataset.synthetic.make_synthetic_dataset`) in one way and checks the count, the name in
the log and that exactly the damaged entry is left out."""
import json
import logging
import os
import shutil

import numpy as np
import pytest

from ssdkit.dataset.coco import load_coco
from ssdkit.dataset.image import ImageError, inspect_image, load_image_rgb
from ssdkit.dataset.lists import load_list
from ssdkit.dataset.synthetic import make_synthetic_dataset
from ssdkit.dataset.validation import DataError
from ssdkit.dataset.voc import load_voc

NUM_IMAGES = 8


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """An undamaged synthetic dataset (NUM_IMAGES training images); tests damage copies of it."""
    root = str(tmp_path_factory.mktemp("pristine"))
    make_synthetic_dataset(root, num_train=NUM_IMAGES, num_test=1, seed=3, image_size=(96, 128))
    return root


@pytest.fixture
def synth(pristine, tmp_path):
    """A private copy of the synthetic dataset: ``(root, devkit, image_dir, coco_json)``."""
    root = str(tmp_path / "synth")
    shutil.copytree(pristine, root)
    devkit = os.path.join(root, "VOCdevkit")
    return root, devkit, os.path.join(devkit, "VOC2007", "JPEGImages"), \
        os.path.join(root, "annotations", "instances_trainval.json")


def _summary(caplog):
    """The one load summary logged by a reader (logger ``ssdkit.dataset``)."""
    logged = [r for r in caplog.records if r.name == "ssdkit.dataset" and r.levelno == logging.WARNING]
    assert len(logged) == 1, [r.getMessage() for r in logged]
    return logged[0].getMessage()


def _rewrite_json(path, change):
    with open(path) as f:
        data = json.load(f)
    change(data)
    with open(path, "w") as f:
        json.dump(data, f)
    return data


# ---------------------------------------------------------------- images cut short
def test_jpeg_truncated_half_way_is_skipped_and_named(synth, caplog):
    root, devkit, image_dir, _ = synth
    victim = os.path.join(image_dir, "000003.jpg")
    with open(victim, "rb") as f:
        data = f.read()
    with open(victim, "wb") as f:
        f.write(data[:len(data) // 2])
    with caplog.at_level(logging.INFO, logger="ssdkit.dataset"):
        voc = load_voc(devkit, "2007/trainval", class_names=os.path.join(root, "classes.txt"))
    report = voc.reports[0]
    assert report.count("truncated_image") == 1 and report.files("truncated_image") == [victim]
    assert report.num_skipped == 1 and len(voc) == NUM_IMAGES - 1
    assert "000003" not in [r.image_id for r in voc]
    text = _summary(caplog)
    assert "7 images loaded, 1 skipped" in text and "truncated_image: 1" in text and "000003.jpg" in text
    # the decoder behind the iterators refuses it too (it used to return a half-grey picture)
    with pytest.raises(ImageError, match="000003.jpg is truncated") as err:
        load_image_rgb(victim)
    assert err.value.reason == "truncated"
    with pytest.raises(ImageError, match="truncated"):
        inspect_image(victim, "header")  # the header-only check reads the end marker as well


def test_complete_images_with_a_trailer_or_png_pass(tmp_path, rng):
    import cv2

    image = rng.integers(0, 255, (24, 32, 3), np.uint8)
    ok, jpeg = cv2.imencode(".jpg", image)
    trailer = tmp_path / "trailer.jpg"  # bytes after the EOI marker (some cameras append data): complete
    trailer.write_bytes(jpeg.tobytes() + b"maker notes" * 8)
    assert load_image_rgb(str(trailer)).shape == (24, 32, 3)
    ok, png = cv2.imencode(".png", image)
    (tmp_path / "a.png").write_bytes(png.tobytes())
    np.testing.assert_array_equal(load_image_rgb(str(tmp_path / "a.png")), image[:, :, ::-1])
    (tmp_path / "cut.png").write_bytes(png.tobytes()[:len(png) // 2])
    with pytest.raises(ImageError, match="cut.png"):
        load_image_rgb(str(tmp_path / "cut.png"))


# ---------------------------------------------------------------- COCO ids
def test_coco_images_sharing_an_id_are_skipped_not_merged(synth, caplog):
    _, _, image_dir, ann = synth

    def share_id(data):  # image 5 takes the id of image 4: their annotations become indistinguishable
        data["images"][4]["id"] = data["images"][3]["id"]

    data = _rewrite_json(ann, share_id)
    shared = data["images"][3]["id"]
    with caplog.at_level(logging.INFO, logger="ssdkit.dataset"):
        coco = load_coco(ann, image_dir)
    report = coco.reports[0]
    assert report.count("duplicate_id") == 2
    assert report.files("duplicate_id") == ["instances_trainval.json image id %d" % shared] * 2
    assert sorted(d.split(";")[0] for _, d in report.entries("duplicate_id")) == \
        ["file_name 000004.jpg", "file_name 000005.jpg"]
    assert len(coco) == NUM_IMAGES - 2 and str(shared) not in [r.image_id for r in coco]
    text = _summary(caplog)
    assert "duplicate_id: 2" in text and "000005.jpg" in text


def test_coco_annotations_of_unknown_images_are_counted(synth, caplog):
    _, _, image_dir, ann = synth
    before = load_coco(ann, image_dir)

    def orphan(data):
        data["annotations"][0]["image_id"] = 999
        data["annotations"].append(dict(data["annotations"][1], id=777, image_id=555))

    data = _rewrite_json(ann, orphan)
    with caplog.at_level(logging.INFO, logger="ssdkit.dataset"):
        coco = load_coco(ann, image_dir)
    report = coco.reports[0]
    assert report.count("orphan_annotation") == 2
    assert report.files("orphan_annotation") == ["instances_trainval.json annotation %d" % data["annotations"][0]["id"],
                                                 "instances_trainval.json annotation 777"]
    assert "image_id 999" in report.entries("orphan_annotation")[0][1]
    assert len(coco) == NUM_IMAGES  # no image is lost, the orphans' image lost its first object
    assert sum(r.num_objects for r in coco) == sum(r.num_objects for r in before) - 1
    text = _summary(caplog)
    assert "orphan_annotation: 2" in text and "annotation 777" in text


# ---------------------------------------------------------------- CSV lists
def _csv_from_voc(root, devkit, path, extra_row=None):
    """The synthetic training set as a CSV list (one row per object); ``extra_row`` (image index) gets
    one more value than the header."""
    voc = load_voc(devkit, "2007/trainval", class_names=os.path.join(root, "classes.txt"))
    names = voc.class_names
    lines = ["image,xmin,ymin,xmax,ymax,class,difficult"]
    for index, rec in enumerate(voc):
        for k, (box, cls, diff) in enumerate(zip(rec.boxes, rec.classes, rec.difficult)):
            row = "%s,%g,%g,%g,%g,%s,%d" % ((rec.path,) + tuple(box) + (names[cls], diff))
            if index == extra_row and k == 0:
                row += ",7"
            lines.append(row)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return voc


def test_csv_row_with_extra_values_is_skipped(synth, tmp_path, caplog):
    root, devkit, _, _ = synth
    path = str(tmp_path / "train.csv")
    voc = _csv_from_voc(root, devkit, path, extra_row=2)
    with caplog.at_level(logging.INFO, logger="ssdkit.dataset"):
        data = load_list(path, class_names=list(voc.class_names))
    report = data.reports[0]
    assert report.count("extra_columns") == 1
    (file, detail), = report.entries("extra_columns")
    assert voc[2].path in file and "8 values, the header has 7" in detail and "'7'" in detail
    assert [r.path for r in data] == [r.path for i, r in enumerate(voc) if i != 2]
    text = _summary(caplog)
    assert "extra_columns: 1" in text and os.path.basename(voc[2].path) in text


# ---------------------------------------------------------------- strict mode
def test_strict_mode_turns_every_skip_into_an_error_naming_it(synth, tmp_path):
    root, devkit, image_dir, ann = synth
    names = os.path.join(root, "classes.txt")
    assert len(load_voc(devkit, "2007/trainval", class_names=names, strict=True)) == NUM_IMAGES  # clean: fine
    victim = os.path.join(image_dir, "000006.jpg")
    with open(victim, "rb") as f:
        data = f.read()
    with open(victim, "wb") as f:
        f.write(data[:len(data) // 3])
    assert len(load_voc(devkit, "2007/trainval", class_names=names)) == NUM_IMAGES - 1
    with pytest.raises(DataError, match=r"(?s)strict mode refuses 1 .*truncated_image: .*000006\.jpg.*--strict"):
        load_voc(devkit, "2007/trainval", class_names=names, strict=True)
    _rewrite_json(ann, lambda d: d["annotations"].append(dict(d["annotations"][0], id=4242, image_id=31337)))
    with pytest.raises(DataError, match=r"(?s)orphan_annotation: instances_trainval.json annotation 4242"):
        load_coco(ann, image_dir, strict=True)
    path = str(tmp_path / "train.csv")
    _csv_from_voc(root, devkit, path, extra_row=0)
    with pytest.raises(DataError, match=r"extra_columns: train.csv \[.*000001.jpg\]"):
        load_list(path, class_names=names, strict=True)


def test_a_dataset_without_any_usable_image_is_an_error(synth):
    root, devkit, image_dir, _ = synth
    for name in os.listdir(image_dir):
        with open(os.path.join(image_dir, name), "wb") as f:
            f.write(b"\xff\xd8\xff")
    with pytest.raises(DataError, match="no usable record, all 8 were skipped"):
        load_voc(devkit, "2007/trainval", class_names=os.path.join(root, "classes.txt"))


# ---------------------------------------------------------------- RecordIO
@pytest.fixture(scope="module")
def packed(pristine, tmp_path_factory):
    """The synthetic training set packed to ``.rec`` / ``.idx``: ``(records, rec path, {key: offset})``."""
    from ssdkit.dataset.recordio import pack_recordio

    voc = load_voc(os.path.join(pristine, "VOCdevkit"), "2007/trainval",
                   class_names=os.path.join(pristine, "classes.txt"))
    result = pack_recordio(voc, str(tmp_path_factory.mktemp("packed") / "train"))
    with open(result.idx) as f:
        offsets = {int(k): int(v) for k, v in (line.split() for line in f)}
    return voc.records, result.rec, offsets


def _copy_rec(packed, tmp_path):
    _, rec, _ = packed
    target = str(tmp_path / "train.rec")
    shutil.copy(rec, target)
    shutil.copy(os.path.splitext(rec)[0] + ".idx", str(tmp_path / "train.idx"))
    return target


def _rec_epoch(path, **kwargs):
    """``(iterator, labels of every real sample (N, M, 6))`` of one pass with RecordDetIter (no shuffle)."""
    from ssdkit.dataset.rec_iter import RecordDetIter

    it = RecordDetIter(path, batch_size=2, data_shape=(3, 64, 64), num_threads=1, **kwargs)
    labels = []
    for batch in it:
        label = batch.label[0].asnumpy()
        labels.extend(label[:len(label) - batch.pad])
    return it, np.stack(labels)


def _expected_labels(records, keep, rows):
    out = np.full((len(keep), rows, 6), -1.0, np.float32)
    for j, i in enumerate(keep):
        out[j, :records[i].num_objects] = records[i].normalized_label()
    return out


def _assert_rec_skips(packed, path, expected, caplog, **kwargs):
    """Iterate ``path`` and check that exactly the records ``expected`` {key: kind} were skipped, named
    in the log, and that the others come out with their labels, in order."""
    records, _, _ = packed
    with caplog.at_level(logging.INFO, logger="ssdkit.dataset"):
        it, labels = _rec_epoch(path, **kwargs)
    report = it.check.report
    kinds = {}
    for kind in ("bad_record", "bad_label", "corrupt_image", "truncated_image"):
        for file in report.files(kind):
            kinds[int(file.rsplit(" ", 1)[1])] = kind
    assert kinds == expected
    assert report.num_skipped == len(expected) and it.check.num_records == len(records) - len(expected)
    assert it.check.path.endswith("train.clean.rec")
    keep = [i for i in range(len(records)) if i not in expected]
    np.testing.assert_allclose(labels, _expected_labels(records, keep, it.max_objects), atol=1e-5)
    text = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "%d skipped" % len(expected) in text
    for key in expected:
        assert "train.rec record %d" % key in text
    return report


def test_rec_random_bytes_in_the_middle_skip_the_records_they_hit(packed, tmp_path, caplog):
    _, _, offsets = packed
    path = _copy_rec(packed, tmp_path)
    start = offsets[3] + 2  # garbles record 3's header and whatever follows in 4 KiB
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(np.random.default_rng(1).integers(0, 256, 4096, np.uint8).tobytes())
    hit = {k: "bad_record" for k, off in offsets.items() if offsets[3] <= off < start + 4096}
    assert len(hit) >= 1
    _assert_rec_skips(packed, path, hit, caplog)


def test_rec_zeroed_block_truncates_one_image_and_loses_the_next_records(packed, tmp_path, caplog):
    _, _, offsets = packed
    path = _copy_rec(packed, tmp_path)
    start = offsets[5] - 40  # the end of record 4's image, then record 5's header and on
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(bytes(4096))
    expected = {k: "bad_record" for k, off in offsets.items() if start <= off < start + 4096}
    expected[4] = "truncated_image"
    report = _assert_rec_skips(packed, path, expected, caplog)
    assert "FFD9" in report.entries("truncated_image")[0][1]


def _rewrite_labels(packed, tmp_path, change):
    """A copy of the packed file whose labels ``change(key, label)`` may alter."""
    import mxnet as mx

    _, rec, offsets = packed
    reader = mx.recordio.MXIndexedRecordIO(os.path.splitext(rec)[0] + ".idx", rec, "r")
    path = str(tmp_path / "train.rec")
    writer = mx.recordio.MXIndexedRecordIO(str(tmp_path / "train.idx"), path, "w")
    for key in sorted(offsets):
        header, image = mx.recordio.unpack(reader.read_idx(key))
        label = change(key, np.array(header.label, np.float32))
        writer.write_idx(key, mx.recordio.pack(header._replace(flag=len(label), label=label), image))
    reader.close()
    writer.close()
    return path


def _bad_labels(key, label):
    if key == 2:
        label[2] = 99  # the first object's class, of 6
    if key == 5:
        label[2 + 1] = np.nan  # the first object's xmin
    return label


def test_rec_labels_with_class_99_or_nan_are_skipped(packed, tmp_path, caplog):
    path = _rewrite_labels(packed, tmp_path, _bad_labels)
    report = _assert_rec_skips(packed, path, {2: "bad_label", 5: "bad_label"}, caplog, num_classes=6)
    details = [d for _, d in report.entries("bad_label")]
    assert "object 0 has class 99, outside [0, 6)" in details[0] and "object 0 has a non-finite" in details[1]


def test_rec_strict_mode_refuses_the_damaged_record(packed, tmp_path):
    path = _rewrite_labels(packed, tmp_path, _bad_labels)
    with pytest.raises(DataError, match=r"(?s)strict mode refuses 2 .*bad_label: train.rec record 2 .*class 99"):
        _rec_epoch(path, num_classes=6, strict=True)
    clean = _copy_rec(packed, tmp_path / "..")  # an undamaged file is read as it is, also in strict mode
    it, labels = _rec_epoch(clean, num_classes=6, strict=True)
    assert it.check.path == clean and len(labels) == NUM_IMAGES


# ---------------------------------------------------------------- many objects, config and flag
def _crowded_list(tmp_path, rng, counts=(60, 2, 3, 1), size=96):
    """A CSV list of grey images holding ``counts[i]`` small solid squares each (6 classes)."""
    import cv2

    rows = ["image,xmin,ymin,xmax,ymax,class"]
    for i, count in enumerate(counts):
        image = np.full((size, size, 3), 128, np.uint8)
        for k in range(count):  # an 8 x 8 grid of 12-px cells, one 8-px square per cell
            x0, y0 = 12 * (k % 8) + 2, 12 * (k // 8) + 2
            image[y0:y0 + 8, x0:x0 + 8] = rng.integers(0, 255, 3)
            rows.append("img%d.png,%d,%d,%d,%d,c%d" % (i, x0, y0, x0 + 8, y0 + 8, k % 6))
        cv2.imwrite(str(tmp_path / ("img%d.png" % i)), image)
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    return str(tmp_path / "train.csv")


def test_an_image_with_60_objects_trains(tmp_path, rng):
    from ssdkit.api.train import train_detector
    from ssdkit.config import apply_overrides, load_config

    csv_path = _crowded_list(tmp_path, rng)
    config = apply_overrides(load_config("tiny_256_synthetic"), {
        "model.class_names": tuple("c%d" % k for k in range(6)), "model.data_shape": 64,
        "data.format": "list", "data.root": "", "data.train": (csv_path,), "data.val": (), "data.batch_size": 2,
        "data.num_workers": 1, "solver.epochs": 1, "runtime.prefix": str(tmp_path / "ssd")})
    assert config.data.max_objects == 16  # the preset's padding: 60 objects used to stop training
    result = train_detector(config, progress=False)
    assert result["module"].label_shapes[0].shape == (2, 60, 6)
    assert np.isfinite(result["history"].rows[-1]["CrossEntropy"])


def test_an_image_with_60_objects_iterates_from_a_rec_file(tmp_path, rng):
    from ssdkit.dataset.recordio import pack_recordio

    data = load_list(_crowded_list(tmp_path, rng), class_names=["c%d" % k for k in range(6)])
    packed = pack_recordio(data, str(tmp_path / "crowd"))
    it, labels = _rec_epoch(packed.rec, max_objects=8, num_classes=6)
    assert it.max_objects == 60 and it.provide_label[0].shape == (2, 60, 6) and len(labels) == 4
    np.testing.assert_allclose(labels, _expected_labels(data.records, range(4), 60), atol=1e-5)


def test_strict_is_a_config_key_and_a_flag_of_both_scripts(synth):
    import argparse

    from ssdkit.api.data import load_split
    from ssdkit.cli import add_config_flags, overrides_from_args
    from ssdkit.config import apply_overrides, load_config

    for training in (True, False):
        parser = add_config_flags(argparse.ArgumentParser(), training=training)
        assert overrides_from_args(parser.parse_args(["--strict"]), training=training) == {"data.strict": True}
        assert "data.strict" not in overrides_from_args(parser.parse_args([]), training=training)
    root, devkit, image_dir, _ = synth
    victim = os.path.join(image_dir, "000002.jpg")
    with open(victim, "r+b") as f:
        f.truncate(os.path.getsize(victim) // 2)
    config = apply_overrides(load_config("tiny_256_synthetic"), {"data.root": devkit, "data.val": ()})
    assert config.data.strict is False and len(load_split(config, "train")) == NUM_IMAGES - 1
    with pytest.raises(DataError, match=r"(?s)truncated_image: .*000002\.jpg"):
        load_split(apply_overrides(config, {"data.strict": True}), "train")


# ---------------------------------------------------------------- the RecordIO scanner's parts
def test_scanner_reads_multi_part_records_like_mxnet(tmp_path):
    """A payload holding the magic at an aligned position is split by MXNet's writer; the scanner joins
    the parts back (and damage-free files give no damaged stretch)."""
    import mxnet as mx

    from ssdkit.dataset.rec_check import MAGIC_BYTES, scan_frames

    payloads = [b"abcde", b"1234" + MAGIC_BYTES + b"5678" + MAGIC_BYTES + b"9", b"x" + MAGIC_BYTES + b"yz", b"",
                MAGIC_BYTES * 3]
    path = str(tmp_path / "parts.rec")
    writer = mx.recordio.MXRecordIO(path, "w")
    for p in payloads:
        writer.write(p)
    writer.close()
    with open(path, "rb") as f:
        frames = list(scan_frames(f.read()))
    assert [bytes(src[a:b]) for _, _, (src, a, b) in frames] == payloads
    assert frames[0][0] == 0 and all(f[1] == g[0] for f, g in zip(frames, frames[1:]))


@pytest.mark.parametrize("label, problem", [
    ([2, 6, 1, .1, .2, .5, .6, 0], None),
    ([2, 6, 1, .1, .2, .5, .6, 0, -1, -1, -1, -1, -1, -1], None),  # a padding row
    ([2, 6, 6, .1, .2, .5, .6, 0], "object 0 has class 6, outside [0, 6)"),
    ([2, 6, 1.5, .1, .2, .5, .6, 0], "object 0 has class 1.5"),
    ([2, 6, -2, .1, .2, .5, .6, 0], "object 0 has class -2"),
    ([2, 6, 1, .1, .2, .5, .6, 0, 0, np.inf, .2, .5, .6, 0], "object 1 has a non-finite value"),
    ([2, 6, 1, .5, .2, .1, .6, 0], "inverted or empty"),
    ([2, 6, 1, .1, .2, 1.5, .6, 0], "outside [0, 1]"),
    ([2, 5, 1, .1, .2, .5, .6], "objects of 5 values, the iterator expects 6"),
    ([2, 6, 1, .1, .2, .5, .6], "5 values after the header do not make rows of 6"),
    ([2, 6], "0 values after the header"),
    ([7.0], "label of 1 value(s)"),
    ([np.nan, 6, 1, .1, .2, .5, .6, 0], "non-finite label header"),
])
def test_label_checks(label, problem):
    from ssdkit.dataset.rec_check import _count_if_valid, label_problem

    count, found = label_problem(np.array(label, np.float32), num_classes=6)
    fast = _count_if_valid(tuple(float(v) for v in np.array(label, np.float32)), 6, 6)
    if problem is None:
        assert found is None and count == fast == 1
    else:
        assert problem in found and fast is None


def test_voc_and_json_list_repeats_are_counted_once_kept_once(synth, tmp_path):
    root, devkit, image_dir, _ = synth
    set_file = os.path.join(devkit, "VOC2007", "ImageSets", "Main", "trainval.txt")
    with open(set_file, "a") as f:
        f.write("\n000002\n")  # a blank line, then a repeat: line 10
    voc = load_voc(devkit, "2007/trainval", class_names=os.path.join(root, "classes.txt"))
    assert len(voc) == NUM_IMAGES and [r.image_id for r in voc].count("000002") == 1
    assert voc.reports[0].entries("duplicate_id") == [(set_file + " line 10", "000002 listed again")]
    doc = {"classes": list(voc.class_names),
           "images": [{"file": "000001.jpg"}, {"file": "000002.jpg"}, {"file": "000001.jpg"}]}
    path = os.path.join(image_dir, "list.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    data = load_list(path)
    assert [os.path.basename(r.path) for r in data] == ["000001.jpg", "000002.jpg"]
    (file, detail), = data.reports[0].entries("duplicate_id")
    assert "images[2] lists 000001.jpg again (first: images[0])" == detail


def test_folder_iter_counts_or_refuses_an_image_damaged_after_loading(synth):
    import warnings

    from ssdkit.dataset.folder_iter import FolderDetIter

    root, devkit, image_dir, _ = synth
    voc = load_voc(devkit, "2007/trainval", class_names=os.path.join(root, "classes.txt"))
    victim = os.path.join(image_dir, "000004.jpg")
    with open(victim, "r+b") as f:  # damaged after the load-time check
        f.truncate(os.path.getsize(victim) // 2)
    kwargs = dict(batch_size=4, data_shape=(3, 64, 64), num_workers=1)
    it = FolderDetIter(voc.records, **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pads = [batch.pad for batch in it]
    it.close()
    assert it.num_skipped == 1 and pads == [0, 1]
    assert any("000004.jpg" in str(w.message) and "truncated" in str(w.message) for w in caught)
    strict = FolderDetIter(voc.records, strict=True, **kwargs)
    with pytest.raises(DataError, match="strict mode: image .*000004.jpg cannot be used .*truncated"):
        list(strict)
    strict.close()


def test_rec_config_passes_the_class_count_and_strict(packed, tmp_path):
    from ssdkit.api.family import make_iterator
    from ssdkit.config import apply_overrides, load_config

    path = _rewrite_labels(packed, tmp_path, _bad_labels)
    config = apply_overrides(load_config("tiny_256_synthetic"), {
        "data.format": "rec", "data.train": (path,), "data.val": (), "model.data_shape": 64, "data.batch_size": 2,
        "data.num_workers": 1})
    it = make_iterator(config, "train")
    assert it.check.report.count("bad_label") == 2 and it.check.num_records == NUM_IMAGES - 2  # class 99 of 6
    with pytest.raises(DataError, match="train.rec record 2"):
        make_iterator(apply_overrides(config, {"data.strict": True}), "train")


def test_data_errors_raised_mid_training_are_user_errors(capsys):
    """A strict-mode or C++-decoder error from an iterator surfaces inside the training loop: as a
    UserError (and a ValueError) the scripts print it as one ``error:`` line and exit 2."""
    from ssdkit.cli import run_script
    from ssdkit.errors import UserError

    def main(argv):
        raise DataError("strict mode: image x.jpg cannot be used (truncated)")

    assert issubclass(DataError, UserError) and issubclass(DataError, ValueError)
    assert run_script(main, []) == 2
    assert capsys.readouterr().err == "error: strict mode: image x.jpg cannot be used (truncated)\n"
