"""Training losses of the FPN graph as an MXNet metric, for progress bars, logs and the NaN guard."""
import mxnet as mx
import numpy as np


class FPNLossMetric(mx.metric.EvalMetric):
    """Running means of the four FPN losses and the R-CNN accuracy over the sampled RoIs.

    Reads the outputs of :func:`ssdkit.symbol.fpn.get_symbol_train` (:data:`ssdkit.symbol.fpn.TRAIN_OUTPUTS`):
    ``rpn_cls_loss``, ``rpn_box_loss``, ``rcnn_cls_loss``, ``rcnn_box_loss`` (each ``(1,)`` per device
    batch, already normalised), ``rcnn_cls_prob (R, C+1)`` and ``rcnn_label (R,)`` (-1 padding).
    Labels of the batch are not used. Names: ``rpn_cls_loss``, ``rpn_box_loss``, ``rcnn_cls_loss``,
    ``rcnn_box_loss``, ``rcnn_accuracy``.
    """

    NAMES = ("rpn_cls_loss", "rpn_box_loss", "rcnn_cls_loss", "rcnn_box_loss", "rcnn_accuracy")

    def __init__(self):
        super().__init__("FPN", output_names=None, label_names=None)
        self.name = list(self.NAMES)
        self.reset()

    def reset(self):
        self.num_inst = [0] * len(self.NAMES)
        self.sum_metric = [0.0] * len(self.NAMES)
        self.global_num_inst = list(self.num_inst)
        self.global_sum_metric = list(self.sum_metric)

    def reset_local(self):
        self.reset()

    def update(self, labels, preds):
        for k in range(4):
            self.sum_metric[k] += float(preds[k].asnumpy().sum())
            self.num_inst[k] += 1
        prob = preds[4].asnumpy()
        target = preds[5].asnumpy().astype(np.int64)
        sampled = target >= 0
        self.sum_metric[4] += float((prob[sampled].argmax(axis=1) == target[sampled]).sum())
        self.num_inst[4] += int(sampled.sum())

    def get(self):
        # an epoch that has not started reports 0 rather than NaN (the trainer's NaN guard reads these)
        values = [s / n if n else 0.0 for s, n in zip(self.sum_metric, self.num_inst)]
        return list(self.name), values

    def get_global(self):
        return self.get()
