"""``fused_heads``: one aligned convolution per feature layer computes exactly the two separate heads."""
import mxnet as mx
import numpy as np
import pytest

from ssdkit.symbol import symbol_builder, symbol_factory
from ssdkit.symbol.common import FUSED_HEAD_ALIGN, multibox_initializer

NUM_CLASSES = 3
SHAPE = 64


def _outputs(fused):
    config = symbol_factory.get_config("tiny", SHAPE, fused_heads=fused)
    return symbol_builder.get_multibox_outputs(num_classes=NUM_CLASSES, **config)


def _fuse(separate, fused_shapes):
    """Separate-head parameters -> fused ones: ``[cls, loc, zero padding]`` along output channels."""
    params = {k: v for k, v in separate.items() if "_pred_" not in k}
    for name, shape in fused_shapes.items():
        if not name.endswith(("_pred_weight", "_pred_bias")):
            continue
        layer, kind = name.split("_pred_")
        parts = [separate["%s_cls_pred_%s" % (layer, kind)], separate["%s_loc_pred_%s" % (layer, kind)]]
        used = sum(p.shape[0] for p in parts)
        pad = np.zeros((shape[0] - used,) + shape[1:], np.float32)
        params[name] = np.concatenate(parts + [pad])
    return params


def _bind(sym, params, batch):
    shapes = dict(zip(sym.list_arguments(), sym.infer_shape(data=batch.shape)[0]))
    grad_req = {k: ("null" if k == "data" else "write") for k in shapes}
    exe = sym.simple_bind(mx.cpu(), grad_req=grad_req, data=batch.shape)
    for name, arr in exe.arg_dict.items():
        arr[:] = batch if name == "data" else params[name]
    return exe


def test_fused_heads_equal_separate_heads_forward_and_backward():
    rng = np.random.default_rng(0)
    separate_sym, fused_sym = _outputs(False), _outputs(True)
    batch = rng.normal(size=(2, 3, SHAPE, SHAPE)).astype(np.float32)
    separate_shapes = dict(zip(separate_sym.list_arguments(), separate_sym.infer_shape(data=batch.shape)[0]))
    separate = {k: rng.normal(0, 0.2, s).astype(np.float32) for k, s in separate_shapes.items() if k != "data"}
    fused_shapes = dict(zip(fused_sym.list_arguments(), fused_sym.infer_shape(data=batch.shape)[0]))
    fused = _fuse(separate, fused_shapes)
    assert set(fused) == set(fused_shapes) - {"data"}

    exe_s, exe_f = _bind(separate_sym, separate, batch), _bind(fused_sym, fused, batch)
    outs_s = [o.asnumpy() for o in exe_s.forward(is_train=True)]
    outs_f = [o.asnumpy() for o in exe_f.forward(is_train=True)]
    for a, b in zip(outs_s, outs_f):                       # loc_preds, cls_preds, anchors
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)

    head_grads = [rng.normal(size=o.shape).astype(np.float32) for o in outs_s[:2]]
    head_grads.append(np.zeros(outs_s[2].shape, np.float32))
    exe_s.backward([mx.nd.array(g) for g in head_grads])
    exe_f.backward([mx.nd.array(g) for g in head_grads])
    grads_s = {k: v.asnumpy() for k, v in exe_s.grad_dict.items() if v is not None}
    grads_f = {k: v.asnumpy() for k, v in exe_f.grad_dict.items() if v is not None}
    expected = _fuse(grads_s, fused_shapes)                 # padding channels: zero gradient
    for name, grad in grads_f.items():
        np.testing.assert_allclose(grad, expected[name], rtol=1e-3, atol=1e-3, err_msg=name)


def test_fused_head_names_and_aligned_channels():
    sym = _outputs(True)
    args = sym.list_arguments()
    assert not [a for a in args if "_cls_pred_" in a or "_loc_pred_" in a]
    shapes = dict(zip(args, sym.infer_shape(data=(1, 3, SHAPE, SHAPE))[0]))
    config = symbol_factory.get_config("tiny", SHAPE)
    for k in range(len(config["from_layers"])):
        anchors = len(config["sizes"][k]) + len(config["ratios"][k]) - 1
        out = shapes["feat%d_pred_weight" % k][0]
        assert out % FUSED_HEAD_ALIGN == 0
        assert anchors * (NUM_CLASSES + 5) <= out < anchors * (NUM_CLASSES + 5) + FUSED_HEAD_ALIGN
        assert sym.attr_dict()["feat%d_pred_bias" % k]["__cls_channels__"] == str(anchors * (NUM_CLASSES + 1))


@pytest.mark.parametrize("prior", [0.99, 0.9])
def test_fused_head_bias_gets_background_prior_on_class_part_only(prior):
    sym = symbol_factory.get_symbol_train("tiny", SHAPE, NUM_CLASSES, fused_heads=True)
    mod = mx.mod.Module(sym, data_names=("data",), label_names=("label",))
    mod.bind([("data", (1, 3, SHAPE, SHAPE))], [("label", (1, 4, 6))])
    mod.init_params(multibox_initializer(NUM_CLASSES, background_prior=prior))
    arg = {k: v.asnumpy() for k, v in mod.get_params()[0].items()}
    attrs = sym.attr_dict()
    heads = [k for k in arg if k.endswith("_pred_bias")]
    assert len(heads) == 4
    for name in heads:
        cls_channels = int(attrs[name]["__cls_channels__"])
        logits = arg[name][:cls_channels].reshape(-1, NUM_CLASSES + 1)
        prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(prob[:, 0], prior, rtol=1e-5)
        assert not arg[name][cls_channels:].any(), name          # box offsets and padding start at 0
        assert 0.005 < arg[name.replace("_bias", "_weight")].std() < 0.015


def test_fused_bias_without_attribute_is_a_clear_error():
    init = multibox_initializer(NUM_CLASSES)
    with pytest.raises(ValueError, match="__cls_channels__"):
        init(mx.init.InitDesc("feat0_pred_bias"), mx.nd.zeros((40,)))
