// CUDA kernels of FPNProposal (semantics in fpn_proposal-inl.h). Compiled by nvcc; no lib_api.h here.
// UNTESTED AT RUNTIME: the development machines have no GPU; tests/test_cuda_compile.py only compiles
// this file. Plan, for B images, N anchors, L levels, T = sum over levels of min(pre_nms_top_n, size):
//  1. KeyKernel        one thread per (image, anchor): an order-preserving integer key of the score
//                      (0 for non-finite scores, below every finite one).
//  2. cub segmented radix sort, one segment per (image, level), descending; radix sort is stable, so
//     equal scores keep ascending anchor order, as the CPU's common/topk.h order.
//  3. CandidateKernel  one thread per (image, ranked slot < T): decode, clip, size test.
//  4. NmsKernel        one block per (image, level): greedy loop over the ranked slots, each step
//                      suppressing the later slots in parallel, stopping after P kept
//                      (common/nms.h BlockGreedyNms).
//  5. cub segmented radix sort of the kept slots per image (descending score, stable: ties stay in
//     level order then rank order, i.e. ascending anchor index), WriteKernel writes the first P.
// im_info is copied to the host once per call to check its values (common/cuda_utils.h
// CheckImInfoOnDevice: the CPU's error).
// nvcc may contract a * b + c into FMAs, so boxes can differ from the CPU's in the last bit.
#include <cuda_runtime.h>

#include <cub/cub.cuh>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/bbox.h"
#include "common/cuda_utils.h"
#include "common/nms.h"
#include "common/topk.h"
#include "common/two_stage.h"
#include "fpn_proposal/fpn_proposal-inl.h"

namespace ssdkit {
namespace {

constexpr int kThreads = 256;

/*! \brief Workspace carve-up; every piece starts on a 256-byte boundary. */
struct ProposalWorkspace {
  uint32_t* keys = nullptr;         // (B*N) score keys
  uint32_t* sorted_keys = nullptr;  // (B*N)
  int* ids = nullptr;               // (B*N) anchor index within the image
  int* sorted_ids = nullptr;        // (B*N) ranked per (image, level)
  int* seg_begin = nullptr;         // (B*L) segments of the first sort
  int* seg_end = nullptr;
  float* boxes = nullptr;           // (B*T, 4) decoded candidate boxes, ranked slots
  float* scores = nullptr;          // (B*T)
  unsigned char* ok = nullptr;      // (B*T) a proposal (then: kept by NMS)
  uint32_t* merge_keys = nullptr;   // (B*T)
  uint32_t* merge_sorted_keys = nullptr;
  int* merge_ids = nullptr;         // (B*T) slot within the image
  int* merge_sorted_ids = nullptr;
  int* merge_begin = nullptr;       // (B) segments of the second sort
  int* merge_end = nullptr;
  void* cub_temp = nullptr;
  size_t cub_bytes = 0;
  size_t total = 0;
};

ProposalWorkspace Layout(char* base, int batch, int n, int levels, int total_cand) {
  ProposalWorkspace w;
  const size_t cells = static_cast<size_t>(batch) * n;
  const size_t cands = static_cast<size_t>(batch) * total_cand;
  cuda::WorkspaceCarver c(base);
  w.keys = c.Take<uint32_t>(cells);
  w.sorted_keys = c.Take<uint32_t>(cells);
  w.ids = c.Take<int>(cells);
  w.sorted_ids = c.Take<int>(cells);
  w.seg_begin = c.Take<int>(static_cast<size_t>(batch) * levels);
  w.seg_end = c.Take<int>(static_cast<size_t>(batch) * levels);
  w.boxes = c.Take<float>(cands * 4);
  w.scores = c.Take<float>(cands);
  w.ok = c.Take<unsigned char>(cands);
  w.merge_keys = c.Take<uint32_t>(cands);
  w.merge_sorted_keys = c.Take<uint32_t>(cands);
  w.merge_ids = c.Take<int>(cands);
  w.merge_sorted_ids = c.Take<int>(cands);
  w.merge_begin = c.Take<int>(static_cast<size_t>(batch));
  w.merge_end = c.Take<int>(static_cast<size_t>(batch));
  size_t first = 0, second = 0;
  cub::DeviceSegmentedRadixSort::SortPairsDescending(nullptr, first, w.keys, w.sorted_keys, w.ids, w.sorted_ids,
                                                     static_cast<int>(cells), batch * levels, w.seg_begin,
                                                     w.seg_end);
  cub::DeviceSegmentedRadixSort::SortPairsDescending(nullptr, second, w.merge_keys, w.merge_sorted_keys,
                                                     w.merge_ids, w.merge_sorted_ids, static_cast<int>(cands),
                                                     batch, w.merge_begin, w.merge_end);
  w.cub_bytes = first > second ? first : second;
  w.cub_temp = c.Take<char>(w.cub_bytes);
  w.total = c.used();
  return w;
}

__global__ void SegmentsKernel(int batch, int n, int total_cand, FPNLevelPlan plan, ProposalWorkspace w) {
  const int levels = plan.num_levels;
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < batch * levels; t += blockDim.x * gridDim.x) {
    const int b = t / levels, l = t % levels;
    w.seg_begin[t] = b * n + plan.anchor_begin[l];
    w.seg_end[t] = b * n + plan.anchor_begin[l + 1];
    if (l == 0) {
      w.merge_begin[b] = b * total_cand;
      w.merge_end[b] = (b + 1) * total_cand;
    }
  }
}

__global__ void KeyKernel(int cells, int n, const float* __restrict__ cls_prob, ProposalWorkspace w) {
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < cells; t += blockDim.x * gridDim.x) {
    const float s = cls_prob[t];
    w.keys[t] = ScoreRankKey(s);  // 0 for non-finite scores: ranked last, no candidate
    w.ids[t] = t % n;
  }
}

__global__ void CandidateKernel(int batch, int n, int total_cand, FPNLevelPlan plan, Variances stds, float min_size,
                                const float* __restrict__ cls_prob, const float* __restrict__ bbox_pred,
                                const float* __restrict__ anchor, const float* __restrict__ im_info,
                                ProposalWorkspace w) {
  const int cands = batch * total_cand;
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < cands; t += blockDim.x * gridDim.x) {
    const int b = t / total_cand, c = t % total_cand;
    int l = 0;
    while (c >= plan.cand_begin[l + 1]) ++l;
    const size_t src = static_cast<size_t>(b) * n + plan.anchor_begin[l] + (c - plan.cand_begin[l]);
    const int id = w.sorted_ids[src];
    const size_t a = static_cast<size_t>(b) * n + id;
    float* box = w.boxes + 4 * static_cast<size_t>(t);
    const bool proposal = MakeProposal(anchor + 4 * static_cast<size_t>(id), bbox_pred + 4 * a, stds,
                                       im_info[3 * b], im_info[3 * b + 1], min_size, box);
    w.ok[t] = (w.sorted_keys[src] != 0u && proposal) ? 1 : 0;
    w.scores[t] = cls_prob[a];
  }
}

__global__ void NmsKernel(int total_cand, FPNLevelPlan plan, float nms_threshold, int max_keep,
                          ProposalWorkspace w) {
  const int levels = plan.num_levels;
  const int b = blockIdx.x / levels, l = blockIdx.x % levels;
  const size_t base = static_cast<size_t>(b) * total_cand + plan.cand_begin[l];
  const int count = plan.cand_begin[l + 1] - plan.cand_begin[l];
  const float* boxes = w.boxes + 4 * base;
  BlockGreedyNms(w.ok + base, count, [=](int r) { return boxes + 4 * static_cast<size_t>(r); }, nms_threshold,
                 max_keep);
}

__global__ void MergeKeyKernel(int cands, int total_cand, ProposalWorkspace w) {
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < cands; t += blockDim.x * gridDim.x) {
    w.merge_keys[t] = w.ok[t] ? ScoreRankKey(w.scores[t]) : 0u;
    w.merge_ids[t] = t % total_cand;
  }
}

__global__ void WriteKernel(int batch, int rows, int total_cand, ProposalWorkspace w, float* __restrict__ rois,
                            float* __restrict__ scores) {
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < batch * rows; t += blockDim.x * gridDim.x) {
    const int b = t / rows, r = t % rows;
    float* roi = rois + 5 * static_cast<size_t>(t);
    const size_t slot = static_cast<size_t>(b) * total_cand + r;
    if (r < total_cand && w.merge_sorted_keys[slot] != 0u) {
      const size_t c = static_cast<size_t>(b) * total_cand + w.merge_sorted_ids[slot];
      WriteRoi(roi, scores + t, b, w.boxes + 4 * c, w.scores[c]);
    } else {
      WritePaddingRoi(roi, scores + t, b);
    }
  }
}

}  // namespace

size_t FPNProposalGPUWorkspace(const FPNProposalParam& p, int batch, int num_anchors) {
  const FPNLevelPlan plan = PlanLevels(p);
  return Layout(nullptr, batch, num_anchors, plan.num_levels, plan.total_cand()).total;
}

void FPNProposalForwardGPU(const FPNProposalParam& p, int batch, int num_anchors, const float* cls_prob,
                           const float* bbox_pred, const float* anchor, const float* im_info, float* rois,
                           float* scores, void* workspace, void* stream) {
  if (batch == 0 || num_anchors == 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  cuda::CheckImInfoOnDevice(im_info, batch, stream);

  const FPNLevelPlan plan = PlanLevels(p);
  const int levels = plan.num_levels, total_cand = plan.total_cand();
  if (static_cast<size_t>(batch) * total_cand > 2147483647u) throw std::invalid_argument("FPNProposal: too many candidates");
  ProposalWorkspace w = Layout(static_cast<char*>(workspace), batch, num_anchors, levels, total_cand);
  const int cells = batch * num_anchors, cands = batch * total_cand;
  auto grid = [](size_t count) { return cuda::GridFor(count, kThreads); };
  SegmentsKernel<<<grid(static_cast<size_t>(batch) * levels), kThreads, 0, s>>>(batch, num_anchors, total_cand,
                                                                             plan, w);
  KeyKernel<<<grid(cells), kThreads, 0, s>>>(cells, num_anchors, cls_prob, w);
  cuda::CheckLastError("FPNProposal key kernel");
  cuda::Check(cub::DeviceSegmentedRadixSort::SortPairsDescending(w.cub_temp, w.cub_bytes, w.keys, w.sorted_keys,
                                                                 w.ids, w.sorted_ids, cells, batch * levels,
                                                                 w.seg_begin, w.seg_end, 0, 32, s),
              "FPNProposal level sort");
  CandidateKernel<<<grid(cands), kThreads, 0, s>>>(batch, num_anchors, total_cand, plan, p.stds, p.min_size,
                                                   cls_prob, bbox_pred, anchor, im_info, w);
  cuda::CheckLastError("FPNProposal candidate kernel");
  NmsKernel<<<batch * levels, kThreads, 0, s>>>(total_cand, plan, p.nms_threshold, p.post_nms_top_n, w);
  cuda::CheckLastError("FPNProposal NMS kernel");
  MergeKeyKernel<<<grid(cands), kThreads, 0, s>>>(cands, total_cand, w);
  cuda::Check(cub::DeviceSegmentedRadixSort::SortPairsDescending(w.cub_temp, w.cub_bytes, w.merge_keys,
                                                                 w.merge_sorted_keys, w.merge_ids,
                                                                 w.merge_sorted_ids, cands, batch, w.merge_begin,
                                                                 w.merge_end, 0, 32, s),
              "FPNProposal merge sort");
  WriteKernel<<<grid(static_cast<size_t>(batch) * p.post_nms_top_n), kThreads, 0, s>>>(
      batch, p.post_nms_top_n, total_cand, w, rois, scores);
  cuda::CheckLastError("FPNProposal write kernel");
}

}  // namespace ssdkit
