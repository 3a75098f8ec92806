/*!
 * \file proposal_target-inl.h
 * \brief ProposalTarget: parameters, shape rule and the per-candidate rules shared by the CPU and
 *        CUDA kernels (standard library only, nvcc-safe).
 *
 * Inputs
 *   rois   (R, 5)          proposals [batch_index, x0, y0, x1, y1] in pixels (FPNProposal's rois)
 *   label  (B, M, W >= 5)  rows [cls, x0, y0, x1, y1, ...] in pixels, padded with cls = -1 rows
 * Outputs, S = batch_rois rows per image, image b in rows [b * S, (b + 1) * S)
 *   rois_out   (B * S, 5)            [b, x0, y0, x1, y1] of the sampled RoIs; padding [b, 0, 0, 0, 0]
 *   labels     (B * S,)              k + 1 for a foreground RoI of class k, 0 background, -1 padding
 *   box_target (B * S, 4 * (C + 1))  BoxEncode(roi, its ground truth, stds) in the 4 slots of the
 *                                    RoI's label (class-specific), 0 elsewhere and for background
 *   box_weight (B * S, 4 * (C + 1))  1 in those 4 slots of foreground RoIs, 0 elsewhere
 *
 * Per image b:
 *  1. Ground truths: common/ground_truth.h with classes in [0, C) (the class id is truncated to
 *     an integer for the label and the slot).
 *  2. Candidates, in this order: the rows of `rois` whose batch index equals b and whose box is
 *     finite with x1 > x0 and y1 > y0 (common/two_stage.h RoiImage, as in RCNNDetection;
 *     zero-area padding rows are skipped), then, when add_gt_as_proposals, the ground truths
 *     themselves.
 *  3. Each candidate's best ground truth (highest IoU, lowest index on ties; IoU 0 without
 *     ground truths). Foreground candidate: IoU >= fg_thresh. Background candidate: not
 *     foreground and bg_thresh_lo <= IoU < bg_thresh_hi.
 *  4. Sampling (common/sample.h): at most floor(S * fg_fraction) foregrounds chosen at random,
 *     then backgrounds chosen at random up to S in total; the rest of the S rows is padding.
 *     Output rows: the kept foregrounds in candidate order, then the kept backgrounds in candidate
 *     order, then padding. Reproducible under mx.random.seed; independent of the thread count.
 *
 * Defined behaviour on bad input (never a crash or hang; inputs are never written):
 *   - rois rows with a batch index that is not exactly an image index (NaN, 2.5, -1, >= B), a
 *     NaN/inf coordinate or no area are skipped; unusable label rows are skipped (ground_truth.h).
 *   - wrong ranks/shapes, batch_images != label's batch, non-float32 inputs and bad attributes
 *     are MXNet errors.
 * The CUDA kernels (proposal_target.cu) take the same steps but are compiled only, never run:
 * there is no GPU on the development machines. Their random samples differ from the CPU's.
 */
#ifndef SSDKIT_PROPOSAL_TARGET_INL_H_
#define SSDKIT_PROPOSAL_TARGET_INL_H_

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/attrs.h"
#include "common/bbox.h"
#include "common/macros.h"
#include "common/two_stage.h"

namespace ssdkit {

struct ProposalTargetParam {
  int num_classes = 0;        // C, foreground classes
  int batch_images = 0;       // B; 0: take it from label
  int batch_rois = 512;       // S
  double fg_fraction = 0.25;
  float fg_thresh = 0.5f;
  float bg_thresh_hi = 0.5f;
  float bg_thresh_lo = 0.0f;
  Variances stds{0.1f, 0.1f, 0.2f, 0.2f};
  bool add_gt_as_proposals = true;

  /*! \brief Most foreground RoIs per image. */
  int max_foreground() const { return static_cast<int>(batch_rois * fg_fraction); }

  static ProposalTargetParam Parse(const AttrMap& attrs) {
    CheckKnownAttrs("ProposalTarget", attrs,
                    {"num_classes", "batch_images", "batch_rois", "fg_fraction", "fg_thresh", "bg_thresh_hi",
                     "bg_thresh_lo", "stds", "add_gt_as_proposals"});
    ProposalTargetParam p;
    if (attrs.find("num_classes") == attrs.end()) {
      throw std::invalid_argument("'num_classes' is required (foreground classes, background excluded)");
    }
    p.num_classes = ParseInt("num_classes", attrs.at("num_classes"));
    p.batch_images = ParseInt("batch_images", AttrOr(attrs, "batch_images", "0"));
    p.batch_rois = ParseInt("batch_rois", AttrOr(attrs, "batch_rois", "512"));
    p.fg_fraction = ParseDouble("fg_fraction", AttrOr(attrs, "fg_fraction", "0.25"));
    p.fg_thresh = static_cast<float>(ParseDouble("fg_thresh", AttrOr(attrs, "fg_thresh", "0.5")));
    p.bg_thresh_hi = static_cast<float>(ParseDouble("bg_thresh_hi", AttrOr(attrs, "bg_thresh_hi", "0.5")));
    p.bg_thresh_lo = static_cast<float>(ParseDouble("bg_thresh_lo", AttrOr(attrs, "bg_thresh_lo", "0.0")));
    p.stds = ParseBoxStds(attrs, "stds", "(0.1, 0.1, 0.2, 0.2)");
    p.add_gt_as_proposals = ParseBool("add_gt_as_proposals", AttrOr(attrs, "add_gt_as_proposals", "1"));
    if (p.num_classes < 1) throw std::invalid_argument("'num_classes' must be >= 1");
    if (p.batch_images < 0) throw std::invalid_argument("'batch_images' must be >= 1 (or 0: from label)");
    if (p.batch_rois < 1) throw std::invalid_argument("'batch_rois' must be >= 1");
    if (!(p.fg_fraction >= 0.0 && p.fg_fraction <= 1.0)) {
      throw std::invalid_argument("'fg_fraction' must be in [0, 1]");
    }
    if (std::isnan(p.fg_thresh)) throw std::invalid_argument("'fg_thresh' is NaN");
    if (std::isnan(p.bg_thresh_lo) || std::isnan(p.bg_thresh_hi) || !(p.bg_thresh_lo <= p.bg_thresh_hi)) {
      throw std::invalid_argument("'bg_thresh_lo' must be <= 'bg_thresh_hi'");
    }
    if (static_cast<long long>(p.num_classes) + 1 > 2147483647LL / 4) {
      throw std::invalid_argument("'num_classes' is too large");
    }
    return p;
  }
};

/*! \brief Kind of a candidate RoI after step 3 (and after sampling). */
enum CandidateKind : int { kNotSampled = 0, kForeground = 1, kBackground = 2 };

/*! \brief Step 3: the kind of a candidate whose best IoU is `iou`. */
SSDKIT_HD int ClassifyCandidate(float iou, int best_gt, float fg_thresh, float bg_lo, float bg_hi) {
  if (best_gt >= 0 && iou >= fg_thresh) return kForeground;
  if (iou >= bg_lo && iou < bg_hi) return kBackground;
  return kNotSampled;
}

#ifdef SSDKIT_WITH_CUDA
/*! \brief CUDA launcher (proposal_target.cu). Device pointers; `rand_states` are lib_api's GPU
 *  random states (curandStatePhilox4_32_10_t, at least B), `stream` a cudaStream_t, `workspace`
 *  device memory of ProposalTargetWorkspaceBytes() bytes. */
size_t ProposalTargetWorkspaceBytes(int batch, int num_rois, int num_labels);
void ProposalTargetForwardGPU(const ProposalTargetParam& p, const float* rois, const float* labels,
                              int batch, int num_rois, int num_labels, int label_width, float* rois_out,
                              float* labels_out, float* box_target, float* box_weight, void* rand_states,
                              void* workspace, void* stream);
#endif

}  // namespace ssdkit

#endif  // SSDKIT_PROPOSAL_TARGET_INL_H_
