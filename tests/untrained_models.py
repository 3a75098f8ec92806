"""Checkpoints of untrained models for the script and deploy tests: nothing is trained."""
import mxnet as mx
import numpy as np

from ssdkit.api.family import family_of
from ssdkit.api.model_files import write_meta


def write_untrained_checkpoint(prefix, config, class_names, *, trained_classes=None):
    """Write ``prefix-0001.params`` of ``config``'s inference graph (small random weights, BatchNorm
    identity) built for ``trained_classes`` classes (default: all of ``class_names``), and
    ``prefix-meta.json`` naming ``class_names``; return ``prefix``."""
    family = family_of(config)
    trained = list(class_names) if trained_classes is None else list(trained_classes)
    _, symbol = family.symbols(config, len(trained))
    meta = dict(family.meta_fields(config), class_names=trained)
    inputs = dict(family.inference_shapes(meta, 1))
    arg_shapes, _, aux_shapes = symbol.infer_shape(**inputs)
    rng = np.random.default_rng(0)
    blob = {}
    for name, shape in zip(symbol.list_arguments(), arg_shapes):
        if name not in inputs:
            value = (np.ones(shape) if name.endswith("gamma") else np.zeros(shape) if name.endswith(("beta", "bias"))
                     else rng.normal(0, 0.05, shape))
            blob["arg:" + name] = mx.nd.array(value)
    for name, shape in zip(symbol.list_auxiliary_states(), aux_shapes):
        blob["aux:" + name] = mx.nd.ones(shape) if name.endswith("var") else mx.nd.zeros(shape)
    mx.nd.save(prefix + "-0001.params", blob)
    write_meta(prefix, config, list(class_names))
    return prefix
