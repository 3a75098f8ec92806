"""Detection metrics: Pascal VOC mAP (07 11-point, 12 area) and COCO mAP through pycocotools.

Both take the ssdkit tensors directly: detections ``(B, K, 6)`` rows
``[cls_id, score, xmin, ymin, xmax, ymax]`` (``cls_id < 0`` empty) and labels ``(B, M, 5|6)`` rows
``[cls, xmin, ymin, xmax, ymax(, difficult)]`` padded with -1 rows.
"""
from ssdkit.metrics.coco import COCOEvaluator
from ssdkit.metrics.voc import VOCMeanAP, average_precision, match_image, pairwise_iou

__all__ = ["COCOEvaluator", "VOCMeanAP", "average_precision", "match_image", "pairwise_iou"]
