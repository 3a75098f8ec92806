"""Training losses of the FPN graph as an MXNet metric, for progress bars, logs and the NaN guard."""
import mxnet as mx
import numpy as np


class FPNLossMetric(mx.metric.EvalMetric):
    """Running means of the four FPN losses, the R-CNN accuracy over the sampled RoIs and, for a Mask R-CNN
    graph, the mask loss.

    Reads the outputs of :func:`ssdkit.symbol.fpn.get_symbol_train` (:data:`ssdkit.symbol.fpn.TRAIN_OUTPUTS`):
    ``rpn_cls_loss``, ``rpn_box_loss``, ``rcnn_cls_loss``, ``rcnn_box_loss`` (each ``(1,)`` per device
    batch, already normalised), ``rcnn_cls_prob (R, C+1)`` and ``rcnn_label (R,)`` (-1 padding), then, with
    ``fpn.mask`` (:data:`ssdkit.symbol.fpn.MASK_TRAIN_OUTPUTS`), ``mask_loss (1,)``.
    Labels of the batch are not used. Names: ``rpn_cls_loss``, ``rpn_box_loss``, ``rcnn_cls_loss``,
    ``rcnn_box_loss``, ``rcnn_accuracy``, and ``mask_loss`` when ``mask`` is true.

    Parameters
    ----------
    mask : bool or None, whether the graph has the mask loss; None (default): taken from the first update
        (7 outputs: yes), so one metric object serves both graphs
    """

    NAMES = ("rpn_cls_loss", "rpn_box_loss", "rcnn_cls_loss", "rcnn_box_loss", "rcnn_accuracy")
    MASK_NAMES = NAMES + ("mask_loss",)

    def __init__(self, mask=None):
        self.mask = mask        # before EvalMetric.__init__, which calls reset()
        super().__init__("FPN", output_names=None, label_names=None)

    def _names(self):
        return self.MASK_NAMES if self.mask else self.NAMES

    def reset(self):
        self.name = list(self._names())
        self.num_inst = [0] * len(self.MASK_NAMES)
        self.sum_metric = [0.0] * len(self.MASK_NAMES)
        self.global_num_inst = list(self.num_inst)
        self.global_sum_metric = list(self.sum_metric)

    def reset_local(self):
        self.reset()

    def update(self, labels, preds):
        if self.mask is None:
            self.mask = len(preds) > 6
            self.name = list(self._names())
        if self.mask and len(preds) < 7:
            raise ValueError("FPNLossMetric(mask=True) needs the mask_loss output (7 outputs), got %d" % len(preds))
        for k in range(4):
            self.sum_metric[k] += float(preds[k].asnumpy().sum())
            self.num_inst[k] += 1
        prob = preds[4].asnumpy()
        target = preds[5].asnumpy().astype(np.int64)
        sampled = target >= 0
        self.sum_metric[4] += float((prob[sampled].argmax(axis=1) == target[sampled]).sum())
        self.num_inst[4] += int(sampled.sum())
        if self.mask:
            self.sum_metric[5] += float(preds[6].asnumpy().sum())
            self.num_inst[5] += 1

    def get(self):
        # an epoch that has not started reports 0 rather than NaN (the trainer's NaN guard reads these)
        count = len(self._names())
        values = [s / n if n else 0.0 for s, n in zip(self.sum_metric[:count], self.num_inst[:count])]
        return list(self._names()), values

    def get_global(self):
        return self.get()
