/*!
 * \file anchor_grid.h
 * \brief The one anchor grid of every detector: a table of anchor shapes placed on every cell
 *        of a feature map (MultiBoxPrior for SSD, RPNAnchors for FPN differ only in the table).
 *
 * For location (r, c) of an H x W map (row-major) and shape a, the anchor is the corner box
 *   (cx - hw[a], cy - hh[a], cx + hw[a], cy + hh[a]),
 *   cx = (c + offset_x) * step_x,  cy = (r + offset_y) * step_y,
 * optionally clipped to [0, 1]. The output (H*W*A, 4) is location-major, then shape.
 * All arithmetic is float32 in exactly this order, as ssdkit.anchors.grid_anchors does in numpy.
 * Standard library only: included by the .cc (g++) and the .cu (nvcc) files.
 */
#ifndef SSDKIT_COMMON_ANCHOR_GRID_H_
#define SSDKIT_COMMON_ANCHOR_GRID_H_

#include <stdexcept>
#include <vector>

#include "common/macros.h"
#include "common/shapes.h"

namespace ssdkit {

/*! \brief A feature-map grid and its anchor shapes. */
struct AnchorGrid {
  int height = 0, width = 0;
  float step_y = 1.f, step_x = 1.f;
  float offset_y = 0.5f, offset_x = 0.5f;
  bool clip = false;
  std::vector<float> half;  //!< (A, 2): half width, half height of each anchor shape

  int num_shapes() const { return static_cast<int>(half.size() / 2); }
  long long num_anchors() const { return static_cast<long long>(height) * width * num_shapes(); }
};

/*! \brief Anchor of shape `a` at location (r, c) into out[0..3]; `half` is the (A, 2) table. */
SSDKIT_HD void GridAnchor(int r, int c, int a, const float* half, float step_y, float step_x,
                          float offset_y, float offset_x, bool clip, float* out) {
  const float cy = (r + offset_y) * step_y;
  const float cx = (c + offset_x) * step_x;
  const float hw = half[2 * a], hh = half[2 * a + 1];
  const float box[4] = {cx - hw, cy - hh, cx + hw, cy + hh};
  for (int k = 0; k < 4; ++k) {
    float v = box[k];
    if (clip) v = v < 0.f ? 0.f : (v > 1.f ? 1.f : v);
    out[k] = v;
  }
}

/*! \brief Check the shape of the feature map (B, C, H, W) whose H x W cells an anchor operator
 *  (MultiBoxPrior, RPNAnchors) covers; throws std::invalid_argument naming it. */
inline void CheckFeatureMapShape(const std::vector<unsigned int>& s) {
  if (s.size() != 4) {
    throw std::invalid_argument("data must be a 4-d feature map (B, C, H, W), got shape " + ShapeString(s));
  }
  if (s[2] == 0 || s[3] == 0) {
    throw std::invalid_argument("feature map height and width must be positive, got " + ShapeString(s));
  }
}

/*! \brief The anchor count H * W * per_cell of a checked feature map; throws when the (count, 4) output
 *  would not fit MXNet's 32-bit shape entries and element counts (instead of a wrapped shape). */
inline unsigned int AnchorCount(const std::vector<unsigned int>& s, int per_cell) {
  const unsigned long long n = static_cast<unsigned long long>(s[2]) * s[3] * static_cast<unsigned long long>(per_cell);
  if (n * 4ull > 2147483647ull) {
    throw std::invalid_argument("too many anchors: " + std::to_string(n) + " (" + std::to_string(per_cell) +
                                " per cell) for feature map " + ShapeString(s) +
                                "; the (N, 4) output must hold fewer than 2^31 values");
  }
  return static_cast<unsigned int>(n);
}

/*! \brief Write the (H*W*A, 4) anchors of `grid` to `out` (CPU, OpenMP over locations; anchor_grid.cc). */
void FillAnchorGridCPU(const AnchorGrid& grid, float* out);

#ifdef SSDKIT_WITH_CUDA
/*! \brief Most anchor shapes the CUDA kernel takes (they travel as a kernel parameter). */
constexpr int kMaxGridShapes = 256;

/*! \brief The same on the GPU (anchor_grid.cu): `out` is device memory, `stream` a cudaStream_t. */
void FillAnchorGridGPU(const AnchorGrid& grid, float* out, void* stream);
#endif

}  // namespace ssdkit

#endif  // SSDKIT_COMMON_ANCHOR_GRID_H_
