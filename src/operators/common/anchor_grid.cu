// CUDA fill of an anchor grid (common/anchor_grid.h): one thread per anchor. Shared by
// MultiBoxPrior and RPNAnchors. Compiled by nvcc; no lib_api.h here. Compiled, never run here
// (no GPU on the development machines).
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "common/anchor_grid.h"
#include "common/cuda_utils.h"

namespace ssdkit {
namespace {

struct ShapeTable {
  float half[2 * kMaxGridShapes];
};

__global__ void AnchorGridKernel(ShapeTable table, int shapes, int height, int width, float step_y,
                                 float step_x, float offset_y, float offset_x, bool clip, float* out) {
  const long long total = static_cast<long long>(height) * width * shapes;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<long long>(blockDim.x) * gridDim.x) {
    const int a = static_cast<int>(i % shapes);
    const int loc = static_cast<int>(i / shapes);
    GridAnchor(loc / width, loc % width, a, table.half, step_y, step_x, offset_y, offset_x, clip,
               out + 4 * i);
  }
}

}  // namespace

void FillAnchorGridGPU(const AnchorGrid& g, float* out, void* stream) {
  const int shapes = g.num_shapes();
  if (shapes > kMaxGridShapes) {
    throw std::invalid_argument("at most " + std::to_string(kMaxGridShapes) +
                                " anchor shapes per location on the GPU, got " + std::to_string(shapes));
  }
  const long long total = g.num_anchors();
  if (total == 0) return;
  ShapeTable table;
  for (int i = 0; i < 2 * shapes; ++i) table.half[i] = g.half[i];
  const int threads = 256;
  long long blocks = (total + threads - 1) / threads;
  if (blocks > 65535) blocks = 65535;
  AnchorGridKernel<<<static_cast<int>(blocks), threads, 0, static_cast<cudaStream_t>(stream)>>>(
      table, shapes, g.height, g.width, g.step_y, g.step_x, g.offset_y, g.offset_x, g.clip, out);
  cuda::CheckLastError("anchor grid kernel launch");
}

}  // namespace ssdkit
