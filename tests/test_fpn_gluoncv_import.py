"""GluonCV's Faster R-CNN FPN zoo models in ssdkit's FPN graph: same features, anchors, proposals and detections.

The GluonCV nets are built offline (``pretrained=False, pretrained_base=False``) with random weights:
every convolution He-like, BatchNorm statistics, gammas and betas randomised (so a swapped mapping
cannot pass), the RPN objectness spread out and the class predictor set on standardised RoI features with
a background bias (:func:`_spread_classes`), so that detections of many classes pass GluonCV's 0.01 score
threshold. Their parameters are saved with
``save_parameters`` and imported with :mod:`ssdkit.weights_fpn`; both run on the same normalised image,
whose size (a multiple of 64) is ssdkit's padded batch, so no padding differs.

GluonCV pools each level with ``contrib.ROIAlign`` on a copy of the RoIs whose rows of other levels are
set to -1; MXNet 1.9.1's CPU ``contrib.ROIAlign`` then corrupts row 0 (the best proposal's features, so
its detections). ssdkit's ``MultiLevelROIAlign`` has no such bug, so the reference run replaces
``contrib.ROIAlign`` by :func:`_row_correct_roi_align` (same values on valid rows, zeros on rows -1, the
intended result).

Ties: proposals and detections are ranked by score; two scores that differ by less than float32
rounding of the two implementations (relative 1e-5) may come out in either order, so a row that is
not at the same position must be found among the rows of (almost) the same score.
"""
import mxnet as mx
import numpy as np
import pytest

from ssdkit.anchors import legacy_cell_anchors
from ssdkit.symbol.fpn import get_symbol
from ssdkit.symbol.fpn_head import roi_levels
from ssdkit.weights_fpn import ZOO, import_faster_rcnn_fpn, layer_map, zoo_fpn_config

gluoncv = pytest.importorskip("gluoncv")
from gluoncv import model_zoo  # noqa: E402
from gluoncv.model_zoo.rcnn.rpn.anchor import generate_base_anchors  # noqa: E402

SCORE_TIE = 1e-5
FEATURES = ("fpn_output2", "fpn_output3", "fpn_output4", "fpn_output5", "fpn_p6")


def _tame(net, seed):
    """Random but well-conditioned weights, see the module docstring (drawn by MXNet's seeded generator)."""
    mx.random.seed(seed)

    def normal(param, std):
        param.set_data(mx.nd.random.normal(0, std, shape=param.shape))

    for name, param in sorted(net.collect_params().items()):
        shape = param.shape
        if name.endswith("running_var"):
            param.set_data(mx.nd.random.uniform(0.5, 2.0, shape=shape))
        elif name.endswith("running_mean"):
            normal(param, 0.1)
        elif name.endswith("gamma"):
            param.set_data(mx.nd.random.uniform(0.3, 0.6, shape=shape))
        elif name.endswith(("beta", "bias")):
            normal(param, 0.05)
        elif name.endswith("weight") and len(shape) == 4:
            normal(param, np.sqrt(1.0 / np.prod(shape[1:])))
    for dense in [b for b in net.box_features if isinstance(b, mx.gluon.nn.Dense)]:   # He-scaled: RoI features differ
        normal(dense.weight, np.sqrt(2.0 / dense.weight.shape[1]))
    normal(net.rpn.rpn_head.score.weight, 0.05)  # objectness spread out: few near-ties among proposals
    normal(net.box_predictor.weight, 0.01)


def _spread_classes(net, features, proposals, seed):
    """Class predictor on standardised RoI features of ``proposals`` (1, P, 4): logits of std ~1.5 that vary
    between RoIs, background 2.5 higher, so that many classes pass 0.01 and the per-class NMS has work."""
    rois = mx.nd.concat(mx.nd.zeros((proposals.shape[1], 1)), proposals[0], dim=1)
    pooled = net._pyramid_roi_feats(mx.nd, features, rois, net._roi_size, net._strides, roi_mode=net._roi_mode)
    fc7 = net.box_features(pooled).asnumpy()
    mean, std = fc7.mean(axis=0), fc7.std(axis=0) + 1e-3
    rng = np.random.RandomState(seed)
    weight = rng.normal(0, 1.5 / np.sqrt(fc7.shape[1]), (net.num_class + 1, fc7.shape[1])) / std
    bias = -weight.dot(mean)
    bias[0] += 2.5
    net.class_predictor.weight.set_data(mx.nd.array(weight.astype(np.float32)))
    net.class_predictor.bias.set_data(mx.nd.array(bias.astype(np.float32)))


def _normalised(image):
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32 ImageNet-normalised (GluonCV's and ssdkit's input)."""
    from ssdkit.normalization import IMAGENET_MEAN, IMAGENET_STD

    return ((image - np.array(IMAGENET_MEAN)) / IMAGENET_STD).transpose(2, 0, 1)[None].astype(np.float32)


_CONTRIB_ROI_ALIGN = mx.nd.contrib.ROIAlign


def _row_correct_roi_align(data, rois, *args, **kwargs):
    """``contrib.ROIAlign`` without its CPU bug on rows of batch index -1: they are pooled as an empty box
    of image 0 and then zeroed."""
    valid = rois.slice_axis(axis=1, begin=0, end=1) >= 0
    safe = mx.nd.where(mx.nd.broadcast_like(valid, rois), rois, mx.nd.zeros_like(rois))
    out = _CONTRIB_ROI_ALIGN(data, safe, *args, **kwargs)
    return out * valid.reshape((-1, 1, 1, 1))


def _run_both(name, height, width, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(mx.nd.contrib, "ROIAlign", _row_correct_roi_align)
    try:
        return _run_both_patched(name, height, width, tmp_path_factory)
    finally:
        mp.undo()


def _run_both_patched(name, height, width, tmp_path_factory):
    net = model_zoo.get_model(name, pretrained=False, pretrained_base=False)
    net.initialize()
    net(mx.nd.zeros((1, 3, 64, 64)))             # finishes the deferred initialisation
    _tame(net, 1)
    x = mx.nd.array(_normalised(np.random.RandomState(0).randint(0, 256, (height, width, 3)).astype(np.uint8)))
    features = net.features(x)
    rpn_scores, rpn_boxes = net.rpn(mx.nd.zeros_like(x), *features)
    _spread_classes(net, features, rpn_boxes, 2)
    path = str(tmp_path_factory.mktemp("gluoncv") / (name + ".params"))
    net.save_parameters(path)

    anchors = [gen(f) for gen, f in zip(net.rpn.anchor_generator, features)]
    ids, scores, boxes = net(x)
    theirs = dict(features=[f.asnumpy() for f in features], anchors=np.concatenate([a.asnumpy()[0] for a in anchors]),
                  rpn_scores=rpn_scores.asnumpy()[0, :, 0], rpn_boxes=rpn_boxes.asnumpy()[0],
                  dets=np.concatenate([ids.asnumpy()[0], scores.asnumpy()[0], boxes.asnumpy()[0]], axis=1))

    arg_params, aux_params = import_faster_rcnn_fpn(path, name)
    config = zoo_fpn_config(name)
    config["image_shape"] = (height, width)
    sym = get_symbol(num_classes=ZOO[name][2], **config)
    internals = sym.get_internals()
    outputs = [internals[n + "_output"] for n in FEATURES + ("rpn_anchors",)]
    outputs += [internals["rpn_proposal_output0"], internals["rpn_proposal_output1"], sym]
    im_info = mx.nd.array([[height, width, 1.0]])
    exe = mx.sym.Group(outputs).bind(mx.cpu(), dict(arg_params, data=x, im_info=im_info), aux_states=aux_params,
                                     grad_req="null")
    out = [o.asnumpy() for o in exe.forward(is_train=False)]
    det = out[8][0]
    det[:, 2:] *= np.array([width, height, width, height], np.float32)
    ours = dict(features=out[:5], anchors=out[5][0], rois=out[6], rpn_scores=out[7][:, 0], dets=det)
    return ours, theirs, net, path


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory):
    """(ours, theirs, the GluonCV net, its parameter file) at 256 x 320."""
    return _run_both("faster_rcnn_fpn_resnet50_v1b_coco", 256, 320, tmp_path_factory)


def _assert_ranked_equal(ours_rows, ours_scores, their_rows, their_scores, rtol, atol, what):
    """Rows equal position by position, except where the scores tie (module docstring); returns the index of
    the GluonCV row matching each of ours."""
    assert ours_rows.shape == their_rows.shape, what
    np.testing.assert_allclose(ours_scores, their_scores, rtol=1e-3, atol=1e-6, err_msg=what + " scores")
    matched = np.arange(len(ours_rows))
    for i in range(len(ours_rows)):
        if np.allclose(ours_rows[i], their_rows[i], rtol=rtol, atol=atol):
            continue
        tied = np.flatnonzero(np.abs(their_scores - ours_scores[i]) <= SCORE_TIE * abs(ours_scores[i]))
        same = [j for j in tied if np.allclose(ours_rows[i], their_rows[j], rtol=rtol, atol=atol)]
        assert same, "%s row %d: ours %s, GluonCV %s (score %g, no tied GluonCV row matches)" % (
            what, i, ours_rows[i], their_rows[i], ours_scores[i])
        matched[i] = same[0]
    swapped = int((matched != np.arange(len(ours_rows))).sum())
    assert swapped <= len(ours_rows) // 50, "%s: %d rows differ by ties only, suspiciously many" % (what, swapped)
    return matched


def test_features_equal(resnet50):
    ours, theirs = resnet50[:2]
    for level, (a, b) in enumerate(zip(ours["features"], theirs["features"]), start=2):
        assert a.shape == b.shape, "P%d" % level
        err, scale = float(np.abs(a - b).max()), float(np.abs(b).max())
        assert scale > 0.1 and err <= 1e-4 * scale, "P%d: max difference %g, scale %g" % (level, err, scale)


def test_legacy_anchors_equal_gluoncv(resnet50):
    ours, theirs = resnet50[:2]
    assert ours["anchors"].shape == theirs["anchors"].shape
    np.testing.assert_array_equal(ours["anchors"], theirs["anchors"])
    for stride in (4, 8, 16, 32, 64):
        np.testing.assert_array_equal(legacy_cell_anchors(stride), generate_base_anchors(stride, (8 * stride,)))


def test_proposals_equal(resnet50):
    ours, theirs = resnet50[:2]
    assert (theirs["rpn_scores"] > 0).all(), "GluonCV padded its proposals: the image needs 1000 of them"
    assert (ours["rois"][:, 0] == 0).all()
    _assert_ranked_equal(ours["rois"][:, 1:], ours["rpn_scores"], theirs["rpn_boxes"], theirs["rpn_scores"],
                         rtol=0, atol=1e-3, what="proposals")


def test_detections_equal(resnet50):
    ours, theirs = resnet50[:2]
    dets = theirs["dets"]
    dets = dets[dets[:, 0] >= 0]
    dets = dets[np.argsort(-dets[:, 1], kind="stable")][:len(ours["dets"])]
    assert len(dets) == len(ours["dets"]) == 100, "need more than 100 GluonCV detections, got %d" % len(dets)
    assert len(np.unique(dets[:, 0])) >= 4, "too few classes to test the per-class NMS"
    _assert_ranked_equal(ours["dets"][:, [0, 2, 3, 4, 5]], ours["dets"][:, 1], dets[:, [0, 2, 3, 4, 5]], dets[:, 1],
                         rtol=1e-3, atol=1e-2, what="detections")
    outside = (dets[:, 2:4] < 0).any(axis=1) | (dets[:, 4] > 320) | (dets[:, 5] > 256)
    assert outside.any(), "no box reaches outside the image: rcnn_clip_boxes=False is not exercised"


def test_resnet101_v1d_features_and_detections(tmp_path_factory):
    ours, theirs = _run_both("faster_rcnn_fpn_resnet101_v1d_coco", 192, 192, tmp_path_factory)[:2]
    for a, b in zip(ours["features"], theirs["features"]):
        assert float(np.abs(a - b).max()) <= 1e-4 * float(np.abs(b).max())
    _assert_ranked_equal(ours["rois"][:, 1:], ours["rpn_scores"], theirs["rpn_boxes"], theirs["rpn_scores"],
                         rtol=0, atol=1e-3, what="proposals")
    dets = theirs["dets"][theirs["dets"][:, 0] >= 0]
    dets = dets[np.argsort(-dets[:, 1], kind="stable")][:100]
    valid = ours["dets"][ours["dets"][:, 0] >= 0]
    assert len(valid) == len(dets) > 0
    _assert_ranked_equal(valid[:, [0, 2, 3, 4, 5]], valid[:, 1], dets[:, [0, 2, 3, 4, 5]], dets[:, 1],
                         rtol=1e-3, atol=1e-2, what="detections")


def test_zoo_file_becomes_an_fpn_deploy_model(resnet50, tmp_path):
    """deploy.py --gluoncv-zoo faster_rcnn_fpn_* writes a deploy model whose detections through ssdkit.Detector
    and demo.py equal GluonCV's on the same image (square 256 px: the resize is the identity, no padding)."""
    import json
    import subprocess
    import sys

    import cv2

    from ssdkit.api.deploy import deploy_gluoncv_fpn
    from ssdkit.api.model_files import load_inference_model
    from ssdkit.detector import Detector

    _, _, net, params = resnet50
    name, size = "faster_rcnn_fpn_resnet50_v1b_coco", 256
    image = np.random.RandomState(5).randint(0, 256, (size, size, 3)).astype(np.uint8)
    x = _normalised(image)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mx.nd.contrib, "ROIAlign", _row_correct_roi_align)
        ids, scores, boxes = [o.asnumpy()[0] for o in net(mx.nd.array(x))]
    theirs = np.concatenate([ids, scores, boxes], axis=1)
    theirs = theirs[theirs[:, 0] >= 0]
    theirs = theirs[np.argsort(-theirs[:, 1], kind="stable")][:100]
    assert len(theirs) == 100

    out = str(tmp_path / "deploy" / "gcv_fpn")
    repo = __file__.rsplit("/tests/", 1)[0]
    run = lambda argv: subprocess.run([sys.executable] + argv, cwd=repo, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, timeout=300)
    proc = run(["deploy.py", "--gluoncv-zoo", name, "--gluoncv-params", params, "--output", out,
                "--gluoncv-resize", str(size), str(size)])
    assert proc.returncode == 0, proc.stdout
    _, _, _, meta = load_inference_model(out, deploy=True)
    assert meta["network"] == "fpn_resnet50" and meta["image_shape"] == [size, size] and len(meta["class_names"]) == 80
    assert meta["fpn"]["backbone_variant"] == "v1b" and meta["fpn"]["anchor_style"] == "legacy"

    ours = Detector(out, deploy=True, score_thresh=0.0).detect(image)
    assert ours.shape == theirs.shape
    _assert_ranked_equal(ours[:, [0, 2, 3, 4, 5]], ours[:, 1], theirs[:, [0, 2, 3, 4, 5]], theirs[:, 1],
                         rtol=1e-3, atol=1e-2, what="deployed detections")

    path = str(tmp_path / "image.png")
    cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    proc = run(["demo.py", "--deploy", out, "--images", path, "--output", str(tmp_path / "demo"),
                "--score-thresh", "0.0"])
    assert proc.returncode == 0, proc.stdout
    report = json.load(open(tmp_path / "demo" / "detections.json"))     # {image path: [detection, ...]}
    assert list(report) == [path] and len(report[path]) == 100
    assert report[path][0]["class"] == meta["class_names"][int(ours[0, 0])]
    assert report[path][0]["score"] == pytest.approx(float(ours[0, 1]), abs=1e-6)

    # evaluate.py --deploy on a two-image COCO json with the 80 classes in GluonCV's order
    from gluoncv.data import COCODetection

    (tmp_path / "coco").mkdir()
    cv2.imwrite(str(tmp_path / "coco" / "b.png"), cv2.cvtColor(image[::-1], cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "coco" / "a.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    boxes = [ours[0, 2:], ours[1, 2:], [10, 20, 90, 120]]
    coco = dict(images=[dict(id=k + 1, file_name=f, width=size, height=size) for k, f in enumerate(("a.png", "b.png"))],
                categories=[dict(id=k + 1, name=n) for k, n in enumerate(COCODetection.CLASSES)],
                annotations=[dict(id=k + 1, image_id=1 + (k == 2), category_id=int(ours[min(k, 1), 0]) + 1,
                                  bbox=[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                                  area=float((b[2] - b[0]) * (b[3] - b[1])), iscrowd=0) for k, b in enumerate(boxes)])
    json.dump(coco, open(tmp_path / "coco.json", "w"))
    proc = run(["evaluate.py", "--deploy", out, "--dataset", "coco", "--data-root", str(tmp_path / "coco"),
                "--val", str(tmp_path / "coco.json"), "--output", str(tmp_path / "eval"), "--num-workers", "1",
                "--no-progress"])
    assert proc.returncode == 0 and "COCO AP" in proc.stdout, proc.stdout
    metrics = json.load(open(tmp_path / "eval" / "metrics.json"))
    assert metrics["images"] == 2 and metrics["voc07"] > 0      # the two boxes copied from detections are found

    proc = run(["deploy.py", "--gluoncv-zoo", "ssd_512_resnet50_v1_voc", "--gluoncv-params", params,
                "--output", out, "--gluoncv-resize", "256", "256"])
    assert proc.returncode == 2 and "--gluoncv-resize goes with a Faster R-CNN FPN" in proc.stdout
    with pytest.raises(ValueError, match="cannot be exported to ONNX"):
        deploy_gluoncv_fpn(params, name, str(tmp_path / "onnx"), resize=(size, size), format="onnx")
    with pytest.raises(ValueError, match="cannot be deployed with --portable"):
        deploy_gluoncv_fpn(params, name, str(tmp_path / "portable"), resize=(size, size), portable=True)
    assert not list(tmp_path.glob("onnx*")) and not list(tmp_path.glob("portable*"))   # refused before writing


def test_contrib_roi_align_bug_that_the_reference_avoids():
    """Why the reference run patches ``contrib.ROIAlign``: rows of batch index -1 change row 0's output."""
    feat = mx.nd.array(np.random.RandomState(4).normal(size=(1, 2, 16, 16)).astype(np.float32))
    rois = mx.nd.array([[0, 8, 8, 40, 40], [-1, -1, -1, -1, -1], [-1, -1, -1, -1, -1]])
    alone = _CONTRIB_ROI_ALIGN(feat, rois[:1], (7, 7), 0.25, sample_ratio=2).asnumpy()
    fixed = _row_correct_roi_align(feat, rois, (7, 7), 0.25, sample_ratio=2).asnumpy()
    np.testing.assert_allclose(fixed[0], alone[0], rtol=1e-6, atol=1e-6)
    assert not fixed[1:].any()
    buggy = _CONTRIB_ROI_ALIGN(feat, rois, (7, 7), 0.25, sample_ratio=2).asnumpy()
    assert np.abs(buggy[0] - alone[0]).max() > 1e-3, "MXNet's contrib.ROIAlign is fixed: drop the patch"


def test_roi_level_offset_is_gluoncv_rule():
    """``roi_levels(pixel_offset=1)`` is GluonCV's ``floor(4 + log2(sqrt((w + 1)(h + 1)) / 224 + 1e-6))``;
    the default (offset 0) rule differs on boxes just below a level boundary."""
    rng = np.random.RandomState(3)
    x0, y0 = rng.uniform(0, 300, (2, 400))
    w, h = np.exp(rng.uniform(0, 6.5, (2, 400)))
    sides = np.array([111.0, 223.0, 447.0])           # (side + 1) is a power-of-two multiple of 224 / 2
    w[:3], h[:3] = sides, sides
    rois = np.stack([np.zeros(400), x0, y0, x0 + w, y0 + h], axis=1).astype(np.float32)
    data = mx.sym.Variable("rois")
    run = lambda offset: roi_levels(data, pixel_offset=offset).eval(rois=mx.nd.array(rois))[0].asnumpy()
    r = rois.astype(np.float32)
    size = np.sqrt((r[:, 3] - r[:, 1] + 1) * (r[:, 4] - r[:, 2] + 1))
    expected = np.clip(np.floor(4 + np.log2(size / 224 + 1e-6)), 2, 5)
    np.testing.assert_array_equal(run(1.0), expected)
    assert (run(0.0)[:3] != expected[:3]).all()


def test_import_refuses_a_file_of_another_model(tmp_path):
    path = str(tmp_path / "wrong.params")
    mx.nd.save(path, {"features.resnetv1b_conv0_weight": mx.nd.zeros((64, 3, 7, 7))})
    with pytest.raises(ValueError, match="wrong.params has no parameter for ssdkit's"):
        import_faster_rcnn_fpn(path, "faster_rcnn_fpn_resnet50_v1b_coco")
    with pytest.raises(ValueError, match="no GluonCV FPN zoo model"):
        layer_map("faster_rcnn_resnet50_v1b_coco")


@pytest.mark.parametrize("key,value", [("backbone_variant", "v2"), ("fpn_p6", "avg_pool"), ("anchor_style", "round"),
                                       ("rpn_channels", -1), ("roi_level_offset", 2.0)])
def test_convention_settings_refuse_bad_values(key, value):
    from ssdkit.symbol.fpn_config import fpn_settings

    with pytest.raises(ValueError, match="fpn.%s" % key):
        fpn_settings(**{key: value})
