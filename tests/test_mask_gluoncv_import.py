"""GluonCV's Mask R-CNN FPN zoo model in ssdkit's FPN graph with the mask branch: same detections, same masks.

The reference run is the one of ``tests/test_fpn_gluoncv_import.py`` (``pretrained=False,
pretrained_base=False``, the same random-weight recipe, the same ``contrib.ROIAlign`` fix), on a 320 x 512 image
(not square, so a swapped width and height in the mask RoIs cannot pass). The fix matters more here: at 14 x 14
MXNet 1.9.1's CPU ``contrib.ROIAlign`` also leaves the rows of batch index -1 unwritten (whatever the memory
held; seen non-zero in one call and zero in the next on the same inputs), and GluonCV sums the per-level
outputs, so without the fix every pooled RoI can be wrong: one unpatched run gave the same detections but
all 100 masks off by 0.9 or more in probability. Besides, the mask predictor is set on
standardised mask-head features (:func:`_spread_masks`) so that the probabilities spread over (0, 1)
(std ~0.28) and thresholding them at 0.5 has work.

GluonCV computes masks for its best ``rcnn_max_dets`` (1000) detections; the reference computes them for the
best 100 (ssdkit's ``test_max_detections``, COCO's limit): a detection's mask does not depend on how many
others are computed, and 1000 masks take ~60 s on one core.

Pasting: GluonCV's ``gluoncv.data.transforms.mask.fill`` pads the 28 x 28 map with a ring of zeros and
samples it bilinearly at the pixel centres (``fast_fill=False``), which is ``ssdkit.masks.paste_masks`` except
in the outer half cell of the box (GluonCV interpolates towards the zero ring, ssdkit holds the edge cell's
value); its default ``fast_fill=True`` rounds the padded box to whole pixels and resizes with PIL (which
filters when it shrinks), a different sampling that is compared but not required to match.
"""
import warnings

import mxnet as mx
import numpy as np
import pytest

from ssdkit.symbol.fpn import get_symbol
from ssdkit.weights_fpn import ZOO, import_faster_rcnn_fpn, is_mask_model, layer_map, zoo_fpn_config

gluoncv = pytest.importorskip("gluoncv")
from gluoncv import model_zoo  # noqa: E402
from gluoncv.data.transforms.mask import fill  # noqa: E402
from test_fpn_gluoncv_import import (_assert_ranked_equal, _normalised, _row_correct_roi_align,  # noqa: E402
                                     _spread_classes, _tame)

NAME = "mask_rcnn_fpn_resnet50_v1b_coco"
HEIGHT, WIDTH = 320, 512
DETECTIONS = 100
PROB_ATOL = 1e-4
"""Mask probabilities agree to this (measured 1.7e-5: float rounding of the features and of the box corners,
which ssdkit's graph scales to [0, 1] and back)."""


def _spread_masks(net, features, proposals, seed):
    """Mask predictor on standardised mask-head features of the 100 best ``proposals`` (1, P, 4): logits of std
    ~2 per class, varying over cells and RoIs, so that probabilities spread over (0, 1)."""
    rois = mx.nd.concat(mx.nd.zeros((DETECTIONS, 1)), proposals[0][:DETECTIONS], dim=1)
    pooled = net._pyramid_roi_feats(mx.nd, features, rois, net._roi_size, net._strides, roi_mode=net._roi_mode)
    hidden = mx.nd.relu(net.mask.deconv(pooled)).asnumpy()                  # (R, 256, 28, 28)
    hidden = hidden.transpose(0, 2, 3, 1).reshape(-1, hidden.shape[1])
    mean, std = hidden.mean(axis=0), hidden.std(axis=0) + 1e-3
    rng = np.random.RandomState(seed)
    weight = rng.normal(0, 2.0 / np.sqrt(hidden.shape[1]), (net.num_class, hidden.shape[1])) / std
    net.mask.mask.weight.set_data(mx.nd.array(weight.reshape(net.mask.mask.weight.shape).astype(np.float32)))
    net.mask.mask.bias.set_data(mx.nd.array((-weight.dot(mean)).astype(np.float32)))


def _gluoncv_reference(tmp_path_factory):
    """GluonCV's run: ``(dets (100, 6) [cls, score, x0, y0, x1, y1] px by score, masks (100, 28, 28)
    probabilities, the net, its saved parameter file)``; ``contrib.ROIAlign`` must be patched around it."""
    net = model_zoo.get_model(NAME, pretrained=False, pretrained_base=False)
    net._rcnn_max_dets = 1                       # the deferred initialisation runs the mask head on 1 box only
    net.initialize()
    net(mx.nd.zeros((1, 3, 64, 64)))
    net._rcnn_max_dets = DETECTIONS
    _tame(net, 1)
    image = np.random.RandomState(0).randint(0, 256, (HEIGHT, WIDTH, 3)).astype(np.uint8)
    x = mx.nd.array(_normalised(image))
    features = net.features(x)
    _, proposals = net.rpn(mx.nd.zeros_like(x), *features)
    _spread_classes(net, features, proposals, 2)
    _spread_masks(net, features, proposals, 3)
    path = str(tmp_path_factory.mktemp("gluoncv_mask") / (NAME + ".params"))
    net.save_parameters(path)
    dets, masks = _gluoncv_detect(net, x)
    return dets, masks, x, net, path


def _gluoncv_detect(net, x):
    """GluonCV's best 100 detections ``(100, 6)`` px and their ``(100, 28, 28)`` mask probabilities."""
    ids, scores, boxes, masks = [o.asnumpy()[0] for o in net(x)]
    return np.concatenate([ids, scores, boxes], axis=1), masks


def _ssdkit_run(path, x):
    """ssdkit's graph with the imported file: ``(dets (100, 6) px, masks (100, 28, 28))``."""
    arg_params, aux_params = import_faster_rcnn_fpn(path, NAME)
    config = zoo_fpn_config(NAME)
    config["image_shape"] = (HEIGHT, WIDTH)       # the image fills the batch: no padding differs
    sym = get_symbol(num_classes=ZOO[NAME][2], **config)
    assert sym.list_outputs() == ["detection_output", "masks_output"]
    im_info = mx.nd.array([[HEIGHT, WIDTH, 1.0]])
    exe = sym.bind(mx.cpu(), dict(arg_params, data=x, im_info=im_info), aux_states=aux_params, grad_req="null")
    det, masks = [o.asnumpy()[0] for o in exe.forward(is_train=False)]
    det[:, 2:] *= np.array([WIDTH, HEIGHT, WIDTH, HEIGHT], np.float32)
    return det, masks


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both runs on the same image: dict(ours=(dets, masks), theirs=(dets, masks), net=the GluonCV net,
    path=its parameter file)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mx.nd.contrib, "ROIAlign", _row_correct_roi_align)
        their_dets, their_masks, x, net, path = _gluoncv_reference(tmp_path_factory)
    ours = _ssdkit_run(path, x)
    return dict(ours=ours, theirs=(their_dets, their_masks), net=net, path=path)


def _matched(runs):
    """GluonCV's row for each of ours (the detections checked equal, ties allowed)."""
    (dets, _), (their_dets, _) = runs["ours"], runs["theirs"]
    return _assert_ranked_equal(dets[:, [0, 2, 3, 4, 5]], dets[:, 1], their_dets[:, [0, 2, 3, 4, 5]],
                                their_dets[:, 1], rtol=1e-3, atol=1e-2, what="detections")


def test_detections_equal(runs):
    (dets, _), (their_dets, _) = runs["ours"], runs["theirs"]
    assert len(dets) == len(their_dets) == DETECTIONS and (their_dets[:, 0] >= 0).all(), \
        "GluonCV gave fewer than %d detections" % DETECTIONS
    assert len(np.unique(their_dets[:, 0])) >= 4, "too few classes to test the per-class NMS and mask channels"
    _matched(runs)
    outside = (their_dets[:, 2:4] < 0).any(axis=1) | (their_dets[:, 4] > WIDTH) | (their_dets[:, 5] > HEIGHT)
    assert outside.any(), "no box reaches outside the image: the unclipped mask RoIs are not exercised"


def test_mask_probabilities_equal(runs):
    (_, masks), (_, their_masks) = runs["ours"], runs["theirs"]
    theirs = their_masks[_matched(runs)]
    assert masks.shape == theirs.shape == (DETECTIONS, 28, 28)
    assert theirs.std() > 0.2, "GluonCV's mask probabilities hardly vary (std %g): a weak test" % theirs.std()
    err = np.abs(masks - theirs).max(axis=(1, 2))
    assert err.max() <= PROB_ATOL, "mask probabilities differ by %g (detection %d)" % (err.max(), err.argmax())
    # the class channel matters: another detection's map (another box or class) is far off
    assert np.abs(masks - np.roll(theirs, 1, axis=0)).max(axis=(1, 2)).min() > 0.1


def _paste_gluoncv(masks, dets, fast_fill, height=HEIGHT, width=WIDTH):
    with warnings.catch_warnings():     # scipy's interp2d (fast_fill=False) is deprecated
        warnings.simplefilter("ignore")
        try:
            return fill(masks, dets[:, 2:], (width, height), fast_fill=fast_fill).astype(bool)
        except (NotImplementedError, AttributeError) as err:   # scipy >= 1.14 removed interp2d
            pytest.skip("GluonCV's exact fill needs scipy's interp2d: %s" % err)


def _assert_pasted_equal(ours, theirs, boxes, cells):
    """``ours`` equal ``theirs`` (both (K, H, W) bool) on the pixels whose centres lie half a cell or more inside
    their ``boxes`` (K, 4) px (module docstring); overall >= 99.9 % of the pixels agree."""
    assert ours.shape == theirs.shape
    assert 0.2 < ours.sum() / theirs.sum() < 5 and ours.any(axis=(1, 2)).all(), "empty or lopsided masks"
    inner = np.zeros_like(ours)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        cw, ch = (x1 - x0) / cells, (y1 - y0) / cells
        r0, r1 = max(int(np.ceil(y0 + ch / 2 - 0.5)), 0), max(int(np.ceil(y1 - ch / 2 - 0.5)), 0)
        c0, c1 = max(int(np.ceil(x0 + cw / 2 - 0.5)), 0), max(int(np.ceil(x1 - cw / 2 - 0.5)), 0)
        inner[k, r0:r1, c0:c1] = True
    differ = ours != theirs
    assert inner.sum() > 0.5 * (ours | theirs).sum()
    assert (differ & inner).sum() <= 1e-4 * inner.sum(), "%d of %d pixels inside the boxes differ" % (
        (differ & inner).sum(), inner.sum())
    assert differ.mean() <= 1e-3, "%.4f %% of the pixels differ" % (100 * differ.mean())


def test_pasted_masks_equal_gluoncv_fill(runs):
    """ssdkit's pasted masks equal GluonCV's ``fill(..., fast_fill=False)`` inside the boxes (measured: every
    one of 80458 pixels half a cell inside; 99.99 % of all pixels)."""
    from ssdkit.masks import paste_masks

    (dets, masks), (their_dets, their_masks) = runs["ours"], runs["theirs"]
    matched = _matched(runs)
    ours = paste_masks(masks, dets[:, 2:], HEIGHT, WIDTH)
    theirs = _paste_gluoncv(their_masks[matched], their_dets[matched], fast_fill=False)
    assert ours.shape == (DETECTIONS, HEIGHT, WIDTH)
    _assert_pasted_equal(ours, theirs, dets[:, 2:], masks.shape[1])


def test_pasted_masks_near_gluoncv_fast_fill(runs):
    """GluonCV's default (fast) fill: a different sampling (module docstring). On these random maps of boxes
    smaller than 28 px the masks overlap with IoU ~0.46 on average (measured) and >= 99.5 % of the image's
    pixels agree (99.8 %, most are background); checked loosely so that a shift or flip would show."""
    from ssdkit.masks import paste_masks

    (dets, masks), (their_dets, their_masks) = runs["ours"], runs["theirs"]
    matched = _matched(runs)
    ours = paste_masks(masks, dets[:, 2:], HEIGHT, WIDTH)
    theirs = _paste_gluoncv(their_masks[matched], their_dets[matched], fast_fill=True)
    iou = (ours & theirs).sum(axis=(1, 2)) / np.maximum((ours | theirs).sum(axis=(1, 2)), 1)
    assert (ours == theirs).mean() >= 0.995
    assert iou.mean() >= 0.35, "mean IoU %g" % iou.mean()


def test_mask_layer_map_and_refusal(runs, tmp_path):
    table = layer_map(NAME)
    assert is_mask_model(NAME) and not is_mask_model("faster_rcnn_fpn_resnet50_v1b_coco")
    assert table["rcnn_fc6"] == "box_features.1" and table["rcnn_fc7"] == "box_features.3"   # .0: average pool
    assert [table["mask_conv%d" % k] for k in (1, 2, 3, 4)] == ["mask.deconv.%d" % k for k in (0, 2, 4, 6)]
    assert table["mask_deconv"] == "mask.deconv.8" and table["mask_predictor"] == "mask.mask"
    assert layer_map("faster_rcnn_fpn_resnet50_v1b_coco")["rcnn_fc6"] == "box_features.0"
    # a Faster R-CNN file (no mask head) read as the Mask R-CNN is refused, naming the missing parameter
    source = mx.nd.load(runs["path"])
    path = str(tmp_path / "no_mask.params")
    mx.nd.save(path, {k: v for k, v in source.items() if not k.startswith("mask.")})
    with pytest.raises(ValueError, match="no_mask.params has no parameter for ssdkit's mask_"):
        import_faster_rcnn_fpn(path, NAME)


def test_zoo_file_becomes_a_mask_deploy_model(runs, tmp_path):
    """``deploy.py --gluoncv-zoo mask_rcnn_fpn_resnet50_v1b_coco`` writes a deploy model whose ``ssdkit.Detector``
    rows and pasted masks equal GluonCV's on a square 256 px image (the resize is the identity, no padding)."""
    import subprocess
    import sys

    from ssdkit.api.model_files import load_inference_model
    from ssdkit.detector import Detector

    size = 256
    image = np.random.RandomState(5).randint(0, 256, (size, size, 3)).astype(np.uint8)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mx.nd.contrib, "ROIAlign", _row_correct_roi_align)
        their_dets, their_masks = _gluoncv_detect(runs["net"], mx.nd.array(_normalised(image)))
    assert (their_dets[:, 0] >= 0).all()

    out = str(tmp_path / "deploy" / "gcv_mask")
    repo = __file__.rsplit("/tests/", 1)[0]
    proc = subprocess.run([sys.executable, "deploy.py", "--gluoncv-zoo", NAME, "--gluoncv-params", runs["path"],
                           "--output", out, "--gluoncv-resize", str(size), str(size)], cwd=repo,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout
    _, _, _, meta = load_inference_model(out, deploy=True)
    assert meta["fpn"]["mask"] and meta["fpn"]["rcnn_avg_pool"] and meta["fpn"]["roi_size"] == 14

    found = Detector(out, deploy=True, score_thresh=0.0).detect(image)
    assert found.rows.shape == their_dets.shape and found.masks.shape == (DETECTIONS, size, size)
    matched = _assert_ranked_equal(found.rows[:, [0, 2, 3, 4, 5]], found.rows[:, 1], their_dets[:, [0, 2, 3, 4, 5]],
                                   their_dets[:, 1], rtol=1e-3, atol=1e-2, what="deployed detections")
    theirs = _paste_gluoncv(their_masks[matched], their_dets[matched], fast_fill=False, height=size, width=size)
    _assert_pasted_equal(found.masks, theirs, found.rows[:, 2:], their_masks.shape[1])
