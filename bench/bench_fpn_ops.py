"""Speed of ssdkit's FPN two-stage inference operators against MXNet's built-in ops.

Peers, timed in the same process on the same inputs, interleaved (ours, peer, ours, ...) so that load
from other processes hits both alike; each timing is the median of ``--repeats`` calls after one
warm-up call each. Run with the thread count fixed, e.g.::

    OMP_NUM_THREADS=2 python bench/bench_fpn_ops.py --repeats 9

Sections:

``proposal``
    FPNProposal on a 800x1333 image (padded to 800x1344; levels P2-P6, 3 anchors per cell,
    268,569 anchors) at the test (pre 1000 / post 1000) and training (pre 2000 / post 1000) settings.
    contrib ``MultiProposal`` has no levels, so its single-level equivalent is timed: the C4 Faster
    R-CNN proposal layer on the same image (stride 16, 50x84 cells, 5 scales x 3 ratios = 63,000
    anchors) at its usual test (pre 6000 / post 300) and training (pre 12000 / post 2000) settings,
    next to FPNProposal on exactly that problem (one level, MultiProposal's anchors, same pre/post).
``detection``
    RCNNDetection on R = 1000 rois per image, C = 20 and 80 classes, K = 100, against the same
    computation from MXNet's contrib ops the way GluonCV's Faster R-CNN does it: ``box_decode``
    (class-specific, clamped), clipping, ``box_nms`` batched over (image, class), ``topk`` + ``take``
    of the K best rows. The table says whether both gave the same scores in the same order, and the
    largest box difference in pixels (the two decoders round differently).
``roi_align``
    Forward + backward of the RoI pooling of an FPN's box head: ssdkit's ``MultiLevelROIAlign`` (each
    RoI pooled once, on its own level) against what it replaced, contrib ``ROIAlign`` of every RoI on
    each of the four levels P2-P5 merged row by row with ``where`` (aligned, sampling ratio 2, 7x7),
    as bound executors with gradients to the four maps. Cases: the ``fpn_resnet18_synthetic`` preset's
    training step (256x256, batch 4 images per step split over 2 devices -> 2 x 128 RoIs, 128
    channels) and Detectron's R50-FPN (800x1344, 2 images x 512 RoIs, 256 channels). The table says
    whether the outputs and gradients are equal (largest absolute difference).
"""
import argparse
import math

import mxnet as mx
import numpy as np

import ssdkit.ops  # noqa: F401  (loads the operators)
from ssdkit.anchors import rpn_anchors
from ssdkit.reference.roi_align import fpn_level_index
from timing import interleaved_median_ms

LOG_SIZE_CLAMP = math.log(1000.0 / 16.0)


def fpn_anchors(height, width, strides=(4, 8, 16, 32, 64)):
    """(1, N, 4) FPN anchors (scale 8, ratios 0.5, 1, 2) and the anchors per level."""
    levels = [rpn_anchors(math.ceil(height / s), math.ceil(width / s), s) for s in strides]
    return np.concatenate(levels)[None].astype(np.float32), tuple(len(a) for a in levels)


def multiproposal_anchors(height, width, stride, scales, ratios):
    """MultiProposal's anchors (py-faster-rcnn enumeration) as continuous boxes (ends + 1), (1, N, 4)."""
    side = float(stride)
    centre = 0.5 * (side - 1)
    cells = []
    for ratio in ratios:
        ws = np.round(np.sqrt(side * side / ratio))
        hs = np.round(ws * ratio)
        for scale in scales:
            w, h = ws * scale, hs * scale
            cells.append([centre - 0.5 * (w - 1), centre - 0.5 * (h - 1), centre + 0.5 * (w - 1) + 1,
                          centre + 0.5 * (h - 1) + 1])
    ys, xs = np.meshgrid(np.arange(height) * stride, np.arange(width) * stride, indexing="ij")
    shift = np.stack([xs, ys, xs, ys], axis=-1).reshape(-1, 1, 4)
    return (shift + np.array(cells)[None]).reshape(1, -1, 4).astype(np.float32)


def bench_proposal(repeats):
    rng = np.random.default_rng(0)
    rows = []
    anchor, sizes = fpn_anchors(800, 1344)
    n = anchor.shape[1]
    scales, ratios, stride, fh, fw = (2, 4, 8, 16, 32), (0.5, 1, 2), 16, 50, 84
    a = len(scales) * len(ratios)
    c4_anchor = multiproposal_anchors(fh, fw, stride, scales, ratios)
    m = c4_anchor.shape[1]
    for batch in (1, 2):
        im_info = mx.nd.array(np.tile([800, 1333, 1.0], (batch, 1)))
        cls = mx.nd.array(1 / (1 + np.exp(-rng.normal(scale=2.0, size=(batch, n)))))
        bbox = mx.nd.array(rng.normal(scale=0.2, size=(batch, n * 4)))
        anchor_nd = mx.nd.array(anchor)
        # C4 single level: ours on (B, H*W*A) / (B, H*W*A*4), MultiProposal on (B, 2A, H, W) / (B, 4A, H, W)
        c4_score = (1 / (1 + np.exp(-rng.normal(scale=2.0, size=(batch, m))))).astype(np.float32)
        c4_delta = rng.normal(scale=0.2, size=(batch, m * 4)).astype(np.float32)
        theirs_cls = np.concatenate([1 - c4_score, c4_score], axis=1).reshape(batch, 2, fh, fw, a)
        theirs_cls = mx.nd.array(theirs_cls.transpose(0, 1, 4, 2, 3).reshape(batch, 2 * a, fh, fw))
        theirs_bbox = mx.nd.array(c4_delta.reshape(batch, fh, fw, 4 * a).transpose(0, 3, 1, 2))
        c4 = [mx.nd.array(x) for x in (c4_score, c4_delta, c4_anchor)]
        c4_info = mx.nd.array(np.tile([fh * stride, fw * stride, 1.0], (batch, 1)))
        for setting, (pre, post), (c4_pre, c4_post) in (("test", (1000, 1000), (6000, 300)),
                                                         ("train", (2000, 1000), (12000, 2000))):
            def fpn():
                out = mx.nd.FPNProposal(cls, bbox, anchor_nd, im_info, level_sizes=sizes, pre_nms_top_n=pre,
                                        post_nms_top_n=post)
                out[0].wait_to_read()

            def ours_c4():
                out = mx.nd.FPNProposal(c4[0], c4[1], c4[2], c4_info, level_sizes=(m,), pre_nms_top_n=c4_pre,
                                        post_nms_top_n=c4_post)
                out[0].wait_to_read()

            def contrib_c4():
                out = mx.nd.contrib.MultiProposal(theirs_cls, theirs_bbox, c4_info, rpn_pre_nms_top_n=c4_pre,
                                                  rpn_post_nms_top_n=c4_post, threshold=0.7, rpn_min_size=0,
                                                  scales=scales, ratios=ratios, feature_stride=stride,
                                                  output_score=True)
                out[0].wait_to_read()

            t_fpn, t_ours, t_contrib = interleaved_median_ms([fpn, ours_c4, contrib_c4], repeats)
            rows.append({"B": batch, "setting": setting, "FPN N": n, "FPN pre/post": "%d/%d" % (pre, post),
                         "ours FPN ms": t_fpn, "C4 N": m, "C4 pre/post": "%d/%d" % (c4_pre, c4_post),
                         "contrib C4 ms": t_contrib, "ours C4 ms": t_ours, "C4 speedup": t_contrib / t_ours})
    return rows


def detection_inputs(rng, batch, rois_per_image, classes):
    x0 = rng.uniform(0, 1200, (batch * rois_per_image, 1))
    y0 = rng.uniform(0, 700, (batch * rois_per_image, 1))
    wh = rng.uniform(8, 400, (batch * rois_per_image, 2))
    ids = np.repeat(np.arange(batch), rois_per_image)[:, None]
    rois = np.concatenate([ids, x0, y0, np.minimum(x0 + wh[:, :1], 1333), np.minimum(y0 + wh[:, 1:], 800)], 1)
    logits = rng.normal(size=(batch * rois_per_image, classes + 1))
    logits[:, 0] += 3.0  # most rois are background, as after a trained head
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    bbox = rng.normal(scale=0.5, size=(batch * rois_per_image, 4 * (classes + 1)))
    im_info = np.tile([800, 1333, 1.0], (batch, 1))
    return [mx.nd.array(x.astype(np.float32)) for x in (rois, prob, bbox, im_info)]


def contrib_detection(rois, prob, bbox, im_info, batch, classes, k=100, thresh=0.05, nms=0.5):
    """RCNNDetection's computation from contrib ops, batched the way GluonCV's Faster R-CNN does it:
    class-specific ``box_decode`` (clamped), clip, ``box_nms`` on (B*C, R, 6) (one NMS per class), then
    the K best rows of each image by ``topk`` and ``take``."""
    r = rois.shape[0] // batch
    # class-major copies of the rois: (B, C, R, 4) -> anchors (1, B*C*R, 4)
    boxes = rois.slice_axis(axis=1, begin=1, end=5).reshape((batch, 1, r, 4))
    boxes = mx.nd.broadcast_to(boxes, shape=(batch, classes, r, 4)).reshape((1, -1, 4))
    deltas = bbox.reshape((batch, r, classes + 1, 4)).slice_axis(axis=2, begin=1, end=None)
    deltas = deltas.transpose((0, 2, 1, 3)).reshape((1, -1, 4))
    decoded = mx.nd.contrib.box_decode(deltas, boxes, std0=0.1, std1=0.1, std2=0.2, std3=0.2, clip=LOG_SIZE_CLAMP,
                                       format="corner").reshape((batch, classes * r, 4))
    hi = mx.nd.concat(im_info.slice_axis(axis=1, begin=1, end=2), im_info.slice_axis(axis=1, begin=0, end=1),
                      dim=1).tile((1, 2)).reshape((batch, 1, 4))
    decoded = mx.nd.broadcast_minimum(mx.nd.maximum(decoded, 0), hi)
    scores = prob.reshape((batch, r, classes + 1)).slice_axis(axis=2, begin=1, end=None).transpose((0, 2, 1))
    ids = mx.nd.broadcast_to(mx.nd.arange(classes).reshape((1, classes, 1)), shape=(batch, classes, r))
    table = mx.nd.concat(ids.reshape((batch, -1, 1)), scores.reshape((batch, -1, 1)), decoded, dim=2)
    out = mx.nd.contrib.box_nms(table.reshape((batch * classes, r, 6)), overlap_thresh=nms, valid_thresh=thresh,
                                topk=-1, coord_start=2, score_index=1, id_index=-1, force_suppress=True)
    out = out.reshape((batch, classes * r, 6))
    best = mx.nd.topk(out.slice_axis(axis=2, begin=1, end=2).reshape((batch, -1)), axis=1, k=k, ret_typ="indices")
    flat = best + mx.nd.arange(batch).reshape((batch, 1)) * (classes * r)
    return mx.nd.take(out.reshape((-1, 6)), flat.reshape((-1,))).reshape((batch, k, 6))


def bench_detection(repeats):
    rng = np.random.default_rng(1)
    rows = []
    for batch in (1, 2):
        for classes in (20, 80):
            inputs = detection_inputs(rng, batch, 1000, classes)

            def ours():
                mx.nd.RCNNDetection(*inputs, max_detections=100, normalize=False).wait_to_read()

            def contrib():
                contrib_detection(*inputs, batch=batch, classes=classes).wait_to_read()

            got = mx.nd.RCNNDetection(*inputs, max_detections=100, normalize=False).asnumpy()
            theirs = contrib_detection(*inputs, batch=batch, classes=classes).asnumpy()
            same_scores = bool(np.array_equal(got[..., 1], theirs[..., 1]))
            real = got[..., 0] >= 0
            box_diff = float(np.abs(got[..., 2:][real] - theirs[..., 2:][real]).max()) if real.any() else 0.0
            t_ours, t_contrib = interleaved_median_ms([ours, contrib], repeats)
            rows.append({"B": batch, "R": 1000, "C": classes, "K": 100, "contrib ops ms": t_contrib,
                         "ours ms": t_ours, "speedup": t_contrib / t_ours, "same scores": same_scores,
                         "max box diff px": "%.1e" % box_diff})
    return rows


ROI_STRIDES = (4, 8, 16, 32)


def contrib_four_level_pooling(features, rois, levels, pooled_size, sample_ratio):
    """The FPN head's RoI pooling before MultiLevelROIAlign: contrib ROIAlign of all RoIs on every level,
    each row taken from its own level by ``where`` (far corners at least a pixel past the near ones,
    because aligned contrib ROIAlign aborts on zero-size RoIs)."""
    near = mx.sym.slice_axis(rois, axis=1, begin=0, end=3)
    far = mx.sym.maximum(mx.sym.slice_axis(rois, axis=1, begin=3, end=5),
                         mx.sym.slice_axis(rois, axis=1, begin=1, end=3) + 1.0)
    boxes = mx.sym.concat(near, far, dim=1)
    pooled = None
    for level, (feat, stride) in enumerate(zip(features, ROI_STRIDES), start=2):
        out = mx.sym.contrib.ROIAlign(feat, boxes, pooled_size=(pooled_size, pooled_size), spatial_scale=1.0 / stride,
                                      sample_ratio=sample_ratio, aligned=True)
        pooled = mx.sym.zeros_like(out) if pooled is None else pooled
        pooled = mx.sym.where(levels == float(level), out, pooled)
    return pooled


def roi_align_inputs(rng, batch, rois_per_image, channels, height, width):
    """Feature maps P2-P5, RoIs like ProposalTarget's samples (sizes from 8 px to the image), their levels."""
    feats = [rng.standard_normal((batch, channels, height // s, width // s)).astype(np.float32) for s in ROI_STRIDES]
    count = batch * rois_per_image
    side = np.exp(rng.uniform(np.log(8.0), np.log(min(height, width)), count))
    x0, y0 = rng.uniform(0, width - side), rng.uniform(0, height - side)
    aspect = np.exp(rng.uniform(-0.7, 0.7, count))
    w, h = side * np.sqrt(aspect), side / np.sqrt(aspect)
    rois = np.stack([np.repeat(np.arange(batch), rois_per_image), x0, y0, np.minimum(x0 + w, width),
                     np.minimum(y0 + h, height)], 1).astype(np.float32)
    levels = fpn_level_index(rois, len(ROI_STRIDES)) + 2          # the operator's own rule, P2 first
    return feats, rois, levels.astype(np.float32)


def bench_roi_align(repeats):
    rng = np.random.default_rng(0)
    names = ["p%d" % k for k in range(2, 6)]
    rows = []
    for label, batch, per_image, channels, height, width in (
            ("fpn_resnet18_synthetic step (per device)", 2, 128, 128, 256, 256),
            ("R50-FPN 800x1344", 2, 512, 256, 800, 1344)):
        feats, rois, levels = roi_align_inputs(rng, batch, per_image, channels, height, width)
        feat_syms, roi_sym = [mx.sym.var(n) for n in names], mx.sym.var("rois")
        ours_sym = mx.sym.MultiLevelROIAlign(*feat_syms, roi_sym, spatial_scales=tuple(1.0 / s for s in ROI_STRIDES),
                                             pooled_size=(7, 7), sample_ratio=2, aligned=True)
        peer_sym = contrib_four_level_pooling(feat_syms, roi_sym, mx.sym.var("levels"), 7, 2)
        grad_out = mx.nd.array(rng.standard_normal((len(rois), channels, 7, 7)).astype(np.float32))
        executors = []
        for sym, extra in ((ours_sym, {}), (peer_sym, {"levels": mx.nd.array(levels)})):
            args = {n: mx.nd.array(f) for n, f in zip(names, feats)}
            args.update(rois=mx.nd.array(rois), **extra)
            grads = {n: mx.nd.zeros(f.shape) for n, f in zip(names, feats)}
            req = {n: ("write" if n in grads else "null") for n in args}
            executors.append((sym.bind(mx.cpu(), args=args, args_grad=grads, grad_req=req), grads))

        def step(exe):
            exe.forward(is_train=True)
            exe.backward([grad_out])
            mx.nd.waitall()
        (ours_ms, peer_ms) = interleaved_median_ms([lambda: step(executors[0][0]), lambda: step(executors[1][0])],
                                                   repeats)
        out_diff = float(np.abs(executors[0][0].outputs[0].asnumpy() - executors[1][0].outputs[0].asnumpy()).max())
        grad_diff = max(float(np.abs(executors[0][1][n].asnumpy() - executors[1][1][n].asnumpy()).max()) for n in names)
        rows.append({"case": label, "RoIs": len(rois), "channels": channels,
                     "ours fwd+bwd ms": ours_ms, "contrib 4-level fwd+bwd ms": peer_ms,
                     "speed-up": "%.1fx" % (peer_ms / ours_ms), "max |out diff|": "%.1e" % out_diff,
                     "max |grad diff|": "%.1e" % grad_diff})
    return rows


SECTIONS = {"proposal": ("FPNProposal (and contrib MultiProposal on the single-level C4 equivalent)",
                         bench_proposal),
            "detection": ("RCNNDetection vs contrib box_decode + box_nms", bench_detection),
            "roi_align": ("MultiLevelROIAlign vs contrib ROIAlign on four levels + where (forward + backward)",
                          bench_roi_align)}


def format_table(title, rows):
    keys = list(rows[0])
    lines = ["### " + title, "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join("%.1f" % v if isinstance(v, float) else str(v) for v in row.values()) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", nargs="+", default=sorted(SECTIONS), choices=sorted(SECTIONS))
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    print("ssdkit threads: %d (set OMP_NUM_THREADS to change)" % ssdkit.ops.num_threads())
    for key in args.ops:
        title, fn = SECTIONS[key]
        print(format_table(title, fn(args.repeats)))
        print()


if __name__ == "__main__":
    main()
