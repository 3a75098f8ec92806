"""Default inference settings of SSD detections and of its training targets, defined once.

The config (``model.nms_thresh`` / ``model.nms_topk``, ``model.overlap_threshold`` /
``model.negative_mining_ratio``), the model spec (:class:`ssdkit.api.model_spec.SSDSpec`), the graph builders
(:func:`ssdkit.symbol.symbol_builder.get_symbol` and ``get_symbol_train``) and the GluonCV zoo imports
(:func:`ssdkit.weights.zoo_config`) all use these values; they are GluonCV's SSD settings. FPN models
have their own (``[fpn]`` ``test_*`` settings, :class:`ssdkit.symbol.fpn_config.FPNConfig`).
"""

NMS_THRESH = 0.45
"""IoU at which ``MultiBoxDetection`` suppresses a lower-scoring box of the same class."""
NMS_TOPK = 400
"""Candidates per image kept (by score) before NMS."""
OVERLAP_THRESHOLD = 0.5
"""``MultiBoxTarget``: an anchor whose IoU with a ground truth reaches it is a positive."""
NEGATIVE_MINING_RATIO = 3.0
"""``MultiBoxTarget``: hard negatives mined per positive (-1: no mining)."""
