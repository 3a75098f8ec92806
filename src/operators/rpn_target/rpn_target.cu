// CUDA kernels of RPNTarget (semantics: rpn_target-inl.h; the same steps as the CPU kernel with
// common/match.h and common/sample.h). Compiled by nvcc; no lib_api.h here.
// UNTESTED AT RUN TIME: there is no GPU on the development machines; these kernels are only
// compiled (tests/test_cuda_compile.py). The random samples differ from the CPU's.
// im_info is copied to the host once per call to check its values (common/cuda_utils.h
// CheckImInfoOnDevice: the CPU's error).
//
//   CollectGts     <<<B, 1>>>             label rows -> compact (G, 4) ground truths per image
//   ScanAnchors    <<<(N/256, B), 256>>>  usable anchors, best ground truth per anchor
//   GtMaxIoU       <<<B * M, 256>>>       highest IoU of every ground truth over usable anchors
//   Assign         <<<(N/256, B), 256>>>  positive / negative candidate / ignored
//   Sample         <<<B, 256>>>           random keys (Philox state b), keep the k smallest
//   WriteTargets   <<<(N/256, B), 256>>>  output rows
#include <cuda_runtime.h>

#include <cub/block/block_reduce.cuh>

#include <cmath>
#include <cstdint>
#include <stdexcept>

#include "common/bbox.h"
#include "common/cuda_utils.h"
#include "common/ground_truth.h"
#include "common/match.h"
#include "common/sample.h"
#include "common/select.h"
#include "rpn_target/rpn_target-inl.h"

namespace ssdkit {
namespace {

constexpr int kThreads = 256;
// A positive left out by sampling keeps its ground truth g as kDroppedBase - g: it gets a box
// target (every positive does) but no weight and cls_target -1.
constexpr int kDroppedBase = -3;

struct Workspace {
  float* gts;             // (B, M, 4)
  int* gt_rows;           // (B, M)
  int* num_gt;            // (B,)
  float* gt_max;          // (B, M)
  float* best_iou;        // (B, N)
  int* best_gt;           // (B, N)
  int* match;             // (B, N)
  uint32_t* keys;         // (B, N)
  unsigned char* usable;  // (B, N)
};

/*! \brief Lay the workspace out from `base` (nullptr: only measure); returns its size in bytes. */
size_t Carve(void* base, int batch, int n, int m, Workspace* w) {
  cuda::WorkspaceCarver c(base);
  const size_t bm = static_cast<size_t>(batch) * m, bn = static_cast<size_t>(batch) * n;
  w->gts = c.Take<float>(bm * 4);
  w->gt_rows = c.Take<int>(bm);
  w->num_gt = c.Take<int>(batch);
  w->gt_max = c.Take<float>(bm);
  w->best_iou = c.Take<float>(bn);
  w->best_gt = c.Take<int>(bn);
  w->match = c.Take<int>(bn);
  w->keys = c.Take<uint32_t>(bn);
  w->usable = c.Take<unsigned char>(bn);
  return c.used();
}

struct MaxIoU {
  __device__ float operator()(float a, float b) const { return b > a ? b : a; }
};

__global__ void CollectGts(const float* labels, int num_labels, int label_width, Workspace w) {
  const int b = blockIdx.x;
  const size_t bm = static_cast<size_t>(b) * num_labels;
  w.num_gt[b] = labels::Collect(labels + bm * label_width, num_labels, label_width, INFINITY,
                                w.gts + bm * 4, w.gt_rows + bm);
}

__global__ void ScanAnchors(const float* anchors, const float* im_info, int num_anchors, int num_labels,
                            float allowed_border, Workspace w) {
  const int b = blockIdx.y;
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= num_anchors) return;
  const size_t idx = static_cast<size_t>(b) * num_anchors + j;
  const float* a = anchors + 4 * static_cast<size_t>(j);
  const bool usable = AnchorIsUsable(a, im_info[3 * b], im_info[3 * b + 1], allowed_border);
  w.usable[idx] = usable ? 1 : 0;
  float best = -1.f;
  int best_g = -1;
  if (usable) {
    match::BestOverlap(a, w.gts + static_cast<size_t>(b) * num_labels * 4, w.num_gt[b], &best, &best_g);
  }
  w.best_iou[idx] = best;
  w.best_gt[idx] = best_g;
}

__global__ void GtMaxIoU(const float* anchors, int num_anchors, int num_labels, Workspace w) {
  const int b = blockIdx.x / num_labels, g = blockIdx.x % num_labels;
  if (g >= w.num_gt[b]) return;  // uniform across the block
  const float* box = w.gts + (static_cast<size_t>(b) * num_labels + g) * 4;
  const unsigned char* usable = w.usable + static_cast<size_t>(b) * num_anchors;
  float mine = -1.f;
  for (int j = threadIdx.x; j < num_anchors; j += blockDim.x) {
    if (!usable[j]) continue;
    const float iou = BoxIoU(anchors + 4 * static_cast<size_t>(j), box);
    if (iou > mine) mine = iou;
  }
  using Reduce = cub::BlockReduce<float, kThreads>;
  __shared__ typename Reduce::TempStorage storage;
  const float best = Reduce(storage).Reduce(mine, MaxIoU());
  if (threadIdx.x == 0) w.gt_max[static_cast<size_t>(b) * num_labels + g] = best;
}

__global__ void Assign(const float* anchors, int num_anchors, int num_labels, float positive_iou,
                       float negative_iou, Workspace w) {
  const int b = blockIdx.y;
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= num_anchors) return;
  const size_t idx = static_cast<size_t>(b) * num_anchors + j;
  const size_t bm = static_cast<size_t>(b) * num_labels;
  w.match[idx] = match::AssignByIoU(anchors + 4 * static_cast<size_t>(j), w.usable[idx] != 0, w.best_iou[idx],
                                    w.best_gt[idx], w.gts + bm * 4, w.num_gt[b], w.gt_max + bm,
                                    positive_iou, negative_iou);
}

__global__ void Sample(int num_anchors, int max_positives, int batch_size_per_image,
                       sample::PhiloxStateView* states, Workspace w) {
  const int b = blockIdx.x;
  int* match = w.match + static_cast<size_t>(b) * num_anchors;
  uint32_t* keys = w.keys + static_cast<size_t>(b) * num_anchors;
  const sample::PhiloxStateView state = states[b];  // every thread reads it before thread 0 advances it
  for (int j = threadIdx.x; j < num_anchors; j += blockDim.x) keys[j] = sample::CandidateKey(state, j, 0);
  __syncthreads();
  const int kept = select::BlockSelectSmallestK<kThreads>(
      num_anchors, max_positives, [keys](int j) { return keys[j]; },
      [match](int j) { return match[j] >= 0; },
      [match](int j) { match[j] = kDroppedBase - match[j]; });
  for (int j = threadIdx.x; j < num_anchors; j += blockDim.x) keys[j] = sample::CandidateKey(state, j, 1);
  __syncthreads();
  select::BlockSelectSmallestK<kThreads>(
      num_anchors, batch_size_per_image - kept, [keys](int j) { return keys[j]; },
      [match](int j) { return match[j] == match::kUnmatched; },
      [match](int j) { match[j] = match::kIgnored; });
  if (threadIdx.x == 0) sample::AddToCounter(states[b].ctr, static_cast<uint64_t>(num_anchors));
}

__global__ void WriteTargets(const float* anchors, int num_anchors, int num_labels, Variances stds,
                             Workspace w, float* cls_target, float* box_target, float* box_weight) {
  const int b = blockIdx.y;
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= num_anchors) return;
  const size_t idx = static_cast<size_t>(b) * num_anchors + j;
  const int m = w.match[idx];
  float* target = box_target + 4 * idx;
  float* weight = box_weight + 4 * idx;
  const int g = m >= 0 ? m : (m <= kDroppedBase ? kDroppedBase - m : -1);
  if (g >= 0) {
    BoxEncode(anchors + 4 * static_cast<size_t>(j), w.gts + (static_cast<size_t>(b) * num_labels + g) * 4,
              stds, target);
  } else {
    for (int k = 0; k < 4; ++k) target[k] = 0.f;
  }
  const float wt = m >= 0 ? 1.f : 0.f;
  for (int k = 0; k < 4; ++k) weight[k] = wt;
  cls_target[idx] = m >= 0 ? 1.f : (m == match::kUnmatched ? 0.f : -1.f);
}

}  // namespace

size_t RPNTargetWorkspaceBytes(int batch, int num_anchors, int num_labels) {
  Workspace w;
  return Carve(nullptr, batch, num_anchors, num_labels, &w);
}

void RPNTargetForwardGPU(const RPNTargetParam& p, const float* anchors, const float* labels,
                         const float* im_info, int batch, int num_anchors, int num_labels,
                         int label_width, float* cls_target, float* box_target, float* box_weight,
                         void* rand_states, void* workspace, void* stream) {
  if (batch == 0 || num_anchors == 0) return;
  if (batch > 65535) throw std::invalid_argument("RPNTarget on GPU supports at most 65535 images");
  if (static_cast<long long>(batch) * num_labels > 2147483647LL) {
    throw std::invalid_argument("RPNTarget on GPU: too many label rows");
  }
  cuda::CheckImInfoOnDevice(im_info, batch, stream);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  Workspace w;
  Carve(workspace, batch, num_anchors, num_labels, &w);
  const dim3 anchor_grid((num_anchors + kThreads - 1) / kThreads, batch);
  CollectGts<<<batch, 1, 0, s>>>(labels, num_labels, label_width, w);
  ScanAnchors<<<anchor_grid, kThreads, 0, s>>>(anchors, im_info, num_anchors, num_labels, p.allowed_border, w);
  GtMaxIoU<<<batch * num_labels, kThreads, 0, s>>>(anchors, num_anchors, num_labels, w);
  Assign<<<anchor_grid, kThreads, 0, s>>>(anchors, num_anchors, num_labels, p.positive_iou, p.negative_iou, w);
  Sample<<<batch, kThreads, 0, s>>>(num_anchors, p.max_positives(), p.batch_size_per_image,
                                     static_cast<sample::PhiloxStateView*>(rand_states), w);
  WriteTargets<<<anchor_grid, kThreads, 0, s>>>(anchors, num_anchors, num_labels, p.stds, w, cls_target,
                                                box_target, box_weight);
  cuda::CheckLastError("RPNTarget kernels");
}

}  // namespace ssdkit
