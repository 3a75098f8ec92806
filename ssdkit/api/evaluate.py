"""Evaluate a trained or deployed detector: VOC07 / VOC12 / COCO mAP, per-class AP, PR curves."""
import dataclasses
import json
import logging
import os

import numpy as np

from ssdkit.api.builtin_data import with_builtin_data
from ssdkit.api.data import load_split
from ssdkit.api.family import family_of, inference_size, make_iterator
from ssdkit.api.inference import InferenceOverrides
from ssdkit.api.model_files import load_inference_model
from ssdkit.dataset.collection import resolve_class_names
from ssdkit.engine import atomic
from ssdkit.engine.evaluator import bind_inference, iterate_outputs
from ssdkit.engine.trainer import make_contexts
from ssdkit.errors import InputError, user_input
from ssdkit.masks import encode_rle, has_masks, paste_detections
from ssdkit.metrics.coco import COCOEvaluator
from ssdkit.metrics.voc import VOCMeanAP
from ssdkit.visualize import format_ap_table, plot_pr_curves

log = logging.getLogger("ssdkit.evaluate")


def evaluate_detector(config, prefix, *, epoch=None, deploy=False, onnx=False, output_dir=None, progress=True,
                      inference=None, expect=None, builtin=None):
    """Run the model of ``prefix`` over ``config.data.val`` and compute every metric.

    Parameters
    ----------
    config : Config; ``data.*`` says where the validation images are; ``eval.iou_thresh`` is the VOC
        IoU threshold; ``eval.score_thresh`` drops detections below it; ``model.test_shape`` (SSD)
        the input size; the network, its trained input size (SSD ``data_shape``, FPN resize and
        ``[fpn]`` settings) and class names come from the model's meta file
    prefix, epoch, deploy : see :func:`ssdkit.api.model_files.load_inference_model`
    onnx : bool, ``prefix`` is an ONNX file (``deploy.py --format onnx``) run by onnxruntime
        (:class:`~ssdkit.api.onnx_runtime.OnnxDetectionModel`); it runs at its exported input size
    output_dir : folder for ``metrics.json``, ``ap_table.txt``, ``pr_curves.png``,
        ``coco_results.json`` and, for a mask model, ``coco_segm_results.json`` (RLE ``segmentation``)
        and ``coco_ground_truth.json`` (the boxes and masks it was compared with; pycocotools on these files
        gives the same numbers) (default ``<prefix>-eval``; ONNX: the file name without ``.onnx``, ``-eval``)
    inference : :class:`~ssdkit.api.inference.InferenceOverrides` or None, the model's NMS threshold,
        top-k, score threshold and detection rows to evaluate with instead of its meta's (a given
        ``score_thresh`` also replaces ``eval.score_thresh``)
    expect : dict ``{config key: value}`` or None, model settings the caller names (``evaluate.py
        --network``, ``--data-shape``, ``--resize-short``, ``--resize-long``, ``--class-names``,
        ``--num-class``): evaluation cannot change them, so each must equal the model's
        (:func:`check_expected`)
    builtin : :class:`~ssdkit.api.builtin_data.BuiltinData` or None, the built-in synthetic dataset
        evaluated (its test split) when ``config`` names no data

    Returns
    -------
    dict: ``voc07`` / ``voc12`` mAP, ``per_class`` (name -> VOC07 AP), ``coco`` (AP, AP50, ...; when
    the data are image files), ``coco_segm`` (mask AP, AP50, ...; a mask model on data with instance
    masks), and ``output_dir``.

    A mask model's masks are pasted into each original image (:func:`ssdkit.masks.paste_detections`) and
    compared with the records' masks (:func:`ssdkit.dataset.masks.decode_masks`); its COCO box and mask
    ground truth are the records' own boxes and masks at the original resolution. On data without masks
    only its boxes are evaluated (with a warning).

    Raises
    ------
    ssdkit.errors.UserError before anything runs: missing or unreadable model files, parameters that
    do not fit the meta's graph (:class:`~ssdkit.errors.ParameterMismatchError`), bad evaluation data
    (e.g. a class name the model does not know), bad settings, an ``expect`` value that differs from
    the model's, an override the model cannot honour.
    """
    inference = inference or InferenceOverrides()
    if onnx:
        from ssdkit.api.onnx_runtime import OnnxDetectionModel

        if deploy or epoch is not None:
            raise ValueError("onnx=True takes an ONNX file; deploy and epoch do not apply to it")
        runner = OnnxDetectionModel(prefix, overrides=inference)
        meta = runner.meta
        size = inference_size(meta)
        if config.model.test_shape and config.model.test_shape != size:
            raise InputError("%s runs at %d x %d (its anchors are folded for the exported size); drop "
                             "--test-shape %d or export the model again at that size"
                             % (prefix, size, size, config.model.test_shape))
    else:
        symbol, arg, aux, meta = load_inference_model(prefix, epoch, deploy=deploy, overrides=inference)
    family = family_of(meta)
    class_names = tuple(meta["class_names"])
    check_expected(family, meta, expect or {}, source=prefix if onnx else prefix + "-meta.json")
    if inference.score_thresh is not None:
        config = dataclasses.replace(config, eval=dataclasses.replace(config.eval, score_thresh=inference.score_thresh))
    with user_input():      # the evaluation settings (e.g. test_shape) and data
        config = with_builtin_data(config, builtin)
        config = family.apply_meta(config, meta)
        config = dataclasses.replace(
            config, model=dataclasses.replace(config.model, class_names=class_names),
            data=dataclasses.replace(config.data, mean=tuple(meta["mean"]), std=tuple(meta["std"])))
        val_set = load_split(config, "val")
        if val_set is not None and tuple(val_set.class_names) != class_names:
            raise InputError("the evaluation data's classes %s differ from the model's %s"
                             % (list(val_set.class_names), list(class_names)))
        data_iter = make_iterator(config, "val", val_set)
    mod = runner if onnx else bind_inference(symbol, arg, aux, data_iter.provide_data, make_contexts(config.runtime))

    iou = config.eval.iou_thresh
    voc07 = VOCMeanAP(class_names, iou_thresh=iou, use_07_metric=True)
    voc12 = VOCMeanAP(class_names, iou_thresh=iou, use_07_metric=False)
    segm = has_masks(meta) and val_set is not None and _segm_possible(val_set.records, prefix)
    coco = COCOEvaluator(class_names=class_names, segm=segm) if val_set is not None else None
    seen = 0
    for outputs, labels, _batch in iterate_outputs(mod, data_iter, progress=progress,
                                                   label_transform=family.metric_labels):
        dets = outputs[0]
        keep = dets[:, :, 1] >= config.eval.score_thresh
        dets = np.where(keep[:, :, None], dets, -1.0)
        voc07.update(dets, labels)
        voc12.update(dets, labels)
        if coco is not None:
            records = val_set.records[seen:seen + len(dets)]
            ids, sizes = np.arange(seen, seen + len(dets)), np.array([(r.width, r.height) for r in records])
            if segm:
                rows, masks, gt, gt_masks = _instances(dets, outputs[1], records)
                coco.update(rows, gt, image_ids=ids, image_sizes=sizes, masks=masks, gt_masks=gt_masks)
            else:
                coco.update(dets, labels, image_ids=ids, image_sizes=sizes)
        seen += len(dets)

    out = output_dir or (os.path.splitext(prefix)[0] if onnx else prefix) + "-eval"
    os.makedirs(out, exist_ok=True)
    names07, values07 = voc07.get()
    _, values12 = voc12.get()
    result = {"voc07": float(values07[-1]), "voc12": float(values12[-1]),
              "per_class": {str(n): float(v) for n, v in zip(names07[:-1], values07[:-1])},
              "images": seen, "output_dir": out}
    atomic.write_text(os.path.join(out, "ap_table.txt"), format_ap_table(names07, values07) + "\n")
    plot_pr_curves(os.path.join(out, "pr_curves.png"), voc07.pr_curves(), class_names=class_names,
                   aps=np.asarray(values07[:-1]), title="%s VOC07 mAP %.4f" % (os.path.basename(prefix), result["voc07"]))
    if coco is not None:
        names, values = coco.get()
        result["coco"] = {str(n): float(v) for n, v in zip(names, values)}
        coco.write_results(os.path.join(out, "coco_results.json"))
    if segm:
        names, values = coco.get("segm")
        result["coco_segm"] = {str(n): float(v) for n, v in zip(names, values)}
        coco.write_results(os.path.join(out, "coco_segm_results.json"), "segm")
        coco.write_ground_truth(os.path.join(out, "coco_ground_truth.json"))
    atomic.write_text(os.path.join(out, "metrics.json"), json.dumps(result, indent=2) + "\n")
    log.info("VOC07 mAP %.4f, VOC12 mAP %.4f%s%s", result["voc07"], result["voc12"],
             (", COCO AP %.4f" % result["coco"]["AP"]) if "coco" in result else "",
             (", COCO mask AP %.4f" % result["coco_segm"]["AP"]) if "coco_segm" in result else "")
    return result


def _segm_possible(records, prefix):
    """Whether every evaluation record has instance masks (else a warning: boxes only)."""
    missing = sum(r.masks is None for r in records)
    if missing:
        log.warning("%s is a mask model but %d of the %d evaluation images have no instance masks: mask AP is "
                    "not computed (evaluate on data with masks: COCO segmentation, VOC SegmentationObject PNGs)",
                    prefix, missing, len(records))
    return not missing


def _instances(dets, probs, records):
    """One batch of a mask model for :class:`COCOEvaluator` (segm): per image the kept detection rows
    ``(K_i, 6)`` normalised, their masks pasted into the original image (RLE), the record's label rows
    ``(M_i, 6)`` normalised and its instance masks (RLE)."""
    from ssdkit.dataset.masks import decode_masks

    rows, masks, gt, gt_masks = [], [], [], []
    for det, prob, record in zip(dets, probs, records):
        valid = det[:, 0] >= 0
        rows.append(det[valid])
        masks.append(encode_rle(paste_detections(det[valid], prob[valid], record.width, record.height)))
        gt.append(record.normalized_label())
        with user_input():      # the dataset's mask files
            gt_masks.append(encode_rle(decode_masks(record)))
    return rows, masks, gt, gt_masks


def check_expected(family, meta, expect, *, source):
    """Raise InputError unless every ``{config key: value}`` of ``expect`` equals the model's.

    A key the model's family does not fix (e.g. ``model.data_shape`` of an FPN model) is refused
    too; ``model.test_shape`` (SSD: the evaluation size, honoured by :func:`evaluate_detector`) is not
    checked. ``model.class_names`` may be one entry naming a class file.
    """
    fixed = family.fixed_settings(meta)
    for key, value in expect.items():
        if key == "model.test_shape" and "model.data_shape" in fixed:
            continue
        if key not in fixed:
            raise InputError("%s does not apply to the %s model %s (network %s); drop it"
                             % (_flag(key), family.name.upper(), source, meta["network"]))
        if key == "model.class_names" and len(value) == 1 and os.path.isfile(value[0]):
            value = resolve_class_names(value[0])
        if key == "model.class_names":
            value = tuple(value)
        if value != fixed[key]:
            raise InputError("%s %s differs from the model's %s (%s): evaluation uses the trained model as it "
                             "is; drop the flag or give the prefix of a model trained with it"
                             % (_flag(key), _text(value), _text(fixed[key]), source))


def _flag(key):
    return "--" + {"model.num_classes": "num-class"}.get(key, key.split(".", 1)[1].replace("_", "-"))


def _text(value):
    return ",".join(value) if isinstance(value, tuple) else str(value)
