"""Instance masks in the data layer: the synthetic dataset's masks, the readers, decoding, transforms."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from ssdkit.dataset.synthetic import (image_shape, make_synthetic_dataset, render_scene, scene_generator,
                                      write_instance_png)

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


# ----------------------------------------------------------------------------------------------- readers


def test_voc_and_coco_readers_decode_the_synthetic_masks(synth):
    from ssdkit.dataset.coco import load_coco
    from ssdkit.dataset.masks import InstancePng, CocoSegmentations, decode_masks
    from ssdkit.dataset.voc import load_voc

    voc = load_voc(synth.devkit, "2007/trainval", class_names=synth.class_file, masks="require")
    coco = load_coco(synth.coco_annotations["trainval"], synth.image_dir, masks="require")
    assert len(voc) == len(coco) == 6
    for index, (a, b) in enumerate(zip(voc, coco)):
        assert isinstance(a.masks, InstancePng) and isinstance(b.masks, CocoSegmentations)
        scene = _scene("trainval", index)
        for rec in (a, b):
            masks = decode_masks(rec)
            assert masks.dtype == np.uint8 and masks.shape == (rec.num_objects, rec.height, rec.width)
            np.testing.assert_array_equal(masks, scene.masks.astype(np.uint8))
            for mask, box in zip(masks, rec.boxes):
                assert _tight_box(mask) == tuple(box)
    for report in voc.reports + coco.reports:
        assert report.count("box_mask") == 0 and report.num_skipped == 0


def _write_image(path, height, width):
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(path)


def test_coco_polygons_and_both_rles_decode_like_pycocotools(tmp_path):
    import pycocotools.mask as mask_util
    from pycocotools.coco import COCO

    from ssdkit.dataset.coco import load_coco
    from ssdkit.dataset.masks import decode_masks

    height, width = 12, 16
    _write_image(str(tmp_path / "a.png"), height, width)
    block = np.zeros((height, width), np.uint8)
    block[2:7, 9:14] = 1
    compressed = mask_util.encode(np.asfortranarray(block))
    ring = np.zeros((height, width), np.uint8)
    ring[5:11, 1:7] = 1
    ring[7:9, 3:5] = 0
    flat = ring.flatten(order="F")  # uncompressed RLE: run lengths of 0s and 1s in column-major order
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [2]])))  # 2 closes the last run
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1.0, 1.0, 6.0, 4.0], "iscrowd": 0, "area": 1,
         "segmentation": [[1.0, 1.0, 7.0, 1.0, 7.0, 5.0, 1.0, 5.0], [10.0, 8.0, 14.0, 8.0, 12.0, 11.0]]},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [9, 2, 5, 5], "iscrowd": 0, "area": 1,
         "segmentation": {"size": [height, width], "counts": compressed["counts"].decode()}},
        {"id": 3, "image_id": 1, "category_id": 2, "bbox": [1, 5, 6, 6], "iscrowd": 0, "area": 1,
         "segmentation": {"size": [height, width], "counts": counts}},
    ]
    data = {"images": [{"id": 1, "file_name": "a.png", "height": height, "width": width}], "annotations": anns,
            "categories": [{"id": 1, "name": "x"}, {"id": 2, "name": "y"}]}
    path = str(tmp_path / "instances.json")
    with open(path, "w") as f:
        json.dump(data, f)
    rec = load_coco(path, str(tmp_path)).records[0]
    masks = decode_masks(rec)
    reference = COCO(path)
    for k, ann in enumerate(reference.loadAnns([1, 2, 3])):
        np.testing.assert_array_equal(masks[k], reference.annToMask(ann))
    np.testing.assert_array_equal(masks[1], block)
    np.testing.assert_array_equal(masks[2], ring)
    assert masks[0].sum() > 0
    assert load_coco(path, str(tmp_path), masks="none").records[0].masks is None
    # a crowd region (uncompressed RLE, the COCO iscrowd form): skipped by default, kept with its mask
    data["annotations"].append({"id": 4, "image_id": 1, "category_id": 2, "bbox": [1, 5, 6, 6], "iscrowd": 1,
                                "area": 1, "segmentation": {"size": [height, width], "counts": counts}})
    with open(path, "w") as f:
        json.dump(data, f)
    assert load_coco(path, str(tmp_path)).records[0].num_objects == 3
    crowd = load_coco(path, str(tmp_path), crowd="difficult").records[0]
    assert crowd.difficult.tolist() == [False, False, False, True]
    np.testing.assert_array_equal(decode_masks(crowd)[3], ring)


def test_coco_masks_bad_or_missing_are_counted_or_refused(tmp_path):
    from ssdkit.dataset.coco import load_coco
    from ssdkit.dataset.masks import decode_masks
    from ssdkit.dataset.validation import DataError

    height, width = 10, 10
    images = []
    for i in range(1, 4):
        _write_image(str(tmp_path / ("%d.png" % i)), height, width)
        images.append({"id": i, "file_name": "%d.png" % i, "height": height, "width": width})
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 4, 2], "iscrowd": 0,
         "segmentation": [[2, 3, 6, 3, 6, 5, 2, 5]]},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [1.5, 1.2, 3, 1]},  # no segmentation: box filled
        {"id": 5, "image_id": 1, "category_id": 1, "bbox": [6, 6, 2, 2], "segmentation": [[6, 6, 8, 8]]},  # no area
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 4, 4],
         "segmentation": {"size": [5, 5], "counts": "abc"}},  # RLE of another size
        {"id": 4, "image_id": 3, "category_id": 1, "bbox": [0, 0, 4, 4], "segmentation": "oops"},
    ]
    path = str(tmp_path / "bad.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}, f)
    data = load_coco(path, str(tmp_path))
    report = data.reports[0]
    assert [r.image_id for r in data] == ["1"]
    assert report.count("bad_annotation") == 2
    assert any("RLE segmentation of size 5x5" in d for _, d in report.entries("bad_annotation"))
    assert [d for _, d in report.entries("box_mask")] == ["annotation 2 has no segmentation",
                                                         "annotation 5 has no segmentation"]
    polygons = data.records[0].masks.items[0]  # held as float64 arrays, not json lists
    assert isinstance(polygons, tuple) and polygons[0].dtype == np.float64
    masks = decode_masks(data.records[0])
    assert masks[2].sum() == 4 and _tight_box(masks[2]) == (6, 6, 8, 8)
    expected = np.zeros((height, width), np.uint8)
    expected[1:3, 1:5] = 1  # box (1.5, 1.2, 4.5, 2.2) rounded outwards
    np.testing.assert_array_equal(masks[1], expected)
    assert masks[0].sum() > 0
    with pytest.raises(DataError, match="no segmentation"):
        load_coco(path, str(tmp_path), masks="require", strict=True)


def _voc_tree(root, objects, *, height=10, width=12, png=None):
    """A one-image VOC2007 set ``s`` under ``root``; objects: list of (box 1-based, difficult)."""
    year = os.path.join(root, "VOC2007")
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main"), "SegmentationObject"):
        os.makedirs(os.path.join(year, sub), exist_ok=True)
    _write_image(os.path.join(year, "JPEGImages", "a.png"), height, width)
    xml = "".join("<object><name>x</name><difficult>%d</difficult><bndbox><xmin>%d</xmin><ymin>%d</ymin>"
                  "<xmax>%d</xmax><ymax>%d</ymax></bndbox></object>" % ((d,) + tuple(b)) for b, d in objects)
    with open(os.path.join(year, "Annotations", "a.xml"), "w") as f:
        f.write("<annotation><size><width>%d</width><height>%d</height></size>%s</annotation>" % (width, height, xml))
    with open(os.path.join(year, "ImageSets", "Main", "s.txt"), "w") as f:
        f.write("a\n")
    if png is not None:
        path = os.path.join(year, "SegmentationObject", "a.png")
        if png.ndim == 2:
            write_instance_png(path, png)
        else:
            Image.fromarray(png).save(path)
    return root


def test_voc_png_values_follow_the_xml_objects_also_when_difficult_ones_are_dropped(tmp_path):
    from ssdkit.dataset.masks import decode_masks
    from ssdkit.dataset.voc import load_voc

    png = np.zeros((10, 12), np.uint8)
    png[0:3, 0:4] = 1
    png[4:8, 2:6] = 2
    png[5:9, 7:11] = 3
    png[9, :] = 255  # void
    root = _voc_tree(str(tmp_path), [((1, 1, 4, 3), 0), ((3, 5, 6, 8), 1), ((8, 6, 11, 9), 0)], png=png)
    rec = load_voc(root, "2007/s", class_names=["x"]).records[0]
    masks = decode_masks(rec)
    for k in range(3):
        np.testing.assert_array_equal(masks[k], (png == k + 1).astype(np.uint8))
        assert _tight_box(masks[k]) == tuple(rec.boxes[k])
    easy = load_voc(root, "2007/s", class_names=["x"], keep_difficult=False).records[0]
    assert easy.masks.values == (1, 3)
    np.testing.assert_array_equal(decode_masks(easy), masks[[0, 2]])


def test_voc_masks_missing_bad_or_absent_values(tmp_path):
    from ssdkit.dataset.masks import MaskError, decode_masks
    from ssdkit.dataset.validation import DataError
    from ssdkit.dataset.voc import load_voc

    objects = [((1, 1, 4, 3), 0), ((8, 6, 11, 9), 0)]
    root = _voc_tree(str(tmp_path / "none"), objects)
    assert load_voc(root, "2007/s", class_names=["x"]).records[0].masks is None  # auto: no PNG, no masks
    with pytest.raises(DataError, match="not found"):
        load_voc(root, "2007/s", class_names=["x"], masks="require")
    with pytest.raises(MaskError, match="no instance masks"):
        decode_masks(load_voc(root, "2007/s", class_names=["x"]).records[0])

    png = np.zeros((10, 12), np.uint8)
    png[0:3, 0:4] = 1  # object 2 (value 2) has no pixels: its box is filled, counted
    root = _voc_tree(str(tmp_path / "absent"), objects, png=png)
    data = load_voc(root, "2007/s", class_names=["x"])
    assert data.reports[0].count("box_mask") == 1
    masks = decode_masks(data.records[0])
    assert _tight_box(masks[1]) == tuple(data.records[0].boxes[1]) and masks[1].sum() == 4 * 4

    root = _voc_tree(str(tmp_path / "size"), objects, png=np.zeros((9, 12), np.uint8))
    with pytest.raises(DataError, match="instance mask .* is 12x9"):
        load_voc(root, "2007/s", class_names=["x"], strict=True)
    rgb = np.zeros((10, 12, 3), np.uint8)
    root = _voc_tree(str(tmp_path / "rgb"), objects, png=rgb)
    data = load_voc(root, "2007/s", class_names=["x"], check_images="header")  # not read at load ...
    with pytest.raises(MaskError, match="mode RGB"):
        decode_masks(data.records[0])  # ... so decoding names the file


# ------------------------------------------------------------------------------------ mask transforms


def _tight_box_or_none(mask):
    return np.array(_tight_box(mask), np.float64) if mask.any() else None


def _random_rectangles(rng, height, width, count):
    """(K, H, W) uint8 axis-aligned rectangle masks and their (K, 4) tight boxes."""
    x0, y0 = rng.integers(0, width - 1, count), rng.integers(0, height - 1, count)
    x1 = np.minimum(x0 + rng.integers(1, width, count), width)
    y1 = np.minimum(y0 + rng.integers(1, height, count), height)
    masks = np.zeros((count, height, width), np.uint8)
    for k in range(count):
        masks[k, y0[k]:y1[k], x0[k]:x1[k]] = 1
    return masks, np.stack([x0, y0, x1, y1], 1).astype(np.float64)


@pytest.mark.parametrize("seed", range(6))
def test_ssd_augmentation_moves_masks_with_their_boxes(seed):
    """Zoom-out, IoU crops, resize and mirror: the box of each transformed rectangle mask is its transformed
    (clipped) box within a pixel; the image, boxes and kept indices are those of the call without masks."""
    from ssdkit.dataset.augment import Augmentation, augment_detection

    config = Augmentation()
    checked = dropped = 0
    for trial in range(40):
        rng = np.random.default_rng([seed, trial])
        height, width = int(rng.integers(20, 90)), int(rng.integers(20, 90))
        masks, boxes = _random_rectangles(rng, height, width, 4)
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        out_size = (int(rng.integers(16, 120)), int(rng.integers(16, 120)))
        state = rng.bit_generator.state
        plain = augment_detection(image, boxes, rng, config, out_size)
        rng.bit_generator.state = state
        out, unit_boxes, keep, out_masks = augment_detection(image, boxes, rng, config, out_size, masks=masks)
        np.testing.assert_array_equal(out, plain[0])
        np.testing.assert_array_equal(unit_boxes, plain[1])
        np.testing.assert_array_equal(keep, plain[2])
        assert out_masks.dtype == np.uint8 and out_masks.shape == (len(keep), out_size[1], out_size[0])
        assert set(np.unique(out_masks)) <= {0, 1}
        pixel_boxes = unit_boxes * np.array(out_size * 2)
        for box, mask, k in zip(pixel_boxes, out_masks, keep):
            if min(box[2] - box[0], box[3] - box[1]) < 2:  # thinner than 2 output pixels: may vanish
                continue
            tight = _tight_box_or_none(mask)
            assert tight is not None, (seed, trial)
            np.testing.assert_allclose(tight, box, atol=1.0, err_msg="seed %d trial %d" % (seed, trial))
            checked += 1
        dropped += int(len(keep) < len(boxes))  # a crop left boxes out: their masks went with them
    assert checked > 80 and dropped > 0


def _source_and_mirror(rng, scene, short, long, mirror_prob):
    from ssdkit.dataset.augment import Augmentation
    from ssdkit.dataset.two_stage import transform_two_stage

    augment = Augmentation(distort_prob=0.0, expand_prob=0.0, crop_samplers=(), mirror_prob=mirror_prob)
    return transform_two_stage(scene.image, scene.boxes, rng, short=short, long=long, augment=augment,
                               masks=scene.masks.astype(np.uint8))


@pytest.mark.parametrize("seed", range(4))
def test_two_stage_resize_and_flip_move_the_synthetic_masks_with_their_boxes(seed):
    """Real shapes (stars, rings, triangles) upscaled and mirrored: mask box == box within a pixel;
    downscaled: the mask never leaves its box by more than a pixel (thin tips may vanish)."""
    up = down = 0
    for trial in range(12):
        rng = np.random.default_rng([100 + seed, trial])
        scene = render_scene(rng, int(rng.integers(64, 110)), int(rng.integers(64, 110)))
        height, width = scene.image.shape[:2]
        upscale = trial % 3 != 2
        short = int(rng.integers(min(height, width), 2 * min(height, width))) if upscale else 40
        out, boxes, keep, scale, masks = _source_and_mirror(rng, scene, short, 4 * short, 0.5)
        assert (scale >= 1.0) == upscale
        assert masks.shape == (len(keep),) + out.shape[:2]
        for box, mask in zip(boxes, masks):
            tight = _tight_box_or_none(mask)
            if upscale:
                assert tight is not None
                np.testing.assert_allclose(tight, box, atol=1.0)
                up += 1
            elif tight is not None:
                assert (tight[:2] >= box[:2] - 1).all() and (tight[2:] <= box[2:] + 1).all()
                down += 1
    assert up > 10 and down > 3


def test_two_stage_mirror_flips_the_masks_exactly():
    """An integer resize factor and a flip: the mirrored sample's masks are the plain sample's, reversed."""
    from ssdkit.dataset.augment import Augmentation, augment_detection

    rng = np.random.default_rng(3)
    scene = render_scene(rng, 70, 90)
    masks = scene.masks.astype(np.uint8)
    flip = Augmentation(distort_prob=0.0, expand_prob=0.0, crop_samplers=(), mirror_prob=1.0)
    plain = Augmentation(distort_prob=0.0, expand_prob=0.0, crop_samplers=(), mirror_prob=0.0)
    a = augment_detection(scene.image, scene.boxes, np.random.default_rng(0), plain, (180, 140), masks=masks)
    b = augment_detection(scene.image, scene.boxes, np.random.default_rng(0), flip, (180, 140), masks=masks)
    np.testing.assert_array_equal(b[3], a[3][:, :, ::-1])
    # a 2x nearest-neighbour upscale is the bilinear-thresholded one up to the half-pixel boundary rows
    np.testing.assert_array_equal(a[3][:, 1::2, 1::2], masks)


def test_reduce_masks_by_hand():
    from ssdkit.dataset.two_stage import mask_grid, reduce_masks

    masks = np.zeros((2, 5, 7), np.uint8)
    masks[0, 0:2, 0:2] = 1  # a whole 2x2 block
    masks[0, 2, 2:4] = 1  # half of block (1, 1): >= 0.5 counts
    masks[1, 4, 6] = 1  # the corner block (row 4-5 x cols 6-7, both past the image) holds 1 of 4: 0
    masks[1, 3:5, 4:6] = 1  # 2 of 4 in block (1, 2) and in block (2, 2) (its row 5 is padding): 1
    masks[1, 0, 0] = 1  # 1 of 4: 0
    out = reduce_masks(masks, 2)
    assert out.shape == (2,) + mask_grid(5, 7, 2) == (2, 3, 4)
    expected0 = np.zeros((3, 4), np.uint8)
    expected0[0, 0] = expected0[1, 1] = 1
    expected1 = np.zeros((3, 4), np.uint8)
    expected1[1, 2] = expected1[2, 2] = 1
    np.testing.assert_array_equal(out[0], expected0)
    np.testing.assert_array_equal(out[1], expected1)
    np.testing.assert_array_equal(reduce_masks(masks, 1), masks)
    rng = np.random.default_rng(0)  # against the whole-image block sum on random blobs
    for stride in (2, 3, 4):
        blobs = (rng.random((5, 23, 30)) < 0.6).astype(np.uint8) * (rng.random((5, 1, 1)) < 0.8)
        blobs[:, :, :rng.integers(0, 20)] = 0
        gh, gw = mask_grid(23, 30, stride)
        padded = np.zeros((5, gh * stride, gw * stride), int)
        padded[:, :23, :30] = blobs
        counts = padded.reshape(5, gh, stride, gw, stride).sum(axis=(2, 4))
        np.testing.assert_array_equal(reduce_masks(blobs, stride), 2 * counts >= stride * stride)
    with pytest.raises(ValueError, match="mask_stride"):
        mask_grid(5, 7, 0)


# ---------------------------------------------------------------------------------------- iterator


@pytest.mark.parametrize("stride", [1, 4])
def test_two_stage_iter_batches_gt_masks_aligned_with_the_labels(synth, stride):
    from ssdkit.dataset.augment import Augmentation
    from ssdkit.dataset.two_stage import reduce_masks
    from ssdkit.dataset.two_stage_iter import TwoStageIter
    from ssdkit.dataset.voc import load_voc

    records = load_voc(synth.devkit, "2007/trainval", class_names=synth.class_file).records
    augment = Augmentation(distort_prob=0.5, expand_prob=0.0, crop_samplers=(), mirror_prob=0.5)
    kwargs = dict(batch_size=4, short=96, long=160, augment=augment, seed=5, num_workers=1)
    with_masks = TwoStageIter(records, masks=True, mask_stride=stride, **kwargs)
    plain = TwoStageIter(records, **kwargs)
    (_, height, width) = with_masks.data_shape
    grid = (-(-height // stride), -(-width // stride))
    assert [d.name for d in with_masks.provide_label] == ["label", "gt_masks"]
    assert with_masks.provide_label[1].shape == (4, with_masks.max_objects) + grid
    assert [d.name for d in plain.provide_label] == ["label"]
    batches = 0
    for a, b in zip(with_masks, plain):
        np.testing.assert_array_equal(a.data[0].asnumpy(), b.data[0].asnumpy())  # same RNG use
        np.testing.assert_array_equal(a.label[0].asnumpy(), b.label[0].asnumpy())
        label, gt_masks = a.label[0].asnumpy(), a.label[1].asnumpy()
        assert gt_masks.shape == (4, with_masks.max_objects) + grid and gt_masks.dtype == np.float32
        assert set(np.unique(gt_masks)) <= {0.0, 1.0}
        im_info = a.data[1].asnumpy()
        for i in range(4):
            rows = label[i, :, 0] >= 0
            assert not gt_masks[i, ~rows].any()  # padding rows are all 0
            h, w = (int(v) for v in im_info[i, :2])
            assert not gt_masks[i, :, -(-h // stride):].any() and not gt_masks[i, :, :, -(-w // stride):].any()
            for m in np.flatnonzero(rows):
                box = label[i, m, 1:5] / stride
                tight = _tight_box_or_none(gt_masks[i, m])
                if stride == 1:
                    np.testing.assert_allclose(tight, box, atol=1.0)
                elif tight is not None:
                    assert (tight[:2] >= np.floor(box[:2]) - 1).all() and (tight[2:] <= np.ceil(box[2:]) + 1).all()
        batches += 1
    assert batches == 2
    # the reduction of the stride-1 masks is the stride-s batch
    if stride > 1:
        full = TwoStageIter(records, masks=True, mask_stride=1, **kwargs)
        strided = TwoStageIter(records, masks=True, mask_stride=stride, **kwargs)
        a, b = next(iter(full)), next(iter(strided))
        full_masks = a.label[1].asnumpy()
        for i in range(4):
            np.testing.assert_array_equal(reduce_masks(full_masks[i], stride), b.label[1].asnumpy()[i])


def test_two_stage_iter_masks_need_mask_sources(synth, tmp_path):
    from ssdkit.dataset.two_stage_iter import TwoStageIter
    from ssdkit.dataset.voc import load_voc

    records = load_voc(synth.devkit, "2007/test", class_names=synth.class_file, masks="none").records
    with pytest.raises(ValueError, match="3 of 3 records have no instance masks"):
        TwoStageIter(records, batch_size=2, short=64, long=96, masks=True)
    with pytest.raises(ValueError, match="copy_paste needs masks=True"):
        TwoStageIter(records, batch_size=2, short=64, long=96, copy_paste=object())


def test_two_stage_iter_skips_an_image_whose_mask_went_missing(synth, tmp_path):
    import shutil

    from ssdkit.dataset.two_stage_iter import TwoStageIter
    from ssdkit.dataset.validation import DataError
    from ssdkit.dataset.voc import load_voc

    root = str(tmp_path / "copy")
    shutil.copytree(synth.root, root)
    devkit = os.path.join(root, "VOCdevkit")
    records = load_voc(devkit, "2007/test", class_names=synth.class_file, masks="require").records
    os.remove(os.path.join(devkit, "VOC2007", "SegmentationObject", "000008.png"))
    it = TwoStageIter(records, batch_size=3, short=64, long=96, masks=True, num_workers=1, last_batch="pad")
    with pytest.warns(RuntimeWarning, match="000008"):
        batch = next(iter(it))
    assert batch.pad == 1 and it.num_skipped == 1
    strict = TwoStageIter(records, batch_size=3, short=64, long=96, masks=True, num_workers=1, strict=True)
    with pytest.raises(DataError, match="instance mask PNG not found"):
        next(iter(strict))


def test_make_sample_calls_copy_paste_on_the_decoded_image_first(monkeypatch):
    import sys
    import types

    from ssdkit.dataset.augment import NO_AUGMENT, Normalization
    from ssdkit.dataset.two_stage import make_sample

    rng = np.random.default_rng(4)
    scene = render_scene(rng, 64, 80)
    masks = scene.masks.astype(np.uint8)
    calls = []

    def fake_copy_paste(image, boxes, classes, difficult, masks, rng, config):
        calls.append((image.shape, masks.shape, config))
        return image[:, ::-1].copy(), boxes[:1], classes[:1], difficult[:1], masks[:1]

    fake = types.ModuleType("ssdkit.dataset.copy_paste")
    fake.copy_paste = fake_copy_paste
    monkeypatch.setitem(sys.modules, "ssdkit.dataset.copy_paste", fake)
    sample = make_sample(scene.image, scene.boxes, scene.classes, scene.difficult, np.random.default_rng(0),
                         short=64, long=80, normalization=Normalization(), augment=NO_AUGMENT, masks=masks,
                         copy_paste="config")
    assert calls == [((64, 80, 3), masks.shape, "config")]
    assert len(sample.label) == 1 and sample.masks.shape == (1, 64, 80)
    np.testing.assert_array_equal(sample.masks[0], masks[0])  # scale 1: the masks pass unchanged
    with pytest.raises(ValueError, match="needs the instance masks"):
        make_sample(scene.image, scene.boxes, scene.classes, scene.difficult, np.random.default_rng(0), short=64,
                    long=80, normalization=Normalization(), copy_paste="config")
    monkeypatch.setitem(sys.modules, "ssdkit.dataset.copy_paste", None)  # the module is absent
    with pytest.raises(ImportError, match="copy_paste is not installed"):
        make_sample(scene.image, scene.boxes, scene.classes, scene.difficult, np.random.default_rng(0), short=64,
                    long=80, normalization=Normalization(), masks=masks, copy_paste="config")


@pytest.mark.parametrize("mode", ["move", "copy"])
def test_two_stage_iter_with_copy_paste_keeps_masks_and_boxes_together(synth, mode):
    from ssdkit.dataset.augment import Augmentation
    from ssdkit.dataset.copy_paste import CopyPaste
    from ssdkit.dataset.two_stage_iter import TwoStageIter
    from ssdkit.dataset.voc import load_voc

    records = load_voc(synth.devkit, "2007/trainval", class_names=synth.class_file).records
    config = CopyPaste(prob=1.0, max_instances=2, scale=(0.8, 1.2), rotation=10.0, translate=0.1, mode=mode)
    augment = Augmentation(distort_prob=0.0, expand_prob=0.0, crop_samplers=(), mirror_prob=0.5)
    it = TwoStageIter(records, batch_size=3, short=128, long=200, augment=augment, masks=True, copy_paste=config,
                      seed=2, num_workers=1)
    plain = TwoStageIter(records, batch_size=3, short=128, long=200, augment=augment, masks=True, seed=2,
                         num_workers=1)
    most = max(r.num_objects for r in records)
    assert it.max_objects == most + (2 if mode == "copy" else 0)
    changed = rows = 0
    for a, b in zip(it, plain):
        label, gt_masks = a.label[0].asnumpy(), a.label[1].asnumpy()
        changed += int(not np.array_equal(a.data[0].asnumpy(), b.data[0].asnumpy()))
        for i in range(3):
            for m in np.flatnonzero(label[i, :, 0] >= 0):
                tight = _tight_box_or_none(gt_masks[i, m])
                assert tight is not None
                np.testing.assert_allclose(tight, label[i, m, 1:5], atol=1.0)  # upscaled: within a pixel
                rows += 1
            assert not gt_masks[i, label[i, :, 0] < 0].any()
    assert changed > 0 and rows > 6


def test_warp_masks_on_object_regions_equals_warping_whole_masks():
    """Second implementation: each mask warped as a whole image with warp_crop (the image's own warp),
    thresholded at 0.5; the region warp may differ only where the interpolated value is at the threshold."""
    from ssdkit.dataset.augment import warp_crop, warp_masks

    differing = total = 0
    for seed in range(60):
        rng = np.random.default_rng([21, seed])
        scene = render_scene(rng, int(rng.integers(64, 110)), int(rng.integers(64, 110)))
        height, width = scene.image.shape[:2]
        masks = scene.masks.astype(np.uint8)
        x0, y0 = rng.uniform(-width, width / 2), rng.uniform(-height, height / 2)
        rect = np.array([x0, y0, x0 + rng.uniform(width / 3, 2 * width), y0 + rng.uniform(height / 3, 2 * height)])
        out_size = (int(rng.integers(16, 260)), int(rng.integers(16, 260)))
        mirror = bool(rng.integers(2))
        ours = warp_masks(masks, rect, out_size, mirror=mirror)
        assert ours.shape == (len(masks), out_size[1], out_size[0])
        for k in range(len(masks)):
            value = warp_crop(np.repeat(masks[k, :, :, None] * 255, 3, axis=2), rect, out_size, mirror=mirror,
                              fill=(0, 0, 0))[..., 0].astype(int)
            wrong = ours[k] != (value >= 128)
            assert (np.abs(value[wrong] - 128) <= 8).all()
            differing += int(wrong.sum())
            total += wrong.size
    assert differing <= 1e-5 * total


def test_decode_masks_of_an_image_without_objects_is_empty(tmp_path):
    """An image with no objects decodes to ``(0, H, W)`` masks (it used to fail reshaping the empty stack)."""
    from ssdkit.dataset.masks import InstancePng, decode_masks
    from ssdkit.dataset.records import Record

    path = str(tmp_path / "empty.png")
    write_instance_png(path, np.zeros((5, 7), np.uint8))
    masks = decode_masks(Record(path=path, width=7, height=5, masks=InstancePng(path, ())))
    assert masks.shape == (0, 5, 7) and masks.dtype == np.uint8
