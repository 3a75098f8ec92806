"""Benchmark: ssdkit's MultiBoxDetection vs mx.contrib.nd.MultiBoxDetection (same inputs, same process).

Inputs imitate a trained SSD: anchors of SSD300 (N=8732) or SSD512 with 6 shapes on every map
(N=32756), softmax-like probabilities where a fraction of the anchors has one object class above
the 0.01 threshold and all others are background, regressions ~ N(0, 0.5). Each configuration is
run in two settings: ``topk400`` (5% candidates, nms_topk=400, as SSD deploy graphs use) and
``all`` (1% candidates, no top-k). Times are medians in milliseconds; both operators' outputs are
checked equal before timing. Medians (and best times) over interleaved runs. Run with the thread count fixed, e.g.::

    OMP_NUM_THREADS=2 python bench/bench_detection.py
    OMP_NUM_THREADS=2 python bench/bench_detection.py --anchors 8732 --batch 8 --classes 21
"""
import argparse
import itertools
import math
import time

import mxnet as mx
import numpy as np

import ssdkit  # noqa: F401  (loads the operators)
from ssdkit.anchors import ssd_anchors

# (map sizes, anchors per location) of the two anchor layouts
LAYOUTS = {
    8732: ((38, 19, 10, 5, 3, 1), (4, 6, 6, 6, 4, 4)),
    32756: ((64, 32, 16, 8, 4, 2, 1), (6, 6, 6, 6, 6, 4, 4)),
}
SETTINGS = {"topk400": (0.05, dict(nms_topk=400)), "all": (0.01, dict())}


def make_anchors(num_anchors):
    """(1, N, 4) SSD anchors of the layout with ``num_anchors`` anchors."""
    maps, per_location = LAYOUTS[num_anchors]
    sizes = np.linspace(0.1, 0.95, len(maps) + 1)
    parts = []
    for i, (size, count) in enumerate(zip(maps, per_location)):
        ratios = (1.0, 2.0, 0.5) if count == 4 else (1.0, 2.0, 0.5, 3.0, 1.0 / 3)
        pair = (sizes[i], math.sqrt(sizes[i] * sizes[i + 1]))
        parts.append(np.asarray(ssd_anchors(size, size, pair, ratios), np.float32).reshape(-1, 4))
    anchors = np.concatenate(parts)[None]
    assert anchors.shape[1] == num_anchors, anchors.shape
    return anchors


def make_inputs(rng, batch, channels, num_anchors, candidate_fraction):
    """cls_prob (B, C+1, N), loc_pred (B, N*4), anchor (1, N, 4) as described in the module doc."""
    prob = rng.uniform(0, 0.009 / channels, size=(batch, channels, num_anchors)).astype(np.float32)
    hits = rng.random((batch, num_anchors)) < candidate_fraction
    b, n = np.nonzero(hits)
    cls = rng.integers(1, channels, size=b.size)
    prob[b, cls, n] = rng.uniform(0.02, 0.95, size=b.size)
    prob[:, 0] = np.maximum(0, 1 - prob[:, 1:].sum(axis=1))
    loc = rng.normal(scale=0.5, size=(batch, num_anchors * 4)).astype(np.float32)
    return prob, loc, make_anchors(num_anchors)


def interleaved_ms(fns, reps):
    """Median and best milliseconds of each function, run in turn ``reps`` times after a warm-up.

    Interleaving spreads the noise of other processes evenly over the contenders.
    """
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(reps):
        for fn, out in zip(fns, times):
            start = time.perf_counter()
            fn()
            out.append(1e3 * (time.perf_counter() - start))
    return [(float(np.median(t)), float(np.min(t))) for t in times]


def run(anchors=(8732, 32756), batches=(8, 32), classes=(21, 81), settings=tuple(SETTINGS), reps=5, seed=0):
    """Time both operators on every configuration; return a list of result dicts."""
    rng = np.random.default_rng(seed)
    results = []
    for n, batch, channels, setting in itertools.product(anchors, batches, classes, settings):
        fraction, kwargs = SETTINGS[setting]
        arrays = [mx.nd.array(x) for x in make_inputs(rng, batch, channels, n, fraction)]
        ours = lambda: mx.nd.MultiBoxDetection(*arrays, **kwargs).wait_to_read()  # noqa: E731
        theirs = lambda: mx.contrib.nd.MultiBoxDetection(*arrays, **kwargs).wait_to_read()  # noqa: E731
        a = mx.nd.MultiBoxDetection(*arrays, **kwargs).asnumpy()
        b = mx.contrib.nd.MultiBoxDetection(*arrays, **kwargs).asnumpy()
        np.testing.assert_array_equal(a[..., 0], b[..., 0])
        np.testing.assert_allclose(a, b, atol=1e-5)
        capped = lambda: mx.nd.MultiBoxDetection(*arrays, max_detections=100, **kwargs).wait_to_read()  # noqa
        (contrib_med, contrib_min), (ours_med, ours_min), (k100_med, _) = interleaved_ms(
            [theirs, ours, capped], reps)
        row = dict(N=n, B=batch, C=channels, setting=setting,
                   candidates=int(np.count_nonzero(a[..., 1] >= 0.01) / batch),
                   contrib=contrib_med, ours=ours_med, ours_k100=k100_med,
                   contrib_min=contrib_min, ours_min=ours_min)
        row["speedup"] = row["contrib"] / row["ours"]
        row["speedup_min"] = row["contrib_min"] / row["ours_min"]
        results.append(row)
        print("| {N:5d} | {B:2d} | {C:2d} | {setting:7s} | {candidates:8d} | {contrib:10.1f} | {ours:7.1f} | "
              "{ours_k100:10.1f} | {speedup:6.1f}x | {contrib_min:7.1f} / {ours_min:5.1f} = {speedup_min:4.1f}x |"
              .format(**row), flush=True)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--anchors", type=int, nargs="+", default=[8732, 32756], choices=sorted(LAYOUTS))
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--classes", type=int, nargs="+", default=[21, 81], help="channels incl. background")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    print("threads: ssdkit %d" % ssdkit.ops.num_threads())
    print("|     N |  B |  C | setting | cand/img | contrib ms | ours ms | ours K=100 | speedup | "
          "best: contrib / ours  |")
    print("|------:|---:|---:|---------|---------:|-----------:|--------:|-----------:|--------:|"
          "-----------------------|")
    run(args.anchors, args.batch, args.classes, args.settings, args.reps)


if __name__ == "__main__":
    main()
