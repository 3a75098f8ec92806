"""The synthetic dataset: determinism, exact boxes, VOC/COCO agreement."""
import filecmp
import os

import numpy as np
import pytest

from ssdkit.dataset.coco import load_coco
from ssdkit.dataset.collection import read_class_names
from ssdkit.dataset.synthetic import (SYNTHETIC_CLASSES, image_shape, make_synthetic_dataset, render_scene,
                                      scene_generator)
from ssdkit.dataset.voc import load_voc

SIZE = (128, 200)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synth"))
    return make_synthetic_dataset(root, num_train=10, num_test=4, seed=3, image_size=SIZE)


def _all_files(root):
    out = []
    for dirpath, _dirs, files in os.walk(root):
        out += [os.path.relpath(os.path.join(dirpath, f), root) for f in files]
    return sorted(out)


def test_same_seed_gives_identical_files(synth, tmp_path):
    # two rendering processes write the very same files as the sequential fixture
    again = make_synthetic_dataset(str(tmp_path / "a"), num_train=10, num_test=4, seed=3, image_size=SIZE,
                                   workers=2)
    files = _all_files(synth.root)
    assert files == _all_files(again.root)
    assert len(files) == 3 * 14 + 2 + 2 + 1  # jpg + xml + instance png, two image sets, two jsons, classes.txt
    match, mismatch, errors = filecmp.cmpfiles(synth.root, again.root, files, shallow=False)
    assert mismatch == [] and errors == []

    other = make_synthetic_dataset(str(tmp_path / "b"), num_train=10, num_test=4, seed=4, image_size=SIZE)
    _, mismatch, _ = filecmp.cmpfiles(synth.root, other.root, [f for f in files if f.endswith(".jpg")],
                                      shallow=False)
    assert len(mismatch) == 14


def test_split_images_do_not_depend_on_other_split_size(synth, tmp_path):
    small = make_synthetic_dataset(str(tmp_path / "s"), num_train=10, num_test=1, seed=3, image_size=SIZE)
    jpg = os.path.join("VOCdevkit", "VOC2007", "JPEGImages", "000003.jpg")
    assert filecmp.cmp(os.path.join(synth.root, jpg), os.path.join(small.root, jpg), shallow=False)


def test_class_list_and_image_sets_written(synth):
    assert read_class_names(synth.class_file) == SYNTHETIC_CLASSES
    main = os.path.join(synth.devkit, "VOC2007", "ImageSets", "Main")
    with open(os.path.join(main, "trainval.txt")) as f:
        assert f.read().split() == ["%06d" % i for i in range(1, 11)]
    with open(os.path.join(main, "test.txt")) as f:
        assert f.read().split() == ["%06d" % i for i in range(11, 15)]


def test_boxes_inside_images_with_positive_area(synth):
    data = load_voc(synth.devkit, ["2007/trainval", "2007/test"], class_names=synth.class_file)
    assert len(data) == 14
    for report in data.reports:  # the generator never needs a fix
        assert report.num_skipped == 0
        assert report.count("clipped_box") == 0 and report.count("dropped_box") == 0
    for rec in data:
        assert SIZE[0] <= rec.width <= SIZE[1] and SIZE[0] <= rec.height <= SIZE[1]
        b = rec.boxes
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
        assert (b[:, 2] <= rec.width).all() and (b[:, 3] <= rec.height).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()


def test_written_boxes_are_the_rendered_masks(synth):
    data = load_voc(synth.devkit, ["2007/trainval"], class_names=synth.class_file)
    for index, rec in enumerate(data):
        rng = scene_generator(3, "trainval", index)
        height, width = image_shape(rng, SIZE)
        scene = render_scene(rng, height, width)
        assert (rec.width, rec.height) == (width, height)
        np.testing.assert_array_equal(rec.boxes, scene.boxes.astype(np.float32))
        np.testing.assert_array_equal(rec.classes, scene.classes)
        np.testing.assert_array_equal(rec.difficult, scene.difficult)


def test_boxes_enclose_the_drawn_object_pixels():
    seen = {"truncated": 0, "difficult": 0, "overlap": 0}
    classes = set()
    for index in range(40):
        rng = np.random.default_rng([11, index])
        scene = render_scene(rng, 160, 192)
        union = scene.masks.any(0)
        changed = (scene.image != scene.background).any(-1)
        assert not (changed & ~union).any(), "pixels outside every object mask were changed"
        for mask, box in zip(scene.masks, scene.boxes):
            ys, xs = np.nonzero(mask)
            assert len(xs) > 0
            # box is the tight box of the visible mask: every mask pixel inside, every edge touched
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(box)
            # the object really was painted there (its texture differs from the background somewhere)
            assert changed[mask].mean() > 0.3
        seen["truncated"] += int(scene.truncated.sum())
        seen["difficult"] += int(scene.difficult.sum())
        b = scene.boxes
        for i in range(len(b)):
            for j in range(i + 1, len(b)):
                seen["overlap"] += int(min(b[i, 2], b[j, 2]) > max(b[i, 0], b[j, 0])
                                       and min(b[i, 3], b[j, 3]) > max(b[i, 1], b[j, 1]))
        classes.update(scene.classes.tolist())
    assert all(v > 0 for v in seen.values()), seen
    assert classes == set(range(len(SYNTHETIC_CLASSES)))


def test_voc_xml_and_coco_json_describe_the_same_objects(synth):
    for split in ("trainval", "test"):
        voc = load_voc(synth.devkit, ["2007/" + split], class_names=synth.class_file)
        coco = load_coco(synth.coco_annotations[split], synth.image_dir)
        assert coco.class_names == voc.class_names == SYNTHETIC_CLASSES
        assert len(voc) == len(coco) == (10 if split == "trainval" else 4)
        for a, b in zip(voc, coco):
            assert (a.path, a.width, a.height, int(a.image_id)) == (b.path, b.width, b.height, int(b.image_id))
            np.testing.assert_array_equal(a.boxes, b.boxes)
            np.testing.assert_array_equal(a.classes, b.classes)
            np.testing.assert_array_equal(a.difficult, b.difficult)
        assert sum(r.num_objects for r in voc) > 0


def test_voc_reader_agrees_with_gluoncv(synth):
    """Second implementation: GluonCV's VOCDetection reads the same xml (its boxes are 0-based inclusive)."""
    import mxnet  # noqa: F401  (gluoncv needs mxnet imported first)
    from gluoncv.data import VOCDetection

    class Shapes(VOCDetection):
        CLASSES = SYNTHETIC_CLASSES

    theirs = Shapes(root=synth.devkit, splits=[(2007, "trainval")])
    ours = load_voc(synth.devkit, "2007/trainval", class_names=synth.class_file)
    assert len(theirs) == len(ours) == 10
    for index, rec in enumerate(ours):
        label = theirs._load_label(index)  # (K, 6) [xmin, ymin, xmax, ymax, cls, difficult]
        expected = rec.boxes - np.array([0, 0, 1, 1], np.float32)
        np.testing.assert_array_equal(label[:, :4], expected)
        np.testing.assert_array_equal(label[:, 4], rec.classes)
        np.testing.assert_array_equal(label[:, 5], rec.difficult)


def test_val_split_is_held_out_and_leaves_the_other_splits_unchanged(synth, tmp_path):
    with_val = make_synthetic_dataset(str(tmp_path / "v"), num_train=10, num_test=4, num_val=3, seed=3,
                                      image_size=SIZE)
    main_dir = os.path.join("VOCdevkit", "VOC2007", "ImageSets", "Main")
    assert not os.path.exists(os.path.join(synth.root, main_dir, "val.txt"))  # num_val=0 writes none
    stems = {s: open(os.path.join(with_val.root, main_dir, s + ".txt")).read().split()
             for s in ("trainval", "test", "val")}
    assert len(stems["val"]) == 3
    assert not set(stems["val"]) & (set(stems["trainval"]) | set(stems["test"]))
    # every file of the dataset without val is byte-identical in the one with val
    files = _all_files(synth.root)
    _, mismatch, errors = filecmp.cmpfiles(synth.root, with_val.root, files, shallow=False)
    assert mismatch == [] and errors == []
    # the val images are new pictures, not copies of test or trainval ones
    jpeg = os.path.join(with_val.root, "VOCdevkit", "VOC2007", "JPEGImages", "%s.jpg")
    for v in stems["val"]:
        for other in stems["trainval"] + stems["test"]:
            assert not filecmp.cmp(jpeg % v, jpeg % other, shallow=False)
    records = load_voc(os.path.join(with_val.root, "VOCdevkit"), "2007/val",
                       class_names=with_val.class_file).records
    assert [os.path.basename(r.path) for r in records] == [s + ".jpg" for s in stems["val"]]
