/*!
 * \file ground_truth.h
 * \brief Which label rows are ground truths, for the FPN target operators (RPNTarget,
 *        ProposalTarget). Standard library only, host and device.
 *
 * label (B, M, W >= 5), rows [cls, x0, y0, x1, y1, ...] (columns past the 5th are ignored). The
 * ground truths of an image are its rows before the first padding row (cls == -1) whose class is a
 * number in [0, class_limit) and whose box is finite with x1 > x0 and y1 > y0. Every other row
 * (class NaN, inf, -2, >= class_limit; a NaN/inf coordinate; a zero-area or inverted box) is
 * skipped: it matches nothing and is never added as a proposal. (SSD's MultiBoxTarget keeps
 * zero-area boxes, which overlap nothing there; here a degenerate box added as a proposal would
 * become a background sample, so it is dropped.)
 */
#ifndef SSDKIT_COMMON_GROUND_TRUTH_H_
#define SSDKIT_COMMON_GROUND_TRUTH_H_

#include "common/macros.h"

namespace ssdkit {
namespace labels {

/*! \brief True if the row starts the padding (class -1). */
SSDKIT_HD bool IsPadding(const float* row) { return row[0] == -1.f; }

/*! \brief True if the row (before the padding) is a usable ground truth (see the file comment).
 *  `class_limit` is the number of classes, or INFINITY for class-agnostic use (any finite id >= 0). */
SSDKIT_HD bool IsUsable(const float* row, float class_limit) {
  const float c = row[0];
  if (!(c >= 0.f) || !(c < class_limit)) return false;
  for (int k = 1; k < 5; ++k) {
    if (!(row[k] - row[k] == 0.f)) return false;  // NaN or inf
  }
  return row[3] > row[1] && row[4] > row[2];
}

/*!
 * \brief The ground truths of one image.
 * \param rows       (M, width) the image's label rows
 * \param boxes      (M, 4) out: the ground-truth boxes, compacted (first `return` rows valid)
 * \param row_index  (M,) out: the label row of each ground truth
 * \return the number of ground truths G
 */
SSDKIT_HD int Collect(const float* rows, int num_rows, int width, float class_limit, float* boxes,
                      int* row_index) {
  int g = 0;
  for (int r = 0; r < num_rows; ++r) {
    const float* row = rows + static_cast<long long>(r) * width;
    if (IsPadding(row)) break;
    if (!IsUsable(row, class_limit)) continue;
    for (int k = 0; k < 4; ++k) boxes[4 * g + k] = row[1 + k];
    row_index[g] = r;
    ++g;
  }
  return g;
}

}  // namespace labels
}  // namespace ssdkit

#endif  // SSDKIT_COMMON_GROUND_TRUTH_H_
