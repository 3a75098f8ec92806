"""A deterministic synthetic detection dataset written as Pascal VOC and as COCO json.

Six shape classes (:data:`SYNTHETIC_CLASSES`) of varied size (down to ~12 px), aspect, rotation, colour and
texture are painted, larger first, onto cluttered backgrounds (colour gradients, low-frequency blotches,
lines, arcs and irregular blobs that belong to no class) with pixel noise. Objects may leave the image
(``truncated``) and occlude each other. Every box is the tight box of the object's *visible* pixels, so
annotations are exact; objects that are tiny or mostly hidden are marked ``difficult``, and the remains of
an object with almost nothing visible are erased (nothing drawn is left unannotated).

Each image is rendered from its own generator seeded by ``(seed, split, index)``: the same seed writes
byte-identical files, and image ``i`` of a split does not depend on the size of the other splits. The
optional ``val`` split (``num_val > 0``) is a held-out set for choosing epochs and settings, so the
``test`` split is only ever used for the final number.

Layout written under ``root``::

    classes.txt                                   one class name per line, line i is class id i
    VOCdevkit/VOC2007/JPEGImages/000001.jpg ...
    VOCdevkit/VOC2007/Annotations/000001.xml ...  1-based inclusive pixel boxes
    VOCdevkit/VOC2007/ImageSets/Main/{trainval,test,val}.txt   (val only when num_val > 0)
    VOCdevkit/VOC2007/SegmentationObject/000001.png ...  instance masks (``masks=True``, the default)
    annotations/instances_{trainval,test,val}.json    COCO; category id = class id + 1; extra key "difficult"

Instance masks are exact: the visible pixels of each annotated object, the same pixels its box is the
tight box of. ``SegmentationObject/<stem>.png`` is a VOC-style palette PNG holding ``i + 1`` on the
pixels of object ``i`` (the i-th ``<object>`` of the xml) and 0 elsewhere (objects never overlap: an
occluded pixel belongs to the object in front; 255 "void" is not used). The COCO json gives each annotation
the same mask as a compressed RLE ``segmentation`` (``counts`` a string, pycocotools' format).
With ``masks=False`` neither is written; images, xml files and image sets are the same either way (the xml
keeps ``<segmented>0</segmented>``).
"""
import concurrent.futures
import json
import os
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

SYNTHETIC_CLASSES = ("circle", "ring", "box", "triangle", "star", "cross")
SPLITS = ("trainval", "test", "val")  # order fixes each split's seed: append only


@dataclass(frozen=True)
class SceneConfig:
    """How a synthetic image is drawn (all sizes in pixels).

    ``objects`` is the inclusive range of objects attempted per image; ``object_size`` gives the smallest
    object side and the largest as a fraction of the shorter image side (log-uniform in between).
    An object whose visible pixels are fewer than ``drop_min_pixels`` or than ``drop_visible`` of its full
    area is erased and not annotated; one whose box is narrower than ``difficult_min_side`` or whose visible fraction is
    below ``difficult_visible`` is marked difficult.
    """

    objects: tuple = (1, 6)
    object_size: tuple = (12, 0.55)
    distractors: tuple = (4, 14)
    noise_sigma: float = 7.0
    drop_min_pixels: int = 12
    drop_visible: float = 0.1
    difficult_min_side: int = 10
    difficult_visible: float = 0.35


@dataclass(frozen=True)
class Scene:
    """One rendered image and its exact annotation.

    Attributes
    ----------
    image : (H, W, 3) uint8 RGB, the final picture
    background : (H, W, 3) uint8 RGB, the same picture without the objects (clutter and noise included)
    masks : (K, H, W) bool, visible pixels of each annotated object
    boxes : (K, 4) int32 pixel corners ``(x0, y0, x1, y1)``, ``x1``/``y1`` exclusive (tight box of the mask)
    classes : (K,) int32 class ids into :data:`SYNTHETIC_CLASSES`
    difficult, truncated : (K,) bool
    """

    image: np.ndarray
    background: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    difficult: np.ndarray
    truncated: np.ndarray


@dataclass(frozen=True)
class SyntheticDataset:
    """Paths of a written synthetic dataset."""

    root: str
    devkit: str                # VOCdevkit folder (the ``root`` of :func:`ssdkit.dataset.voc.load_voc`)
    image_dir: str             # VOCdevkit/VOC2007/JPEGImages (COCO ``file_name`` is relative to it)
    class_file: str
    coco_annotations: dict     # split name -> instances json path
    class_names: tuple = SYNTHETIC_CLASSES


def _unit_polygons(cls, rng):
    """Outline(s) of one shape in unit coordinates: (outer (N, 2) float, hole (N, 2) float or None)."""
    name = SYNTHETIC_CLASSES[cls]
    if name in ("circle", "ring"):
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        outer = np.stack([np.cos(t), np.sin(t)], 1)
        hole = outer * rng.uniform(0.45, 0.7) if name == "ring" else None
        return outer, hole
    if name == "box":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64), None
    if name == "triangle":
        t = np.deg2rad(-90 + np.array([0, 120, 240]) + rng.uniform(-12, 12, 3))
        return np.stack([np.cos(t), np.sin(t)], 1), None
    if name == "star":
        points = int(rng.integers(5, 7))
        t = -np.pi / 2 + np.arange(2 * points) * np.pi / points
        radius = np.where(np.arange(2 * points) % 2 == 0, 1.0, rng.uniform(0.38, 0.5))
        return np.stack([radius * np.cos(t), radius * np.sin(t)], 1), None
    a = rng.uniform(0.28, 0.42)  # cross: half thickness of the arms
    quarter = np.array([[a, -1], [a, -a], [1, -a]])
    outline = []
    for k in range(4):  # rotate the quarter outline by k * 90 degrees
        c, s = [(1, 0), (0, 1), (-1, 0), (0, -1)][k]
        outline.append(quarter @ np.array([[c, s], [-s, c]]))
    return np.concatenate(outline), None


def _texture(rng, height, width, color):
    """(height, width, 3) float32 fill of an object: solid, stripes, checker, speckle or gradient."""
    other = np.clip(color + rng.uniform(-90, 90, 3), 0, 255)
    kind = rng.integers(5)
    if kind == 0:
        return np.broadcast_to(color.astype(np.float32), (height, width, 3)).copy()
    if kind == 3:
        tex = color + rng.normal(0, 30, (height, width, 1))
        return tex.astype(np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    if kind == 1:
        t = ((xx * np.cos(angle) + yy * np.sin(angle)) / rng.uniform(3, 10)) % 1.0 < 0.5
    elif kind == 2:
        period = rng.uniform(3, 9)
        t = ((xx // period + yy // period) % 2).astype(bool)
    else:
        proj = xx * np.cos(angle) + yy * np.sin(angle)
        t = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
    t = t.astype(np.float32)[..., None]
    return (color * (1 - t) + other * t).astype(np.float32)


def _background(rng, height, width, scene):
    """(H, W, 3) uint8 background: gradient, colour blotches and non-object clutter."""
    c0, c1 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    cells = int(rng.integers(3, 9))
    # a linear gradient plus random blotches, sampled on a coarse grid and upsampled once
    u = np.linspace(0, 1, cells, dtype=np.float32)
    ramp = u[None, :] * np.float32(np.cos(angle) * width) + u[:, None] * np.float32(np.sin(angle) * height)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    grid = c0 + ramp[..., None] * (c1 - c0) + rng.normal(0, 35, (cells, cells, 3)).astype(np.float32)
    img = cv2.resize(grid, (width, height), interpolation=cv2.INTER_LINEAR)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(scene.distractors[0], scene.distractors[1] + 1))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.choice(4, p=(0.35, 0.3, 0.15, 0.2))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        if kind == 0:  # a random-walk polyline
            steps = rng.normal(0, 0.12 * min(width, height), (int(rng.integers(2, 6)), 2))
            pts = (np.array([x, y]) + np.cumsum(steps, 0)).astype(np.int32)
            cv2.polylines(img, [pts], False, color, int(rng.integers(1, 4)), cv2.LINE_AA)
        elif kind == 1:  # an open arc
            axes = tuple(int(a) for a in rng.integers(6, max(8, min(width, height) // 4), 2))
            start = float(rng.uniform(0, 360))
            cv2.ellipse(img, (x, y), axes, float(rng.uniform(0, 180)), start, start + rng.uniform(60, 200),
                        color, int(rng.integers(1, 4)), cv2.LINE_AA)
        elif kind == 2:  # an irregular blob
            n = int(rng.integers(7, 12))
            t = np.sort(rng.uniform(0, 2 * np.pi, n))
            r = rng.uniform(3, 0.06 * min(width, height)) * rng.uniform(0.5, 1.3, n)
            pts = np.stack([x + r * np.cos(t), y + r * np.sin(t)], 1).astype(np.int32)
            cv2.fillPoly(img, [pts], color, cv2.LINE_AA)
        else:  # a few dots
            for _ in range(int(rng.integers(3, 10))):
                cv2.circle(img, (int(rng.integers(0, width)), int(rng.integers(0, height))),
                           int(rng.integers(1, 4)), color, -1, cv2.LINE_AA)
    return img


def _contrasting_color(rng, reference):
    """A random RGB colour (3,) float32 far (L1 > 150) from ``reference`` when one is found in 8 tries."""
    best, best_dist = None, -1.0
    for _ in range(8):
        color = rng.uniform(0, 255, 3)
        dist = float(np.abs(color - reference).sum())
        if dist > best_dist:
            best, best_dist = color, dist
        if dist > 150:
            break
    return best.astype(np.float32)


def render_scene(rng, height, width, scene=SceneConfig()):
    """Draw one synthetic image with ``rng`` (a ``numpy.random.Generator``); returns a :class:`Scene`."""
    canvas = _background(rng, height, width, scene)
    background = canvas.copy()
    num = int(rng.integers(scene.objects[0], scene.objects[1] + 1))
    lo, hi = np.log(scene.object_size[0]), np.log(max(scene.object_size[0] + 1,
                                                       scene.object_size[1] * min(height, width)))
    sizes = np.sort(np.exp(rng.uniform(lo, hi, num)))[::-1]  # paint large objects first
    placed = []  # (cls, full area, bool mask (H, W), truncated)
    for size in sizes:
        cls = int(rng.integers(len(SYNTHETIC_CLASSES)))
        aspect = np.exp(rng.uniform(np.log(0.45), np.log(2.2)) if SYNTHETIC_CLASSES[cls] == "box"
                        else rng.uniform(np.log(0.65), np.log(1.5)))
        half = 0.5 * size * np.array([np.sqrt(aspect), 1 / np.sqrt(aspect)])
        theta = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
        margin = 0.3 * half
        center = rng.uniform(-margin, [width + margin[0], height + margin[1]])
        outer, hole = _unit_polygons(cls, rng)
        outer = outer * half @ rot + center
        x0, y0 = np.floor(outer.min(0)).astype(int) - 1
        x1, y1 = np.ceil(outer.max(0)).astype(int) + 2
        patch = np.zeros((y1 - y0, x1 - x0), np.uint8)
        shift = np.array([x0, y0])
        cv2.fillPoly(patch, [np.round((outer - shift) * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
        if hole is not None:
            hole = hole * half @ rot + center
            cv2.fillPoly(patch, [np.round((hole - shift) * 16).astype(np.int32)], 0, cv2.LINE_8, 4)
        full_area = int(patch.sum())
        # the part of the patch inside the image
        ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if full_area == 0 or ix0 >= ix1 or iy0 >= iy1:
            continue
        sub = patch[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0].astype(bool)
        region = (slice(iy0, iy1), slice(ix0, ix1))
        reference = background[region][sub].mean(0) if sub.any() else background.mean((0, 1))
        color = _contrasting_color(rng, reference)
        fill = _texture(rng, iy1 - iy0, ix1 - ix0, color)
        if rng.uniform() < 0.3:  # a darker outline
            inner = cv2.erode(patch, np.ones((3, 3), np.uint8))[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
            fill[sub & ~inner.astype(bool)] *= 0.4
        canvas[region][sub] = np.clip(fill[sub], 0, 255)
        mask = np.zeros((height, width), bool)
        mask[region] = sub
        for other in placed:
            other[2][region] &= ~sub
        placed.append((cls, full_area, mask, int(sub.sum()) < full_area))
    masks, boxes, classes, difficult, truncated = [], [], [], [], []
    for cls, full_area, mask, trunc in placed:
        visible = int(mask.sum())
        if visible < scene.drop_min_pixels or visible < scene.drop_visible * full_area:
            canvas[mask] = background[mask]  # almost hidden: erase the remains rather than leave them unlabelled
            continue
        cols, rows = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
        box = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        masks.append(mask)
        boxes.append(box)
        classes.append(cls)
        difficult.append(min(box[2] - box[0], box[3] - box[1]) < scene.difficult_min_side
                         or visible < scene.difficult_visible * full_area)
        truncated.append(trunc)
    amplitude = int(round(scene.noise_sigma * np.sqrt(3.0)))  # uniform noise of that standard deviation
    noise = rng.integers(-amplitude, amplitude + 1, (height, width, 3), dtype=np.int16)
    image = np.clip(canvas + noise, 0, 255).astype(np.uint8)
    background = np.clip(background + noise, 0, 255).astype(np.uint8)
    return Scene(image=image, background=background,
                 masks=np.array(masks, bool).reshape(-1, height, width),
                 boxes=np.array(boxes, np.int32).reshape(-1, 4), classes=np.array(classes, np.int32),
                 difficult=np.array(difficult, bool), truncated=np.array(truncated, bool))


def scene_generator(seed, split, index):
    """The ``numpy.random.Generator`` that draws image ``index`` of ``split`` for dataset ``seed``."""
    return np.random.default_rng([int(seed), SPLITS.index(split), int(index)])


def image_shape(rng, image_size):
    """(height, width) drawn uniformly from the inclusive side range ``image_size = (min, max)``."""
    lo, hi = image_size
    return int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))


def _voc_palette():
    """The Pascal VOC colour map (256 RGB entries, flattened), so instance PNGs view like VOC's."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


def instance_png(masks):
    """``(K, H, W)`` bool non-overlapping masks -> ``(H, W)`` uint8 with ``i + 1`` on object ``i``, 0 elsewhere."""
    masks = np.asarray(masks, bool)
    if len(masks) > 254:
        raise ValueError("an instance PNG holds at most 254 objects, got %d" % len(masks))
    if len(masks) and (masks.sum(0) > 1).any():
        raise ValueError("instance masks overlap; a SegmentationObject PNG needs one object per pixel")
    out = np.zeros(masks.shape[1:], np.uint8)
    for i, mask in enumerate(masks):
        out[mask] = i + 1
    return out


def write_instance_png(path, index_image):
    """Write ``(H, W)`` uint8 instance values as a VOC-style palette PNG (deterministic bytes)."""
    png = Image.fromarray(np.asarray(index_image, np.uint8), mode="P")
    png.putpalette(_voc_palette())
    png.save(path, format="PNG")


def coco_rle(mask):
    """``(H, W)`` bool mask -> COCO compressed RLE dict ``{"size": [H, W], "counts": str}`` (pycocotools)."""
    import pycocotools.mask as mask_util

    rle = mask_util.encode(np.asfortranarray(np.asarray(mask, np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _voc_xml(stem, scene):
    height, width = scene.image.shape[:2]
    objects = []
    for box, cls, diff, trunc in zip(scene.boxes, scene.classes, scene.difficult, scene.truncated):
        objects.append(
            "  <object>\n    <name>%s</name>\n    <pose>Unspecified</pose>\n    <truncated>%d</truncated>\n"
            "    <difficult>%d</difficult>\n    <bndbox>\n      <xmin>%d</xmin>\n      <ymin>%d</ymin>\n"
            "      <xmax>%d</xmax>\n      <ymax>%d</ymax>\n    </bndbox>\n  </object>\n"
            % (SYNTHETIC_CLASSES[cls], trunc, diff, box[0] + 1, box[1] + 1, box[2], box[3]))
    return ("<annotation>\n  <folder>VOC2007</folder>\n  <filename>%s.jpg</filename>\n"
            "  <source><database>ssdkit synthetic</database></source>\n"
            "  <size>\n    <width>%d</width>\n    <height>%d</height>\n    <depth>3</depth>\n  </size>\n"
            "  <segmented>0</segmented>\n%s</annotation>\n" % (stem, width, height, "".join(objects)))


def _write_image(job):
    """Render image ``index`` of ``split`` and write its JPEG and VOC xml (one task of a worker).

    ``job``: ``(voc_dir, seed, split, index, image_id, image_size, scene, jpeg_quality, masks)``; with
    ``masks`` the instance PNG is written too and every annotation gets its RLE ``segmentation``.
    Returns the COCO image entry and the image's annotations (without annotation ids).
    """
    voc_dir, seed, split, index, image_id, image_size, scene, jpeg_quality, masks = job
    rng = scene_generator(seed, split, index)
    height, width = image_shape(rng, image_size)
    drawn = render_scene(rng, height, width, scene)
    stem = "%06d" % image_id
    ok, jpeg = cv2.imencode(".jpg", drawn.image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed for synthetic image %s" % stem)
    with open(os.path.join(voc_dir, "JPEGImages", stem + ".jpg"), "wb") as f:
        f.write(jpeg.tobytes())
    with open(os.path.join(voc_dir, "Annotations", stem + ".xml"), "w") as f:
        f.write(_voc_xml(stem, drawn))
    if masks:
        write_instance_png(os.path.join(voc_dir, "SegmentationObject", stem + ".png"), instance_png(drawn.masks))
    annotations = []
    for box, cls, diff, mask in zip(drawn.boxes, drawn.classes, drawn.difficult, drawn.masks):
        x0, y0, x1, y1 = (int(v) for v in box)
        ann = {"image_id": image_id, "category_id": int(cls) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
               "area": int(mask.sum()), "iscrowd": 0, "difficult": int(diff)}
        if masks:
            ann["segmentation"] = coco_rle(mask)
        annotations.append(ann)
    return {"id": image_id, "file_name": stem + ".jpg", "width": width, "height": height}, annotations


def make_synthetic_dataset(root, *, num_train=200, num_test=100, num_val=0, seed=0, image_size=(256, 400),
                           scene=SceneConfig(), jpeg_quality=90, workers=1, masks=True):
    """Write the synthetic dataset under ``root`` (see the module docstring for the layout).

    Parameters
    ----------
    root : str, output folder (created; existing files of the same names are overwritten)
    num_train, num_test : int, images in the ``trainval`` and ``test`` splits
    num_val : int, images in the held-out ``val`` split (not written when 0)
    seed : int, the dataset seed; the same seed gives byte-identical files
    image_size : (int, int), inclusive range of each image side in pixels (height and width drawn apart)
    scene : SceneConfig, drawing parameters
    jpeg_quality : int, JPEG quality of the written images
    workers : int, processes rendering images (every image has its own generator, so the files
        do not depend on it)
    masks : bool, write the instance masks (``SegmentationObject/*.png`` and the COCO ``segmentation``);
        images, xml and boxes are the same either way

    Returns
    -------
    SyntheticDataset, the written paths.
    """
    voc_dir = os.path.join(root, "VOCdevkit", "VOC2007")
    image_dir = os.path.join(voc_dir, "JPEGImages")
    subs = ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main"))
    for sub in subs + (("SegmentationObject",) if masks else ()):
        os.makedirs(os.path.join(voc_dir, sub), exist_ok=True)
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    class_file = os.path.join(root, "classes.txt")
    with open(class_file, "w") as f:
        f.write("\n".join(SYNTHETIC_CLASSES) + "\n")

    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(SYNTHETIC_CLASSES)]
    coco_paths = {}
    next_id = 1
    pool = concurrent.futures.ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        for split, count in zip(SPLITS, (num_train, num_test, num_val)):
            if split == "val" and count == 0:
                continue
            jobs = [(voc_dir, seed, split, index, next_id + index, image_size, scene, jpeg_quality, masks)
                    for index in range(count)]
            results = pool.map(_write_image, jobs, chunksize=16) if pool else map(_write_image, jobs)
            images, annotations = [], []
            for image, objects in results:
                images.append(image)
                for obj in objects:
                    annotations.append(dict(id=len(annotations) + 1, **obj))
            next_id += count
            with open(os.path.join(voc_dir, "ImageSets", "Main", split + ".txt"), "w") as f:
                f.write("".join(os.path.splitext(im["file_name"])[0] + "\n" for im in images))
            coco_paths[split] = os.path.join(root, "annotations", "instances_%s.json" % split)
            with open(coco_paths[split], "w") as f:
                json.dump({"info": {"description": "ssdkit synthetic shapes", "seed": int(seed)}, "licenses": [],
                           "images": images, "annotations": annotations, "categories": categories}, f)
    finally:
        if pool is not None:
            pool.shutdown()
    return SyntheticDataset(root=root, devkit=os.path.join(root, "VOCdevkit"), image_dir=image_dir,
                            class_file=class_file, coco_annotations=coco_paths)
