/*!
 * \file nms.h
 * \brief Greedy non-maximum suppression over a score-ranked candidate list (CPU, std only).
 *
 * Candidates are visited in the given order (best first, e.g. from common/topk.h). A candidate is
 * kept unless a kept candidate, of the same class when `classes` is given (class-aware NMS),
 * overlaps it with IoU (common/bbox.h BoxIoU) >= iou_threshold > 0. This is the same result as the
 * usual "each kept box suppresses the later ones" loop, but it compares each candidate only
 * with the kept boxes of its class, held coordinate by coordinate (branch-free), and it can stop
 * after `max_keep` kept.
 * Shared by MultiBoxDetection, FPNProposal and RCNNDetection. BlockGreedyNms (nvcc only) is the
 * same greedy rule run by one CUDA block, for the FPN operators' kernels.
 */
#ifndef SSDKIT_COMMON_NMS_H_
#define SSDKIT_COMMON_NMS_H_

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/bbox.h"
#include "common/topk.h"

namespace ssdkit {

struct NmsOptions {
  float iou_threshold = 0.5f;  // suppress at IoU >= this
  int max_keep = -1;           // stop after this many kept; < 0: no limit
};

/*! \brief Kept boxes of GreedyNmsSoA, one array per coordinate so that the IoU loop vectorises. */
struct NmsSoAScratch {
  std::vector<float> x0, y0, x1, y1, area;
};

/*!
 * \brief Class-agnostic greedy NMS with the same result as GreedyNms(boxes, nullptr, ...) for any
 *  iou_threshold > 0, faster when many boxes are kept (proposal NMS keeps up to ~1000 per level).
 *  Each candidate is tested against the kept boxes held coordinate by coordinate, in blocks of 64,
 *  with the operations of BoxIoU in the same order, so every IoU is bit for bit BoxIoU's; a block
 *  is tested whole (no early exit inside it) so that the loop has no branch.
 * \param boxes  (n, 4) corner boxes, indexed by the values in `order`
 * \param order  (count,) candidate indices, best first
 * \param keep   output: kept candidate indices in visiting order (cleared first)
 * \return number of kept candidates
 */
inline int GreedyNmsSoA(const float* boxes, const int* order, int count, const NmsOptions& opt,
                        std::vector<int>* keep, NmsSoAScratch* s) {
  keep->clear();
  s->x0.clear();
  s->y0.clear();
  s->x1.clear();
  s->y1.clear();
  s->area.clear();
  const float thr = opt.iou_threshold;
  for (int r = 0; r < count; ++r) {
    if (opt.max_keep >= 0 && static_cast<int>(keep->size()) >= opt.max_keep) break;
    const int idx = order[r];
    const float* b = boxes + 4 * static_cast<size_t>(idx);
    const float bx0 = b[0], by0 = b[1], bx1 = b[2], by1 = b[3];
    const float barea = (bx1 - bx0) * (by1 - by0);
    const int kept = static_cast<int>(s->x0.size());
    const float* kx0 = s->x0.data();
    const float* ky0 = s->y0.data();
    const float* kx1 = s->x1.data();
    const float* ky1 = s->y1.data();
    const float* karea = s->area.data();
    int hit = 0;
    for (int start = 0; start < kept && !hit; start += 64) {
      const int end = kept < start + 64 ? kept : start + 64;
      for (int j = start; j < end; ++j) {
        // BoxIoU(kept_j, box): the same operations in the same order
        const float iw = MinF(kx1[j], bx1) - MaxF(kx0[j], bx0);
        const float ih = MinF(ky1[j], by1) - MaxF(ky0[j], by0);
        const float inter = iw * ih;
        const float uni = karea[j] + barea - inter;
        hit |= static_cast<int>(iw > 0.f) & static_cast<int>(ih > 0.f) & static_cast<int>(uni > 0.f) &
               static_cast<int>(inter / uni >= thr);
      }
    }
    if (hit) continue;
    s->x0.push_back(bx0);
    s->y0.push_back(by0);
    s->x1.push_back(bx1);
    s->y1.push_back(by1);
    s->area.push_back(barea);
    keep->push_back(idx);
  }
  return static_cast<int>(keep->size());
}

/*! \brief Reusable buffers of GreedyNms (one per thread avoids reallocating per image). */
struct NmsScratch {
  std::vector<int> class_start;  // (num_classes + 1,) bucket offsets of the ranked candidates
  std::vector<int> cursor;       // (num_classes,) next free slot of each bucket while filling
  std::vector<int> bucket_idx;   // (count,) candidate indices, by class, rank order within
  std::vector<int> bucket_rank;  // (count,) their positions in `order`
  std::vector<int> class_keep;   // one class's kept indices
  std::vector<char> kept;        // (count,) 1 if the candidate at this rank is kept
  NmsSoAScratch soa;
};

/*!
 * \brief Greedy NMS for iou_threshold > 0 (an invalid_argument otherwise).
 *  Class-agnostic (classes == nullptr) it is GreedyNmsSoA. Class-aware NMS decides a candidate only
 *  from the earlier candidates of its class, so the ranked list is bucketed by class (rank order
 *  kept within each), each bucket goes through GreedyNmsSoA, and the kept candidates are collected
 *  back in rank order, cut at max_keep.
 * \param boxes        (n, 4) corner boxes, indexed by the values in `order`
 * \param classes      (n,) class ids in [0, num_classes), or nullptr for class-agnostic NMS
 * \param num_classes  number of classes (ignored when classes == nullptr)
 * \param order        (count,) candidate indices, best first
 * \param keep         output: kept candidate indices in visiting order (cleared first)
 * \return number of kept candidates
 */
inline int GreedyNms(const float* boxes, const int* classes, int num_classes, const int* order,
                     int count, const NmsOptions& opt, std::vector<int>* keep, NmsScratch* s) {
  if (!(opt.iou_threshold > 0.f)) {
    throw std::invalid_argument("GreedyNms needs iou_threshold > 0, got " + std::to_string(opt.iou_threshold));
  }
  if (classes == nullptr) return GreedyNmsSoA(boxes, order, count, opt, keep, &s->soa);
  keep->clear();
  if (num_classes <= 0) return 0;
  s->class_start.assign(static_cast<size_t>(num_classes) + 1, 0);
  for (int r = 0; r < count; ++r) {
    const int list = classes[order[r]];
    if (list < 0 || list >= num_classes) {
      throw std::out_of_range("GreedyNms: class id " + std::to_string(list) + " outside [0, " +
                              std::to_string(num_classes) + ")");
    }
    ++s->class_start[static_cast<size_t>(list) + 1];
  }
  for (int c = 0; c < num_classes; ++c) s->class_start[c + 1] += s->class_start[c];
  s->cursor.assign(s->class_start.begin(), s->class_start.end() - 1);
  s->bucket_idx.resize(static_cast<size_t>(count));
  s->bucket_rank.resize(static_cast<size_t>(count));
  for (int r = 0; r < count; ++r) {
    const int at = s->cursor[classes[order[r]]]++;
    s->bucket_idx[at] = order[r];
    s->bucket_rank[at] = r;
  }
  s->kept.assign(static_cast<size_t>(count), 0);
  for (int c = 0; c < num_classes; ++c) {
    const int begin = s->class_start[c], n = s->class_start[c + 1] - begin;
    if (n == 0) continue;
    GreedyNmsSoA(boxes, s->bucket_idx.data() + begin, n, opt, &s->class_keep, &s->soa);
    // class_keep is a subsequence of the bucket: walk both to find the kept ranks
    int j = begin;
    for (int idx : s->class_keep) {
      while (s->bucket_idx[j] != idx) ++j;
      s->kept[s->bucket_rank[j++]] = 1;
    }
  }
  for (int r = 0; r < count; ++r) {
    if (opt.max_keep >= 0 && static_cast<int>(keep->size()) >= opt.max_keep) break;
    if (s->kept[r]) keep->push_back(order[r]);
  }
  return static_cast<int>(keep->size());
}

/*! \brief What NMS kept in one group (an FPN level, a detection class), in rank order. */
struct KeptBoxes {
  std::vector<float> scores;  // (K,)
  std::vector<float> boxes;   // (K, 4)

  int size() const { return static_cast<int>(scores.size()); }
  void clear() {
    scores.clear();
    boxes.clear();
  }
  void push_back(float score, const float* box) {
    scores.push_back(score);
    boxes.insert(boxes.end(), box, box + 4);
  }
};

/*!
 * \brief The best `k` kept boxes of `num_groups` groups: descending score, ties by group, then rank
 *  in the group (TopKDescending of the groups' lists concatenated in group order). Calls
 *  emit(r, group, score, box) for the output rows r = 0, 1, ... and returns their number
 *  (min(k, kept boxes)). `merged` and `order` are scratch.
 */
template <typename Emit>
inline int MergeKeptTopK(const KeptBoxes* groups, int num_groups, int k, std::vector<float>* merged,
                         std::vector<int>* order, Emit&& emit) {
  merged->clear();
  for (int g = 0; g < num_groups; ++g) merged->insert(merged->end(), groups[g].scores.begin(), groups[g].scores.end());
  const int total = static_cast<int>(merged->size());
  TopKDescending(merged->data(), total, std::min(total, k), order);
  const int written = static_cast<int>(order->size());
  for (int r = 0; r < written; ++r) {
    int pos = (*order)[r], g = 0;
    while (pos >= groups[g].size()) pos -= groups[g++].size();
    emit(r, g, groups[g].scores[pos], groups[g].boxes.data() + 4 * static_cast<size_t>(pos));
  }
  return written;
}

#ifdef __CUDACC__
/*!
 * \brief Greedy NMS by one CUDA block over `count` candidates in rank order (best first): rank r is
 *  suppressed by a kept earlier rank with BoxIoU >= iou_threshold; the visit stops after `max_keep`
 *  kept (< 0: no limit, as NmsOptions). alive[r] is 1 for a candidate and 0 for none on entry, and
 *  1 exactly for the kept ranks on return. `box_at(r)` gives the box of rank r. Every thread of the
 *  block calls it; alive may be written just before the call (its first barrier is here).
 */
template <typename BoxAt>
__device__ void BlockGreedyNms(unsigned char* alive, int count, BoxAt box_at, float iou_threshold,
                               int max_keep) {
  __shared__ int kept;
  if (threadIdx.x == 0) kept = 0;
  __syncthreads();
  int r = 0;
  for (; r < count; ++r) {
    if (max_keep >= 0 && kept >= max_keep) break;  // uniform: kept changes only between barriers
    if (!alive[r]) continue;                       // uniform: alive[r] is final once the loop reaches r
    const float* box_r = box_at(r);
    for (int j = r + 1 + threadIdx.x; j < count; j += blockDim.x) {
      if (alive[j] && BoxIoU(box_r, box_at(j)) >= iou_threshold) alive[j] = 0;
    }
    __syncthreads();
    if (threadIdx.x == 0) ++kept;
    __syncthreads();
  }
  for (int j = r + threadIdx.x; j < count; j += blockDim.x) alive[j] = 0;  // after the stop: not kept
}
#endif  // __CUDACC__

}  // namespace ssdkit

#endif  // SSDKIT_COMMON_NMS_H_
