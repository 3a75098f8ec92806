// CUDA kernels of RCNNDetection (semantics in rcnn_detection-inl.h). Compiled by nvcc; no lib_api.h here.
// UNTESTED AT RUNTIME: the development machines have no GPU; tests/test_cuda_compile.py only compiles
// this file. Plan, for M roi rows, B images, C foreground classes, V valid rois:
//  1. ImageKernel      one thread per roi row: its image (B for ignored rows), per-image counts.
//  2. cub radix sort of the rows by image (stable: ascending row within an image), exclusive scan of
//     the counts -> row_off. Candidate slots are laid out image-major, then class-major:
//     image b, class c, j-th roi of b -> slot row_off[b] * C + c * count[b] + j.
//  3. CandidateKernel  one thread per (valid roi, class): score test, decode, clip -> key (0: none).
//  4. cub segmented radix sort per (image, class), descending (stable: ties by ascending roi row).
//  5. NmsKernel        one block per (image, class): greedy loop, at most K kept (common/nms.h
//                      BlockGreedyNms).
//  6. cub segmented radix sort of the kept slots per image, descending (stable: ties stay in class
//     order, then roi order); WriteKernel writes the first K rows, then rows of -1.
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
#include "rcnn_detection/rcnn_detection-inl.h"

namespace ssdkit {
namespace {

constexpr int kThreads = 256;

/*! \brief Workspace carve-up; every piece starts on a 256-byte boundary. */
struct DetWorkspace {
  uint32_t* image = nullptr;         // (M) image of each row, B for ignored rows
  uint32_t* sorted_image = nullptr;  // (M)
  int* rows = nullptr;               // (M) 0..M-1
  int* sorted_rows = nullptr;        // (M) rows grouped by image
  int* counts = nullptr;             // (B+1) valid rois per image (last: 0)
  int* row_off = nullptr;            // (B+1) exclusive scan of counts
  uint32_t* keys = nullptr;          // (M*C) candidate keys by slot
  uint32_t* sorted_keys = nullptr;   // (M*C) ranked per (image, class)
  int* slots = nullptr;              // (M*C) 0..M*C-1
  int* sorted_slots = nullptr;       // (M*C)
  float* boxes = nullptr;            // (M*C, 4) by slot
  float* scores = nullptr;           // (M*C) by slot
  int* seg_begin = nullptr;          // (B*C)
  int* seg_end = nullptr;
  unsigned char* alive = nullptr;    // (M*C) by ranked position: kept by NMS
  uint32_t* merge_keys = nullptr;    // (M*C) by ranked position
  uint32_t* merge_sorted_keys = nullptr;
  int* merge_ids = nullptr;          // (M*C) ranked position
  int* merge_sorted_ids = nullptr;
  int* merge_begin = nullptr;        // (B)
  int* merge_end = nullptr;
  void* cub_temp = nullptr;
  size_t cub_bytes = 0;
  size_t total = 0;
};

DetWorkspace Layout(char* base, int num_rois, int classes, int batch) {
  DetWorkspace w;
  const size_t m = static_cast<size_t>(num_rois), slots = m * classes;
  cuda::WorkspaceCarver c(base);
  w.image = c.Take<uint32_t>(m);
  w.sorted_image = c.Take<uint32_t>(m);
  w.rows = c.Take<int>(m);
  w.sorted_rows = c.Take<int>(m);
  w.counts = c.Take<int>(static_cast<size_t>(batch) + 1);
  w.row_off = c.Take<int>(static_cast<size_t>(batch) + 1);
  w.keys = c.Take<uint32_t>(slots);
  w.sorted_keys = c.Take<uint32_t>(slots);
  w.slots = c.Take<int>(slots);
  w.sorted_slots = c.Take<int>(slots);
  w.boxes = c.Take<float>(slots * 4);
  w.scores = c.Take<float>(slots);
  w.seg_begin = c.Take<int>(static_cast<size_t>(batch) * classes);
  w.seg_end = c.Take<int>(static_cast<size_t>(batch) * classes);
  w.alive = c.Take<unsigned char>(slots);
  w.merge_keys = c.Take<uint32_t>(slots);
  w.merge_sorted_keys = c.Take<uint32_t>(slots);
  w.merge_ids = c.Take<int>(slots);
  w.merge_sorted_ids = c.Take<int>(slots);
  w.merge_begin = c.Take<int>(static_cast<size_t>(batch));
  w.merge_end = c.Take<int>(static_cast<size_t>(batch));
  size_t bytes[4] = {0, 0, 0, 0};
  cub::DeviceRadixSort::SortPairs(nullptr, bytes[0], w.image, w.sorted_image, w.rows, w.sorted_rows, num_rois);
  cub::DeviceScan::ExclusiveSum(nullptr, bytes[1], w.counts, w.row_off, batch + 1);
  cub::DeviceSegmentedRadixSort::SortPairsDescending(nullptr, bytes[2], w.keys, w.sorted_keys, w.slots,
                                                     w.sorted_slots, static_cast<int>(slots), batch * classes,
                                                     w.seg_begin, w.seg_end);
  cub::DeviceSegmentedRadixSort::SortPairsDescending(nullptr, bytes[3], w.merge_keys, w.merge_sorted_keys,
                                                     w.merge_ids, w.merge_sorted_ids, static_cast<int>(slots), batch,
                                                     w.merge_begin, w.merge_end);
  w.cub_bytes = 0;
  for (size_t b : bytes) w.cub_bytes = b > w.cub_bytes ? b : w.cub_bytes;
  w.cub_temp = c.Take<char>(w.cub_bytes);
  w.total = c.used();
  return w;
}

__global__ void ZeroCountsKernel(int batch, DetWorkspace w) {
  for (int b = blockIdx.x * blockDim.x + threadIdx.x; b <= batch; b += blockDim.x * gridDim.x) w.counts[b] = 0;
}

__global__ void ImageKernel(int num_rois, int batch, const float* __restrict__ rois, DetWorkspace w) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < num_rois; i += blockDim.x * gridDim.x) {
    const int b = RoiImage(rois + 5 * static_cast<size_t>(i), batch);
    w.image[i] = b >= 0 ? static_cast<uint32_t>(b) : static_cast<uint32_t>(batch);
    w.rows[i] = i;
    if (b >= 0) atomicAdd(w.counts + b, 1);
  }
}

__device__ __forceinline__ int ImageCount(const DetWorkspace& w, int b) { return w.row_off[b + 1] - w.row_off[b]; }

__global__ void SegmentsKernel(int batch, int classes, DetWorkspace w) {
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < batch * classes; t += blockDim.x * gridDim.x) {
    const int b = t / classes, c = t % classes;
    const int count = ImageCount(w, b);
    w.seg_begin[t] = w.row_off[b] * classes + c * count;
    w.seg_end[t] = w.seg_begin[t] + count;
    if (c == 0) {
      w.merge_begin[b] = w.row_off[b] * classes;
      w.merge_end[b] = w.row_off[b + 1] * classes;
    }
  }
}

__global__ void CandidateKernel(int num_rois, int classes, int batch, float threshold, Variances stds, bool clip,
                                const float* __restrict__ rois, const float* __restrict__ prob,
                                const float* __restrict__ bbox, const float* __restrict__ im_info, DetWorkspace w) {
  const int channels = classes + 1;
  const size_t total = static_cast<size_t>(num_rois) * classes;
  for (size_t t = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<size_t>(blockDim.x) * gridDim.x) {
    const int p = static_cast<int>(t / classes), c = static_cast<int>(t % classes);
    if (p >= w.row_off[batch]) continue;  // past the valid rows
    const int b = static_cast<int>(w.sorted_image[p]);
    const int i = w.sorted_rows[p];
    const int slot = w.row_off[b] * classes + c * ImageCount(w, b) + (p - w.row_off[b]);
    const size_t cell = static_cast<size_t>(i) * channels + c + 1;
    const float score = prob[cell];
    float* box = w.boxes + 4 * static_cast<size_t>(slot);
    const bool made = MakeDetectionBox(rois + 5 * static_cast<size_t>(i) + 1, bbox + 4 * cell, stds,
                                       im_info[3 * b], im_info[3 * b + 1], clip, box);
    w.keys[slot] = (IsDetectionScore(score, threshold) && made) ? ScoreRankKey(score) : 0u;
    w.slots[slot] = slot;
    w.scores[slot] = score;
  }
}

__global__ void NmsKernel(float nms_threshold, int max_keep, DetWorkspace w) {
  const int begin = w.seg_begin[blockIdx.x];
  const int count = w.seg_end[blockIdx.x] - begin;
  unsigned char* alive = w.alive + begin;
  const uint32_t* keys = w.sorted_keys + begin;
  const int* slots = w.sorted_slots + begin;
  const float* boxes = w.boxes;
  for (int j = threadIdx.x; j < count; j += blockDim.x) alive[j] = keys[j] != 0u ? 1 : 0;  // 0: no candidate
  BlockGreedyNms(alive, count, [=](int r) { return boxes + 4 * static_cast<size_t>(slots[r]); }, nms_threshold,
                 max_keep);
}

__global__ void MergeKeyKernel(int classes, int batch, DetWorkspace w) {
  const int total = w.row_off[batch] * classes;
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < total; t += blockDim.x * gridDim.x) {
    w.merge_keys[t] = w.alive[t] ? w.sorted_keys[t] : 0u;
    w.merge_ids[t] = t;
  }
}

__global__ void WriteKernel(int batch, int classes, int rows, bool normalize, const float* __restrict__ im_info,
                            DetWorkspace w, float* __restrict__ det) {
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < batch * rows; t += blockDim.x * gridDim.x) {
    const int b = t / rows, r = t % rows;
    float* row = det + 6 * static_cast<size_t>(t);
    const int count = ImageCount(w, b);
    const int first = w.row_off[b] * classes;
    if (r < count * classes && w.merge_sorted_keys[first + r] != 0u) {
      const int ranked = w.merge_sorted_ids[first + r];  // position in the per-(image, class) ranking
      const int slot = w.sorted_slots[ranked];
      const int cls = (ranked - first) / count;
      WriteRCNNDetection(row, cls, w.scores[slot], w.boxes + 4 * static_cast<size_t>(slot), normalize,
                         im_info[3 * b], im_info[3 * b + 1]);
    } else {
      for (int k = 0; k < 6; ++k) row[k] = -1.f;
    }
  }
}

}  // namespace

size_t RCNNDetectionGPUWorkspace(const RCNNDetectionParam&, int num_rois, int channels, int batch) {
  return Layout(nullptr, num_rois, channels - 1, batch).total;
}

void RCNNDetectionForwardGPU(const RCNNDetectionParam& p, int num_rois, int channels, int batch, const float* rois,
                             const float* cls_prob, const float* bbox_pred, const float* im_info, float* det,
                             void* workspace, void* stream) {
  if (batch == 0 || num_rois == 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  cuda::CheckImInfoOnDevice(im_info, batch, stream);

  const int classes = channels - 1;
  const size_t slots = static_cast<size_t>(num_rois) * classes;
  if (slots > 2147483647u) throw std::invalid_argument("RCNNDetection: num_rois * num_classes must be < 2^31");
  DetWorkspace w = Layout(static_cast<char*>(workspace), num_rois, classes, batch);
  auto grid = [](size_t count) { return cuda::GridFor(count, kThreads); };
  ZeroCountsKernel<<<grid(batch + 1), kThreads, 0, s>>>(batch, w);
  ImageKernel<<<grid(num_rois), kThreads, 0, s>>>(num_rois, batch, rois, w);
  cuda::CheckLastError("RCNNDetection image kernel");
  cuda::Check(cub::DeviceRadixSort::SortPairs(w.cub_temp, w.cub_bytes, w.image, w.sorted_image, w.rows,
                                              w.sorted_rows, num_rois, 0, 32, s),
              "RCNNDetection image sort");
  cuda::Check(cub::DeviceScan::ExclusiveSum(w.cub_temp, w.cub_bytes, w.counts, w.row_off, batch + 1, s),
              "RCNNDetection count scan");
  SegmentsKernel<<<grid(static_cast<size_t>(batch) * classes), kThreads, 0, s>>>(batch, classes, w);
  CandidateKernel<<<grid(slots), kThreads, 0, s>>>(num_rois, classes, batch, p.score_threshold, p.stds, p.clip, rois,
                                                   cls_prob, bbox_pred, im_info, w);
  cuda::CheckLastError("RCNNDetection candidate kernel");
  cuda::Check(cub::DeviceSegmentedRadixSort::SortPairsDescending(w.cub_temp, w.cub_bytes, w.keys, w.sorted_keys,
                                                                 w.slots, w.sorted_slots, static_cast<int>(slots),
                                                                 batch * classes, w.seg_begin, w.seg_end, 0, 32, s),
              "RCNNDetection class sort");
  NmsKernel<<<batch * classes, kThreads, 0, s>>>(p.nms_threshold, p.max_detections, w);
  cuda::CheckLastError("RCNNDetection NMS kernel");
  MergeKeyKernel<<<grid(slots), kThreads, 0, s>>>(classes, batch, w);
  cuda::Check(cub::DeviceSegmentedRadixSort::SortPairsDescending(w.cub_temp, w.cub_bytes, w.merge_keys,
                                                                 w.merge_sorted_keys, w.merge_ids,
                                                                 w.merge_sorted_ids, static_cast<int>(slots), batch,
                                                                 w.merge_begin, w.merge_end, 0, 32, s),
              "RCNNDetection merge sort");
  WriteKernel<<<grid(static_cast<size_t>(batch) * p.max_detections), kThreads, 0, s>>>(
      batch, classes, p.max_detections, p.normalize, im_info, w, det);
  cuda::CheckLastError("RCNNDetection write kernel");
}

}  // namespace ssdkit
