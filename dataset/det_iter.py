"""What every ssdkit detection iterator shares: its batch description."""
import mxnet as mx
import numpy as np

from ssdkit.dataset.records import LABEL_WIDTH


class DetectionIter(mx.io.DataIter):
    """Base of the detection iterators.

    Subclasses set ``batch_size``, ``data_shape`` ``(3, H, W)``, ``max_objects`` (M), ``data_name`` and
    ``label_name``; batches are ``data (B, 3, H, W)`` and ``label (B, M, 6)`` float32. They may define
    ``num_batches`` (batches per epoch, or None when unknown) so a trainer need not run an epoch to count.
    """

    num_batches = None

    @property
    def provide_data(self):
        return [mx.io.DataDesc(self.data_name, (self.batch_size,) + self.data_shape, np.float32)]

    @property
    def provide_label(self):
        return [mx.io.DataDesc(self.label_name, (self.batch_size, self.max_objects, LABEL_WIDTH),
                               np.float32)]
