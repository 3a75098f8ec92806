"""Load any supported dataset by kind, and pack train/val splits to RecordIO (``tools/prepare_dataset.py``)."""
import os

from ssdkit.dataset.coco import load_coco
from ssdkit.dataset.collection import concat_datasets, resolve_class_names
from ssdkit.dataset.lists import load_list
from ssdkit.dataset.recordio import pack_recordio
from ssdkit.dataset.voc import load_voc

DATASET_KINDS = ("voc", "coco", "list")


def load_dataset(kind, sources, *, root=None, image_dirs=None, class_names=None, crowd="skip",
                 check_images="decode", workers=2, strict=False):
    """Load image sets of one kind into a DetectionDataset.

    Parameters
    ----------
    kind : ``voc`` | ``coco`` | ``list``
    sources : sequence of str: VOC image sets (``"2007/trainval"``), COCO instances json files, or
        CSV/JSON list files; concatenated in order
    root : str, the VOCdevkit folder (voc only)
    image_dirs : str or sequence of str, image folder(s): one per COCO file (or one for all); for lists the
        folder image paths are relative to (default: each list file's folder)
    class_names : None, a sequence of names or a names file (voc: default the 20 VOC classes; coco: names
        come from the json, a given list must equal them)
    crowd : COCO crowd handling, see :func:`ssdkit.dataset.coco.load_coco`
    check_images, workers : see :func:`ssdkit.dataset.validation.build_records`
    strict : bool, raise :class:`~ssdkit.dataset.validation.DataError` naming every damaged or inconsistent
        entry instead of skipping it with a count (see :mod:`ssdkit.dataset.validation`)
    """
    sources = [sources] if isinstance(sources, str) else list(sources)
    if not sources:
        raise ValueError("no %s sources given" % kind)
    if kind == "voc":
        if root is None:
            raise ValueError("voc needs root= (the VOCdevkit folder)")
        return load_voc(root, sources, class_names=class_names, check_images=check_images, workers=workers,
                        strict=strict)
    if kind == "coco":
        if image_dirs is None:
            raise ValueError("coco needs image_dirs= (the folder(s) file_name is relative to)")
        data = load_coco(sources, image_dirs, crowd=crowd, check_images=check_images, workers=workers,
                         strict=strict)
        if class_names is not None and resolve_class_names(class_names) != data.class_names:
            raise ValueError("class_names %s differ from the COCO categories %s (%s); COCO class ids come from "
                             "the json, drop class_names" % (list(resolve_class_names(class_names)),
                                                              list(data.class_names), data.name))
        return data
    if kind == "list":
        image_root = image_dirs if isinstance(image_dirs, (str, type(None))) else image_dirs[0]
        return load_list(sources, class_names=class_names, image_root=image_root, check_images=check_images,
                         workers=workers, strict=strict)
    raise ValueError("dataset kind %r; expected one of %s" % (kind, ", ".join(DATASET_KINDS)))


def prepare_dataset(kind, target, *, train, val=(), root=None, train_image_dirs=None, val_image_dirs=None,
                    class_names=None, crowd="skip", check_images="decode", with_difficult=True, quality=95,
                    max_side=None, workers=2, strict=False):
    """Load train (and val) sets and pack each to ``<target>_<split>.{lst,rec,idx}``.

    Also writes ``<target>_classes.txt`` (one name per line, line i = class id i).

    Parameters
    ----------
    kind, root, class_names, crowd, check_images, strict : see :func:`load_dataset`
    workers : int, threads checking, decoding and encoding images
    target : str, output prefix, e.g. ``data/voc/voc07``
    train, val : sequences of sources for :func:`load_dataset`; ``val`` may be empty
    train_image_dirs, val_image_dirs : image folders for coco / list sources
    with_difficult, quality, max_side : see :func:`ssdkit.dataset.recordio.pack_recordio`

    Returns
    -------
    dict split name -> PackResult. Raises ValueError when train and val class lists differ.
    """
    splits = {"train": (train, train_image_dirs)}
    if val:
        splits["val"] = (val, val_image_dirs)
    loaded = {name: load_dataset(kind, sources, root=root, image_dirs=dirs, class_names=class_names, crowd=crowd,
                                 check_images=check_images, workers=workers, strict=strict)
              for name, (sources, dirs) in splits.items()}
    concat_datasets(list(loaded.values()))  # raises a clear error if class lists differ
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    with open(target + "_classes.txt", "w") as f:
        f.write("".join(n + "\n" for n in loaded["train"].class_names))
    return {name: pack_recordio(data, "%s_%s" % (target, name), with_difficult=with_difficult, quality=quality,
                                max_side=max_side, workers=workers)
            for name, data in loaded.items()}
