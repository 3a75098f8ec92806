// CUDA kernels of MultiBoxTarget (semantics: multibox_target-inl.h, the same steps as the CPU
// kernel and common/match.h). Compiled by nvcc; no lib_api.h here.
//
//   CollectGroundTruths  <<<B, 1>>>          valid label rows -> compact (G, 4) boxes per image
//   ScanAnchors          <<<(N/256, B)>>>     best gt per anchor, background probability
//   BestAnchorPerGt      <<<B * M, 256>>>     best anchor per gt (lowest index on ties)
//   ClaimAndThreshold    <<<B, 256>>>         bipartite claim (serial over gts), threshold match
//   MineNegatives        <<<B, 256>>>         radix select of the k lowest probabilities
//   WriteTargets         <<<(N/256, B)>>>     output rows
//
// nvcc contracts a * b + c into FMAs, so IoUs and probabilities can differ from the CPU kernel
// in the last bit; exact ties may then break differently than on the CPU.
#include <cuda_runtime.h>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <climits>
#include <cstdint>
#include <stdexcept>

#include "common/bbox.h"
#include "common/cuda_utils.h"
#include "common/fast_exp.h"
#include "common/match.h"
#include "multibox_target/multibox_target-inl.h"

namespace ssdkit {
namespace {

constexpr int kThreads = 256;

/*! \brief Device views into the workspace (see MultiBoxTargetWorkspaceBytes). */
struct Workspace {
  float* gts;          // (B, M, 4)
  int* gt_rows;        // (B, M)
  int* num_gt;         // (B,)
  int* num_positive;   // (B,)
  float* gt_best_iou;  // (B, M)
  int* gt_best_anchor; // (B, M)
  int* claimed;        // (B, M)
  float* best_iou;     // (B, N)
  int* best_gt;        // (B, N)
  float* prob;         // (B, N)
  int* match;          // (B, N)
};

size_t Align(size_t bytes) { return (bytes + 255) & ~static_cast<size_t>(255); }

Workspace Carve(void* base, int batch, int n, int m) {
  char* p = static_cast<char*>(base);
  const size_t bm = static_cast<size_t>(batch) * m, bn = static_cast<size_t>(batch) * n;
  Workspace w;
  w.gts = reinterpret_cast<float*>(p);            p += Align(bm * 4 * sizeof(float));
  w.gt_rows = reinterpret_cast<int*>(p);          p += Align(bm * sizeof(int));
  w.num_gt = reinterpret_cast<int*>(p);           p += Align(batch * sizeof(int));
  w.num_positive = reinterpret_cast<int*>(p);     p += Align(batch * sizeof(int));
  w.gt_best_iou = reinterpret_cast<float*>(p);    p += Align(bm * sizeof(float));
  w.gt_best_anchor = reinterpret_cast<int*>(p);   p += Align(bm * sizeof(int));
  w.claimed = reinterpret_cast<int*>(p);          p += Align(bm * sizeof(int));
  // Keep in step with MultiBoxTargetWorkspaceBytes.
  w.best_iou = reinterpret_cast<float*>(p);       p += Align(bn * sizeof(float));
  w.best_gt = reinterpret_cast<int*>(p);          p += Align(bn * sizeof(int));
  w.prob = reinterpret_cast<float*>(p);           p += Align(bn * sizeof(float));
  w.match = reinterpret_cast<int*>(p);
  return w;
}

/*! \brief (IoU, anchor) of a best-anchor search; the higher IoU wins, then the lower anchor. */
struct Candidate {
  float iou;
  int anchor;
};

struct BetterCandidate {
  __device__ Candidate operator()(const Candidate& a, const Candidate& b) const {
    if (a.iou > b.iou) return a;
    if (b.iou > a.iou) return b;
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
  int g = 0;
  for (int r = 0; r < num_labels; ++r) {
    const float* row = labels + (static_cast<size_t>(b) * num_labels + r) * label_width;
    if (IsPaddingRow(row)) break;
    if (!IsValidGroundTruth(row, num_classes)) continue;
    float* dst = w.gts + (static_cast<size_t>(b) * num_labels + g) * 4;
    for (int k = 0; k < 4; ++k) dst[k] = row[1 + k];
    w.gt_rows[b * num_labels + g] = r;
    ++g;
  }
  w.num_gt[b] = g;
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
  const float* a = anchors + 4 * static_cast<size_t>(j);
  const float* gts = w.gts + static_cast<size_t>(b) * num_labels * 4;
  float best = -1.f;
  int best_g = -1;
  for (int g = 0; g < num_gt; ++g) {
    float iou = BoxIoU(a, gts + 4 * g);
    if (iou > best) {
      best = iou;
      best_g = g;
    }
  }
  w.best_iou[idx] = best;
  w.best_gt[idx] = best_g;
  if (mining) {
    const float* x = cls_pred + static_cast<size_t>(b) * num_channels * num_anchors + j;
    float mx = x[0];
    for (int k = 1; k < num_channels; ++k) {
      float v = x[static_cast<size_t>(k) * num_anchors];
      mx = v > mx ? v : mx;
    }
    float e0 = ExpNonPositive(x[0] - mx), sum = e0;
    for (int k = 1; k < num_channels; ++k) sum += ExpNonPositive(x[static_cast<size_t>(k) * num_anchors] - mx);
    w.prob[idx] = e0 / sum;
  }
}

/*! \brief Block reduction of the best free anchor of ground truth g of image b. */
__device__ Candidate BestFreeAnchor(const float* anchors, int num_anchors, const float* box,
                                    const int* match) {
  using Reduce = cub::BlockReduce<Candidate, kThreads>;
  __shared__ typename Reduce::TempStorage storage;
  Candidate mine{-1.f, INT_MAX};
  for (int j = threadIdx.x; j < num_anchors; j += blockDim.x) {
    if (match[j] >= 0) continue;
    float iou = BoxIoU(anchors + 4 * static_cast<size_t>(j), box);
    if (iou > mine.iou) mine = Candidate{iou, j};
  }
  Candidate best = Reduce(storage).Reduce(mine, BetterCandidate());
  __syncthreads();  // storage is reused by the next call
  return best;      // valid in thread 0
}

__global__ void BestAnchorPerGt(const float* anchors, int num_anchors, int num_labels, Workspace w) {
  const int b = blockIdx.x / num_labels, g = blockIdx.x % num_labels;
  if (g >= w.num_gt[b]) return;
  Candidate best = BestFreeAnchor(anchors, num_anchors, w.gts + (static_cast<size_t>(b) * num_labels + g) * 4,
                                  w.match + static_cast<size_t>(b) * num_anchors);
  if (threadIdx.x == 0) {
    w.gt_best_iou[b * num_labels + g] = best.iou;
    w.gt_best_anchor[b * num_labels + g] = best.anchor == INT_MAX ? -1 : best.anchor;
    w.claimed[b * num_labels + g] = 0;
  }
}

__global__ void ClaimAndThreshold(const float* anchors, int num_anchors, int num_labels,
                                  float overlap_threshold, Workspace w) {
  const int b = blockIdx.x;
  const int num_gt = w.num_gt[b];
  int* match = w.match + static_cast<size_t>(b) * num_anchors;
  float* gt_iou = w.gt_best_iou + b * num_labels;
  int* gt_anchor = w.gt_best_anchor + b * num_labels;
  int* claimed = w.claimed + b * num_labels;
  const float* gts = w.gts + static_cast<size_t>(b) * num_labels * 4;
  __shared__ int pick, pick_anchor;
  int num_positive = 0;  // meaningful in thread 0
  for (int round = 0; round < num_gt; ++round) {
    if (threadIdx.x == 0) {
      pick = -1;
      float best = match::kMinClaimIoU;
      int best_anchor = -1;
      for (int g = 0; g < num_gt; ++g) {
        if (claimed[g]) continue;
        if (gt_iou[g] > best || (pick >= 0 && gt_iou[g] == best && gt_anchor[g] < best_anchor)) {
          pick = g;
          best = gt_iou[g];
          best_anchor = gt_anchor[g];
        }
      }
      if (pick >= 0) {
        claimed[pick] = 1;
        match[best_anchor] = pick;
        ++num_positive;
      }
      pick_anchor = best_anchor;
    }
    __syncthreads();
    if (pick < 0) break;
    for (int g = 0; g < num_gt; ++g) {  // gts whose best anchor was just taken search again
      if (claimed[g] || gt_anchor[g] != pick_anchor) continue;
      Candidate best = BestFreeAnchor(anchors, num_anchors, gts + 4 * g, match);
      if (threadIdx.x == 0) {
        gt_iou[g] = best.iou;
        gt_anchor[g] = best.anchor == INT_MAX ? -1 : best.anchor;
      }
      __syncthreads();
    }
    __syncthreads();  // everyone is done with pick / pick_anchor before thread 0 rewrites them
  }
  using Reduce = cub::BlockReduce<int, kThreads>;
  __shared__ typename Reduce::TempStorage storage;
  int local = 0;
  if (overlap_threshold > 0.f && num_gt > 0) {
    const float* best_iou = w.best_iou + static_cast<size_t>(b) * num_anchors;
    const int* best_gt = w.best_gt + static_cast<size_t>(b) * num_anchors;
    for (int j = threadIdx.x; j < num_anchors; j += blockDim.x) {
      if (match[j] < 0 && best_gt[j] >= 0 && best_iou[j] > overlap_threshold) {
        match[j] = best_gt[j];
        ++local;
      }
    }
  }
  int thresholded = Reduce(storage).Sum(local);
  if (threadIdx.x == 0) w.num_positive[b] = num_positive + thresholded;
}

/*! \brief Sort key of a negative candidate: probability bits (NaN -> +inf, ranked last). */
__device__ uint32_t MiningKey(float prob) {
  float p = prob != prob ? __int_as_float(0x7F800000) : prob;
  return static_cast<uint32_t>(__float_as_int(p));
}

__global__ void MineNegatives(int num_anchors, float ratio, float iou_threshold, int minimum_negatives,
                              Workspace w) {
  const int b = blockIdx.x;
  if (!Active(w.num_gt[b], true, minimum_negatives)) return;
  int* match = w.match + static_cast<size_t>(b) * num_anchors;
  const float* best_iou = w.best_iou + static_cast<size_t>(b) * num_anchors;
  const float* prob = w.prob + static_cast<size_t>(b) * num_anchors;
  using Reduce = cub::BlockReduce<int, kThreads>;
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ union {
    typename Reduce::TempStorage reduce;
    typename Scan::TempStorage scan;
  } storage;
  __shared__ int shared_count;
  // Candidates stay kUnmatched for now; every other unmatched anchor is ignored.
  int local = 0;
  for (int j = threadIdx.x; j < num_anchors; j += blockDim.x) {
    if (match[j] != match::kUnmatched) continue;
    if (best_iou[j] < iou_threshold) {
      ++local;
    } else {
      match[j] = match::kIgnored;
    }
  }
  int count = Reduce(storage.reduce).Sum(local);
  if (threadIdx.x == 0) shared_count = count;
  __syncthreads();
  const int wanted = NumNegativesWanted(w.num_positive[b], num_anchors, ratio, minimum_negatives);
  int keep = wanted < shared_count ? wanted : shared_count;
  if (keep <= 0) {
    for (int j = threadIdx.x; j < num_anchors; j += blockDim.x) {
      if (match[j] == match::kUnmatched) match[j] = match::kIgnored;
    }
    return;
  }
  // Radix select: the keep-th smallest key (pivot) and how many keys equal to it to keep.
  uint32_t prefix = 0, mask = 0;
  int rank = keep;  // 1-based rank still to find among keys matching the prefix
  for (int bit = 31; bit >= 0; --bit) {
    const uint32_t bitmask = 1u << bit;
    int zeros = 0;
    for (int j = threadIdx.x; j < num_anchors; j += blockDim.x) {
      if (match[j] != match::kUnmatched) continue;
      uint32_t key = MiningKey(prob[j]);
      if ((key & mask) == prefix && !(key & bitmask)) ++zeros;
    }
    __syncthreads();
    int total = Reduce(storage.reduce).Sum(zeros);
    if (threadIdx.x == 0) shared_count = total;
    __syncthreads();
    if (rank > shared_count) {
      rank -= shared_count;
      prefix |= bitmask;
    }
    mask |= bitmask;
  }
  const uint32_t pivot = prefix;
  // Keys below the pivot are kept; of the keys equal to it, the first `rank` by anchor index.
  int taken = 0;  // equal keys kept so far (uniform across the block)
  for (int base = 0; base < num_anchors; base += blockDim.x) {
    const int j = base + threadIdx.x;
    int equal = 0;
    uint32_t key = 0;
    const bool cand = j < num_anchors && match[j] == match::kUnmatched;
    if (cand) {
      key = MiningKey(prob[j]);
      equal = key == pivot;
    }
    int before = 0, chunk_total = 0;
    __syncthreads();
    Scan(storage.scan).ExclusiveSum(equal, before, chunk_total);
    if (cand) {
      bool keep_it = key < pivot || (equal && taken + before < rank);
      if (!keep_it) match[j] = match::kIgnored;
    }
    taken += chunk_total;
  }
}

__global__ void WriteTargets(const float* anchors, const float* labels, int num_anchors, int num_labels,
                             int label_width, bool mining, int minimum_negatives, float ignore_label,
                             Variances variances, Workspace w, float* loc_target, float* loc_mask,
                             float* cls_target) {
  const int b = blockIdx.y;
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= num_anchors) return;
  const size_t idx = static_cast<size_t>(b) * num_anchors + j;
  float* loc = loc_target + idx * 4;
  float* mask = loc_mask + idx * 4;
  const int g = Active(w.num_gt[b], mining, minimum_negatives) ? w.match[idx] : match::kIgnored;
  if (g >= 0) {
    const int row = w.gt_rows[b * num_labels + g];
    cls_target[idx] = labels[(static_cast<size_t>(b) * num_labels + row) * label_width] + 1.f;
    BoxEncode(anchors + 4 * static_cast<size_t>(j), w.gts + (static_cast<size_t>(b) * num_labels + g) * 4,
              variances, loc);
    for (int k = 0; k < 4; ++k) mask[k] = 1.f;
  } else {
    cls_target[idx] = g == match::kUnmatched ? 0.f : ignore_label;
    for (int k = 0; k < 4; ++k) {
      loc[k] = 0.f;
      mask[k] = 0.f;
    }
  }
}

}  // namespace

size_t MultiBoxTargetWorkspaceBytes(int batch, int num_anchors, int num_labels) {
  const size_t bm = static_cast<size_t>(batch) * num_labels, bn = static_cast<size_t>(batch) * num_anchors;
  return Align(bm * 4 * sizeof(float)) + 4 * Align(bm * sizeof(int)) + 2 * Align(batch * sizeof(int)) +
         4 * Align(bn * sizeof(float));
}

void MultiBoxTargetForwardGPU(const MultiBoxTargetParam& p, const float* anchors, const float* labels,
                              const float* cls_pred, int batch, int num_anchors, int num_labels,
                              int label_width, int num_channels, float* loc_target, float* loc_mask,
                              float* cls_target, void* workspace, void* stream) {
  if (batch == 0 || num_anchors == 0) return;
  if (batch > 65535) throw std::invalid_argument("MultiBoxTarget on GPU supports at most 65535 images");
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  Workspace w = Carve(workspace, batch, num_anchors, num_labels);
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
