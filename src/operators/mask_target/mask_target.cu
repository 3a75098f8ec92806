// CUDA kernels of MaskTarget (semantics: mask_target-inl.h; the CPU kernel's functions
// labels::Collect, MatchedMaskPlane, MaskSampling and MaskBin). Compiled by nvcc; no lib_api.h here.
// UNTESTED AT RUN TIME: there is no GPU on the development machines; these kernels are only
// compiled (tests/test_gpu_selftest.py builds them into the self-test; tools/gpu_selftest.sh runs
// them against the CPU kernel on a GPU machine).
//
//   CollectGts  <<<B, 1>>>        label rows -> compact (G, 4) ground truths per image
//   MatchRois   grid-stride       one thread per RoI: its mask plane (or -1)
//   SampleBins  grid-stride       one thread per output value (RoI, bin)
#include <cuda_runtime.h>

#include <cstddef>
#include <stdexcept>

#include "common/cuda_utils.h"
#include "common/ground_truth.h"
#include "mask_target/mask_target-inl.h"

namespace ssdkit {
namespace {

constexpr int kThreads = 256;

struct Workspace {
  float* gts;    // (B, M, 4)
  int* gt_rows;  // (B, M)
  int* num_gt;   // (B,)
  int* plane;    // (R,) matched mask plane per RoI, -1: none
};

/*! \brief Lay the workspace out from `base` (nullptr: only measure); returns its size in bytes. */
size_t Carve(void* base, const MaskTargetDims& d, Workspace* w) {
  cuda::WorkspaceCarver c(base);
  const size_t bm = static_cast<size_t>(d.batch) * d.num_labels;
  w->gts = c.Take<float>(bm * 4);
  w->gt_rows = c.Take<int>(bm);
  w->num_gt = c.Take<int>(d.batch);
  w->plane = c.Take<int>(d.num_rois);
  return c.used();
}

__global__ void CollectGts(const float* gt, MaskTargetDims d, float class_limit, Workspace w) {
  const int b = blockIdx.x;
  const size_t first = static_cast<size_t>(b) * d.num_labels;
  w.num_gt[b] = labels::Collect(gt + first * d.label_width, d.num_labels, d.label_width, class_limit,
                                w.gts + first * 4, w.gt_rows + first);
}

__global__ void MatchRois(const float* rois, const float* labels, const float* gt, MaskTargetDims d, Workspace w) {
  for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < d.num_rois; r += blockDim.x * gridDim.x) {
    w.plane[r] = MatchedMaskPlane(rois + 5 * static_cast<size_t>(r), labels[r], gt, w.gts, w.gt_rows, w.num_gt,
                                  d.batch, d.num_labels, d.label_width);
  }
}

__global__ void SampleBins(const float* rois, const float* gt_masks, MaskTargetParam p, MaskTargetDims d,
                           Workspace w, size_t total, float* out) {
  const size_t bins = static_cast<size_t>(p.mask_size) * p.mask_size;
  const size_t plane_size = static_cast<size_t>(d.mask_h) * d.mask_w;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(blockDim.x) * gridDim.x) {
    const int r = static_cast<int>(i / bins);
    const int bin = static_cast<int>(i % bins);
    const int plane = w.plane[r];
    if (plane < 0) {
      out[i] = -1.0f;
      continue;
    }
    const RoiSampling g = MaskSampling(rois + 5 * static_cast<size_t>(r), p);
    out[i] = MaskBin(gt_masks + static_cast<size_t>(plane) * plane_size, d.mask_h, d.mask_w, g, bin / p.mask_size,
                     bin % p.mask_size, p.threshold);
  }
}

}  // namespace

size_t MaskTargetWorkspaceBytes(const MaskTargetDims& d) {
  Workspace w;
  return Carve(nullptr, d, &w);
}

void MaskTargetForwardGPU(const MaskTargetParam& p, const MaskTargetDims& d, const float* rois, const float* labels,
                          const float* gt, const float* gt_masks, float* out, void* workspace, void* stream) {
  if (d.num_rois == 0) return;
  if (d.batch > 65535) throw std::invalid_argument("MaskTarget on GPU supports at most 65535 images");
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  Workspace w;
  Carve(workspace, d, &w);
  const size_t total = static_cast<size_t>(d.num_rois) * p.mask_size * p.mask_size;
  CollectGts<<<d.batch, 1, 0, s>>>(gt, d, p.class_limit(), w);
  MatchRois<<<cuda::GridFor(static_cast<size_t>(d.num_rois), kThreads), kThreads, 0, s>>>(rois, labels, gt, d, w);
  SampleBins<<<cuda::GridFor(total, kThreads), kThreads, 0, s>>>(rois, gt_masks, p, d, w, total, out);
  cuda::CheckLastError("MaskTarget kernels");
}

}  // namespace ssdkit
