/*!
 * \file multibox_detection-inl.h
 * \brief MultiBoxDetection: parameters, shape rule and the per-anchor formulas shared by CPU and CUDA.
 *
 * Inputs
 *   cls_prob (B, C+1, N)  class probabilities, channel `background_id` is the background
 *   loc_pred (B, N*4)     box regressions, anchor-major (t_x, t_y, t_w, t_h)
 *   anchor   (1, N, 4)    corner anchors (xmin, ymin, xmax, ymax)
 * Output
 *   (B, N, 6), or (B, K, 6) with max_detections=K: rows [cls_id, score, xmin, ymin, xmax, ymax]
 *
 * Algorithm (that of mx.contrib.nd.MultiBoxDetection 1.9, learned from its source; CPU plan in the .cc):
 *  1. per anchor, the best object class: the first channel j != background_id with the largest
 *     probability p > -1 (NaN never wins); the anchor is a candidate unless p < threshold.
 *     Object class ids are 0-based: channel j becomes j - 1 above the background channel, j below it.
 *  2. candidates are decoded with the box coder (common/bbox.h), clipped to [0, 1] when `clip`.
 *  3. unless nms_threshold is outside (0, 1], candidates are stably sorted by descending score,
 *     the first nms_topk kept (nms_topk <= 0: all), and greedy NMS removes every candidate whose
 *     IoU with a better kept one (of the same class unless force_suppress) is >= nms_threshold.
 * Default layout (max_detections = -1), equal to contrib's: rows 0..T-1 are the sorted top-T
 * candidates with cls_id = -1 on suppressed ones; rows T..V-1 (V candidates, only when nms_topk
 * cut) are candidates in anchor order with cls_id = -1; the remaining rows are all -1. Without
 * NMS the V candidates are written in anchor order. Consumers must read only rows with cls_id >= 0.
 * max_detections = K: the kept rows of the default layout (cls_id >= 0), in descending score order
 * (ties: lower anchor index first), the first K, then rows of -1.
 *
 * Difference from contrib: contrib ignores background_id and always treats channel 0 as the
 * background; here it is honoured (background_id = -1: every channel is an object class).
 * With background_id = 0 the outputs are equal.
 * Standard library only: included by the .cc (g++) and the .cu (nvcc).
 */
#ifndef SSDKIT_MULTIBOX_DETECTION_INL_H_
#define SSDKIT_MULTIBOX_DETECTION_INL_H_

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/attrs.h"
#include "common/bbox.h"
#include "common/macros.h"

namespace ssdkit {

struct MultiBoxDetectionParam {
  bool clip = true;
  float threshold = 0.01f;
  int background_id = 0;
  float nms_threshold = 0.5f;
  bool force_suppress = false;
  Variances variances;
  int nms_topk = -1;
  int max_detections = -1;

  /*! \brief NMS (and the sort before it) runs only for thresholds in (0, 1], as in contrib. */
  bool nms_enabled() const { return nms_threshold > 0.f && nms_threshold <= 1.f; }

  static MultiBoxDetectionParam Parse(const AttrMap& attrs) {
    CheckKnownAttrs("MultiBoxDetection", attrs,
                    {"clip", "threshold", "background_id", "nms_threshold", "force_suppress",
                     "variances", "nms_topk", "max_detections"});
    MultiBoxDetectionParam p;
    p.clip = ParseBool("clip", AttrOr(attrs, "clip", "True"));
    p.threshold = static_cast<float>(ParseDouble("threshold", AttrOr(attrs, "threshold", "0.01")));
    p.background_id = ParseInt("background_id", AttrOr(attrs, "background_id", "0"));
    p.nms_threshold = static_cast<float>(
        ParseDouble("nms_threshold", AttrOr(attrs, "nms_threshold", "0.5")));
    p.force_suppress = ParseBool("force_suppress", AttrOr(attrs, "force_suppress", "False"));
    p.nms_topk = ParseInt("nms_topk", AttrOr(attrs, "nms_topk", "-1"));
    p.max_detections = ParseInt("max_detections", AttrOr(attrs, "max_detections", "-1"));
    p.variances = ParseVariances(attrs, /*require_positive=*/false);
    if (std::isnan(p.threshold)) throw std::invalid_argument("'threshold' must not be NaN");
    if (std::isnan(p.nms_threshold)) throw std::invalid_argument("'nms_threshold' must not be NaN");
    if (p.background_id < -1) {
      throw std::invalid_argument("'background_id' must be -1 (no background) or a channel index, got " +
                                  std::to_string(p.background_id));
    }
    if (p.max_detections == 0 || p.max_detections < -1) {
      throw std::invalid_argument("'max_detections' must be -1 (one row per anchor) or positive, got " +
                                  std::to_string(p.max_detections));
    }
    return p;
  }
};

/*!
 * \brief Output class id of probability channel `channel`, or -1 for the background channel.
 *  Channels above the background shift down by one so that object ids stay 0-based.
 */
SSDKIT_HD int ChannelToClass(int channel, int background_id) {
  if (channel == background_id) return -1;
  return (background_id >= 0 && channel > background_id) ? channel - 1 : channel;
}

/*!
 * \brief Step 1 for `lanes` (<= kLanes) adjacent anchors: score[i] = the best object probability,
 *  the running `v > s ? v : s` over the channels != background_id in channel order from s = -1
 *  (NaN never wins; -1 when no channel is above -1). `p` points at the first anchor's channel 0,
 *  channels `stride` floats apart. Channel-outer so that the CPU loop (kLanes = 512) reads
 *  contiguous rows and vectorises; the CUDA kernel runs it per anchor (kLanes = 1).
 */
template <int kLanes>
SSDKIT_HD_ALWAYS_INLINE void BestObjectScoreLanes(const float* p, size_t stride, int channels, int background_id, int lanes,
                                    float* score) {
  for (int i = 0; i < lanes; ++i) score[i] = -1.f;
  for (int c = 0; c < channels; ++c) {
    if (c == background_id) continue;
    const float* row = p + static_cast<size_t>(c) * stride;
    SSDKIT_SIMD
    for (int i = 0; i < lanes; ++i) score[i] = row[i] > score[i] ? row[i] : score[i];
  }
}

/*! \brief Is an anchor with best object score `score` (BestObjectScoreLanes) a candidate: some
 *  channel above -1, and not below the threshold. Branch-free (0 or 1). */
SSDKIT_HD int IsCandidateScore(float score, float threshold) {
  return static_cast<int>(score > -1.f) & static_cast<int>(!(score < threshold));
}

/*!
 * \brief The channel of a candidate's best score (the first channel != background_id whose
 *  probability equals `score`, which is the channel the running max of BestObjectScoreLanes took),
 *  or `channels` if none. One anchor: `col` is its channel 0, channels `stride` apart; stops at the
 *  first match (the CPU's path for few candidates).
 */
SSDKIT_HD int FirstChannelWithScore(const float* col, size_t stride, int channels, int background_id, float score) {
  int best = 0;
  while (best < channels && (best == background_id || !(col[static_cast<size_t>(best) * stride] == score))) ++best;
  return best;
}

/*!
 * \brief FirstChannelWithScore for `lanes` adjacent anchors at once, reading every channel (no early
 *  stop, vectorised): first[i] for score[i]. The CPU's path when most anchors are candidates, and the
 *  CUDA kernel's (kLanes = 1).
 */
template <int kLanes>
SSDKIT_HD_ALWAYS_INLINE void FirstChannelWithScoreLanes(const float* p, size_t stride, int channels, int background_id,
                                          int lanes, const float* score, int* first) {
  for (int i = 0; i < lanes; ++i) first[i] = channels;
  for (int c = channels - 1; c >= 0; --c) {
    if (c == background_id) continue;
    const float* row = p + static_cast<size_t>(c) * stride;
    SSDKIT_SIMD
    for (int i = 0; i < lanes; ++i) first[i] = row[i] == score[i] ? c : first[i];
  }
}

/*! \brief Write one output row [cls_id, score, xmin, ymin, xmax, ymax] (CPU and CUDA). */
SSDKIT_HD void WriteDetectionRow(float* row, float cls, float score, const float* box) {
  row[0] = cls;
  row[1] = score;
  row[2] = box[0];
  row[3] = box[1];
  row[4] = box[2];
  row[5] = box[3];
}

#ifdef SSDKIT_WITH_CUDA
/*! \brief Device scratch bytes MultiBoxDetectionForwardGPU needs (multibox_detection.cu). */
size_t MultiBoxDetectionGPUWorkspace(int batch, int num_channels, int num_anchors);

/*!
 * \brief CUDA forward. Pointers are device memory; `workspace` has MultiBoxDetectionGPUWorkspace
 *  bytes; `out` is (batch, out_rows, 6); stream is a cudaStream_t.
 */
void MultiBoxDetectionForwardGPU(const MultiBoxDetectionParam& p, int batch, int num_channels,
                                 int num_anchors, const float* cls_prob, const float* loc_pred,
                                 const float* anchor, float* out, int out_rows, void* workspace,
                                 void* stream);
#endif

}  // namespace ssdkit

#endif  // SSDKIT_MULTIBOX_DETECTION_INL_H_
