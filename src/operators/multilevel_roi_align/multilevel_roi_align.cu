/*!
 * \file multilevel_roi_align.cu
 * \brief MultiLevelROIAlign CUDA kernels: one thread per output element (RoI, channel, bin), the level
 *        rule, sampling grid and bilinear taps of multilevel_roi_align-inl.h (the functions the CPU
 *        kernels run). The backward adds with atomicAdd, so on the GPU the order of the additions, and
 *        the last bits of the gradient, may change from run to run (the CPU backward is deterministic).
 *        Compiled here, never run: the development machines have no GPU.
 */
#include <cuda_runtime.h>

#include <cstddef>

#include "common/cuda_utils.h"
#include "multilevel_roi_align/multilevel_roi_align-inl.h"

namespace ssdkit {
namespace {

constexpr int kThreads = 256;

/*! \brief What every thread needs, passed by value (kMaxRoiAlignLevels pointers). */
struct LevelTable {
  const float* features[kMaxRoiAlignLevels];
  float* grads[kMaxRoiAlignLevels];
  float scales[kMaxRoiAlignLevels];
  int height[kMaxRoiAlignLevels];
  int width[kMaxRoiAlignLevels];
  int num_levels, batch, channels, num_rois, pooled_h, pooled_w, sample_ratio, min_level, canonical_level;
  float canonical_size;
  bool aligned;
};

/*! \brief Level index of RoI r, or -1 when its row gives zeros (padding, non-finite, level or image out of range). */
__device__ int LevelOf(const LevelTable& t, const float* roi, const float* levels, int r) {
  if (!RoiRowValid(roi) || roi[0] >= static_cast<float>(t.batch)) return -1;
  if (levels != nullptr) return GivenLevelIndex(levels[r], t.num_levels, t.min_level);
  return FpnLevelIndex(roi, t.num_levels, t.canonical_size, t.canonical_level, t.min_level);
}

/*! \brief Output element i = (RoI, channel, bin) of one call: what both kernels need to visit its samples. */
struct Element {
  int level;        // -1: the row gives zeros and no gradient
  size_t plane;     // offset of the (image, channel) plane in its level's map
  int ph, pw, height, width;
  RoiSampling geom;
};

__device__ Element ElementOf(const LevelTable& t, const float* rois, const float* levels, size_t i) {
  const size_t bins = static_cast<size_t>(t.pooled_h) * t.pooled_w;
  const int bin = static_cast<int>(i % bins);
  const int c = static_cast<int>((i / bins) % t.channels);
  const int r = static_cast<int>(i / bins / t.channels);
  const float* roi = rois + 5 * static_cast<size_t>(r);
  Element e;
  e.level = LevelOf(t, roi, levels, r);
  if (e.level < 0) return e;
  e.geom = RoiGeometry(roi, t.scales[e.level], t.pooled_h, t.pooled_w, t.sample_ratio, t.aligned);
  e.height = t.height[e.level];
  e.width = t.width[e.level];
  e.plane = (static_cast<size_t>(static_cast<int>(roi[0])) * t.channels + c) * e.height * e.width;
  e.ph = bin / t.pooled_w;
  e.pw = bin % t.pooled_w;
  return e;
}

/*! \brief Call visit(tap) for each bilinear sample of the element that lies on the map. */
template <typename F>
__device__ void ForEachTap(const Element& e, F&& visit) {
  for (int iy = 0; iy < e.geom.grid_h; ++iy) {
    for (int ix = 0; ix < e.geom.grid_w; ++ix) {
      float y, x;
      BilinearTap tap;
      SamplePosition(e.geom, e.ph, e.pw, iy, ix, &y, &x);
      if (BilinearTaps(y, x, e.height, e.width, &tap)) visit(tap);
    }
  }
}

size_t OutputSize(const MultiLevelROIAlignParam& p, const RoiAlignDims& d) {
  return static_cast<size_t>(d.num_rois) * d.channels * p.pooled_h * p.pooled_w;
}

__global__ void ForwardKernel(LevelTable t, size_t total, const float* rois, const float* levels, float* out) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(blockDim.x) * gridDim.x) {
    const Element e = ElementOf(t, rois, levels, i);
    if (e.level < 0) {
      out[i] = 0.0f;
      continue;
    }
    const float* src = t.features[e.level] + e.plane;
    float sum = 0.0f;
    ForEachTap(e, [&](const BilinearTap& tap) {
      sum += tap.weight[0] * src[tap.offset[0]] + tap.weight[1] * src[tap.offset[1]] +
             tap.weight[2] * src[tap.offset[2]] + tap.weight[3] * src[tap.offset[3]];
    });
    out[i] = sum / e.geom.count;
  }
}

__global__ void BackwardKernel(LevelTable t, size_t total, const float* grad_out, const float* rois,
                               const float* levels) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(blockDim.x) * gridDim.x) {
    const Element e = ElementOf(t, rois, levels, i);
    if (e.level < 0) continue;
    float* dst = t.grads[e.level] + e.plane;
    const float dy = grad_out[i] / e.geom.count;
    ForEachTap(e, [&](const BilinearTap& tap) {
      for (int k = 0; k < 4; ++k) atomicAdd(dst + tap.offset[k], tap.weight[k] * dy);
    });
  }
}

LevelTable MakeTable(const MultiLevelROIAlignParam& p, const RoiAlignDims& d) {
  LevelTable t{};
  t.num_levels = p.num_levels();
  for (int l = 0; l < t.num_levels; ++l) {
    t.scales[l] = static_cast<float>(p.spatial_scales[static_cast<size_t>(l)]);
    t.height[l] = d.height[static_cast<size_t>(l)];
    t.width[l] = d.width[static_cast<size_t>(l)];
  }
  t.batch = d.batch;
  t.channels = d.channels;
  t.num_rois = d.num_rois;
  t.pooled_h = p.pooled_h;
  t.pooled_w = p.pooled_w;
  t.sample_ratio = p.sample_ratio;
  t.min_level = p.min_level;
  t.canonical_level = p.canonical_level;
  t.canonical_size = static_cast<float>(p.canonical_size);
  t.aligned = p.aligned;
  return t;
}

}  // namespace

void MultiLevelROIAlignForwardGPU(const MultiLevelROIAlignParam& p, const RoiAlignDims& d,
                                  const float* const* features, const float* rois, const float* levels, float* out,
                                  void* stream) {
  const size_t total = OutputSize(p, d);
  if (total == 0) return;
  LevelTable t = MakeTable(p, d);
  for (int l = 0; l < t.num_levels; ++l) t.features[l] = features[l];
  ForwardKernel<<<cuda::GridFor(total, kThreads), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(t, total, rois,
                                                                                                     levels, out);
  cuda::CheckLastError("MultiLevelROIAlign forward kernel");
}

void MultiLevelROIAlignBackwardGPU(const MultiLevelROIAlignParam& p, const RoiAlignDims& d, const float* grad_out,
                                   const float* rois, const float* levels, float* const* grads, void* stream) {
  const size_t total = OutputSize(p, d);
  if (total == 0) return;
  LevelTable t = MakeTable(p, d);
  for (int l = 0; l < t.num_levels; ++l) t.grads[l] = grads[l];
  BackwardKernel<<<cuda::GridFor(total, kThreads), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(t, total,
                                                                                                      grad_out, rois, levels);
  cuda::CheckLastError("MultiLevelROIAlign backward kernel");
}

}  // namespace ssdkit
