// CUDA kernels of MultiBoxDetection (semantics in multibox_detection-inl.h). Compiled by nvcc; no
// lib_api.h here. Plan, for B images of N anchors, each step on the host/device functions the CPU
// kernel (multibox_detection.cc) also runs:
//  1. ScoreKernel      one thread per (image, anchor): BestObjectScoreLanes<1>, IsCandidateScore,
//     FirstChannelWithScoreLanes<1>, ChannelToClass, rank key TotalRankKey (common/topk.h, the
//     CPU's TopKDescending key), BoxDecode, count.
//  2. cub segmented radix sort of the keys, descending; radix sort is stable, so equal scores keep
//     ascending anchor order, the CPU's (and contrib's std::stable_sort's) tie rule.
//  3. NmsKernel        one block per image: common/nms.h BlockGreedyNms over the top-T ranked rows
//     with a class predicate (unless force_suppress) and the CPU's Suppresses test.
//  4. WriteKernel      one block per image: the output layout (WriteDetectionRow), a block-wide scan
//     giving anchor-order positions for the rows that contrib leaves unsorted.
// Compiled, never run on a GPU (none on the development machines; tools/gpu_selftest.sh checks it).
#include <cuda_runtime.h>

#include <cub/cub.cuh>

#include <cmath>
#include <stdexcept>
#include <string>

#include "common/bbox.h"
#include "common/cuda_utils.h"
#include "common/nms.h"
#include "common/topk.h"
#include "multibox_detection/multibox_detection-inl.h"

namespace ssdkit {
namespace {

constexpr int kThreads = 256;

/*! \brief Workspace carve-up; every piece starts on a 256-byte boundary. */
struct DetWorkspace {
  uint32_t* keys = nullptr;         // (B*N) TotalRankKey(score) of candidates, 0 otherwise
  uint32_t* sorted_keys = nullptr;  // (B*N)
  float* scores = nullptr;          // (B*N) best object score
  int* anchor_ids = nullptr;     // (B*N) anchor index within its image
  int* sorted_ids = nullptr;     // (B*N) anchor index, ranked per image
  int* classes = nullptr;        // (B*N) object class, -1 for non-candidates
  float* boxes = nullptr;        // (B*N, 4) decoded boxes
  int* offsets = nullptr;        // (B+1) segment starts
  int* counts = nullptr;         // (B) candidates per image
  unsigned char* alive = nullptr;  // (B*N) per ranked row: not suppressed
  void* cub_temp = nullptr;
  size_t cub_bytes = 0;
  size_t total = 0;
};

size_t Align(size_t x) { return (x + 255) & ~static_cast<size_t>(255); }

DetWorkspace Layout(char* base, int batch, int num_anchors) {
  DetWorkspace w;
  const size_t cells = static_cast<size_t>(batch) * num_anchors;
  size_t at = 0;
  auto take = [&](size_t bytes) {
    char* p = base == nullptr ? nullptr : base + at;
    at += Align(bytes);
    return p;
  };
  w.keys = reinterpret_cast<uint32_t*>(take(cells * sizeof(uint32_t)));
  w.sorted_keys = reinterpret_cast<uint32_t*>(take(cells * sizeof(uint32_t)));
  w.scores = reinterpret_cast<float*>(take(cells * sizeof(float)));
  w.anchor_ids = reinterpret_cast<int*>(take(cells * sizeof(int)));
  w.sorted_ids = reinterpret_cast<int*>(take(cells * sizeof(int)));
  w.classes = reinterpret_cast<int*>(take(cells * sizeof(int)));
  w.boxes = reinterpret_cast<float*>(take(cells * 4 * sizeof(float)));
  w.offsets = reinterpret_cast<int*>(take((batch + 1) * sizeof(int)));
  w.counts = reinterpret_cast<int*>(take(batch * sizeof(int)));
  w.alive = reinterpret_cast<unsigned char*>(take(cells));
  cub::DeviceSegmentedRadixSort::SortPairsDescending(
      nullptr, w.cub_bytes, w.keys, w.sorted_keys, w.anchor_ids, w.sorted_ids, static_cast<int>(cells),
      batch, w.offsets, w.offsets + 1);
  w.cub_temp = take(w.cub_bytes);
  w.total = at;
  return w;
}

__global__ void OffsetsKernel(int batch, int num_anchors, int* offsets, int* counts) {
  for (int b = blockIdx.x * blockDim.x + threadIdx.x; b <= batch; b += blockDim.x * gridDim.x) {
    offsets[b] = b * num_anchors;
    if (b < batch) counts[b] = 0;
  }
}

__global__ void ScoreKernel(int batch, int channels, int num_anchors, int background_id, float threshold,
                            bool clip, Variances var, const float* __restrict__ prob,
                            const float* __restrict__ loc, const float* __restrict__ anchor,
                            DetWorkspace w) {
  const int total = batch * num_anchors;
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < total; t += blockDim.x * gridDim.x) {
    const int b = t / num_anchors, i = t % num_anchors;
    const float* p = prob + static_cast<size_t>(b) * channels * num_anchors + i;
    float score;
    BestObjectScoreLanes<1>(p, num_anchors, channels, background_id, 1, &score);
    int best = channels;
    const bool candidate = IsCandidateScore(score, threshold) != 0;
    if (candidate) FirstChannelWithScoreLanes<1>(p, num_anchors, channels, background_id, 1, &score, &best);
    w.classes[t] = candidate ? ChannelToClass(best, background_id) : -1;
    w.keys[t] = candidate ? TotalRankKey(score) : 0u;
    w.scores[t] = score;
    w.anchor_ids[t] = i;
    BoxDecode(anchor + 4 * static_cast<size_t>(i), loc + 4 * static_cast<size_t>(t), var, clip,
              w.boxes + 4 * static_cast<size_t>(t));
    if (candidate) atomicAdd(w.counts + b, 1);
  }
}

/*! \brief Rows kept after ranking: all V without NMS, else the nms_topk cut. */
__device__ __forceinline__ int RankedRows(int v, bool nms, int nms_topk) {
  return (nms && nms_topk > 0 && nms_topk < v) ? nms_topk : v;
}

__global__ void NmsKernel(int num_anchors, float nms_threshold, bool force_suppress, int nms_topk,
                          int max_keep, DetWorkspace w) {
  const int b = blockIdx.x;
  const size_t base = static_cast<size_t>(b) * num_anchors;
  const int top = RankedRows(w.counts[b], true, nms_topk);
  const int* ids = w.sorted_ids + base;
  unsigned char* alive = w.alive + base;
  const float* boxes = w.boxes + 4 * base;
  const int* classes = w.classes + base;
  for (int r = threadIdx.x; r < top; r += blockDim.x) alive[r] = 1;
  BlockGreedyNms(
      alive, top, [=](int r) { return boxes + 4 * static_cast<size_t>(ids[r]); }, nms_threshold, max_keep,
      [=](int r, int j) { return force_suppress || classes[ids[r]] == classes[ids[j]]; });
}

__global__ void WriteKernel(int num_anchors, int rows, bool nms, int nms_topk, bool capped,
                            DetWorkspace w, float* __restrict__ out) {
  using BlockScan = cub::BlockScan<int, kThreads>;
  __shared__ typename BlockScan::TempStorage scan_storage;
  __shared__ int running;
  const int b = blockIdx.x;
  const size_t base = static_cast<size_t>(b) * num_anchors;
  const int v = w.counts[b];
  const int top = RankedRows(v, nms, nms_topk);
  float* o = out + 6 * static_cast<size_t>(b) * rows;
  const int* ids = w.sorted_ids + base;
  const float* scores = w.scores + base;
  const float* boxes = w.boxes + 4 * base;
  const int* classes = w.classes + base;
  int written;
  if (capped) {
    // the kept ranked rows in order (all ranked rows without NMS), first `rows` of them
    if (threadIdx.x == 0) running = 0;
    __syncthreads();
    for (int start = 0; start < top; start += kThreads) {
      const int r = start + threadIdx.x;
      const int keep = (r < top && (!nms || w.alive[base + r])) ? 1 : 0;
      int pos, total;
      BlockScan(scan_storage).ExclusiveSum(keep, pos, total);
      pos += running;
      if (keep && pos < rows) {
        WriteDetectionRow(o + 6 * static_cast<size_t>(pos), static_cast<float>(classes[ids[r]]), scores[ids[r]],
                    boxes + 4 * static_cast<size_t>(ids[r]));
      }
      __syncthreads();
      if (threadIdx.x == 0) running += total;
      __syncthreads();
    }
    written = running < rows ? running : rows;
  } else {
    // ranked rows [0, top): NMS results; candidates with anchor-order position in [top, v): removed
    // (without NMS, top = 0 here: all v candidates in anchor order, kept)
    const int ranked = nms ? top : 0;
    for (int r = threadIdx.x; r < ranked; r += blockDim.x) {
      const int id = ids[r];
      WriteDetectionRow(o + 6 * static_cast<size_t>(r), w.alive[base + r] ? static_cast<float>(classes[id]) : -1.f,
                  scores[id], boxes + 4 * static_cast<size_t>(id));
    }
    if (threadIdx.x == 0) running = 0;
    __syncthreads();
    for (int start = 0; start < num_anchors && ranked < v; start += kThreads) {
      const int i = start + threadIdx.x;
      const int is_candidate = (i < num_anchors && classes[i] >= 0) ? 1 : 0;
      int pos, total;
      BlockScan(scan_storage).ExclusiveSum(is_candidate, pos, total);
      pos += running;
      if (is_candidate && pos >= ranked) {
        WriteDetectionRow(o + 6 * static_cast<size_t>(pos), nms ? -1.f : static_cast<float>(classes[i]), scores[i],
                    boxes + 4 * static_cast<size_t>(i));
      }
      __syncthreads();
      if (threadIdx.x == 0) running += total;
      __syncthreads();
    }
    written = v;
  }
  for (size_t k = 6 * static_cast<size_t>(written) + threadIdx.x; k < 6 * static_cast<size_t>(rows);
       k += blockDim.x) {
    o[k] = -1.f;
  }
}

}  // namespace

size_t MultiBoxDetectionGPUWorkspace(int batch, int /*num_channels*/, int num_anchors) {
  return Layout(nullptr, batch, num_anchors).total;
}

void MultiBoxDetectionForwardGPU(const MultiBoxDetectionParam& p, int batch, int num_channels,
                                 int num_anchors, const float* cls_prob, const float* loc_pred,
                                 const float* anchor, float* out, int out_rows, void* workspace,
                                 void* stream) {
  if (batch == 0 || num_anchors == 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  DetWorkspace w = Layout(static_cast<char*>(workspace), batch, num_anchors);
  const int cells = batch * num_anchors;
  OffsetsKernel<<<(batch + kThreads) / kThreads, kThreads, 0, s>>>(batch, num_anchors, w.offsets, w.counts);
  int blocks = (cells + kThreads - 1) / kThreads;
  if (blocks > 65535) blocks = 65535;
  ScoreKernel<<<blocks, kThreads, 0, s>>>(batch, num_channels, num_anchors, p.background_id, p.threshold,
                                          p.clip, p.variances, cls_prob, loc_pred, anchor, w);
  cuda::CheckLastError("MultiBoxDetection score kernel");
  cudaError_t err = cub::DeviceSegmentedRadixSort::SortPairsDescending(
      w.cub_temp, w.cub_bytes, w.keys, w.sorted_keys, w.anchor_ids, w.sorted_ids, cells, batch, w.offsets,
      w.offsets + 1, 0, static_cast<int>(sizeof(uint32_t) * 8), s);
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("MultiBoxDetection sort: ") + cudaGetErrorString(err));
  }
  const bool nms = p.nms_enabled();
  const bool capped = p.max_detections > 0;
  if (nms) {
    NmsKernel<<<batch, kThreads, 0, s>>>(num_anchors, p.nms_threshold, p.force_suppress, p.nms_topk,
                                         capped ? out_rows : -1, w);
    cuda::CheckLastError("MultiBoxDetection NMS kernel");
  }
  WriteKernel<<<batch, kThreads, 0, s>>>(num_anchors, out_rows, nms, p.nms_topk, capped, w, out);
  cuda::CheckLastError("MultiBoxDetection write kernel");
}

}  // namespace ssdkit
