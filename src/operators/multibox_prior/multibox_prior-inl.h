/*!
 * \file multibox_prior-inl.h
 * \brief MultiBoxPrior: parameters, shape rule and the per-anchor formula shared by CPU and CUDA.
 *
 * Semantics follow mx.contrib.nd.MultiBoxPrior. For a feature map (B, C, H, W) the output is
 * (1, H*W*A, 4) corner boxes (xmin, ymin, xmax, ymax) normalised to [0, 1], A = len(sizes) +
 * len(ratios) - 1 anchors per location, ordered location-major (row, column), then
 *   a < len(sizes):  size = sizes[a],  ratio = ratios[0]
 *   a >= len(sizes): size = sizes[0],  ratio = ratios[a - len(sizes) + 1]
 * with half width  = size * H / W * sqrt(ratio) / 2 and half height = size / sqrt(ratio) / 2,
 * centred at ((c + offsets[1]) * step_x, (r + offsets[0]) * step_y), step = steps or 1 / map size.
 * Standard library only: included by the .cc (g++) and the .cu (nvcc).
 */
#ifndef SSDKIT_MULTIBOX_PRIOR_INL_H_
#define SSDKIT_MULTIBOX_PRIOR_INL_H_

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/attrs.h"
#include "common/macros.h"

namespace ssdkit {

struct MultiBoxPriorParam {
  std::vector<float> sizes{1.0f};
  std::vector<float> ratios{1.0f};
  bool clip = false;
  float step_y = -1.f, step_x = -1.f;      // <= 0: 1 / map size
  float offset_y = 0.5f, offset_x = 0.5f;

  int num_anchors() const { return static_cast<int>(sizes.size() + ratios.size()) - 1; }

  static MultiBoxPriorParam Parse(const AttrMap& attrs) {
    CheckKnownAttrs("MultiBoxPrior", attrs, {"sizes", "ratios", "clip", "steps", "offsets"});
    MultiBoxPriorParam p;
    std::vector<double> sizes = ParseDoubleList("sizes", AttrOr(attrs, "sizes", "(1.0,)"));
    std::vector<double> ratios = ParseDoubleList("ratios", AttrOr(attrs, "ratios", "(1.0,)"));
    std::vector<double> steps = ParseDoubleList("steps", AttrOr(attrs, "steps", "(-1, -1)"));
    std::vector<double> offsets = ParseDoubleList("offsets", AttrOr(attrs, "offsets", "(0.5, 0.5)"));
    p.clip = ParseBool("clip", AttrOr(attrs, "clip", "False"));
    if (sizes.empty()) throw std::invalid_argument("'sizes' must not be empty, e.g. sizes=(0.2, 0.27)");
    if (ratios.empty()) throw std::invalid_argument("'ratios' must not be empty, e.g. ratios=(1, 2, 0.5)");
    for (double s : sizes) {
      if (!(s > 0.0) || !std::isfinite(s)) {
        throw std::invalid_argument("every size must be a positive finite number, got " + std::to_string(s));
      }
    }
    for (double r : ratios) {
      if (!(r > 0.0) || !std::isfinite(r)) {
        throw std::invalid_argument("every ratio must be a positive finite number, got " + std::to_string(r));
      }
    }
    if (steps.size() != 2) throw std::invalid_argument("'steps' must have 2 values (step_y, step_x)");
    if (offsets.size() != 2) throw std::invalid_argument("'offsets' must have 2 values (offset_y, offset_x)");
    for (double v : steps) {
      if (!std::isfinite(v)) throw std::invalid_argument("'steps' must be finite");
    }
    for (double v : offsets) {
      if (!std::isfinite(v)) throw std::invalid_argument("'offsets' must be finite");
    }
    p.sizes.assign(sizes.begin(), sizes.end());
    p.ratios.assign(ratios.begin(), ratios.end());
    p.step_y = static_cast<float>(steps[0]);
    p.step_x = static_cast<float>(steps[1]);
    p.offset_y = static_cast<float>(offsets[0]);
    p.offset_x = static_cast<float>(offsets[1]);
    return p;
  }
};

/*!
 * \brief Write anchor `a` of location (r, c) to out[0..3].
 * \param sizes, ratios  the parameter lists (device pointers on the GPU)
 */
SSDKIT_HD void MultiBoxPriorAnchor(int r, int c, int a, int height, int width,
                                   const float* sizes, int num_sizes, const float* ratios,
                                   float step_y, float step_x, float offset_y, float offset_x,
                                   bool clip, float* out) {
  float cy = (r + offset_y) * step_y;
  float cx = (c + offset_x) * step_x;
  float size = a < num_sizes ? sizes[a] : sizes[0];
  float ratio = a < num_sizes ? ratios[0] : ratios[a - num_sizes + 1];
  float sr = sqrtf(ratio);
  float hw = size * height / width * sr / 2;
  float hh = size / sr / 2;
  float box[4] = {cx - hw, cy - hh, cx + hw, cy + hh};
  for (int k = 0; k < 4; ++k) {
    float v = box[k];
    if (clip) v = v < 0.f ? 0.f : (v > 1.f ? 1.f : v);
    out[k] = v;
  }
}

#ifdef SSDKIT_WITH_CUDA
/*! \brief CUDA launcher (multibox_prior.cu). `sizes`/`ratios` are host arrays; stream is cudaStream_t. */
void MultiBoxPriorForwardGPU(const MultiBoxPriorParam& p, int height, int width, float* out,
                             void* stream);
#endif

}  // namespace ssdkit

#endif  // SSDKIT_MULTIBOX_PRIOR_INL_H_
