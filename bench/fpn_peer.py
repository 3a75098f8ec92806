"""The FPN peer of the benchmarks: GluonCV's ``faster_rcnn_fpn_resnet50_v1b_coco`` and ssdkit's ``fpn_resnet50``
with the same (random) weights, imported by :mod:`ssdkit.weights_fpn` (``python bench/<script>.py`` puts
bench/ on the path).

The GluonCV net is built offline (``pretrained=False, pretrained_base=False``) with MXNet's default
initialisation; ``heads="trained-like"`` shifts the class predictor towards the background (bias +3.4, weights
x 0.3) so that, as with a trained detector, few (RoI, class) pairs pass the 0.01 score threshold;
``"random"`` leaves every class near 1/81 > 0.01, so all 80 x 1000 pairs reach the per-class NMS.
"""
import mxnet as mx

from ssdkit.symbol.fpn import get_symbol
from ssdkit.weights_fpn import ZOO, import_faster_rcnn_fpn, zoo_fpn_config

NAME = "faster_rcnn_fpn_resnet50_v1b_coco"
HEADS = ("trained-like", "random")


def gluoncv_fpn(path, *, heads="trained-like", **kwargs):
    """The GluonCV net (not hybridized), its parameters saved at ``path``; ``kwargs`` go to ``get_model``."""
    from gluoncv import model_zoo

    net = model_zoo.get_model(NAME, pretrained=False, pretrained_base=False, **kwargs)
    net.initialize()
    net(mx.nd.zeros((1, 3, 64, 64)))                 # finishes the deferred initialisation
    if heads == "trained-like":
        cls = net.class_predictor
        bias = cls.bias.data().asnumpy()
        bias[0] += 3.4
        cls.bias.set_data(mx.nd.array(bias))
        cls.weight.set_data(cls.weight.data() * 0.3)
    net.save_parameters(path)
    return net


def ssdkit_fpn_config(size):
    """``get_symbol`` / ``get_symbol_train`` keyword arguments of the imported model at a square ``size``."""
    config = zoo_fpn_config(NAME, size, size)
    config["image_shape"] = (size, size)
    return config


def ssdkit_fpn_executor(path, size, batch=1):
    """ssdkit's inference executor of the file at ``path``: inputs ``data (batch, 3, size, size)``, ``im_info``."""
    arg, aux = import_faster_rcnn_fpn(path, NAME)
    sym = get_symbol(num_classes=ZOO[NAME][2], **ssdkit_fpn_config(size))
    args = dict(arg, data=mx.nd.zeros((batch, 3, size, size)), im_info=mx.nd.array([[size, size, 1.0]] * batch))
    return sym.bind(mx.cpu(), args=args, aux_states=aux, grad_req="null")
