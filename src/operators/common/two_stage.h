/*!
 * \file two_stage.h
 * \brief Input conventions and attribute helpers shared by the FPN two-stage operators
 *  (RPNTarget, FPNProposal, ProposalTarget, RCNNDetection). Standard library only: host code of
 *  the .cc and .cu files; RoiImage also runs on the device.
 *
 *  im_info (B, 3)  rows [valid_height, valid_width, scale]: CheckImInfoValues.
 *  rois    (R, 5)  rows [batch_index, x0, y0, x1, y1] (FPNProposal's output): RoiImage.
 *  The box-coding `stds` attribute: ParseBoxStds in common/bbox.h; label rows: common/ground_truth.h.
 */
#ifndef SSDKIT_COMMON_TWO_STAGE_H_
#define SSDKIT_COMMON_TWO_STAGE_H_

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/attrs.h"
#include "common/macros.h"

namespace ssdkit {

/*! \brief A float attribute that must be finite and inside [lo, hi] (`what` describes the range). */
inline float ParseFloatIn(const AttrMap& attrs, const std::string& name, const std::string& fallback,
                          double lo, double hi, bool lo_open, const std::string& what) {
  const double v = ParseDouble(name, AttrOr(attrs, name, fallback));
  if (!std::isfinite(v) || v > hi || v < lo || (lo_open && v == lo)) {
    throw std::invalid_argument("'" + name + "' = " + AttrOr(attrs, name, fallback) + " must be " + what);
  }
  return static_cast<float>(v);
}

/*!
 * \brief Throw std::invalid_argument naming the first row of `im_info` (host memory, (batch, 3))
 *  whose valid height or width is not a finite positive number: boxes are clipped to, anchors
 *  checked against and detections divided by these sizes. The scale column is not used by the
 *  ops and not checked.
 */
inline void CheckImInfoValues(const float* im_info, int batch) {
  for (int b = 0; b < batch; ++b) {
    const float h = im_info[3 * b], w = im_info[3 * b + 1];
    if (!(std::isfinite(h) && std::isfinite(w) && h > 0.f && w > 0.f)) {
      std::ostringstream msg;
      msg << "im_info row " << b << " = (" << h << ", " << w << ", " << im_info[3 * b + 2]
          << ") is not [valid_height, valid_width, scale] with a finite positive height and width";
      throw std::invalid_argument(msg.str());
    }
  }
}

/*!
 * \brief The image of rois row `roi` ([batch_index, x0, y0, x1, y1]) among `batch` images, or -1 if
 *  the row is no roi: a batch index that is not an integer in [0, batch) (NaN, 2.5, -1, >= batch),
 *  a NaN/inf coordinate, or no positive width and height (FPNProposal's padding rows
 *  [b, 0, 0, 0, 0], inverted boxes).
 */
SSDKIT_HD int RoiImage(const float* roi, int batch) {
  const float b = roi[0];
  if (!(b >= 0.f && b < static_cast<float>(batch))) return -1;  // also NaN
  const int image = static_cast<int>(b);
  if (static_cast<float>(image) != b) return -1;
  for (int k = 1; k < 5; ++k) {
    if (!(roi[k] - roi[k] == 0.f)) return -1;  // NaN or inf
  }
  return (roi[3] > roi[1] && roi[4] > roi[2]) ? image : -1;
}

}  // namespace ssdkit

#endif  // SSDKIT_COMMON_TWO_STAGE_H_
