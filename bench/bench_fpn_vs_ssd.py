"""FPN vs SSD under the same CPU-time budget on the synthetic shapes dataset: VOC07 mAP side by side,
training and inference images/s.

Each detector is trained from scratch with its preset (``fpn_resnet18_synthetic``: fpn_resnet18, resize
192/256, SGD, batch 4; ``lite_256_synthetic``: the lite SSD at 256, Adam, batch 16) until the
process CPU time spent on it (``time.process_time()``: all threads, data loading included) reaches
``--budget`` seconds. The preset's schedule (warm-up, cosine) is compressed to the iterations that fit
the budget: a few calibration iterations (counted in the budget) give the CPU seconds per iteration,
hence ``N``; the cosine then runs over ``N`` updates with the preset's warm-up length in iterations
(capped at ``N / 5``). Training stops at the budget or after ``N`` updates, whichever is first.

Graphs, iterators, metric and initialisation come from :mod:`ssdkit.api.family` exactly as
``train.py`` builds them; the loop is ``ssdkit.engine.trainer.fit``'s step (forward_backward, update,
metric, finiteness check) without checkpoints. Then the inference graph runs over the test split:
VOC07 mAP (IoU 0.5, the ``evaluate.py`` metric) and inference images/s, both end to end (data
loading included) and for the forward pass alone.

Usage::

    python tools/make_synthetic_dataset.py data/synthetic --num-train 1000 --num-test 300 --seed 0
    python bench/bench_fpn_vs_ssd.py --root data/synthetic --budget 240 --threads 2
"""
import argparse
import dataclasses
import json
import math
import os
import time
import warnings


def _parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="data/synthetic",
                        help="synthetic dataset (tools/make_synthetic_dataset.py)")
    parser.add_argument("--budget", type=float, default=240.0, help="CPU seconds of training per detector")
    parser.add_argument("--presets", nargs="+", default=["fpn_resnet18_synthetic", "lite_256_synthetic"])
    parser.add_argument("--val-images", type=int, default=0, help="evaluate on the first N test images (0: all)")
    parser.add_argument("--calibrate", type=int, default=3, help="iterations timed to size the schedule")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS")
    parser.add_argument("--workers", type=int, default=2, help="data loading threads")
    parser.add_argument("--json", default=None, help="also write the results here")
    return parser.parse_args()


def _cpu():
    return time.process_time()


def run_preset(name, args):
    import mxnet as mx
    import numpy as np

    from ssdkit.api.data import class_names_of, load_split
    from ssdkit.api.family import family_of, make_iterator
    from ssdkit.config import apply_overrides, load_config
    from ssdkit.engine.evaluator import bind_inference
    from ssdkit.engine.schedule import build_lr_scheduler
    from ssdkit.metrics.voc import VOCMeanAP

    config = apply_overrides(load_config(name), {"data.root": os.path.join(args.root, "VOCdevkit"),
                                                 "data.val": ["2007/test"],  # score on the test split
                                                 "data.num_workers": args.workers})
    family = family_of(config)
    train_set, val_set = load_split(config, "train"), load_split(config, "val")
    if args.val_images:
        val_set = dataclasses.replace(val_set, records=list(val_set.records)[:args.val_images])
    class_names = class_names_of(config, train_set)
    train_sym, infer_sym = family.symbols(config, len(class_names))
    train_iter = make_iterator(config, "train", train_set)
    mx.random.seed(config.runtime.seed)
    mod = mx.mod.Module(train_sym, data_names=list(family.data_names), label_names=list(family.label_names),
                        context=[mx.cpu()])
    mod.bind(data_shapes=train_iter.provide_data, label_shapes=train_iter.provide_label, for_training=True)
    mod.init_params(initializer=family.initializer(len(class_names)))
    solver = config.solver
    warmup = solver.warmup_iters or int(round(solver.warmup_epochs * train_iter.num_batches))

    def make_optimizer(total):
        s = dataclasses.replace(solver, epochs=1, warmup_epochs=0.0, warmup_iters=max(1, min(warmup, total // 5)))
        return mx.optimizer.create(s.optimizer, learning_rate=s.lr, wd=s.wd,
                                   lr_scheduler=build_lr_scheduler(s, total),
                                   **({"momentum": s.momentum} if s.optimizer in ("sgd", "nag") else {}))

    metric = family.train_metric()
    cpu0, wall0 = _cpu(), time.time()
    batches = iter(())
    done, images, total, epochs, started_epoch = 0, 0, None, 0, False
    # calibration with a throw-away optimizer state is not wanted: the calibration steps are real
    # updates, made at the start of the compressed schedule (warm-up lr), sized by a first guess
    with warnings.catch_warnings():   # losses are normalised per batch already (as in fit)
        warnings.filterwarnings("ignore", message="Optimizer created manually outside Module")
        mod.init_optimizer(optimizer=make_optimizer(10 ** 6))
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            if epochs and not started_epoch:
                raise SystemExit("%s: the training split has fewer images than one batch" % name)
            started_epoch = False
            train_iter.reset()
            batches = iter(train_iter)
            epochs += 1
            continue
        started_epoch = True
        mod.forward_backward(batch)
        mod.update()
        mod.update_metric(metric, batch.label)
        values = metric.get()[1]
        if not all(math.isfinite(float(v)) for v in np.atleast_1d(values)):
            raise RuntimeError("%s: non-finite loss at iteration %d: %s" % (name, done, metric.get()))
        done += 1
        images += batch.data[0].shape[0] - (batch.pad or 0)
        used = _cpu() - cpu0
        if done == args.calibrate:
            total = max(done + 1, int(args.budget / (used / done)))
            optimizer = make_optimizer(total)
            optimizer.num_update = done               # continue the schedule after the calibration steps
            mod._optimizer.lr_scheduler = optimizer.lr_scheduler
        if used >= args.budget or (total is not None and done >= total):
            break
    train_cpu, train_wall = _cpu() - cpu0, time.time() - wall0
    names, values = metric.get()
    arg, aux = mod.get_params()
    result = {"preset": name, "network": config.model.network, "family": family.name,
              "batch_size": config.data.batch_size, "iterations": done, "planned_iterations": total,
              "epochs_started": epochs, "train_images": images, "train_cpu_s": round(train_cpu, 1),
              "train_wall_s": round(train_wall, 1), "train_images_per_s": round(images / train_wall, 2),
              "train_images_per_cpu_s": round(images / train_cpu, 2),
              "final_losses": {str(n): round(float(v), 4) for n, v in zip(names, values)}}

    val_iter = make_iterator(config, "val", val_set)
    infer = bind_inference(infer_sym, arg, aux, val_iter.provide_data, [mx.cpu()])
    voc07 = VOCMeanAP(class_names, iou_thresh=config.eval.iou_thresh, use_07_metric=True)
    forward_s, seen, wall0 = 0.0, 0, time.time()
    for batch in val_iter:
        tic = time.time()
        infer.forward(mx.io.DataBatch(data=batch.data), is_train=False)
        dets = infer.get_outputs()[0].asnumpy()
        forward_s += time.time() - tic
        keep = dets.shape[0] - (batch.pad or 0)
        labels = family.metric_labels(batch.label[0].asnumpy()[:keep], batch)
        dets = dets[:keep]
        dets = np.where((dets[:, :, 1] >= config.eval.score_thresh)[:, :, None], dets, -1.0)
        voc07.update(dets, labels)
        seen += keep
    eval_wall = time.time() - wall0
    result.update({"val_images": seen, "voc07_mAP": round(float(voc07.get()[1][-1]), 4),
                   "infer_images_per_s": round(seen / eval_wall, 2),
                   "infer_forward_images_per_s": round(seen / forward_s, 2),
                   "infer_input": list(val_iter.provide_data[0].shape[1:])})
    return result


def main():
    args = _parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import ssdkit.ops  # noqa: F401  (loads the operators after OMP_NUM_THREADS is set)

    if not os.path.exists(os.path.join(args.root, "classes.txt")):
        raise SystemExit("no synthetic dataset at %s; make it with: python tools/make_synthetic_dataset.py %s "
                         "--num-train 1000 --num-test 300 --seed 0" % (args.root, args.root))
    load = os.getloadavg()
    print("load average before: %.2f %.2f %.2f on %d cores" % (load + (os.cpu_count(),)))
    results = []
    for name in args.presets:
        result = run_preset(name, args)
        results.append(result)
        print(json.dumps(result), flush=True)
    load = os.getloadavg()
    print("load average after: %.2f %.2f %.2f" % load)
    header = ("preset", "iterations", "train_images", "train_cpu_s", "train_wall_s", "train_images_per_s",
              "voc07_mAP", "infer_images_per_s", "infer_forward_images_per_s")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in results:
        print("| " + " | ".join(str(r[k]) for k in header) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
