/*!
 * \file multilevel_roi_align-inl.h
 * \brief MultiLevelROIAlign: parameters, shape checks, and the sampling and bilinear formulas that the
 *        CPU kernels (multilevel_roi_align.cc) and the CUDA kernels (multilevel_roi_align.cu) share.
 *
 * Inputs  feat_0 .. feat_{L-1}  (B, C, H_l, W_l)  pyramid levels min_level .. min_level + L - 1
 *         rois                  (R, 5)            rows [batch_index, x0, y0, x1, y1], input pixels
 *         levels (level_input)  (R,)              level number of each RoI (optional input)
 * Output  out                   (R, C, P, P)      each RoI pooled on its own level only
 *
 * Level of a RoI: the `levels` input when level_input=True, else the FPN rule (Lin et al. 2017,
 * eq. 1) that ssdkit.symbol.fpn_head.roi_levels computes, in float32:
 *   level = clip(floor(canonical_level + log2(max(sqrt(w * h), 1e-6) / canonical_size)),
 *                min_level, min_level + L - 1),   w = max(x1 - x0, 0), h = max(y1 - y0, 0).
 *
 * Pooling on level l is RoIAlign (He et al. 2017) with spatial_scales[l], as MXNet's contrib.ROIAlign
 * computes it: the RoI spans [x0 * s - o, x1 * s - o] (o = 0.5 when aligned, else 0; when not aligned
 * the span is at least 1 cell), cut into P x P bins; each bin averages grid_h x grid_w bilinear
 * samples at the centres of a regular sub-grid (grid = sample_ratio, or ceil(bin size) when
 * sample_ratio <= 0); a sample further than one cell outside the map counts as 0, one within it is
 * clamped to the border.
 *
 * Defined where contrib is not:
 *  - rows with batch_index < 0 (padding), a non-finite coordinate, or (level_input) a level outside
 *    the pyramid give zeros and no gradient;
 *  - a zero-size RoI with sample_ratio <= 0 has a 0 x 0 grid and gives zeros (the sample count of a
 *    bin is max(grid_h * grid_w, 1)); with sample_ratio > 0 every sample sits on the RoI's point;
 *  - batch_index >= B is an error on the CPU (the CUDA kernels give zeros, they cannot raise).
 *
 * Gradient: d feat_l[b, c, y, x] = sum over the RoIs on level l of image b, their bins and samples,
 * of bilinear weight * d out / count; none to rois or levels. The CPU backward gives every channel
 * to one task that adds the RoIs in row order, so the result is the same for any thread count.
 * Standard library only (plus macros.h), so nvcc compiles it.
 */
#ifndef SSDKIT_MULTILEVEL_ROI_ALIGN_INL_H_
#define SSDKIT_MULTILEVEL_ROI_ALIGN_INL_H_

#include <cmath>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/attrs.h"
#include "common/macros.h"
#include "common/shapes.h"

namespace ssdkit {

/*! \brief Pyramid levels one call may take (the CUDA kernels carry their pointers by value). */
constexpr size_t kMaxRoiAlignLevels = 8;

struct MultiLevelROIAlignParam {
  std::vector<double> spatial_scales;  // one per level, e.g. (0.25, 0.125, 0.0625, 0.03125)
  int pooled_h = 7;
  int pooled_w = 7;
  int sample_ratio = -1;
  bool aligned = false;
  int min_level = 2;
  double canonical_size = 224.0;
  int canonical_level = 4;
  bool level_input = false;

  int num_levels() const { return static_cast<int>(spatial_scales.size()); }
  int num_inputs() const { return num_levels() + 1 + (level_input ? 1 : 0); }

  static MultiLevelROIAlignParam Parse(const AttrMap& attrs) {
    CheckKnownAttrs("MultiLevelROIAlign", attrs,
                    {"spatial_scales", "pooled_size", "sample_ratio", "aligned", "min_level", "canonical_size",
                     "canonical_level", "level_input"});
    MultiLevelROIAlignParam p;
    if (attrs.find("spatial_scales") == attrs.end()) {
      throw std::invalid_argument("'spatial_scales' is required: one per feature map, e.g. "
                                  "spatial_scales=(0.25, 0.125, 0.0625, 0.03125) for P2-P5");
    }
    p.spatial_scales = ParseDoubleList("spatial_scales", attrs.at("spatial_scales"));
    if (p.spatial_scales.empty() || p.spatial_scales.size() > kMaxRoiAlignLevels) {
      throw std::invalid_argument("'spatial_scales' must hold 1 to " + std::to_string(kMaxRoiAlignLevels) +
                                  " levels, got " + std::to_string(p.spatial_scales.size()));
    }
    for (double s : p.spatial_scales) {
      if (!(s > 0.0) || !std::isfinite(s)) {
        throw std::invalid_argument("every spatial scale must be a positive finite number, got " + std::to_string(s));
      }
    }
    std::vector<double> pooled = ParseDoubleList("pooled_size", AttrOr(attrs, "pooled_size", "(7, 7)"));
    if (pooled.size() == 1) pooled.push_back(pooled[0]);
    if (pooled.size() != 2) throw std::invalid_argument("'pooled_size' must be an int or (height, width)");
    for (double v : pooled) {
      if (v != std::floor(v) || v < 1 || v > 1024) {
        throw std::invalid_argument("'pooled_size' entries must be integers in [1, 1024], got " + std::to_string(v));
      }
    }
    p.pooled_h = static_cast<int>(pooled[0]);
    p.pooled_w = static_cast<int>(pooled[1]);
    p.sample_ratio = ParseInt("sample_ratio", AttrOr(attrs, "sample_ratio", "-1"));
    if (p.sample_ratio > 64) {
      throw std::invalid_argument("'sample_ratio' must be <= 64 (or <= 0 for adaptive), got " +
                                  std::to_string(p.sample_ratio));
    }
    p.aligned = ParseBool("aligned", AttrOr(attrs, "aligned", "False"));
    p.min_level = ParseInt("min_level", AttrOr(attrs, "min_level", "2"));
    p.canonical_size = ParseDouble("canonical_size", AttrOr(attrs, "canonical_size", "224"));
    p.canonical_level = ParseInt("canonical_level", AttrOr(attrs, "canonical_level", "4"));
    p.level_input = ParseBool("level_input", AttrOr(attrs, "level_input", "False"));
    if (!(p.canonical_size > 0.0) || !std::isfinite(p.canonical_size)) {
      throw std::invalid_argument("'canonical_size' must be a positive finite number");
    }
    return p;
  }
};

/*! \brief Sizes of one call, checked against each other. */
struct RoiAlignDims {
  int batch = 0, channels = 0, num_rois = 0;
  std::vector<int> height, width;  // per level
};

/*! \brief Check the input shapes (features..., rois[, levels]); return the sizes. */
inline RoiAlignDims CheckRoiAlignShapes(const MultiLevelROIAlignParam& p,
                                        const std::vector<std::vector<unsigned int>>& shapes) {
  if (static_cast<int>(shapes.size()) != p.num_inputs()) {
    throw std::invalid_argument("expected " + std::to_string(p.num_inputs()) + " inputs (" +
                                std::to_string(p.num_levels()) + " feature maps, rois" +
                                (p.level_input ? ", levels" : "") + "), got " + std::to_string(shapes.size()));
  }
  RoiAlignDims d;
  for (int l = 0; l < p.num_levels(); ++l) {
    const auto& s = shapes[static_cast<size_t>(l)];
    if (s.size() != 4 || s[0] == 0 || s[1] == 0 || s[2] == 0 || s[3] == 0) {
      throw std::invalid_argument("feature map " + std::to_string(l) + " must be 4-d (B, C, H, W) with no "
                                  "empty axis, got " + ShapeString(s));
    }
    if (l == 0) {
      d.batch = static_cast<int>(s[0]);
      d.channels = static_cast<int>(s[1]);
    } else if (static_cast<int>(s[0]) != d.batch || static_cast<int>(s[1]) != d.channels) {
      throw std::invalid_argument("every feature map must have the batch and channels of the first, " +
                                  ShapeString(shapes[0]) + ", but feature map " + std::to_string(l) +
                                  " is " + ShapeString(s));
    }
    d.height.push_back(static_cast<int>(s[2]));
    d.width.push_back(static_cast<int>(s[3]));
  }
  const auto& r = shapes[static_cast<size_t>(p.num_levels())];
  if (r.size() != 2 || r[1] != 5) {
    throw std::invalid_argument("rois must be (R, 5) rows [batch_index, x0, y0, x1, y1], got " + ShapeString(r));
  }
  d.num_rois = static_cast<int>(r[0]);
  if (p.level_input) {
    const auto& lv = shapes[static_cast<size_t>(p.num_levels()) + 1];
    if (lv.size() != 1 || lv[0] != r[0]) {
      throw std::invalid_argument("levels must be (R,) = (" + std::to_string(r[0]) + ",), one level per RoI, got " +
                                  ShapeString(lv));
    }
  }
  const double out = static_cast<double>(d.num_rois) * d.channels * p.pooled_h * p.pooled_w;
  if (out > 2147483647.0) {
    throw std::invalid_argument("output (R, C, P, P) = (" + std::to_string(d.num_rois) + ", " +
                                std::to_string(d.channels) + ", " + std::to_string(p.pooled_h) + ", " +
                                std::to_string(p.pooled_w) + ") has more than 2^31 - 1 elements");
  }
  return d;
}

/*! \brief The level index (0 .. L-1) of one RoI by the FPN rule, in float32 like roi_levels. */
SSDKIT_HD int FpnLevelIndex(const float* roi, int num_levels, float canonical_size, int canonical_level,
                            int min_level) {
  const float w = fmaxf(roi[3] - roi[1], 0.0f);
  const float h = fmaxf(roi[4] - roi[2], 0.0f);
  const float size = fmaxf(sqrtf(w * h), 1e-6f);
  float level = floorf(log2f(size / canonical_size) + static_cast<float>(canonical_level));
  level = fminf(fmaxf(level, static_cast<float>(min_level)), static_cast<float>(min_level + num_levels - 1));
  return static_cast<int>(level) - min_level;
}

/*! \brief The level index of a RoI from the `levels` input; -1 outside the pyramid. */
SSDKIT_HD int GivenLevelIndex(float level, int num_levels, int min_level) {
  if (!(level == level)) return -1;
  const float index = floorf(level) - static_cast<float>(min_level);
  return (index >= 0.0f && index < static_cast<float>(num_levels)) ? static_cast<int>(index) : -1;
}

/*! \brief True when the RoI row takes part: batch index >= 0 and finite coordinates. */
SSDKIT_HD bool RoiRowValid(const float* roi) {
  for (int k = 0; k < 5; ++k) {
    if (!(roi[k] - roi[k] == 0.0f)) return false;  // NaN or +-inf (no isfinite in both compilers' scope)
  }
  return roi[0] >= 0.0f;
}

/*! \brief Where the samples of one RoI lie on its level (in cells). */
struct RoiSampling {
  float start_y, start_x;  // top-left corner of bin (0, 0)
  float bin_h, bin_w;      // bin size
  int grid_h, grid_w;      // samples per bin side
  float count;             // samples averaged per bin: max(grid_h * grid_w, 1)
};

SSDKIT_HD RoiSampling RoiGeometry(const float* roi, float scale, int pooled_h, int pooled_w, int sample_ratio,
                                  bool aligned) {
  const float offset = aligned ? 0.5f : 0.0f;
  RoiSampling g;
  g.start_x = roi[1] * scale - offset;
  g.start_y = roi[2] * scale - offset;
  float roi_w = roi[3] * scale - offset - g.start_x;
  float roi_h = roi[4] * scale - offset - g.start_y;
  if (!aligned) {
    roi_w = fmaxf(roi_w, 1.0f);
    roi_h = fmaxf(roi_h, 1.0f);
  }
  g.bin_h = roi_h / static_cast<float>(pooled_h);
  g.bin_w = roi_w / static_cast<float>(pooled_w);
  g.grid_h = sample_ratio > 0 ? sample_ratio : static_cast<int>(ceilf(roi_h / static_cast<float>(pooled_h)));
  g.grid_w = sample_ratio > 0 ? sample_ratio : static_cast<int>(ceilf(roi_w / static_cast<float>(pooled_w)));
  if (g.grid_h < 0) g.grid_h = 0;  // an inverted RoI (x1 < x0) in aligned mode has no samples
  if (g.grid_w < 0) g.grid_w = 0;
  const int n = g.grid_h * g.grid_w;
  g.count = static_cast<float>(n > 0 ? n : 1);
  return g;
}

/*! \brief Sample (iy, ix) of bin (ph, pw): its position (y, x) in cells. */
SSDKIT_HD void SamplePosition(const RoiSampling& g, int ph, int pw, int iy, int ix, float* y, float* x) {
  *y = g.start_y + static_cast<float>(ph) * g.bin_h +
       (static_cast<float>(iy) + 0.5f) * g.bin_h / static_cast<float>(g.grid_h);
  *x = g.start_x + static_cast<float>(pw) * g.bin_w +
       (static_cast<float>(ix) + 0.5f) * g.bin_w / static_cast<float>(g.grid_w);
}

/*! \brief The four cells a bilinear sample reads and their weights (offsets into an H x W plane). */
struct BilinearTap {
  int offset[4];   // (y_low, x_low), (y_low, x_high), (y_high, x_low), (y_high, x_high)
  float weight[4];
};

/*! \brief Taps of the sample at (y, x) on an H x W map; false (no taps) when it lies more than one
 *  cell outside the map. Within that margin the position is clamped to the border. */
SSDKIT_HD bool BilinearTaps(float y, float x, int height, int width, BilinearTap* tap) {
  if (y < -1.0f || y > static_cast<float>(height) || x < -1.0f || x > static_cast<float>(width)) return false;
  if (y <= 0.0f) y = 0.0f;
  if (x <= 0.0f) x = 0.0f;
  int y_low = static_cast<int>(y), x_low = static_cast<int>(x), y_high, x_high;
  if (y_low >= height - 1) {
    y_high = y_low = height - 1;
    y = static_cast<float>(y_low);
  } else {
    y_high = y_low + 1;
  }
  if (x_low >= width - 1) {
    x_high = x_low = width - 1;
    x = static_cast<float>(x_low);
  } else {
    x_high = x_low + 1;
  }
  const float ly = y - static_cast<float>(y_low), lx = x - static_cast<float>(x_low);
  const float hy = 1.0f - ly, hx = 1.0f - lx;
  tap->offset[0] = y_low * width + x_low;
  tap->offset[1] = y_low * width + x_high;
  tap->offset[2] = y_high * width + x_low;
  tap->offset[3] = y_high * width + x_high;
  tap->weight[0] = hy * hx;
  tap->weight[1] = hy * lx;
  tap->weight[2] = ly * hx;
  tap->weight[3] = ly * lx;
  return true;
}

#ifdef SSDKIT_WITH_CUDA
/*! \brief The CUDA launchers (multilevel_roi_align.cu). Pointers are device pointers; `features` and
 *  `grads` hold L level pointers each (host arrays), `levels` may be null (FPN rule). */
void MultiLevelROIAlignForwardGPU(const MultiLevelROIAlignParam& p, const RoiAlignDims& d,
                                  const float* const* features, const float* rois, const float* levels,
                                  float* out, void* stream);
void MultiLevelROIAlignBackwardGPU(const MultiLevelROIAlignParam& p, const RoiAlignDims& d, const float* grad_out,
                                   const float* rois, const float* levels, float* const* grads, void* stream);
#endif

}  // namespace ssdkit

#endif  // SSDKIT_MULTILEVEL_ROI_ALIGN_INL_H_
