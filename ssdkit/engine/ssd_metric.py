"""Training losses of the SSD graph, as an MXNet metric for progress bars, logs and the NaN guard."""
import mxnet as mx
import numpy as np


class MultiBoxMetric(mx.metric.EvalMetric):
    """Cross entropy of the sampled anchors and smooth-L1 per positive anchor.

    Reads the first three outputs of ``get_symbol_train`` (the ones ``fit`` computes, see
    ``SSDFamily.train_outputs``): ``cls_prob (B, C+1, N)``, ``loc_loss (B, N*4)`` (already masked
    to positives) and ``cls_target (B, N)`` (-1 ignored, 0 background, k+1 class k). Labels are
    not used.
    """

    def __init__(self, eps=1e-12):
        self.eps = eps
        super().__init__("MultiBox", output_names=None, label_names=None)
        self.name = ["CrossEntropy", "SmoothL1"]
        self.reset()

    def reset(self):
        self.num_inst = [0, 0]
        self.sum_metric = [0.0, 0.0]
        self.global_num_inst = [0, 0]
        self.global_sum_metric = [0.0, 0.0]

    def reset_local(self):
        self.reset()

    def update(self, labels, preds):
        cls_prob = preds[0].asnumpy()                     # (B, C+1, N)
        loc_loss = preds[1].asnumpy()                     # (B, N*4)
        cls_target = preds[2].asnumpy().astype(np.int64)  # (B, N)
        valid = cls_target >= 0
        b_idx, n_idx = np.nonzero(valid)
        probs = cls_prob[b_idx, cls_target[b_idx, n_idx], n_idx]
        self.sum_metric[0] += float(-np.log(np.maximum(probs, self.eps)).sum())
        self.num_inst[0] += int(valid.sum())
        self.sum_metric[1] += float(loc_loss.sum())
        self.num_inst[1] += max(int((cls_target > 0).sum()), 1)

    def get(self):
        values = [s / n if n else float("nan") for s, n in zip(self.sum_metric, self.num_inst)]
        # An epoch that has not started yet reports 0 rather than NaN (the NaN guard reads these).
        values = [0.0 if n == 0 else v for v, n in zip(values, self.num_inst)]
        return list(self.name), values

    def get_global(self):
        return self.get()
