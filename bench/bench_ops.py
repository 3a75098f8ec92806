"""Speed of ssdkit's operators against MXNet's built-in contrib operators.

Both run on the same inputs in the same process, interleaved (ours, contrib, ours, ...) so that
load from other processes hits both alike; each timing is the median of at least ``--repeats``
calls (and at least ``MIN_SECONDS`` of rounds) after one warm-up call each. Run with the thread
count fixed, e.g.::

    OMP_NUM_THREADS=2 python bench/bench_ops.py --ops target --repeats 7

Sections (one function each, listed in ``SECTIONS``): ``target`` (MultiBoxTarget),
``detection`` (MultiBoxDetection through imperative ``mx.nd`` calls) and ``detection-executor``
(the same through bound executors, whose outputs are allocated once, as in a deploy graph) and
``detection-dense`` (bound executors on the scores of an untrained model: nearly every anchor passes).
"""
import argparse
import functools
import math

import mxnet as mx
import numpy as np

import ssdkit.ops  # noqa: F401  (loads the operators)
from ssdkit.anchors import ssd_anchors
from timing import interleaved_median_ms, interleaved_median_wall_cpu_ms

# Feature-map sizes and anchor shapes per location of the two SSD anchor sets we time.
ANCHOR_SETS = {
    8732: ((38, 19, 10, 5, 3, 1), (4, 6, 6, 6, 4, 4)),           # SSD300 (VGG16)
    32756: ((64, 32, 16, 8, 4, 2, 1), (6, 6, 6, 6, 6, 4, 4)),    # SSD512-sized
    24564: ((64, 32, 16, 8, 4, 2, 1), (4, 6, 6, 6, 6, 4, 4)),    # SSD512 pyramid, 5 ratios on the middle levels
}


def anchor_set(num_anchors):
    """(1, N, 4) normalised SSD anchors of one of ``ANCHOR_SETS``."""
    maps, shapes = ANCHOR_SETS[num_anchors]
    layers = []
    for i, (m, a) in enumerate(zip(maps, shapes)):
        s = 0.1 + 0.8 * i / (len(maps) - 1)
        ratios = (1, 2, 0.5) if a == 4 else (1, 2, 0.5, 3, 1 / 3)
        layers.append(ssd_anchors(m, m, sizes=(s, math.sqrt(s * (s + 0.1))), ratios=ratios))
    anchors = np.concatenate(layers)[None]
    assert anchors.shape[1] == num_anchors, anchors.shape
    return anchors


def random_labels(rng, batch, max_gt, num_classes):
    """(B, max_gt, 5) labels with 1..8 objects per image, padded with -1."""
    label = -np.ones((batch, max_gt, 5), dtype=np.float32)
    for b in range(batch):
        k = rng.randint(1, 9)
        xy = rng.uniform(0.1, 0.9, (k, 2))
        wh = rng.uniform(0.05, 0.6, (k, 2))
        label[b, :k, 0] = rng.randint(0, num_classes, k)
        label[b, :k, 1:] = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1)
    return label


# Each configuration runs at least this long (and at least --repeats rounds): calls of a few
# milliseconds need hundreds of samples before their median stops moving.
MIN_SECONDS = 3.0


def bench_target(repeats, quick=False):
    """MultiBoxTarget (hard-negative mining on, ratio 3, as SSD trains) vs contrib.

    Returns
    -------
    list of dict rows: N, B, C, contrib_ms, ours_ms, speedup, same_output (all three outputs
    equal to contrib's: cls_target and loc_mask exactly, loc_target to 1e-5)
    """
    rows = []
    configs = [(n, b, c) for n in (8732, 32756) for b in (8, 32) for c in (21, 81)]
    if quick:
        configs = configs[:1]
    rng = np.random.RandomState(0)
    for num_anchors, batch, channels in configs:
        anchor = mx.nd.array(anchor_set(num_anchors))
        label = mx.nd.array(random_labels(rng, batch, 20, channels - 1))
        cls_pred = mx.nd.array(rng.randn(batch, channels, num_anchors).astype(np.float32))
        kwargs = {"negative_mining_ratio": 3, "negative_mining_thresh": 0.5, "overlap_threshold": 0.5}

        def ours():
            mx.nd.MultiBoxTarget(anchor, label, cls_pred, **kwargs)[2].wait_to_read()

        def contrib():
            mx.nd.contrib.MultiBoxTarget(anchor, label, cls_pred, **kwargs)[2].wait_to_read()

        got = [o.asnumpy() for o in mx.nd.MultiBoxTarget(anchor, label, cls_pred, **kwargs)]
        want = [o.asnumpy() for o in mx.nd.contrib.MultiBoxTarget(anchor, label, cls_pred, **kwargs)]
        same = (np.allclose(got[0], want[0], rtol=1e-5, atol=1e-5) and np.array_equal(got[1], want[1])
                and np.array_equal(got[2], want[2]))
        ours_ms, contrib_ms = interleaved_median_ms([ours, contrib], repeats, min_seconds=MIN_SECONDS)
        rows.append({"N": num_anchors, "B": batch, "C": channels, "contrib_ms": contrib_ms,
                     "ours_ms": ours_ms, "speedup": contrib_ms / ours_ms, "same_output": same})
    return rows


def detection_inputs(rng, batch, channels, num_anchors, candidate_fraction):
    """Inputs imitating a trained SSD: ``candidate_fraction`` of the anchors have one object class
    with probability in [0.02, 0.95], every other object probability is below the 0.01 threshold.

    Returns
    -------
    cls_prob : (B, C, N) probabilities, channel 0 background
    loc_pred : (B, N*4) regressions ~ N(0, 0.5)
    anchor : (1, N, 4) SSD anchors of ``ANCHOR_SETS``
    """
    prob = rng.uniform(0, 0.009 / channels, size=(batch, channels, num_anchors)).astype(np.float32)
    b, n = np.nonzero(rng.uniform(size=(batch, num_anchors)) < candidate_fraction)
    prob[b, rng.randint(1, channels, size=b.size), n] = rng.uniform(0.02, 0.95, size=b.size)
    prob[:, 0] = np.maximum(0, 1 - prob[:, 1:].sum(axis=1))
    loc = rng.normal(scale=0.5, size=(batch, num_anchors * 4)).astype(np.float32)
    return prob, loc, anchor_set(num_anchors).astype(np.float32)


# name: (fraction of anchors above the threshold, operator arguments)
DETECTION_SETTINGS = {"topk400": (0.05, {"nms_topk": 400}), "all": (0.01, {})}


def bound_call(op, arrays, kwargs):
    """A function running ``op`` on ``arrays`` through a bound executor, as a deploy graph runs it:
    the output buffer is allocated once at bind time, not per call."""
    names = ["cls_prob", "loc_pred", "anchor"]
    exe = op(*[mx.sym.var(n) for n in names], **kwargs).bind(mx.cpu(), args=dict(zip(names, arrays)),
                                                              grad_req="null")

    def run():
        exe.forward(is_train=False)
        exe.outputs[0].wait_to_read()
    return run


def bench_detection(repeats, quick=False, executor=False):
    """MultiBoxDetection (threshold 0.01, class-aware NMS at 0.5) vs contrib, in two settings:
    ``topk400`` (5% candidates, nms_topk=400 as SSD deploy graphs use) and ``all`` (1% candidates,
    no top-k). ``ours_k100_ms`` times our op with ``max_detections=100`` (a (B, 100, 6) output).
    Outputs of the two operators are checked equal first. ``executor``: time bound executors
    (outputs allocated once, as in a deploy graph) instead of imperative ``mx.nd`` calls (which
    allocate, and page-fault, a fresh (B, N, 6) output every call).

    Returns
    -------
    list of dict rows: N, B, C, setting, cand_per_img, contrib_ms, ours_ms, ours_k100_ms, speedup
    """
    rows = []
    configs = [(n, b, c, s) for n in (8732, 32756) for b in (8, 32) for c in (21, 81)
               for s in DETECTION_SETTINGS]
    if quick:
        configs = configs[:1]
    rng = np.random.RandomState(0)
    for num_anchors, batch, channels, setting in configs:
        fraction, kwargs = DETECTION_SETTINGS[setting]
        arrays = [mx.nd.array(x) for x in detection_inputs(rng, batch, channels, num_anchors, fraction)]
        ours_out = mx.nd.MultiBoxDetection(*arrays, **kwargs).asnumpy()
        np.testing.assert_allclose(ours_out, mx.nd.contrib.MultiBoxDetection(*arrays, **kwargs).asnumpy(),
                                   atol=1e-5)

        if executor:
            ours = bound_call(mx.sym.MultiBoxDetection, arrays, kwargs)
            ours_k100 = bound_call(mx.sym.MultiBoxDetection, arrays, dict(kwargs, max_detections=100))
            contrib = bound_call(mx.sym.contrib.MultiBoxDetection, arrays, kwargs)
        else:
            def ours():
                mx.nd.MultiBoxDetection(*arrays, **kwargs).wait_to_read()

            def ours_k100():
                mx.nd.MultiBoxDetection(*arrays, max_detections=100, **kwargs).wait_to_read()

            def contrib():
                mx.nd.contrib.MultiBoxDetection(*arrays, **kwargs).wait_to_read()

        contrib_ms, ours_ms, k100_ms = interleaved_median_ms([contrib, ours, ours_k100], repeats,
                                                             min_seconds=MIN_SECONDS)
        rows.append({"N": num_anchors, "B": batch, "C": channels, "setting": setting,
                     "cand_per_img": int(np.count_nonzero(ours_out[..., 1] >= 0.01) // batch),
                     "contrib_ms": contrib_ms, "ours_ms": ours_ms,
                     "ours_k100_ms": k100_ms, "speedup": contrib_ms / ours_ms})
    return rows


def dense_detection_inputs(rng, batch, channels, num_anchors, sigma):
    """Scores of an untrained or early model: softmax over the channels of N(0, sigma^2) logits, so
    nearly every anchor has some object probability above a 0.01 threshold when sigma is small."""
    logits = rng.normal(scale=sigma, size=(batch, channels, num_anchors))
    prob = np.exp(logits - logits.max(axis=1, keepdims=True))
    prob = (prob / prob.sum(axis=1, keepdims=True)).astype(np.float32)
    loc = rng.normal(scale=0.5, size=(batch, num_anchors * 4)).astype(np.float32)
    return prob, loc, anchor_set(num_anchors).astype(np.float32)


def bench_detection_dense(repeats, quick=False):
    """MultiBoxDetection on dense scores (``dense_detection_inputs``, sigma in 0.5-8) and, in the same
    table, on trained-like peaked scores (``detection_inputs``, 5% candidates): N = 24564 anchors,
    B = 8, C = 21, threshold 0.01, nms_topk 400, class-aware NMS at 0.5, bound executors (as in a
    deploy graph). Outputs are compared with contrib's first (``bit_equal``: every value identical).
    Wall and process-CPU times (all threads) are medians of the same interleaved calls; on a shared
    machine the CPU times are the steadier ratio.

    Returns
    -------
    list of dict rows: scores, cand_per_img (anchors whose best object score passes), contrib_ms,
    ours_ms, speedup (wall), contrib_cpu_ms, ours_cpu_ms, cpu_speedup, bit_equal
    """
    rows = []
    rng = np.random.RandomState(0)
    kwargs = {"nms_topk": 400, "threshold": 0.01}
    dists = [("sigma %g" % s, functools.partial(dense_detection_inputs, sigma=s))
             for s in ((1.0,) if quick else (0.5, 1.0, 2.0, 4.0, 8.0))]
    dists.append(("peaked 5%", functools.partial(detection_inputs, candidate_fraction=0.05)))
    for name, make in dists:
        inputs = make(rng, 8, 21, 24564)
        arrays = [mx.nd.array(x) for x in inputs]
        ours_out = mx.nd.MultiBoxDetection(*arrays, **kwargs).asnumpy()
        contrib_out = mx.nd.contrib.MultiBoxDetection(*arrays, **kwargs).asnumpy()
        np.testing.assert_allclose(ours_out, contrib_out, atol=1e-5)
        ours = bound_call(mx.sym.MultiBoxDetection, arrays, kwargs)
        contrib = bound_call(mx.sym.contrib.MultiBoxDetection, arrays, kwargs)
        (contrib_ms, contrib_cpu), (ours_ms, ours_cpu) = interleaved_median_wall_cpu_ms(
            [contrib, ours], repeats, min_seconds=MIN_SECONDS)
        candidates = int(np.count_nonzero(inputs[0][:, 1:].max(axis=1) >= 0.01)) // 8
        rows.append({"scores": name, "cand_per_img": candidates, "contrib_ms": contrib_ms, "ours_ms": ours_ms,
                     "speedup": contrib_ms / ours_ms, "contrib_cpu_ms": contrib_cpu, "ours_cpu_ms": ours_cpu,
                     "cpu_speedup": contrib_cpu / ours_cpu, "bit_equal": bool(np.array_equal(ours_out, contrib_out))})
    return rows


SECTIONS = {"target": ("MultiBoxTarget", bench_target),
            "detection": ("MultiBoxDetection, imperative calls", bench_detection),
            "detection-executor": ("MultiBoxDetection, bound executors",
                                   functools.partial(bench_detection, executor=True)),
            "detection-dense": ("MultiBoxDetection on dense (untrained-like) scores, bound executors",
                                bench_detection_dense)}


def format_table(title, rows):
    """A markdown table of ``rows`` (dicts with the same keys)."""
    keys = list(rows[0])
    lines = ["### " + title, "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [("%.2f" if v < 10 else "%.1f") % v if isinstance(v, float) else str(v)
                 for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", nargs="+", default=sorted(SECTIONS), choices=sorted(SECTIONS))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="one configuration per section")
    args = parser.parse_args(argv)
    print("ssdkit threads: %d (set OMP_NUM_THREADS to change)" % ssdkit.ops.num_threads())
    for key in args.ops:
        title, fn = SECTIONS[key]
        print(format_table(title, fn(args.repeats, quick=args.quick)))
        print()


if __name__ == "__main__":
    main()
