// CUDA kernels of MultiBoxTarget (semantics: multibox_target-inl.h). Compiled by nvcc; no lib_api.h
// here. Every per-anchor and per-ground-truth step is a host/device function that the CPU kernel
// (multibox_target.cc) calls too; the kernels only distribute them over threads:
//
//   CollectGroundTruths <<<B, 1>>>        CollectImageGroundTruths
//   ScanAnchors         <<<(N/256, B)>>>  match::ScanAnchorOverlaps, BackgroundProbLanes<1>
//   BestAnchorPerGt     <<<B * M, 256>>>  match::ConsiderAnchor per thread, block reduction
//   ClaimAndThreshold   <<<B, 256>>>      match::PickNextClaim, NeedsNewBestAnchor, MatchesAboveThreshold
//   MineNegatives       <<<B, 256>>>      match::IsNegativeCandidate, NegativeKey,
//                                         select::BlockSelectSmallestK (the CPU's radix select steps)
//   WriteTargets        <<<(N/256, B)>>>  WriteAnchorTarget
//
// Built with -fmad=false (no FMA contraction): IoUs and probabilities equal the CPU's bit for bit.
// Compiled, never run on a GPU (none on the development machines; tools/gpu_selftest.sh checks it).
#include <cuda_runtime.h>

#include <cub/block/block_reduce.cuh>

#include <climits>
#include <cstdint>
#include <stdexcept>

#include "common/bbox.h"
#include "common/cuda_utils.h"
#include "common/match.h"
#include "common/select.h"
#include "multibox_target/multibox_target-inl.h"

namespace ssdkit {
namespace {

constexpr int kThreads = 256;

/*! \brief Device views into the workspace (see MultiBoxTargetWorkspaceBytes). */
struct Workspace {
  float* gts;              // (B, M, 4)
  int* gt_rows;            // (B, M)
  int* num_gt;             // (B,)
  int* num_positive;       // (B,)
  match::GtBest* gt_best;  // (B, M)
  unsigned char* claimed;  // (B, M)
  float* best_iou;         // (B, N)
  int* best_gt;            // (B, N)
  float* prob;             // (B, N)
  int* match;              // (B, N)
};

Workspace Carve(void* base, int batch, int n, int m, size_t* used) {
  cuda::WorkspaceCarver c(base);
  const size_t bm = static_cast<size_t>(batch) * m, bn = static_cast<size_t>(batch) * n;
  Workspace w;
  w.gts = c.Take<float>(bm * 4);
  w.gt_rows = c.Take<int>(bm);
  w.num_gt = c.Take<int>(batch);
  w.num_positive = c.Take<int>(batch);
  w.gt_best = c.Take<match::GtBest>(bm);
  w.claimed = c.Take<unsigned char>(bm);
  w.best_iou = c.Take<float>(bn);
  w.best_gt = c.Take<int>(bn);
  w.prob = c.Take<float>(bn);
  w.match = c.Take<int>(bn);
  if (used != nullptr) *used = c.used();
  return w;
}

/*! \brief Block reduction of two best-anchor searches: higher IoU, then lower anchor (-1: none). */
struct BetterGtBest {
  __device__ match::GtBest operator()(const match::GtBest& a, const match::GtBest& b) const {
    if (a.iou > b.iou) return a;
    if (b.iou > a.iou) return b;
    if (a.anchor < 0) return b;
    if (b.anchor < 0) return a;
    return a.anchor < b.anchor ? a : b;
  }
};

/*! \brief An image with no ground truth is left all-ignored unless mining must still pick some. */
__device__ bool Active(int num_gt, bool mining, int minimum_negatives) {
  return num_gt > 0 || (mining && minimum_negatives > 0);
}

__global__ void CollectGroundTruths(const float* labels, int num_labels, int label_width,
                                    int num_classes, Workspace w) {
  const int b = blockIdx.x;
  const size_t first = static_cast<size_t>(b) * num_labels;
  w.num_gt[b] = CollectImageGroundTruths(labels + first * label_width, num_labels, label_width, num_classes,
                                         w.gts + first * 4, w.gt_rows + first);
}

__global__ void ScanAnchors(const float* anchors, const float* cls_pred, int num_anchors,
                            int num_labels, int num_channels, bool mining, int minimum_negatives,
                            Workspace w) {
  const int b = blockIdx.y;
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= num_anchors) return;
  const size_t idx = static_cast<size_t>(b) * num_anchors + j;
  w.match[idx] = match::kUnmatched;
  const int num_gt = w.num_gt[b];
  if (!Active(num_gt, mining, minimum_negatives)) return;
  match::ScanAnchorOverlaps<false>(anchors + 4 * static_cast<size_t>(j), j,
                                   w.gts + static_cast<size_t>(b) * num_labels * 4, num_gt, w.best_iou + idx,
                                   w.best_gt + idx, nullptr);
  if (mining) {
    BackgroundProbLanes<1>(cls_pred + static_cast<size_t>(b) * num_channels * num_anchors + j,
                           static_cast<size_t>(num_anchors), num_channels, 1, w.prob + idx);
  }
}

/*! \brief Best free anchor of ground-truth box `box` (all threads; the result is valid in thread 0). */
__device__ match::GtBest BestFreeAnchor(const float* anchors, int num_anchors, const float* box,
                                        const int* match) {
  using Reduce = cub::BlockReduce<match::GtBest, kThreads>;
  __shared__ typename Reduce::TempStorage storage;
  match::GtBest mine;  // each thread visits its anchors in ascending order
  for (int j = threadIdx.x; j < num_anchors; j += blockDim.x) {
    if (match[j] >= 0) continue;
    match::ConsiderAnchor(BoxIoU(anchors + 4 * static_cast<size_t>(j), box), j, &mine);
  }
  const match::GtBest best = Reduce(storage).Reduce(mine, BetterGtBest());
  __syncthreads();  // storage is reused by the next call
  return best;
}

__global__ void BestAnchorPerGt(const float* anchors, int num_anchors, int num_labels, Workspace w) {
  const int b = blockIdx.x / num_labels, g = blockIdx.x % num_labels;
  if (g >= w.num_gt[b]) return;
  const size_t bg = static_cast<size_t>(b) * num_labels + g;
  const match::GtBest best = BestFreeAnchor(anchors, num_anchors, w.gts + bg * 4,
                                            w.match + static_cast<size_t>(b) * num_anchors);
  if (threadIdx.x == 0) {
    w.gt_best[bg] = best;
    w.claimed[bg] = 0;
  }
}

__global__ void ClaimAndThreshold(const float* anchors, int num_anchors, int num_labels,
                                  float overlap_threshold, Workspace w) {
  const int b = blockIdx.x;
  const int num_gt = w.num_gt[b];
  int* match = w.match + static_cast<size_t>(b) * num_anchors;
  match::GtBest* gt_best = w.gt_best + static_cast<size_t>(b) * num_labels;
  unsigned char* claimed = w.claimed + static_cast<size_t>(b) * num_labels;
  const float* gts = w.gts + static_cast<size_t>(b) * num_labels * 4;
  __shared__ int pick_anchor;
  int num_positive = 0;  // meaningful in thread 0
  for (int round = 0; round < num_gt; ++round) {
    if (threadIdx.x == 0) {
      const int pick = match::PickNextClaim(gt_best, claimed, num_gt);
      pick_anchor = pick < 0 ? -1 : gt_best[pick].anchor;
      if (pick >= 0) {
        claimed[pick] = 1;
        match[pick_anchor] = pick;
        ++num_positive;
      }
    }
    __syncthreads();
    const int taken = pick_anchor;
    if (taken < 0) break;  // uniform
    for (int g = 0; g < num_gt; ++g) {  // ground truths whose best anchor was just taken search again
      if (!match::NeedsNewBestAnchor(gt_best[g], claimed[g] != 0, taken)) continue;  // uniform
      const match::GtBest best = BestFreeAnchor(anchors, num_anchors, gts + 4 * g, match);
      if (threadIdx.x == 0) gt_best[g] = best;
      __syncthreads();
    }
    __syncthreads();  // everyone has read pick_anchor before thread 0 rewrites it
  }
  using Reduce = cub::BlockReduce<int, kThreads>;
  __shared__ typename Reduce::TempStorage storage;
  int local = 0;
  if (overlap_threshold > 0.f && num_gt > 0) {
    const float* best_iou = w.best_iou + static_cast<size_t>(b) * num_anchors;
    const int* best_gt = w.best_gt + static_cast<size_t>(b) * num_anchors;
    for (int j = threadIdx.x; j < num_anchors; j += blockDim.x) {
      if (match::MatchesAboveThreshold(match[j], best_gt[j], best_iou[j], overlap_threshold)) {
        match[j] = best_gt[j];
        ++local;
      }
    }
  }
  const int thresholded = Reduce(storage).Sum(local);
  if (threadIdx.x == 0) w.num_positive[b] = num_positive + thresholded;
}

__global__ void MineNegatives(int num_anchors, float ratio, float iou_threshold, int minimum_negatives,
                              Workspace w) {
  const int b = blockIdx.x;
  if (!Active(w.num_gt[b], true, minimum_negatives)) return;
  int* match = w.match + static_cast<size_t>(b) * num_anchors;
  const float* best_iou = w.best_iou + static_cast<size_t>(b) * num_anchors;
  const float* prob = w.prob + static_cast<size_t>(b) * num_anchors;
  // Unmatched anchors that cannot be negatives are ignored; the others stay kUnmatched: candidates.
  for (int j = threadIdx.x; j < num_anchors; j += blockDim.x) {
    if (match[j] == match::kUnmatched && !match::IsNegativeCandidate(best_iou[j], iou_threshold)) {
      match[j] = match::kIgnored;
    }
  }
  __syncthreads();
  const int wanted = NumNegativesWanted(w.num_positive[b], num_anchors, ratio, minimum_negatives);
  select::BlockSelectSmallestK<kThreads>(
      num_anchors, wanted, [prob](int j) { return match::NegativeKey(prob[j]); },
      [match](int j) { return match[j] == match::kUnmatched; }, [match](int j) { match[j] = match::kIgnored; });
}

__global__ void WriteTargets(const float* anchors, const float* labels, int num_anchors, int num_labels,
                             int label_width, bool mining, int minimum_negatives, float ignore_label,
                             Variances variances, Workspace w, float* loc_target, float* loc_mask,
                             float* cls_target) {
  const int b = blockIdx.y;
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= num_anchors) return;
  const size_t idx = static_cast<size_t>(b) * num_anchors + j;
  const int g = Active(w.num_gt[b], mining, minimum_negatives) ? w.match[idx] : match::kIgnored;
  const size_t bg = static_cast<size_t>(b) * num_labels + (g >= 0 ? g : 0);
  const float gt_class = g >= 0 ? labels[(static_cast<size_t>(b) * num_labels + w.gt_rows[bg]) * label_width] : 0.f;
  WriteAnchorTarget(g, anchors + 4 * static_cast<size_t>(j), w.gts + bg * 4, gt_class, variances, ignore_label,
                    loc_target + idx * 4, loc_mask + idx * 4, cls_target + idx);
}

}  // namespace

size_t MultiBoxTargetWorkspaceBytes(int batch, int num_anchors, int num_labels) {
  size_t used = 0;
  Carve(nullptr, batch, num_anchors, num_labels, &used);
  return used;
}

void MultiBoxTargetForwardGPU(const MultiBoxTargetParam& p, const float* anchors, const float* labels,
                              const float* cls_pred, int batch, int num_anchors, int num_labels,
                              int label_width, int num_channels, float* loc_target, float* loc_mask,
                              float* cls_target, void* workspace, void* stream) {
  if (batch == 0 || num_anchors == 0) return;
  if (batch > 65535) throw std::invalid_argument("MultiBoxTarget on GPU supports at most 65535 images");
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  Workspace w = Carve(workspace, batch, num_anchors, num_labels, nullptr);
  const bool mining = p.mining();
  const dim3 anchor_grid((num_anchors + kThreads - 1) / kThreads, batch);
  CollectGroundTruths<<<batch, 1, 0, s>>>(labels, num_labels, label_width, num_channels - 1, w);
  ScanAnchors<<<anchor_grid, kThreads, 0, s>>>(anchors, cls_pred, num_anchors, num_labels, num_channels,
                                                mining, p.minimum_negative_samples, w);
  BestAnchorPerGt<<<batch * num_labels, kThreads, 0, s>>>(anchors, num_anchors, num_labels, w);
  ClaimAndThreshold<<<batch, kThreads, 0, s>>>(anchors, num_anchors, num_labels, p.overlap_threshold, w);
  if (mining) {
    MineNegatives<<<batch, kThreads, 0, s>>>(num_anchors, p.negative_mining_ratio, p.negative_mining_thresh,
                                             p.minimum_negative_samples, w);
  }
  WriteTargets<<<anchor_grid, kThreads, 0, s>>>(anchors, labels, num_anchors, num_labels, label_width, mining,
                                                p.minimum_negative_samples, p.ignore_label, p.variances, w,
                                                loc_target, loc_mask, cls_target);
  cuda::CheckLastError("MultiBoxTarget kernels");
}

}  // namespace ssdkit
