/*!
 * \file fpn_proposal-inl.h
 * \brief FPNProposal: parameters, shape rule and the per-proposal formulas shared by CPU and CUDA.
 *
 * Inputs
 *   cls_prob  (B, N)     sigmoid objectness of every anchor, all FPN levels concatenated
 *   bbox_pred (B, N*4)   RPN regressions (t_x, t_y, t_w, t_h), anchor-major
 *   anchor    (1, N, 4)  pixel corner anchors, levels concatenated in `level_sizes` order
 *   im_info   (B, 3)     [valid_height, valid_width, scale] of each image
 * Outputs
 *   rois   (B*P, 5)  rows [batch_index, x0, y0, x1, y1] in pixels; image b owns rows b*P .. b*P+P-1
 *   scores (B*P, 1)  the objectness of each roi
 *
 * Algorithm, per image b and per level l (anchors [begin_l, begin_l + level_sizes[l])):
 *  1. rank the level's anchors by descending score, ties by ascending anchor index; anchors with
 *     a non-finite score (NaN, +-inf) are not proposals; keep the first pre_nms_top_n
 *     (-1: all) of them (common/topk.h order).
 *  2. decode each with the box coder and `stds`, log-size deltas clamped at log(1000/16)
 *     (common/bbox.h BoxDecodeLogClamped), clip to [0, valid_width] x [0, valid_height];
 *  3. drop boxes with a NaN coordinate, with width or height < min_size, and empty boxes
 *     (width or height 0: they would read as padding downstream, see ProposalTarget);
 *  4. greedy NMS within the level (suppress at IoU >= nms_threshold, common/nms.h), at most P kept.
 * Then over all levels of the image: the kept proposals ordered by descending score, ties by
 * ascending anchor index, the first P = post_nms_top_n written; when fewer than P survive, the
 * remaining rows are [b, 0, 0, 0, 0] with score -1.
 *
 * Differences from mx.contrib.nd.MultiProposal (single level, its own anchors): it uses the
 * "+1" pixel convention (width = x1 - x0 + 1, clip to [0, W - 1]), suppresses at IoU > threshold,
 * scales min_size by im_info's scale, marks small boxes and anchors of padded feature-map cells with
 * score -1 instead of dropping them, filters before the top-n cut, breaks score ties by an unstable
 * sort and pads by repeating kept rows. tests/test_fpn_proposal.py compares both where they coincide.
 * Standard library only: included by the .cc (g++) and the .cu (nvcc).
 */
#ifndef SSDKIT_FPN_PROPOSAL_INL_H_
#define SSDKIT_FPN_PROPOSAL_INL_H_

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

/*! \brief At most this many FPN levels (the CUDA kernels take the level table by value). */
constexpr int kFPNMaxLevels = 16;

struct FPNProposalParam {
  std::vector<int> level_sizes;  // anchors per level, sum = N
  int pre_nms_top_n = 1000;      // per level per image; -1: every anchor of the level
  int post_nms_top_n = 1000;     // P, rows per image
  float nms_threshold = 0.7f;    // suppress at IoU >= this, in (0, 1]
  float min_size = 0.f;          // pixels
  Variances stds{1.f, 1.f, 1.f, 1.f};

  int num_levels() const { return static_cast<int>(level_sizes.size()); }
  /*! \brief Proposals ranked in level l before NMS: min(pre_nms_top_n, level size). */
  int level_top(int l) const {
    const int n = level_sizes[static_cast<size_t>(l)];
    return (pre_nms_top_n < 0 || pre_nms_top_n > n) ? n : pre_nms_top_n;
  }

  static FPNProposalParam Parse(const AttrMap& attrs) {
    CheckKnownAttrs("FPNProposal", attrs,
                    {"level_sizes", "pre_nms_top_n", "post_nms_top_n", "nms_threshold", "min_size", "stds"});
    FPNProposalParam p;
    if (attrs.find("level_sizes") == attrs.end()) {
      throw std::invalid_argument("'level_sizes' is required: the number of anchors of each level, "
                                  "in anchor order, e.g. level_sizes=(H2*W2*A, H3*W3*A, ...)");
    }
    for (double v : ParseDoubleList("level_sizes", attrs.at("level_sizes"))) {
      if (!(v >= 1.0 && v <= 2147483647.0 && v == std::floor(v))) {
        throw std::invalid_argument("'level_sizes' must hold positive integers, got " + attrs.at("level_sizes"));
      }
      p.level_sizes.push_back(static_cast<int>(v));
    }
    if (p.level_sizes.empty() || p.num_levels() > kFPNMaxLevels) {
      throw std::invalid_argument("'level_sizes' must list 1 to " + std::to_string(kFPNMaxLevels) +
                                  " levels, got " + std::to_string(p.level_sizes.size()));
    }
    p.pre_nms_top_n = ParseInt("pre_nms_top_n", AttrOr(attrs, "pre_nms_top_n", "1000"));
    if (p.pre_nms_top_n == 0 || p.pre_nms_top_n < -1) {
      throw std::invalid_argument("'pre_nms_top_n' must be positive or -1 (all anchors of a level), got " +
                                  std::to_string(p.pre_nms_top_n));
    }
    p.post_nms_top_n = ParseInt("post_nms_top_n", AttrOr(attrs, "post_nms_top_n", "1000"));
    if (p.post_nms_top_n < 1) {
      throw std::invalid_argument("'post_nms_top_n' (rows per image) must be positive, got " +
                                  std::to_string(p.post_nms_top_n));
    }
    p.nms_threshold = ParseFloatIn(attrs, "nms_threshold", "0.7", 0.0, 1.0, true, "in (0, 1]");
    p.min_size = ParseFloatIn(attrs, "min_size", "0", 0.0, HUGE_VAL, false, "finite and >= 0 (pixels)");
    p.stds = ParseBoxStds(attrs, "stds", "(1, 1, 1, 1)");
    return p;
  }
};

/*! \brief Where each level's anchors and its ranked candidates live (host-side bookkeeping). */
struct FPNLevelPlan {
  int num_levels = 0;
  int anchor_begin[kFPNMaxLevels + 1] = {0};  // level l: anchors [anchor_begin[l], anchor_begin[l+1])
  int cand_begin[kFPNMaxLevels + 1] = {0};    // level l: candidates [cand_begin[l], cand_begin[l+1])
  int total_cand() const { return cand_begin[num_levels]; }
};

inline FPNLevelPlan PlanLevels(const FPNProposalParam& p) {
  FPNLevelPlan plan;
  plan.num_levels = p.num_levels();
  for (int l = 0; l < plan.num_levels; ++l) {
    plan.anchor_begin[l + 1] = plan.anchor_begin[l] + p.level_sizes[static_cast<size_t>(l)];
    plan.cand_begin[l + 1] = plan.cand_begin[l] + p.level_top(l);
  }
  return plan;
}

/*!
 * \brief Check the input shapes (cls_prob, bbox_pred, anchor, im_info) against each other and
 *  `level_sizes`; return B and N. Throws std::invalid_argument with the offending shapes.
 */
inline void CheckFPNProposalShapes(const FPNProposalParam& p, const std::vector<unsigned int>& cls,
                                   const std::vector<unsigned int>& bbox, const std::vector<unsigned int>& anchor,
                                   const std::vector<unsigned int>& im_info, unsigned int* batch,
                                   unsigned int* num_anchors) {
  if (cls.size() != 2 || cls[0] == 0) {
    throw std::invalid_argument("cls_prob must be 2-d (batch, num_anchors) with batch >= 1, got " + ShapeString(cls));
  }
  if (anchor.size() != 3 || anchor[0] != 1 || anchor[2] != 4 || anchor[1] == 0) {
    throw std::invalid_argument("anchor must be (1, num_anchors, 4) with num_anchors >= 1, got " + ShapeString(anchor));
  }
  if (cls[1] != anchor[1]) {
    throw std::invalid_argument("cls_prob " + ShapeString(cls) + " and anchor " + ShapeString(anchor) +
                                " disagree on the number of anchors");
  }
  if (bbox.size() != 2 || bbox[0] != cls[0] || static_cast<size_t>(bbox[1]) != 4 * static_cast<size_t>(anchor[1])) {
    throw std::invalid_argument("bbox_pred " + ShapeString(bbox) + " must be (batch, num_anchors * 4) = (" +
                                std::to_string(cls[0]) + ", " + std::to_string(4 * static_cast<size_t>(anchor[1])) +
                                ")");
  }
  if (im_info.size() != 2 || im_info[0] != cls[0] || im_info[1] != 3) {
    throw std::invalid_argument("im_info " + ShapeString(im_info) + " must be (batch, 3) = (" + std::to_string(cls[0]) +
                                ", 3): [valid_height, valid_width, scale] per image");
  }
  size_t sum = 0;
  std::string sizes;
  for (int s : p.level_sizes) {
    sum += static_cast<size_t>(s);
    sizes += (sizes.empty() ? "" : ", ") + std::to_string(s);
  }
  if (sum != anchor[1]) {
    throw std::invalid_argument("level_sizes (" + sizes + ") sum to " + std::to_string(sum) + " but anchor " +
                                ShapeString(anchor) + " holds " + std::to_string(anchor[1]) + " anchors");
  }
  if (static_cast<size_t>(cls[0]) * p.post_nms_top_n > 2147483647u ||
      static_cast<size_t>(cls[0]) * anchor[1] * 4 > 2147483647u) {
    throw std::invalid_argument("FPNProposal supports at most 2^31 - 1 elements per input and output");
  }
  *batch = cls[0];
  *num_anchors = anchor[1];
}

/*!
 * \brief Steps 2-3 for one ranked anchor: decode, clip, size test. Writes the box to box[0..3];
 *  returns true if it is a proposal.
 */
SSDKIT_HD bool MakeProposal(const float* anchor, const float* delta, const Variances& stds, float im_height,
                            float im_width, float min_size, float* box) {
  BoxDecodeLogClamped(anchor, delta, stds, kDetectronLogSizeClamp, box);
  ClipBoxToImage(box, im_width, im_height);
  const float w = box[2] - box[0], h = box[3] - box[1];
  return w >= min_size && h >= min_size && w > 0.f && h > 0.f;  // false for NaN
}

/*! \brief Write one roi row [b, x0, y0, x1, y1] and its score. */
SSDKIT_HD void WriteRoi(float* roi, float* score, int b, const float* box, float s) {
  roi[0] = static_cast<float>(b);
  roi[1] = box[0];
  roi[2] = box[1];
  roi[3] = box[2];
  roi[4] = box[3];
  *score = s;
}

/*! \brief Write one padding row [b, 0, 0, 0, 0] with score -1. */
SSDKIT_HD void WritePaddingRoi(float* roi, float* score, int b) {
  roi[0] = static_cast<float>(b);
  roi[1] = roi[2] = roi[3] = roi[4] = 0.f;
  *score = -1.f;
}

#ifdef SSDKIT_WITH_CUDA
/*! \brief Device scratch bytes FPNProposalForwardGPU needs (fpn_proposal.cu). */
size_t FPNProposalGPUWorkspace(const FPNProposalParam& p, int batch, int num_anchors);

/*!
 * \brief CUDA forward (untested at runtime: no GPU on the development machines). Pointers are
 *  device memory; `workspace` holds FPNProposalGPUWorkspace bytes; stream is a cudaStream_t.
 */
void FPNProposalForwardGPU(const FPNProposalParam& p, int batch, int num_anchors, const float* cls_prob,
                           const float* bbox_pred, const float* anchor, const float* im_info, float* rois,
                           float* scores, void* workspace, void* stream);
#endif

}  // namespace ssdkit

#endif  // SSDKIT_FPN_PROPOSAL_INL_H_
