/*!
 * \file mask_target-inl.h
 * \brief MaskTarget: parameters, shape rule and the per-RoI / per-bin rules shared by the CPU and
 *        CUDA kernels (standard library only, nvcc-safe).
 *
 * Inputs
 *   rois      (R, 5)             [batch_index, x0, y0, x1, y1] in image pixels (ProposalTarget's
 *                                rois_out, or a slice of its rows)
 *   labels    (R,)               ProposalTarget's labels: k + 1 foreground of class k, 0 background,
 *                                -1 padding
 *   gt        (B, M, W >= 5)     pixel label rows [cls, x0, y0, x1, y1, ...], padded with cls = -1
 *   gt_masks  (B, M, Hm, Wm)     instance masks in [0, 1], plane (b, m) belongs to label row (b, m);
 *                                mask pixel (y, x) covers image pixels [x, x + 1) / spatial_scale
 * Output
 *   mask_target (R, S, S)        S = mask_size: 0/1 for a foreground row, -1 everywhere in the other
 *                                rows (ignored by the mask loss)
 *
 * Per row r:
 *  1. Foreground: labels[r] >= 1 (then k = floor(labels[r]) - 1) and rois[r] is a RoI of an image
 *     (common/two_stage.h RoiImage: integer batch index in [0, B), finite, positive width and height).
 *  2. The matched ground truth, exactly as ProposalTarget chooses it: the ground truths of image b
 *     (common/ground_truth.h labels::Collect, classes in [0, num_classes), any class id when
 *     num_classes = 0) and the RoI's best one (common/match.h BestOverlap: highest IoU, lowest index
 *     on ties). The row stays -1 when the image has no ground truth or the matched ground truth's
 *     class (truncated) is not k: labels and gt that do not belong together give no target.
 *  3. The target: RoIAlign of the matched ground truth's mask plane in the RoI, with the sampling
 *     and bilinear rules of MultiLevelROIAlign (multilevel_roi_align-inl.h RoiGeometry,
 *     SamplePosition, BilinearTaps; o = 0.5 when aligned): S x S bins, each the average of
 *     grid x grid samples (grid = sample_ratio, or ceil(bin size) capped at kMaxAdaptiveGrid when
 *     sample_ratio <= 0), a sample more than one cell outside the mask counting 0; then
 *     mask_target = (average >= threshold) ? 1 : 0.
 *
 * Defined behaviour on bad input (never a crash or hang; inputs are never written):
 *   - labels NaN, < 1 or >= 2^31, and rois rows with a bad batch index (NaN, 2.5, -1, >= B), a NaN/inf
 *     coordinate or no area give -1 rows; unusable gt rows are skipped (ground_truth.h);
 *   - a NaN mask value reaching a bin makes its average NaN, which is not >= threshold: 0;
 *   - a zero-size RoI in aligned mode with adaptive sampling has no samples: zeros;
 *   - wrong ranks / shapes (gt_masks not (B, M, ., .) of gt), non-float32 inputs and bad attributes
 *     are MXNet errors.
 * No gradient (a target): the backward writes zeros.
 * The CUDA kernels (mask_target.cu) run these same functions but are compiled only, never run: there
 * is no GPU on the development machines.
 */
#ifndef SSDKIT_MASK_TARGET_INL_H_
#define SSDKIT_MASK_TARGET_INL_H_

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/attrs.h"
#include "common/ground_truth.h"
#include "common/macros.h"
#include "common/match.h"
#include "common/shapes.h"
#include "common/two_stage.h"
#include "multilevel_roi_align/multilevel_roi_align-inl.h"

namespace ssdkit {

/*! \brief Most samples per bin side when sample_ratio <= 0 (the explicit sample_ratio has the same cap). */
constexpr int kMaxAdaptiveGrid = 64;

struct MaskTargetParam {
  int mask_size = 28;          // S
  float spatial_scale = 1.0f;  // mask pixels per image pixel (1 / mask stride)
  int sample_ratio = 2;        // samples per bin side; <= 0: adaptive
  bool aligned = true;         // half-pixel offset (MultiLevelROIAlign's convention)
  float threshold = 0.5f;      // binarisation
  int num_classes = 0;         // C as ProposalTarget's; 0: any class id >= 0 is a ground truth

  /*! \brief labels::Collect's class limit. */
  float class_limit() const { return num_classes > 0 ? static_cast<float>(num_classes) : INFINITY; }

  static MaskTargetParam Parse(const AttrMap& attrs) {
    CheckKnownAttrs("MaskTarget", attrs,
                    {"mask_size", "spatial_scale", "sample_ratio", "aligned", "threshold", "num_classes"});
    MaskTargetParam p;
    p.mask_size = ParseInt("mask_size", AttrOr(attrs, "mask_size", "28"));
    if (p.mask_size < 1 || p.mask_size > 1024) {
      throw std::invalid_argument("'mask_size' must be in [1, 1024], got " + std::to_string(p.mask_size));
    }
    p.spatial_scale = ParseFloatIn(attrs, "spatial_scale", "1.0", 0.0, 1e6, true,
                                   "a positive finite number (mask pixels per image pixel, 1 / mask stride)");
    p.sample_ratio = ParseInt("sample_ratio", AttrOr(attrs, "sample_ratio", "2"));
    if (p.sample_ratio > kMaxAdaptiveGrid) {
      throw std::invalid_argument("'sample_ratio' must be <= " + std::to_string(kMaxAdaptiveGrid) +
                                  " (or <= 0 for adaptive), got " + std::to_string(p.sample_ratio));
    }
    p.aligned = ParseBool("aligned", AttrOr(attrs, "aligned", "True"));
    p.threshold = ParseFloatIn(attrs, "threshold", "0.5", -1e30, 1e30, false, "a finite number");
    p.num_classes = ParseInt("num_classes", AttrOr(attrs, "num_classes", "0"));
    if (p.num_classes < 0) {
      throw std::invalid_argument("'num_classes' must be >= 1 (or 0: any class id), got " +
                                  std::to_string(p.num_classes));
    }
    return p;
  }
};

/*! \brief Sizes of one call. */
struct MaskTargetDims {
  int num_rois, batch, num_labels, label_width, mask_h, mask_w;
};

/*! \brief Check rois (R, 5), labels (R,), gt (B, M, W >= 5), gt_masks (B, M, Hm, Wm) and the output size. */
inline MaskTargetDims CheckMaskTargetShapes(const MaskTargetParam& p, const std::vector<unsigned int>& r,
                                            const std::vector<unsigned int>& l, const std::vector<unsigned int>& g,
                                            const std::vector<unsigned int>& m) {
  if (r.size() != 2 || r[0] == 0 || r[1] != 5) {
    throw std::invalid_argument("rois must have shape (R, 5) with R > 0 (rows [batch_index, x0, y0, x1, y1]), "
                                "got " + ShapeString(r));
  }
  if (l.size() != 1 || l[0] != r[0]) {
    throw std::invalid_argument("labels must have shape (R,) = (" + std::to_string(r[0]) +
                                ",), one label per RoI, got " + ShapeString(l));
  }
  if (g.size() != 3 || g[0] == 0 || g[1] == 0 || g[2] < 5) {
    throw std::invalid_argument("gt must have shape (B, M, W) with B, M > 0 and W >= 5 "
                                "(rows [cls, x0, y0, x1, y1, ...]), got " + ShapeString(g));
  }
  if (m.size() != 4 || m[0] != g[0] || m[1] != g[1] || m[2] == 0 || m[3] == 0) {
    throw std::invalid_argument("gt_masks must have shape (B, M, Hm, Wm) = (" + std::to_string(g[0]) + ", " +
                                std::to_string(g[1]) + ", Hm, Wm), one mask per gt row, got " + ShapeString(m));
  }
  const double out = static_cast<double>(r[0]) * p.mask_size * p.mask_size;
  const double plane = static_cast<double>(m[2]) * m[3];
  if (out > 2147483647.0 || r[0] > 2147483647u / 5 || plane > 2147483647.0 ||
      static_cast<double>(g[0]) * g[1] * g[2] > 2147483647.0) {
    throw std::invalid_argument("MaskTarget: tensors too large (output " + std::to_string(out) +
                                " values, mask plane " + std::to_string(plane) + ")");
  }
  return {static_cast<int>(r[0]), static_cast<int>(g[0]), static_cast<int>(g[1]), static_cast<int>(g[2]),
          static_cast<int>(m[2]), static_cast<int>(m[3])};
}

/*! \brief Step 1: the class k of a foreground label (>= 1, k = floor(label) - 1), else -1 (NaN too). */
SSDKIT_HD int ForegroundClass(float label) {
  if (!(label >= 1.0f) || !(label < 2147483648.0f)) return -1;
  return static_cast<int>(label) - 1;
}

/*!
 * \brief Steps 1 and 2 for one row: the mask plane (b * M + label row) of its target, or -1 (the row
 *  is -1 everywhere).
 * \param roi       the row [batch_index, x0, y0, x1, y1]
 * \param gt        (B, M, W) the gt input
 * \param gts       (B, M, 4) per image, labels::Collect's compact ground-truth boxes
 * \param gt_rows   (B, M) per image, their label rows
 * \param num_gt    (B,) per image, their count
 */
SSDKIT_HD int MatchedMaskPlane(const float* roi, float label, const float* gt, const float* gts, const int* gt_rows,
                               const int* num_gt, int batch, int num_labels, int label_width) {
  const int k = ForegroundClass(label);
  if (k < 0) return -1;
  const int b = RoiImage(roi, batch);
  if (b < 0) return -1;
  const size_t first = static_cast<size_t>(b) * num_labels;
  float iou;
  int best;
  match::BestOverlap(roi + 1, gts + 4 * first, num_gt[b], &iou, &best);
  if (best < 0) return -1;
  const int row = gt_rows[first + best];
  const float cls = gt[(first + row) * label_width];  // usable: a number >= 0
  if (!(cls < 2147483648.0f) || static_cast<int>(cls) != k) return -1;
  return static_cast<int>(first) + row;
}

/*! \brief Step 3's sampling grid of one RoI on the mask (RoiGeometry; the adaptive grid capped). */
SSDKIT_HD RoiSampling MaskSampling(const float* roi, const MaskTargetParam& p) {
  RoiSampling g = RoiGeometry(roi, p.spatial_scale, p.mask_size, p.mask_size, p.sample_ratio > 0 ? p.sample_ratio : 1,
                              p.aligned);
  if (p.sample_ratio <= 0) {  // RoiGeometry's ceil(bin size), without converting a huge float to int
    g.grid_h = !(g.bin_h > 0.0f) ? 0 : (g.bin_h >= kMaxAdaptiveGrid ? kMaxAdaptiveGrid : static_cast<int>(ceilf(g.bin_h)));
    g.grid_w = !(g.bin_w > 0.0f) ? 0 : (g.bin_w >= kMaxAdaptiveGrid ? kMaxAdaptiveGrid : static_cast<int>(ceilf(g.bin_w)));
    const int n = g.grid_h * g.grid_w;
    g.count = static_cast<float>(n > 0 ? n : 1);
  }
  return g;
}

/*! \brief Step 3 for bin (ph, pw): the binarised average of its samples on an Hm x Wm mask plane. */
SSDKIT_HD float MaskBin(const float* plane, int height, int width, const RoiSampling& g, int ph, int pw,
                        float threshold) {
  float sum = 0.0f;
  for (int iy = 0; iy < g.grid_h; ++iy) {
    for (int ix = 0; ix < g.grid_w; ++ix) {
      float y, x;
      BilinearTap tap;
      SamplePosition(g, ph, pw, iy, ix, &y, &x);
      if (!BilinearTaps(y, x, height, width, &tap)) continue;
      sum += tap.weight[0] * plane[tap.offset[0]] + tap.weight[1] * plane[tap.offset[1]] +
             tap.weight[2] * plane[tap.offset[2]] + tap.weight[3] * plane[tap.offset[3]];
    }
  }
  return sum / g.count >= threshold ? 1.0f : 0.0f;
}

#ifdef SSDKIT_WITH_CUDA
/*! \brief CUDA launcher (mask_target.cu). Device pointers; `workspace` is device memory of
 *  MaskTargetWorkspaceBytes() bytes, `stream` a cudaStream_t. */
size_t MaskTargetWorkspaceBytes(const MaskTargetDims& d);
void MaskTargetForwardGPU(const MaskTargetParam& p, const MaskTargetDims& d, const float* rois, const float* labels,
                          const float* gt, const float* gt_masks, float* out, void* workspace, void* stream);
#endif

}  // namespace ssdkit

#endif  // SSDKIT_MASK_TARGET_INL_H_
