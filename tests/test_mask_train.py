"""Mask R-CNN training on the FPN path (issue 20): the mask loss against a numpy BCE (value and gradient) on
the graph's own targets and logits, one batch learnt by the mask_lite_synthetic preset's graph (mask loss
included, then the masks match their targets), and train_detector end to end with masks from the data layer."""
import dataclasses
import json

import mxnet as mx
import numpy as np
import pytest

import ssdkit.ops  # noqa: F401  (the FPN operators)
from ssdkit.config import load_config
from ssdkit.symbol import fpn
from ssdkit.symbol.common import he_initializer
from ssdkit.symbol.fpn_config import fpn_config

pytestmark = pytest.mark.skipif(not hasattr(mx.sym, "MaskTarget"),
                                reason="MaskTarget is not in the loaded operator library")

CLASSES = 3


def _tiny_batch(stride=1):
    """Two 128 x 128 images, three elliptic objects with their exact masks (``gt_masks`` at ``stride``)."""
    rng = np.random.RandomState(0)
    data = rng.uniform(-1, 1, size=(2, 3, 128, 128)).astype(np.float32)
    yy, xx = np.mgrid[0:128, 0:128] + 0.5
    label = np.full((2, 4, 6), -1.0, np.float32)
    masks = np.zeros((2, 4, 128, 128), np.float32)
    for b, m, c, (x0, y0, x1, y1) in [(0, 0, 1, (10, 20, 60, 90)), (0, 1, 0, (80, 70, 120, 120)),
                                      (1, 0, 2, (30, 30, 100, 80))]:
        inside = ((xx - (x0 + x1) / 2) / ((x1 - x0) / 2)) ** 2 + ((yy - (y0 + y1) / 2) / ((y1 - y0) / 2)) ** 2 <= 1
        masks[b, m] = inside
        data[b, c][inside] += 2.0
        label[b, m] = [c, x0, y0, x1, y1, 0]
    im_info = np.array([[128, 128, 1.0], [128, 128, 1.0]], np.float32)
    # gt_masks at stride s: pixel (i, j) covers image pixels [s i, s i + s); its centre decides
    centre = stride // 2
    return data, im_info, label, masks[:, :, centre::stride, centre::stride]


def _bce(x, t):
    return np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))


def test_mask_loss_is_the_bce_of_each_foreground_class_channel():
    config = fpn_config("fpn_lite", 128, 128, fpn_channels=16, rcnn_fc_dim=32, rcnn_batch_rois=32,
                        rpn_post_nms_top_n_train=40, mask=True, mask_channels=8, mask_convs=1, mask_roi_size=6,
                        mask_size=12, mask_stride=2, mask_loss_weight=1.5)
    data, im_info, label, masks = _tiny_batch(stride=2)
    train = fpn.get_symbol_train(num_classes=CLASSES, batch_size=2, **config)
    internals = train.get_internals()
    group = mx.sym.Group([train, internals["mask_target_output"], internals["mask_predictor_output"]])
    names = ["data", "im_info", "label", "gt_masks"]
    arg_shapes, _, aux_shapes = group.infer_shape(data=data.shape, im_info=im_info.shape, label=label.shape,
                                                  gt_masks=masks.shape)
    rng = np.random.default_rng(1)
    args = {n: mx.nd.array(rng.normal(0, 0.1, s)) for n, s in zip(group.list_arguments(), arg_shapes)}
    args.update({n: mx.nd.array(v) for n, v in zip(names, (data, im_info, label, masks))})
    args["mask_predictor_weight"] = mx.nd.array(rng.normal(0, 2.0, args["mask_predictor_weight"].shape))
    grads = {"mask_predictor_bias": mx.nd.zeros((CLASSES,))}
    aux = {n: mx.nd.ones(s) for n, s in zip(group.list_auxiliary_states(), aux_shapes)}
    exe = group.bind(mx.cpu(), args, args_grad=grads, grad_req={n: "write" if n in grads else "null"
                                                                 for n in group.list_arguments()}, aux_states=aux)
    mx.random.seed(0)
    outputs = exe.forward(is_train=True)
    exe.backward([mx.nd.zeros(o.shape) for o in outputs])    # the MakeLoss heads ignore these
    loss = outputs[6].asnumpy()[0]
    rcnn_label = outputs[5].asnumpy().reshape(2, 32)
    target, logits = outputs[7].asnumpy(), outputs[8].asnumpy()
    foreground = int(32 * 0.25)
    labels = rcnn_label[:, :foreground].reshape(-1)
    assert target.shape == (2 * foreground, 12, 12) and logits.shape == (2 * foreground, CLASSES, 12, 12)
    fg = labels > 0
    assert fg.sum() >= 3, labels
    assert np.all(target[~fg] == -1) and set(np.unique(target[fg])) == {0.0, 1.0}
    own = logits[np.flatnonzero(fg), labels[fg].astype(int) - 1]              # (F_fg, 12, 12)
    count = fg.sum() * 12 * 12
    np.testing.assert_allclose(loss, 1.5 * _bce(own, target[fg]).sum() / count, rtol=1e-5)
    # d loss / d bias_c: the sigmoid minus the target, summed over the rows of class c
    sig = 1 / (1 + np.exp(-own))
    expected = [1.5 * (sig - target[fg])[labels[fg] == c + 1].sum() / count for c in range(CLASSES)]
    np.testing.assert_allclose(exe.grad_dict["mask_predictor_bias"].asnumpy(), expected, rtol=1e-4, atol=1e-7)


def test_mask_lite_preset_graph_learns_one_batch_and_finds_the_masks():
    """The mask_lite_synthetic preset's [fpn] settings with its optimiser drive the mask loss down on one batch
    (with the box losses), and the masks of the foreground RoIs (own class channel, logit > 0) then match
    their targets."""
    mx.random.seed(0)
    np.random.seed(0)
    preset = load_config("mask_lite_synthetic")
    assert preset.model.network == "fpn_lite" and preset.fpn.mask
    stride = preset.fpn.mask_stride
    settings = dict(dataclasses.asdict(preset.fpn), rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=50)
    data, im_info, label, masks = _tiny_batch(stride)
    sym = fpn.get_symbol_train("fpn_lite", CLASSES, image_shape=(128, 128), batch_size=2, **settings)
    mod = mx.mod.Module(sym, data_names=["data", "im_info"], label_names=["label", "gt_masks"], context=mx.cpu())
    mod.bind(data_shapes=[("data", data.shape), ("im_info", im_info.shape)],
             label_shapes=[("label", label.shape), ("gt_masks", masks.shape)])
    mod.init_params(initializer=he_initializer())
    mod.init_optimizer(optimizer=preset.solver.optimizer, optimizer_params={"learning_rate": preset.solver.lr})
    batch = mx.io.DataBatch([mx.nd.array(data), mx.nd.array(im_info)], [mx.nd.array(label), mx.nd.array(masks)])
    history = []
    for _ in range(50):
        mod.forward(batch, is_train=True)
        outputs = mod.get_outputs()
        history.append([float(outputs[k].asnumpy()[0]) for k in (0, 2, 6)])
        mod.backward()
        mod.update()
    history = np.array(history)
    assert np.all(np.isfinite(history))
    first, last = history[:3].mean(axis=0), history[-3:].mean(axis=0)
    assert last[0] < 0.5 * first[0] and last[1] < 0.5 * first[1], (first, last)     # rpn_cls, rcnn_cls
    assert last[2] < 0.5 * first[2], (first, last, history[:, 2])                   # mask_loss

    # the mask logits of the last step's foreground RoIs against their targets (a forward in training mode: the
    # BatchNorm statistics of 50 steps on one batch are not those of inference yet)
    internals = sym.get_internals()
    probe = mx.sym.Group([internals["mask_target_output"], internals["mask_predictor_output"],
                          internals["rcnn_label_output"]])
    probe_mod = mx.mod.Module(probe, data_names=["data", "im_info"], label_names=["label", "gt_masks"])
    # bound for training with gradients: a forward in training mode without them (for_training=False or
    # grad_req="null") gives other values and then fails under oneDNN (MXNet 1.9)
    probe_mod.bind(data_shapes=mod.data_shapes, label_shapes=mod.label_shapes, for_training=True)
    probe_mod.set_params(*mod.get_params())
    probe_mod.forward(batch, is_train=True)
    target, logits, rcnn_label = [o.asnumpy() for o in probe_mod.get_outputs()]
    foreground = preset.fpn.mask_foreground_rois
    labels = rcnn_label.reshape(2, -1)[:, :foreground].reshape(-1)
    fg = np.flatnonzero(labels > 0)
    assert len(fg) >= 3
    predicted = logits[fg, labels[fg].astype(int) - 1] > 0
    truth = target[fg] > 0.5
    accuracy = (predicted == truth).mean()
    constant = max(truth.mean(), 1 - truth.mean())       # the best mask that ignores the image
    iou = (predicted & truth).sum() / (predicted | truth).sum()
    assert accuracy > constant + 0.15 and iou > 0.8, (accuracy, constant, iou)       # here 0.97, 0.69, 0.96


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from ssdkit.dataset.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(str(tmp_path_factory.mktemp("synthetic_masks")), num_train=8, num_test=0,
                                  num_val=4, seed=5, image_size=(112, 128))


def _small_run(synthetic, prefix, **overrides):
    from ssdkit.config import apply_overrides

    return apply_overrides(load_config("mask_lite_synthetic"), dict({
        "data.root": synthetic.devkit, "model.resize_short": 128, "model.resize_long": 128, "data.batch_size": 4,
        "data.num_workers": 1, "runtime.prefix": prefix, "solver.epochs": 1, "solver.warmup_epochs": 0.0,
        "fpn.rpn_pre_nms_top_n_train": 100, "fpn.rpn_post_nms_top_n_train": 50}, **overrides))


def test_copy_paste_settings_reach_the_training_iterator_of_a_mask_model(synthetic, tmp_path):
    from ssdkit.api.data import load_split
    from ssdkit.api.family import make_iterator

    config = _small_run(synthetic, str(tmp_path / "m"), **{"augment.copy_paste_prob": 0.7,
                                                            "augment.copy_paste_mode": "copy"})
    train_set = load_split(config, "train")
    it = make_iterator(config, "train", train_set)
    assert [d.name for d in it.provide_label] == ["label", "gt_masks"]
    assert it.provide_label[1].shape[2:] == (64, 64)                     # 128 / mask_stride 2
    assert (it.copy_paste.prob, it.copy_paste.mode, it.copy_paste.max_instances) == (0.7, "copy", 3)
    val = make_iterator(config, "val", load_split(config, "val"))
    assert [d.name for d in val.provide_label] == ["label"] and val.copy_paste is None
    assert make_iterator(_small_run(synthetic, str(tmp_path / "n")), "train", train_set).copy_paste is None
    with pytest.raises(ValueError, match="needs the instance masks of a mask model: set fpn.mask = true"):
        make_iterator(_small_run(synthetic, str(tmp_path / "b"), **{"fpn.mask": False,
                                                                    "augment.copy_paste_prob": 0.5}),
                      "train", train_set)


def test_train_detector_with_masks_from_the_data_layer(synthetic, tmp_path):
    """mask_lite_synthetic through train_detector on a tiny synthetic set with instance masks (one epoch of two
    batches at 128 px, copy-paste on): the batches carry gt_masks, the mask loss is logged, the validation reads
    box mAP from output 0 of the [detection, masks] graph, and the meta holds the mask settings."""
    from ssdkit.api.model_files import inference_symbol, read_meta
    from ssdkit.api.train import train_detector

    prefix = str(tmp_path / "run" / "mask")
    result = train_detector(_small_run(synthetic, prefix, **{"augment.copy_paste_prob": 0.5}), progress=False)
    assert result["epoch"] == 1
    (row,) = json.load(open(prefix + "-history.json"))
    for name in ("rpn_cls_loss", "rcnn_cls_loss", "mask_loss", "mAP"):
        assert np.isfinite(row[name]), name
    assert 0.3 < row["mask_loss"] < 1.0            # BCE of a near-untrained mask head is about log 2
    train = mx.sym.load(prefix + "-symbol.json")
    assert "gt_masks" in train.list_arguments() and train.list_outputs()[-1] == "mask_loss_output"
    meta = read_meta(prefix)
    assert meta["fpn"]["mask"] is True and meta["fpn"]["mask_stride"] == 2 and meta["fpn"]["mask_channels"] == 32
    infer = inference_symbol(meta)
    assert infer.list_outputs() == ["detection_output", "masks_output"]
    assert infer.infer_shape(data=(1, 3, 128, 128), im_info=(1, 3))[1] == [(1, 100, 6), (1, 100, 20, 20)]


def test_group_norm_graph_learns_one_batch():
    """norm = "group" (GroupNorm in neck, box head and mask head) trains: the RPN, R-CNN and mask losses fall on
    one batch."""
    mx.random.seed(0)
    np.random.seed(0)
    config = fpn_config("fpn_lite", 128, 128, fpn_channels=16, rpn_channels=16, rcnn_fc_dim=32, rcnn_batch_rois=32,
                        rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=50, anchor_scales=(4.0,),
                        roi_canonical_size=112.0, norm="group", gn_groups=4, mask=True, mask_channels=16,
                        mask_roi_size=7, mask_size=14)
    data, im_info, label, masks = _tiny_batch()
    sym = fpn.get_symbol_train(num_classes=CLASSES, batch_size=2, **config)
    mod = mx.mod.Module(sym, data_names=["data", "im_info"], label_names=["label", "gt_masks"], context=mx.cpu())
    mod.bind(data_shapes=[("data", data.shape), ("im_info", im_info.shape)],
             label_shapes=[("label", label.shape), ("gt_masks", masks.shape)])
    mod.init_params(initializer=he_initializer())
    mod.init_optimizer(optimizer="adam", optimizer_params={"learning_rate": 0.006})
    batch = mx.io.DataBatch([mx.nd.array(data), mx.nd.array(im_info)], [mx.nd.array(label), mx.nd.array(masks)])
    history = []
    for _ in range(30):
        mod.forward(batch, is_train=True)
        history.append([float(mod.get_outputs()[k].asnumpy()[0]) for k in (0, 2, 6)])
        mod.backward()
        mod.update()
    history = np.array(history)
    first, last = history[:3].mean(axis=0), history[-3:].mean(axis=0)
    assert np.all(np.isfinite(history))
    assert np.all(last < np.array([0.3, 0.75, 0.65]) * first), (first, last)     # here x0.02, x0.56, x0.49
