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


def _ssdkit_train_module(path, size, batch, num_boxes, lr):
    """ssdkit's training Module of the imported model (frozen like GluonCV's ``train_patterns``: stem, stage 1 and
    every BatchNorm scale and shift fixed) with SGD as GluonCV's loop."""
    from ssdkit.symbol.fpn import get_symbol_train

    arg, aux = import_faster_rcnn_fpn(path, NAME)
    sym = get_symbol_train(num_classes=ZOO[NAME][2], batch_size=batch, **ssdkit_fpn_config(size))
    fixed = [n for n in sym.list_arguments() if n.startswith(("conv0", "stage1_")) or "_bn_" in n]
    mod = mx.mod.Module(sym, data_names=("data", "im_info"), label_names=("label",), fixed_param_names=fixed)
    mod.bind(data_shapes=[("data", (batch, 3, size, size)), ("im_info", (batch, 3))],
             label_shapes=[("label", (batch, num_boxes, 5))])
    mod.init_params(arg_params=arg, aux_params=aux)
    mod.init_optimizer(optimizer="sgd", optimizer_params=dict(learning_rate=lr, momentum=0.9, wd=1e-4))
    return mod


def training_steps(path, net, images, labels, *, lr=0.01):
    """One training step of each side on the same batch, as two functions.

    Parameters
    ----------
    path : the saved parameters of ``net`` (GluonCV, from :func:`gluoncv_fpn`)
    images : (B, S, S, 3) uint8 RGB
    labels : (B, M, 5) pixel rows ``[x0, y0, x1, y1, cls]`` (GluonCV's order)

    Returns
    -------
    (ssdkit_step, gluoncv_step): ssdkit's ``forward_backward`` + ``update`` of a Module (RPN and R-CNN targets
    inside the graph); GluonCV's ``train_faster_rcnn.py`` step: ``FasterRCNNDefaultTrainTransform`` per image
    (resize, normalise, the RPN targets of every level), ``autograd.record`` -> ``net(x, gt_box, gt_label)`` (its
    RCNN sampler and target generator inside) -> the script's four losses -> ``backward`` -> ``trainer.step``.
    """
    import numpy as np
    from gluoncv.data.transforms.presets.rcnn import FasterRCNNDefaultTrainTransform
    from mxnet import autograd, gluon

    batch, size = images.shape[0], images.shape[1]
    mod = _ssdkit_train_module(path, size, batch, labels.shape[1], lr)
    mean, std = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])
    data = ((images - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)
    ours_label = np.concatenate([labels[:, :, 4:5], labels[:, :, :4]], axis=2).astype(np.float32)
    ours_batch = mx.io.DataBatch([mx.nd.array(data), mx.nd.array([[size, size, 1.0]] * batch)],
                                 [mx.nd.array(ours_label)])

    def ssdkit_step():
        mod.forward_backward(ours_batch)
        mod.update()
        for out in mod.get_outputs():
            out.wait_to_read()

    transform = FasterRCNNDefaultTrainTransform(size, size, net, flip_p=0.0, ashape=net.ashape, multi_stage=True)
    net.collect_params().setattr("grad_req", "null")        # as train_faster_rcnn.py: only train_patterns learn
    net.collect_train_params().setattr("grad_req", "write")
    trainer = gluon.Trainer(net.collect_train_params(), "sgd", {"learning_rate": lr, "wd": 1e-4, "momentum": 0.9})
    rpn_cls_loss = gluon.loss.SigmoidBinaryCrossEntropyLoss(from_sigmoid=False)
    rpn_box_loss = gluon.loss.HuberLoss(rho=1 / 9.)
    rcnn_cls_loss = gluon.loss.SoftmaxCrossEntropyLoss()
    rcnn_box_loss = gluon.loss.HuberLoss()
    sources = [(mx.nd.array(img, dtype="uint8"), lab.astype(np.float32)) for img, lab in zip(images, labels)]

    def gluoncv_step():
        samples = [transform(img, lab) for img, lab in sources]
        losses = []
        with autograd.record():
            for x, label, cls_t, box_t, mask_t in samples:
                label = mx.nd.array(label)[None]
                # the batchify of the script: numpy targets of every level -> one NDArray each
                rpn_cls_t = mx.nd.array(np.concatenate([np.asarray(t).reshape(1, -1) for t in cls_t], axis=1))
                rpn_box_t = mx.nd.array(np.concatenate([np.asarray(t).reshape(1, -1, 4) for t in box_t], axis=1))
                rpn_box_m = mx.nd.array(np.concatenate([np.asarray(t).reshape(1, -1, 4) for t in mask_t], axis=1))
                (cls_pred, box_pred, _, _, _, rpn_score, rpn_box, _, cls_targets, box_targets, box_masks,
                 _) = net(x[None], label.slice_axis(axis=-1, begin=0, end=4),
                          label.slice_axis(axis=-1, begin=4, end=5))
                rpn_score = rpn_score.squeeze(axis=-1)
                num_rpn = (rpn_cls_t >= 0).sum()
                num_rcnn = (cls_targets >= 0).sum()
                losses += [rpn_cls_loss(rpn_score, rpn_cls_t, rpn_cls_t >= 0) * rpn_cls_t.size / num_rpn,
                           rpn_box_loss(rpn_box, rpn_box_t, rpn_box_m) * rpn_box.size / num_rpn,
                           rcnn_cls_loss(cls_pred, cls_targets, cls_targets.expand_dims(-1) >= 0)
                           * cls_targets.size / num_rcnn,
                           rcnn_box_loss(box_pred, box_targets, box_masks) * box_pred.size / num_rcnn]
            autograd.backward(losses)
        trainer.step(batch)
        for loss in losses:
            loss.wait_to_read()

    return ssdkit_step, gluoncv_step
