/*!
 * \file rpn_target-inl.h
 * \brief RPNTarget: parameters, shape rule and the per-anchor rules shared by the CPU and CUDA
 *        kernels (standard library only, nvcc-safe).
 *
 * Inputs
 *   anchor   (1, N, 4)      pixel corner anchors, all FPN levels concatenated (RPNAnchors)
 *   label    (B, M, W >= 5) rows [cls, x0, y0, x1, y1, ...] in pixels, padded with cls = -1 rows
 *   im_info  (B, 3)         [valid_height, valid_width, scale] of each image
 * Outputs
 *   cls_target (B, N)      1 sampled positive, 0 sampled negative, -1 ignored
 *   box_target (B, N * 4)  BoxEncode(anchor, its ground truth, stds) for every positive anchor
 *                          (matched, before sampling), 0 elsewhere
 *   box_weight (B, N * 4)  1 on the 4 values of every sampled positive, 0 elsewhere
 *
 * Per image:
 *  1. Ground truths: common/ground_truth.h (class-agnostic: any finite class id >= 0; finite box
 *     of positive size; rows after the first cls = -1 row are padding).
 *  2. Usable anchors: finite, and when allowed_border >= 0 inside the valid image grown by
 *     allowed_border: x0 >= -border, y0 >= -border, x1 <= width + border, y1 <= height + border
 *     (continuous coordinates, im_info's valid size). Other anchors are ignored (-1) and take no
 *     part in matching.
 *  3. Matching (common/match.h, Faster R-CNN): positive if the best IoU is >= positive_iou or the
 *     anchor is one of a ground truth's highest-IoU anchors (all ties, IoU > 0); negative
 *     candidate if the best IoU is < negative_iou; otherwise ignored. A positive regresses to its
 *     own highest-IoU ground truth (lowest index on ties). Without ground truths every usable
 *     anchor is a negative candidate.
 *  4. Sampling (common/sample.h): at most floor(batch_size_per_image * positive_fraction)
 *     positives chosen at random, then negatives chosen at random up to batch_size_per_image in
 *     total. Reproducible under mx.random.seed; the CPU result does not depend on the thread count.
 *
 * Defined behaviour on bad input (never a crash or hang; inputs are never written):
 *   - unusable label rows (NaN/inf, inverted or zero-area boxes, class NaN/inf/negative) are
 *     skipped; NaN/inf anchors are ignored; outputs stay finite.
 *   - an im_info row whose valid height or width is NaN, inf or <= 0 is an MXNet error naming the
 *     row (common/two_stage.h CheckImInfoValues, as FPNProposal and RCNNDetection), also when
 *     allowed_border < 0 leaves im_info unused: it is a broken input either way.
 *   - wrong ranks/shapes, a batch mismatch, non-float32 inputs and bad attributes are MXNet errors.
 * The CUDA kernels (rpn_target.cu) take the same steps but are compiled only, never run: there is
 * no GPU on the development machines. Their random samples differ from the CPU's (other states).
 */
#ifndef SSDKIT_RPN_TARGET_INL_H_
#define SSDKIT_RPN_TARGET_INL_H_

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/attrs.h"
#include "common/bbox.h"
#include "common/macros.h"

namespace ssdkit {

struct RPNTargetParam {
  float positive_iou = 0.7f;
  float negative_iou = 0.3f;
  int batch_size_per_image = 256;
  double positive_fraction = 0.5;
  float allowed_border = 0.f;
  Variances stds{1.f, 1.f, 1.f, 1.f};

  /*! \brief Most positives kept per image. */
  int max_positives() const {
    return static_cast<int>(batch_size_per_image * positive_fraction);
  }

  static RPNTargetParam Parse(const AttrMap& attrs) {
    CheckKnownAttrs("RPNTarget", attrs,
                    {"positive_iou", "negative_iou", "batch_size_per_image", "positive_fraction",
                     "allowed_border", "stds"});
    RPNTargetParam p;
    p.positive_iou = static_cast<float>(ParseDouble("positive_iou", AttrOr(attrs, "positive_iou", "0.7")));
    p.negative_iou = static_cast<float>(ParseDouble("negative_iou", AttrOr(attrs, "negative_iou", "0.3")));
    p.batch_size_per_image =
        ParseInt("batch_size_per_image", AttrOr(attrs, "batch_size_per_image", "256"));
    p.positive_fraction =
        ParseDouble("positive_fraction", AttrOr(attrs, "positive_fraction", "0.5"));
    p.allowed_border = static_cast<float>(ParseDouble("allowed_border", AttrOr(attrs, "allowed_border", "0")));
    p.stds = ParseBoxStds(attrs, "stds", "(1, 1, 1, 1)");
    if (!(p.positive_iou > 0.f) || std::isinf(p.positive_iou)) {
      throw std::invalid_argument("'positive_iou' must be a positive finite number (> 1 keeps only the "
                                  "best anchor of every ground truth)");
    }
    if (!(p.negative_iou >= 0.f) || !(p.negative_iou <= p.positive_iou)) {
      throw std::invalid_argument("'negative_iou' must be in [0, positive_iou]");
    }
    if (p.batch_size_per_image < 1) throw std::invalid_argument("'batch_size_per_image' must be >= 1");
    if (!(p.positive_fraction >= 0.0 && p.positive_fraction <= 1.0)) {
      throw std::invalid_argument("'positive_fraction' must be in [0, 1]");
    }
    if (std::isnan(p.allowed_border)) {
      throw std::invalid_argument("'allowed_border' is NaN (use a negative value to disable the check)");
    }
    return p;
  }
};

/*! \brief Does the anchor take part in matching (step 2 of the file comment)? */
SSDKIT_HD bool AnchorIsUsable(const float* a, float valid_height, float valid_width, float border) {
  for (int k = 0; k < 4; ++k) {
    if (!(a[k] - a[k] == 0.f)) return false;  // NaN or inf
  }
  if (border < 0.f) return true;
  return a[0] >= -border && a[1] >= -border && a[2] <= valid_width + border &&
         a[3] <= valid_height + border;
}

#ifdef SSDKIT_WITH_CUDA
/*! \brief CUDA launcher (rpn_target.cu). Device pointers; `rand_states` are lib_api's GPU random
 *  states (curandStatePhilox4_32_10_t, at least B of them), `stream` a cudaStream_t, `workspace`
 *  device memory of RPNTargetWorkspaceBytes() bytes. */
size_t RPNTargetWorkspaceBytes(int batch, int num_anchors, int num_labels);
void RPNTargetForwardGPU(const RPNTargetParam& p, const float* anchors, const float* labels,
                         const float* im_info, int batch, int num_anchors, int num_labels,
                         int label_width, float* cls_target, float* box_target, float* box_weight,
                         void* rand_states, void* workspace, void* stream);
#endif

}  // namespace ssdkit

#endif  // SSDKIT_RPN_TARGET_INL_H_
