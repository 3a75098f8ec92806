/*!
 * \file rpn_anchors-inl.h
 * \brief RPNAnchors: parameters and the anchor-shape table of one FPN level.
 *
 * Input  data    (B, C, H, W)     feature map of the level; only H and W are read
 * Output anchors (1, H*W*A, 4)    pixel corners (x0, y0, x1, y1), A = len(ratios) * len(scales)
 *
 * Equal to ssdkit.anchors.rpn_anchors(H, W, stride, scales, ratios, offset): location-major
 * (row, column), then ratio, then scale. For ratio r (height / width) and scale s the anchor has
 * side = stride * s, width w = side / sqrt(r), height w * r (area side^2), computed in double and
 * rounded to float32 like numpy; centres ((c + offset) * stride, (r + offset) * stride) in float32.
 * The grid is the shared one of common/anchor_grid.h (MultiBoxPrior uses it too), so the CPU
 * (OpenMP) and CUDA kernels are those of anchor_grid.cc / anchor_grid.cu.
 * Standard library only.
 */
#ifndef SSDKIT_RPN_ANCHORS_INL_H_
#define SSDKIT_RPN_ANCHORS_INL_H_

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/anchor_grid.h"
#include "common/attrs.h"

namespace ssdkit {

struct RPNAnchorsParam {
  int stride = 16;
  std::vector<double> scales{8.0};
  std::vector<double> ratios{0.5, 1.0, 2.0};
  double offset = 0.5;

  int num_anchors() const { return static_cast<int>(scales.size() * ratios.size()); }

  static RPNAnchorsParam Parse(const AttrMap& attrs) {
    CheckKnownAttrs("RPNAnchors", attrs, {"stride", "scales", "ratios", "offset"});
    RPNAnchorsParam p;
    if (attrs.find("stride") == attrs.end()) {
      throw std::invalid_argument("'stride' is required (pixels between neighbouring cells, e.g. "
                                  "stride=4 for P2)");
    }
    p.stride = ParseInt("stride", attrs.at("stride"));
    p.scales = ParseDoubleList("scales", AttrOr(attrs, "scales", "(8,)"));
    p.ratios = ParseDoubleList("ratios", AttrOr(attrs, "ratios", "(0.5, 1, 2)"));
    p.offset = ParseDouble("offset", AttrOr(attrs, "offset", "0.5"));
    if (p.stride <= 0) {
      throw std::invalid_argument("'stride' must be a positive integer, got " + std::to_string(p.stride));
    }
    if (p.scales.empty()) throw std::invalid_argument("'scales' must not be empty, e.g. scales=(8,)");
    if (p.ratios.empty()) throw std::invalid_argument("'ratios' must not be empty, e.g. ratios=(0.5, 1, 2)");
    for (double s : p.scales) {
      if (!(s > 0.0) || !std::isfinite(s)) {
        throw std::invalid_argument("every scale must be a positive finite number, got " + std::to_string(s));
      }
    }
    for (double r : p.ratios) {
      if (!(r > 0.0) || !std::isfinite(r)) {
        throw std::invalid_argument("every ratio must be a positive finite number, got " + std::to_string(r));
      }
    }
    if (!std::isfinite(p.offset)) throw std::invalid_argument("'offset' must be finite");
    return p;
  }

  /*! \brief The anchor grid of an H x W map of this level. */
  AnchorGrid Grid(int height, int width) const {
    AnchorGrid g;
    g.height = height;
    g.width = width;
    g.step_y = g.step_x = static_cast<float>(stride);
    g.offset_y = g.offset_x = static_cast<float>(offset);
    g.clip = false;
    for (double r : ratios) {
      for (double s : scales) {
        const double side = static_cast<double>(stride) * s;
        const double w = side / std::sqrt(r);
        g.half.push_back(static_cast<float>(w / 2));
        g.half.push_back(static_cast<float>(w * r / 2));
      }
    }
    return g;
  }
};

}  // namespace ssdkit

#endif  // SSDKIT_RPN_ANCHORS_INL_H_
