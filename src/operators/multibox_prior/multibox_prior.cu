// CUDA kernel of MultiBoxPrior: one thread per anchor. Compiled by nvcc; no lib_api.h here.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "common/cuda_utils.h"
#include "multibox_prior/multibox_prior-inl.h"

namespace ssdkit {
namespace {

constexpr int kMaxPriorParams = 64;

struct PriorLists {
  float sizes[kMaxPriorParams];
  float ratios[kMaxPriorParams];
};

__global__ void MultiBoxPriorKernel(PriorLists lists, int num_sizes, int num_anchors, int height,
                                    int width, float step_y, float step_x, float offset_y,
                                    float offset_x, bool clip, float* out) {
  int total = height * width * num_anchors;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += blockDim.x * gridDim.x) {
    int a = i % num_anchors;
    int loc = i / num_anchors;
    MultiBoxPriorAnchor(loc / width, loc % width, a, height, width, lists.sizes, num_sizes,
                        lists.ratios, step_y, step_x, offset_y, offset_x, clip, out + 4 * i);
  }
}

}  // namespace

void MultiBoxPriorForwardGPU(const MultiBoxPriorParam& p, int height, int width, float* out,
                             void* stream) {
  if (p.sizes.size() > kMaxPriorParams || p.ratios.size() > kMaxPriorParams) {
    throw std::invalid_argument("MultiBoxPrior on GPU supports at most 64 sizes and 64 ratios");
  }
  PriorLists lists;
  for (size_t i = 0; i < p.sizes.size(); ++i) lists.sizes[i] = p.sizes[i];
  for (size_t i = 0; i < p.ratios.size(); ++i) lists.ratios[i] = p.ratios[i];
  float step_y = p.step_y > 0 ? p.step_y : 1.f / height;
  float step_x = p.step_x > 0 ? p.step_x : 1.f / width;
  int total = height * width * p.num_anchors();
  if (total == 0) return;
  int threads = 256;
  int blocks = (total + threads - 1) / threads;
  if (blocks > 65535) blocks = 65535;
  MultiBoxPriorKernel<<<blocks, threads, 0, static_cast<cudaStream_t>(stream)>>>(
      lists, static_cast<int>(p.sizes.size()), p.num_anchors(), height, width, step_y, step_x,
      p.offset_y, p.offset_x, p.clip, out);
  cuda::CheckLastError("MultiBoxPrior kernel launch");
}

}  // namespace ssdkit
