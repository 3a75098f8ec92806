/*!
 * \file multibox_prior-inl.h
 * \brief MultiBoxPrior: parameters, shape rule and the table of anchor shapes.
 *
 * Semantics follow mx.contrib.nd.MultiBoxPrior. For a feature map (B, C, H, W) the output is
 * (1, H*W*A, 4) corner boxes (xmin, ymin, xmax, ymax) normalised to [0, 1], A = len(sizes) +
 * len(ratios) - 1 anchors per location, ordered location-major (row, column), then
 *   a < len(sizes):  size = sizes[a],  ratio = ratios[0]
 *   a >= len(sizes): size = sizes[0],  ratio = ratios[a - len(sizes) + 1]
 * with half width  = size * H / W * sqrt(ratio) / 2 and half height = size / sqrt(ratio) / 2,
 * centred at ((c + offsets[1]) * step_x, (r + offsets[0]) * step_y), step = steps or 1 / map size.
 * The grid itself is the shared one of common/anchor_grid.h (also used by RPNAnchors); this
 * operator only supplies its table of anchor shapes (Grid()).
 */
#ifndef SSDKIT_MULTIBOX_PRIOR_INL_H_
#define SSDKIT_MULTIBOX_PRIOR_INL_H_

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/anchor_grid.h"
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

  /*! \brief The anchor grid of an H x W map: steps default to 1 / map size; the half sizes are
   *  computed in float32 in the order of the formula above. */
  AnchorGrid Grid(int height, int width) const {
    AnchorGrid g;
    g.height = height;
    g.width = width;
    g.step_y = step_y > 0 ? step_y : 1.f / height;
    g.step_x = step_x > 0 ? step_x : 1.f / width;
    g.offset_y = offset_y;
    g.offset_x = offset_x;
    g.clip = clip;
    const int num_sizes = static_cast<int>(sizes.size());
    for (int a = 0; a < num_anchors(); ++a) {
      float size = a < num_sizes ? sizes[a] : sizes[0];
      float ratio = a < num_sizes ? ratios[0] : ratios[a - num_sizes + 1];
      float sr = sqrtf(ratio);
      g.half.push_back(size * height / width * sr / 2);
      g.half.push_back(size / sr / 2);
    }
    return g;
  }
};

}  // namespace ssdkit

#endif  // SSDKIT_MULTIBOX_PRIOR_INL_H_
