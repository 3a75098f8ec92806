"""Inference time: ssdkit ``get_symbol`` SSD512-ResNet50 vs GluonCV ``ssd_512_resnet50_v1_voc``.

Both run in this process on the CPU with identical weights (random, imported with
``ssdkit.weights.import_ssd``); GluonCV is hybridized (static_alloc, static_shape). The class
heads decide how much post-processing there is: ``--heads trained-like`` shifts them towards
background (bias +8, as with a trained detector only a few (anchor, class) pairs pass the 0.01
score threshold); ``--heads random`` keeps random heads, so all 6132 x 20 pairs are candidates and
GluonCV's per-class NMS sorts 122k rows. ssdkit runs in two head layouts (:data:`LAYOUTS`): fused
heads (its CPU layout) and GluonCV's separate heads. GluonCV and the two ssdkit executors run
alternately, one forward each per round (shared, noisy cores); wall and process-CPU times are
medians over ``--repeat`` rounds after warm-up.

``--model fpn``: ssdkit ``fpn_resnet50`` with GluonCV's conventions vs GluonCV
``faster_rcnn_fpn_resnet50_v1b_coco`` (:mod:`fpn_peer`), batch 1 (GluonCV's FPN inference takes one image),
a square ``--fpn-size`` input for both, the same image, alternating rounds as above.

Usage::

    OMP_NUM_THREADS=2 python bench/bench_inference.py [--batches 1 8] [--repeat 10] [--heads random]
        [--gluoncv-backend MKLDNN]
    OMP_NUM_THREADS=2 python bench/bench_inference.py --model fpn [--fpn-size 512] [--repeat 5]
"""
import argparse
import functools
import os
import tempfile

import mxnet as mx
import numpy as np
from gluoncv import model_zoo

from fpn_peer import gluoncv_fpn, ssdkit_fpn_executor
from ssdkit import weights
from ssdkit.symbol import symbol_builder
from timing import interleaved_median_wall_cpu_ms

NAME = "ssd_512_resnet50_v1_voc"
SIZE = 512
LAYOUTS = (("fused", True), ("separate", False))
"""ssdkit head layouts timed: one aligned convolution per layer (``fused_heads``, the same weights
concatenated by ``ssdkit.weights.fuse_head_params``) and GluonCV's two convolutions per layer."""


def gluoncv_ssd_net(path, heads, backend=None):
    """GluonCV's ``ssd_512_resnet50_v1_voc`` with random weights (``heads`` as ``--heads``) saved to ``path``,
    hybridized (static_alloc, static_shape; ``backend`` e.g. ``"MKLDNN"``)."""
    net = model_zoo.get_model(NAME, pretrained=False, pretrained_base=False)
    net.initialize()
    net(mx.nd.zeros((1, 3, SIZE, SIZE)))
    classes = net.num_classes + 1
    for cp in net.class_predictors if heads == "trained-like" else ():
        bias = cp.predictor.bias.data().asnumpy()
        bias[::classes] += 8.0
        cp.predictor.bias.set_data(mx.nd.array(bias))
        cp.predictor.weight.set_data(cp.predictor.weight.data() * 0.05)
    for bp in net.box_predictors:
        bp.predictor.weight.set_data(bp.predictor.weight.data() * 0.05)
    net.save_parameters(path)
    net.hybridize(static_alloc=True, static_shape=True, **({"backend": backend} if backend else {}))
    return net


def _ssdkit_executor(path, batch, fused_heads):
    arg, aux = weights.import_ssd(path, NAME, fused_heads=fused_heads)
    sym = symbol_builder.get_symbol(**weights.zoo_config(NAME, fused_heads=fused_heads))
    args = dict(arg, data=mx.nd.zeros((batch, 3, SIZE, SIZE)))
    return sym.bind(mx.cpu(), args=args, aux_states=aux, grad_req="null")


def fpn_main(args):
    """ssdkit fpn_resnet50 vs GluonCV faster_rcnn_fpn_resnet50_v1b_coco, batch 1, one table row per size."""
    from fpn_peer import NAME as FPN_NAME

    print("OMP_NUM_THREADS=%s, mxnet %s, GluonCV backend %s, heads %s, load average before: %s"
          % (os.environ.get("OMP_NUM_THREADS"), mx.__version__, args.gluoncv_backend, args.heads,
             open("/proc/loadavg").read().split()[:3]))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, FPN_NAME + ".params")
        net = gluoncv_fpn(path, heads=args.heads)
        net.hybridize(static_alloc=True, static_shape=True,
                      **({} if args.gluoncv_backend == "default" else {"backend": "MKLDNN"}))
        for size in args.fpn_size:
            x = mx.nd.array(np.random.RandomState(0).normal(size=(1, 3, size, size)).astype(np.float32))
            exe = ssdkit_fpn_executor(path, size)
            exe.arg_dict["data"][:] = x

            def gluon():
                return [o.wait_to_read() for o in net(x)]

            def ours():
                exe.forward(is_train=False)
                exe.outputs[0].wait_to_read()
            (gluon_ms, gluon_cpu), (ours_ms, ours_cpu) = interleaved_median_wall_cpu_ms([gluon, ours], args.repeat,
                                                                                        warmup=2)
            n_theirs = int((net(x)[0].asnumpy() >= 0).sum())
            n_ours = int((exe.outputs[0].asnumpy()[..., 0] >= 0).sum())
            rows.append((size, ours_ms, gluon_ms, ours_cpu, gluon_cpu, n_ours, n_theirs))
    print("load average after: %s" % open("/proc/loadavg").read().split()[:3])
    print("| input | ssdkit wall ms | GluonCV wall ms | wall ratio | ssdkit CPU ms | GluonCV CPU ms | CPU ratio "
          "| detections ssdkit (best 100) / GluonCV (all) |")
    print("|---|---|---|---|---|---|---|---|")
    for size, ours_ms, gluon_ms, ours_cpu, gluon_cpu, n_ours, n_theirs in rows:
        print("| %dx%d | %.0f | %.0f | %.2f | %.0f | %.0f | %.2f | %d / %d |"
              % (size, size, ours_ms, gluon_ms, ours_ms / gluon_ms, ours_cpu, gluon_cpu, ours_cpu / gluon_cpu,
                 n_ours, n_theirs))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["ssd512", "fpn"], default="ssd512",
                        help="ssd512: SSD512-ResNet50 (default); fpn: Faster R-CNN FPN ResNet-50 v1b")
    parser.add_argument("--fpn-size", type=int, nargs="+", default=[512],
                        help="square input sizes of --model fpn (multiples of 64)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--heads", choices=["trained-like", "random"], default="trained-like")
    parser.add_argument("--gluoncv-backend", choices=["default", "MKLDNN"], default="default",
                        help="MKLDNN: hybridize GluonCV with backend='MKLDNN' (MXNet's conv + BatchNorm + "
                             "ReLU fusion, which symbolic executors such as ssdkit's get by default)")
    args = parser.parse_args()
    if args.model == "fpn":
        return fpn_main(args)
    print("OMP_NUM_THREADS=%s, mxnet %s, GluonCV backend %s"
          % (os.environ.get("OMP_NUM_THREADS"), mx.__version__, args.gluoncv_backend))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, NAME + ".params")
        net = gluoncv_ssd_net(path, args.heads, None if args.gluoncv_backend == "default" else "MKLDNN")
        rows = []
        for batch in args.batches:
            x = mx.nd.array(np.random.RandomState(0).normal(size=(batch, 3, SIZE, SIZE)).astype(np.float32))
            executors = {layout: _ssdkit_executor(path, batch, fused) for layout, fused in LAYOUTS}
            for exe in executors.values():
                exe.arg_dict["data"][:] = x

            def gluon():
                return [o.wait_to_read() for o in net(x)]

            def run(exe):
                exe.forward(is_train=False)
                exe.outputs[0].wait_to_read()
            fns = [gluon] + [functools.partial(run, exe) for exe in executors.values()]
            times = interleaved_median_wall_cpu_ms(fns, args.repeat, warmup=2)
            (gluon_ms, gluon_cpu), theirs = times[0], net(x)[0].asnumpy()
            for (layout, exe), (ours_ms, ours_cpu) in zip(executors.items(), times[1:]):
                ours = exe.outputs[0].asnumpy()
                rows.append((batch, layout, ours_ms, gluon_ms, ours_cpu, gluon_cpu,
                             int((ours[..., 0] >= 0).sum()), int((theirs[..., 0] >= 0).sum())))
        print("heads: %s" % args.heads)
        print("| batch | ssdkit heads | ssdkit wall ms | GluonCV wall ms | wall ratio | ssdkit CPU ms "
              "| GluonCV CPU ms | CPU ratio | detections ssdkit / GluonCV |")
        print("|---|---|---|---|---|---|---|---|---|")
        for batch, layout, ours_ms, gluon_ms, ours_cpu, gluon_cpu, n_ours, n_theirs in rows:
            print("| %d | %s | %.1f | %.1f | %.2f | %.1f | %.1f | %.2f | %d / %d |"
                  % (batch, layout, ours_ms, gluon_ms, ours_ms / gluon_ms, ours_cpu, gluon_cpu,
                     ours_cpu / gluon_cpu, n_ours, n_theirs))


if __name__ == "__main__":
    main()
