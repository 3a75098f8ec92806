// CUDA kernels of ProposalTarget (semantics: proposal_target-inl.h; the same steps as the CPU
// kernel with common/match.h and common/sample.h). Compiled by nvcc; no lib_api.h here.
// UNTESTED AT RUN TIME: there is no GPU on the development machines; these kernels are only
// compiled (tests/test_cuda_compile.py). The random samples differ from the CPU's.
//
//   CollectGts    <<<B, 1>>>    label rows -> compact (G, 4) ground truths per image
//   ProcessImage  <<<B, 256>>>  gather the image's rois in order (block scan), append the ground
//                               truths, best ground truth and kind of every candidate, random keys
//                               (Philox state b) and the k smallest kept, output rows in order
#include <cuda_runtime.h>

#include <cub/block/block_scan.cuh>

#include <cstdint>
#include <stdexcept>

#include "common/bbox.h"
#include "common/cuda_utils.h"
#include "common/ground_truth.h"
#include "common/match.h"
#include "common/sample.h"
#include "common/select.h"
#include "common/two_stage.h"
#include "proposal_target/proposal_target-inl.h"

namespace ssdkit {
namespace {

constexpr int kThreads = 256;

struct Workspace {
  float* gts;        // (B, M, 4)
  int* gt_rows;      // (B, M)
  int* num_gt;       // (B,)
  float* boxes;      // (B, R + M, 4) candidates
  int* best_gt;      // (B, R + M)
  int* kind;         // (B, R + M) CandidateKind
  uint32_t* keys;    // (B, R + M)
};

/*! \brief Lay the workspace out from `base` (nullptr: only measure); returns its size in bytes. */
size_t Carve(void* base, int batch, int num_rois, int m, Workspace* w) {
  cuda::WorkspaceCarver c(base);
  const size_t bm = static_cast<size_t>(batch) * m;
  const size_t bc = static_cast<size_t>(batch) * (static_cast<size_t>(num_rois) + m);
  w->gts = c.Take<float>(bm * 4);
  w->gt_rows = c.Take<int>(bm);
  w->num_gt = c.Take<int>(batch);
  w->boxes = c.Take<float>(bc * 4);
  w->best_gt = c.Take<int>(bc);
  w->kind = c.Take<int>(bc);
  w->keys = c.Take<uint32_t>(bc);
  return c.used();
}

__global__ void CollectGts(const float* labels, int num_labels, int label_width, float class_limit,
                           Workspace w) {
  const int b = blockIdx.x;
  const size_t bm = static_cast<size_t>(b) * num_labels;
  w.num_gt[b] = labels::Collect(labels + bm * label_width, num_labels, label_width, class_limit,
                                w.gts + bm * 4, w.gt_rows + bm);
}

struct Config {
  int batch, num_rois, num_labels, label_width, num_classes, batch_rois, max_fg;
  float fg_thresh, bg_lo, bg_hi;
  bool add_gt;
  Variances stds;
};

__global__ void ProcessImage(const float* rois, const float* labels, Config c, sample::PhiloxStateView* states,
                             Workspace w, float* rois_out, float* labels_out, float* box_target,
                             float* box_weight) {
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  const int b = blockIdx.x;
  const size_t cap = static_cast<size_t>(c.num_rois) + c.num_labels;
  float* boxes = w.boxes + static_cast<size_t>(b) * cap * 4;
  int* best_gt = w.best_gt + static_cast<size_t>(b) * cap;
  int* kind = w.kind + static_cast<size_t>(b) * cap;
  uint32_t* keys = w.keys + static_cast<size_t>(b) * cap;
  const float* gts = w.gts + static_cast<size_t>(b) * c.num_labels * 4;
  const int num_gt = w.num_gt[b];

  // 1. Candidates: this image's rois in row order, then its ground truths.
  int n = 0;  // uniform across the block
  for (int base = 0; base < c.num_rois; base += kThreads) {
    const int r = base + threadIdx.x;
    const int ok = (r < c.num_rois && RoiImage(rois + 5 * static_cast<size_t>(r), c.batch) == b) ? 1 : 0;
    int pos = 0, total = 0;
    __syncthreads();
    Scan(scan_storage).ExclusiveSum(ok, pos, total);
    if (ok) {
      for (int k = 0; k < 4; ++k) boxes[4 * static_cast<size_t>(n + pos) + k] = rois[5 * static_cast<size_t>(r) + 1 + k];
    }
    n += total;
  }
  if (c.add_gt) {
    for (int g = threadIdx.x; g < num_gt; g += kThreads) {
      for (int k = 0; k < 4; ++k) boxes[4 * static_cast<size_t>(n + g) + k] = gts[4 * g + k];
    }
    n += num_gt;
  }
  __syncthreads();
  // 2. Best ground truth and kind of every candidate.
  for (int j = threadIdx.x; j < n; j += kThreads) {
    float iou;
    match::BestOverlap(boxes + 4 * static_cast<size_t>(j), gts, num_gt, &iou, &best_gt[j]);
    kind[j] = ClassifyCandidate(iou, best_gt[j], c.fg_thresh, c.bg_lo, c.bg_hi);
  }
  // 3. Random subsampling.
  const sample::PhiloxStateView state = states[b];
  for (int j = threadIdx.x; j < n; j += kThreads) keys[j] = sample::CandidateKey(state, j, 0);
  __syncthreads();
  const int kept_fg = select::BlockSelectSmallestK<kThreads>(
      n, c.max_fg, [keys](int j) { return keys[j]; },
      [kind](int j) { return kind[j] == kForeground; },
      [kind](int j) { kind[j] = kNotSampled; });
  for (int j = threadIdx.x; j < n; j += kThreads) keys[j] = sample::CandidateKey(state, j, 1);
  __syncthreads();
  const int kept_bg = select::BlockSelectSmallestK<kThreads>(
      n, c.batch_rois - kept_fg, [keys](int j) { return keys[j]; },
      [kind](int j) { return kind[j] == kBackground; },
      [kind](int j) { kind[j] = kNotSampled; });
  if (threadIdx.x == 0) sample::AddToCounter(states[b].ctr, static_cast<uint64_t>(n));
  // 4. Output rows: foregrounds, then backgrounds, each in candidate order, then padding.
  //    (box_target / box_weight were zero-filled by the launcher.)
  const int width = 4 * (c.num_classes + 1);
  const size_t first = static_cast<size_t>(b) * c.batch_rois;
  int fg_pos = 0, bg_pos = kept_fg;  // uniform across the block
  for (int base = 0; base < n; base += kThreads) {
    const int j = base + threadIdx.x;
    const int k = j < n ? kind[j] : kNotSampled;
    // Both counts in one scan: a chunk holds at most 256 of each, well below 2^16.
    const int packed = (k == kForeground ? 1 : 0) | (k == kBackground ? 1 << 16 : 0);
    int before = 0, total = 0;
    __syncthreads();
    Scan(scan_storage).ExclusiveSum(packed, before, total);
    if (k != kNotSampled) {
      const bool fg = k == kForeground;
      const size_t row = first + (fg ? fg_pos + (before & 0xFFFF) : bg_pos + (before >> 16));
      float* roi = rois_out + 5 * row;
      roi[0] = static_cast<float>(b);
      for (int q = 0; q < 4; ++q) roi[1 + q] = boxes[4 * static_cast<size_t>(j) + q];
      if (fg) {
        const int g = best_gt[j];
        const int cls = static_cast<int>(
            labels[(static_cast<size_t>(b) * c.num_labels + w.gt_rows[static_cast<size_t>(b) * c.num_labels + g]) *
                   c.label_width]);
        labels_out[row] = static_cast<float>(cls + 1);
        const size_t slot = row * width + 4 * static_cast<size_t>(cls + 1);
        BoxEncode(boxes + 4 * static_cast<size_t>(j), gts + 4 * g, c.stds, box_target + slot);
        for (int q = 0; q < 4; ++q) box_weight[slot + q] = 1.f;
      } else {
        labels_out[row] = 0.f;
      }
    }
    fg_pos += total & 0xFFFF;
    bg_pos += total >> 16;
  }
  for (int i = kept_fg + kept_bg + threadIdx.x; i < c.batch_rois; i += kThreads) {
    float* roi = rois_out + 5 * (first + i);
    roi[0] = static_cast<float>(b);
    for (int q = 1; q < 5; ++q) roi[q] = 0.f;
    labels_out[first + i] = -1.f;
  }
}

}  // namespace

size_t ProposalTargetWorkspaceBytes(int batch, int num_rois, int num_labels) {
  Workspace w;
  return Carve(nullptr, batch, num_rois, num_labels, &w);
}

void ProposalTargetForwardGPU(const ProposalTargetParam& p, const float* rois, const float* labels,
                              int batch, int num_rois, int num_labels, int label_width, float* rois_out,
                              float* labels_out, float* box_target, float* box_weight, void* rand_states,
                              void* workspace, void* stream) {
  if (batch == 0) return;
  if (batch > 65535) throw std::invalid_argument("ProposalTarget on GPU supports at most 65535 images");
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  Workspace w;
  Carve(workspace, batch, num_rois, num_labels, &w);
  const size_t values = static_cast<size_t>(batch) * p.batch_rois * 4 * (p.num_classes + 1);
  cuda::ZeroFill(box_target, values, stream);
  cuda::ZeroFill(box_weight, values, stream);
  Config c{batch, num_rois, num_labels, label_width, p.num_classes, p.batch_rois, p.max_foreground(),
           p.fg_thresh, p.bg_thresh_lo, p.bg_thresh_hi, p.add_gt_as_proposals, p.stds};
  CollectGts<<<batch, 1, 0, s>>>(labels, num_labels, label_width, static_cast<float>(p.num_classes), w);
  ProcessImage<<<batch, kThreads, 0, s>>>(rois, labels, c, static_cast<sample::PhiloxStateView*>(rand_states), w,
                                          rois_out, labels_out, box_target, box_weight);
  cuda::CheckLastError("ProposalTarget kernels");
}

}  // namespace ssdkit
