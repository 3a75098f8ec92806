/*!
 * \file bbox.h
 * \brief Box arithmetic shared by every operator (CPU and CUDA): IoU and the one box coder.
 *
 * Boxes are corners (xmin, ymin, xmax, ymax), normalised or in pixels alike. The coder is the
 * SSD / Faster R-CNN centre-size coding with variances (vx, vy, vw, vh), by default
 * (0.1, 0.1, 0.2, 0.2) (ssdkit.boxes.VARIANCES):
 *   t = ((gx - ax) / aw / vx, (gy - ay) / ah / vy, log(gw / aw) / vw, log(gh / ah) / vh)
 * and Decode(anchor, Encode(anchor, g)) == g up to rounding for boxes of positive size.
 * Standard library only, so CUDA sources may include it.
 */
#ifndef SSDKIT_COMMON_BBOX_H_
#define SSDKIT_COMMON_BBOX_H_

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/attrs.h"
#include "common/macros.h"

namespace ssdkit {

struct Variances {
  float x = 0.1f, y = 0.1f, w = 0.2f, h = 0.2f;
};

/*! \brief Variances from 4 parsed attribute values (the caller has checked the count). */
inline Variances VariancesFromList(const std::vector<double>& v) {
  Variances out;
  out.x = static_cast<float>(v[0]);
  out.y = static_cast<float>(v[1]);
  out.w = static_cast<float>(v[2]);
  out.h = static_cast<float>(v[3]);
  return out;
}

/*! \brief The `variances` attribute (default (0.1, 0.1, 0.2, 0.2)): 4 finite values, and positive when
 *  `require_positive` (encoding divides by them; decoding alone accepts any finite value, as contrib). */
inline Variances ParseVariances(const AttrMap& attrs, bool require_positive) {
  std::vector<double> v = ParseDoubleList("variances", AttrOr(attrs, "variances", "(0.1, 0.1, 0.2, 0.2)"));
  if (v.size() != 4) {
    throw std::invalid_argument("'variances' must have 4 values (vx, vy, vw, vh), got " +
                                std::to_string(v.size()));
  }
  for (double x : v) {
    if (!std::isfinite(x)) throw std::invalid_argument("'variances' must be finite");
    if (require_positive && !(x > 0.0)) {
      throw std::invalid_argument("every variance must be a positive finite number");
    }
  }
  return VariancesFromList(v);
}

/*! \brief A box-coding attribute named `name` holding 4 positive finite values: the `stds` of the
 *  five FPN operators (RPN (1, 1, 1, 1), R-CNN (0.1, 0.1, 0.2, 0.2)); `fallback` when absent.
 *  (SSD's `variances` use ParseVariances, which also accepts zero / negative values for decoding.) */
inline Variances ParseBoxStds(const AttrMap& attrs, const std::string& name, const std::string& fallback) {
  std::vector<double> v = ParseDoubleList(name, AttrOr(attrs, name, fallback));
  if (v.size() != 4) {
    throw std::invalid_argument("'" + name + "' must have 4 values (x, y, w, h), got " +
                                std::to_string(v.size()));
  }
  for (double x : v) {
    if (!std::isfinite(x) || !(x > 0.0)) {
      throw std::invalid_argument("every value of '" + name + "' must be a positive finite number");
    }
  }
  return VariancesFromList(v);
}

/*! \brief min / max as plain selects: inlined and vectorisable, unlike the libm calls fminf /
 *  fmaxf on the CPU. With a NaN argument they may return either argument. */
SSDKIT_HD float MinF(float a, float b) { return a < b ? a : b; }
SSDKIT_HD float MaxF(float a, float b) { return a > b ? a : b; }

/*! \brief Area of a corner box; 0 for inverted or empty boxes. */
SSDKIT_HD float BoxArea(const float* b) {
  float w = b[2] - b[0], h = b[3] - b[1];
  return (w > 0.f && h > 0.f) ? w * h : 0.f;
}

/*! \brief Intersection over union of two corner boxes; 0 when the union is empty or not finite. */
SSDKIT_HD float BoxIoU(const float* a, const float* b) {
  float iw = MinF(a[2], b[2]) - MaxF(a[0], b[0]);
  float ih = MinF(a[3], b[3]) - MaxF(a[1], b[1]);
  if (!(iw > 0.f) || !(ih > 0.f)) return 0.f;
  float inter = iw * ih;
  float uni = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
  if (!(uni > 0.f)) return 0.f;
  return inter / uni;
}

/*! \brief Encode ground truth `g` against `anchor` into out[0..3] (see file comment). */
SSDKIT_HD void BoxEncode(const float* anchor, const float* g, const Variances& v, float* out) {
  float aw = anchor[2] - anchor[0], ah = anchor[3] - anchor[1];
  float ax = (anchor[0] + anchor[2]) * 0.5f, ay = (anchor[1] + anchor[3]) * 0.5f;
  float gw = g[2] - g[0], gh = g[3] - g[1];
  float gx = (g[0] + g[2]) * 0.5f, gy = (g[1] + g[3]) * 0.5f;
  out[0] = (gx - ax) / aw / v.x;
  out[1] = (gy - ay) / ah / v.y;
  out[2] = logf(gw / aw) / v.w;
  out[3] = logf(gh / ah) / v.h;
}

/*! \brief Decode regression `t` against `anchor` into a corner box out[0..3], optionally clipped to [0, 1]. */
SSDKIT_HD void BoxDecode(const float* anchor, const float* t, const Variances& v, bool clip, float* out) {
  float aw = anchor[2] - anchor[0], ah = anchor[3] - anchor[1];
  float ax = (anchor[0] + anchor[2]) * 0.5f, ay = (anchor[1] + anchor[3]) * 0.5f;
  float ox = t[0] * v.x * aw + ax;
  float oy = t[1] * v.y * ah + ay;
  float ow = expf(t[2] * v.w) * aw * 0.5f;
  float oh = expf(t[3] * v.h) * ah * 0.5f;
  out[0] = ox - ow;
  out[1] = oy - oh;
  out[2] = ox + ow;
  out[3] = oy + oh;
  if (clip) {
    for (int k = 0; k < 4; ++k) out[k] = fmaxf(0.f, fminf(1.f, out[k]));
  }
}

/*! \brief log(1000 / 16): Detectron's clamp of decoded log-size deltas (t_w * v_w, t_h * v_h), which
 *  keeps exp() from overflowing on wild regressions (a box at most 62.5 times its anchor's size). */
constexpr float kDetectronLogSizeClamp = 4.135166556742356f;

/*!
 * \brief BoxDecode without clipping, with the log-size deltas clamped from above: a value of
 *  `t[2] * v.w` (`t[3] * v.h`) above `max_log_size` is replaced by max_log_size (Detectron style,
 *  kDetectronLogSizeClamp); NaN stays NaN. For deltas below the clamp the result is bit for
 *  bit that of BoxDecode(anchor, t, v, false, out): the same operations in the same order.
 */
SSDKIT_HD void BoxDecodeLogClamped(const float* anchor, const float* t, const Variances& v,
                                   float max_log_size, float* out) {
  float aw = anchor[2] - anchor[0], ah = anchor[3] - anchor[1];
  float ax = (anchor[0] + anchor[2]) * 0.5f, ay = (anchor[1] + anchor[3]) * 0.5f;
  float ox = t[0] * v.x * aw + ax;
  float oy = t[1] * v.y * ah + ay;
  float lw = t[2] * v.w, lh = t[3] * v.h;
  if (lw > max_log_size) lw = max_log_size;
  if (lh > max_log_size) lh = max_log_size;
  float ow = expf(lw) * aw * 0.5f;
  float oh = expf(lh) * ah * 0.5f;
  out[0] = ox - ow;
  out[1] = oy - oh;
  out[2] = ox + ow;
  out[3] = oy + oh;
}

/*! \brief `x` limited to [lo, hi]; NaN stays NaN (unlike fminf / fmaxf, which drop it). */
SSDKIT_HD float ClampKeepNaN(float x, float lo, float hi) { return x < lo ? lo : (x > hi ? hi : x); }

/*! \brief Clip a pixel corner box in place to the image [0, width] x [0, height]; NaN stays NaN. */
SSDKIT_HD void ClipBoxToImage(float* box, float width, float height) {
  box[0] = ClampKeepNaN(box[0], 0.f, width);
  box[1] = ClampKeepNaN(box[1], 0.f, height);
  box[2] = ClampKeepNaN(box[2], 0.f, width);
  box[3] = ClampKeepNaN(box[3], 0.f, height);
}

}  // namespace ssdkit

#endif  // SSDKIT_COMMON_BBOX_H_
