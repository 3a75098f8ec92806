"""Run an inference graph over a labelled iterator and feed detections to metrics."""
import json

import mxnet as mx

from ssdkit.engine.progress import progress_bar
from ssdkit.engine.trainer import make_contexts
from ssdkit.errors import InputError


def bind_inference(symbol, arg_params, aux_params, data_shapes, contexts):
    """A Module for inference with the given weights (extra parameters, e.g. loss-only ones, ignored).

    Parameters
    ----------
    symbol : mx.sym.Symbol whose only free input is ``data``
    data_shapes : list of (name, shape), e.g. ``[("data", (B, 3, H, W))]``

    Raises
    ------
    InputError : an INT8 graph (``deploy.py --int8``, oneDNN kernels, CPU only) on a GPU context
    """
    if any(c.device_type != "cpu" for c in contexts) and _is_int8(symbol):
        raise InputError("this deploy model is INT8 (deploy.py --int8: MXNet's oneDNN kernels, CPU only): run it "
                         "on the CPU (no --gpus; Detector ctx=mx.cpu()), or deploy an fp32 model for the GPU")
    mod = mx.mod.Module(symbol, data_names=[name for name, _ in data_shapes], label_names=None,
                        context=contexts)
    mod.bind(data_shapes=data_shapes, for_training=False)
    mod.set_params(arg_params, aux_params, allow_missing=False, allow_extra=True)
    return mod


def _is_int8(symbol):
    """Whether ``symbol`` holds quantized (INT8 oneDNN) nodes."""
    return any(n.get("attrs", {}).get("quantized") == "true" for n in json.loads(symbol.tojson())["nodes"])


def iterate_outputs(mod, data_iter, progress=False, desc="evaluate", label_transform=None):
    """Yield ``(outputs, labels (b, M, W), batch)`` per batch, padding rows removed.

    ``outputs`` is the list of the graph's outputs as numpy arrays, each ``(b, ...)``: ``[detections
    (b, K, 6)]``, or for a mask model ``[detections, masks (b, K, S, S)]``. Detections are rows
    ``[cls_id, score, xmin, ymin, xmax, ymax]`` normalised; labels as the iterator gives them, or
    ``label_transform(labels, batch)`` (e.g. the FPN family's pixel -> normalised corners,
    :meth:`ssdkit.api.family.FPNFamily.metric_labels`).
    """
    data_iter.reset()
    bar = progress_bar(desc=desc, enabled=progress)
    for batch in data_iter:
        mod.forward(mx.io.DataBatch(data=batch.data), is_train=False)
        outputs = [out.asnumpy() for out in mod.get_outputs()]
        labels = batch.label[0].asnumpy()
        keep = outputs[0].shape[0] - (batch.pad or 0)
        labels = labels[:keep]
        if label_transform is not None:
            labels = label_transform(labels, batch)
        yield [out[:keep] for out in outputs], labels, batch
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()


def iterate_detections(mod, data_iter, progress=False, desc="evaluate", label_transform=None):
    """Yield ``(detections (b, K, 6), labels (b, M, W), batch)`` per batch, padding rows removed: the
    first output of :func:`iterate_outputs`."""
    for outputs, labels, batch in iterate_outputs(mod, data_iter, progress=progress, desc=desc,
                                                  label_transform=label_transform):
        yield outputs[0], labels, batch


def evaluate_module(mod, data_iter, metrics, progress=False, label_transform=None):
    """Update every metric in ``metrics`` (objects with ``update(detections, labels)``) over the iterator."""
    for dets, labels, _batch in iterate_detections(mod, data_iter, progress=progress,
                                                   label_transform=label_transform):
        for metric in metrics:
            metric.update(dets, labels)
    return metrics


def make_validator(symbol, data_iter, metric_factory, runtime, *, progress=False, label_transform=None):
    """``val_fn(arg_params, aux_params, epoch) -> {"mAP": value, ...}`` for :func:`ssdkit.engine.trainer.fit`.

    ``metric_factory()`` returns a fresh metric with ``update`` and ``get() -> (names, values)``;
    the last name/value pair is the headline (mAP). ``label_transform``: see :func:`iterate_detections`.
    """
    contexts = make_contexts(runtime)

    def val_fn(arg_params, aux_params, epoch):
        mod = bind_inference(symbol, arg_params, aux_params, data_iter.provide_data, contexts)
        metric = metric_factory()
        evaluate_module(mod, data_iter, [metric], progress=progress, label_transform=label_transform)
        names, values = metric.get()
        return {str(names[-1]): float(values[-1])}

    return val_fn
