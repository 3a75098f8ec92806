/*!
 * \file anchor_grid.cc
 * \brief CPU fill of an anchor grid (common/anchor_grid.h), shared by MultiBoxPrior and RPNAnchors.
 */
#include <omp.h>

#include <cstddef>

#include "common/anchor_grid.h"
#include "common/parallel.h"

namespace ssdkit {

void FillAnchorGridCPU(const AnchorGrid& g, float* out) {
  const int shapes = g.num_shapes();
  const int locations = g.height * g.width;
  const float* half = g.half.data();
#pragma omp parallel num_threads(NumThreads())
  {
#pragma omp single nowait  // no barrier: a late-waking thread must not stall the others
    RecordThreadsUsed(omp_get_num_threads());
#pragma omp for schedule(static)
    for (int loc = 0; loc < locations; ++loc) {
      const int r = loc / g.width, c = loc % g.width;
      for (int a = 0; a < shapes; ++a) {
        GridAnchor(r, c, a, half, g.step_y, g.step_x, g.offset_y, g.offset_x, g.clip,
                   out + 4 * (static_cast<size_t>(loc) * shapes + a));
      }
    }
  }
}

}  // namespace ssdkit
