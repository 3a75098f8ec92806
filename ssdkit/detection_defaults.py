"""Default inference settings of SSD detections, defined once.

The config (``model.nms_thresh`` / ``model.nms_topk``), the graph builders
(:func:`ssdkit.symbol.symbol_builder.get_symbol` and ``get_symbol_train``) and the GluonCV zoo imports
(:func:`ssdkit.weights.zoo_config`) all use these values; they are GluonCV's SSD settings. FPN models
have their own (``[fpn]`` ``test_*`` settings, :class:`ssdkit.symbol.fpn_config.FPNConfig`).
"""

NMS_THRESH = 0.45
"""IoU at which ``MultiBoxDetection`` suppresses a lower-scoring box of the same class."""
NMS_TOPK = 400
"""Candidates per image kept (by score) before NMS."""
