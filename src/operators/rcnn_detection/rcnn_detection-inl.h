/*!
 * \file rcnn_detection-inl.h
 * \brief RCNNDetection: parameters, shape rule and the per-detection formulas shared by CPU and CUDA.
 *
 * Inputs
 *   rois      (M, 5)          [batch_index, x0, y0, x1, y1] in pixels (M = B*R from FPNProposal)
 *   cls_prob  (M, C+1)        class probabilities, channel 0 is the background
 *   bbox_pred (M, 4*(C+1))    class-specific regressions, 4 per channel (background's unused)
 *   im_info   (B, 3)          [valid_height, valid_width, scale]
 * Output
 *   det (B, K, 6)  rows [cls_id, score, x0, y0, x1, y1]; cls_id is the 0-based foreground class
 *                  (channel - 1); padding rows are all -1
 *
 * Algorithm, per image b:
 *  - the rois of image b are the rows whose batch index equals b (so B*R rows in image-major order,
 *    as FPNProposal writes them, work, and so does any other order); rows with another batch index
 *    (not an integer in [0, B), NaN), a NaN/inf coordinate or zero or negative width or height
 *    (padding) are ignored (common/two_stage.h RoiImage, as in ProposalTarget).
 *  - per foreground class c (channel c + 1): candidates are the rois with a finite score
 *    > score_threshold; each is decoded with the class's 4 regressions and `stds`, log-size deltas
 *    clamped at log(1000/16) (common/bbox.h BoxDecodeLogClamped), clipped to
 *    [0, valid_width] x [0, valid_height]; a box with a NaN coordinate is dropped. Candidates are
 *    ranked by descending score, ties by ascending roi row, and greedy NMS (suppress at
 *    IoU >= nms_threshold, common/nms.h) keeps at most K of them.
 *  - the kept detections of all classes ordered by descending score, ties by ascending class id,
 *    then ascending roi row; the first K written, then rows of -1.
 *  - `clip` (default true): clip the decoded boxes to the image as above; false keeps them as decoded
 *    (GluonCV's Faster R-CNN returns unclipped boxes).
 *  - `normalize`: coordinates divided by (valid_width, valid_height, valid_width, valid_height), which
 *    puts them in [0, 1] of the image, the format of MultiBoxDetection's output.
 * Standard library only: included by the .cc (g++) and the .cu (nvcc).
 */
#ifndef SSDKIT_RCNN_DETECTION_INL_H_
#define SSDKIT_RCNN_DETECTION_INL_H_

#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/attrs.h"
#include "common/bbox.h"
#include "common/macros.h"
#include "common/shapes.h"
#include "common/two_stage.h"

namespace ssdkit {

struct RCNNDetectionParam {
  Variances stds;                // (0.1, 0.1, 0.2, 0.2)
  float score_threshold = 0.05f;  // candidates need score > this
  float nms_threshold = 0.5f;    // suppress at IoU >= this, in (0, 1]
  int max_detections = 100;      // K, rows per image
  bool normalize = true;
  bool clip = true;              // clip decoded boxes to [0, valid_width] x [0, valid_height]

  static RCNNDetectionParam Parse(const AttrMap& attrs) {
    CheckKnownAttrs("RCNNDetection", attrs,
                    {"stds", "score_threshold", "nms_threshold", "max_detections", "normalize", "clip"});
    RCNNDetectionParam p;
    p.stds = ParseBoxStds(attrs, "stds", "(0.1, 0.1, 0.2, 0.2)");
    p.score_threshold = ParseFloatIn(attrs, "score_threshold", "0.05", -HUGE_VAL, HUGE_VAL, false, "finite");
    p.nms_threshold = ParseFloatIn(attrs, "nms_threshold", "0.5", 0.0, 1.0, true, "in (0, 1]");
    p.max_detections = ParseInt("max_detections", AttrOr(attrs, "max_detections", "100"));
    if (p.max_detections < 1) {
      throw std::invalid_argument("'max_detections' (rows per image) must be positive, got " +
                                  std::to_string(p.max_detections));
    }
    p.normalize = ParseBool("normalize", AttrOr(attrs, "normalize", "True"));
    p.clip = ParseBool("clip", AttrOr(attrs, "clip", "True"));
    return p;
  }
};

/*!
 * \brief Check the input shapes (rois, cls_prob, bbox_pred, im_info); return M (roi rows),
 *  C + 1 (channels) and B. Throws std::invalid_argument with the offending shapes.
 */
inline void CheckRCNNDetectionShapes(const std::vector<unsigned int>& rois, const std::vector<unsigned int>& cls,
                                     const std::vector<unsigned int>& bbox, const std::vector<unsigned int>& im_info,
                                     unsigned int* num_rois, unsigned int* channels, unsigned int* batch) {
  if (rois.size() != 2 || rois[1] != 5 || rois[0] == 0) {
    throw std::invalid_argument("rois must be (num_rois, 5) with rows [batch_index, x0, y0, x1, y1], got " +
                                ShapeString(rois));
  }
  if (cls.size() != 2 || cls[0] != rois[0] || cls[1] < 2) {
    throw std::invalid_argument("cls_prob " + ShapeString(cls) + " must be (num_rois, num_classes + 1) = (" +
                                std::to_string(rois[0]) + ", C + 1) with C >= 1, channel 0 the background");
  }
  if (bbox.size() != 2 || bbox[0] != rois[0] || static_cast<size_t>(bbox[1]) != 4 * static_cast<size_t>(cls[1])) {
    throw std::invalid_argument("bbox_pred " + ShapeString(bbox) + " must be (num_rois, 4 * (num_classes + 1)) = (" +
                                std::to_string(rois[0]) + ", " + std::to_string(4 * static_cast<size_t>(cls[1])) +
                                "): class-specific regressions");
  }
  if (im_info.size() != 2 || im_info[1] != 3 || im_info[0] == 0) {
    throw std::invalid_argument("im_info " + ShapeString(im_info) +
                                " must be (batch, 3): [valid_height, valid_width, scale] per image");
  }
  if (static_cast<size_t>(rois[0]) * bbox[1] > 2147483647u) {
    throw std::invalid_argument("RCNNDetection supports at most 2^31 - 1 elements per input");
  }
  *num_rois = rois[0];
  *channels = cls[1];
  *batch = im_info[0];
}

/*! \brief A score that makes a candidate: finite and > threshold. */
SSDKIT_HD bool IsDetectionScore(float s, float threshold) { return s - s == 0.f && s > threshold; }

/*!
 * \brief Decode `delta` against the roi box (x0, y0, x1, y1) and, if `clip`, clip it to the image; returns false
 *  if a coordinate is NaN (the candidate is dropped).
 */
SSDKIT_HD bool MakeDetectionBox(const float* roi_box, const float* delta, const Variances& stds, float im_height,
                                float im_width, bool clip, float* box) {
  BoxDecodeLogClamped(roi_box, delta, stds, kDetectronLogSizeClamp, box);
  if (clip) ClipBoxToImage(box, im_width, im_height);
  return box[0] == box[0] && box[1] == box[1] && box[2] == box[2] && box[3] == box[3];
}

/*! \brief Write one output row [cls_id, score, x0, y0, x1, y1], optionally normalised by the image size. */
SSDKIT_HD void WriteRCNNDetection(float* row, int cls, float score, const float* box, bool normalize,
                                  float im_height, float im_width) {
  row[0] = static_cast<float>(cls);
  row[1] = score;
  if (normalize) {
    row[2] = box[0] / im_width;
    row[3] = box[1] / im_height;
    row[4] = box[2] / im_width;
    row[5] = box[3] / im_height;
  } else {
    row[2] = box[0];
    row[3] = box[1];
    row[4] = box[2];
    row[5] = box[3];
  }
}

#ifdef SSDKIT_WITH_CUDA
/*! \brief Device scratch bytes RCNNDetectionForwardGPU needs (rcnn_detection.cu). */
size_t RCNNDetectionGPUWorkspace(const RCNNDetectionParam& p, int num_rois, int channels, int batch);

/*!
 * \brief CUDA forward (untested at runtime: no GPU on the development machines). Pointers are
 *  device memory; `workspace` holds RCNNDetectionGPUWorkspace bytes; `det` is (batch, K, 6);
 *  stream is a cudaStream_t.
 */
void RCNNDetectionForwardGPU(const RCNNDetectionParam& p, int num_rois, int channels, int batch, const float* rois,
                             const float* cls_prob, const float* bbox_pred, const float* im_info, float* det,
                             void* workspace, void* stream);
#endif

}  // namespace ssdkit

#endif  // SSDKIT_RCNN_DETECTION_INL_H_
