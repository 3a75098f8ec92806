"""Training-pipeline throughput: ssdkit's two iterators vs GluonCV's SSD training pipeline.

Pipelines (all with full SSD augmentation, batch 32, two workers, same synthetic JPEG images):

* ``ssdkit RecordDetIter``: ``.rec`` through MXNet's C++ ImageDetRecordIter, 2 preprocess threads;
* ``ssdkit FolderDetIter``: image files, numpy/OpenCV augmentation in a 2-thread pool;
* ``gluoncv``: ``SSDDefaultTrainTransform(w, h)`` in a ``gluon.data.DataLoader`` with 2 worker
  processes, batchify ``Tuple(Stack(), Pad(pad_val=-1))``. By default the transform gets no anchors,
  so it returns image + boxes like ours (same work); ``--gluoncv-anchors`` also times the variant
  that computes training targets in the workers (anchors of ``ssd_300_vgg16_atrous_voc`` /
  ``ssd_512_vgg16_atrous_voc`` built with pretrained=False, pretrained_base=False).

Each pipeline runs one warm-up epoch, then ``--repeats`` full epochs interleaved with the other
pipelines; the table gives the median images/s. Example::

    python bench/bench_data.py --num-images 256 --repeats 5
"""
import argparse
import os
import tempfile
import time

import mxnet as mx
import numpy as np

from ssdkit.dataset.augment import Augmentation
from ssdkit.dataset.folder_iter import FolderDetIter
from ssdkit.dataset.rec_iter import RecordDetIter
from ssdkit.dataset.recordio import pack_recordio
from ssdkit.dataset.synthetic import make_synthetic_dataset
from ssdkit.dataset.voc import load_voc


def _epoch_rate(batches):
    """Consume one epoch; returns images/s counting every delivered image (padding included)."""
    start = time.perf_counter()
    images = 0
    for batch in batches:
        data = batch.data[0] if hasattr(batch, "data") else batch[0]
        data.wait_to_read()
        images += data.shape[0]
    return images / (time.perf_counter() - start)


def _ours(records, rec_path, size, batch_size, threads):
    """{name: callable starting one epoch and returning its batch iterable}, and a cleanup."""
    shape = (3, size, size)
    max_objects = max(1, max(r.num_objects for r in records))
    rec = RecordDetIter(rec_path, batch_size=batch_size, data_shape=shape, max_objects=max_objects,
                        augment=Augmentation(), shuffle=True, num_threads=threads)
    folder = FolderDetIter(records, batch_size=batch_size, data_shape=shape, max_objects=max_objects,
                           augment=Augmentation(), shuffle=True, num_workers=threads,
                           last_batch="discard")

    def epoch(it):
        it.reset()
        return it

    return {"ssdkit RecordDetIter (C++ .rec)": lambda: epoch(rec),
            "ssdkit FolderDetIter (numpy/OpenCV)": lambda: epoch(folder)}, folder.close


class _VOCLike(mx.gluon.data.Dataset):
    """GluonCV's VOCDetection item layout: (image NDArray HWC RGB uint8, (K, 6) float32
    ``[xmin, ymin, xmax, ymax, cls, difficult]`` pixels), decoded with ``mx.image.imread``."""

    def __init__(self, records):
        self._records = records

    def __len__(self):
        return len(self._records)

    def __getitem__(self, idx):
        r = self._records[idx]
        label = np.concatenate([r.boxes, r.classes[:, None], r.difficult[:, None]], axis=1)
        return mx.image.imread(r.path, 1), label.astype(np.float32)


def _gluoncv_anchors(size):
    from gluoncv import model_zoo

    name = "ssd_%d_vgg16_atrous_voc" % (300 if size < 400 else 512)
    net = model_zoo.get_model(name, pretrained=False, pretrained_base=False)
    net.initialize()
    with mx.autograd.train_mode():
        _, _, anchors = net(mx.nd.zeros((1, 3, size, size)))
    return anchors


def _gluoncv(records, size, batch_size, workers, with_anchors):
    """A callable starting one epoch of GluonCV's SSD training pipeline."""
    from gluoncv.data.batchify import Pad, Stack, Tuple
    from gluoncv.data.transforms.presets.ssd import SSDDefaultTrainTransform

    anchors = _gluoncv_anchors(size) if with_anchors else None
    transform = SSDDefaultTrainTransform(size, size, anchors=anchors)
    batchify = Tuple(Stack(), Stack(), Stack()) if with_anchors else Tuple(Stack(), Pad(pad_val=-1))
    loader = mx.gluon.data.DataLoader(_VOCLike(records).transform(transform), batch_size,
                                      shuffle=True, batchify_fn=batchify, last_batch="discard",
                                      num_workers=workers)
    return lambda: iter(loader)


def _measure(pipelines, repeats):
    """Median images/s per pipeline. Repeats are interleaved (one epoch of each pipeline in turn)
    so that load from other processes on the machine hits all pipelines alike."""
    for start in pipelines.values():
        _epoch_rate(start())  # warm-up: threads / processes, page cache
    rates = {name: [] for name in pipelines}
    for _ in range(repeats):
        for name, start in pipelines.items():
            rates[name].append(_epoch_rate(start()))
    return {name: float(np.median(r)) for name, r in rates.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # 1000 images = 31 batches per epoch: with 8-batch epochs (256 images) the C++ iterator's
    # per-epoch start-up (reset, refilling its prefetch buffer) dominated the measurement
    parser.add_argument("--num-images", type=int, default=1000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 512])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--root", default=None, help="dataset folder (default: a temporary one)")
    parser.add_argument("--gluoncv-anchors", action="store_true",
                        help="also time GluonCV's transform computing training targets")
    args = parser.parse_args()

    root = args.root or tempfile.mkdtemp(prefix="ssdkit_bench_data_")
    if not os.path.isdir(os.path.join(root, "VOCdevkit")):
        make_synthetic_dataset(root, num_train=args.num_images, num_test=0)
    classes = os.path.join(root, "classes.txt")
    records = list(load_voc(os.path.join(root, "VOCdevkit"), "2007/trainval",
                            class_names=classes).records)
    rec_path = os.path.join(root, "train.rec")
    if not os.path.exists(rec_path):
        pack_recordio(records, os.path.join(root, "train"), quality=90)
    sizes = [(r.width, r.height) for r in records]
    print("%d synthetic JPEG images, %dx%d .. %dx%d px; batch %d; %d workers; median of %d epochs"
          % (len(records), min(s[0] for s in sizes), min(s[1] for s in sizes),
             max(s[0] for s in sizes), max(s[1] for s in sizes), args.batch_size, args.workers,
             args.repeats))
    gluon_name = "gluoncv SSDDefaultTrainTransform (no anchors) + DataLoader"
    rows = []
    for size in args.sizes:
        pipelines, cleanup = _ours(records, rec_path, size, args.batch_size, args.workers)
        pipelines[gluon_name] = _gluoncv(records, size, args.batch_size, args.workers, False)
        if args.gluoncv_anchors:
            pipelines["gluoncv SSDDefaultTrainTransform (with anchors/targets) + DataLoader"] = \
                _gluoncv(records, size, args.batch_size, args.workers, True)
        rates = _measure(pipelines, args.repeats)
        cleanup()
        for name, rate in rates.items():
            rows.append((size, name, rate, rate / rates[gluon_name]))
    print("\n| size | pipeline | images/s (median) | vs gluoncv (no anchors) |")
    print("|---|---|---|---|")
    for size, name, rate, ratio in rows:
        print("| %d² | %s | %.1f | %.2f× |" % (size, name, rate, ratio))


if __name__ == "__main__":
    main()
