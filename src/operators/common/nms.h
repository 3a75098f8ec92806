/*!
 * \file nms.h
 * \brief Greedy non-maximum suppression over a score-ranked candidate list (CPU, std only).
 *
 * Candidates are visited in the given order (best first, e.g. from common/topk.h). A candidate is
 * kept unless a kept candidate, of the same class when `classes` is given (class-aware NMS),
 * overlaps it with IoU (common/bbox.h BoxIoU) >= iou_threshold. This is the same result as the
 * usual "each kept box suppresses the later ones" loop, but it compares each candidate only
 * with the kept boxes of its class, held contiguously, and it can stop after `max_keep` kept.
 * Shared by MultiBoxDetection and (later) the FPN proposal operator.
 */
#ifndef SSDKIT_COMMON_NMS_H_
#define SSDKIT_COMMON_NMS_H_

#include <stdexcept>
#include <string>
#include <vector>

#include "common/bbox.h"

namespace ssdkit {

struct NmsOptions {
  float iou_threshold = 0.5f;  // suppress at IoU >= this
  int max_keep = -1;           // stop after this many kept; < 0: no limit
};

/*! \brief Reusable buffers of GreedyNms (one per thread avoids reallocating per image). */
struct NmsScratch {
  std::vector<std::vector<float>> kept_boxes;  // per class: kept boxes, 4 floats each
};

/*!
 * \brief Greedy NMS.
 * \param boxes        (n, 4) corner boxes, indexed by the values in `order`
 * \param classes      (n,) class ids in [0, num_classes), or nullptr for class-agnostic NMS
 * \param num_classes  number of classes (ignored when classes == nullptr)
 * \param order        (count,) candidate indices, best first
 * \param keep         output: kept candidate indices in visiting order (cleared first)
 * \return number of kept candidates
 */
inline int GreedyNms(const float* boxes, const int* classes, int num_classes, const int* order,
                     int count, const NmsOptions& opt, std::vector<int>* keep,
                     NmsScratch* scratch) {
  keep->clear();
  const int lists = classes == nullptr ? 1 : num_classes;
  if (lists <= 0) return 0;
  scratch->kept_boxes.resize(static_cast<size_t>(lists));
  for (auto& l : scratch->kept_boxes) l.clear();
  for (int r = 0; r < count; ++r) {
    if (opt.max_keep >= 0 && static_cast<int>(keep->size()) >= opt.max_keep) break;
    const int idx = order[r];
    const float* box = boxes + 4 * static_cast<size_t>(idx);
    int list = 0;
    if (classes != nullptr) {
      list = classes[idx];
      if (list < 0 || list >= num_classes) {
        throw std::out_of_range("GreedyNms: class id " + std::to_string(list) + " outside [0, " +
                                std::to_string(num_classes) + ")");
      }
    }
    std::vector<float>& kept = scratch->kept_boxes[static_cast<size_t>(list)];
    bool suppressed = false;
    for (size_t k = 0; k < kept.size(); k += 4) {
      if (BoxIoU(kept.data() + k, box) >= opt.iou_threshold) {
        suppressed = true;
        break;
      }
    }
    if (suppressed) continue;
    kept.insert(kept.end(), box, box + 4);
    keep->push_back(idx);
  }
  return static_cast<int>(keep->size());
}

}  // namespace ssdkit

#endif  // SSDKIT_COMMON_NMS_H_
