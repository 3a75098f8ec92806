"""Training images/s: ssdkit (Module + FolderDetIter) vs a GluonCV ``train_ssd.py``-style loop.

``--model mobilenet512`` (default): both sides train SSD512-MobileNet1.0 (GluonCV
``ssd_512_mobilenet1.0_voc``, 20 classes, 6132 anchors; ssdkit
``get_symbol_train(**ssdkit.weights.zoo_config(name))``, i.e. the ``mobilenet`` @512 preset) from
the same random weights (GluonCV's initialisation imported with ``ssdkit.weights.import_ssd``).
``--model lite256``: the main job's network, the ``lite`` body with its extra layers at 256², 6
classes, 4 anchors per location (5440): GluonCV's ``SSD(network=None, features=...)`` gets the very
same body symbol as a SymbolBlock and adds its own heads and anchors; each side starts from its
own random weights. Both in this process on the CPU, on the same synthetic JPEG images, at the
same batch size, with SGD (lr 1e-3, momentum 0.9, wd 5e-4) and the same number of data workers.

* ssdkit: ``FolderDetIter`` (SSD augmentation: expand, IoU crop, mirror, photometric; worker
  threads) feeding an ``mx.mod.Module`` bound and initialised as ``ssdkit.engine.trainer.fit``
  does; each step is ``fit``'s inner loop replicated exactly: ``forward_backward``, ``update``,
  ``update_metric(MultiBoxMetric)``, ``metric.get()`` and the finiteness check. Targets
  (``MultiBoxTarget`` with hard-negative mining) are computed inside the graph.
* GluonCV: ``SSDDefaultTrainTransform(width, height, anchors)`` (same augmentation family, targets
  computed per image in the workers) in a ``gluon.data.DataLoader`` with worker processes and
  ``batchify_fn=Tuple(Stack(), Stack(), Stack())``; the net is hybridized (static_alloc,
  static_shape); each step is ``autograd.record`` -> ``net(x)`` -> ``SSDMultiBoxLoss`` ->
  ``backward`` -> ``trainer.step(1)`` -> the two loss metrics, as in ``train_ssd.py``.

Three measurements per batch size, each the median images/s over several timed windows:

* ``end-to-end``: data loading + training step;
* ``compute``: the training step on one fixed in-memory batch;
* ``data``: the loader alone.

Windows of the four (side, measurement) pairs of the first two run in turn, round after round,
so machine load drifting over time hits all of them alike; the ``data`` windows follow.

``OMP_NUM_THREADS`` is set by this script (``--threads``) before mxnet is imported.
``--profile N`` also prints MXNet's per-operator aggregate times for N compute steps of each
framework (with ``MXNET_EXEC_BULK_EXEC_TRAIN=0`` so fused segments are split into operators).

``--model fpn_resnet50``: ssdkit's ``fpn_resnet50`` with GluonCV's conventions vs GluonCV
``faster_rcnn_fpn_resnet50_v1b_coco`` (identical random weights, :mod:`fpn_peer`): the ``compute``
measurement only, one training step on the same in-memory images at ``--fpn-size`` (square, no resize),
batch 1 (GluonCV's per-device FPN batch), the GluonCV step as in its ``train_faster_rcnn.py``
(``FasterRCNNDefaultTrainTransform`` RPN targets per image, the net's RCNN sampler and targets, the four
losses, ``trainer.step``), ssdkit's as ``forward_backward`` + ``update`` (targets inside the graph);
alternating steps, medians over ``--windows`` rounds.

Usage::

    python bench/bench_train.py --batch-sizes 8 16 --iters 3 --windows 3
    python bench/bench_train.py --model fpn_resnet50 --fpn-size 512 --windows 5
"""
import argparse
import math
import os
import statistics
import tempfile
import time

LR, MOMENTUM, WD = 1e-3, 0.9, 5e-4

# --model: the zoo network (identical weights on both sides) or the main job's network
ZOO_NAME = "ssd_512_mobilenet1.0_voc"
LITE_SIZE = 256
LITE_CLASSES = ("circle", "ring", "box", "triangle", "star", "cross")  # the synthetic shapes
LITE_PIXEL_SIZES = (12.8, 46.08, 92.16, 166.4, 217.6)  # GluonCV-style sizes: the lite preset's
LITE_STEPS = (8, 16, 32, 64)                           # per-layer smallest sizes, then 0.85


def _lite_config():
    """The main job's network (``lite`` body, 4 feature layers) with GluonCV's anchor layout
    (sizes (s_k, sqrt(s_k s_k+1)) and ratios 1, 2, 1/2: 4 anchors per location) so both sides
    build the same graph."""
    from ssdkit.symbol.symbol_factory import get_config, gluoncv_sizes

    return get_config("lite", LITE_SIZE, sizes=gluoncv_sizes(LITE_PIXEL_SIZES, LITE_SIZE),
                      ratios=[[1, 2, 0.5]] * 4, steps=[s / LITE_SIZE for s in LITE_STEPS])


def _lite_feature_symbols():
    """ssdkit's lite body and extra layers: the four feature maps of the ssdkit side's graph.
    Built outside any Gluon name scope, so the layer names are the ssdkit ones."""
    from ssdkit.symbol import lite
    from ssdkit.symbol.common import multi_layer_feature

    cfg = _lite_config()
    return multi_layer_feature(lite.get_symbol(), cfg["from_layers"], cfg["num_filters"],
                               cfg["strides"], cfg["pads"], use_bn=cfg["extra_bn"])


def _gluoncv_net(model):
    import mxnet as mx
    from gluoncv import model_zoo
    from gluoncv.model_zoo.ssd.ssd import SSD

    if model == "mobilenet512":
        return model_zoo.get_model(ZOO_NAME, pretrained=False, pretrained_base=False)
    layers = _lite_feature_symbols()
    # GluonCV's SSD(network=None) calls features(...) for a block returning every feature map
    return SSD(network=None, base_size=LITE_SIZE,
               features=lambda **_: mx.gluon.SymbolBlock(outputs=layers, inputs=mx.sym.var("data")),
               num_filters=None, sizes=list(LITE_PIXEL_SIZES), ratios=[[1, 2, 0.5]] * 4,
               steps=list(LITE_STEPS), classes=LITE_CLASSES)


MODELS = {"mobilenet512": 512, "lite256": LITE_SIZE, "fpn_resnet50": 0}  # name -> input size (FPN: --fpn-size)


def _parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="mobilenet512", choices=sorted(MODELS),
                        help="mobilenet512: GluonCV's ssd_512_mobilenet1.0_voc, identical weights; "
                             "lite256: the main job's network (random weights on each side)")
    parser.add_argument("--fpn-size", type=int, default=512, help="square input of --model fpn_resnet50")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8])
    parser.add_argument("--images", type=int, default=256, help="synthetic training images")
    parser.add_argument("--iters", type=int, default=3, help="batches per timed window")
    parser.add_argument("--windows", type=int, default=3, help="timed windows (rounds) per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each kind first")
    parser.add_argument("--workers", type=int, default=2, help="data workers (threads / processes)")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS")
    parser.add_argument("--skip", nargs="*", default=[], choices=["e2e", "compute", "data"])
    parser.add_argument("--profile", type=int, default=0, help="profile N compute steps of each side")
    parser.add_argument("--root", default=None, help="dataset folder (default: a temporary one)")
    return parser.parse_args()


# ----------------------------------------------------------------------------------------------
# the two training setups


def _records(root, count):
    from ssdkit.dataset.synthetic import make_synthetic_dataset
    from ssdkit.dataset.voc import load_voc

    if not os.path.isdir(os.path.join(root, "VOCdevkit")):
        make_synthetic_dataset(root, num_train=count, num_test=0)
    # the synthetic classes are ids 0..5 of the 20-class VOC-sized heads
    dataset = load_voc(os.path.join(root, "VOCdevkit"), "2007/trainval",
                       class_names=os.path.join(root, "classes.txt"))
    return list(dataset.records)


def _endless(start_epoch):
    """Yield batches forever, starting a new epoch (``start_epoch()`` -> iterable) when one ends."""
    while True:
        for batch in start_epoch():
            yield batch


class SsdkitSide:
    """ssdkit's training path: FolderDetIter + Module as ``ssdkit.engine.trainer.fit`` runs it."""

    name = "ssdkit"

    def __init__(self, records, batch_size, workers, params_path, model):
        import mxnet as mx

        from ssdkit.api.family import SSDFamily
        from ssdkit.dataset.augment import Augmentation, Normalization
        from ssdkit.dataset.folder_iter import FolderDetIter
        from ssdkit.engine.ssd_metric import MultiBoxMetric
        from ssdkit.symbol.common import he_initializer, multibox_initializer
        from ssdkit.symbol.symbol_builder import get_symbol_train
        from ssdkit.weights import import_ssd, zoo_config

        size = MODELS[model]
        if model == "mobilenet512":
            self.symbol = get_symbol_train(**zoo_config(ZOO_NAME))
            arg, aux = import_ssd(params_path, ZOO_NAME)
        else:
            self.symbol = get_symbol_train(num_classes=len(LITE_CLASSES), **_lite_config())
            arg, aux = None, None
        self.iter = FolderDetIter(records, batch_size=batch_size, data_shape=(3, size, size),
                                  augment=Augmentation(), normalization=Normalization(), shuffle=True,
                                  seed=0, num_workers=workers, last_batch="discard")
        # as fit binds it: only the outputs training needs (no det_out)
        graph = mx.sym.Group([self.symbol[name] for name in SSDFamily.train_outputs])
        mod = mx.mod.Module(graph, data_names=["data"], label_names=["label"], context=[mx.cpu()])
        mod.bind(data_shapes=self.iter.provide_data, label_shapes=self.iter.provide_label,
                 for_training=True)
        init = he_initializer() if arg is not None else multibox_initializer(len(LITE_CLASSES))
        mod.init_params(initializer=init,
                        arg_params=arg, aux_params=aux, allow_missing=True, allow_extra=True,
                        force_init=True)
        optimizer = mx.optimizer.create("sgd", learning_rate=LR, wd=WD, momentum=MOMENTUM,
                                        rescale_grad=1.0)
        mod.init_optimizer(kvstore=None, optimizer=optimizer)
        self.mod, self.metric = mod, MultiBoxMetric()
        self.batches = _endless(self._epoch)
        self.fixed = next(self.batches)

    def _epoch(self):
        self.iter.reset()
        return self.iter

    def step(self, batch):
        """One iteration of ``fit``'s inner loop."""
        self.mod.forward_backward(batch)
        self.mod.update()
        self.mod.update_metric(self.metric, batch.label)
        names, values = self.metric.get()
        if not all(math.isfinite(float(v)) for v in values):
            raise RuntimeError("non-finite ssdkit loss %s" % (values,))

    @staticmethod
    def wait(batch):
        batch.data[0].wait_to_read()

    def stats(self):
        arg_shapes, out_shapes, aux_shapes = self.symbol.infer_shape(**dict(
            self.iter.provide_data + self.iter.provide_label))
        names = self.symbol.list_arguments()
        params = sum(math.prod(s) for n, s in zip(names, arg_shapes) if n not in ("data", "label"))
        params += sum(math.prod(s) for s in aux_shapes)
        return out_shapes[0][2], params  # cls_prob (B, C+1, N)

    def close(self):
        self.iter.close()


class _VOCLike:
    """GluonCV VOCDetection item layout over ssdkit records: ``(HWC RGB uint8 NDArray,
    (K, 6) float32 [xmin, ymin, xmax, ymax, cls, difficult] pixels)``, decoded by ``mx.image.imread``."""

    def __init__(self, records):
        self.records = records

    def __len__(self):
        return len(self.records)

    def __getitem__(self, idx):
        import mxnet as mx
        import numpy as np

        r = self.records[idx]
        label = np.concatenate([r.boxes, r.classes[:, None], r.difficult[:, None]], axis=1)
        return mx.image.imread(r.path, 1), label.astype(np.float32)


class GluonCVSide:
    """A ``train_ssd.py``-style loop: SSDDefaultTrainTransform + DataLoader, hybridized net,
    autograd + SSDMultiBoxLoss + Trainer."""

    name = "gluoncv"

    def __init__(self, records, batch_size, workers, params_path, model):
        import mxnet as mx
        from gluoncv.data.batchify import Stack, Tuple
        from gluoncv.data.transforms.presets.ssd import SSDDefaultTrainTransform
        from gluoncv.loss import SSDMultiBoxLoss

        size = MODELS[model]
        net = _gluoncv_net(model)
        net.initialize()
        with mx.autograd.train_mode():
            _, _, anchors = net(mx.nd.zeros((1, 3, size, size)))
        net.save_parameters(params_path)   # ssdkit starts from the same weights (zoo model)
        net.hybridize(static_alloc=True, static_shape=True)
        dataset = mx.gluon.data.SimpleDataset(_VOCLike(records)).transform(
            SSDDefaultTrainTransform(size, size, anchors))
        self.loader = mx.gluon.data.DataLoader(dataset, batch_size, shuffle=True,
                                               batchify_fn=Tuple(Stack(), Stack(), Stack()),
                                               last_batch="rollover", num_workers=workers)
        self.net, self.anchors = net, anchors
        self.trainer = mx.gluon.Trainer(net.collect_params(), "sgd",
                                        {"learning_rate": LR, "wd": WD, "momentum": MOMENTUM})
        self.loss = SSDMultiBoxLoss()
        self.ce_metric = mx.metric.Loss("CrossEntropy")
        self.smoothl1_metric = mx.metric.Loss("SmoothL1")
        self.batches = _endless(lambda: self.loader)
        self.fixed = next(self.batches)

    def step(self, batch):
        import mxnet as mx

        # split_and_load over one context, as train_ssd.py does (moves cpu_shared -> cpu)
        data, cls_targets, box_targets = [mx.gluon.utils.split_and_load(x, ctx_list=[mx.cpu()])[0]
                                          for x in batch]
        n = data.shape[0]
        with mx.autograd.record():
            cls_pred, box_pred, _ = self.net(data)
            sum_loss, cls_loss, box_loss = self.loss([cls_pred], [box_pred], [cls_targets], [box_targets])
            mx.autograd.backward(sum_loss)
        self.trainer.step(1)
        self.ce_metric.update(0, [v * n for v in cls_loss])
        self.smoothl1_metric.update(0, [v * n for v in box_loss])

    @staticmethod
    def wait(batch):
        batch[0].wait_to_read()

    def stats(self):
        # anchor_generators.*.anchors are constant anchor tables stored as parameters (no gradient);
        # ssdkit computes them with MultiBoxPrior instead, so they are left out of the count
        constant = set(self.net.anchor_generators.collect_params())
        params = sum(p.data().size for name, p in self.net.collect_params().items() if name not in constant)
        return self.anchors.shape[1], params

    def close(self):
        pass


# ----------------------------------------------------------------------------------------------
# timing


def _timed(fn, count):
    """Seconds for ``count`` calls, including the asynchronous work they queued: both loops only
    wait for forward outputs (metrics), so backward and update of the last step would otherwise
    spill into the next window, which belongs to the other side."""
    import mxnet as mx

    start = time.perf_counter()
    for _ in range(count):
        fn()
    mx.nd.waitall()
    return time.perf_counter() - start


def _interleaved(fns, batch_size, args, warmup=1):
    """Images/s of each function over ``args.windows`` interleaved windows of ``args.iters`` calls."""
    for fn in fns:
        _timed(fn, warmup)
    rates = [[] for _ in fns]
    for _ in range(args.windows):
        for fn, r in zip(fns, rates):
            r.append(args.iters * batch_size / _timed(fn, args.iters))
    return rates


def _measure(sides, batch_size, args):
    """{measurement: [median images/s per side]}; every window's rate is printed too.

    End-to-end and compute windows of both sides run in turn within each round, so that load from
    other processes on the shared cores hits all four alike. The loaders deliver batches far faster
    than a training step consumes them (see ``data``), so their prefetch queues are full at the start
    of every window in steady state as well: interleaving does not favour either side.
    """
    fns, names = [], []
    if "e2e" not in args.skip:
        fns += [lambda s=s: s.step(next(s.batches)) for s in sides]
        names.append("end-to-end")
    if "compute" not in args.skip:
        fns += [lambda s=s: s.step(s.fixed) for s in sides]
        names.append("compute")
    rates = _interleaved(fns, batch_size, args, warmup=args.warmup) if fns else []
    if "data" not in args.skip:
        data_args = argparse.Namespace(**vars(args))
        data_args.iters = max(args.iters, 8)
        rates += _interleaved([lambda s=s: s.wait(next(s.batches)) for s in sides], batch_size,
                              data_args, warmup=4)
        names.append("data")
    results = {}
    for k, name in enumerate(names):
        for side, r in zip(sides, rates[2 * k:2 * k + 2]):
            print("  %-10s %-8s windows: %s img/s" % (name, side.name, " ".join("%.2f" % v for v in r)))
        results[name] = [statistics.median(r) for r in rates[2 * k:2 * k + 2]]
    return results


def _profile(sides, steps):
    import mxnet as mx

    for side in sides:
        side.step(side.fixed)
        mx.nd.waitall()
        mx.profiler.set_config(profile_all=True, aggregate_stats=True,
                               filename=os.path.join(tempfile.gettempdir(), "bench_train_profile.json"))
        mx.profiler.set_state("run")
        for _ in range(steps):
            side.step(side.fixed)
        mx.nd.waitall()
        mx.profiler.set_state("stop")
        print("\n==== %s: %d compute steps, operators sorted by total time ====" % (side.name, steps))
        print(mx.profiler.dumps(reset=True, format="table", sort_by="total", ascending=False))


def _fpn_main(args):
    """``--model fpn_resnet50``: training steps/s of both sides (see the module docstring)."""
    import numpy as np

    from fpn_peer import gluoncv_fpn, training_steps
    from timing import interleaved_median_wall_cpu_ms

    size = args.fpn_size
    print("OMP_NUM_THREADS=%s, FPN ResNet-50 at %dx%d, batch 1, load average %s"
          % (os.environ["OMP_NUM_THREADS"], size, size, " ".join("%.2f" % v for v in os.getloadavg())))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fpn.params")
        net = gluoncv_fpn(path, heads="random")
        net.hybridize()                                  # train_faster_rcnn.py: hybridize(static_alloc=False)
        rng = np.random.RandomState(0)
        images = rng.randint(0, 256, (1, size, size, 3)).astype(np.uint8)
        s = size / 256.0
        labels = (np.array([[[20, 30, 120, 140, 3], [100, 100, 200, 230, 7], [10, 150, 60, 250, 0]]], np.float32)
                  * np.array([s, s, s, s, 1], np.float32))
        ours, theirs = training_steps(path, net, images, labels)
        (ours_ms, ours_cpu), (theirs_ms, theirs_cpu) = interleaved_median_wall_cpu_ms([ours, theirs], args.windows,
                                                                                      warmup=args.warmup)
    print("| input | ssdkit img/s | GluonCV img/s | ssdkit / GluonCV (wall) | ssdkit CPU s/img | GluonCV CPU s/img "
          "| ssdkit / GluonCV (CPU) |")
    print("|---|---|---|---|---|---|---|")
    print("| %dx%d | %.3f | %.3f | %.2f× | %.2f | %.2f | %.2f× |"
          % (size, size, 1e3 / ours_ms, 1e3 / theirs_ms, theirs_ms / ours_ms, ours_cpu / 1e3, theirs_cpu / 1e3,
             theirs_cpu / ours_cpu))
    print("load average at the end: %s" % " ".join("%.2f" % v for v in os.getloadavg()))


def main():
    args = _parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)   # before mxnet is imported
    if args.model == "fpn_resnet50":
        return _fpn_main(args)
    if args.profile:
        os.environ["MXNET_EXEC_BULK_EXEC_TRAIN"] = "0"
    import mxnet as mx

    root = args.root or tempfile.mkdtemp(prefix="ssdkit_bench_train_")
    records = _records(root, args.images)
    params_path = os.path.join(root, args.model + ".params")
    print("mxnet %s, OMP_NUM_THREADS=%s, %d synthetic images, model %s, %d data workers, load average %s"
          % (mx.__version__, os.environ["OMP_NUM_THREADS"], len(records), args.model, args.workers,
             " ".join("%.2f" % v for v in os.getloadavg())))
    table = []
    for batch_size in args.batch_sizes:
        gluoncv = GluonCVSide(records, batch_size, args.workers, params_path, args.model)
        ssdkit = SsdkitSide(records, batch_size, args.workers, params_path, args.model)
        sides = [ssdkit, gluoncv]
        if batch_size == args.batch_sizes[0]:
            for side in sides:
                anchors, params = side.stats()
                print("%-8s anchors %d, parameters %d" % (side.name, anchors, params))
        for measurement, (ours, theirs) in _measure(sides, batch_size, args).items():
            table.append((batch_size, measurement, ours, theirs))
            print("batch %d %-10s ssdkit %.2f img/s, gluoncv %.2f img/s, ratio %.2f (load %.2f)"
                  % (batch_size, measurement, ours, theirs, ours / theirs, os.getloadavg()[0]), flush=True)
        if args.profile:
            _profile(sides, args.profile)
        for side in sides:
            side.close()
    print("\n| batch | measurement | ssdkit img/s | GluonCV img/s | ssdkit / GluonCV |")
    print("|---|---|---|---|---|")
    for batch_size, measurement, ours, theirs in table:
        print("| %d | %s | %.2f | %.2f | %.2f× |" % (batch_size, measurement, ours, theirs, ours / theirs))
    print("load average at the end: %s" % " ".join("%.2f" % v for v in os.getloadavg()))


if __name__ == "__main__":
    main()
