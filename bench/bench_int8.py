"""Inference time of ssdkit's deploy formats: fp32 MXNet graphs, INT8 graphs (oneDNN,
:mod:`ssdkit.api.quantize`) and ONNX files run by onnxruntime (:mod:`ssdkit.api.onnx_export`, fp32).

Networks: the main job's ``lite_256_synthetic`` (``lite`` at 256 px, 6 classes) and SSD512-ResNet50
(``resnet50`` at 512 px, 20 classes). Weights are random (He-scaled convolutions, identity BatchNorm,
near-zero heads), the detection score threshold is 0.3 so, as with a trained detector, few candidates
reach NMS; the INT8 graph is calibrated (``naive``) on ``--calib-images`` images of the synthetic
dataset, read through ssdkit's inference transform. Both graphs are bound as ``ssdkit.Detector`` binds
them (MXNet Module; the fp32 executor gets MXNet's oneDNN conv+BN+ReLU fusion by default). The fp32
graph exported to ONNX runs in an onnxruntime session (CPU provider, all graph optimisations,
``OMP_NUM_THREADS`` intra-op threads) as :class:`~ssdkit.api.onnx_runtime.OnnxDetectionModel` runs it;
its detections are checked against the MXNet graph's first (:func:`check_same_detections`). For
SSD512-ResNet50 GluonCV's ``ssd_512_resnet50_v1_voc`` (fp32, hybridized, random weights with trained-like
heads as in ``bench_inference.py``, so few candidates reach its NMS either) is timed too. All of them
run in this process alternately, one forward each per round (detections included); wall and
process-CPU times are medians after warm-up. The CPU's instruction-set flags are printed (INT8 speed
depends on VNNI / AVX-512).

Usage::

    OMP_NUM_THREADS=2 python bench/bench_int8.py [--batches 1 8] [--repeat 10] [--calib-images 16] [--no-onnx]
        [--no-gluoncv]
"""
import argparse
import os
import tempfile

import mxnet as mx
import numpy as np

from ssdkit.api.model_files import normalized_meta
from ssdkit.api.onnx_export import export_onnx
from ssdkit.api.onnx_runtime import OnnxDetectionModel
from ssdkit.api.quantize import Calibration, quantize_graph, quantized_layers
from ssdkit.api.ssd import SSDFamily
from ssdkit.engine.evaluator import bind_inference
from bench_inference import gluoncv_ssd_net
from timing import interleaved_median_wall_cpu_ms

NETWORKS = (("lite_256_synthetic", "lite", 256, 6), ("SSD512-ResNet50", "resnet50", 512, 20))
"""(label, network preset, input size, classes) timed."""
GLUONCV_PEER = {"SSD512-ResNet50": "ssd_512_resnet50_v1_voc"}
"""The GluonCV network timed beside ours (fp32), where GluonCV has the same detector."""
CALIB_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "data", "synthetic", "VOCdevkit", "VOC2007", "JPEGImages")
FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags():
    """The instruction-set flags of :data:`FLAGS` this CPU has and lacks (``/proc/cpuinfo``)."""
    with open("/proc/cpuinfo") as f:
        have = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    return [f for f in FLAGS if f in have], [f for f in FLAGS if f not in have]


def random_model(network, size, classes, rng):
    """``(meta, symbol, arg, aux)`` of an SSD with random weights (see the module docstring)."""
    meta = normalized_meta({"network": network, "data_shape": size, "class_names": ["c%d" % i for i in range(classes)],
                            "max_detections": 100, "score_thresh": 0.3})
    symbol = SSDFamily().inference_symbol(meta)
    arg_shapes, _, aux_shapes = symbol.infer_shape(data=(1, 3, size, size))
    arg = {}
    for name, shape in zip(symbol.list_arguments(), arg_shapes):
        if name == "data":
            continue
        if name.endswith("gamma"):
            value = np.ones(shape)
        elif name.endswith(("beta", "bias")):
            value = np.zeros(shape)
        elif name.endswith("_pred_weight"):
            value = rng.normal(0, 0.01, shape)
        else:
            value = rng.normal(0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
        arg[name] = mx.nd.array(value)
    aux = {name: mx.nd.ones(shape) if name.endswith("var") else mx.nd.zeros(shape)
           for name, shape in zip(symbol.list_auxiliary_states(), aux_shapes)}
    return meta, symbol, arg, aux


def check_same_detections(ours, theirs):
    """Raise AssertionError unless each image has as many kept rows (``cls_id >= 0``) in both and their
    sorted scores agree within 1e-4 (random weights saturate many scores at 1.0, whose order the two
    libraries' rounding may swap; tests/test_onnx_export.py checks the rows themselves)."""
    for b, (o, t) in enumerate(zip(ours, theirs)):
        o, t = np.sort(o[o[:, 0] >= 0, 1]), np.sort(t[t[:, 0] >= 0, 1])
        assert o.shape == t.shape and np.abs(o - t).max(initial=0) < 1e-4, \
            "image %d: onnxruntime kept %d rows, MXNet %d (or their scores differ)" % (b, len(o), len(t))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--calib-images", type=int, default=16)
    parser.add_argument("--calib-mode", choices=["naive", "entropy"], default="naive")
    parser.add_argument("--networks", nargs="+", default=[n[0] for n in NETWORKS])
    parser.add_argument("--no-onnx", action="store_true", help="leave out the onnxruntime column")
    parser.add_argument("--no-gluoncv", action="store_true", help="leave out the GluonCV fp32 column")
    args = parser.parse_args()
    have, lack = cpu_flags()
    print("OMP_NUM_THREADS=%s, mxnet %s; CPU flags: %s; lacks: %s"
          % (os.environ.get("OMP_NUM_THREADS"), mx.__version__, " ".join(have) or "-", " ".join(lack) or "-"))
    print("load average at start: %s" % open("/proc/loadavg").read().strip())
    rng = np.random.default_rng(0)
    rows = []
    tmp = tempfile.TemporaryDirectory()
    for label, network, size, classes in (n for n in NETWORKS if n[0] in args.networks):
        meta, symbol, arg, aux = random_model(network, size, classes, rng)
        calibration = Calibration(data=CALIB_DIR, images=args.calib_images, mode=args.calib_mode)
        qsym, qarg, qaux, _ = quantize_graph(symbol, arg, aux, meta, calibration)
        onnx_model = None
        if not args.no_onnx:
            path = os.path.join(tmp.name, network + ".onnx")
            export_onnx(symbol, arg, aux, meta, path)
            onnx_model = OnnxDetectionModel(path)
        gluon_net = None
        if not args.no_gluoncv and label in GLUONCV_PEER:
            gluon_net = gluoncv_ssd_net(os.path.join(tmp.name, GLUONCV_PEER[label] + ".params"), "trained-like")
        for batch in args.batches:
            shapes = SSDFamily().inference_shapes(meta, batch)
            x_np = np.random.RandomState(0).normal(size=shapes[0][1]).astype(np.float32)
            x = mx.nd.array(x_np)
            mods = [bind_inference(s, a, b, shapes, [mx.cpu()]) for s, a, b in ((symbol, arg, aux), (qsym, qarg, qaux))]

            def run(mod):
                mod.forward(mx.io.DataBatch(data=[x]), is_train=False)
                return mod.get_outputs()[0].asnumpy()
            fns = [lambda: run(mods[0]), lambda: run(mods[1])]
            if onnx_model is not None:
                check_same_detections(onnx_model.run(x_np), run(mods[0]))
                fns.append(lambda: onnx_model.run(x_np))
            gluon_at = None
            if gluon_net is not None:
                gluon_at = len(fns)
                fns.append(lambda: [o.wait_to_read() for o in gluon_net(x)])
            times = interleaved_median_wall_cpu_ms(fns, args.repeat, warmup=2)
            gluon = times.pop(gluon_at) if gluon_at is not None else None
            rows.append((label, batch, len(quantized_layers(qsym)), times, gluon))
    onnx_head = "" if args.no_onnx else " onnx wall ms | onnx/fp32 wall | onnx CPU ms | onnx/fp32 CPU |"
    gluon_head = "" if args.no_gluoncv else " GluonCV fp32 wall ms | int8/GluonCV wall | GluonCV fp32 CPU ms |"
    print("| network | batch | int8 convolutions | fp32 wall ms | int8 wall ms | int8/fp32 wall | fp32 CPU ms "
          "| int8 CPU ms | int8/fp32 CPU |" + onnx_head + gluon_head)
    print("|---|---|---|---|---|---|---|---|---|" + ("" if args.no_onnx else "---|---|---|---|")
          + ("" if args.no_gluoncv else "---|---|---|"))
    for label, batch, layers, times, gluon in rows:
        (fp_ms, fp_cpu), (q_ms, q_cpu) = times[:2]
        line = ("| %s | %d | %d | %.1f | %.1f | %.2f | %.1f | %.1f | %.2f |"
                % (label, batch, layers, fp_ms, q_ms, q_ms / fp_ms, fp_cpu, q_cpu, q_cpu / fp_cpu))
        if len(times) > 2:
            o_ms, o_cpu = times[2]
            line += " %.1f | %.2f | %.1f | %.2f |" % (o_ms, o_ms / fp_ms, o_cpu, o_cpu / fp_cpu)
        if not args.no_gluoncv:
            line += " %.1f | %.2f | %.1f |" % (gluon[0], q_ms / gluon[0], gluon[1]) if gluon else " - | - | - |"
        print(line)
    print("load average at end: %s" % open("/proc/loadavg").read().strip())


if __name__ == "__main__":
    main()
