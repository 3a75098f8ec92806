/*!
 * \file two_stage.h
 * \brief Attribute and input helpers shared by the FPN two-stage inference ops (FPNProposal,
 *  RCNNDetection). Standard library only (host code of the .cc and .cu files).
 */
#ifndef SSDKIT_COMMON_TWO_STAGE_H_
#define SSDKIT_COMMON_TWO_STAGE_H_

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/attrs.h"
#include "common/bbox.h"

namespace ssdkit {

/*! \brief The box-coding `stds` attribute (4 positive finite values, default `fallback`). */
inline Variances ParseStdsAttribute(const AttrMap& attrs, const std::string& fallback) {
  std::vector<double> v = ParseDoubleList("stds", AttrOr(attrs, "stds", fallback));
  if (v.size() != 4) {
    throw std::invalid_argument("'stds' must have 4 values (x, y, w, h), got " + std::to_string(v.size()));
  }
  for (double x : v) {
    if (!(std::isfinite(x) && x > 0.0)) throw std::invalid_argument("every 'stds' value must be positive and finite");
  }
  Variances out;
  out.x = static_cast<float>(v[0]);
  out.y = static_cast<float>(v[1]);
  out.w = static_cast<float>(v[2]);
  out.h = static_cast<float>(v[3]);
  return out;
}

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
 *  whose valid height or width is not a finite positive number: boxes are clipped to, and
 *  detections divided by, these sizes. The scale column is not used by the ops and not checked.
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

}  // namespace ssdkit

#endif  // SSDKIT_COMMON_TWO_STAGE_H_
