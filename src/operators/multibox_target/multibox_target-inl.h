/*!
 * \file multibox_target-inl.h
 * \brief MultiBoxTarget: parameters, label validation and the per-anchor formulas shared by the
 *        CPU and CUDA kernels (standard library only, nvcc-safe).
 *
 * Inputs
 *   anchor   (1, N, 4)        corner anchors, normalised
 *   label    (B, M, W >= 5)   rows [cls, xmin, ymin, xmax, ymax, ...]; columns past the 5th (e.g.
 *                             difficult) are ignored
 *   cls_pred (B, C + 1, N)    raw class scores (logits), channel 0 = background
 * Outputs
 *   loc_target (B, N * 4)  BoxEncode(anchor, matched gt, variances) for positives, else 0
 *   loc_mask   (B, N * 4)  1 for the four values of every positive anchor, else 0
 *   cls_target (B, N)      gt class + 1 for positives, 0 for negatives, ignore_label otherwise
 *
 * Algorithm (that of mx.contrib.nd.MultiBoxTarget on CPU, tie-breaking included), per image:
 *   - The ground truths are the label rows before the first row whose class is -1 (padding).
 *   - Matching (common/match.h): each ground truth first claims its best anchor (greedy
 *     bipartite, IoU > 1e-6), then, if overlap_threshold > 0, every other anchor whose best IoU
 *     is > overlap_threshold matches its best ground truth.
 *   - negative_mining_ratio <= 0: every anchor that is not positive is a negative.
 *     negative_mining_ratio > 0: k = max(int(num_positive * ratio), minimum_negative_samples),
 *     at most N - num_positive; the k non-positive anchors with best IoU <
 *     negative_mining_thresh and the lowest background probability softmax(cls_pred)[0] (ties:
 *     lowest anchor index) are negatives; every other non-positive anchor is ignored.
 *   - An image without ground truths has every anchor ignored, unless mining is on and
 *     minimum_negative_samples > 0: then that many hardest anchors are negatives.
 *
 * Deliberate differences from contrib.MultiBoxTarget (each has its own test):
 *   - minimum_negative_samples is honoured (the contrib CPU kernel ignores it; its GPU kernel
 *     applies it as above). With the default 0 the outputs are identical.
 *   - When fewer anchors qualify as negatives than k, all of them are taken (contrib fails a
 *     CHECK and raises).
 *   - A padding row needs only its class to be -1 (contrib also CHECKs that its box is -1).
 *   - The background probability uses a vectorised exp (common/fast_exp.h, within 1 ulp of
 *     libm's) that gives 0 below -87.3: anchors whose background logit is more than 87 below
 *     their top logit all have probability 0 and rank by index, where contrib ranks their
 *     denormal probabilities. Otherwise only probabilities within an ulp could rank differently.
 *
 * The CUDA kernels (multibox_target.cu) take the same steps through the same host/device functions
 * (common/match.h, common/select.h, BackgroundProbLanes, WriteAnchorTarget), compiled with FMA
 * contraction off (-fmad=false), so IoUs and probabilities are the CPU's bit for bit; only logf in
 * BoxEncode (CUDA's vs glibc's) can differ in the last bits of loc_target.
 *
 * Defined behaviour on bad input (never a crash or hang):
 *   - A label row before the padding whose class is not in [0, C) (C = cls_pred channels - 1,
 *     including NaN, inf, -2, ...) or whose box has a non-finite coordinate is not a ground
 *     truth: it matches no anchor. contrib would emit cls + 1 as a target; we drop the row.
 *   - Zero-area and inverted boxes overlap nothing (IoU 0), so they match no anchor; boxes
 *     outside [0, 1] are used as given.
 *   - NaN/inf in cls_pred: the background probability of such an anchor is NaN, and NaN ranks
 *     as the easiest negative (picked last). Targets stay finite.
 *   - Wrong ranks, anchor shape not (1, N, 4), label width < 5, cls_pred not (B, C + 1, N), a
 *     batch mismatch, non-float32 inputs or bad attributes are MXNet errors naming the problem.
 */
#ifndef SSDKIT_MULTIBOX_TARGET_INL_H_
#define SSDKIT_MULTIBOX_TARGET_INL_H_

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/attrs.h"
#include "common/bbox.h"
#include "common/fast_exp.h"
#include "common/macros.h"
#include "common/match.h"

namespace ssdkit {

struct MultiBoxTargetParam {
  float overlap_threshold = 0.5f;
  float ignore_label = -1.f;
  float negative_mining_ratio = -1.f;
  float negative_mining_thresh = 0.5f;
  int minimum_negative_samples = 0;
  Variances variances;

  bool mining() const { return negative_mining_ratio > 0.f; }

  static MultiBoxTargetParam Parse(const AttrMap& attrs) {
    CheckKnownAttrs("MultiBoxTarget", attrs,
                    {"overlap_threshold", "ignore_label", "negative_mining_ratio",
                     "negative_mining_thresh", "minimum_negative_samples", "variances"});
    MultiBoxTargetParam p;
    p.overlap_threshold = static_cast<float>(
        ParseDouble("overlap_threshold", AttrOr(attrs, "overlap_threshold", "0.5")));
    p.ignore_label = static_cast<float>(ParseDouble("ignore_label", AttrOr(attrs, "ignore_label", "-1")));
    p.negative_mining_ratio = static_cast<float>(
        ParseDouble("negative_mining_ratio", AttrOr(attrs, "negative_mining_ratio", "-1")));
    p.negative_mining_thresh = static_cast<float>(
        ParseDouble("negative_mining_thresh", AttrOr(attrs, "negative_mining_thresh", "0.5")));
    p.minimum_negative_samples =
        ParseInt("minimum_negative_samples", AttrOr(attrs, "minimum_negative_samples", "0"));
    p.variances = ParseVariances(attrs, /*require_positive=*/true);
    if (std::isnan(p.overlap_threshold)) throw std::invalid_argument("'overlap_threshold' is NaN");
    if (!std::isfinite(p.negative_mining_ratio)) {
      throw std::invalid_argument("'negative_mining_ratio' must be finite (-1 disables mining)");
    }
    if (p.mining() && !(p.negative_mining_thresh > 0.f)) {
      throw std::invalid_argument("'negative_mining_thresh' must be > 0 when negative mining is on "
                                  "(negative_mining_ratio > 0)");
    }
    if (p.minimum_negative_samples < 0) {
      throw std::invalid_argument("'minimum_negative_samples' must be >= 0");
    }
    return p;
  }
};

/*! \brief True if label row `row` (width >= 5) is a usable ground truth for C object classes. */
SSDKIT_HD bool IsValidGroundTruth(const float* row, int num_classes) {
  float c = row[0];
  if (!(c >= 0.f) || !(c < static_cast<float>(num_classes))) return false;
  for (int k = 1; k < 5; ++k) {
    if (!(row[k] - row[k] == 0.f)) return false;  // NaN or inf
  }
  return true;
}

/*! \brief True if label row `row` marks the start of the padding (class -1). */
SSDKIT_HD bool IsPaddingRow(const float* row) { return row[0] == -1.f; }

/*!
 * \brief Number of negatives mining asks for (before limiting to the candidates).
 *  Computed as contrib does: float product, truncated toward zero.
 */
SSDKIT_HD int NumNegativesWanted(int num_positive, int num_anchors, float ratio, int minimum) {
  float want = static_cast<float>(num_positive) * ratio;
  int n = want >= 2147483647.f ? 2147483647 : static_cast<int>(want);
  if (n < minimum) n = minimum;
  if (n > num_anchors - num_positive) n = num_anchors - num_positive;
  return n;
}

/*!
 * \brief The ground truths of one image: label rows (M, W) up to the first padding row, those that
 *  are IsValidGroundTruth; their boxes compacted into gts (G, 4) and their row numbers into rows
 *  (G,). Returns G. Used by the CPU kernel and the CUDA kernel alike.
 */
SSDKIT_HD int CollectImageGroundTruths(const float* labels, int num_labels, int label_width, int num_classes,
                                       float* gts, int* rows) {
  int g = 0;
  for (int r = 0; r < num_labels; ++r) {
    const float* row = labels + static_cast<size_t>(r) * label_width;
    if (IsPaddingRow(row)) break;
    if (!IsValidGroundTruth(row, num_classes)) continue;
    for (int k = 0; k < 4; ++k) gts[4 * g + k] = row[1 + k];
    rows[g] = r;
    ++g;
  }
  return g;
}

/*!
 * \brief Background probability softmax(x[:, j])[0] of `lanes` (<= kLanes) adjacent anchors, x with
 *  `stride` floats between channels: max-subtracted, exponentials (common/fast_exp.h) summed in
 *  channel order, as contrib does. Channel-major over the lanes so that the CPU loops (kLanes = 128)
 *  are contiguous and vectorised; the CUDA kernel runs it per anchor (kLanes = 1). The same
 *  operations in the same order on both sides (the CUDA build has FMA contraction off).
 */
template <int kLanes>
SSDKIT_HD_ALWAYS_INLINE void BackgroundProbLanes(const float* x, size_t stride, int num_channels, int lanes, float* prob) {
  float mx[kLanes], e0[kLanes], sum[kLanes];
  for (int i = 0; i < lanes; ++i) mx[i] = x[i];
  for (int k = 1; k < num_channels; ++k) {
    const float* xk = x + static_cast<size_t>(k) * stride;
    SSDKIT_SIMD
    for (int i = 0; i < lanes; ++i) mx[i] = xk[i] > mx[i] ? xk[i] : mx[i];
  }
  SSDKIT_SIMD
  for (int i = 0; i < lanes; ++i) {
    e0[i] = ExpNonPositive(x[i] - mx[i]);
    sum[i] = e0[i];
  }
  for (int k = 1; k < num_channels; ++k) {
    const float* xk = x + static_cast<size_t>(k) * stride;
    SSDKIT_SIMD
    for (int i = 0; i < lanes; ++i) sum[i] += ExpNonPositive(xk[i] - mx[i]);
  }
  SSDKIT_SIMD
  for (int i = 0; i < lanes; ++i) prob[i] = e0[i] / sum[i];
}

/*!
 * \brief Output values of one anchor for its match `g` (>= 0: a ground truth, match::kUnmatched: a
 *  negative, else ignored): loc (4,) = BoxEncode against `gt_box` and mask (4,) = 1 for a positive,
 *  both 0 otherwise; *cls = gt_class + 1, 0 or ignore_label. gt_box / gt_class are read only for a
 *  positive. The CPU loop and the CUDA kernel both write every anchor through this.
 */
SSDKIT_HD void WriteAnchorTarget(int g, const float* anchor, const float* gt_box, float gt_class,
                                 const Variances& variances, float ignore_label, float* loc, float* mask,
                                 float* cls) {
  if (g >= 0) {
    *cls = gt_class + 1.f;
    BoxEncode(anchor, gt_box, variances, loc);
    for (int k = 0; k < 4; ++k) mask[k] = 1.f;
  } else {
    *cls = g == match::kUnmatched ? 0.f : ignore_label;
    for (int k = 0; k < 4; ++k) {
      loc[k] = 0.f;
      mask[k] = 0.f;
    }
  }
}

#ifdef SSDKIT_WITH_CUDA
/*! \brief CUDA launcher (multibox_target.cu). Device pointers; `stream` is a cudaStream_t.
 *  `workspace` is device memory of MultiBoxTargetWorkspaceBytes() bytes. */
size_t MultiBoxTargetWorkspaceBytes(int batch, int num_anchors, int num_labels);
void MultiBoxTargetForwardGPU(const MultiBoxTargetParam& p, const float* anchors, const float* labels,
                              const float* cls_pred, int batch, int num_anchors, int num_labels,
                              int label_width, int num_channels, float* loc_target, float* loc_mask,
                              float* cls_target, void* workspace, void* stream);
#endif

}  // namespace ssdkit

#endif  // SSDKIT_MULTIBOX_TARGET_INL_H_
