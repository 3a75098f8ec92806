"""An ``mx.io.DataIter`` over raw image files (a list of :class:`~ssdkit.dataset.records.Record`),
decoded and augmented with OpenCV / numpy in a thread pool (OpenCV releases the GIL).

Every sample draws its randomness from its own generator seeded by ``(seed, epoch, position)``,
so the output depends only on the seed, never on thread scheduling.
"""
import collections
import concurrent.futures
import warnings

import mxnet as mx
import numpy as np

from ssdkit.dataset.augment import NO_AUGMENT, Normalization, augment_detection, to_chw_normalized
from ssdkit.dataset.image import load_image_rgb
from ssdkit.dataset.det_iter import DetectionIter
from ssdkit.dataset.records import LABEL_WIDTH
from ssdkit.dataset.validation import DataError


class FolderDetIter(DetectionIter):
    """Detection batches from image files.

    Parameters
    ----------
    records : sequence of Record
    batch_size : int, B
    data_shape : (3, H, W) network input shape
    max_objects : int or None, the least label rows M; M grows to the largest object count in ``records``
        (so no image is refused for holding many objects); None: that count (at least 1)
    augment : Augmentation or None; None (or ``NO_AUGMENT``) is the validation transform (resize only)
    normalization : Normalization, ``(rgb - mean) / std``; ImageNet by default
    shuffle : bool, reshuffle every epoch
    seed : int, the only seed: fixes the order and every augmentation
    num_workers : int, decoding / augmenting threads
    last_batch : "pad" (fill the last batch by repeating its first samples and report ``pad``) or
        "discard" (drop an incomplete last batch)
    loader : callable ``path -> (H, W, 3) uint8 RGB`` raising on a bad file;
        :func:`ssdkit.dataset.image.load_image_rgb` by default
    data_name, label_name : names in ``provide_data`` / ``provide_label``
    strict : bool, an image that fails to decode raises DataError naming it instead of being skipped

    Batches hold ``data (B, 3, H, W)`` float32 and ``label (B, M, 6)`` float32 rows
    ``[cls, xmin, ymin, xmax, ymax, difficult]`` normalised to [0, 1], padded with -1 rows.
    An image that fails to decode (or is truncated) is skipped with a warning naming it and counted in
    ``num_skipped`` (the readers' load-time check finds such images first; this catches files changed since).
    """

    def __init__(self, records, *, batch_size, data_shape, max_objects=None, augment=None,
                 normalization=Normalization(), shuffle=False, seed=0, num_workers=2,
                 last_batch="pad", loader=load_image_rgb, data_name="data", label_name="label", strict=False):
        super().__init__(batch_size)
        if not records:
            raise ValueError("FolderDetIter needs at least one record")
        if len(data_shape) != 3 or data_shape[0] != 3:
            raise ValueError("data_shape must be (3, H, W), got %s" % (data_shape,))
        if last_batch not in ("pad", "discard"):
            raise ValueError("last_batch must be 'pad' or 'discard', got %r" % (last_batch,))
        self.records = list(records)
        self.data_shape = tuple(int(v) for v in data_shape)
        self.max_objects = max(int(max_objects or 1), max(r.num_objects for r in self.records))
        self.strict = bool(strict)
        self.augment = NO_AUGMENT if augment is None else augment
        self.normalization = normalization
        self.shuffle = shuffle
        self.seed = int(seed)
        self.last_batch = last_batch
        self.loader = loader
        self.data_name, self.label_name = data_name, label_name
        self.num_skipped = 0
        self.epoch = -1
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, int(num_workers)))
        self._prefetch = 2 * batch_size
        self.reset()

    @property
    def num_batches(self):
        """Batches per epoch (images that fail to decode at run time make an epoch shorter)."""
        full, rest = divmod(len(self.records), self.batch_size)
        return full + (1 if rest and self.last_batch == "pad" else 0)

    def reset(self):
        """Start the next epoch (a new order when shuffling)."""
        self._drain()
        self.epoch += 1
        if self.shuffle:
            self._order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.records))
        else:
            self._order = np.arange(len(self.records))
        self._next_pos = 0
        self._pending = collections.deque()
        self._top_up()

    def close(self):
        """Stop the worker threads (the iterator cannot be used afterwards)."""
        self._drain()
        self._pool.shutdown(wait=True)

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _drain(self):
        for _, future in getattr(self, "_pending", ()):
            future.cancel()
        for _, future in getattr(self, "_pending", ()):
            if not future.cancelled():
                concurrent.futures.wait([future])
        self._pending = collections.deque()

    def _top_up(self):
        while len(self._pending) < self._prefetch and self._next_pos < len(self._order):
            pos = self._next_pos
            self._next_pos += 1
            self._pending.append((pos, self._pool.submit(self._load, pos)))

    def _load(self, pos):
        """One sample: ``((3, H, W) float32, (K, 6) float32 label)``, or the loader's exception
        (returned, not raised) when the image cannot be read; other errors propagate."""
        record = self.records[self._order[pos]]
        try:
            image = self._read(record)
        except Exception as err:  # noqa: BLE001 - any loader failure marks a bad image
            return err
        return self._transform(record, image, np.random.default_rng([self.seed, self.epoch, pos]))

    def _read(self, record):
        """The decoded inputs of one record (here its image); a failure skips the record with a count
        (subclasses may read more, e.g. TwoStageIter its instance masks)."""
        return self.loader(record.path)

    def _transform(self, record, image, rng):
        """The SSD sample of a decoded image (subclasses replace the transform, e.g. TwoStageIter)."""
        out_size = (self.data_shape[2], self.data_shape[1])
        image, boxes, keep = augment_detection(image, record.boxes, rng, self.augment, out_size,
                                               fill=self.normalization.fill)
        label = np.empty((len(keep), LABEL_WIDTH), np.float32)
        label[:, 0] = record.classes[keep]
        label[:, 1:5] = boxes
        label[:, 5] = record.difficult[keep]
        return to_chw_normalized(image, self.normalization), label

    def _next_sample(self):
        """The next good sample of the epoch, or None when the epoch is exhausted."""
        while self._pending:
            pos, future = self._pending.popleft()
            self._top_up()
            result = future.result()
            if not isinstance(result, Exception):
                return result
            self.num_skipped += 1
            record = self.records[self._order[pos]]
            if self.strict:
                raise DataError("strict mode: image %s cannot be used (%s); fix or remove it, or drop "
                                "--strict (data.strict = false) to skip it with a count"
                                % (record.path, result)) from result
            warnings.warn("skipping image %s (%s); %d skipped so far"
                          % (record.path, result, self.num_skipped), RuntimeWarning)
        return None

    def next(self):
        data = np.empty((self.batch_size,) + self.data_shape, np.float32)
        label = np.full((self.batch_size, self.max_objects, LABEL_WIDTH), -1.0, np.float32)
        count = 0
        while count < self.batch_size:
            sample = self._next_sample()
            if sample is None:
                break
            data[count], obj = sample
            label[count, :len(obj)] = obj
            count += 1
        if count == 0 or (count < self.batch_size and self.last_batch == "discard"):
            raise StopIteration
        pad = self.batch_size - count
        for i in range(pad):  # repeat the batch's first samples
            data[count + i] = data[i % count]
            label[count + i] = label[i % count]
        return mx.io.DataBatch(data=[mx.nd.array(data)], label=[mx.nd.array(label)], pad=pad,
                               provide_data=self.provide_data, provide_label=self.provide_label)
