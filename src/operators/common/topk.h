/*!
 * \file topk.h
 * \brief Top-k selection by descending score with a deterministic tie-break (CPU, std only).
 *
 * The order is that of a stable sort by descending score: equal scores keep ascending index
 * order, and NaN ranks below every number (-inf included). Because (score, index) is a total
 * order, a partial sort (nth_element, then sorting the first k) returns exactly the first k
 * entries of the full stable sort, in O(n + k log k).
 * Shared by MultiBoxDetection, FPNProposal and RCNNDetection; ScoreRankKey is the integer form
 * of this order (for finite scores) that FPNProposal's CPU ranking and the radix sorts of the FPN
 * CUDA kernels use.
 */
#ifndef SSDKIT_COMMON_TOPK_H_
#define SSDKIT_COMMON_TOPK_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include "common/macros.h"

namespace ssdkit {

/*! \brief "a ranks before b": higher score first, NaN last, then lower index first. */
struct ScoreDescending {
  const float* scores;
  bool operator()(int a, int b) const {
    float sa = scores[a], sb = scores[b];
    bool na = std::isnan(sa), nb = std::isnan(sb);
    if (na != nb) return nb;             // a number before NaN
    if (!na && sa != sb) return sa > sb;
    return a < b;
  }
};

/*!
 * \brief The indices 0..n-1 of the `k` best `scores` in rank order (see file comment).
 * \param scores  (n,) scores
 * \param k       how many to return; k < 0 or k >= n returns all n, fully ranked
 * \param order   output, resized to min(k, n) (or n)
 */
inline void TopKDescending(const float* scores, int n, int k, std::vector<int>* order) {
  order->resize(static_cast<size_t>(n));
  std::iota(order->begin(), order->end(), 0);
  ScoreDescending cmp{scores};
  if (k < 0 || k >= n) {
    std::sort(order->begin(), order->end(), cmp);
    return;
  }
  std::nth_element(order->begin(), order->begin() + k, order->end(), cmp);
  order->resize(static_cast<size_t>(k));
  std::sort(order->begin(), order->end(), cmp);
}

/*!
 * \brief An order-preserving integer key of a score (host and device): a larger finite score has a
 *  larger key (-0 ranks as +0) and every finite score a key > 0; a non-finite score (NaN, +-inf)
 *  has key 0, below all of them (FPNProposal and RCNNDetection take no candidate with such a
 *  score). Descending keys, ties by ascending index, are the TopKDescending order of finite scores.
 */
SSDKIT_HD uint32_t ScoreRankKey(float score) {
  if (!(score - score == 0.f)) return 0u;  // NaN or inf
  const float s = score + 0.f;               // -0 -> +0
#ifdef __CUDA_ARCH__
  const uint32_t u = __float_as_uint(s);
#else
  uint32_t u;
  std::memcpy(&u, &s, sizeof(u));
#endif
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

}  // namespace ssdkit

#endif  // SSDKIT_COMMON_TOPK_H_
