"""Instance masks in the data layer: the synthetic dataset's masks, the readers, decoding, transforms."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from ssdkit.dataset.synthetic import image_shape, make_synthetic_dataset, render_scene, scene_generator

SIZE = (64, 96)
SEED = 7


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synth_masks"))
    return make_synthetic_dataset(root, num_train=6, num_test=3, seed=SEED, image_size=SIZE)


def _scene(split, index):
    rng = scene_generator(SEED, split, index)
    height, width = image_shape(rng, SIZE)
    return render_scene(rng, height, width)


def _tight_box(mask):
    ys, xs = np.nonzero(mask)
    return (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_synthetic_instance_pngs_are_the_rendered_masks(synth):
    seg_dir = os.path.join(synth.devkit, "VOC2007", "SegmentationObject")
    for split, first, count in (("trainval", 1, 6), ("test", 7, 3)):
        for index in range(count):
            scene = _scene(split, index)
            png = Image.open(os.path.join(seg_dir, "%06d.png" % (first + index)))
            assert png.mode == "P"
            values = np.array(png)
            assert values.shape == scene.image.shape[:2]
            assert set(np.unique(values)) <= set(range(len(scene.masks) + 1))
            for i, (mask, box) in enumerate(zip(scene.masks, scene.boxes)):
                np.testing.assert_array_equal(values == i + 1, mask)
                assert _tight_box(values == i + 1) == tuple(box)
            assert ((values == 0) == ~scene.masks.any(0)).all()


def test_synthetic_coco_rle_decodes_to_the_rendered_masks_and_boxes(synth):
    import pycocotools.mask as mask_util

    for split, count in (("trainval", 6), ("test", 3)):
        with open(synth.coco_annotations[split]) as f:
            data = json.load(f)
        by_image = {}
        for ann in data["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        images = sorted(data["images"], key=lambda im: im["id"])
        assert len(images) == count
        checked = 0
        for index, image in enumerate(images):
            scene = _scene(split, index)
            anns = by_image.get(image["id"], [])
            assert len(anns) == len(scene.masks)
            for ann, mask in zip(anns, scene.masks):
                rle = ann["segmentation"]
                assert isinstance(rle["counts"], str) and rle["size"] == [image["height"], image["width"]]
                decoded = mask_util.decode(dict(rle, counts=rle["counts"].encode()))
                np.testing.assert_array_equal(decoded.astype(bool), mask)
                x, y, w, h = ann["bbox"]
                assert _tight_box(decoded) == (x, y, x + w, y + h)
                assert [float(v) for v in mask_util.toBbox(dict(rle, counts=rle["counts"].encode()))] == ann["bbox"]
                assert ann["area"] == int(mask_util.area(dict(rle, counts=rle["counts"].encode())))
                checked += 1
        assert checked > 0


def test_synthetic_without_masks_writes_the_same_images_and_xml(synth, tmp_path):
    import filecmp

    plain = make_synthetic_dataset(str(tmp_path / "plain"), num_train=6, num_test=3, seed=SEED, image_size=SIZE,
                                   masks=False)
    assert not os.path.exists(os.path.join(plain.devkit, "VOC2007", "SegmentationObject"))
    voc = os.path.join("VOCdevkit", "VOC2007")
    files = [os.path.join(voc, "JPEGImages", "%06d.jpg" % i) for i in range(1, 10)]
    files += [os.path.join(voc, "Annotations", "%06d.xml" % i) for i in range(1, 10)]
    _, mismatch, errors = filecmp.cmpfiles(synth.root, plain.root, files, shallow=False)
    assert mismatch == [] and errors == []
    with open(synth.coco_annotations["trainval"]) as f:
        with_masks = json.load(f)
    with open(plain.coco_annotations["trainval"]) as f:
        without = json.load(f)
    for ann in with_masks["annotations"]:
        del ann["segmentation"]
    assert with_masks == without
