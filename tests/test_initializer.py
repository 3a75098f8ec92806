"""ssdkit.symbol.common.multibox_initializer: background prior, small heads, body untouched."""
import mxnet as mx
import numpy as np
import pytest

from ssdkit.symbol.common import multibox_initializer
from ssdkit.symbol.symbol_factory import get_symbol_train


def _init_module(network, num_classes, shape, initializer):
    sym = get_symbol_train(network, shape, num_classes)
    mod = mx.mod.Module(sym, data_names=("data",), label_names=("label",))
    mod.bind([("data", (1, 3, shape, shape))], [("label", (1, 4, 6))])
    mod.init_params(initializer)
    arg, aux = mod.get_params()
    return {k: v.asnumpy() for k, v in arg.items()}, {k: v.asnumpy() for k, v in aux.items()}


@pytest.mark.parametrize("num_classes,prior", [(6, 0.99), (20, 0.9)])
def test_class_bias_gives_background_prior(num_classes, prior):
    arg, _ = _init_module("tiny", num_classes, 64, multibox_initializer(num_classes, background_prior=prior))
    heads = [k for k in arg if k.endswith("_cls_pred_bias")]
    assert len(heads) == 4
    for name in heads:
        bias = arg[name].reshape(-1, num_classes + 1)            # (anchors, C + 1)
        prob = np.exp(bias) / np.exp(bias).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(prob[:, 0], prior, rtol=1e-5)
        np.testing.assert_allclose(prob[:, 1:], (1 - prior) / num_classes, rtol=1e-4)


def test_heads_small_body_he_and_constant_inits_kept():
    mx.random.seed(3)
    arg, aux = _init_module("vgg16_reduced", 3, 300, multibox_initializer(3, head_sigma=0.01))
    for name, value in arg.items():
        if name.endswith("_pred_weight"):
            assert 0.005 < value.std() < 0.015, name
        if name.endswith("_loc_pred_bias"):
            assert not value.any(), name
    # body: He-style Gaussian, std sqrt(2 / fan_out) (fan_out = 64 * 3 * 3 for conv1_1)
    np.testing.assert_allclose(arg["conv1_1_weight"].std(), np.sqrt(2.0 / (64 * 9)), rtol=0.1)
    # the L2-normalisation scale keeps its Constant(20) initialiser from the graph
    np.testing.assert_array_equal(arg["feat0_scale"], np.full_like(arg["feat0_scale"], 20.0))
    assert all(np.all(v == 1) for k, v in aux.items() if k.endswith("moving_var"))


def test_bad_prior_is_an_error():
    with pytest.raises(ValueError, match="background_prior"):
        multibox_initializer(3, background_prior=1.0)
