"""Dataset readers (VOC, COCO, list), concatenation, image decoding and the bad-data matrix."""
import json
import logging
import os

import cv2
import numpy as np
import pytest

from ssdkit.dataset.coco import load_coco
from ssdkit.dataset.collection import concat_datasets, read_class_names
from ssdkit.dataset.image import ImageError, inspect_image, load_image_rgb
from ssdkit.dataset.lists import load_list
from ssdkit.dataset.validation import sanitize_boxes
from ssdkit.dataset.voc import VOC_CLASSES, load_voc

CLASSES = ("cat", "dog")


def _write_jpg(path, width=40, height=30, value=128):
    img = np.full((height, width, 3), value, np.uint8)
    img[5:15, 5:20] = (0, 0, 255)
    cv2.imwrite(str(path), img)


def _xml(objects, width=40, height=30):
    objs = "".join("<object><name>%s</name><difficult>%d</difficult><bndbox><xmin>%s</xmin><ymin>%s</ymin>"
                   "<xmax>%s</xmax><ymax>%s</ymax></bndbox></object>" % o for o in objects)
    return "<annotation><size><width>%d</width><height>%d</height><depth>3</depth></size>%s</annotation>" % (
        width, height, objs)


def _voc(tmp_path, items, set_name="trainval"):
    """items: stem -> (xml text or None, image writer or None). Returns the VOCdevkit path."""
    base = tmp_path / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for stem, (xml, image) in items.items():
        if xml is not None:
            (base / "Annotations" / (stem + ".xml")).write_text(xml)
        if image is not None:
            image(base / "JPEGImages" / (stem + ".jpg"))
    (base / "ImageSets" / "Main" / (set_name + ".txt")).write_text("".join(s + "\n" for s in items))
    return str(tmp_path / "VOCdevkit")


# --- Pascal VOC -------------------------------------------------------------------------------------------

def test_voc_reads_boxes_classes_difficult(tmp_path):
    root = _voc(tmp_path, {"a": (_xml([("dog", 0, 6, 11, 20, 15), ("cat", 1, 1, 1, 40, 30)]), _write_jpg)})
    data = load_voc(root, "VOC2007/trainval", class_names=list(CLASSES))
    (rec,) = data.records
    assert (rec.width, rec.height, rec.image_id) == (40, 30, "a")
    # VOC 1-based inclusive (6, 11, 20, 15) -> 0-based corners (5, 10, 20, 15)
    np.testing.assert_array_equal(rec.boxes, [[5, 10, 20, 15], [0, 0, 40, 30]])
    np.testing.assert_array_equal(rec.classes, [1, 0])
    np.testing.assert_array_equal(rec.difficult, [False, True])
    assert data.class_names == CLASSES
    easy = load_voc(root, ["2007/trainval"], class_names=list(CLASSES), keep_difficult=False)
    np.testing.assert_array_equal(easy[0].classes, [1])


def test_voc_default_classes_and_class_file(tmp_path):
    root = _voc(tmp_path, {"a": (_xml([("tvmonitor", 0, 2, 2, 10, 10)]), _write_jpg)})
    data = load_voc(root)
    assert data.class_names == VOC_CLASSES and data[0].classes.tolist() == [19]
    names = tmp_path / "names.txt"
    names.write_text("# my classes\ntvmonitor\n\nperson\n")
    assert read_class_names(str(names)) == ("tvmonitor", "person")
    assert load_voc(root, class_names=str(names))[0].classes.tolist() == [0]


def test_voc_missing_set_file_is_a_clear_error(tmp_path):
    root = _voc(tmp_path, {"a": (_xml([]), _write_jpg)})
    with pytest.raises(FileNotFoundError, match="test.txt"):
        load_voc(root, "2007/test")


def test_voc_unknown_class_names_file_and_known_classes(tmp_path):
    root = _voc(tmp_path, {"a": (_xml([("horse", 0, 2, 2, 10, 10)]), _write_jpg)})
    with pytest.raises(ValueError) as err:
        load_voc(root, class_names=list(CLASSES))
    msg = str(err.value)
    assert "'horse'" in msg and "a.xml" in msg and "cat, dog" in msg


def test_voc_bad_data_matrix(tmp_path, caplog):
    def corrupt(path):
        path.write_bytes(b"this is not an image")

    def gray_png_named_jpg(path):  # a grayscale PNG behind a .jpg name, as found in the wild
        ok, buf = cv2.imencode(".png", np.full((30, 40), 77, np.uint8))
        path.write_bytes(buf.tobytes())

    items = {
        "good": (_xml([("cat", 0, 1, 1, 10, 10)]), _write_jpg),
        "noimage": (_xml([("cat", 0, 1, 1, 10, 10)]), None),
        "corrupt": (_xml([("cat", 0, 1, 1, 10, 10)]), corrupt),
        "badxml": ("<annotation><size>", _write_jpg),
        "noxml": (None, _write_jpg),
        "nobox": ("<annotation><object><name>cat</name></object></annotation>", _write_jpg),
        "outside": (_xml([("cat", 0, -5, 3, 100, 20), ("dog", 0, 50, 1, 60, 10)]), _write_jpg),
        "degenerate": (_xml([("cat", 0, 11, 5, 10, 20), ("dog", 0, 5, 9, 20, 8), ("dog", 0, 3, 3, 8, 8)]),
                       _write_jpg),
        "empty": (_xml([]), _write_jpg),
        "gray": (_xml([("dog", 0, 2, 2, 10, 10)]), gray_png_named_jpg),
        "wrongsize": (_xml([("dog", 0, 2, 2, 45, 10)], width=50, height=50), _write_jpg),
    }
    root = _voc(tmp_path, items)
    with caplog.at_level(logging.INFO, logger="ssdkit.dataset"):
        data = load_voc(root, class_names=list(CLASSES))
    (report,) = data.reports
    by_id = {r.image_id: r for r in data}
    assert sorted(by_id) == sorted(["good", "outside", "degenerate", "empty", "gray", "wrongsize"])

    def files(kind):
        return [os.path.basename(f) for f in report.files(kind)]

    assert files("missing_image") == ["noimage.jpg"]
    assert files("corrupt_image") == ["corrupt.jpg"]
    assert files("missing_annotation") == ["noxml.xml"]
    assert sorted(files("bad_annotation")) == ["badxml.xml", "nobox.xml"]
    assert report.num_skipped == 5 and report.num_records == 6
    # clipped: (-6, 2, 100, 20) -> (0, 2, 40, 20); (49, 0, 60, 10) is entirely outside -> dropped
    np.testing.assert_array_equal(by_id["outside"].boxes, [[0, 2, 40, 20]])
    assert files("clipped_box") == ["outside.xml", "wrongsize.xml"]
    # inverted x, inverted y dropped; the valid third box kept
    np.testing.assert_array_equal(by_id["degenerate"].boxes, [[2, 2, 8, 8]])
    assert sorted(files("dropped_box")) == ["degenerate.xml", "degenerate.xml", "outside.xml"]
    assert by_id["empty"].num_objects == 0 and files("no_objects") == ["empty.xml"]
    assert files("converted_image") == ["gray.jpg"]
    assert "grayscale" in report.entries("converted_image")[0][1]
    # the annotation said 50x50, the image is 40x30: image size wins, box clipped to it
    assert (by_id["wrongsize"].width, by_id["wrongsize"].height) == (40, 30)
    np.testing.assert_array_equal(by_id["wrongsize"].boxes, [[1, 1, 40, 10]])
    assert files("size_mismatch") == ["wrongsize.xml"]

    # the summary is logged once, as a warning, with counts and file names
    logged = [r for r in caplog.records if r.name == "ssdkit.dataset"]
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING
    text = logged[0].getMessage()
    assert "6 images loaded, 5 skipped" in text
    assert "missing_image: 1" in text and "noimage.jpg" in text and "dropped_box: 3" in text

    # nothing that passed loading can fail later: every record decodes to its size, boxes valid
    for rec in data:
        img = load_image_rgb(rec.path)
        assert img.shape == (rec.height, rec.width, 3) and img.dtype == np.uint8
        b = rec.boxes
        assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()
        assert (b >= 0).all() and (b[:, [0, 2]] <= rec.width).all() and (b[:, [1, 3]] <= rec.height).all()


def test_header_check_mode_still_catches_missing_and_corrupt(tmp_path):
    root = _voc(tmp_path, {"good": (_xml([("cat", 0, 1, 1, 10, 10)]), _write_jpg),
                           "corrupt": (_xml([]), lambda p: p.write_bytes(b"\x00" * 64)),
                           "noimage": (_xml([]), None)})
    data = load_voc(root, class_names=list(CLASSES), check_images="header")
    assert [r.image_id for r in data] == ["good"]
    assert data.reports[0].count("corrupt_image") == 1 and data.reports[0].count("missing_image") == 1


def test_sanitize_boxes_hand_computed():
    boxes = [[-1, 2, 5, 6], [3, 3, 3, 9], [4, 1, 2, 5], [np.nan, 0, 1, 1], [10, 10, 12, 12], [1, 1, 2, 2]]
    clipped, keep, changed = sanitize_boxes(boxes, width=8, height=8)
    np.testing.assert_array_equal(keep, [True, False, False, False, False, True])
    np.testing.assert_array_equal(changed, [True, False, False, False, False, False])
    np.testing.assert_array_equal(clipped[0], [0, 2, 5, 6])


# --- images -----------------------------------------------------------------------------------------------

def test_load_image_rgb_converts_gray_rgba_16bit_png(tmp_path):
    bgr = np.zeros((6, 7, 3), np.uint8)
    bgr[..., 2] = 200  # red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "rgb.png"), bgr)
    cv2.imwrite(str(tmp_path / "gray.png"), np.full((6, 7), 90, np.uint8))
    cv2.imwrite(str(tmp_path / "rgba.png"), np.concatenate([bgr, np.full((6, 7, 1), 10, np.uint8)], 2))
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((6, 7), 40000, np.uint16))
    np.testing.assert_array_equal(load_image_rgb(str(tmp_path / "rgb.png"))[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(load_image_rgb(str(tmp_path / "gray.png"))[0, 0], [90, 90, 90])
    np.testing.assert_array_equal(load_image_rgb(str(tmp_path / "rgba.png"))[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(load_image_rgb(str(tmp_path / "deep.png"))[0, 0], [156, 156, 156])
    for name in ("rgb", "gray", "rgba", "deep"):
        assert load_image_rgb(str(tmp_path / (name + ".png"))).shape == (6, 7, 3)
    assert inspect_image(str(tmp_path / "rgba.png")).notes == ("alpha", "png")
    assert inspect_image(str(tmp_path / "deep.png")).notes == ("grayscale", "16-bit", "png")
    assert inspect_image(str(tmp_path / "gray.png"), "header").notes == ("grayscale", "png")


def test_load_image_rgb_errors_name_the_file(tmp_path):
    with pytest.raises(ImageError, match="nope.jpg not found"):
        load_image_rgb(str(tmp_path / "nope.jpg"))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8garbage")
    with pytest.raises(ImageError, match="bad.jpg cannot be decoded"):
        load_image_rgb(str(bad))


# --- COCO -------------------------------------------------------------------------------------------------

def _coco(tmp_path, extra_images=(), extra_anns=()):
    img_dir = tmp_path / "images"
    img_dir.mkdir(exist_ok=True)
    for name in ("1.jpg", "2.jpg"):
        _write_jpg(img_dir / name)
    data = {
        "images": [{"id": 1, "file_name": "1.jpg", "width": 40, "height": 30},
                   {"id": 2, "file_name": "2.jpg", "width": 40, "height": 30}] + list(extra_images),
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [5, 10, 15, 5], "area": 75, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 1},
            {"id": 3, "image_id": 1, "category_id": 3, "bbox": [30, 20, 20, 20], "area": 400, "iscrowd": 0},
        ] + list(extra_anns),
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return str(path), str(img_dir)


def test_coco_contiguous_ids_crowd_and_empty_images(tmp_path):
    ann, img_dir = _coco(tmp_path)
    data = load_coco(ann, img_dir)
    assert data.class_names == ("cat", "dog")  # category ids 3, 7 -> 0, 1
    first, second = data.records
    np.testing.assert_array_equal(first.boxes, [[5, 10, 20, 15], [30, 20, 40, 30]])  # 2nd clipped
    np.testing.assert_array_equal(first.classes, [1, 0])
    assert not first.difficult.any()
    assert second.num_objects == 0 and first.image_id == "1"
    report = data.reports[0]
    assert report.count("crowd") == 1 and report.count("clipped_box") == 1 and report.count("no_objects") == 1

    flagged = load_coco(ann, img_dir, crowd="difficult")[0]
    np.testing.assert_array_equal(flagged.classes, [1, 0, 0])
    np.testing.assert_array_equal(flagged.difficult, [False, True, False])


def test_coco_bad_data(tmp_path):
    ann, img_dir = _coco(tmp_path, extra_images=[{"id": 3, "file_name": "missing.jpg", "width": 4, "height": 4},
                                                 {"id": 4, "file_name": "2.jpg", "width": 40, "height": 30},
                                                 {"id": 5, "file_name": "1.jpg", "width": 40, "height": 30}],
                         extra_anns=[{"id": 9, "image_id": 4, "category_id": 99, "bbox": [1, 1, 2, 2]},
                                     {"id": 10, "image_id": 2, "category_id": 3, "bbox": [1, 1, 0, 5]},
                                     {"id": 11, "image_id": 5, "category_id": 3, "bbox": [1, "a", 2, 2]}])
    data = load_coco(ann, img_dir)
    report = data.reports[0]
    assert [r.image_id for r in data] == ["1", "2"]
    assert [os.path.basename(f) for f in report.files("missing_image")] == ["missing.jpg"]
    bad = report.entries("bad_annotation")
    assert len(bad) == 2 and "category_id 99" in bad[0][1] and "non-numeric bbox" in bad[1][1]
    assert report.count("dropped_box") == 1 and data[1].num_objects == 0

    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        load_coco(str(broken), img_dir)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"images": []}')
    with pytest.raises(ValueError, match="wrong.json: not a COCO instances file"):
        load_coco(str(wrong), img_dir)


# --- list / CSV / JSON ------------------------------------------------------------------------------------

def test_csv_list(tmp_path, caplog):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        _write_jpg(tmp_path / name)
    (tmp_path / "train.csv").write_text(
        "image,xmin,ymin,xmax,ymax,class,difficult\n"
        "a.jpg,5,10,20,15,dog,0\n"
        "b.jpg,,,,,,\n"
        "a.jpg,0,0,10,10,cat,1\n"
        "c.jpg,1,x,3,4,cat,0\n"
        "d.jpg,1,1,3,4,cat,0\n")
    with caplog.at_level(logging.INFO, logger="ssdkit.dataset"):
        data = load_list(str(tmp_path / "train.csv"))
    assert data.class_names == ("cat", "dog")  # sorted names found, logged
    assert any("sorted" in r.getMessage() for r in caplog.records)
    a, b = data.records
    assert a.path == str(tmp_path / "a.jpg") and (a.width, a.height) == (40, 30)
    np.testing.assert_array_equal(a.boxes, [[5, 10, 20, 15], [0, 0, 10, 10]])
    np.testing.assert_array_equal(a.classes, [1, 0])
    np.testing.assert_array_equal(a.difficult, [False, True])
    assert b.num_objects == 0
    report = data.reports[0]
    assert report.count("bad_annotation") == 1 and "line 5" in report.entries("bad_annotation")[0][1]
    assert [os.path.basename(f) for f in report.files("missing_image")] == ["d.jpg"]

    with pytest.raises(ValueError, match=r"unknown class name 'dog'.*Known classes \(1\): cat"):
        load_list(str(tmp_path / "train.csv"), class_names=["cat"])
    (tmp_path / "bad.csv").write_text("file,x0\na.jpg,1\n")
    with pytest.raises(ValueError, match="missing CSV column"):
        load_list(str(tmp_path / "bad.csv"))


def test_json_list_and_concat(tmp_path):
    _write_jpg(tmp_path / "a.jpg")
    doc = {"classes": ["cat", "dog"],
           "images": [{"file": "a.jpg", "objects": [{"box": [5, 10, 20, 15], "class": 1},
                                                    {"box": [1, 1, 3, 3], "class": "cat", "difficult": 1}]},
                      {"file": "a.jpg", "objects": [{"class": "cat"}]}]}
    (tmp_path / "a.json").write_text(json.dumps(doc))
    data = load_list(str(tmp_path / "a.json"))
    assert len(data) == 1 and data.reports[0].count("bad_annotation") == 1
    np.testing.assert_array_equal(data[0].classes, [1, 0])
    np.testing.assert_array_equal(data[0].difficult, [False, True])
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        load_list(str(tmp_path / "broken.json"))

    both = concat_datasets([data, data])
    assert len(both) == 2 and both.class_names == ("cat", "dog") and len(both.reports) == 2
    np.testing.assert_array_equal(both.class_counts(), [2, 2])
    root = _voc(tmp_path, {"v": (_xml([("cat", 0, 1, 1, 10, 10)]), _write_jpg)})
    voc = load_voc(root, class_names=["dog", "cat"])
    with pytest.raises(ValueError, match=r"class lists differ.*\['cat', 'dog'\].*\['dog', 'cat'\]"):
        concat_datasets([data, voc])


def test_voc_several_years_concatenate_and_clean_load_logs_info(tmp_path, caplog):
    root = _voc(tmp_path, {"a": (_xml([("cat", 0, 1, 1, 10, 10)]), _write_jpg)})
    base12 = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base12 / sub).mkdir(parents=True)
    (base12 / "Annotations" / "b.xml").write_text(_xml([("dog", 0, 2, 2, 8, 9)]))
    _write_jpg(base12 / "JPEGImages" / "b.jpg")
    (base12 / "ImageSets" / "Main" / "train.txt").write_text("b\n")
    with caplog.at_level(logging.INFO, logger="ssdkit.dataset"):
        data = load_voc(root, ["2007/trainval", ("VOC2012", "train")], class_names=list(CLASSES),
                        check_images="none")
    assert [r.image_id for r in data] == ["a", "b"] and data.name == "voc:2007/trainval+voc:2012/train"
    assert os.path.isabs(data[1].path) and data[1].path.endswith(os.path.join("VOC2012", "JPEGImages", "b.jpg"))
    np.testing.assert_array_equal(data[1].boxes, [[1, 1, 8, 9]])
    logged = [r for r in caplog.records if r.name == "ssdkit.dataset"]
    assert [r.levelno for r in logged] == [logging.INFO, logging.INFO]
    assert "1 images loaded, 0 skipped" in logged[0].getMessage()
