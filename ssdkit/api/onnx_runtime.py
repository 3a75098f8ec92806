"""Run an exported ONNX detector (:mod:`ssdkit.api.onnx_export`) with onnxruntime.

:class:`OnnxDetectionModel` reads the file's meta, applies inference overrides to the settings the file
keeps as initializers (score threshold, NMS threshold, NMS top-k, rows per image), and runs batches. It
answers ``forward`` / ``get_outputs`` like a bound MXNet Module, so :class:`ssdkit.Detector` and
:func:`ssdkit.api.evaluate.evaluate_detector` drive it the way they drive MXNet graphs.
"""
import json
import os

import numpy as np

from ssdkit.api.family import family_of
from ssdkit.api.inference import NO_OVERRIDES
from ssdkit.api.model_files import normalized_meta
from ssdkit.errors import InputError, MissingFileError, user_input


def _import_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise InputError("running an ONNX model needs the onnx extra: pip install -r requirements-onnx.txt "
                         "(or pip install 'ssdkit[onnx]'); %s" % err) from None
    return onnx, onnxruntime


class OnnxDetectionModel:
    """An exported ONNX SSD run by onnxruntime (CPU).

    Parameters
    ----------
    path : str, the ``.onnx`` file (``deploy.py --format onnx``)
    overrides : :class:`~ssdkit.api.inference.InferenceOverrides` or None, settings that replace the
        file's (``nms_thresh``, ``nms_topk``, ``score_thresh``, ``max_detections``)
    threads : int or None, onnxruntime's intra-op threads (None: ``OMP_NUM_THREADS`` if set, else
        onnxruntime's default); they sleep between runs instead of spinning

    Attributes
    ----------
    meta : dict, the model's meta with the overrides applied
    batch_size : int or None, the batch of the last :meth:`bind` (None: any)

    Raises
    ------
    MissingFileError : no such file; InputError : not an ssdkit ONNX export, or onnx / onnxruntime
    missing
    """

    def __init__(self, path, *, overrides=None, threads=None):
        from ssdkit.api.onnx_detection import set_settings
        from ssdkit.api.onnx_export import META_KEY

        onnx, ort = _import_onnx()
        if not os.path.isfile(path):
            raise MissingFileError("ONNX model %s not found (deploy.py --format onnx writes OUTPUT.onnx)" % path)
        with user_input():
            try:
                model = onnx.load(path)
            except Exception as err:  # noqa: BLE001  (protobuf raises several types for damaged files)
                raise InputError("%s is not a readable ONNX file (%s)" % (path, err)) from None
            props = {p.key: p.value for p in model.metadata_props}
            if META_KEY not in props:
                raise InputError("%s has no %s metadata: it was not written by deploy.py --format onnx"
                                 % (path, META_KEY))
            meta = normalized_meta(json.loads(props[META_KEY]), source=path)
            overrides = overrides or NO_OVERRIDES
            meta = family_of(meta).with_inference(meta, overrides)
            num_anchors = _num_anchors(model)
            set_settings(model, overrides.given(), num_anchors)
        self.meta = meta
        self.path = path
        options = ort.SessionOptions()
        threads = threads if threads is not None else int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        # onnxruntime's worker threads otherwise busy-wait after each run, taking the cores from whatever
        # runs next in the process (MXNet's data loading, another model: measured here, they doubled the
        # CPU time of an MXNet forward that followed)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.batch_size = None
        self._outputs = None

    def run(self, data):
        """Detections of ``data (B, 3, S, S)`` float32: ``(B, R, 6)`` rows ``[cls_id, score, xmin, ymin, xmax,
        ymax]`` normalised, padded with rows of -1."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(data, dtype=np.float32)})[0]

    # --- the part of mx.mod.Module's interface the evaluator and the Detector use ---------------
    def forward(self, data_batch, is_train=False):
        """Run ``data_batch.data[0]`` (an NDArray or numpy array); :meth:`get_outputs` returns the result."""
        if is_train:
            raise ValueError("an ONNX model runs inference only")
        data = data_batch.data[0]
        self._outputs = self.run(data.asnumpy() if hasattr(data, "asnumpy") else data)

    def get_outputs(self):
        """``[detections]`` of the last :meth:`forward`, as an NDArray (what ``Module.get_outputs`` gives)."""
        import mxnet as mx

        return [mx.nd.array(self._outputs)]


def _num_anchors(model):
    from onnx import numpy_helper

    from ssdkit.api.onnx_detection import P

    for init in model.graph.initializer:
        if init.name == P + "num_anchors":
            return int(numpy_helper.to_array(init).reshape(-1)[0])
    raise InputError("%s lacks ssdkit's detection step; it was not written by deploy.py --format onnx"
                     % model.graph.name)
