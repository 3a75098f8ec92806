"""FPN graphs: neck shapes, RPN output order vs anchors (ssdkit.anchors), RoI level assignment, multi-level
RoIAlign, training graph binding and overfitting one batch, inference output, argument hygiene."""
import copy
import dataclasses
import json

import mxnet as mx
import numpy as np
import pytest

from ssdkit.anchors import rpn_anchors
from ssdkit.config import load_config
from ssdkit.engine.fpn_metric import FPNLossMetric
from ssdkit.symbol import fpn, resnet
from ssdkit.symbol.common import he_initializer
from ssdkit.symbol.fpn_config import LEVEL_STRIDES, fpn_config
from ssdkit.symbol.fpn_head import backbone_stages, fpn_neck, multilevel_roi_align, roi_levels

# a narrow fpn_resnet18 on 128 x 128 inputs keeps the graph tests fast on a loaded 2-core machine
SMALL = dict(fpn_channels=32, rcnn_fc_dim=64, rcnn_batch_rois=64, rpn_pre_nms_top_n_train=400,
             rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=400, rpn_post_nms_top_n_test=100)


def _small_config(**overrides):
    return fpn_config("fpn_resnet18", 128, 128, **dict(SMALL, **overrides))


# ---------------------------------------------------------------- blocks (MXNet ops only)
@pytest.mark.parametrize("depth", [18, 50, "lite"])
def test_neck_levels_and_names(depth):
    levels = fpn_neck(backbone_stages(depth), 64)
    _, shapes, _ = mx.sym.Group(levels).infer_shape(data=(2, 3, 192, 256))
    assert shapes == [(2, 64, 192 // s, 256 // s) for s in LEVEL_STRIDES]
    args = mx.sym.Group(levels).list_arguments()
    for level in (2, 3, 4, 5):
        assert "fpn_lateral%d_weight" % level in args and "fpn_output%d_weight" % level in args
    # odd sizes: the upsampled map is cropped to the lateral one
    _, shapes, _ = mx.sym.Group(levels).infer_shape(data=(1, 3, 100, 150))
    assert [s[2:] for s in shapes] == [(25, 38), (13, 19), (7, 10), (4, 5), (2, 3)]


def test_frozen_batchnorm_only_when_asked():
    frozen = backbone_stages(18, frozen_bn=True)[-1].attr_dict()
    plain = backbone_stages(18)[-1].attr_dict()
    assert frozen["stage1_unit1_conv1_bn"]["use_global_stats"] == "True"
    assert frozen["conv0_bn"]["use_global_stats"] == "True"
    assert "use_global_stats" not in plain["stage1_unit1_conv1_bn"]
    assert "use_global_stats" not in resnet.get_symbol(num_layers=50).attr_dict()["conv0_bn"]  # SSD unchanged
    assert resnet.stage_output_names(50) == ["stage1_unit3_relu", "stage2_unit4_relu", "stage3_unit6_relu",
                                            "stage4_unit3_relu"]


def test_lite_backbone_stages_and_names():
    stages = backbone_stages("lite")
    _, shapes, _ = mx.sym.Group(stages).infer_shape(data=(2, 3, 256, 192))
    assert shapes == [(2, c, 256 // s, 192 // s) for c, s in zip((32, 96, 128, 160), (4, 8, 16, 32))]
    args = fpn.get_symbol("fpn_lite", 3, image_shape=(128, 128), **SMALL).list_arguments()
    assert "conv1_weight" in args and "stage5_unit2_pw_weight" in args and "fpn_lateral5_weight" in args
    assert not any(a.startswith("stage1_") or a.startswith("conv0") for a in args)    # no ResNet parts
    with pytest.raises(ValueError, match="frozen_bn = false"):
        backbone_stages("lite", frozen_bn=True)
    with pytest.raises(ValueError, match="lite backbone has none"):
        backbone_stages("lite", variant="v1b")


def test_roi_level_assignment():
    # k = floor(4 + log2(sqrt(w h) / 224)) clipped to [2, 5]
    rois = np.array([[0, 0, 0, 224, 224],      # canonical: 4
                     [0, 10, 10, 122, 122],    # 112: 3
                     [0, 0, 0, 111.5, 112],    # sqrt < 112: 2
                     [1, 0, 0, 448, 448],      # 5
                     [1, 5, 5, 1005, 1005],    # 1000: clipped to 5
                     [0, 0, 0, 56, 56],        # 2
                     [0, 0, 0, 20, 10],        # tiny: clipped to 2
                     [0, 0, 0, 0, 0],          # padding (zero area): 2
                     [0, 0, 0, 56, 224],       # sqrt(56 * 224) = 112: 3
                     [0, 0, 0, 447, 447]],     # just below 448: 4
                    np.float32)
    levels = roi_levels(mx.sym.var("rois")).eval(rois=mx.nd.array(rois))[0].asnumpy()
    np.testing.assert_array_equal(levels, [4, 3, 2, 5, 5, 2, 2, 2, 3, 4])
    narrow = roi_levels(mx.sym.var("rois"), min_level=3, max_level=4).eval(rois=mx.nd.array(rois))[0].asnumpy()
    np.testing.assert_array_equal(narrow, np.clip([4, 3, 2, 5, 5, 2, 2, 2, 3, 4], 3, 4))


def test_multilevel_roi_align_pools_each_roi_on_its_level():
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((2, 4, 64 // s, 64 // s)).astype(np.float32) for s in (4, 8, 16, 32)]
    rois = np.array([[0, 3, 4, 20, 30], [1, 0, 0, 255, 255], [0, 10, 2, 140, 160], [1, 5, 5, 9, 7],
                     [-1, 0, 0, 0, 0], [0, 7, 7, 7.5, 30]], np.float32)    # padding row, sub-pixel width
    names = ["p%d" % k for k in (2, 3, 4, 5)]
    sym = multilevel_roi_align([mx.sym.var(n) for n in names], mx.sym.var("rois"), strides=[4, 8, 16, 32],
                               pooled_size=3, sample_ratio=2, min_level=2)
    levels = roi_levels(mx.sym.var("rois")).eval(rois=mx.nd.array(rois))[0].asnumpy().astype(int)
    np.testing.assert_array_equal(levels, [2, 4, 3, 2, 2, 2])
    inputs = {n: mx.nd.array(f) for n, f in zip(names, feats)}
    inputs.update(rois=mx.nd.array(rois))
    exe = sym.bind(mx.cpu(), inputs, args_grad={n: mx.nd.zeros(f.shape) for n, f in zip(names, feats)})
    out = exe.forward(is_train=True)[0].asnumpy()
    assert out.shape == (6, 4, 3, 3) and np.all(np.isfinite(out))
    assert not out[4].any()                      # padding row
    for i, level in enumerate(levels):
        if rois[i, 0] < 0:
            continue
        k = level - 2
        alone = mx.nd.contrib.ROIAlign(mx.nd.array(feats[k]), mx.nd.array(rois[i:i + 1]), pooled_size=(3, 3),
                                       spatial_scale=1.0 / (4 * 2 ** k), sample_ratio=2, aligned=True)
        np.testing.assert_allclose(out[i], alone.asnumpy()[0], rtol=1e-5, atol=1e-6)
        assert np.abs(out[i]).sum() > 0
    # gradients reach only the level a RoI was pooled from: image 0 uses P2 and P3, image 1 P2 and P4
    exe.backward([mx.nd.ones(out.shape)])
    grads = [exe.grad_dict[n].asnumpy() for n in names]
    assert all(np.abs(g[0]).sum() > 0 for g in grads[:2]) and np.abs(grads[3]).sum() == 0
    assert np.abs(grads[2][0]).sum() == 0 and np.abs(grads[1][1]).sum() == 0 and np.abs(grads[2][1]).sum() > 0


def test_level_sizes():
    # 1344 x 1344: P2 336^2, P3 168^2, ... P6 21^2, three anchors each
    assert fpn.fpn_level_sizes("fpn_resnet50", image_shape=(1344, 1344)) == tuple(
        3 * (1344 // s) ** 2 for s in LEVEL_STRIDES)
    assert fpn.fpn_level_sizes("fpn_resnet18", image_shape=(128, 192), anchor_scales=(4, 8)) == tuple(
        6 * (128 // s) * (192 // s) for s in LEVEL_STRIDES)


def test_bad_arguments_are_named():
    config = _small_config()
    with pytest.raises(ValueError, match="unknown FPN network 'fpn_vgg'"):
        fpn.get_symbol(**dict(config, network="fpn_vgg"), num_classes=3)
    with pytest.raises(ValueError, match="unknown FPN setting.*rpn_thresh"):
        fpn.get_symbol(num_classes=3, rpn_thresh=0.5, **config)
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        fpn.get_symbol(num_classes=0, **config)
    with pytest.raises(ValueError, match="image_shape"):
        fpn.get_symbol(num_classes=3, **dict(config, image_shape=(3, 128, 128)))
    with pytest.raises(ValueError, match="batch_size"):
        fpn.get_symbol_train(num_classes=3, batch_size=0, **config)
    with pytest.raises(RuntimeError, match="NoSuchOp is not in the loaded ssdkit operator library"):
        fpn._op("NoSuchOp")


def test_loss_metric_averages_losses_and_counts_sampled_rois():
    metric = FPNLossMetric()
    assert metric.get() == (list(FPNLossMetric.NAMES), [0.0] * 5)
    prob = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]], np.float32)
    for losses, label in [((1.0, 2.0, 3.0, 4.0), [0, 1, 1, -1]), ((3.0, 0.0, 1.0, 2.0), [0, 0, -1, -1])]:
        metric.update(None, [mx.nd.array([v]) for v in losses] + [mx.nd.array(prob), mx.nd.array(label)])
    names, values = metric.get()
    assert names == ["rpn_cls_loss", "rpn_box_loss", "rcnn_cls_loss", "rcnn_box_loss", "rcnn_accuracy"]
    np.testing.assert_allclose(values, [2.0, 1.0, 2.0, 3.0, 3 / 5])   # right: rows 0, 1 then row 0 of 2


# ---------------------------------------------------------------- graphs (ssdkit's FPN operators)
def test_rpn_outputs_follow_the_anchor_order():
    config = _small_config(anchor_scales=(4.0, 8.0))
    sym = fpn.get_rpn_outputs(**{k: v for k, v in config.items() if k != "network"}, network="fpn_resnet18")
    mx.random.seed(1)
    mod = mx.mod.Module(sym, data_names=["data"], label_names=None, context=mx.cpu())
    mod.bind(data_shapes=[("data", (1, 3, 128, 128))], for_training=False)
    mod.init_params(mx.init.Xavier(magnitude=2))
    batch = mx.io.DataBatch([mx.nd.random.uniform(-1, 1, shape=(1, 3, 128, 128))])
    mod.forward(batch, is_train=False)
    logits, deltas, anchors = [o.asnumpy() for o in mod.get_outputs()]
    expected = np.concatenate([rpn_anchors(128 // s, 128 // s, s, (4.0, 8.0), (0.5, 1.0, 2.0))
                               for s in LEVEL_STRIDES])
    assert anchors.shape == (1, len(expected), 4) and logits.shape == (1, len(expected))
    assert deltas.shape == (1, 4 * len(expected))
    np.testing.assert_allclose(anchors[0], expected, atol=1e-3)
    # logits[i] of level 3 is the head's map at (anchor a, row y, column x) with i = (y W + x) A + a
    internals = sym.get_internals()
    head = mx.sym.Group([internals["rpn_cls_logits_l1_output"], internals["rpn_bbox_pred_l1_output"]])
    head_mod = mx.mod.Module(head, data_names=["data"], label_names=None, context=mx.cpu())
    head_mod.bind(data_shapes=[("data", (1, 3, 128, 128))], for_training=False)
    head_mod.set_params(*mod.get_params(), allow_extra=True)
    head_mod.forward(batch, is_train=False)
    cls_map, box_map = [o.asnumpy()[0] for o in head_mod.get_outputs()]
    assert np.abs(cls_map).max() > 1e-3 and np.abs(box_map).max() > 1e-3
    offset, width, num_anchors = 6 * 32 * 32, 16, 6        # after P2: 32 x 32 cells, 6 anchors each
    for y, x, a in [(0, 0, 0), (3, 7, 5), (15, 15, 2), (9, 1, 4)]:
        i = offset + (y * width + x) * num_anchors + a
        assert logits[0, i] == pytest.approx(cls_map[a, y, x], abs=1e-6)
        np.testing.assert_allclose(deltas[0, 4 * i:4 * i + 4], box_map[4 * a:4 * a + 4, y, x], atol=1e-6)
        centre = (anchors[0, i, :2] + anchors[0, i, 2:]) / 2
        np.testing.assert_allclose(centre, [(x + 0.5) * 8, (y + 0.5) * 8], atol=1e-4)


def test_train_and_inference_graphs_share_parameters():
    config = _small_config()
    train = fpn.get_symbol_train(num_classes=4, batch_size=2, **config)
    infer = fpn.get_symbol(num_classes=4, **config)
    assert train.list_outputs() == [n + "_output" for n in fpn.TRAIN_OUTPUTS]
    assert infer.list_outputs() == ["detection_output"]
    assert set(train.list_arguments()) - set(infer.list_arguments()) == {"label"}
    assert set(infer.list_arguments()) <= set(train.list_arguments())
    assert set(train.list_auxiliary_states()) == set(infer.list_auxiliary_states())
    shapes = dict(zip(train.list_arguments(), train.infer_shape(data=(2, 3, 128, 128), im_info=(2, 3),
                                                                 label=(2, 5, 6))[0]))
    assert shapes["rcnn_cls_score_weight"] == (5, 64) and shapes["rcnn_bbox_pred_weight"] == (20, 64)
    assert shapes["rpn_cls_logits_weight"] == (3, 32, 1, 1) and shapes["rpn_bbox_pred_weight"] == (12, 32, 1, 1)
    assert shapes["rcnn_fc6_weight"] == (64, 32 * 7 * 7)
    _, out_shapes, _ = train.infer_shape(data=(2, 3, 128, 128), im_info=(2, 3), label=(2, 5, 6))
    assert out_shapes == [(1,), (1,), (1,), (1,), (128, 5), (128,)]
    loaded = mx.sym.load_json(infer.tojson())            # a deploy model's JSON reads back
    assert loaded.list_arguments() == infer.list_arguments()
    assert loaded.infer_shape(data=(3, 3, 128, 128), im_info=(3, 3))[1] == [(3, 100, 6)]


def test_roi_canonical_size_and_box_head_batchnorm_reach_the_graph():
    def roi_align_attrs(sym):
        return [n for n in json.loads(sym.tojson())["nodes"] if n["op"] == "MultiLevelROIAlign"][0]["attrs"]

    default = fpn.get_symbol(num_classes=2, **_small_config())
    assert float(roi_align_attrs(default)["canonical_size"]) == 224.0
    assert not any(a.startswith("rcnn_fc6_bn") for a in default.list_arguments())
    config = _small_config(roi_canonical_size=112.0, rcnn_batchnorm=True)
    for sym in (fpn.get_symbol(num_classes=2, **config), fpn.get_symbol_train(num_classes=2, batch_size=2, **config)):
        assert float(roi_align_attrs(sym)["canonical_size"]) == 112.0
        assert {"rcnn_fc6_bn_gamma", "rcnn_fc7_bn_beta"} <= set(sym.list_arguments())
        assert {"rcnn_fc6_bn_moving_mean", "rcnn_fc7_bn_moving_var"} <= set(sym.list_auxiliary_states())
    # the level rule moves with the canonical size: a 112 px RoI is pooled from P4 instead of P3
    rois = mx.nd.array([[0, 0, 0, 112, 112]])
    assert roi_levels(mx.sym.var("r"), canonical_size=112.0).eval(r=rois)[0].asscalar() == 4
    assert roi_levels(mx.sym.var("r")).eval(r=rois)[0].asscalar() == 3
    with pytest.raises(ValueError, match="roi_canonical_size"):
        fpn.get_symbol(num_classes=2, **_small_config(roi_canonical_size=0.0))


def test_caller_arguments_are_not_mutated():
    config = _small_config()
    config["anchor_ratios"] = [0.5, 1.0, 2.0]
    config["image_shape"] = [128, 128]
    before = copy.deepcopy(config)
    fpn.get_symbol_train(num_classes=2, batch_size=1, **config)
    fpn.get_symbol(num_classes=2, **config)
    assert config == before


def _tiny_batch():
    rng = np.random.RandomState(0)
    data = rng.uniform(-1, 1, size=(2, 3, 128, 128)).astype(np.float32)
    # bright rectangles where the objects are, so there is something to learn
    data[0, :, 20:90, 10:60] += 2.0
    data[0, 1, 70:120, 80:120] -= 2.0
    data[1, 2, 30:80, 30:100] += 2.0
    im_info = np.array([[128, 128, 1.0], [110, 128, 0.8]], np.float32)
    label = np.full((2, 4, 6), -1.0, np.float32)
    label[0, 0] = [1, 10, 20, 60, 90, 0]
    label[0, 1] = [0, 80, 70, 120, 120, 0]
    label[1, 0] = [2, 30, 30, 100, 80, 1]
    return data, im_info, label


ITERATIONS = 120


def test_training_graph_overfits_one_batch_and_inference_finds_the_objects():
    mx.random.seed(0)
    np.random.seed(0)
    config = _small_config()
    data, im_info, label = _tiny_batch()
    sym = fpn.get_symbol_train(num_classes=3, batch_size=2, **config)
    mod = mx.mod.Module(sym, data_names=["data", "im_info"], label_names=["label"], context=mx.cpu())
    mod.bind(data_shapes=[("data", data.shape), ("im_info", im_info.shape)], label_shapes=[("label", label.shape)])
    mod.init_params(initializer=he_initializer())
    mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.02, "momentum": 0.9, "wd": 1e-4})
    batch = mx.io.DataBatch([mx.nd.array(data), mx.nd.array(im_info)], [mx.nd.array(label)])
    history, metric = [], FPNLossMetric()
    for _ in range(ITERATIONS):
        mod.forward(batch, is_train=True)
        outputs = [o.asnumpy() for o in mod.get_outputs()]
        rcnn_label = outputs[5]
        # the R-CNN box loss is normalised by all sampled RoIs, and its sum grows with the foreground
        # RoIs as the proposals improve (8 -> ~30 here); per foreground RoI it is comparable over time
        per_fg = float(outputs[3][0]) * np.sum(rcnn_label >= 0) / max(1, np.sum(rcnn_label > 0))
        history.append([float(o[0]) for o in outputs[:4]] + [per_fg])
        metric.reset()
        mod.update_metric(metric, batch.label)
        np.testing.assert_allclose(metric.get()[1][:4], history[-1][:4], rtol=1e-6)
        mod.backward()
        mod.update()
    history = np.array(history)
    assert np.all(np.isfinite(history))
    assert outputs[4].shape == (128, 4) and rcnn_label.shape == (128,)
    assert set(np.unique(rcnn_label)) <= {-1, 0, 1, 2, 3} and np.sum(rcnn_label > 0) >= 3
    assert metric.get()[1][4] > 0.8                    # R-CNN accuracy on the sampled RoIs
    first, last = history[:5].mean(axis=0), history[-5:].mean(axis=0)
    names = ("rpn_cls_loss", "rpn_box_loss", "rcnn_cls_loss", "rcnn_box_loss", "rcnn_box_loss per fg RoI")
    for k, factor in ((0, 0.3), (1, 0.5), (2, 0.3), (4, 0.5)):
        assert last[k] < factor * first[k], (names[k], first[k], last[k], history[:, k])

    infer = fpn.get_symbol(num_classes=3, **config)
    arg, aux = mod.get_params()
    det_mod = mx.mod.Module(infer, data_names=["data", "im_info"], label_names=None, context=mx.cpu())
    det_mod.bind(data_shapes=[("data", data.shape), ("im_info", im_info.shape)], for_training=False)
    det_mod.set_params(arg, aux, allow_missing=False, allow_extra=True)
    det_mod.forward(mx.io.DataBatch([mx.nd.array(data), mx.nd.array(im_info)]), is_train=False)
    det = det_mod.get_outputs()[0]
    assert det.shape == (2, 100, 6) and det.dtype == np.float32
    det = det.asnumpy()
    valid = det[det[:, :, 0] >= 0]
    assert np.all(valid[:, 1] > 0.05) and np.all((valid[:, 2:] >= 0) & (valid[:, 2:] <= 1))
    assert np.all(det[det[:, :, 0] < 0][:, 0] == -1)
    for b in range(2):        # each ground truth is found, normalised to the valid image area
        rows = det[b][det[b, :, 0] >= 0]
        for gt in label[b][label[b, :, 0] >= 0]:
            box = gt[1:5] / np.array([im_info[b, 1], im_info[b, 0], im_info[b, 1], im_info[b, 0]])
            same = rows[rows[:, 0] == gt[0]]
            assert len(same), (b, gt, rows[:5])
            best = same[np.argmax(same[:, 1])]
            assert best[1] > 0.5 and np.abs(best[2:] - box).max() < 0.1, (b, gt, best)


def test_fpn_lite_preset_graph_learns_one_batch():
    """The fpn_lite_synthetic preset's graph (lite body, 32-channel neck, BatchNorm box head) with its optimiser
    drives the RPN and R-CNN losses down on one batch (a short check; the full recipe is bench/README_fpn.md)."""
    mx.random.seed(0)
    np.random.seed(0)
    preset = load_config("fpn_lite_synthetic")
    assert preset.model.network == "fpn_lite" and preset.fpn.rcnn_batchnorm
    settings = dict(dataclasses.asdict(preset.fpn), rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=50)
    data, im_info, label = _tiny_batch()
    sym = fpn.get_symbol_train("fpn_lite", 3, image_shape=(128, 128), batch_size=2, **settings)
    mod = mx.mod.Module(sym, data_names=["data", "im_info"], label_names=["label"], context=mx.cpu())
    mod.bind(data_shapes=[("data", data.shape), ("im_info", im_info.shape)], label_shapes=[("label", label.shape)])
    mod.init_params(initializer=he_initializer())
    mod.init_optimizer(optimizer=preset.solver.optimizer, optimizer_params={"learning_rate": preset.solver.lr})
    batch = mx.io.DataBatch([mx.nd.array(data), mx.nd.array(im_info)], [mx.nd.array(label)])
    history = []
    for _ in range(40):
        mod.forward(batch, is_train=True)
        history.append([float(o.asnumpy()[0]) for o in mod.get_outputs()[:4]])
        mod.backward()
        mod.update()
    history = np.array(history)
    assert np.all(np.isfinite(history))
    first, last = history[:3].mean(axis=0), history[-3:].mean(axis=0)
    assert last[0] < 0.5 * first[0] and last[2] < 0.5 * first[2], (first, last)    # rpn_cls, rcnn_cls

