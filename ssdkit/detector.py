"""Inference API: load a training checkpoint or a deploy model, detect objects, draw them.

    >>> det = ssdkit.Detector("output/ssd")                    # best (else last) epoch
    >>> boxes = det.detect("street.jpg")                        # (K, 6) [cls, score, x1, y1, x2, y2] pixels
    >>> det.save_drawing("street.jpg", boxes, "street_det.png")
    >>> det = ssdkit.Detector("output/deploy/ssd.onnx", onnx=True)  # deploy.py --format onnx, onnxruntime
    >>> inst = ssdkit.Detector("output/mask").detect("street.jpg")   # a mask model (fpn.mask = true):
    >>> inst.rows, inst.masks                                   # ssdkit.masks.Instances, (K, 6) and (K, H, W) bool
"""
import os

import cv2
import mxnet as mx
import numpy as np

from ssdkit.api.data import meta_normalization
from ssdkit.api.family import family_of
from ssdkit.api.inference import InferenceOverrides
from ssdkit.api.model_files import load_inference_model
from ssdkit.dataset.image import load_image_rgb
from ssdkit.engine.evaluator import bind_inference
from ssdkit.errors import InputError, MissingFileError
from ssdkit.masks import MASK_THRESHOLD, Instances, encode_rle, has_masks, paste_detections
from ssdkit.visualize import draw_detections

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class Detector:
    """A detector ready to run.

    Parameters
    ----------
    prefix : str, training prefix (``train.py --prefix``) or deploy prefix with ``deploy=True``
    epoch : int, ``"best"`` or None (best, else last); training prefixes only
    deploy : bool, ``prefix`` is a ``deploy.py --output``
    onnx : bool, ``prefix`` is an ONNX file (``deploy.py --format onnx``) run by onnxruntime on the CPU
        (:mod:`ssdkit.api.onnx_runtime`; SSD models; needs the onnx extra)
    score_thresh : float, detections below it are dropped from the results (after the model's own
        score threshold, which ``inference.score_thresh`` sets)
    ctx : mx.Context (default CPU)
    batch_size : int, images per forward pass in :meth:`detect_many`
    max_detections : int or None, detection rows per image (None: 100 for a training prefix, the deploy
        model's own for a deploy prefix; -1: SSD one per anchor, FPN as trained); the same as
        ``inference.max_detections``
    inference : :class:`ssdkit.api.inference.InferenceOverrides` or None, the model's NMS threshold,
        NMS top-k, score threshold and detection rows to use instead of its meta's (an override the
        model cannot honour, e.g. a top-k for FPN models, raises :class:`ssdkit.errors.InputError`)

    SSD and FPN models are loaded alike; they differ only in :meth:`preprocess` (see
    :mod:`ssdkit.api.family`). Both graphs give boxes normalised to the valid image, scaled to pixels here.
    A mask model (FPN with ``fpn.mask = true``, :attr:`with_masks`) also gives each detection's mask, pasted
    into the original image (:func:`ssdkit.masks.paste_detections`, probability >= ``mask_thresh``).
    Missing model files and parameters that do not fit the meta's graph raise
    :class:`ssdkit.errors.UserError` (see :func:`ssdkit.api.model_files.load_inference_model`).
    """

    def __init__(self, prefix, *, epoch=None, deploy=False, onnx=False, score_thresh=0.5, ctx=None, batch_size=1,
                 max_detections=None, inference=None, mask_thresh=MASK_THRESHOLD):
        inference = inference or InferenceOverrides()
        self.mask_thresh = float(mask_thresh)
        if max_detections is not None and inference.max_detections not in (None, max_detections):
            raise ValueError("max_detections=%r and inference.max_detections=%r differ; give one"
                             % (max_detections, inference.max_detections))
        if onnx and (deploy or epoch is not None):
            raise ValueError("onnx=True takes an ONNX file; deploy and epoch do not apply to it")
        inference = inference.merged(max_detections=max_detections if max_detections is not None
                                     else None if deploy or onnx else 100)
        if onnx:
            self._init_onnx(prefix, inference, ctx, score_thresh, batch_size)
            return
        self.symbol, arg, aux, meta = load_inference_model(prefix, epoch, deploy=deploy, overrides=inference)
        self._set_model_fields(meta, score_thresh, batch_size)
        shapes = self.family.inference_shapes(self.meta, self.batch_size)
        self._mod = bind_inference(self.symbol, arg, aux, shapes, [ctx or mx.cpu()])

    def _init_onnx(self, path, inference, ctx, score_thresh, batch_size):
        from ssdkit.api.onnx_runtime import OnnxDetectionModel

        if ctx is not None and ctx.device_type != "cpu":
            raise InputError("an ONNX model runs on the CPU here (onnxruntime's CPU package); give no ctx")
        self._mod = OnnxDetectionModel(path, overrides=inference)
        self.symbol = None
        self._set_model_fields(self._mod.meta, score_thresh, batch_size)

    def _set_model_fields(self, meta, score_thresh, batch_size):
        """The attributes every model format sets from its meta and the caller's settings."""
        self.meta = meta
        self.family = family_of(meta)
        self.class_names = tuple(meta["class_names"])
        # SSD training input side (inputs run at ssdkit.api.ssd.inference_size(meta); FPN: meta["image_shape"])
        self.data_shape = meta.get("data_shape")
        self.normalization = meta_normalization(meta)
        self.score_thresh = float(score_thresh)
        self.batch_size = int(batch_size)
        self.with_masks = has_masks(meta)

    def preprocess(self, image):
        """The validation transform of one ``(H, W, 3)`` uint8 RGB image.

        Returns
        -------
        SSD: ``(3, S, S)`` float32 network input. FPN: ``(data (3, h, w) float32, im_info (3,)
        [h, w, scale])``, the aspect-preserving resize before padding to the batch.
        """
        return self.family.preprocess(self.meta, image, self.normalization)

    def batch_inputs(self, images):
        """Network input arrays (one per graph input, batch :attr:`batch_size`) of up to ``batch_size``
        uint8 RGB images."""
        return self.family.batch_inputs(self.meta, [self.preprocess(im) for im in images], self.batch_size)

    def detect_many(self, images):
        """Detect on a list of images (paths or uint8 RGB arrays).

        Returns
        -------
        list of (K_i, 6) float32 rows ``[cls_id, score, xmin, ymin, xmax, ymax]`` in pixels of each
        image, by decreasing score, ``score >= score_thresh``; for a mask model (:attr:`with_masks`) an
        :class:`ssdkit.masks.Instances` per image: those ``rows`` and ``masks (K_i, H, W)`` bool.
        """
        arrays = [load_image_rgb(im) if isinstance(im, (str, os.PathLike)) else np.asarray(im) for im in images]
        results = []
        for start in range(0, len(arrays), self.batch_size):
            chunk = arrays[start:start + self.batch_size]
            inputs = [mx.nd.array(x) for x in self.batch_inputs(chunk)]
            self._mod.forward(mx.io.DataBatch(data=inputs), is_train=False)
            outputs = self._mod.get_outputs()
            out = outputs[0].asnumpy()
            probs = outputs[1].asnumpy() if self.with_masks else None
            for i, image in enumerate(chunk):
                results.append(self._postprocess(out[i], image.shape[1], image.shape[0],
                                                 None if probs is None else probs[i]))
        return results

    def detect(self, image):
        """Detect on one image (path or uint8 RGB array); see :meth:`detect_many`."""
        return self.detect_many([image])[0]

    def _postprocess(self, rows, width, height, probs=None):
        keep = np.flatnonzero((rows[:, 0] >= 0) & (rows[:, 1] >= self.score_thresh))
        keep = keep[np.argsort(-rows[keep, 1], kind="stable")]
        pixels = rows[keep].copy()
        pixels[:, 2:6] *= np.array([width, height, width, height], np.float32)
        pixels = pixels.astype(np.float32)
        if probs is None:
            return pixels
        return Instances(pixels, paste_detections(rows[keep], probs[keep], width, height, self.mask_thresh))

    def to_json(self, detections):
        """Detections (:meth:`detect`'s result) as a list of dicts: class name, score, box in pixels, and for
        a mask model ``mask``, a COCO RLE ``{"size": [H, W], "counts": str}``
        (``pycocotools.mask.decode`` or :func:`ssdkit.masks.decode_rle` reads it)."""
        rows = detections.rows if isinstance(detections, Instances) else detections
        out = [{"class_id": int(r[0]), "class": self.class_names[int(r[0])], "score": float(r[1]),
                "box": [float(v) for v in r[2:6]]} for r in rows]
        if isinstance(detections, Instances):
            for item, rle in zip(out, encode_rle(detections.masks)):
                item["mask"] = rle
        return out

    def save_drawing(self, image, detections, path):
        """Draw labelled boxes (and a mask model's masks, filled translucently) on ``image`` (path or RGB
        array) and save a PNG at ``path``."""
        rgb = load_image_rgb(image) if isinstance(image, (str, os.PathLike)) else np.asarray(image)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        masks = detections.masks if isinstance(detections, Instances) else None
        rows = detections.rows if isinstance(detections, Instances) else detections
        drawn = draw_detections(bgr, rows, class_names=self.class_names, score_thresh=self.score_thresh,
                                normalized=False, masks=masks)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if not cv2.imwrite(path, drawn):
            raise OSError("could not write %s" % path)
        return path


def list_images(path):
    """``path`` itself if it is a file, else the image files in the folder (sorted)."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise MissingFileError("%s is neither an image file nor a folder" % path)
    return sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_SUFFIXES))
