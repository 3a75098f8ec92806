"""One FPN training step with ssdkit's ``MultiLevelROIAlign`` against the same step with the RoI pooling it
replaced (contrib ``ROIAlign`` of every RoI on each of the four levels, merged with ``where``).

Both graphs are ``ssdkit.symbol.fpn.get_symbol_train`` of ``fpn_resnet18`` at 256 x 256, batch 2, 6 classes,
with the ``fpn_resnet18_synthetic`` preset's settings (128 FPN channels, 2 x 128 sampled RoIs, fc 256) or
with ``--settings defaults`` (256 channels, 2 x 512 RoIs, fc 1024); the "contrib" graph is built
with ``symbol.fpn.multilevel_roi_align`` swapped for the four-level contrib pooling for the duration of
the build (a benchmark-only substitution; the library has one pooling). Both modules start from the same
parameters and see the same random images and boxes; a step is ``forward_backward`` + ``update`` (SGD),
timed interleaved (ours, contrib, ours, ...), median of ``--repeats``. ``--profile N`` prints MXNet's
aggregate operator table over N steps of each graph (operator bulking off, as in bench/README_fpn.md)::

    OMP_NUM_THREADS=2 python bench/bench_fpn_step.py --repeats 7 --profile 2
"""
import argparse
import os
from unittest import mock

import mxnet as mx
import numpy as np

import ssdkit.ops  # noqa: F401  (loads the operators)
from bench_fpn_ops import contrib_four_level_pooling
from ssdkit.config import load_config
from ssdkit.symbol import fpn
from ssdkit.symbol.fpn_head import roi_levels
from timing import interleaved_median_ms

CLASSES = 6


def contrib_pooling(features, rois, *, strides, pooled_size, sample_ratio, min_level, aligned=True):
    """Drop-in for ``multilevel_roi_align`` that builds the pre-MultiLevelROIAlign graph."""
    assert aligned and tuple(strides) == (4, 8, 16, 32) and min_level == 2
    rois = mx.sym.BlockGrad(rois)
    return contrib_four_level_pooling(features, rois, roi_levels(rois), pooled_size, sample_ratio)


def build_module(symbol, batch, size):
    mod = mx.mod.Module(symbol, data_names=["data", "im_info"], label_names=["label"], context=[mx.cpu()])
    mod.bind(data_shapes=[("data", (batch, 3, size, size)), ("im_info", (batch, 3))],
             label_shapes=[("label", (batch, 8, 5))], for_training=True)
    return mod


def make_batch(rng, batch, size):
    label = -np.ones((batch, 8, 5), np.float32)
    for b in range(batch):
        count = rng.integers(2, 8)
        x0, y0 = rng.uniform(0, size * 0.7, count), rng.uniform(0, size * 0.7, count)
        w, h = rng.uniform(12, size * 0.3, count), rng.uniform(12, size * 0.3, count)
        label[b, :count] = np.stack([rng.integers(0, CLASSES, count), x0, y0, np.minimum(x0 + w, size - 1),
                                     np.minimum(y0 + h, size - 1)], 1)
    data = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    im_info = np.tile(np.array([[size, size, 1.0]], np.float32), (batch, 1))
    return mx.io.DataBatch(data=[mx.nd.array(data), mx.nd.array(im_info)], label=[mx.nd.array(label)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--profile", type=int, default=0, help="profile N steps of each graph")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--settings", choices=["preset", "defaults"], default="preset",
                        help="FPN settings: the fpn_resnet18_synthetic preset's [fpn] section (128 channels, 128 "
                             "RoIs per image) or FPNConfig's defaults (256 channels, 512 RoIs, fc 1024: the "
                             "session-6 profile of bench/README_fpn.md)")
    args = parser.parse_args(argv)
    print("ssdkit threads: %d, OMP_NUM_THREADS=%s" % (ssdkit.ops.num_threads(), os.environ.get("OMP_NUM_THREADS")))
    settings = dict(load_config("fpn_resnet18_synthetic").fpn.__dict__) if args.settings == "preset" else {}
    kwargs = dict(image_shape=(args.size, args.size), batch_size=args.batch, **settings)
    ours_sym = fpn.get_symbol_train("fpn_resnet18", CLASSES, **kwargs)
    with mock.patch.object(fpn, "multilevel_roi_align", contrib_pooling):
        peer_sym = fpn.get_symbol_train("fpn_resnet18", CLASSES, **kwargs)
    assert "MultiLevelROIAlign" in ours_sym.tojson() and "MultiLevelROIAlign" not in peer_sym.tojson()
    rng = np.random.default_rng(0)
    mods = [build_module(sym, args.batch, args.size) for sym in (ours_sym, peer_sym)]
    mx.random.seed(0)
    mods[0].init_params(mx.init.Xavier(magnitude=2.0))
    arg, aux = mods[0].get_params()
    mods[1].init_params(arg_params=arg, aux_params=aux)
    for mod in mods:
        mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 1e-3, "momentum": 0.9})
    batch = make_batch(rng, args.batch, args.size)

    def step(mod):
        mod.forward_backward(batch)
        mod.update()
        mx.nd.waitall()

    ours_ms, peer_ms = interleaved_median_ms([lambda: step(mods[0]), lambda: step(mods[1])], args.repeats)
    print("| RoI pooling | step ms (median of %d) | images/s |" % args.repeats)
    print("|---|---|---|")
    for name, ms in (("MultiLevelROIAlign (ours)", ours_ms), ("contrib ROIAlign x 4 levels + where", peer_ms)):
        print("| %s | %.0f | %.2f |" % (name, ms, args.batch * 1e3 / ms))
    print("step speed-up: %.2fx" % (peer_ms / ours_ms))
    if args.profile:
        os.environ["MXNET_EXEC_BULK_EXEC_TRAIN"] = "0"
        for name, mod in (("ours", mods[0]), ("contrib", mods[1])):
            mx.profiler.set_config(profile_all=True, aggregate_stats=True,
                                   filename="/tmp/bench_fpn_step_%s.json" % name)
            mx.profiler.set_state("run")
            for _ in range(args.profile):
                step(mod)
            mx.profiler.set_state("stop")
            print("#### %s, %d steps" % (name, args.profile))
            print(mx.profiler.dumps(reset=True, format="table", sort_by="total", ascending=False))


if __name__ == "__main__":
    main()
