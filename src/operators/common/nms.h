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
 * same greedy rule run by one CUDA block, with a suppression predicate (class-aware or not), for the
 * CUDA kernels of those three operators; Suppresses is the one IoU test of both.
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

/*!
 * \brief The suppression test of greedy NMS: does kept box k suppress candidate box b, i.e. is
 *  BoxIoU(k, b) >= thr? Boxes as coordinates plus their (x1 - x0) * (y1 - y0) areas (precomputed
 *  once per box); the operations and their order are BoxIoU's, so the IoU is bit for bit BoxIoU's
 *  (without FMA contraction). Branch-free (an int, 0 or 1) so that the CPU loop vectorises. The
 *  CPU's GreedyNmsSoA and the GPU's BlockGreedyNms both decide with it.
 */
SSDKIT_HD int Suppresses(float kx0, float ky0, float kx1, float ky1, float karea, float bx0, float by0,
                         float bx1, float by1, float barea, float thr) {
  const float iw = MinF(kx1, bx1) - MaxF(kx0, bx0);
  const float ih = MinF(ky1, by1) - MaxF(ky0, by0);
  const float inter = iw * ih;
  const float uni = karea + barea - inter;
  return static_cast<int>(iw > 0.f) & static_cast<int>(ih > 0.f) & static_cast<int>(uni > 0.f) &
         static_cast<int>(inter / uni >= thr);
}

/*! \brief Area term of Suppresses for a corner box: (x1 - x0) * (y1 - y0), as BoxIoU's union. */
SSDKIT_HD float NmsArea(const float* b) { return (b[2] - b[0]) * (b[3] - b[1]); }

/*! \brief Suppresses for two corner boxes. */
SSDKIT_HD int SuppressesBox(const float* kept, const float* box, float thr) {
  return Suppresses(kept[0], kept[1], kept[2], kept[3], NmsArea(kept), box[0], box[1], box[2], box[3],
                    NmsArea(box), thr);
}

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
    const float barea = NmsArea(b);
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
        hit |= Suppresses(kx0[j], ky0[j], kx1[j], ky1[j], karea[j], bx0, by0, bx1, by1, barea, thr);
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

/*! \brief Suppression predicate of class-agnostic NMS: every kept box may suppress every later one. */
struct AnyGroup {
  SSDKIT_HD bool operator()(int, int) const { return true; }
};

#ifdef __CUDACC__
/*!
 * \brief Greedy NMS by one CUDA block over `count` candidates in rank order (best first): rank j is
 *  suppressed by a kept earlier rank r when same_group(r, j) (e.g. the same class for class-aware
 *  NMS; AnyGroup for class-agnostic) and SuppressesBox(box r, box j) (BoxIoU >= iou_threshold);
 *  the visit stops after `max_keep` kept (< 0: no limit, as NmsOptions). alive[r] is 1 for a
 *  candidate and 0 for none on entry, and 1 exactly for the kept ranks on return. `box_at(r)`
 *  gives the box of rank r. Every thread of the block calls it; alive may be written just before
 *  the call (its first barrier is here). The CPU's GreedyNms gives the same kept set (by class
 *  buckets instead of a predicate) with the same Suppresses test.
 */
template <typename BoxAt, typename SameGroup>
__device__ void BlockGreedyNms(unsigned char* alive, int count, BoxAt box_at, float iou_threshold, int max_keep,
                               SameGroup same_group) {
  __shared__ int kept;
  if (threadIdx.x == 0) kept = 0;
  __syncthreads();
  int r = 0;
  for (; r < count; ++r) {
    if (max_keep >= 0 && kept >= max_keep) break;  // uniform: kept changes only between barriers
    if (!alive[r]) continue;                       // uniform: alive[r] is final once the loop reaches r
    const float* box_r = box_at(r);
    for (int j = r + 1 + threadIdx.x; j < count; j += blockDim.x) {
      if (alive[j] && same_group(r, j) && SuppressesBox(box_r, box_at(j), iou_threshold)) alive[j] = 0;
    }
    __syncthreads();
    if (threadIdx.x == 0) ++kept;
    __syncthreads();
  }
  for (int j = r + threadIdx.x; j < count; j += blockDim.x) alive[j] = 0;  // after the stop: not kept
}

/*! \brief Class-agnostic BlockGreedyNms. */
template <typename BoxAt>
__device__ void BlockGreedyNms(unsigned char* alive, int count, BoxAt box_at, float iou_threshold, int max_keep) {
  BlockGreedyNms(alive, count, box_at, iou_threshold, max_keep, AnyGroup());
}
#endif  // __CUDACC__

}  // namespace ssdkit

#endif  // SSDKIT_COMMON_NMS_H_
